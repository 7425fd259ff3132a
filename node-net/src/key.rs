//! The persistent node key (like Substrate's `--node-key-file`).
//!
//! The file holds the 32-byte ed25519 secret as 64 hex characters (a trailing newline is
//! tolerated) and is created with mode `0600`. [`generate_to_file`] never overwrites an
//! existing file, so a node keeps its `PeerId` (which bootnode addresses and peers' bans refer
//! to) across restarts; a file that is not exactly 32 hex-encoded bytes is
//! [`KeyError::Corrupt`], never silently replaced.

use libp2p::identity::Keypair;
use libp2p::PeerId;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("node key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// [`generate_to_file`] refuses to overwrite a key.
    #[error("node key file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// The file is not 32 hex-encoded bytes of an ed25519 secret.
    #[error("node key file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a new ed25519 key at `path` (mode 0600) and returns its peer id. Fails with
/// [`KeyError::Exists`] if the file exists.
pub fn generate_to_file(path: &Path) -> Result<PeerId, KeyError> {
    let keypair = libp2p::identity::ed25519::Keypair::generate();
    let secret = hex::encode(keypair.secret().as_ref());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_path_buf())
        } else {
            io_err(path)(e)
        }
    })?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))?;
    let peer_id = Keypair::from(keypair).public().to_peer_id();
    tracing::info!(%peer_id, path = %path.display(), "generated node key");
    Ok(peer_id)
}

/// Reads the key at `path`.
pub fn load(path: &Path) -> Result<Keypair, KeyError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let corrupt = |reason: String| KeyError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = hex::decode(text.trim()).map_err(|e| corrupt(format!("not hex: {e}")))?;
    if bytes.len() != 32 {
        return Err(corrupt(format!(
            "{} bytes instead of a 32-byte ed25519 secret",
            bytes.len()
        )));
    }
    let keypair = Keypair::ed25519_from_bytes(&mut bytes).map_err(|e| corrupt(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "node key file is readable by others; chmod 600 it");
            }
        }
    }
    Ok(keypair)
}

/// Reads the key at `path`, creating one first if the file does not exist.
pub fn load_or_generate(path: &Path) -> Result<Keypair, KeyError> {
    match generate_to_file(path) {
        Ok(_) | Err(KeyError::Exists(_)) => load(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_refuse_overwrite_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let id = generate_to_file(&path).unwrap();
        assert_eq!(load(&path).unwrap().public().to_peer_id(), id);
        assert_eq!(load_or_generate(&path).unwrap().public().to_peer_id(), id);
        assert!(matches!(generate_to_file(&path), Err(KeyError::Exists(_))));
        assert_eq!(load(&path).unwrap().public().to_peer_id(), id, "kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        std::fs::write(&path, "zz not hex").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Corrupt { .. })));
        std::fs::write(&path, hex::encode([1u8; 31])).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("31 bytes"), "{err}");
        assert!(matches!(
            load_or_generate(&path),
            Err(KeyError::Corrupt { .. })
        ));

        let fresh = dir.path().join("fresh.key");
        let k = load_or_generate(&fresh).unwrap();
        assert_eq!(load(&fresh).unwrap().public(), k.public());
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }
}
