//! The notices of this site's subscribers, as the controller last sent them: replaced
//! whole, in the same transaction as the state that carried them, and read back by the
//! suspended page (which is not hot: a cut-off subscriber's browser, now and then), so
//! they are not held in memory.

use outpost_protocol as proto;
use rusqlite::{Transaction, params};

use super::{Result, Store};

/// Replaces the stored notices with `s.notices` when the state carries them (a state
/// without them, from an older controller or an `unchanged` answer, keeps them). Run it
/// in the state's transaction.
pub(super) fn apply(tx: &Transaction<'_>, s: &proto::StateResponse) -> Result<()> {
    let Some(notices) = &s.notices else {
        return Ok(());
    };
    tx.execute("DELETE FROM notices", [])?;
    let mut up = tx.prepare_cached("INSERT INTO notices (id, state) VALUES (?1, ?2)")?;
    for n in notices {
        up.execute(params![n.id, serde_json::to_string(n)?])?;
    }
    Ok(())
}

impl Store {
    /// The notices shown at `now` (unix seconds, the agent's clock) to the subscriber
    /// with this id and owning tenant, newest first.
    pub fn notices_for(
        &self,
        subscriber_id: i64,
        tenant_id: i64,
        now: i64,
    ) -> Result<Vec<proto::Notice>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT state FROM notices")?;
        let mut out = Vec::new();
        for row in stmt.query_map([], |r| r.get::<_, String>(0))? {
            let n: proto::Notice = serde_json::from_str(&row?)?;
            if n.shown_to(subscriber_id, tenant_id, now) {
                out.push(n);
            }
        }
        out.sort_by_key(|n| std::cmp::Reverse((n.starts_at, n.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_testkit::fixtures;

    fn notice(id: i64, tenants: Vec<i64>, subs: Vec<i64>, starts: i64, ends: i64) -> proto::Notice {
        proto::Notice {
            id,
            title: format!("notice {id}"),
            body: "Fibre cut on the ridge road.\nCrews are on it.".into(),
            starts_at: starts,
            ends_at: ends,
            tenant_ids: tenants,
            subscriber_ids: subs,
        }
    }

    #[test]
    fn notices_are_replaced_whole_kept_when_absent_shown_only_while_active_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let now = fixtures::unix_now();
        let s = Store::open(&path, 100).unwrap();
        let mut snap = fixtures::snapshot(1, vec![fixtures::subscriber(7, "amina", "pw")], vec![]);
        snap.notices = Some(vec![
            // To tenant 2's subscribers, now.
            notice(1, vec![2], vec![], now - 60, now + 3600),
            // To subscriber 7 alone (a plan notice), now.
            notice(2, vec![], vec![7], now - 30, now + 3600),
            // Tenant 2's, not yet started; and one already ended.
            notice(3, vec![2], vec![], now + 600, now + 3600),
            notice(4, vec![2], vec![], now - 7200, now - 3600),
            // Another tenant's.
            notice(5, vec![3], vec![], now - 60, now + 3600),
        ]);
        s.apply(&snap).unwrap();
        let ids = |v: Vec<proto::Notice>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(s.notices_for(7, 2, now).unwrap()), vec![2, 1]);
        assert_eq!(
            ids(s.notices_for(8, 2, now).unwrap()),
            vec![1],
            "not the plan notice"
        );
        assert_eq!(ids(s.notices_for(9, 3, now).unwrap()), vec![5]);
        assert_eq!(
            ids(s.notices_for(7, 2, now + 700).unwrap()),
            vec![3, 2, 1],
            "the later one shows once started"
        );
        assert!(
            s.notices_for(7, 2, now + 3600).unwrap().is_empty(),
            "all ended"
        );

        // A delta without notices (an older controller) keeps them.
        let mut delta = fixtures::delta(2, vec![], vec![]);
        delta.notices = None;
        s.apply(&delta).unwrap();
        assert_eq!(ids(s.notices_for(7, 2, now).unwrap()), vec![2, 1]);

        // A delta with them replaces them whole, in the state's transaction.
        let mut delta = fixtures::delta(3, vec![], vec![]);
        delta.notices = Some(vec![notice(6, vec![2], vec![], now - 1, now + 60)]);
        s.apply(&delta).unwrap();
        assert_eq!(ids(s.notices_for(7, 2, now).unwrap()), vec![6]);
        drop(s);

        let s = Store::open(&path, 100).unwrap();
        assert_eq!(s.revision(), 3);
        let got = s.notices_for(7, 2, now).unwrap();
        assert_eq!(got, vec![notice(6, vec![2], vec![], now - 1, now + 60)]);

        // An empty list clears them.
        let mut delta = fixtures::delta(4, vec![], vec![]);
        delta.notices = Some(vec![]);
        s.apply(&delta).unwrap();
        assert!(s.notices_for(7, 2, now).unwrap().is_empty());
    }
}
