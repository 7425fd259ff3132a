//! The block-sync transport: one request and one response per stream on `/{protocol_id}/sync/1`.
//!
//! Each message is a frame `u32 little-endian length ‖ bytes`. The length is compared with the
//! limit (`max_request_bytes` = 64 KiB for requests, `max_response_bytes` = 16 MiB for
//! responses by default) *before* anything is allocated, so a lying length costs the reader
//! four bytes. An oversized response fails the stream with an [`io::Error`] wrapping
//! [`FrameTooLarge`], which the swarm task recognises ([`too_large`]). An oversized request is
//! read as [`SyncRequest::TooLarge`] without its body (request-response does not report
//! failures to read a request, and the sender must be known to be punished); the swarm task
//! refuses it. Either way the sender is punished with [`crate::Offence::Oversized`]. Writers
//! refuse to send frames beyond their own limit too.
//!
//! Payloads are opaque: the node encodes and decodes them (SCALE) and reports undecodable ones
//! with [`crate::Offence::Undecodable`].

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use std::io;

/// A frame's declared length exceeds the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {size} bytes exceeds the limit of {limit}")]
pub struct FrameTooLarge {
    /// The declared length.
    pub size: usize,
    /// The limit.
    pub limit: usize,
}

/// The [`FrameTooLarge`] inside an I/O error, if that is what it is.
pub fn too_large(error: &io::Error) -> Option<FrameTooLarge> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<FrameTooLarge>())
        .copied()
}

/// A request as read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// A request within the limit.
    Data(Vec<u8>),
    /// A request whose declared length exceeds the limit; its body was not read.
    TooLarge(FrameTooLarge),
}

/// Length-prefixed frames with separate request and response limits.
#[derive(Debug, Clone, Copy)]
pub struct SyncCodec {
    /// Largest request read or written.
    pub max_request: usize,
    /// Largest response read or written.
    pub max_response: usize,
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let size = u32::from_le_bytes(len) as usize;
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameTooLarge { size, limit },
        ));
    }
    let mut buf = vec![0u8; size];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    data: &[u8],
    limit: usize,
) -> io::Result<()> {
    let size = data.len();
    if size > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            FrameTooLarge { size, limit },
        ));
    }
    let len = u32::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, FrameTooLarge { size, limit }))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<SyncRequest> {
        match read_frame(io, self.max_request).await {
            Ok(data) => Ok(SyncRequest::Data(data)),
            Err(e) => match too_large(&e) {
                Some(t) => Ok(SyncRequest::TooLarge(t)),
                None => Err(e),
            },
        }
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_response).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()> {
        match req {
            SyncRequest::Data(data) => write_frame(io, &data, self.max_request).await,
            SyncRequest::TooLarge(t) => Err(io::Error::new(io::ErrorKind::InvalidInput, t)),
        }
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &res, self.max_response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn frames_roundtrip_and_lying_lengths_fail_before_allocation() {
        let mut buf = Cursor::new(Vec::new());
        write_frame(&mut buf, b"hello", 16).await.unwrap();
        let bytes = buf.into_inner();
        assert_eq!(&bytes[..4], &5u32.to_le_bytes());
        let got = read_frame(&mut Cursor::new(bytes), 16).await.unwrap();
        assert_eq!(got, b"hello");

        // A 4 GiB claim with no body: refused by the length check, nothing allocated.
        let lie = u32::MAX.to_le_bytes().to_vec();
        let err = read_frame(&mut Cursor::new(lie), 1024).await.unwrap_err();
        assert_eq!(
            too_large(&err),
            Some(FrameTooLarge {
                size: u32::MAX as usize,
                limit: 1024
            })
        );
        let err = write_frame(&mut Cursor::new(Vec::new()), &[0u8; 17], 16)
            .await
            .unwrap_err();
        assert!(too_large(&err).is_some());
        // Truncated body: an ordinary I/O error, not an oversize.
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"abc");
        let err = read_frame(&mut Cursor::new(short), 16).await.unwrap_err();
        assert!(too_large(&err).is_none());
    }
}
