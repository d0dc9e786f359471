//! The node thread: owns the consensus [`Node`], feeds it peer messages, timer expiries and
//! client requests (several at a time, so one WAL flush covers them), and answers each client
//! once its request is in a decided entry — or each read barrier once its height is applied.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::app::{
    AppParts, DecidedLog, LedgerApp, LedgerStore, LedgerWal, PREPARED_CACHE, SharedHandoff,
    SharedPrepared,
};
use super::batch::{BarrierId, barrier_item};
use super::syncer::Syncer;
use super::{Network, ReplicationStatus};
use crate::consensus::Wal;
use crate::consensus::codec::decode_decided;
use crate::consensus::{
    App, Consensus, DecidedStore, Host, Node, NodeError, Signer, TimerId, ValidatorKey,
};
use crate::ledger::{Applied, Job, Reply, SubmitError};
use crate::plan::RequestError;
use crate::prepared::PreparedCache;
use crate::request::SignedRequest;
use crate::store::Store;

/// Most commands taken from the queue per turn.
const MAX_TURN: usize = 4096;
/// How often waiting requests are checked for their timeout.
const HOUSEKEEPING: Duration = Duration::from_millis(500);

pub(crate) enum Cmd {
    Submit(Box<Job>),
    Peer(ValidatorKey, Vec<u8>),
    Barrier(BarrierId, SyncSender<Result<u64, SubmitError>>),
    Status(SyncSender<ReplicationStatus>),
    Stop,
}

/// The running replica, as the [`crate::Ledger`] holds it.
pub struct Handle {
    tx: Mutex<Option<Sender<Cmd>>>,
    /// The ledger writer (readers of the store wait for it, retries look in its queue).
    syncer: Arc<Syncer>,
    thread: Mutex<Option<JoinHandle<()>>>,
    name: String,
    counter: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("name", &self.name).finish()
    }
}

impl Handle {
    fn send(&self, cmd: Cmd) -> Result<(), SubmitError> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref()
            .ok_or(SubmitError::Closed)?
            .send(cmd)
            .map_err(|_| SubmitError::Closed)
    }

    /// Queues a submission; when the node thread is gone, the reply comes back with the error.
    pub(crate) fn submit(&self, job: Job) -> Result<(), (Reply, SubmitError)> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err((job.reply, SubmitError::Closed));
        };
        match tx.send(Cmd::Submit(Box::new(job))) {
            Ok(()) => Ok(()),
            Err(e) => match e.0 {
                Cmd::Submit(job) => Err((job.reply, SubmitError::Closed)),
                _ => Ok(()),
            },
        }
    }

    /// Bytes a peer sent (dropped silently once stopped).
    pub fn deliver(&self, from: ValidatorKey, bytes: Vec<u8>) {
        let _ = self.send(Cmd::Peer(from, bytes));
    }

    /// Where consensus is (`None` if the node thread does not answer within a second).
    pub fn status(&self) -> Option<ReplicationStatus> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Status(tx)).ok()?;
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }

    /// Orders a read barrier and waits until this replica applied the height that decided it:
    /// every write acknowledged (by any replica) before the call is then in the local state.
    pub fn barrier(&self, timeout: Duration) -> Result<u64, SubmitError> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut h = blake3::Hasher::new_derive_key("nexus read barrier v1");
        h.update(self.name.as_bytes());
        h.update(&n.to_le_bytes());
        h.update(&nanos.to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Barrier(id, tx))?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(SubmitError::Ordering(format!(
                "no height was decided within {timeout:?} (is a quorum of replicas up?)"
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(SubmitError::Closed),
        }
    }

    /// Waits (at most `timeout`) until the store holds every height through `height`: the
    /// ledger writer appends decided entries shortly after the state has them.
    pub fn wait_appended(&self, height: u64, timeout: Duration) {
        self.syncer.wait_for(height, timeout);
    }

    /// The retry record of a request, from the ledger writer's queue or the store (without
    /// waiting for the writer).
    pub(crate) fn request_record(
        &self,
        store: &Store,
        actor: &str,
        id: &str,
    ) -> Result<Option<crate::store::RequestRecord>, crate::store::StoreError> {
        self.syncer.request_record(store, actor, id)
    }

    /// Stops the node thread (pending callers are told the ledger is closed) and waits.
    pub fn stop(&self) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(Cmd::Stop);
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Everything the node thread starts from.
pub(crate) struct Parts {
    pub name: String,
    pub node_config: crate::consensus::NodeConfig,
    pub signer_seed: [u8; 32],
    pub store: Arc<Store>,
    pub app: AppParts,
    pub network: Arc<dyn Network>,
    pub submit_timeout: Duration,
    /// Least time between two syncs of the ledger.
    pub sync_gap: Duration,
}

impl Handle {
    pub(crate) fn spawn(parts: Parts) -> std::io::Result<Handle> {
        let (tx, rx) = mpsc::channel();
        let name = parts.name.clone();
        let head = parts
            .store
            .head()
            .map_err(|e| std::io::Error::other(format!("cannot read the ledger: {e}")))?
            .map_or(0, |h| h.height);
        let syncer = Arc::new(Syncer::spawn(parts.store.clone(), head, parts.sync_gap)?);
        let s = syncer.clone();
        let thread = std::thread::Builder::new()
            .name(format!("nexus-consensus-{name}"))
            .spawn(move || run(parts, rx, s))?;
        Ok(Handle {
            tx: Mutex::new(Some(tx)),
            syncer,
            thread: Mutex::new(Some(thread)),
            name,
            counter: Default::default(),
        })
    }
}

/// The host the node talks through: peers via the network, timers into the runner's heap.
struct RunnerHost {
    net: Arc<dyn Network>,
    new_timers: Vec<(TimerId, u64, Duration)>,
    start: Instant,
}

impl Host for RunnerHost {
    fn send(&mut self, to: ValidatorKey, msg: Vec<u8>) {
        self.net.send(to, msg);
    }
    fn broadcast(&mut self, msg: Vec<u8>) {
        self.net.broadcast(msg);
    }
    fn set_timer(&mut self, timer: TimerId, generation: u64, after: Duration) {
        self.new_timers.push((timer, generation, after));
    }
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

type IdKey = (String, String);

fn id_key(r: &SignedRequest) -> IdKey {
    (r.request.actor.clone(), r.request.id.clone())
}

/// A request this replica submitted and the callers waiting for it.
struct Waiting {
    digest: [u8; 32],
    /// The callers (their requests' prepared forms are not kept here: execution takes them
    /// apart once no one else holds them).
    jobs: Vec<Reply>,
    since: Instant,
}

fn answer(jobs: Vec<Reply>, result: Result<Applied, SubmitError>) {
    let mut first = true;
    for job in jobs {
        let r = match &result {
            Ok(a) if !first => Ok(Applied {
                duplicate: true,
                ..a.clone()
            }),
            other => other.clone(),
        };
        first = false;
        job.send(r);
    }
}

type LedgerNode = Node<RunnerHost, LedgerWal, LedgerStore, LedgerApp>;

struct Runner {
    node: LedgerNode,
    handoff: SharedHandoff,
    store: Arc<Store>,
    syncer: Arc<Syncer>,
    waiters: HashMap<IdKey, Waiting>,
    barriers: HashMap<BarrierId, (SyncSender<Result<u64, SubmitError>>, Instant)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_ids: HashMap<u64, (TimerId, u64)>,
    timer_seq: u64,
    submit_timeout: Duration,
    halted: Option<String>,
}

fn run(parts: Parts, rx: Receiver<Cmd>, syncer: Arc<Syncer>) {
    let handoff: SharedHandoff = Default::default();
    let Parts {
        name,
        node_config,
        signer_seed,
        store,
        app,
        network,
        submit_timeout,
        sync_gap: _,
    } = parts;
    let prepared: SharedPrepared = Rc::new(RefCell::new(PreparedCache::new(PREPARED_CACHE)));
    let signer = Signer::from_seed(node_config.chain, signer_seed);
    let host = RunnerHost {
        net: network,
        new_timers: Vec::new(),
        start: Instant::now(),
    };
    // The ledger's head when the writer started (it holds nothing yet).
    let head = syncer.last_height();
    let app = LedgerApp::new(app, handoff.clone(), prepared.clone(), syncer.clone());
    let decided_log = DecidedLog::default();
    let mut decided = LedgerStore {
        store: store.clone(),
        prepared,
        syncer: syncer.clone(),
        decided_log: decided_log.clone(),
        state: app.state.clone(),
        handoff: handoff.clone(),
    };
    let wal = match LedgerWal::open(&store, syncer.clone(), decided_log) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(replica = %name, "cannot open the consensus WAL: {e}");
            return refuse_all(rx, &format!("cannot open the consensus WAL: {e}"));
        }
    };
    let mut app = app;
    let head = match replay_decided(&wal, head, &mut decided, &mut app) {
        Ok(0) => head,
        Ok(n) => {
            tracing::info!(replica = %name, heights = n, "decided heights replayed from the WAL");
            head + n as u64
        }
        Err(e) => {
            tracing::error!(replica = %name, "cannot replay the WAL's decided heights: {e}");
            return refuse_all(rx, &format!("cannot replay the WAL's decided heights: {e}"));
        }
    };
    if let Some(why) = wal_ahead(wal.height(), head, &store) {
        tracing::error!(replica = %name, "{why}");
        return refuse_all(rx, &why);
    }
    let node = Node::new(node_config, signer, host, wal, decided, app);
    let mut r = Runner {
        node,
        handoff,
        store,
        syncer,
        waiters: HashMap::new(),
        barriers: HashMap::new(),
        timers: BinaryHeap::new(),
        timer_ids: HashMap::new(),
        timer_seq: 0,
        submit_timeout,
        halted: None,
    };
    let started = r.node.start();
    r.check(started);
    r.after_call();
    tracing::info!(replica = %name, status = ?r.node.status(), "consensus started");
    let mut last_housekeeping = Instant::now();
    loop {
        let wait = r
            .timers
            .peek()
            .map_or(HOUSEKEEPING, |Reverse((at, _))| {
                at.saturating_duration_since(Instant::now())
            })
            .min(HOUSEKEEPING);
        let mut cmds = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(c) => cmds.push(c),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return r.close(),
        }
        while cmds.len() < MAX_TURN {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return r.close(),
            }
        }
        if r.turn(cmds) {
            return r.close();
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            r.expire();
        }
    }
}

/// Decisions this replica logged in its WAL past `head` (the ledger's durable head when opened:
/// a crash lost the appends after the last sync), executed and appended again in order, as
/// they were the first time. The WAL is this replica's own and checksummed, trusted like the
/// consensus log it replays. A height missing in between ends the replay (peers have the rest).
/// Returns how many heights were replayed.
fn replay_decided(
    wal: &LedgerWal,
    head: u64,
    store: &mut LedgerStore,
    app: &mut LedgerApp,
) -> Result<usize, String> {
    let mut at = head;
    let mut n = 0;
    for (h, record) in wal.undurable(head) {
        if h != at + 1 {
            break;
        }
        let d = decode_decided(&record).map_err(|e| format!("height {h}: {e}"))?;
        if d.height != h {
            return Err(format!(
                "the record of height {h} holds height {}",
                d.height
            ));
        }
        store.commit(&d).map_err(|e| format!("height {h}: {e}"))?;
        app.on_decided(&d);
        at = h;
        n += 1;
    }
    Ok(n)
}

/// Why this replica must not take part in consensus: its WAL is at a height past the one after
/// the ledger's last entry, which only happens when the ledger file was replaced or lost (every
/// height the WAL moved past has its decision in the WAL). It may have voted at the heights in
/// between; starting there could sign votes that contradict them.
fn wal_ahead(wal: Option<u64>, head: u64, store: &Store) -> Option<String> {
    let w = wal?;
    (w > head + 1).then(|| {
        format!(
            "the consensus WAL {} is at height {w} but the ledger {} ends at height {head}: the \
             ledger file was replaced or lost, and this replica may have voted at the heights \
             in between. Restore the ledger file; or, once `nexus cluster status` shows the \
             other replicas past height {w}, remove both files (the replica then starts empty \
             and catches up from its peers, so it never votes at a height it voted at); or \
             replace the replica under a new key (docs/membership.md)",
            store.wal_path().display(),
            store.path().display()
        )
    })
}

/// The WAL could not even be opened: answer every caller with the reason until stopped.
fn refuse_all(rx: Receiver<Cmd>, why: &str) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Submit(job) => {
                job.reply.send(Err(SubmitError::Ordering(why.into())));
            }
            Cmd::Barrier(_, tx) => {
                let _ = tx.send(Err(SubmitError::Ordering(why.into())));
            }
            Cmd::Stop => return,
            Cmd::Peer(..) | Cmd::Status(_) => {}
        }
    }
}

impl Runner {
    /// One turn: the commands, then due timers. Returns true to stop.
    fn turn(&mut self, cmds: Vec<Cmd>) -> bool {
        let mut items = Vec::new();
        let mut msgs = Vec::new();
        let mut statuses = Vec::new();
        let mut stop = false;
        for c in cmds {
            match c {
                Cmd::Submit(job) => self.register(*job, &mut items),
                Cmd::Peer(from, bytes) => msgs.push((from, bytes)),
                Cmd::Barrier(id, tx) => match &self.halted {
                    Some(h) => {
                        let _ = tx.send(Err(SubmitError::Ordering(h.clone())));
                    }
                    None => {
                        self.barriers.insert(id, (tx, Instant::now()));
                        items.push(barrier_item(&id));
                    }
                },
                Cmd::Status(tx) => statuses.push(tx),
                Cmd::Stop => stop = true,
            }
        }
        if !msgs.is_empty() && self.halted.is_none() {
            let r = self.node.on_messages(msgs);
            self.check(r);
            self.after_call();
        }
        if !items.is_empty() && self.halted.is_none() {
            let r = self.node.submit(items).map(|_| ());
            self.check(r);
            self.after_call();
        }
        self.fire_timers();
        if !statuses.is_empty() {
            let s = self.status();
            for tx in statuses {
                let _ = tx.send(s.clone());
            }
        }
        stop
    }

    fn status(&self) -> ReplicationStatus {
        let s = self.node.status();
        ReplicationStatus {
            key: s.key,
            tip: s.tip.unwrap_or(0),
            height: s.height,
            round: s.round,
            idle: s.idle,
            best_peer_tip: s.best_peer_tip,
            pending: s.pending_items,
            validators: s.validators,
            peers: s.peers,
            halted: s.halted.or_else(|| self.halted.clone()),
            decided_by_sync: s.stats.decided_by_sync,
            rejected_proposals: s.stats.rejected_proposals,
            now_ms: self.node.host().now_ms(),
        }
    }

    fn fire_timers(&mut self) {
        loop {
            let now = Instant::now();
            let due = matches!(self.timers.peek(), Some(Reverse((at, _))) if *at <= now);
            if !due {
                return;
            }
            let Some(Reverse((_, seq))) = self.timers.pop() else {
                return;
            };
            let Some((id, generation)) = self.timer_ids.remove(&seq) else {
                continue;
            };
            if self.halted.is_none() {
                let r = self.node.on_timer(id, generation);
                self.check(r);
                self.after_call();
            }
        }
    }

    /// Records a node failure: consensus is halted, every waiting caller is told.
    fn check(&mut self, r: Result<(), NodeError>) {
        let Err(e) = r else { return };
        if matches!(e, NodeError::NotStarted) {
            return;
        }
        let why = format!("consensus halted: {e}");
        if self.halted.is_none() {
            tracing::error!("{why}");
            self.halted = Some(why.clone());
        }
        for (_, w) in self.waiters.drain() {
            answer(w.jobs, Err(SubmitError::Ordering(why.clone())));
        }
        for (_, (tx, _)) in self.barriers.drain() {
            let _ = tx.send(Err(SubmitError::Ordering(why.clone())));
        }
    }

    /// Moves new timers into the heap and answers what the node decided.
    fn after_call(&mut self) {
        let now = Instant::now();
        for (id, generation, after) in std::mem::take(&mut self.node.host_mut().new_timers) {
            self.timer_seq += 1;
            self.timers.push(Reverse((now + after, self.timer_seq)));
            self.timer_ids.insert(self.timer_seq, (id, generation));
        }
        let decided = std::mem::take(&mut self.handoff.borrow_mut().decided);
        for d in decided {
            for (i, req) in d.entry.requests.iter().enumerate() {
                let Some(w) = self.waiters.remove(&id_key(req)) else {
                    continue;
                };
                let result = if w.digest != req.request.digest() {
                    Err(SubmitError::Request(RequestError::RequestIdReused {
                        id: req.request.id.clone(),
                        actor: req.request.actor.clone(),
                    }))
                } else {
                    match d.results.get(i) {
                        Some(Ok(outcomes)) => Ok(Applied {
                            height: d.entry.height,
                            request_id: req.request.id.clone(),
                            outcomes: outcomes.clone(),
                            duplicate: false,
                        }),
                        Some(Err(e)) => Err(SubmitError::Request(e.clone())),
                        None => Err(SubmitError::Storage(
                            "no result for a decided request".into(),
                        )),
                    }
                };
                answer(w.jobs, result);
            }
            for b in &d.barriers {
                if let Some((tx, _)) = self.barriers.remove(b) {
                    let _ = tx.send(Ok(d.entry.height));
                }
            }
        }
    }

    /// Registers a caller; queues its request for the pool unless it is already known.
    fn register(&mut self, job: Job, items: &mut Vec<Vec<u8>>) {
        if let Some(h) = &self.halted {
            job.reply.send(Err(SubmitError::Ordering(h.clone())));
            return;
        }
        let key = id_key(&job.prepared.signed);
        let digest = job.prepared.digest;
        match self.syncer.request_record(&self.store, &key.0, &key.1) {
            Ok(None) => {}
            Ok(Some(rec)) if rec.digest == digest => {
                let r = match rec.error {
                    Some(e) => Err(SubmitError::Request(e)),
                    None => Ok(Applied {
                        height: rec.height,
                        request_id: key.1,
                        outcomes: rec.outcomes,
                        duplicate: true,
                    }),
                };
                job.reply.send(r);
                return;
            }
            Ok(Some(_)) => {
                job.reply
                    .send(Err(SubmitError::Request(RequestError::RequestIdReused {
                        id: key.1,
                        actor: key.0,
                    })));
                return;
            }
            Err(e) => {
                job.reply.send(Err(SubmitError::Storage(e.to_string())));
                return;
            }
        }
        match self.waiters.get_mut(&key) {
            Some(w) if w.digest == digest => w.jobs.push(job.reply),
            Some(_) => {
                job.reply
                    .send(Err(SubmitError::Request(RequestError::RequestIdReused {
                        id: key.1,
                        actor: key.0,
                    })));
            }
            None => {
                let Job { prepared, reply } = job;
                items.push(prepared.bytes.clone());
                self.node.app().prepared.borrow_mut().insert(prepared);
                self.waiters.insert(
                    key,
                    Waiting {
                        digest,
                        jobs: vec![reply],
                        since: Instant::now(),
                    },
                );
            }
        }
    }

    /// Answers callers that waited too long (their request may still be decided later).
    fn expire(&mut self) {
        let limit = self.submit_timeout;
        let old: Vec<IdKey> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.since.elapsed() > limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            if let Some(w) = self.waiters.remove(&k) {
                answer(
                    w.jobs,
                    Err(SubmitError::Ordering(format!(
                        "request {} was not decided within {limit:?}; retry it with the same \
                         request id (it is applied at most once)",
                        k.1
                    ))),
                );
            }
        }
        self.barriers.retain(|_, (tx, since)| {
            if since.elapsed() > limit {
                let _ = tx.send(Err(SubmitError::Ordering(
                    "the read barrier was not decided in time".into(),
                )));
                false
            } else {
                true
            }
        });
    }

    fn close(mut self) {
        for (_, w) in self.waiters.drain() {
            answer(w.jobs, Err(SubmitError::Closed));
        }
        for (_, (tx, _)) in self.barriers.drain() {
            let _ = tx.send(Err(SubmitError::Closed));
        }
        // Make what this replica decided without an fsync durable before it goes away.
        if let Err(e) = self.syncer.flush() {
            tracing::warn!("cannot sync the ledger on shutdown: {e}");
        }
    }
}
