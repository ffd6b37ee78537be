//! The failed-login throttle, kept in the database so a restart does not reset it.
//!
//! Every attempt is weighed against three counters:
//! - `pair:EMAIL|IP`, one address guessing one account (`max_failures_per_email_and_ip`);
//! - `ip:IP`, one address trying many accounts (`max_failures_per_ip`);
//! - `account:EMAIL`, many addresses guessing one account (`max_failures_per_account`).
//!
//! An attempt is counted *before* its password is hashed, in the same write transaction
//! that checks the blocks, so concurrent attempts cannot outrun a limit: the N+1th
//! attempt in flight is refused however many arrive at once. A success gives its count
//! back, clears the pair, and marks the (account, address) pair as known.
//!
//! The throttle hurts the guesser, not the owner: a known pair is held back only by its
//! own counter, never by the address-wide or account-wide ones, which are what a guesser
//! elsewhere or a noisy client behind the same NAT raise. A counter that reaches its limit
//! blocks its key for a delay that doubles with every further failure, up to the window;
//! a quiet window after the block ends forgives it.

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::AuthConfig;
use crate::error::Result;

/// The keys one login attempt is counted under.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Lower-cased e-mail as typed.
    pub email: String,
    /// The client address as the controller believes it.
    pub ip: String,
}

/// What [`reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; go on and check the password. `known`: the pair has logged in before.
    Counted { known: bool },
    /// Refused without checking the password: retry after this many seconds.
    Blocked { retry_after: u64 },
}

impl Attempt {
    fn keys(&self, cfg: &AuthConfig, known: bool) -> Vec<(String, u32)> {
        let mut keys = vec![(
            format!("pair:{}|{}", self.email, self.ip),
            cfg.max_failures_per_email_and_ip,
        )];
        if !known {
            keys.push((format!("ip:{}", self.ip), cfg.max_failures_per_ip));
            keys.push((
                format!("account:{}", self.email),
                cfg.max_failures_per_account,
            ));
        }
        keys
    }
}

/// Seconds a key is blocked once it has `failures` against a limit of `limit`: from
/// 1/64 of the window at the limit, doubling with each failure, never past the window.
pub fn block_secs(failures: u32, limit: u32, window: u64) -> u64 {
    if failures < limit {
        return 0;
    }
    let base = (window / 64).max(1);
    let doublings = (failures - limit).min(32);
    base.saturating_mul(1u64 << doublings).min(window.max(1))
}

/// Checks the blocks and, when none holds, counts the attempt as a failure until
/// [`succeeded`] gives it back. Run it in the login's write transaction.
pub fn reserve(conn: &Connection, cfg: &AuthConfig, a: &Attempt, now: i64) -> Result<Verdict> {
    let known = conn
        .query_row(
            "SELECT 1 FROM login_known WHERE email = ?1 AND ip = ?2",
            params![a.email, a.ip],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let window = cfg.failure_window_secs as i64;
    let keys = a.keys(cfg, known);
    let mut rows = Vec::with_capacity(keys.len());
    for (key, limit) in keys {
        let row: Option<(u32, i64, i64)> = conn
            .query_row(
                "SELECT failures, last_at, blocked_until FROM login_throttle WHERE key = ?1",
                [&key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((_, _, until)) = row
            && until > now
        {
            return Ok(Verdict::Blocked {
                retry_after: (until - now) as u64,
            });
        }
        rows.push((key, limit, row));
    }
    for (key, limit, row) in rows {
        // A quiet window after the later of the last failure and the end of its block
        // forgives a counter.
        let failures = match row {
            Some((f, last, until)) if now - last.max(until) < window => f,
            _ => 0,
        } + 1;
        let block = block_secs(failures, limit, cfg.failure_window_secs) as i64;
        conn.execute(
            "INSERT INTO login_throttle (key, failures, last_at, blocked_until) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(key) DO UPDATE SET failures = ?2, last_at = ?3, blocked_until = ?4",
            params![key, failures, now, if block > 0 { now + block } else { 0 }],
        )?;
    }
    Ok(Verdict::Counted { known })
}

/// The password was right: give the attempt's count back, clear the pair and remember
/// the pair as known.
pub fn succeeded(
    conn: &Connection,
    cfg: &AuthConfig,
    a: &Attempt,
    known: bool,
    now: i64,
) -> Result<()> {
    for (key, limit) in a.keys(cfg, known) {
        if key.starts_with("pair:") {
            conn.execute("DELETE FROM login_throttle WHERE key = ?1", [&key])?;
        } else {
            give_back(conn, cfg, &key, limit)?;
        }
    }
    conn.execute(
        "INSERT INTO login_known (email, ip, last_ok_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(email, ip) DO UPDATE SET last_ok_at = ?3",
        params![a.email, a.ip, now],
    )?;
    Ok(())
}

/// The attempt was never judged (no verifier was free): give its count back.
pub fn withdraw(conn: &Connection, cfg: &AuthConfig, a: &Attempt, known: bool) -> Result<()> {
    for (key, limit) in a.keys(cfg, known) {
        give_back(conn, cfg, &key, limit)?;
    }
    Ok(())
}

/// One count less, with the block that count set (if any) lifted.
fn give_back(conn: &Connection, cfg: &AuthConfig, key: &str, limit: u32) -> Result<()> {
    let row: Option<(u32, i64)> = conn
        .query_row(
            "SELECT failures, last_at FROM login_throttle WHERE key = ?1",
            [key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((failures, last)) = row {
        let failures = failures.saturating_sub(1);
        let block = block_secs(failures, limit, cfg.failure_window_secs) as i64;
        conn.execute(
            "UPDATE login_throttle SET failures = ?2, blocked_until = ?3 WHERE key = ?1",
            params![key, failures, if block > 0 { last + block } else { 0 }],
        )?;
    }
    Ok(())
}

/// Lifts every counter on an account (its password was reset by the operator).
pub fn forget_account(conn: &Connection, email: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM login_throttle WHERE key = ?1 OR key GLOB ?2",
        params![
            format!("account:{email}"),
            format!("pair:{}|*", glob_escape(email))
        ],
    )?;
    Ok(())
}

/// Escapes GLOB's special characters in a literal.
fn glob_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' | '?' | '[' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// How long a successful login keeps its (account, address) pair known.
pub const KNOWN_FOR_DAYS: i64 = 90;

/// Retention: counters a window past their last failure and their block, and known pairs
/// unused for [`KNOWN_FOR_DAYS`]. One chunk of each; the sweep repeats.
pub fn prune(conn: &Connection, cfg: &AuthConfig, now: i64, chunk: usize) -> Result<usize> {
    let window = cfg.failure_window_secs as i64;
    let counters = conn.execute(
        "DELETE FROM login_throttle WHERE key IN (SELECT key FROM login_throttle
             WHERE last_at < ?1 AND blocked_until < ?1 LIMIT ?2)",
        params![now - window, chunk as i64],
    )?;
    let known = conn.execute(
        "DELETE FROM login_known WHERE (email, ip) IN (SELECT email, ip FROM login_known
             WHERE last_ok_at < ?1 LIMIT ?2)",
        params![now - KNOWN_FOR_DAYS * 86_400, chunk as i64],
    )?;
    Ok(counters + known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open_and_migrate(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    fn cfg() -> AuthConfig {
        AuthConfig {
            max_failures_per_email_and_ip: 3,
            max_failures_per_ip: 5,
            max_failures_per_account: 8,
            failure_window_secs: 640,
            ..AuthConfig::default()
        }
    }

    fn at(email: &str, ip: &str) -> Attempt {
        Attempt {
            email: email.into(),
            ip: ip.into(),
        }
    }

    #[test]
    fn throttle_blocks_after_max_failures_and_clears() {
        let (_d, c) = db();
        let cfg = cfg();
        let a = at("a@x.test", "192.0.2.1");
        for _ in 0..3 {
            assert_eq!(
                reserve(&c, &cfg, &a, 1000).unwrap(),
                Verdict::Counted { known: false }
            );
        }
        // The third failure blocked the pair for 1/64 of the window.
        assert_eq!(
            reserve(&c, &cfg, &a, 1001).unwrap(),
            Verdict::Blocked { retry_after: 9 }
        );
        // After the block, one more failure doubles it.
        assert_eq!(
            reserve(&c, &cfg, &a, 1010).unwrap(),
            Verdict::Counted { known: false }
        );
        assert_eq!(
            reserve(&c, &cfg, &a, 1011).unwrap(),
            Verdict::Blocked { retry_after: 19 }
        );
        // A quiet window after the block forgives it; a success clears the pair.
        assert_eq!(
            reserve(&c, &cfg, &a, 1030 + 640).unwrap(),
            Verdict::Counted { known: false }
        );
        succeeded(&c, &cfg, &a, false, 1700).unwrap();
        assert_eq!(
            reserve(&c, &cfg, &a, 1701).unwrap(),
            Verdict::Counted { known: true }
        );
    }

    #[test]
    fn a_known_pair_is_held_back_only_by_its_own_counter() {
        let (_d, c) = db();
        let cfg = cfg();
        let owner = at("owner@x.test", "192.0.2.9");
        assert!(matches!(
            reserve(&c, &cfg, &owner, 10).unwrap(),
            Verdict::Counted { .. }
        ));
        succeeded(&c, &cfg, &owner, false, 10).unwrap();
        // A guesser from many addresses, and a sprayer behind the owner's address.
        for i in 0..8 {
            reserve(
                &c,
                &cfg,
                &at("owner@x.test", &format!("198.51.100.{i}")),
                20,
            )
            .unwrap();
        }
        for i in 0..5 {
            reserve(&c, &cfg, &at(&format!("u{i}@x.test"), "192.0.2.9"), 20).unwrap();
        }
        assert!(
            matches!(
                reserve(&c, &cfg, &at("owner@x.test", "203.0.113.1"), 21).unwrap(),
                Verdict::Blocked { .. }
            ),
            "a new address for the attacked account is held back"
        );
        assert!(
            matches!(
                reserve(&c, &cfg, &at("new@x.test", "192.0.2.9"), 21).unwrap(),
                Verdict::Blocked { .. }
            ),
            "a new account at the noisy address is held back"
        );
        assert_eq!(
            reserve(&c, &cfg, &owner, 21).unwrap(),
            Verdict::Counted { known: true }
        );
    }

    #[test]
    fn a_success_gives_its_count_back() {
        let (_d, c) = db();
        let cfg = cfg();
        for i in 0..4 {
            reserve(&c, &cfg, &at(&format!("u{i}@x.test"), "192.0.2.3"), 5).unwrap();
        }
        // The fifth attempt reaches the address's limit, but it was right.
        let ok = at("ok@x.test", "192.0.2.3");
        reserve(&c, &cfg, &ok, 5).unwrap();
        succeeded(&c, &cfg, &ok, false, 5).unwrap();
        assert!(matches!(
            reserve(&c, &cfg, &at("next@x.test", "192.0.2.3"), 6).unwrap(),
            Verdict::Counted { .. }
        ));
        withdraw(&c, &cfg, &at("next@x.test", "192.0.2.3"), false).unwrap();
        let n: u32 = c
            .query_row(
                "SELECT failures FROM login_throttle WHERE key = 'ip:192.0.2.3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 4);
        // A window after the failures at 5, the sweep removes their counters (4 pairs, 5
        // accounts), not those touched at 6, nor the known pair.
        assert_eq!(prune(&c, &cfg, 6 + 640, 100).unwrap(), 9);
        assert_eq!(prune(&c, &cfg, 6 + 640, 100).unwrap(), 0);
        assert_eq!(
            prune(&c, &cfg, 5 + KNOWN_FOR_DAYS * 86_400 + 1, 100).unwrap(),
            4
        );
    }

    #[test]
    fn blocks_grow_with_each_failure_up_to_the_window() {
        assert_eq!(block_secs(4, 5, 900), 0);
        assert_eq!(block_secs(5, 5, 900), 14);
        assert_eq!(block_secs(6, 5, 900), 28);
        assert_eq!(block_secs(9, 5, 900), 224);
        assert_eq!(block_secs(11, 5, 900), 896);
        assert_eq!(block_secs(12, 5, 900), 900);
        assert_eq!(block_secs(500, 5, 900), 900);
        assert_eq!(block_secs(u32::MAX, 1, 10), 10);
    }
}
