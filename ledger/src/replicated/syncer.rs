//! The ledger writer: appends decided entries to the ledger and makes them durable, off the
//! node thread. The node thread executes a decided height and hands its commit over
//! ([`Syncer::append`]); the decision itself (batch and certificate) goes into the consensus
//! WAL with the flush that moves the WAL to the next height, which this replica makes anyway
//! before it sends anything for that height. This thread appends what was handed over
//! (without an fsync, every height queued in the last 20 ms in one redb transaction) and
//! syncs the ledger (a durable redb commit: the pages of every height since the last sync, and
//! `fdatasync`) at most every `gap` (1 s by default, `ReplicaConfig::ledger_sync_gap`). The WAL
//! keeps the decided records until the ledger is durable past them (see `LedgerWal`); a
//! restart replays those the ledger lost.
//!
//! redb has one write transaction at a time, and a sync holds it through its page writes and
//! `fdatasync`. Appending here instead of on the node thread means no height's critical path
//! waits for a sync: a slow `fdatasync` only delays appends queued behind it.
//!
//! A queued commit stays queued until it is in the store, so the node thread's reads of what
//! was decided (request ids for retries and duplicates, decided heights for catch-up) look here
//! first and then in the store, and always find a height in one or the other. Readers on other
//! threads look in the queue too (retries on submit) or wait for the writer
//! ([`Syncer::wait_for`], see `Ledger::store`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::entry::EncodedEntry;
use crate::state::State;
use crate::store::{Commit, RequestRecord, Store, StoreError};

/// How long a handed-over height may wait to be appended, so that one redb transaction takes
/// several: a transaction rewrites the path to every table it touches, which at one client
/// (a height every few milliseconds) cost about as much as the entry itself (about 6 % of the
/// cluster's CPU per commit, measured).
const APPEND_EVERY: Duration = Duration::from_millis(20);

/// A queued height as catch-up serves it: the entry's stored request rows and its
/// certificate record.
pub(crate) type QueuedEntry = (Vec<Vec<u8>>, Option<Vec<u8>>);

#[derive(Clone)]
enum Job {
    Commit(Arc<Commit>),
    /// A state to encode and store as the snapshot at its height (encoded here, not on the
    /// node thread: a large state takes a tenth of a second or more).
    Snapshot(Arc<State>),
}

#[derive(Default)]
struct Progress {
    /// Handed over and not yet written, in order. A commit leaves only once it is in the store.
    queue: VecDeque<Job>,
    /// The highest height handed over.
    queued: u64,
    /// The store holds every height through this one.
    appended: u64,
    /// The ledger is durable through this height.
    done: u64,
    /// Sync as soon as this height is appended, whatever the gap.
    urgent: u64,
    /// When the oldest job in the queue was queued.
    since: Option<Instant>,
    failed: Option<String>,
    stop: bool,
    /// The writer thread has ended: readers no longer wait for it.
    exited: bool,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// The handle the node thread holds; dropping the last one stops the thread (after appending
/// and syncing what was handed over).
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

impl Syncer {
    /// `head`: the height the store holds and is durable through now (its head when opened);
    /// `gap`: the least time between two syncs.
    pub fn spawn(store: Arc<Store>, head: u64, gap: Duration) -> std::io::Result<Syncer> {
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress {
                queued: head,
                appended: head,
                done: head,
                urgent: head,
                ..Default::default()
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("nexus-ledger-sync".into())
            .spawn(move || {
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&s, &store, gap)));
                let mut p = s.progress.lock().unwrap_or_else(|e| e.into_inner());
                if ran.is_err() {
                    // The node must not go on signing (or wait in `flush`) for a writer that
                    // is gone.
                    p.failed
                        .get_or_insert_with(|| "the ledger writer stopped unexpectedly".into());
                }
                p.exited = true;
                drop(p);
                s.changed.notify_all();
            })?;
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

    /// Hands a commit over to be appended (returns at once). Commits must come in height order,
    /// each extending the one before; after a failure nothing more is taken.
    pub fn append(&self, commit: Commit) -> Result<(), String> {
        let mut p = self.lock();
        if let Some(e) = &p.failed {
            return Err(e.clone());
        }
        let height = commit.entry.height;
        if height != p.queued + 1 {
            return Err(format!(
                "height {height} handed to the ledger writer after {}",
                p.queued
            ));
        }
        p.queued = height;
        p.since.get_or_insert_with(Instant::now);
        p.queue.push_back(Job::Commit(Arc::new(commit)));
        drop(p);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Queues a snapshot of `state` (see [`State::detached`]), encoded and written after the
    /// entries up to its height. Not durable on its own: the next sync makes it so.
    pub fn snapshot(&self, state: State) {
        let mut p = self.lock();
        if p.failed.is_none() {
            p.since.get_or_insert_with(Instant::now);
            p.queue.push_back(Job::Snapshot(Arc::new(state)));
            drop(p);
            self.shared.changed.notify_all();
        }
    }

    /// The highest height handed over (the store holds it, or will).
    pub fn last_height(&self) -> u64 {
        self.lock().queued
    }

    /// The height the ledger is known durable through.
    pub fn durable(&self) -> u64 {
        self.lock().done
    }

    /// Whether appending or syncing failed (after that, the replica must stop signing).
    pub fn check(&self) -> Result<(), String> {
        match &self.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The retry record of a request: from a commit still queued, else from the store.
    pub fn request_record(
        &self,
        store: &Store,
        actor: &str,
        id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        {
            let p = self.lock();
            for c in queued_commits(&p.queue) {
                let found = c
                    .entry
                    .requests
                    .iter()
                    .position(|r| r.request.actor == actor && r.request.id == id);
                if let Some(i) = found {
                    let encoded;
                    let enc = match &c.encoded {
                        Some(enc) => enc,
                        None => {
                            encoded = c.entry.encode();
                            &encoded
                        }
                    };
                    return c.request_record(enc, i as u32).map(Some);
                }
            }
        }
        // Not queued (any more): a commit leaves the queue only once the store holds it.
        store.request_record(actor, id)
    }

    /// A queued height's stored request rows and certificate record (`None`: not queued).
    pub fn queued_entry(&self, height: u64) -> Option<QueuedEntry> {
        let p = self.lock();
        let c = queued_commits(&p.queue).find(|c| c.entry.height == height)?;
        let requests = match &c.encoded {
            Some(EncodedEntry { requests, .. }) => requests.clone(),
            None => c.entry.encode().requests,
        };
        Some((requests, c.certificate.clone()))
    }

    /// Appends and syncs everything handed over so far, now, and waits for it.
    pub fn flush(&self) -> Result<(), String> {
        let mut p = self.lock();
        let want = p.queued;
        p.urgent = p.urgent.max(want);
        self.shared.changed.notify_all();
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

    /// Waits (at most `timeout`) until the store holds every height handed over so far.
    pub fn wait_appended(&self, timeout: Duration) {
        let want = self.lock().queued;
        self.wait_for(want, timeout);
    }

    /// Waits (at most `timeout`) until the store holds every height through `height` (readers
    /// on other threads; returns at once when the writer has stopped).
    pub fn wait_for(&self, height: u64, timeout: Duration) {
        let p = self.lock();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(p, timeout, |p| !p.exited && p.appended < height);
    }
}

fn queued_commits(queue: &VecDeque<Job>) -> impl Iterator<Item = &Arc<Commit>> {
    queue.iter().filter_map(|j| match j {
        Job::Commit(c) => Some(c),
        Job::Snapshot(..) => None,
    })
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

enum Step {
    /// Write these jobs (the first ones queued).
    Write(Vec<Job>),
    /// Sync: everything through this height is appended.
    Sync(u64),
}

/// Waits for a change, until `due` at the latest.
fn wait_until<'a>(
    shared: &'a Shared,
    p: std::sync::MutexGuard<'a, Progress>,
    due: Instant,
) -> std::sync::MutexGuard<'a, Progress> {
    let timeout = due.saturating_duration_since(Instant::now());
    shared
        .changed
        .wait_timeout(p, timeout)
        .unwrap_or_else(|e| e.into_inner())
        .0
}

fn run(shared: &Shared, store: &Store, gap: Duration) {
    let lock = || shared.progress.lock().unwrap_or_else(|e| e.into_inner());
    // The ledger was durable when the thread started: the first sync waits `gap` too.
    let mut last = Instant::now();
    loop {
        let step = {
            let mut p = lock();
            loop {
                if p.failed.is_some() {
                    return;
                }
                let now = Instant::now();
                // Appending comes first, a few heights at a time (one redb transaction each
                // time): only readers on other threads wait for it.
                let append_at = p.since.map(|since| since + APPEND_EVERY);
                if append_at.is_some_and(|at| now >= at || p.stop || p.urgent > p.appended) {
                    break Step::Write(p.queue.iter().cloned().collect());
                }
                // A sync that is due goes before more waiting for appends: under a steady stream
                // of heights the queue is never empty, and the ledger must still be synced.
                // (`None`: a gap too long to add to an instant, never due.)
                let sync_at = (p.appended > p.done).then(|| last.checked_add(gap));
                if sync_at.is_some()
                    && (p.urgent > p.done
                        || p.stop
                        || sync_at.flatten().is_some_and(|at| now >= at))
                {
                    break Step::Sync(p.appended);
                }
                let wake = [append_at, sync_at.flatten()].into_iter().flatten().min();
                match wake {
                    Some(at) => p = wait_until(shared, p, at),
                    None if p.stop && p.queue.is_empty() => {
                        return; // stopped with nothing left to do
                    }
                    None => p = shared.changed.wait(p).unwrap_or_else(|e| e.into_inner()),
                }
            }
        };
        match step {
            Step::Write(jobs) => {
                let n = jobs.len();
                let started = Instant::now();
                let mut through = None;
                // A panic must not leave the node waiting for a write that never comes.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    write(store, &jobs, &mut through)
                }))
                .unwrap_or_else(|_| Err("the ledger writer panicked".into()));
                let mut p = lock();
                match result {
                    Ok(()) => {
                        p.queue.drain(..n);
                        // Whatever was queued meanwhile came after the write started.
                        p.since = (!p.queue.is_empty()).then_some(started);
                        if let Some(h) = through {
                            p.appended = h;
                        }
                    }
                    Err(e) => {
                        tracing::error!("cannot append to the ledger: {e}");
                        p.failed = Some(format!("cannot append to the ledger: {e}"));
                    }
                }
                shared.changed.notify_all();
            }
            Step::Sync(target) => {
                last = Instant::now();
                let result =
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.sync())) {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("the sync panicked".to_string()),
                    };
                let mut p = lock();
                match result {
                    Ok(()) => p.done = p.done.max(target),
                    Err(e) => {
                        tracing::error!("cannot make the ledger durable: {e}");
                        p.failed = Some(format!("cannot make the ledger durable: {e}"));
                    }
                }
                shared.changed.notify_all();
            }
        }
    }
}

/// Writes queued jobs in order: each run of commits in one (non-durable) transaction, then
/// any snapshot after them.
fn write(store: &Store, jobs: &[Job], through: &mut Option<u64>) -> Result<(), String> {
    let mut run: Vec<Arc<Commit>> = Vec::new();
    let flush = |run: &mut Vec<Arc<Commit>>, through: &mut Option<u64>| {
        if let Some(last) = run.last() {
            let h = last.entry.height;
            store
                .append_with(run.as_slice(), false)
                .map_err(|e| e.to_string())?;
            *through = Some(h);
            run.clear();
        }
        Ok::<(), String>(())
    };
    for j in jobs {
        match j {
            Job::Commit(c) => run.push(c.clone()),
            Job::Snapshot(state) => {
                flush(&mut run, through)?;
                // A snapshot only shortens a replay: without it the ledger is still whole.
                if let Err(e) = store.write_snapshot(state) {
                    let height = state.height;
                    tracing::warn!(height, "cannot write a snapshot of the state: {e}");
                }
            }
        }
    }
    flush(&mut run, through)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::execute;
    use crate::request::Op;
    use crate::state::State;
    use crate::store::StoreConfig;
    use crate::testutil::*;

    fn store(dir: &tempfile::TempDir) -> Arc<Store> {
        Arc::new(Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap())
    }

    /// The next commit on `state` (folded into it), applying one Workload with request `id`.
    fn next(state: &mut State, id: &str) -> Commit {
        let req = signed(
            id,
            "u",
            vec![Op::Apply {
                object: workload(id, 1),
                if_version: None,
            }],
        );
        let c = execute(state, &[req])
            .into_commit(state.head_hash, state.height + 1, 10 + state.height, None)
            .unwrap();
        state.apply_entry(&c.entry).unwrap();
        c
    }

    #[test]
    fn appends_in_order_finds_queued_requests_and_makes_them_durable() {
        let dir = tempdir();
        let store = store(&dir);
        // A gap no test waits for: only `flush` and stopping sync.
        let w = Syncer::spawn(store.clone(), 0, Duration::from_secs(3600)).unwrap();
        let mut state = State::new();
        for i in 1..=5 {
            w.append(next(&mut state, &format!("r{i}"))).unwrap();
            // Queued or appended: the request is found either way, at its height.
            let rec = w.request_record(&store, "u", &format!("r{i}")).unwrap();
            assert_eq!(rec.map(|r| r.height), Some(i));
        }
        assert_eq!(w.last_height(), 5);
        assert_eq!(w.request_record(&store, "u", "r9").unwrap(), None);
        // Readers on other threads wait until the store holds what was handed over.
        w.wait_for(3, Duration::from_secs(10));
        assert!(store.head().unwrap().is_some_and(|h| h.height >= 3));
        w.wait_appended(Duration::from_secs(10));
        assert_eq!(store.head().unwrap().map(|h| h.height), Some(5));
        assert_eq!(w.durable(), 0, "nothing synced before the gap");
        w.flush().unwrap();
        assert_eq!(w.durable(), 5);
        // A height out of order is refused and nothing is queued.
        let mut other = State::new();
        let stray = next(&mut other, "stray");
        let err = w.append(stray).unwrap_err();
        assert!(
            err.contains("height 1 handed to the ledger writer after 5"),
            "{err}"
        );
        w.append(next(&mut state, "r6")).unwrap();
        w.snapshot(state.detached());
        drop(w); // stopping appends and syncs what was handed over
        assert_eq!(store.head().unwrap().map(|h| h.height), Some(6));
        let (loaded, report) = store.load_state().unwrap();
        assert_eq!((loaded.height, report.snapshot_height), (6, Some(6)));
        assert_eq!(
            loaded, state,
            "the snapshot the writer encoded is the state handed over"
        );
    }

    /// Under a steady stream of heights the queue is never empty for long; the ledger is
    /// synced all the same, every gap.
    #[test]
    fn syncs_keep_coming_under_a_steady_stream_of_heights() {
        let dir = tempdir();
        let store = store(&dir);
        let w = Syncer::spawn(store.clone(), 0, Duration::from_millis(50)).unwrap();
        let mut state = State::new();
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_millis(600) {
            i += 1;
            w.append(next(&mut state, &format!("s{i}"))).unwrap();
        }
        let durable = w.durable();
        assert!(
            durable > 0 && durable <= i,
            "{durable} of {i} heights durable while appending"
        );
        w.flush().unwrap();
        assert_eq!(w.durable(), i);
    }

    #[test]
    fn a_failed_append_stops_the_writer_and_is_reported() {
        let dir = tempdir();
        let store = store(&dir);
        let mut state = State::new();
        // The store gets height 1 behind the writer's back: its own height 1 no longer fits.
        let c1 = next(&mut state, "a");
        store.append(std::slice::from_ref(&c1)).unwrap();
        let w = Syncer::spawn(store.clone(), 0, Duration::from_millis(1)).unwrap();
        w.append(c1).unwrap();
        let err = w.flush().unwrap_err();
        assert!(err.starts_with("cannot append to the ledger"), "{err}");
        assert!(w.check().is_err());
        assert!(
            w.append(next(&mut state, "b")).is_err(),
            "nothing taken after a failure"
        );
    }
}
