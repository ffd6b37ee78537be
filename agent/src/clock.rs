//! The agent's one wall clock. Expiry is enforced by it (RADIUS refuses, the edge cuts
//! off), journal entries and sessions are stamped with it, so all of them agree on
//! what "now" is, to the second.

/// Unix seconds (UTC) now. A clock set before 1970 reads 0 rather than failing: the
/// agent then expires nobody early, and the controller's own clock still judges.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
