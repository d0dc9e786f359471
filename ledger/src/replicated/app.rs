//! The consensus node's three storage/application seams implemented over the ledger itself:
//! [`LedgerWal`] (the WAL, in the ledger's redb file), [`LedgerStore`] (decided heights ARE the
//! ledger's entries: committing one executes its batch and appends the entry with its
//! certificate) and [`LedgerApp`] (validator sets from the state, batch validity, proposals).
//! All three live on the node thread and hand what happened to the runner through [`Handoff`].

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

use super::batch::{self, BarrierId, CertRecord, Header};
use super::syncer::Syncer;
use crate::admission::Admission;
use crate::consensus::{
    App, Batch, Built, Decided, DecidedStore, FileWal, StoreError as CStoreError, Wal, WalError,
};
use crate::consensus::{ValidatorKey, ValidatorSet};
use crate::entry::Entry;
use crate::event::Validator;
use crate::execute::execute_all;
use crate::ledger::{Clock, Subscribers};
use crate::plan::{ObjectOutcome, RequestError};
use crate::prepared::{Prepared, PreparedCache};
use crate::request::SignedRequest;
use crate::state::State;
use crate::store::Store;

/// A proposer's clock may run at most this far ahead of a validator's.
pub const MAX_CLOCK_AHEAD_MS: u64 = 30_000;

/// A decided height as the runner sees it: the entry, each request's result, the barriers.
#[derive(Debug, Clone)]
pub(crate) struct DecidedHeight {
    pub entry: Arc<Entry>,
    pub results: Vec<Result<Vec<ObjectOutcome>, RequestError>>,
    pub barriers: Vec<BarrierId>,
}

/// What the store side executed and the app side still has to fold, and what the runner still
/// has to answer.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    executed: Option<DecidedHeight>,
    pub decided: Vec<DecidedHeight>,
}

pub(crate) type SharedHandoff = Rc<RefCell<Handoff>>;

/// The node thread's [`PreparedCache`], shared by the application and the decided store.
pub(crate) type SharedPrepared = Rc<RefCell<PreparedCache>>;

/// Requests kept prepared: two generations of this many (enough for every request between its
/// arrival and its decision under load).
pub(crate) const PREPARED_CACHE: usize = 4096;

fn read(state: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    state.read().unwrap_or_else(|e| e.into_inner())
}

/// A ledger validator set as the consensus engine's (`None` when a key is invalid or the set
/// is empty).
pub fn consensus_set(validators: &[Validator]) -> Option<ValidatorSet> {
    ValidatorSet::new(
        validators
            .iter()
            .map(|v| (ValidatorKey(v.public_key), v.power)),
    )
    .ok()
}

// WAL ---------------------------------------------------------------------------------------

/// Decided heights appended to the ledger without an fsync, with their encoded decided records,
/// waiting to be logged by the WAL's next flush (filled by [`LedgerStore`], drained by
/// [`LedgerWal`]).
pub(crate) type DecidedLog = Rc<RefCell<Vec<(u64, Vec<u8>)>>>;

/// The consensus WAL of a replica: a file of its own beside the ledger ([`FileWal`]), whose
/// flushes are one small write and one `fdatasync`. Decided entries are appended to the ledger
/// without an fsync; each flush first logs the decisions appended since the last one (batch and
/// certificate), so the flush that moves the WAL to the next height (ahead of anything this
/// replica sends for it) drops a height's log only with its decision logged. The [`Syncer`]
/// thread makes the ledger durable every so often; decided records up to there are not carried
/// into a fresh WAL file, and a restart replays those the ledger lost
/// ([`LedgerWal::undurable`]).
pub(crate) struct LedgerWal {
    syncer: Arc<Syncer>,
    file: FileWal,
    decided: DecidedLog,
}

impl LedgerWal {
    /// Opens the WAL file; a WAL that older versions kept inside the ledger's redb file is moved
    /// into it first (written and synced there, then removed from the ledger).
    pub fn open(store: &Store, syncer: Arc<Syncer>, decided: DecidedLog) -> Result<Self, WalError> {
        let mut file = FileWal::open(store.wal_path())?;
        let old = store.wal_contents().map_err(|e| WalError(e.to_string()))?;
        if let Some(h) = old.height {
            // The newer of the two wins (a file left by a later version, then an older
            // version run again on the same store, then this one: the redb WAL is newer).
            if file.height().is_none_or(|f| f < h) {
                file.reset(h)?;
                for e in old.entries {
                    file.append(e);
                }
                file.flush()?;
            }
            store.wal_clear().map_err(|e| WalError(e.to_string()))?;
        }
        Ok(LedgerWal {
            syncer,
            file,
            decided,
        })
    }

    /// Decided records in the WAL for heights past `height` (what the ledger holds durably),
    /// oldest first, each height once.
    pub fn undurable(&self, height: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (h, record) in self.file.decided() {
            if h > height && out.last().is_none_or(|(last, _)| h > *last) {
                out.push((h, record.to_vec()));
            }
        }
        out
    }
}

impl Wal for LedgerWal {
    fn height(&self) -> Option<u64> {
        self.file.height()
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.file.append(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        self.syncer.check().map_err(WalError)?;
        for (h, record) in self.decided.borrow_mut().drain(..) {
            self.file.decide(h, record);
        }
        if self.file.reset_pending() {
            self.file.forget_decided_through(self.syncer.durable());
        }
        self.file.flush()
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.file.reset(height)
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        self.file.entries()
    }
}

// Decided store -----------------------------------------------------------------------------

/// Decided heights are ledger entries; the certificate record beside each rebuilds the batch.
pub(crate) struct LedgerStore {
    pub store: Arc<Store>,
    /// Requests this replica prepared (shared with [`LedgerApp`]).
    pub prepared: SharedPrepared,
    /// Appends decided entries and makes them durable in the background.
    pub syncer: Arc<Syncer>,
    /// Decisions appended without an fsync, for the WAL to log.
    pub decided_log: DecidedLog,
    pub state: Arc<RwLock<State>>,
    pub handoff: SharedHandoff,
}

fn serr(e: impl std::fmt::Display) -> CStoreError {
    CStoreError(e.to_string())
}

impl DecidedStore for LedgerStore {
    fn last_height(&self) -> Result<Option<u64>, CStoreError> {
        // Everything handed to the ledger writer counts: the store holds it, or will.
        let h = self.syncer.last_height();
        Ok((h > 0).then_some(h))
    }

    fn get(&self, height: u64) -> Result<Option<Decided>, CStoreError> {
        let (requests, rec) = match self.syncer.queued_entry(height) {
            Some(queued) => queued,
            None => {
                // Not queued (any more): the store holds it if it was decided.
                let view = self.store.read().map_err(serr)?;
                let Some((_, requests, _)) = view.raw_entry(height).map_err(serr)? else {
                    return Ok(None);
                };
                (requests, view.certificate(height).map_err(serr)?)
            }
        };
        // Entries written before replication have no certificate: they cannot be served.
        let Some(rec) = rec else {
            return Ok(None);
        };
        let rec = CertRecord::from_bytes(&rec).map_err(serr)?;
        let items = batch::batch_items(&rec.header, &requests, &rec.barriers);
        Ok(Some(Decided {
            height,
            batch: Batch::new(items),
            cert: rec.cert,
        }))
    }

    /// Executes the batch against the state and hands its entry with the certificate record
    /// (each request's record stored byte for byte as decided, so the batch id is rebuilt from
    /// the entry) to the ledger writer. With more than one validator the append is neither
    /// waited for nor fsynced: the decision is durable on the 2f+1 replicas that logged their
    /// precommits, goes into this replica's WAL with its next flush (before the WAL leaves the
    /// height), and the writer makes the ledger durable later. A single validator waits until
    /// the entry is durable.
    fn commit(&mut self, d: &Decided) -> Result<(), CStoreError> {
        let parts = batch::split(d.batch.items())
            .ok_or_else(|| serr(format!("decided batch at {} is malformed", d.height)))?;
        let header = Header::from_bytes(parts.header).map_err(serr)?;
        let requests = {
            let mut cache = self.prepared.borrow_mut();
            let mut requests = Vec::with_capacity(parts.requests.len());
            for item in parts.requests.iter() {
                let p = cache.prepare(item).ok_or_else(|| {
                    serr(format!(
                        "decided batch at {} holds an undecodable request",
                        d.height
                    ))
                })?;
                cache.remove(&p.key);
                requests.push(p);
            }
            requests
        };
        let (commit, results, durable) = {
            let state = read(&self.state);
            if state.height + 1 != d.height {
                return Err(serr(format!(
                    "decided height {} does not follow the ledger's {}",
                    d.height, state.height
                )));
            }
            let ex = execute_all(&state, requests);
            let results = ex.results.clone();
            let rec = CertRecord {
                header: parts.header.to_vec(),
                barriers: parts.barriers.clone(),
                cert: d.cert.clone(),
            };
            let commit = ex
                .into_commit(
                    state.head_hash,
                    d.height,
                    header.timestamp_ms,
                    Some(rec.to_bytes()),
                )
                .map_err(serr)?;
            (commit, results, state.validators.len() <= 1)
        };
        // After a failed append or sync nothing more is handed over (a replica that signs
        // nothing would not notice at a WAL flush): `append` refuses, and this stops here.
        let entry = commit.entry.clone();
        self.syncer.append(commit).map_err(serr)?;
        if durable {
            self.syncer.flush().map_err(serr)?;
        } else {
            let mut log = self.decided_log.borrow_mut();
            // A replica catching up decides many heights without a flush (it signs nothing):
            // what the ledger is durable through already needs no record.
            let synced = self.syncer.durable();
            log.retain(|(h, _)| *h > synced);
            log.push((d.height, crate::consensus::codec::encode_decided(d)));
        }
        self.handoff.borrow_mut().executed = Some(DecidedHeight {
            entry,
            results,
            barriers: parts.barriers,
        });
        Ok(())
    }
}

// Application -------------------------------------------------------------------------------

/// What the application is built from (sent to the node thread, which adds the handoff).
pub(crate) struct AppParts {
    pub store: Arc<Store>,
    pub state: Arc<RwLock<State>>,
    pub subscribers: Subscribers,
    pub admission: Arc<RwLock<Arc<dyn Admission>>>,
    pub clock: Clock,
}

impl LedgerApp {
    pub fn new(
        p: AppParts,
        handoff: SharedHandoff,
        prepared: SharedPrepared,
        syncer: Arc<Syncer>,
    ) -> Self {
        LedgerApp {
            store: p.store,
            syncer,
            state: p.state,
            subscribers: p.subscribers,
            admission: p.admission,
            clock: p.clock,
            handoff,
            prepared,
            set_memo: RefCell::new(None),
        }
    }
}

/// A consensus set and the `(key, power)` members it was built from.
type SetMemo = (Vec<(ValidatorKey, u64)>, ValidatorSet);

/// Validator sets, batch validity and proposals over the ledger state.
pub(crate) struct LedgerApp {
    pub store: Arc<Store>,
    /// The ledger writer: decided heights it has not appended yet are read from it.
    pub syncer: Arc<Syncer>,
    pub state: Arc<RwLock<State>>,
    pub subscribers: Subscribers,
    pub admission: Arc<RwLock<Arc<dyn Admission>>>,
    pub clock: Clock,
    pub handoff: SharedHandoff,
    /// Request items this replica decoded and checked (signature, objects), by item hash.
    pub prepared: SharedPrepared,
    /// The consensus set last built and the members it was built from: building one
    /// decompresses every key, and the set rarely changes between heights.
    set_memo: RefCell<Option<SetMemo>>,
}

impl LedgerApp {
    /// The item prepared (decoded, signature and objects checked), from the cache when this
    /// replica saw it before; `None` when it does not decode.
    fn prepare(&self, item: &[u8]) -> Option<Arc<Prepared>> {
        self.prepared.borrow_mut().prepare(item)
    }

    /// A `replica:<name>` actor must sign with that replica's validator key (BFT rule 2 for
    /// node facts: one replica cannot attest in another's name).
    fn actor_key_ok(state: &State, req: &SignedRequest) -> bool {
        let Some(name) = req.request.actor.strip_prefix("replica:") else {
            return true;
        };
        let pending = state.pending_validators.iter().flat_map(|(_, v)| v.iter());
        state
            .validators
            .iter()
            .chain(pending)
            .any(|v| v.name == name && v.public_key == req.public_key)
    }

    fn admission(&self) -> Arc<dyn Admission> {
        self.admission
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why a request may not be part of a batch at the next height (`None`: it may).
    fn refuse(
        &mut self,
        state: &State,
        item: &[u8],
        seen: &mut HashSet<(String, String)>,
        admission: &dyn Admission,
    ) -> Option<String> {
        let Some(p) = self.prepare(item) else {
            return Some("undecodable request".into());
        };
        if p.signature.is_err() {
            return Some("bad signature".into());
        }
        let req = &p.signed;
        let key = (req.request.actor.clone(), req.request.id.clone());
        if !seen.insert(key.clone()) {
            return Some(format!("request {} of {} appears twice", key.1, key.0));
        }
        match self.syncer.request_record(&self.store, &key.0, &key.1) {
            Ok(None) => {}
            Ok(Some(_)) => return Some(format!("request {} of {} was decided", key.1, key.0)),
            Err(e) => return Some(format!("cannot read the log: {e}")),
        }
        if !Self::actor_key_ok(state, req) {
            return Some(format!("{} did not sign with its key", req.request.actor));
        }
        // Every object must pass the manifest validator: a client that bypasses the CLI, or a
        // Byzantine proposer, cannot get an invalid object into a batch.
        if let Err(e) = p.check_objects() {
            return Some(e.to_string());
        }
        admission.admit(state, req).err()
    }
}

impl App for LedgerApp {
    fn validator_set(&self, height: u64) -> Option<ValidatorSet> {
        let state = read(&self.state);
        if height != state.height + 1 {
            return None;
        }
        let members = || {
            state
                .validators
                .iter()
                .map(|v| (ValidatorKey(v.public_key), v.power))
        };
        let mut memo = self.set_memo.borrow_mut();
        if let Some((of, set)) = memo.as_ref()
            && of.iter().copied().eq(members())
        {
            return Some(set.clone());
        }
        let set = consensus_set(&state.validators)?;
        *memo = Some((members().collect(), set.clone()));
        Some(set)
    }

    fn validate(&mut self, height: u64, batch: &Batch) -> bool {
        let state_lock = self.state.clone();
        let state = read(&state_lock);
        if height != state.height + 1 {
            return false;
        }
        let Some(parts) = batch::split(batch.items()) else {
            return false;
        };
        let Ok(header) = Header::from_bytes(parts.header) else {
            return false;
        };
        let now = (self.clock)();
        if header.timestamp_ms < state.timestamp_ms
            || header.timestamp_ms > now.saturating_add(MAX_CLOCK_AHEAD_MS)
        {
            tracing::warn!(
                height,
                proposed = header.timestamp_ms,
                previous = state.timestamp_ms,
                now,
                "refusing a batch: its time is before the previous entry or too far ahead"
            );
            return false;
        }
        let admission = self.admission();
        let mut seen = HashSet::new();
        for item in parts.requests {
            if let Some(why) = self.refuse(&state, item, &mut seen, admission.as_ref()) {
                tracing::warn!(height, "refusing a batch: {why}");
                return false;
            }
        }
        let mut barriers = HashSet::new();
        parts.barriers.iter().all(|b| barriers.insert(*b))
    }

    fn admit(&mut self, item: &[u8]) -> bool {
        if batch::as_barrier(item).is_some() {
            return true;
        }
        self.prepare(item).is_some_and(|p| p.signature.is_ok())
    }

    fn build(&mut self, height: u64, pending: Vec<Vec<u8>>) -> Built {
        let state_lock = self.state.clone();
        let state = read(&state_lock);
        let header = Header {
            timestamp_ms: (self.clock)().max(state.timestamp_ms),
        };
        let admission = self.admission();
        let mut seen = HashSet::new();
        let mut requests = Vec::new();
        let mut barriers = Vec::new();
        let mut drop = Vec::new();
        for item in pending {
            if let Some(b) = batch::as_barrier(&item) {
                if barriers.len() < batch::MAX_BARRIERS && !barriers.contains(&b) {
                    barriers.push(b);
                }
                continue;
            }
            match self.refuse(&state, &item, &mut seen, admission.as_ref()) {
                None => requests.push(item),
                Some(why) => {
                    tracing::debug!(height, "not proposing a pending request: {why}");
                    drop.push(item);
                }
            }
        }
        Built {
            items: batch::batch_items(&header.to_bytes(), &requests, &barriers),
            drop,
        }
    }

    fn on_decided(&mut self, _decided: &Decided) {
        let Some(d) = self.handoff.borrow_mut().executed.take() else {
            return;
        };
        let folded = self
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply_entry(&d.entry)
            .is_ok();
        if !folded {
            // The store holds the entry but the fold refused it (and changed nothing): rebuild
            // from the store once the writer appended it (not holding the state's lock
            // meanwhile). Its change journal starts empty, so followers look at every object
            // again.
            self.syncer
                .wait_appended(std::time::Duration::from_secs(60));
            if let Ok((mut s, _)) = self.store.load_state() {
                s.journal = crate::state::ChangeJournal::starting_at(s.height);
                *self.state.write().unwrap_or_else(|e| e.into_inner()) = s;
            }
        }
        let every = self.store.config().snapshot_every;
        if every > 0 && d.entry.height.is_multiple_of(every) {
            // Objects are shared with the copy; the writer encodes it.
            self.syncer.snapshot(read(&self.state).detached());
        }
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.send(d.entry.clone()).is_ok());
        self.handoff.borrow_mut().decided.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmitAll;
    use crate::consensus::App;
    use crate::store::StoreConfig;
    use crate::testutil::*;
    use serde_json::json;

    fn app(dir: &std::path::Path) -> LedgerApp {
        let store = Arc::new(Store::open(dir.join("l.redb"), StoreConfig::default()).unwrap());
        let admission: Arc<dyn Admission> = Arc::new(AdmitAll);
        let parts = AppParts {
            store,
            state: Arc::new(RwLock::new(State::new())),
            subscribers: Arc::default(),
            admission: Arc::new(RwLock::new(admission)),
            clock: Arc::new(|| 10_000),
        };
        let syncer =
            Syncer::spawn(parts.store.clone(), 0, std::time::Duration::from_millis(1)).unwrap();
        LedgerApp::new(
            parts,
            Rc::new(RefCell::new(Handoff::default())),
            Rc::new(RefCell::new(PreparedCache::new(16))),
            Arc::new(syncer),
        )
    }

    fn batch(requests: &[Vec<u8>]) -> Batch {
        let header = Header {
            timestamp_ms: 10_000,
        };
        Batch::new(batch::batch_items(&header.to_bytes(), requests, &[]))
    }

    /// A store written by a version that kept the WAL in redb: the WAL moves to the file (a
    /// replica upgraded in the middle of a height still replays its own votes), and the redb
    /// copy is dropped so it is never read again.
    #[test]
    fn a_wal_kept_in_the_ledger_moves_to_the_wal_file() {
        let dir = tempdir();
        let store =
            Arc::new(Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap());
        store
            .wal_write(Some(5), 0, &[b"vote".to_vec(), b"proposal".to_vec()])
            .unwrap();
        let syncer = Syncer::spawn(store.clone(), 0, std::time::Duration::from_millis(1));
        let syncer = Arc::new(syncer.unwrap());
        let log = DecidedLog::default();
        let wal = LedgerWal::open(&store, syncer.clone(), log.clone()).unwrap();
        assert_eq!(wal.height(), Some(5));
        assert_eq!(
            wal.entries().unwrap(),
            vec![b"vote".to_vec(), b"proposal".to_vec()]
        );
        assert_eq!(store.wal_contents().unwrap().height, None);
        drop(wal);
        let mut wal = LedgerWal::open(&store, syncer.clone(), log.clone()).unwrap();
        assert_eq!(wal.entries().unwrap().len(), 2, "read from the file now");
        wal.reset(6).unwrap();
        wal.append(b"next".to_vec());
        wal.flush().unwrap();
        drop(wal);
        let wal = LedgerWal::open(&store, syncer, log).unwrap();
        assert_eq!(
            (wal.height(), wal.entries().unwrap()),
            (Some(6), vec![b"next".to_vec()])
        );
    }

    /// A correctly signed request whose object fails the manifest validator never enters a
    /// batch: honest proposers leave it out, and honest validators refuse a batch that holds it
    /// (a Byzantine proposer cannot commit it).
    #[test]
    fn batches_with_invalid_objects_are_refused_and_never_built() {
        let dir = tempdir();
        let mut app = app(dir.path());
        let good = signed("good", "user:alice", vec![apply(workload("a", 1))]).to_bytes();
        let mut cpu = workload("b", 1);
        cpu["spec"]["resources"] = json!({"cpu": "12X"});
        let bad = signed("bad", "user:alice", vec![apply(cpu)]).to_bytes();
        assert!(app.validate(1, &batch(std::slice::from_ref(&good))));
        assert!(!app.validate(1, &batch(&[good.clone(), bad.clone()])));
        let built = app.build(1, vec![good.clone(), bad.clone()]);
        assert_eq!(built.drop, vec![bad]);
        assert_eq!(built.items, batch(&[good]).items().to_vec());
    }

    /// The set is built again when the members change, and reused while they do not.
    #[test]
    fn the_validator_set_follows_the_state_and_is_reused_in_between() {
        let dir = tempdir();
        let app = app(dir.path());
        let member = |seed: &[u8], power: u64| Validator {
            name: format!("r{}", seed[0]),
            public_key: ed25519_dalek::SigningKey::from_bytes(blake3::hash(seed).as_bytes())
                .verifying_key()
                .to_bytes(),
            address: String::new(),
            power,
        };
        let (a, b) = (member(b"a", 1), member(b"b", 1));
        let want = |vs: &[&Validator]| {
            ValidatorSet::new(vs.iter().map(|v| (ValidatorKey(v.public_key), v.power))).unwrap()
        };
        app.state.write().unwrap().validators = vec![a.clone()];
        let first = app.validator_set(1).unwrap();
        assert_eq!(first, want(&[&a]));
        assert_eq!(app.validator_set(1).unwrap(), want(&[&a]));
        assert_eq!(app.validator_set(2), None, "only the next height has a set");
        app.state.write().unwrap().validators = vec![a.clone(), b.clone()];
        assert_eq!(app.validator_set(1).unwrap(), want(&[&a, &b]));
        let heavier = Validator {
            power: 3,
            ..b.clone()
        };
        app.state.write().unwrap().validators = vec![a.clone(), heavier.clone()];
        let set = app.validator_set(1).unwrap();
        assert_eq!(set, want(&[&a, &heavier]), "a power change is a change");
        app.state.write().unwrap().validators = vec![a.clone()];
        assert_eq!(app.validator_set(1).unwrap(), first);
    }
}
