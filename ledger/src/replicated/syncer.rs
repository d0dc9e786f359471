//! Makes decided entries durable off the node thread. A decided entry is appended without an
//! fsync; right after, this thread syncs the ledger (a durable empty redb commit, 1 to 2 ms with
//! the entry's pages), while the node answers clients and starts the next height. The WAL waits
//! for it only when it moves to that next height (see `LedgerWal`), so the sync overlaps the
//! start of the height instead of sitting in front of its first vote.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::store::Store;

#[derive(Debug, Default)]
struct Progress {
    /// Commits asked to be made durable (a counter).
    requested: u64,
    /// Commits known durable.
    done: u64,
    failed: Option<String>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// The handle the node thread holds; dropping the last one stops the thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub fn spawn(store: Arc<Store>) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nexus-ledger-sync".into())
            .spawn(move || run(&s, &store))?;
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

    /// Asks for everything committed so far to be made durable (returns at once).
    pub fn request(&self) {
        self.lock().requested += 1;
        self.shared.changed.notify_all();
    }

    /// Waits until everything requested so far is durable.
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

fn run(shared: &Shared, store: &Store) {
    let lock = || shared.progress.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let target = {
            let mut p = lock();
            while p.requested <= p.done && !p.stop {
                p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if p.requested <= p.done {
                return; // stopped with nothing left to do
            }
            p.requested
        };
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
        let s = Syncer::spawn(store).unwrap();
        s.wait().unwrap(); // nothing asked yet
        for _ in 0..5 {
            s.request();
        }
        s.wait().unwrap();
        assert!(s.lock().done >= 5);
        s.request();
        drop(s); // stopping finishes what was asked
    }
}
