//! The agent side of the return path (issue 10): signed reports about what the agent did, kept in a
//! durable [`outbox`] until the reports queue has accepted them.
//!
//! Reports are written to the outbox *after* the executor has recorded a commit, in their own
//! transaction: enforcement never waits on the reports queue, and a crash between the two loses at most
//! the report of that one commit (the audit log still has it), never a block.

pub mod outbox;

use chrono::{DateTime, Utc};
use queue_message::report::{CommitEvent, Report};
use queue_message::SigningKey;
use uuid::Uuid;

/// The signed queue messages for one commit, in order (part 1 first), ready for [`outbox::push`].
///
/// Thin on purpose: [`Report::pack_commit`] does the splitting under the queue's message size limit; this
/// only encodes each part with the agent's key.
pub fn commit_messages(
    template: &Report,
    commit_id: Uuid,
    committed_at: DateTime<Utc>,
    events: &[CommitEvent],
    key: &SigningKey,
) -> Vec<String> {
    Report::pack_commit(template, commit_id, committed_at, events, key)
        .iter()
        .map(|part| part.encode(key))
        .collect()
}
