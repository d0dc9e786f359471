//! Makes decided entries durable off the node thread. A decided entry is appended without an
//! fsync, and its decision (batch and certificate) goes into the consensus WAL with the flush
//! that moves the WAL to the next height, which this replica makes anyway before it sends
//! anything for that height. This thread then syncs the ledger (a durable redb commit: the
//! pages of every height since the last sync, and `fdatasync`) at most every `gap` (100 ms by
//! default, `ReplicaConfig::ledger_sync_gap`), so
//! one sync covers many heights under load and none sits on a height's critical path. The WAL
//! keeps the decided records until the ledger is durable past them (see `LedgerWal`); a
//! restart replays those the ledger lost.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::Store;

#[derive(Debug, Default)]
struct Progress {
    /// The highest height asked to be made durable.
    requested: u64,
    /// The ledger is durable through this height.
    done: u64,
    failed: Option<String>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// The handle the node thread holds; dropping the last one stops the thread (after a last sync
/// of what was asked).
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// `durable`: the height the ledger is durable through now (its head when opened); `gap`:
    /// the least time between two syncs.
    pub fn spawn(store: Arc<Store>, durable: u64, gap: Duration) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress {
                requested: durable,
                done: durable,
                ..Default::default()
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nexus-ledger-sync".into())
            .spawn(move || run(&s, &store, gap))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for the ledger to be made durable through `height`, which is appended (returns at
    /// once).
    pub fn request(&self, height: u64) {
        let mut p = self.lock();
        if height > p.requested {
            p.requested = height;
            drop(p);
            self.shared.changed.notify_all();
        }
    }

    /// The height the ledger is known durable through.
    pub fn durable(&self) -> u64 {
        self.lock().done
    }

    /// Whether a sync failed (after one, the replica must stop signing).
    pub fn check(&self) -> Result<(), String> {
        match &self.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Waits until everything requested so far is durable (tests).
    #[cfg(test)]
    pub fn wait(&self) -> Result<(), String> {
        let mut p = self.lock();
        let want = p.requested;
        loop {
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            if p.done >= want {
                return Ok(());
            }
            p = self
                .shared
                .changed
                .wait(p)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared, store: &Store, gap: Duration) {
    let lock = || shared.progress.lock().unwrap_or_else(|e| e.into_inner());
    // The ledger was durable when the thread started: the first sync waits `gap` too.
    let mut last = Instant::now();
    loop {
        let target = {
            let mut p = lock();
            loop {
                if p.requested <= p.done {
                    if p.stop {
                        return; // stopped with nothing left to do
                    }
                    p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                // Work to do: not before `gap` after the last sync (unless stopping).
                let wait = (last + gap).saturating_duration_since(Instant::now());
                match wait {
                    wait if !wait.is_zero() && !p.stop => {
                        p = shared
                            .changed
                            .wait_timeout(p, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    _ => break p.requested,
                }
            }
        };
        last = Instant::now();
        // A panic must not leave the node waiting for a sync that never comes.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.sync())) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the sync panicked".to_string()),
        };
        let mut p = lock();
        match result {
            Ok(()) => p.done = p.done.max(target),
            Err(e) => {
                p.failed = Some(format!("cannot make the ledger durable: {e}"));
            }
        }
        shared.changed.notify_all();
        if p.failed.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn waits_cover_every_request_made_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap());
        let s = Syncer::spawn(store, 0, Duration::from_millis(1)).unwrap();
        s.wait().unwrap(); // nothing asked yet
        assert_eq!(s.durable(), 0);
        for h in 1..=5 {
            s.request(h);
        }
        s.wait().unwrap();
        assert_eq!(s.durable(), 5);
        s.request(3); // behind what is durable: nothing to do
        s.wait().unwrap();
        s.request(6);
        s.check().unwrap();
        drop(s); // stopping finishes what was asked
    }
}
