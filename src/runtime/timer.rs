//! Deadlines of parked coroutines, ordered; a wake for another reason removes one.

use std::collections::BTreeMap;
use std::time::Instant;

use super::task::Unparker;

/// Names one armed timer so that it can be cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(Instant, u64);

#[derive(Default)]
pub(crate) struct Timers {
    armed: BTreeMap<TimerKey, Unparker>,
    next_id: u64,
}

impl Timers {
    pub(crate) fn insert(&mut self, deadline: Instant, who: Unparker) -> TimerKey {
        self.next_id += 1;
        let key = TimerKey(deadline, self.next_id);
        self.armed.insert(key, who);
        key
    }

    pub(crate) fn cancel(&mut self, key: TimerKey) {
        self.armed.remove(&key);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.armed.first_key_value().map(|(k, _)| k.0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Removes and returns the first timer due at `now`, if any.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Unparker> {
        let entry = self.armed.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }
}
