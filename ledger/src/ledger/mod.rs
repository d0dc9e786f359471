//! The ledger front: thread-safe `submit` with group commit, reads of the current state, and
//! subscriptions to committed entries.
//!
//! Many threads call [`Ledger::submit`]; each verifies its request's signature on its own thread,
//! then hands it to the single writer thread. The writer takes everything queued, asks the
//! [`Sequencer`] to decide the next height, plans the decided requests, builds ONE entry and
//! appends it in ONE durable transaction, then folds it into the state and answers every caller.
//! While one batch is being fsynced the next one queues up, so under load each fsync covers many
//! requests. A caller is answered only after its entry is durable.
//!
//! A replicated ledger ([`Ledger::open_replicated`], in `replica.rs`) has no writer: its
//! consensus node orders requests with the other replicas (see [`crate::replicated`]).

mod replica;
mod writer;

#[cfg(test)]
pub(crate) use replica::BEFORE_STATE_READ;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nexus_schemas::ObjectKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admission::{Admission, AdmitAll};
use crate::entry::Entry;
use crate::plan::{ObjectOutcome, Plan, RequestError, plan_request};
use crate::prepared::Prepared;
use crate::request::{Request, SignatureError, SignedRequest};
use crate::sequencer::{Sequencer, SingleNode};
use crate::state::{ObjectState, State};
use crate::store::{LoadReport, Store, StoreConfig, StoreError};

/// Milliseconds since the Unix epoch; injectable for tests and simulation.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// Ledger settings.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub store: StoreConfig,
    /// Most requests in one entry.
    pub max_batch: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            store: StoreConfig::default(),
            max_batch: 4096,
        }
    }
}

/// Who is submitting: the identity and key of the client certificate the request arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: String,
    pub public_key: [u8; 32],
}

/// The answer to a committed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Height of the entry that holds the request.
    pub height: u64,
    pub request_id: String,
    /// One per operation, in order.
    pub outcomes: Vec<ObjectOutcome>,
    /// True when this was a retry of an already committed request (the original answer).
    pub duplicate: bool,
}

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubmitError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("storage failed, nothing was committed: {0}")]
    Storage(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Ordering(String),
    #[error("the ledger is shut down")]
    Closed,
}

/// Opening failed.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

pub(crate) struct Job {
    /// The request, prepared on the caller's thread (decoded, signature and objects checked).
    pub prepared: Arc<Prepared>,
    pub reply: Reply,
}

/// Where a submission's answer goes: a waiting thread, or a callback (an async caller that
/// must not hold a thread while its request is ordered).
pub(crate) enum Reply {
    Channel(mpsc::SyncSender<Result<Applied, SubmitError>>),
    Callback(Box<dyn FnOnce(Result<Applied, SubmitError>) + Send>),
}

impl Reply {
    pub fn send(self, r: Result<Applied, SubmitError>) {
        match self {
            Reply::Channel(tx) => {
                let _ = tx.send(r);
            }
            Reply::Callback(f) => f(r),
        }
    }
}

/// The longest [`Ledger::store`] waits for a replica's ledger writer (a slow disk can hold it
/// up); after that it reads what the store holds.
pub const STORE_WAIT: Duration = Duration::from_secs(5);

pub(crate) type Subscribers = Arc<Mutex<Vec<mpsc::Sender<Arc<Entry>>>>>;

/// The single-replica ledger (or one replica's view of the replicated one).
pub struct Ledger {
    store: Arc<Store>,
    state: Arc<RwLock<State>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    subscribers: Subscribers,
    load_report: LoadReport,
    admission: Arc<RwLock<Arc<dyn Admission>>>,
    /// The consensus node of a replicated ledger (then `jobs` is unused).
    replica: Option<crate::replicated::Handle>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.store)
            .finish()
    }
}

impl Ledger {
    /// Opens a single-replica ledger with the system clock.
    pub fn open(path: impl AsRef<Path>, config: LedgerConfig) -> Result<Ledger, OpenError> {
        Ledger::open_with(path, config, Box::new(SingleNode), system_clock())
    }

    /// Opens a ledger ordered by `sequencer`, timestamping entries with `clock`.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: LedgerConfig,
        sequencer: Box<dyn Sequencer>,
        clock: Clock,
    ) -> Result<Ledger, OpenError> {
        let store = Arc::new(Store::open(path, config.store.clone())?);
        let (state, load_report) = store.load_state()?;
        let state = Arc::new(RwLock::new(state));
        let subscribers: Subscribers = Arc::default();
        let (tx, rx) = mpsc::channel();
        let w = writer::Writer {
            store: store.clone(),
            state: state.clone(),
            sequencer,
            clock,
            subscribers: subscribers.clone(),
            max_batch: config.max_batch.max(1),
        };
        let handle = std::thread::Builder::new()
            .name("nexus-ledger-writer".into())
            .spawn(move || w.run(rx))
            .map_err(OpenError::Thread)?;
        Ok(Ledger {
            store,
            state,
            jobs: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            subscribers,
            load_report,
            admission: Arc::new(RwLock::new(Arc::new(AdmitAll))),
            replica: None,
        })
    }

    /// Sets the check every submitted request must pass before it is queued (see
    /// [`crate::admission`]). The default admits everything.
    pub fn set_admission(&self, admission: Arc<dyn Admission>) {
        *self.admission.write().unwrap_or_else(|e| e.into_inner()) = admission;
    }

    /// The admission check in force (the consensus glue runs it on proposed batches).
    pub fn admission(&self) -> Arc<dyn Admission> {
        self.admission
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifies `request` against the caller's certificate identity and key, checks every object
    /// with the manifest validator, runs the admission check (git content for git-sourced
    /// requests), then commits it. Returns after the entry
    /// holding it is durable. A retry (same actor and id, same content) gets the original answer
    /// with `duplicate: true`.
    ///
    /// A request that changes nothing (every object unchanged) is answered without writing an
    /// entry; `height` is then the height it was evaluated at. Such a request leaves no trace, so
    /// a retry of it is simply evaluated again.
    pub fn submit(&self, request: SignedRequest, caller: &Caller) -> Result<Applied, SubmitError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit_reply(request, caller, Reply::Channel(reply));
        answer.recv().map_err(|_| SubmitError::Closed)?
    }

    /// [`Ledger::submit`] for an async caller: the checks run on the calling thread, then the
    /// request is queued and `done` is called with the answer, from the thread that orders it
    /// (it must not block). Returns at once after the checks.
    pub fn submit_then(
        &self,
        request: SignedRequest,
        caller: &Caller,
        done: impl FnOnce(Result<Applied, SubmitError>) + Send + 'static,
    ) {
        self.submit_reply(request, caller, Reply::Callback(Box::new(done)));
    }

    fn submit_reply(&self, request: SignedRequest, caller: &Caller, reply: Reply) {
        match self.queue(request, caller, reply) {
            Ok(()) => {}
            Err((reply, e)) => reply.send(Err(e)),
        }
    }

    /// Checks `request` and queues it, or gives the reply back with why not.
    fn queue(
        &self,
        request: SignedRequest,
        caller: &Caller,
        reply: Reply,
    ) -> Result<(), (Reply, SubmitError)> {
        if let Err(e) = request.check_binding(&caller.actor, &caller.public_key) {
            return Err((reply, e.into()));
        }
        // The signature and every object are checked here, on the caller's thread, once: the
        // node thread reuses the result.
        let prepared = Arc::new(Prepared::new(request));
        if let Err(e) = prepared.signature.clone() {
            return Err((reply, e.into()));
        }
        // Before the admission check, which may fetch from git: an invalid object is refused
        // whatever its source.
        if let Err(e) = prepared.check_objects() {
            return Err((reply, e.into()));
        }
        if let Err(e) = self
            .admission()
            .admit_current(&self.state, &prepared.signed)
        {
            return Err((reply, SubmitError::Refused(e)));
        }
        if let Some(replica) = &self.replica {
            return self.queue_replicated(replica, prepared, reply);
        }
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = jobs.as_ref() else {
            return Err((reply, SubmitError::Closed));
        };
        tx.send(Job { prepared, reply })
            .map_err(|e| (e.0.reply, SubmitError::Closed))
    }

    /// What `request` would do now, without committing it (`apply --dry-run`).
    pub fn dry_run(&self, request: &Request) -> Result<Plan, RequestError> {
        plan_request(&*self.state(), request)
    }

    /// The current state (committed entries only). Hold the guard briefly: the writer waits for
    /// it to fold the next entry.
    pub fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state if no entry is being folded into it right now; `None` instead of
    /// waiting.
    pub fn try_state(&self) -> Option<RwLockReadGuard<'_, State>> {
        match self.state.try_read() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// One object, cloned.
    pub fn get(&self, key: &ObjectKey) -> Option<ObjectState> {
        self.state().get(key).cloned()
    }

    /// Height of the last committed entry.
    pub fn height(&self) -> u64 {
        self.state().height
    }

    /// The store, for audit queries and catch-up. It holds every entry of the state as of the
    /// call: a replica's ledger writer appends decided entries shortly after the state has
    /// them, and this waits for it (at most [`STORE_WAIT`]).
    pub fn store(&self) -> &Store {
        if let Some(r) = &self.replica {
            r.wait_appended(self.height(), STORE_WAIT);
        }
        &self.store
    }

    /// The store as it is, without waiting for a replica's ledger writer: it may lack the
    /// entries decided in the last few tens of milliseconds. For lookups that can retry with
    /// [`Ledger::store`] when they miss.
    pub fn store_now(&self) -> &Store {
        &self.store
    }

    /// How the state was rebuilt when the ledger opened.
    pub fn load_report(&self) -> &LoadReport {
        &self.load_report
    }

    /// Every entry committed from now on, in order (for watches and controllers).
    pub fn subscribe(&self) -> mpsc::Receiver<Arc<Entry>> {
        let (tx, rx) = mpsc::channel();
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Stops the writer after the queued requests (or the consensus node) and waits for it.
    pub fn shutdown(&self) {
        if let Some(r) = &self.replica {
            r.stop();
        }
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
