//! Secrets at rest: each value is sealed with XChaCha20-Poly1305 under the platform's
//! 32-byte key, with a fresh random nonce and the service and secret name as associated
//! data (a sealed value copied onto another row does not open). The key is a file in the
//! data directory (0600) or one the operator supplies; the database never holds it.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Why a key or a sealed value could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file could not be read or written.
    #[error("secret key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes (raw or as 64 hex digits).
    #[error("secret key file {0} must hold 32 bytes, raw or as 64 hex digits")]
    BadKey(String),
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// A sealed value did not open: the key is not the one it was sealed with, or the
    /// row was changed.
    #[error("secret {0} does not open with this key (was the key file replaced?)")]
    Open(String),
}

/// The platform's secret key.
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

const NONCE: usize = 24;

fn random(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|e| VaultError::Random(e.to_string()))
}

impl Vault {
    /// A vault with a key that lives only in memory (tests, `Store::memory`).
    pub fn ephemeral() -> Result<Vault, VaultError> {
        let mut key = [0u8; 32];
        random(&mut key)?;
        Ok(Vault::from_key(&key))
    }

    fn from_key(key: &[u8; 32]) -> Vault {
        Vault {
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// Reads the key at `path`, creating it (0600, 32 random bytes as hex) when `create`
    /// is set and it does not exist. An operator-supplied key file is never created.
    pub fn open(path: &Path, create: bool) -> Result<Vault, VaultError> {
        let shown = path.display().to_string();
        let io = |source| VaultError::KeyFile {
            path: shown.clone(),
            source,
        };
        if create && !path.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut key = [0u8; 32];
            random(&mut key)?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        let raw = std::fs::read(path).map_err(io)?;
        Ok(Vault::from_key(
            &parse_key(&raw).ok_or(VaultError::BadKey(shown))?,
        ))
    }

    /// Seals `value` for `service`'s secret `name`: nonce followed by ciphertext.
    pub fn seal(&self, service: &str, name: &str, value: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0u8; NONCE];
        random(&mut nonce)?;
        let aad = aad(service, name);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Open(name.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Vault::seal`] sealed for the same service and name.
    pub fn open_value(
        &self,
        service: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        if sealed.len() < NONCE {
            return Err(VaultError::Open(name.to_string()));
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(service, name),
                },
            )
            .map_err(|_| VaultError::Open(name.to_string()))
    }
}

fn aad(service: &str, name: &str) -> Vec<u8> {
    format!("slipway-secret\0{service}\0{name}").into_bytes()
}

/// 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
fn parse_key(raw: &[u8]) -> Option<[u8; 32]> {
    if raw.len() == 32 {
        return raw.try_into().ok();
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_for_its_own_row_and_key() {
        let v = Vault::ephemeral().unwrap();
        let sealed = v.seal("web", "DB_PASSWORD", b"canary-123").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"canary-123"));
        assert_eq!(
            v.open_value("web", "DB_PASSWORD", &sealed).unwrap(),
            b"canary-123"
        );
        assert!(v.open_value("api", "DB_PASSWORD", &sealed).is_err());
        assert!(v.open_value("web", "OTHER", &sealed).is_err());
        assert!(Vault::ephemeral()
            .unwrap()
            .open_value("web", "DB_PASSWORD", &sealed)
            .is_err());
        assert!(v.open_value("web", "DB_PASSWORD", &sealed[..10]).is_err());
    }

    #[test]
    fn key_files_are_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("slipway-vault-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret.key");
        let _ = std::fs::remove_file(&path);
        assert!(
            Vault::open(&path, false).is_err(),
            "a missing operator key is an error"
        );
        let a = Vault::open(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = a.seal("s", "K", b"v").unwrap();
        let b = Vault::open(&path, true).unwrap();
        assert_eq!(b.open_value("s", "K", &sealed).unwrap(), b"v");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            Vault::open(&path, false),
            Err(VaultError::BadKey(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
