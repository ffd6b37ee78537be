//! The reseller archive as a file: a body (manifest and tables, JSON) signed with the
//! controller's ed25519 key and encrypted with age to the controller's own X25519
//! identity. Both keys live in the data directory beside `controller.key`
//! (`archive.age`, `archive.sign`, mode 0600, made on first use); an archive is opened
//! by the installation that wrote it, or by one given copies of those two files.
//!
//! Layout of the plaintext: the 64-byte signature over the body, then the body. Opening
//! checks, in order, that age decrypts it (authenticated: any changed byte of the file
//! fails here), that the signature is the controller's over the body, and that every
//! table's row count and SHA-256 match the manifest. Nothing is written before all three.

use std::collections::BTreeMap;
use std::path::Path;

use age::secrecy::ExposeSecret;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::load_or_create_key_file;
use crate::error::{Error, Result};

/// The archive format this controller writes and reads.
pub const FORMAT: &str = "outpost-reseller-archive/1";

/// The controller's archive keys.
#[derive(Clone)]
pub struct Keys {
    identity: age::x25519::Identity,
    signing: SigningKey,
}

impl Keys {
    /// Loads `archive.age` and `archive.sign` from `dir`, making them on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Keys> {
        let id = load_or_create_key_file(&dir.join("archive.age"), || {
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
                .as_bytes()
                .to_vec()
        })?;
        let identity: age::x25519::Identity = std::str::from_utf8(&id)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!("{}/archive.age is not an age identity", dir.display())
            })?;
        let sk = load_or_create_key_file(&dir.join("archive.sign"), || {
            SigningKey::generate(&mut rand::rngs::OsRng)
                .to_bytes()
                .to_vec()
        })?;
        let sk: [u8; 32] = sk
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}/archive.sign is not 32 bytes", dir.display()))?;
        Ok(Keys {
            identity,
            signing: SigningKey::from_bytes(&sk),
        })
    }

    /// Fresh keys, for tests that need a foreign installation's.
    pub fn generate() -> Keys {
        Keys {
            identity: age::x25519::Identity::generate(),
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The signer's public key, hex: names the installation in manifests and audit.
    pub fn signer(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// The controller's signature over `body`.
    pub fn sign(&self, body: &[u8]) -> [u8; 64] {
        self.signing.sign(body).to_bytes()
    }

    /// Signs `body` and encrypts signature ‖ body to this controller's age recipient.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let sig = self.signing.sign(body);
        self.encrypt_raw(&sig.to_bytes(), body)
    }

    /// Encrypts `sig ‖ body` as is: [`Keys::seal`] and tests that forge a signature.
    pub fn encrypt_raw(&self, sig: &[u8], body: &[u8]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(sig.len() + body.len());
        plain.extend_from_slice(sig);
        plain.extend_from_slice(body);
        age::encrypt(&self.identity.to_public(), &plain).expect("in-memory age encryption")
    }

    /// Decrypts and checks the signature; returns the body. Does not parse it.
    pub fn open(&self, file: &[u8]) -> Result<Vec<u8>> {
        let mut plain = age::decrypt(&self.identity, file).map_err(|e| {
            Error::bad_request(
                "archive_unreadable",
                format!(
                    "the archive does not decrypt with this controller's archive key ({e}): \
                     damaged, altered, or written by another installation"
                ),
            )
        })?;
        if plain.len() < 64 {
            return Err(Error::bad_request(
                "archive_unreadable",
                "the archive is empty",
            ));
        }
        let body = plain.split_off(64);
        let sig = Signature::from_slice(&plain).map_err(|_| bad_signature())?;
        self.verifying()
            .verify(&body, &sig)
            .map_err(|_| bad_signature())?;
        Ok(body)
    }

    fn verifying(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

fn bad_signature() -> Error {
    Error::bad_request(
        "archive_bad_signature",
        "the archive's signature is not this controller's: it was altered or signed elsewhere; nothing was written",
    )
}

/// What an archive holds, checked against its tables on open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The controller schema version of the database it was taken from.
    pub schema_version: i64,
    /// Unix seconds.
    pub exported_at: i64,
    /// The exported reseller, as it was.
    pub root: Root,
    /// The signer's ed25519 public key, hex.
    pub signer: String,
    /// Row count and SHA-256 of each table's JSON.
    pub tables: BTreeMap<String, TableSum>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Root {
    pub id: i64,
    pub parent_id: Option<i64>,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSum {
    pub rows: u64,
    pub sha256: String,
}

/// One table's rows: column names and values in that order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

impl Table {
    pub fn sum(&self) -> TableSum {
        TableSum {
            rows: self.rows.len() as u64,
            sha256: hex::encode(Sha256::digest(
                serde_json::to_vec(self).expect("a table serializes"),
            )),
        }
    }
    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// The signed body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Body {
    pub manifest: Manifest,
    pub tables: BTreeMap<String, Table>,
}

impl Body {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an archive serializes")
    }

    /// Parses a verified body and checks its manifest: format, schema version, and
    /// each table's row count and checksum.
    pub fn parse(bytes: &[u8]) -> Result<Body> {
        let body: Body = serde_json::from_slice(bytes).map_err(|e| {
            Error::bad_request("archive_unreadable", format!("the archive's body: {e}"))
        })?;
        let m = &body.manifest;
        if m.format != FORMAT {
            return Err(Error::bad_request(
                "archive_format",
                format!(
                    "archive format '{}', this controller reads '{FORMAT}'",
                    m.format
                ),
            ));
        }
        let known = crate::db::schema_version() as i64;
        if m.schema_version != known {
            return Err(Error::bad_request(
                "archive_schema",
                format!(
                    "the archive was taken at schema version {}, this controller is at {known}: \
                     restore it with the same release",
                    m.schema_version
                ),
            ));
        }
        let names: Vec<&String> = body.tables.keys().collect();
        let listed: Vec<&String> = m.tables.keys().collect();
        if names != listed {
            return Err(bad_checksum(format!(
                "it lists tables {listed:?} but holds {names:?}"
            )));
        }
        for (name, t) in &body.tables {
            let got = t.sum();
            let want = &m.tables[name];
            if got != *want {
                return Err(bad_checksum(format!(
                    "table {name} has {} rows with SHA-256 {}, its manifest says {} rows with {}",
                    got.rows, got.sha256, want.rows, want.sha256
                )));
            }
        }
        Ok(body)
    }
}

fn bad_checksum(detail: String) -> Error {
    Error::bad_request(
        "archive_bad_checksum",
        format!(
            "the archive's manifest does not match its contents: {detail}; nothing was written"
        ),
    )
}
