//! The simulated environment of one replica: a seeded PRNG, a host that queues sends and
//! timers for the event loop, a WAL wrapper that records what became durable (so every send can
//! be checked against it), and the application (validator sets, batch validity).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use arc_malachitebft_core_consensus::Input;

use crate::consensus::codec::{Decided, WireMsg, decode_wire, encode_wal_entry};
use crate::consensus::store::{DecidedStore, MemStore, StoreError};
use crate::consensus::timers::TimerId;
use crate::consensus::types::{Batch, ValidatorKey, ValidatorSet};
use crate::consensus::wal::{MemWal, Wal, WalError};
use crate::consensus::{App, Host};

/// SplitMix64: tiny, seedable, good enough for fault injection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        if xs.is_empty() {
            None
        } else {
            Some(xs[(self.next_u64() % xs.len() as u64) as usize])
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Something a replica asked its host to do.
#[derive(Debug, Clone)]
pub enum Out {
    Send(ValidatorKey, Vec<u8>),
    Broadcast(Vec<u8>),
    Timer(TimerId, u64, Duration),
}

/// A durable-state-changing step inside one call, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A send or a timer (one outbox entry).
    Out,
    /// A WAL flush or reset (a snapshot follows in `Trace::wal_states`).
    Wal,
    /// A decided-store commit at this height.
    Commit(u64),
}

/// The WAL as it was after some op: `(ops done, log, durable entry hashes)`.
pub type WalState = (usize, MemWal, HashSet<[u8; 32]>);

/// Per-replica record shared by its host, WAL and store: what is durable, what went wrong,
/// and the steps of the current call (so a crash can be placed between any two of them).
#[derive(Debug, Default)]
pub struct Trace {
    durable: HashSet<[u8; 32]>,
    pub violations: Vec<String>,
    pub sent_own: u64,
    pub ops: Vec<Op>,
    pub wal_states: Vec<WalState>,
}

impl Trace {
    /// Start recording a call; `wal` is the log as the call begins.
    pub fn begin_call(&mut self, wal: &MemWal) {
        self.ops.clear();
        self.wal_states = vec![(0, wal.clone(), self.durable.clone())];
    }

    /// The WAL as it was once the first `k` ops had happened.
    pub fn wal_at(&mut self, k: usize) -> Option<MemWal> {
        let (_, wal, durable) = self
            .wal_states
            .iter()
            .rev()
            .find(|(done, _, _)| *done <= k)?
            .clone();
        self.durable = durable;
        Some(wal)
    }

    fn snapshot_wal(&mut self, wal: &MemWal) {
        self.ops.push(Op::Wal);
        let state = (self.ops.len(), wal.clone(), self.durable.clone());
        self.wal_states.push(state);
    }
}

/// The simulated host: collects sends and timers; checks each of its own signed messages was
/// durable in the WAL at the moment it was sent.
#[derive(Debug)]
pub struct SimHost {
    pub me: ValidatorKey,
    pub now: u64,
    pub outbox: Vec<Out>,
    pub trace: Rc<RefCell<Trace>>,
}

impl SimHost {
    fn check_durable(&mut self, bytes: &[u8]) {
        let entry = match decode_wire(bytes) {
            Ok(WireMsg::Vote(v)) if v.validator == self.me => Input::Vote(v),
            Ok(WireMsg::Proposal(p)) if p.proposer == self.me => Input::Proposal(p),
            _ => return,
        };
        let Ok(enc) = encode_wal_entry(&entry) else {
            return;
        };
        let mut t = self.trace.borrow_mut();
        t.sent_own += 1;
        if !t.durable.contains(blake3::hash(&enc).as_bytes()) {
            let what = format!("{entry:?}");
            t.violations.push(format!(
                "sent before it was durable in the WAL: {what:.200}"
            ));
        }
    }
}

impl Host for SimHost {
    fn send(&mut self, to: ValidatorKey, msg: Vec<u8>) {
        self.check_durable(&msg);
        self.trace.borrow_mut().ops.push(Op::Out);
        self.outbox.push(Out::Send(to, msg));
    }

    fn broadcast(&mut self, msg: Vec<u8>) {
        self.check_durable(&msg);
        self.trace.borrow_mut().ops.push(Op::Out);
        self.outbox.push(Out::Broadcast(msg));
    }

    fn set_timer(&mut self, timer: TimerId, generation: u64, after: Duration) {
        self.trace.borrow_mut().ops.push(Op::Out);
        self.outbox.push(Out::Timer(timer, generation, after));
    }

    fn now_ms(&self) -> u64 {
        self.now
    }
}

/// A [`MemWal`] that reports what each flush made durable.
#[derive(Debug)]
pub struct SimWal {
    pub inner: MemWal,
    pending: Vec<[u8; 32]>,
    pub trace: Rc<RefCell<Trace>>,
}

impl SimWal {
    pub fn new(trace: Rc<RefCell<Trace>>) -> Self {
        SimWal {
            inner: MemWal::new(),
            pending: Vec::new(),
            trace,
        }
    }

    /// A crash: unflushed appends are lost.
    pub fn crash(&mut self) {
        self.inner.crash();
        self.pending.clear();
    }
}

impl Wal for SimWal {
    fn height(&self) -> Option<u64> {
        self.inner.height()
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(*blake3::hash(&entry).as_bytes());
        self.inner.append(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        self.inner.flush()?;
        let mut t = self.trace.borrow_mut();
        t.durable.extend(self.pending.drain(..));
        t.snapshot_wal(&self.inner);
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.inner.reset(height)?;
        self.pending.clear();
        let mut t = self.trace.borrow_mut();
        t.durable.clear();
        t.snapshot_wal(&self.inner);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        self.inner.entries()
    }
}

/// A [`MemStore`] that notes when, within a call, the first commit happened (so a simulated
/// crash placed before that point can undo it).
#[derive(Debug)]
pub struct SimStore {
    pub inner: MemStore,
    pub trace: Rc<RefCell<Trace>>,
}

impl DecidedStore for SimStore {
    fn last_height(&self) -> Result<Option<u64>, StoreError> {
        self.inner.last_height()
    }

    fn get(&self, height: u64) -> Result<Option<Decided>, StoreError> {
        self.inner.get(height)
    }

    fn commit(&mut self, decided: &Decided) -> Result<(), StoreError> {
        self.trace.borrow_mut().ops.push(Op::Commit(decided.height));
        self.inner.commit(decided)
    }
}

/// Validator sets by height.
pub type Membership = Rc<dyn Fn(u64) -> Option<ValidatorSet>>;

/// Items starting with this are invalid: honest replicas refuse batches holding one.
pub const BAD_ITEM: &[u8] = b"BAD";

/// The simulated application.
pub struct SimApp {
    pub membership: Membership,
    pub decided: Vec<u64>,
}

impl std::fmt::Debug for SimApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimApp(decided {})", self.decided.len())
    }
}

impl App for SimApp {
    fn validator_set(&self, height: u64) -> Option<ValidatorSet> {
        (self.membership)(height)
    }

    fn validate(&mut self, _height: u64, batch: &Batch) -> bool {
        !batch.items().iter().any(|i| i.starts_with(BAD_ITEM))
    }

    fn admit(&mut self, item: &[u8]) -> bool {
        !item.starts_with(BAD_ITEM)
    }

    fn on_decided(&mut self, decided: &Decided) {
        self.decided.push(decided.height);
    }
}
