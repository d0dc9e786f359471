//! Timer bookkeeping: timers are keyed (one live timer per key), carry a generation number, and
//! an expiry whose generation is not the live one (cancelled or replaced) is dropped.

use std::collections::HashMap;

use arc_malachitebft_core_types::Timeout;

/// What a timer is for. Opaque to the host, which only stores it and hands it back.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(crate) TimerKey);

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TimerKey {
    /// A Malachite timeout (propose/prevote/precommit/rebroadcast/finalize).
    Consensus(Timeout),
    /// Waiting for items before proposing (or proposing an empty batch).
    BuildValue,
    /// Periodic status beacon.
    Status,
    /// The outstanding sync request timed out.
    SyncRetry,
}

/// Live timers and their generations.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    live: HashMap<TimerKey, u64>,
    next: u64,
}

impl TimerTable {
    /// Start or replace the timer for `key`; returns its generation.
    pub fn arm(&mut self, key: TimerKey) -> u64 {
        self.next += 1;
        self.live.insert(key, self.next);
        self.next
    }

    /// Cancel one timer.
    pub fn cancel(&mut self, key: TimerKey) {
        self.live.remove(&key);
    }

    /// Cancel every consensus timeout (not the node's own timers).
    pub fn cancel_consensus(&mut self) {
        self.live
            .retain(|k, _| !matches!(k, TimerKey::Consensus(_)));
    }

    /// Whether an expiry is current; if so the timer is consumed.
    pub fn fire(&mut self, key: TimerKey, generation: u64) -> bool {
        if self.live.get(&key) == Some(&generation) {
            self.live.remove(&key);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_malachitebft_core_types::Round;

    #[test]
    fn replaced_and_cancelled_timers_do_not_fire() {
        let mut t = TimerTable::default();
        let k = TimerKey::Consensus(Timeout::propose(Round::new(0)));
        let g1 = t.arm(k);
        let g2 = t.arm(k);
        assert!(!t.fire(k, g1), "replaced");
        let s = t.arm(TimerKey::Status);
        t.cancel_consensus();
        assert!(!t.fire(k, g2), "cancelled");
        assert!(t.fire(TimerKey::Status, s));
        assert!(!t.fire(TimerKey::Status, s), "fires once");
    }
}
