//! The adapter between libtorch tensors and their wire form
//! ([`weft_primitives::tensor::WireTensor`]): the only place a `tch::Tensor` becomes bytes
//! to send, or bytes received become a `tch::Tensor`. The wire format itself (and its
//! validation) knows nothing of libtorch.

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};
pub use weft_primitives::tensor::{DType, WireTensor};

/// The libtorch kind of a wire dtype.
pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::BF16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
        DType::I64 => Kind::Int64,
    }
}

/// The wire dtype of a libtorch kind, if it has one.
pub fn dtype_of(kind: Kind) -> Option<DType> {
    Some(match kind {
        Kind::Float => DType::F32,
        Kind::BFloat16 => DType::BF16,
        Kind::Half => DType::F16,
        Kind::Int64 => DType::I64,
        _ => return None,
    })
}

#[cfg(target_endian = "big")]
fn swap_bytes(data: &mut [u8], size: usize) {
    for e in data.chunks_mut(size) {
        e.reverse();
    }
}

/// The wire form of `t` (moved to the CPU, made contiguous).
pub fn to_wire(t: &Tensor) -> Result<WireTensor> {
    let kind = t.f_kind()?;
    let dtype =
        dtype_of(kind).ok_or_else(|| Error::Shape(format!("no wire dtype for {kind:?}")))?;
    let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let shape = t
        .size()
        .iter()
        .map(|&d| u32::try_from(d).map_err(|_| Error::Shape(format!("dimension {d}"))))
        .collect::<Result<Vec<u32>>>()?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * dtype.size()];
    t.f_copy_data_u8(&mut data, numel)?;
    #[cfg(target_endian = "big")]
    swap_bytes(&mut data, dtype.size());
    Ok(WireTensor { dtype, shape, data })
}

/// The libtorch tensor (on the CPU) of a wire tensor. Validate it first
/// ([`WireTensor::validate`]); a length that does not match the shape is an error here too.
pub fn from_wire(w: &WireTensor) -> Result<Tensor> {
    let expected = w.numel() * w.dtype.size() as u64;
    if w.data.len() as u64 != expected {
        return Err(Error::Shape(format!(
            "tensor data is {} bytes, shape {:?} needs {expected}",
            w.data.len(),
            w.shape
        )));
    }
    let shape: Vec<i64> = w.shape.iter().map(|&d| i64::from(d)).collect();
    #[cfg(target_endian = "big")]
    let data = {
        let mut d = w.data.clone();
        swap_bytes(&mut d, w.dtype.size());
        d
    };
    #[cfg(target_endian = "little")]
    let data = &w.data;
    Ok(Tensor::f_from_data_size(
        &data[..],
        &shape,
        kind_of(w.dtype),
    )?)
}

/// Cuts element `index` of shape `shape` out of a stream of f32 little-endian tensors of
/// that shape (a stored or revealed item holding one tensor per micro-batch).
pub fn f32_slice(bytes: &[u8], index: usize, shape: &[i64]) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    let per = usize::try_from(numel).map_err(|_| Error::Shape(format!("shape {shape:?}")))? * 4;
    let part = bytes
        .get(index * per..(index + 1) * per)
        .ok_or_else(|| Error::Shape(format!("stored tensors too short for item {index}")))?;
    Ok(Tensor::f_from_data_size(part, shape, Kind::Float)?)
}

/// Cuts a stream of f32 little-endian tensors (canonical bytes: one tensor after another)
/// into tensors of `shapes` on `device`; `None` when the stream is not exactly that long.
pub fn f32_tensors(
    bytes: &[u8],
    shapes: &[Vec<i64>],
    device: Device,
) -> Result<Option<Vec<Tensor>>> {
    let total: i64 = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
    if bytes.len() as i64 != total * 4 {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(shapes.len());
    let mut off = 0usize;
    for s in shapes {
        let n = s.iter().product::<i64>() as usize * 4;
        out.push(
            Tensor::f_from_data_size(&bytes[off..off + n], s, Kind::Float)?.f_to_device(device)?,
        );
        off += n;
    }
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use weft_primitives::tensor::Limits;

    #[test]
    fn tensor_roundtrip_all_dtypes() {
        let t = Tensor::arange(24, (Kind::Float, Device::Cpu))
            .f_reshape([2, 3, 4])
            .unwrap()
            .f_div_scalar(7.0)
            .unwrap();
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half, Kind::Int64] {
            let t = t.to_kind(kind);
            let w = to_wire(&t).unwrap();
            assert_eq!(w.shape, vec![2, 3, 4]);
            assert_eq!(w.data.len(), 24 * w.dtype.size());
            w.validate(&Limits::default(), true).unwrap();
            let back = from_wire(&w).unwrap();
            assert_eq!(back.kind(), kind);
            assert!(back.equal(&t), "{kind:?}");
        }
        // f32 little-endian on the wire.
        let w = to_wire(&Tensor::from_slice(&[1.0f32, -2.0])).unwrap();
        assert_eq!(&w.data[..4], &1.0f32.to_le_bytes());
        // Non-finite half-precision values are seen by the byte-level validation.
        for kind in [Kind::BFloat16, Kind::Half] {
            let t = Tensor::from_slice(&[1.0f32, f32::INFINITY]).to_kind(kind);
            let w = to_wire(&t).unwrap();
            assert!(w.validate(&Limits::default(), true).is_err(), "{kind:?}");
        }
    }
}
