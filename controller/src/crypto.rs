//! Passwords, bearer secrets and sealed secrets.
//!
//! - Login passwords: argon2id PHC strings.
//! - Session and API-token secrets: 256 random bits; only their SHA-256 is stored.
//! - Subscriber PPP passwords and NAS RADIUS secrets must be recoverable (CHAP and
//!   MS-CHAPv2 need the clear text), so they are sealed with XChaCha20-Poly1305 under
//!   the controller key in `controller.key`, which never enters the database.

use std::io::Write;
use std::path::Path;

use argon2::password_hash::{self, PasswordHash, SaltString};
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

/// The contents of key file `path`, written first (mode 0600, never overwritten) with
/// what `make` returns when there is none yet: a key is generated once per installation.
pub fn load_or_create_key_file(
    path: &Path,
    make: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>, CryptoError> {
    let err = |source| CryptoError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = make();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(err)?;
            f.write_all(&key).map_err(err)?;
            f.sync_all().map_err(err)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

/// Seals and opens recoverable secrets with the controller key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// Loads `path`, creating it with a fresh random key (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, CryptoError> {
        let key = load_or_create_key_file(path, || {
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            key
        })?;
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
        let err = |e: &dyn std::fmt::Display| CryptoError::Hash(e.to_string());
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_buf)
            .map_err(|e| err(&e))?;
        let argon2 = self.argon2();
        let len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = password_hash::Output::init_with(len, |out| {
            with_blocks(self.params.block_count(), |blocks| {
                argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks)
            })
            .map_err(|_| password_hash::Error::Crypto)
        })
        .map_err(|e| err(&e))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: password_hash::ParamsString::try_from(&self.params).map_err(|e| err(&e))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Verifies with the parameters stored in the hash itself, so raising the
    /// configured cost does not lock out existing users.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let (Ok(algorithm), Ok(params)) = (
            Algorithm::try_from(parsed.algorithm),
            Params::try_from(&parsed),
        ) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from) {
            None => Version::default(),
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = password_hash::Output::init_with(expected.len(), |out| {
            with_blocks(params.block_count(), |blocks| {
                argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, blocks)
            })
            .map_err(|_| password_hash::Error::Crypto)
        });
        // `Output`'s equality is constant-time.
        computed.is_ok_and(|c| c == expected)
    }

    /// Burns the same time as a real check, so an unknown email is not revealed by timing.
    pub fn verify_dummy(&self, password: &str) {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let phc = DUMMY.get_or_init(|| self.hash("outpost-dummy-password").unwrap_or_default());
        let _ = self.verify(password, phc);
    }
}

/// Bounds the password checks (argon2, `argon2_memory_kib` each) running at once and
/// those waiting for a slot, so the memory logins take is bounded whatever arrives.
///
/// Checks run on `concurrent` threads of the gate's own, not on the blocking pool: the
/// allocator keeps a freed argon2 block for reuse in the arena of the thread that freed
/// it, so checks spread over the blocking pool's many threads would leave one block per
/// thread resident (measured: ~345 MiB after a flood with 4 slots), while the gate's
/// threads hold at most `concurrent` blocks. A check that finds every slot taken and the
/// queue full is refused at once ([`Busy`]) instead of waiting.
pub struct PasswordGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// No slot was free and the queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A slot for one password check.
pub struct Slot<'a> {
    permit: tokio::sync::OwnedSemaphorePermit,
    gate: &'a PasswordGate,
}

impl PasswordGate {
    pub fn new(concurrent: u32, queued: u32) -> PasswordGate {
        let concurrent = concurrent.max(1) as usize;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..concurrent {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })
                .expect("spawn a password-check thread");
        }
        PasswordGate {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(concurrent)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: queued as usize,
            jobs: tx,
        }
    }

    /// Waits for a slot if the queue has room; [`Busy`] at once if not.
    pub async fn slot(&self) -> Result<Slot<'_>, Busy> {
        use std::sync::atomic::Ordering;
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot { permit, gate: self });
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
        Ok(Slot { permit, gate: self })
    }
}

/// The check's thread is gone (it panicked).
#[derive(Debug, thiserror::Error)]
#[error("the password check did not finish")]
pub struct CheckLost;

impl Slot<'_> {
    /// Runs the check on one of the gate's threads. The slot goes with it, so a client
    /// that hangs up mid-check does not free the slot before the memory is.
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CheckLost> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = self.permit;
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            drop(permit);
            if let Ok(out) = out {
                let _ = tx.send(out);
            }
        });
        self.gate.jobs.send(job).map_err(|_| CheckLost)?;
        rx.await.map_err(|_| CheckLost)
    }
}

/// Runs `f` over `n` argon2 blocks that this thread keeps for its next check.
///
/// argon2 would allocate (and free) its memory for each check; the allocator then keeps
/// freed blocks resident without reusing them reliably (measured: about one block per
/// check, 19 MiB each, never returned). Reusing one buffer per thread keeps a thread at
/// one block whatever it checks; the [`PasswordGate`]'s threads are the only ones
/// checking passwords under load.
fn with_blocks<T>(n: usize, f: impl FnOnce(&mut [argon2::Block]) -> T) -> T {
    thread_local! {
        static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BLOCKS.with(|b| {
        let mut blocks = b.borrow_mut();
        if blocks.len() < n {
            blocks.resize(n, argon2::Block::default());
        }
        f(&mut blocks[..n])
    })
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
    #[test]
    fn our_memory_reuse_agrees_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let h = PasswordHasherCfg::new(64, 2).unwrap();
        let small = PasswordHasherCfg::new(16, 1).unwrap();
        let ours = h.hash("correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            h.argon2()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = h
            .argon2()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        // Checks of other sizes in between leave the reused memory dirty on purpose.
        for _ in 0..2 {
            assert!(h.verify("battery staple", &theirs));
            assert!(!h.verify("battery stable", &theirs));
            assert!(
                small.verify("correct horse", &ours),
                "the stored cost is used"
            );
            assert!(!h.verify("correct horse", "not a phc string"));
        }
    }

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
