//! Whole-instance backup and restore: `outpost-controller backup` and `restore`.
//!
//! The backup is SQLite's `VACUUM INTO` from a read transaction of its own, so it runs
//! beside a serving controller (WAL: readers never block the writer) and is one
//! consistent snapshot, compacted, whatever the writer does meanwhile. The copy is then
//! opened and checked (`PRAGMA integrity_check`, schema version) before it is reported.
//!
//! The key file (`controller.key`, which seals subscribers' PPP passwords, NAS secrets
//! and agents' preshared keys) never enters the database, so it is not in the backup:
//! it is created once per installation and never changes, so it is kept apart (on
//! another medium), once; `backup --key-to FILE` copies it for that. The backup prints
//! the key's fingerprint, and `restore` refuses a database whose sealed values the key
//! it would run with (the data directory's, or `--key FILE`) does not open.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::crypto::SecretBox;

/// What a backup wrote.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    pub schema_version: i64,
    pub subscribers: i64,
    /// The first 16 hex digits of the key file's SHA-256.
    pub key_fingerprint: String,
}

/// What a restore put in place.
#[derive(Debug)]
pub struct Restored {
    pub schema_version: i64,
    pub subscribers: i64,
    /// Where the database that was there before went, if there was one.
    pub replaced: Option<PathBuf>,
    /// Whether a sealed value was opened with the key (false: the backup holds none).
    pub key_checked: bool,
}

pub fn key_fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// Copies the database in `data_dir` to `to` (which must not exist), online, and checks
/// the copy. With `key_to`, also copies the key file there (mode 0600).
pub fn backup(data_dir: &Path, to: &Path, key_to: Option<&Path>) -> anyhow::Result<Written> {
    if to.exists() {
        bail!("{} exists: a backup never overwrites a file", to.display());
    }
    let key_path = data_dir.join("controller.key");
    let key =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let src = crate::db::open_read_only(&data_dir.join("controller.db"))?;
    let target = to
        .to_str()
        .context("the backup's path must be valid UTF-8")?;
    src.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("VACUUM INTO {}", to.display()))?;
    drop(src);
    let checked = check_file(to).inspect_err(|_| {
        let _ = std::fs::remove_file(to);
    })?;
    if let Some(k) = key_to {
        write_new_private(k, &key)?;
    }
    Ok(Written {
        bytes: std::fs::metadata(to)?.len(),
        schema_version: checked.0,
        subscribers: checked.1,
        key_fingerprint: key_fingerprint(&key),
    })
}

/// Opens `path` read-only and checks it: `integrity_check` says ok and the schema is
/// one this binary knows (older is fine: `serve` migrates it). Returns the schema
/// version and the subscriber count.
pub fn check_file(path: &Path) -> anyhow::Result<(i64, i64)> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .with_context(|| format!("{} is not an SQLite database", path.display()))?;
    if integrity != "ok" {
        bail!(
            "{} fails SQLite's integrity check: {integrity}",
            path.display()
        );
    }
    let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = crate::db::schema_version() as i64;
    if version > known {
        bail!(
            "{} has schema version {version}, but this outpost-controller knows only up to {known}: \
             restore it with the release that wrote it",
            path.display()
        );
    }
    if version == 0 {
        bail!(
            "{} is not an Outpost controller database (schema version 0)",
            path.display()
        );
    }
    let subscribers = c
        .query_row("SELECT count(*) FROM subscribers", [], |r| r.get(0))
        .with_context(|| format!("{} is not an Outpost controller database", path.display()))?;
    Ok((version, subscribers))
}

/// One sealed value from the database, if it holds any.
fn a_sealed_value(c: &Connection) -> rusqlite::Result<Option<Vec<u8>>> {
    c.query_row(
        "SELECT v FROM (SELECT password_sealed AS v FROM subscribers LIMIT 1)
         UNION ALL SELECT v FROM (SELECT secret_sealed AS v FROM nas LIMIT 1) LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// Whether a process holds the database open: a serving controller keeps its
/// connections open, and SQLite will not give an exclusive lock while one is.
pub fn in_use(db: &Path) -> anyhow::Result<bool> {
    if !db.exists() {
        return Ok(false);
    }
    let c = Connection::open(db)?;
    c.busy_timeout(std::time::Duration::ZERO)?;
    c.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    let r = c
        .execute_batch("BEGIN EXCLUSIVE; SELECT count(*) FROM sqlite_master; COMMIT;")
        .map(|_| false);
    match r {
        Ok(v) => Ok(v),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Restores the backup `from` as `data_dir`'s database.
///
/// Refuses: a file that fails the checks of [`check_file`]; a key (`key`, else the data
/// directory's `controller.key`) that does not open the backup's sealed values; a data
/// directory whose database a running controller holds (stop it first, whatever the
/// flags: replacing a database under open connections corrupts it); and an existing
/// database unless `overwrite`, in which case it is moved aside (with its WAL), not
/// deleted. With `key`, that key becomes the data directory's `controller.key` (the one
/// there before is moved aside too).
pub fn restore(
    data_dir: &Path,
    from: &Path,
    key: Option<&Path>,
    overwrite: bool,
) -> anyhow::Result<Restored> {
    let (schema_version, subscribers) = check_file(from)?;
    let key_path = data_dir.join("controller.key");
    let key_bytes = match key {
        Some(k) => std::fs::read(k).with_context(|| format!("reading the key {}", k.display()))?,
        None => std::fs::read(&key_path).with_context(|| {
            format!(
                "{} has no controller.key: a restored database needs the key that sealed its \
                 secrets; pass --key FILE (the key kept with the backup)",
                data_dir.display()
            )
        })?,
    };
    let secrets = SecretBox::from_key(&key_bytes).context("the key is not 32 bytes")?;
    let sealed = {
        let c = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        a_sealed_value(&c)?
    };
    let key_checked = match sealed {
        Some(s) => {
            if secrets.open(&s).is_err() {
                bail!(
                    "the key (fingerprint {}) does not open the secrets sealed in {}: it is not the \
                     key of the installation that wrote it; pass --key with that installation's \
                     controller.key",
                    key_fingerprint(&key_bytes),
                    from.display()
                );
            }
            true
        }
        None => false,
    };
    std::fs::create_dir_all(data_dir)?;
    let db = data_dir.join("controller.db");
    if db.exists() && !overwrite {
        bail!(
            "{} exists: pass --overwrite to replace it (it is kept as controller.db.replaced-<time>)",
            db.display()
        );
    }
    if in_use(&db)? {
        bail!(
            "{} is open in a running controller: stop it before restoring over it",
            db.display()
        );
    }
    let stamp = crate::db::now();
    let mut replaced = None;
    if db.exists() {
        let aside = data_dir.join(format!("controller.db.replaced-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db.display()));
            if p.exists() {
                std::fs::rename(&p, format!("{}{suffix}", aside.display()))?;
            }
        }
        replaced = Some(aside);
    }
    let tmp = data_dir.join("controller.db.restoring");
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &db)?;
    if key.is_some() {
        match std::fs::read(&key_path) {
            Ok(old) if old == key_bytes => {}
            Ok(_) => {
                std::fs::rename(
                    &key_path,
                    data_dir.join(format!("controller.key.replaced-{stamp}")),
                )?;
                write_new_private(&key_path, &key_bytes)?;
            }
            Err(_) => write_new_private(&key_path, &key_bytes)?,
        }
    }
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok(Restored {
        schema_version,
        subscribers,
        replaced,
        key_checked,
    })
}

/// Writes a new file readable by its owner only; never overwrites.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
