//! The changes a backend has staged since its last commit, normalised the same way for every backend.
//!
//! One entry per target: a later remove cancels an add and a later add cancels a remove; of two adds of one
//! target the *longest* expiry wins. Longest, not last: claims only ever extend (see [`crate::decide`]),
//! so a shorter expiry staged for a target in the same commit can only be stale, and taking it would end
//! a block earlier than the state records. (The engine stages each target at most once per commit; the
//! rule matters for reconcile after a crash and for direct callers such as the contract tests.)

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use queue_message::Target;

use super::BlockEntry;

/// The changes staged since the last commit, normalised (see the module header).
#[derive(Debug, Default)]
pub struct Staged {
    adds: BTreeMap<Target, DateTime<Utc>>,
    removes: BTreeSet<Target>,
}

/// What [`Staged::take`] hands to a commit.
#[derive(Debug, Default)]
pub struct Batch {
    /// Targets to block, each with its longest staged expiry (backends without per-entry timeouts use
    /// only the keys).
    pub adds: BTreeMap<Target, DateTime<Utc>>,
    /// Targets to unblock.
    pub removes: BTreeSet<Target>,
}

impl Batch {
    /// Nothing to add and nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }
}

impl Staged {
    /// `Backend::stage_add`.
    pub fn add(&mut self, entry: BlockEntry) {
        self.removes.remove(&entry.target);
        let slot = self.adds.entry(entry.target).or_insert(entry.expires_at);
        *slot = (*slot).max(entry.expires_at);
    }

    /// `Backend::stage_remove`.
    pub fn remove(&mut self, target: Target) {
        self.adds.remove(&target);
        self.removes.insert(target);
    }

    /// Takes everything staged, leaving nothing staged.
    pub fn take(&mut self) -> Batch {
        Batch {
            adds: std::mem::take(&mut self.adds),
            removes: std::mem::take(&mut self.removes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    #[test]
    fn the_longest_expiry_wins_and_the_last_of_add_and_remove() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let mut staged = Staged::default();
        staged.add(BlockEntry {
            target: t("198.51.100.1"),
            expires_at: at(100),
        });
        staged.add(BlockEntry {
            target: t("198.51.100.1"),
            expires_at: at(50),
        });
        staged.add(BlockEntry {
            target: t("198.51.100.2"),
            expires_at: at(10),
        });
        staged.remove(t("198.51.100.2"));
        staged.remove(t("198.51.100.3"));
        staged.add(BlockEntry {
            target: t("198.51.100.3"),
            expires_at: at(20),
        });
        let batch = staged.take();
        assert_eq!(
            batch.adds.into_iter().collect::<Vec<_>>(),
            [(t("198.51.100.1"), at(100)), (t("198.51.100.3"), at(20))]
        );
        assert_eq!(
            batch.removes.into_iter().collect::<Vec<_>>(),
            [t("198.51.100.2")]
        );
        assert!(staged.take().is_empty(), "take leaves nothing staged");
    }
}
