//! Passwords, bearer secrets and sealed secrets.
//!
//! - Login passwords: argon2id PHC strings.
//! - Session and API-token secrets: 256 random bits; only their SHA-256 is stored.
//! - Subscriber PPP passwords and NAS RADIUS secrets must be recoverable (CHAP and
//!   MS-CHAPv2 need the clear text), so they are sealed with XChaCha20-Poly1305 under
//!   the controller key in `controller.key`, which never enters the database.

use std::io::Write;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file could not be read or created.
    #[error("controller key file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold a 32-byte key.
    #[error("controller key file {0} is not 32 bytes: refusing to run with a damaged key")]
    BadKey(String),
    /// A sealed value did not open: wrong key or damaged data.
    #[error("a sealed secret could not be opened (wrong controller.key, or damaged data)")]
    Open,
    /// argon2 rejected its parameters or input.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Seals and opens recoverable secrets with the controller key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// Loads `path`, creating it with a fresh random key (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, CryptoError> {
        let err = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(path).map_err(err)?;
                f.write_all(&key).map_err(err)?;
                f.sync_all().map_err(err)?;
                key
            }
            Err(e) => return Err(err(e)),
        };
        Self::from_key(&key).ok_or_else(|| CryptoError::BadKey(path.display().to_string()))
    }

    pub fn from_key(key: &[u8]) -> Option<SecretBox> {
        (key.len() == 32).then(|| SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(key).expect("32-byte key"),
        })
    }

    /// nonce (24 bytes) ‖ ciphertext+tag.
    pub fn seal(&self, plain: &str) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .expect("in-memory encryption");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() < 24 {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Open)
    }
}

/// argon2id with the configured cost.
#[derive(Clone)]
pub struct PasswordHasherCfg {
    params: Params,
}

impl PasswordHasherCfg {
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, CryptoError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| CryptoError::Hash(e.to_string()))?;
        Ok(PasswordHasherCfg { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> Result<String, CryptoError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| CryptoError::Hash(e.to_string()))
    }

    /// Verifies with the parameters stored in the hash itself, so raising the
    /// configured cost does not lock out existing users.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self
                .argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Burns the same time as a real check, so an unknown email is not revealed by timing.
    pub fn verify_dummy(&self, password: &str) {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let phc = DUMMY.get_or_init(|| self.hash("outpost-dummy-password").unwrap_or_default());
        let _ = self.verify(password, phc);
    }
}

/// Bounds the password checks (argon2, `argon2_memory_kib` each) running at once and
/// those waiting for a slot, so the memory logins take is bounded whatever arrives:
/// at most `concurrent × argon2_memory_kib` in hashing. A check that finds every slot
/// taken and the queue full is refused at once ([`Busy`]) instead of waiting.
pub struct PasswordGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

/// No slot was free and the queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A slot for one password check.
pub struct Slot(tokio::sync::OwnedSemaphorePermit);

impl PasswordGate {
    pub fn new(concurrent: u32, queued: u32) -> PasswordGate {
        PasswordGate {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrent.max(1) as usize)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: queued as usize,
        }
    }

    /// Waits for a slot if the queue has room; [`Busy`] at once if not.
    pub async fn slot(&self) -> Result<Slot, Busy> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot(p));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        // Leaves the queue also when the request is dropped while waiting.
        struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let _leave = Leave(&self.waiting);
        let permit = self.slots.clone().acquire_owned().await.map_err(|_| Busy)?;
        Ok(Slot(permit))
    }
}

impl Slot {
    /// Runs the check on the blocking pool. The slot goes with it, so a client that
    /// hangs up mid-check does not free the slot before the memory is.
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let permit = self.0;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
    }
}

/// A new bearer secret, with a prefix telling what it is (`ops_` session, `opt_` token).
pub fn new_bearer(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// A password for people to type once: 20 characters from an unambiguous alphabet.
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_gate_runs_at_most_its_slots_and_refuses_past_its_queue() {
        let gate = std::sync::Arc::new(PasswordGate::new(1, 1));
        let held = gate.slot().await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.slot().await.map(|_| ()) });
        // Let the waiter queue up.
        while gate.waiting.load(std::sync::atomic::Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.slot().await, Err(Busy)), "the queue is full");
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(gate.slot().await.is_ok(), "slots and queue are free again");
    }

    use super::*;

    #[test]
    fn sealed_secret_round_trips_and_detects_tampering() {
        let b = SecretBox::from_key(&[7u8; 32]).unwrap();
        let mut sealed = b.seal("s3cret");
        assert_eq!(b.open(&sealed).unwrap(), "s3cret");
        assert_ne!(b.seal("s3cret"), sealed, "nonces must differ");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(b.open(&sealed).is_err());
        let other = SecretBox::from_key(&[8u8; 32]).unwrap();
        assert!(other.open(&b.seal("x")).is_err());
    }

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let h = PasswordHasherCfg::new(64, 1).unwrap();
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", &phc));
        assert!(!h.verify("wrong horse", &phc));
        assert!(!h.verify("x", "not a hash"));
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("controller.key");
        let a = SecretBox::load_or_create(&p).unwrap();
        let b = SecretBox::load_or_create(&p).unwrap();
        assert_eq!(b.open(&a.seal("x")).unwrap(), "x");
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&p),
            Err(CryptoError::BadKey(_))
        ));
    }
}
