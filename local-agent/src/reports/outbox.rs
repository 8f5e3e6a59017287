//! The durable, bounded outbox of signed report messages (the `outbox` table of the state database).
//!
//! Rows are queue-ready message texts, oldest first by row id. The sender reads the oldest rows and
//! [`remove`]s each one only after the reports queue accepted it, so an outage or a restart loses
//! nothing. The table is bounded: when a [`push`] would exceed the bound, the oldest heartbeats go first
//! (a newer heartbeat says the same, only fresher), then the oldest reports; every drop is counted in
//! [`Pushed`] so the caller can export it.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use crate::store::StoreError;

/// Default number of messages the outbox keeps (at most ~64 KiB each: 640 MiB worst case on disk, a few
/// MB in the usual case of small commit reports).
pub const DEFAULT_BOUND: u64 = 10_000;

/// What a row holds; decides the drop order when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A commit report (or one part of it): dropped only when no heartbeat is left to drop.
    Report,
    /// A heartbeat: dropped first.
    Heartbeat,
}

impl Kind {
    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Heartbeat => "heartbeat",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "report" => Ok(Self::Report),
            "heartbeat" => Ok(Self::Heartbeat),
            other => Err(StoreError::Corrupt(format!(
                "unknown outbox kind {other:?}"
            ))),
        }
    }
}

/// One message waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Row id: increases with every push, so it orders the outbox.
    pub id: i64,
    /// Report or heartbeat.
    pub kind: Kind,
    /// The queue message text (a signed, encoded [`Report`](queue_message::report::Report)).
    pub body: String,
}

/// What a [`push`] did to make room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Heartbeats dropped, oldest first.
    pub dropped_heartbeats: u64,
    /// Reports dropped, oldest first (only once no heartbeat was left).
    pub dropped_reports: u64,
}

/// Appends `bodies` (in order) of one `kind` in one transaction, then trims the outbox to `bound` rows.
///
/// A `bound` of 0 is treated as 1 so the newest message always survives its own push.
pub fn push(
    conn: &Connection,
    kind: Kind,
    bodies: &[String],
    at: DateTime<Utc>,
    bound: u64,
) -> Result<Pushed, StoreError> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO outbox (kind, body, created_at) VALUES (?1, ?2, ?3)")?;
        for body in bodies {
            insert.execute(params![kind.as_str(), body, at.timestamp()])?;
        }
    }
    let bound = i64::try_from(bound.max(1)).unwrap_or(i64::MAX);
    let depth: i64 = tx.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    let mut excess = (depth - bound).max(0);
    let mut pushed = Pushed::default();
    for (dropped, which) in [
        (&mut pushed.dropped_heartbeats, Kind::Heartbeat),
        (&mut pushed.dropped_reports, Kind::Report),
    ] {
        if excess == 0 {
            break;
        }
        let n = tx.execute(
            "DELETE FROM outbox WHERE id IN \
             (SELECT id FROM outbox WHERE kind = ?1 ORDER BY id LIMIT ?2)",
            params![which.as_str(), excess],
        )?;
        *dropped = n as u64;
        excess -= n as i64;
    }
    tx.commit()?;
    Ok(pushed)
}

/// The `limit` oldest messages, oldest first.
pub fn oldest(conn: &Connection, limit: usize) -> Result<Vec<Entry>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached("SELECT id, kind, body FROM outbox ORDER BY id LIMIT ?1")?;
    let rows = stmt.query_map([limit], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    rows.map(|row| {
        let (id, kind, body) = row?;
        Ok(Entry {
            id,
            kind: Kind::parse(&kind)?,
            body,
        })
    })
    .collect()
}

/// Removes one message once the reports queue accepted it. Removing an id that is gone is not an error
/// (it was trimmed meanwhile).
pub fn remove(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
    Ok(())
}

/// Messages waiting to be sent (the `portcullis_outbox_depth` gauge and `status`).
pub fn depth(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn bodies(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn contents(store: &Store) -> Vec<String> {
        oldest(store.connection(), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect()
    }

    #[test]
    fn oldest_first_and_remove_only_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let conn = store.connection();
        push(conn, Kind::Report, &bodies(&["r1", "r2"]), Utc::now(), 100).unwrap();
        push(conn, Kind::Heartbeat, &bodies(&["h1"]), Utc::now(), 100).unwrap();
        push(conn, Kind::Report, &bodies(&["r3"]), Utc::now(), 100).unwrap();
        let first_two = oldest(conn, 2).unwrap();
        assert_eq!(
            first_two
                .iter()
                .map(|e| e.body.as_str())
                .collect::<Vec<_>>(),
            ["r1", "r2"]
        );
        remove(conn, first_two[0].id).unwrap();
        assert_eq!(contents(&store), ["r2", "h1", "r3"]);
        assert_eq!(depth(store.connection()).unwrap(), 3);
        // Removing twice (trimmed meanwhile) is harmless.
        remove(store.connection(), first_two[0].id).unwrap();
        assert_eq!(depth(store.connection()).unwrap(), 3);
    }

    #[test]
    fn bound_drops_oldest_heartbeats_before_any_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let conn = store.connection();
        push(conn, Kind::Heartbeat, &bodies(&["h1"]), Utc::now(), 4).unwrap();
        push(conn, Kind::Report, &bodies(&["r1"]), Utc::now(), 4).unwrap();
        push(conn, Kind::Heartbeat, &bodies(&["h2"]), Utc::now(), 4).unwrap();
        push(conn, Kind::Report, &bodies(&["r2"]), Utc::now(), 4).unwrap();
        let pushed = push(conn, Kind::Report, &bodies(&["r3"]), Utc::now(), 4).unwrap();
        assert_eq!(
            pushed,
            Pushed {
                dropped_heartbeats: 1,
                dropped_reports: 0
            }
        );
        assert_eq!(contents(&store), ["r1", "h2", "r2", "r3"]);
        // Three more reports: the last heartbeat goes, then the two oldest reports.
        let pushed = push(
            conn,
            Kind::Report,
            &bodies(&["r4", "r5", "r6"]),
            Utc::now(),
            4,
        )
        .unwrap();
        assert_eq!(
            pushed,
            Pushed {
                dropped_heartbeats: 1,
                dropped_reports: 2
            }
        );
        assert_eq!(contents(&store), ["r3", "r4", "r5", "r6"]);
        assert_eq!(depth(store.connection()).unwrap(), 4);
    }

    #[test]
    fn a_full_outbox_of_heartbeats_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let conn = store.connection();
        for h in ["h1", "h2", "h3"] {
            push(conn, Kind::Heartbeat, &bodies(&[h]), Utc::now(), 2).unwrap();
        }
        assert_eq!(contents(&store), ["h2", "h3"]);
        // A bound of 0 still keeps the message just pushed.
        push(conn, Kind::Report, &bodies(&["r1"]), Utc::now(), 0).unwrap();
        assert_eq!(contents(&store), ["r1"]);
    }

    #[test]
    fn unsent_messages_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            push(
                store.connection(),
                Kind::Report,
                &bodies(&["r1", "r2"]),
                Utc::now(),
                10,
            )
            .unwrap();
        }
        let reopened = Store::open(&path).unwrap();
        assert_eq!(contents(&reopened), ["r1", "r2"]);
        let read_only = Store::open_read_only(&path).unwrap();
        assert_eq!(depth(read_only.connection()).unwrap(), 2);
    }
}
