//! Deterministic simulation of a replica group: seeded PRNG, virtual time as an ordered event
//! map, an in-memory network with loss, delay, reordering, duplication and healing partitions,
//! crash-restarts (state and timers dropped, WAL kept up to its last flush, decided store kept),
//! and one Byzantine replica. Invariants are checked after every event (see [`checker`]).
//!
//! Replay a failing seed: `NEXUS_SIM_SEED=<seed> cargo test -p nexus-ledger sim_replay -- --nocapture`.

pub mod byzantine;
pub mod checker;
pub mod env;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::byzantine::{ByzMode, Byzantine};
use self::checker::Checker;
use self::env::{Membership, Op, Out, Rng, SimApp, SimHost, SimStore, SimWal, Trace};
use super::signing::{ChainId, Signer, Verifier, VerifyCache};
use super::store::{DecidedStore, MemStore};
use super::timers::TimerId;
use super::types::{ValidatorKey, ValidatorSet};
use super::{Consensus, Node, NodeConfig, Timeouts};

type SimNode = Node<SimHost, SimWal, SimStore, SimApp>;

/// What one simulated run does.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Replicas (validators) in the group.
    pub replicas: usize,
    /// The Byzantine replica's behaviour (it is the last replica), or none.
    pub byzantine: Option<ByzMode>,
    /// Faults (loss, delay spikes, partitions, crashes) happen during the first `fault_ms`.
    pub fault_ms: u64,
    /// After faults stop, every honest replica must decide `progress` more heights within
    /// `liveness_ms`.
    pub liveness_ms: u64,
    pub progress: u64,
    pub loss: f64,
    pub crashes: bool,
    pub partitions: bool,
    /// Replay the WAL on restart (turning it off must make the checker fire).
    pub replay_wal: bool,
    /// Flush the WAL before sending (turning it off must make the checker fire).
    pub flush_before_publish: bool,
    /// From this height on, the first replica leaves and an extra one joins.
    pub membership_change_at: Option<u64>,
    /// Replicas start a height only when there is work (`NodeConfig::lazy_heights`); clients
    /// then also pause now and then, so idle periods are part of the run.
    pub lazy_heights: bool,
}

impl SimOptions {
    /// The standard fault mix for `seed`: every seed has one Byzantine replica of four.
    pub fn for_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mode = ByzMode::ALL[(seed % ByzMode::ALL.len() as u64) as usize];
        SimOptions {
            seed,
            replicas: 4,
            byzantine: Some(mode),
            fault_ms: rng.range(4_000, 12_000),
            liveness_ms: 30_000,
            progress: 4,
            loss: [0.0, 0.05, 0.2][rng.range(0, 2) as usize],
            crashes: rng.chance(0.8),
            partitions: rng.chance(0.6),
            replay_wal: true,
            flush_before_publish: true,
            membership_change_at: None,
            lazy_heights: seed % 2 == 1,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub seed: u64,
    pub virtual_ms: u64,
    pub events: u64,
    /// Lowest decided height among honest replicas at the end.
    pub min_height: u64,
    pub crashes: u64,
    pub replayed_entries: u64,
    pub decided_by_sync: u64,
    pub rejected_proposals: u64,
    pub undecodable_messages: u64,
    pub byzantine_equivocations_seen: u64,
    pub misbehaviour_heights: u64,
    /// Crashes placed before a decided-store commit (the height is decided again on restart).
    pub undone_commits: u64,
    pub sync_records_rejected: u64,
}

/// A violated invariant.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub options: String,
    pub at_ms: u64,
    pub violations: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at t={}ms",
            self.seed, self.at_ms
        )?;
        writeln!(f, "  options: {}", self.options)?;
        for v in self.violations.iter().take(10) {
            writeln!(f, "  - {v}")?;
        }
        write!(
            f,
            "  replay: NEXUS_SIM_SEED={} cargo test -p nexus-ledger sim_replay -- --nocapture",
            self.seed
        )
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        incarnation: u64,
        id: TimerId,
        generation: u64,
    },
    Submit,
    Crash {
        node: usize,
        point: CrashPoint,
    },
    Restart {
        node: usize,
    },
    Partition,
    HealPartition,
    EndFaults,
    ByzTick,
}

/// Where a crash strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// Between two calls.
    Now,
    /// Part-way through the replica's next call.
    InNextCall,
    /// Part-way through the next call that commits a decided height (possibly before the
    /// commit, after the WAL flush that precedes it).
    InNextCommittingCall,
}

struct Replica {
    key: ValidatorKey,
    seed: [u8; 32],
    node: Option<SimNode>,
    parts: Option<(SimWal, SimStore, SimApp)>,
    trace: Rc<RefCell<Trace>>,
    incarnation: u64,
    crash_at: Option<CrashPoint>,
}

struct Sim {
    opts: SimOptions,
    chain: ChainId,
    rng: Rng,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    replicas: Vec<Replica>,
    index: HashMap<ValidatorKey, usize>,
    groups: Option<Vec<bool>>,
    faults: bool,
    byz: Option<(usize, Byzantine)>,
    checker: Checker,
    cache: Arc<Mutex<VerifyCache>>,
    report: SimReport,
    item_counter: u64,
    heal_height: Option<u64>,
}

fn sim_config(chain: ChainId) -> NodeConfig {
    let mut cfg = NodeConfig::new(chain);
    cfg.timeouts = Timeouts {
        propose: Duration::from_millis(600),
        prevote: Duration::from_millis(300),
        precommit: Duration::from_millis(300),
        delta: Duration::from_millis(150),
        rebroadcast: Duration::from_millis(1200),
        max: Duration::from_millis(5000),
    };
    cfg.empty_batch_delay = Duration::from_millis(200);
    cfg.status_interval = Duration::from_millis(500);
    cfg.sync_timeout = Duration::from_millis(800);
    cfg.sync_max_heights = 16;
    cfg
}

/// Run one simulation.
pub fn run(opts: &SimOptions) -> Result<SimReport, SimFailure> {
    let mut sim = Sim::new(opts.clone());
    sim.run();
    let violations = std::mem::take(&mut sim.checker.violations);
    if violations.is_empty() {
        Ok(sim.report)
    } else {
        Err(SimFailure {
            seed: opts.seed,
            options: format!("{opts:?}"),
            at_ms: sim.now,
            violations,
        })
    }
}

impl Sim {
    fn new(opts: SimOptions) -> Self {
        let chain = ChainId::from_name(&format!("sim-{}", opts.seed));
        let total = opts.replicas + usize::from(opts.membership_change_at.is_some());
        let seeds: Vec<[u8; 32]> = (0..total)
            .map(|i| *blake3::hash(format!("sim key {i}").as_bytes()).as_bytes())
            .collect();
        let keys: Vec<ValidatorKey> = seeds
            .iter()
            .map(|s| Signer::from_seed(chain, *s).address())
            .collect();
        let n = opts.replicas;
        let first = ValidatorSet::equal(keys[..n].iter().copied()).ok();
        let second = ValidatorSet::equal(keys[total - n..].iter().copied()).ok();
        let switch = opts.membership_change_at;
        let membership: Membership = Rc::new(move |h| match switch {
            Some(s) if h >= s => second.clone(),
            _ => first.clone(),
        });
        let byz_index = opts.byzantine.map(|_| n - 1);
        let honest: HashSet<ValidatorKey> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != byz_index)
            .map(|(_, k)| *k)
            .collect();
        let cache = Arc::new(Mutex::new(VerifyCache::default()));
        let checker = Checker::new(
            chain,
            honest,
            membership.clone(),
            Verifier::with_cache(chain, cache.clone()),
        );
        let byz = opts
            .byzantine
            .zip(byz_index)
            .map(|(mode, i)| (i, Byzantine::new(mode, Signer::from_seed(chain, seeds[i]))));
        let replicas = seeds
            .iter()
            .zip(&keys)
            .map(|(seed, key)| {
                let trace = Rc::new(RefCell::new(Trace::default()));
                let app = SimApp {
                    membership: membership.clone(),
                    decided: Vec::new(),
                };
                Replica {
                    key: *key,
                    seed: *seed,
                    node: None,
                    parts: Some((
                        SimWal::new(trace.clone()),
                        SimStore {
                            inner: MemStore::new(),
                            trace: trace.clone(),
                        },
                        app,
                    )),
                    trace,
                    incarnation: 0,
                    crash_at: None,
                }
            })
            .collect();
        let index = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        Sim {
            rng: Rng::new(opts.seed),
            report: SimReport {
                seed: opts.seed,
                ..Default::default()
            },
            opts,
            chain,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            replicas,
            index,
            groups: None,
            faults: true,
            byz,
            checker,
            cache,
            item_counter: 0,
            heal_height: None,
        }
    }

    fn at(&mut self, delay: u64, ev: Event) {
        self.seq += 1;
        self.events.insert((self.now + delay, self.seq), ev);
    }

    fn honest(&self, i: usize) -> bool {
        self.byz.as_ref().is_none_or(|(b, _)| *b != i)
    }

    fn run(&mut self) {
        for i in 0..self.replicas.len() {
            self.restart(i);
        }
        let first = self.rng.range(50, 400);
        self.at(first, Event::Submit);
        if self.opts.crashes {
            let t = self.rng.range(200, self.opts.fault_ms.max(201));
            let node = self.random_honest();
            let point = self.crash_point();
            self.at(t, Event::Crash { node, point });
        }
        if self.opts.partitions {
            let t = self.rng.range(100, self.opts.fault_ms.max(101));
            self.at(t, Event::Partition);
        }
        if self.byz.is_some() {
            self.at(200, Event::ByzTick);
        }
        self.at(self.opts.fault_ms, Event::EndFaults);
        let deadline = self.opts.fault_ms + self.opts.liveness_ms;
        while let Some(((t, _), ev)) = self.events.pop_first() {
            self.now = t;
            self.report.events += 1;
            self.step(ev);
            if !self.checker.violations.is_empty() {
                return;
            }
            if let Some(h0) = self.heal_height
                && self.min_honest_height() >= h0 + self.opts.progress
            {
                break;
            }
            if self.now > deadline {
                let h0 = self.heal_height.unwrap_or(0);
                self.checker.violations.push(format!(
                    "liveness: after healing at height {h0}, honest heights are {:?} after {} ms (wanted +{})",
                    self.honest_heights(),
                    self.opts.liveness_ms,
                    self.opts.progress
                ));
                for r in &self.replicas {
                    if let Some(n) = &r.node {
                        self.checker
                            .violations
                            .push(format!("status {:?}", n.status()));
                    }
                }
                return;
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        let stores: Vec<(ValidatorKey, MemStore)> = (0..self.replicas.len())
            .filter(|i| self.honest(*i))
            .filter_map(|i| self.store(i).map(|s| (self.replicas[i].key, s.clone())))
            .collect();
        let refs: Vec<(ValidatorKey, &MemStore)> = stores.iter().map(|(k, s)| (*k, s)).collect();
        self.checker.check_prefixes(&refs);
        self.report.virtual_ms = self.now;
        self.report.min_height = self.min_honest_height();
        self.report.byzantine_equivocations_seen = self.checker.equivocations_seen_from_byzantine;
        let running: Vec<_> = self
            .replicas
            .iter()
            .filter_map(|r| r.node.as_ref().map(|n| n.status().stats))
            .collect();
        for s in running {
            self.absorb(&s);
        }
    }

    fn absorb(&mut self, s: &super::Stats) {
        self.report.replayed_entries += s.replayed_entries;
        self.report.decided_by_sync += s.decided_by_sync;
        self.report.rejected_proposals += s.rejected_proposals;
        self.report.undecodable_messages += s.undecodable_messages;
        self.report.misbehaviour_heights += s.misbehaviour_heights;
        self.report.sync_records_rejected += s.sync_records_rejected;
    }

    fn store(&self, i: usize) -> Option<&MemStore> {
        let r = &self.replicas[i];
        r.node
            .as_ref()
            .map(|n| &n.store().inner)
            .or(r.parts.as_ref().map(|p| &p.1.inner))
    }

    /// Replicas that are validators at the height being decided, honest.
    fn honest_heights(&self) -> Vec<u64> {
        (0..self.replicas.len())
            .filter(|i| self.honest(*i))
            .filter_map(|i| self.store(i))
            .map(|s| s.last_height().ok().flatten().unwrap_or(0))
            .collect()
    }

    fn min_honest_height(&self) -> u64 {
        self.honest_heights().into_iter().min().unwrap_or(0)
    }

    fn random_honest(&mut self) -> usize {
        let honest: Vec<usize> = (0..self.replicas.len())
            .filter(|i| self.honest(*i))
            .collect();
        self.rng.pick(&honest).unwrap_or(0)
    }

    fn step(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, bytes } => {
                if let Some((b, byz)) = &mut self.byz
                    && *b != from
                {
                    byz.observe(&mut self.rng, &bytes);
                }
                let key = self.replicas[from].key;
                self.call(to, |n| n.on_message(key, &bytes));
            }
            Event::Timer {
                node,
                incarnation,
                id,
                generation,
            } => {
                if self.replicas[node].incarnation == incarnation {
                    self.call(node, |n| n.on_timer(id, generation));
                }
            }
            Event::Submit => {
                let up: Vec<usize> = (0..self.replicas.len())
                    .filter(|i| self.honest(*i) && self.replicas[*i].node.is_some())
                    .collect();
                if let Some(i) = self.rng.pick(&up) {
                    let count = self.rng.range(1, 3);
                    let items: Vec<Vec<u8>> = (0..count)
                        .map(|_| {
                            self.item_counter += 1;
                            format!("item-{}-{}", self.opts.seed, self.item_counter).into_bytes()
                        })
                        .collect();
                    self.call(i, |n| n.submit(items).map(|_| ()));
                }
                let next = if self.opts.lazy_heights && self.rng.chance(0.1) {
                    self.rng.range(2_000, 5_000) // an idle period
                } else {
                    self.rng.range(100, 700)
                };
                self.at(next, Event::Submit);
            }
            Event::Crash { node, point } => match point {
                CrashPoint::Now => self.crash(node),
                p => self.replicas[node].crash_at = Some(p),
            },
            Event::Restart { node } => self.restart(node),
            Event::Partition => {
                if self.faults {
                    let g: Vec<bool> = (0..self.replicas.len())
                        .map(|_| self.rng.chance(0.5))
                        .collect();
                    self.groups = Some(g);
                    let d = self.rng.range(200, 3000);
                    self.at(d, Event::HealPartition);
                }
            }
            Event::HealPartition => {
                self.groups = None;
                if self.faults {
                    let d = self.rng.range(300, 3000);
                    self.at(d, Event::Partition);
                }
            }
            Event::EndFaults => {
                self.faults = false;
                self.groups = None;
                for i in 0..self.replicas.len() {
                    self.replicas[i].crash_at = None;
                    if self.replicas[i].node.is_none() {
                        self.restart(i);
                    }
                }
                self.heal_height = Some(self.honest_heights().into_iter().max().unwrap_or(0));
            }
            Event::ByzTick => {
                if let Some((b, byz)) = &mut self.byz {
                    let b = *b;
                    let peers: Vec<usize> = (0..self.replicas.len()).filter(|i| *i != b).collect();
                    let out = byz.tick(&mut self.rng, &peers);
                    for (to, bytes) in out {
                        self.transmit(b, to, bytes);
                    }
                }
                let d = self.rng.range(100, 400);
                self.at(d, Event::ByzTick);
            }
        }
    }

    fn crash_point(&mut self) -> CrashPoint {
        match self.rng.range(0, 2) {
            0 => CrashPoint::Now,
            1 => CrashPoint::InNextCall,
            _ => CrashPoint::InNextCommittingCall,
        }
    }

    fn crash(&mut self, i: usize) {
        let Some(node) = self.replicas[i].node.take() else {
            return;
        };
        self.report.crashes += 1;
        self.absorb(&node.status().stats);
        let (_, mut wal, store, app) = node.into_parts();
        wal.crash();
        let r = &mut self.replicas[i];
        r.parts = Some((wal, store, app));
        r.incarnation += 1;
        r.crash_at = None;
        let down = self.rng.range(50, 3000);
        self.at(down, Event::Restart { node: i });
        if self.faults && self.opts.crashes {
            let next = self.rng.range(300, 3000);
            let node = self.random_honest();
            let point = self.crash_point();
            self.at(next, Event::Crash { node, point });
        }
    }

    fn restart(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let Some((wal, store, app)) = r.parts.take() else {
            return;
        };
        let signer = Signer::from_seed(self.chain, r.seed);
        let host = SimHost {
            me: r.key,
            now: self.now,
            outbox: Vec::new(),
            trace: r.trace.clone(),
        };
        let verifier = Verifier::with_cache(self.chain, self.cache.clone());
        let mut node = Node::with_verifier(
            {
                let mut cfg = sim_config(self.chain);
                cfg.lazy_heights = self.opts.lazy_heights;
                cfg
            },
            signer,
            verifier,
            host,
            wal,
            store,
            app,
        );
        if !self.opts.replay_wal {
            node.disable_wal_replay_for_testing();
        }
        if !self.opts.flush_before_publish {
            node.disable_flush_before_publish_for_testing();
        }
        r.node = Some(node);
        self.call(i, |n| n.start());
    }

    /// Run one call on replica `i` (if it is up), then route what it produced and check.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut SimNode) -> Result<(), super::NodeError>) {
        let now = self.now;
        let trace = self.replicas[i].trace.clone();
        let Some(node) = self.replicas[i].node.as_mut() else {
            return;
        };
        node.host_mut().now = now;
        let tip_before = node.store().inner.last_height().ok().flatten().unwrap_or(0);
        trace.borrow_mut().begin_call(&node.wal().inner);
        let result = f(node);
        let mut outbox = std::mem::take(&mut node.host_mut().outbox);
        if let Err(e) = result
            && self.honest(i)
        {
            self.checker.violations.push(format!(
                "honest replica {} stopped: {e}",
                self.replicas[i].key
            ));
        }
        let crash_now = match self.replicas[i].crash_at {
            Some(CrashPoint::InNextCall) => true,
            Some(CrashPoint::InNextCommittingCall) => {
                let t = self.replicas[i].trace.borrow();
                t.ops.iter().any(|o| matches!(o, Op::Commit(_)))
            }
            _ => false,
        };
        // Crash part-way through the call, after the first `k` steps: later sends, timers,
        // WAL flushes/resets and store commits never happen.
        let mut crash_state = None;
        if crash_now {
            let t = self.replicas[i].trace.borrow();
            let k = self.rng.range(0, t.ops.len() as u64) as usize;
            let keep = t.ops[..k].iter().filter(|o| **o == Op::Out).count();
            let undone = t.ops[k..].iter().any(|o| matches!(o, Op::Commit(_)));
            let kept = t.ops[..k]
                .iter()
                .filter_map(|o| match o {
                    Op::Commit(h) => Some(*h),
                    _ => None,
                })
                .fold(tip_before, u64::max);
            drop(t);
            outbox.truncate(keep);
            crash_state = Some((k, undone.then_some(kept)));
        }
        let incarnation = self.replicas[i].incarnation;
        for out in outbox {
            match out {
                Out::Timer(id, generation, after) => {
                    let ms = after.as_millis() as u64;
                    self.at(
                        ms,
                        Event::Timer {
                            node: i,
                            incarnation,
                            id,
                            generation,
                        },
                    );
                }
                Out::Send(to, bytes) => {
                    if let Some(&j) = self.index.get(&to) {
                        self.route(i, &[j], bytes);
                    }
                }
                Out::Broadcast(bytes) => {
                    let all: Vec<usize> = (0..self.replicas.len()).filter(|j| *j != i).collect();
                    self.route(i, &all, bytes);
                }
            }
        }
        if self.honest(i) {
            let key = self.replicas[i].key;
            if let Some(n) = self.replicas[i].node.as_ref() {
                self.checker.check_store(key, &n.store().inner);
            }
            let mut t = self.replicas[i].trace.borrow_mut();
            self.checker
                .violations
                .extend(t.violations.drain(..).map(|v| format!("{key}: {v}")));
        }
        if let Some((k, undone)) = crash_state {
            let wal = self.replicas[i].trace.borrow_mut().wal_at(k);
            self.crash(i);
            if let Some(p) = self.replicas[i].parts.as_mut() {
                if let Some(w) = wal {
                    p.0.inner = w;
                    p.0.crash();
                }
                if let Some(kept) = undone {
                    p.1.inner.truncate_above(kept);
                    self.report.undone_commits += 1;
                    self.checker.rewind(self.replicas[i].key, kept);
                }
            }
        }
    }

    fn route(&mut self, from: usize, dests: &[usize], bytes: Vec<u8>) {
        let sends = match &mut self.byz {
            Some((b, byz)) if *b == from => byz.outgoing(&mut self.rng, bytes, dests),
            _ => dests.iter().map(|d| (*d, bytes.clone())).collect(),
        };
        for (to, b) in sends {
            self.transmit(from, to, b);
        }
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.checker.observe(&bytes);
        if self.faults {
            if self.groups.as_ref().is_some_and(|g| g[from] != g[to]) {
                return;
            }
            if self.rng.chance(self.opts.loss) {
                return;
            }
        }
        let mut delay = self.rng.range(1, 25);
        if self.faults && self.rng.chance(0.05) {
            delay += self.rng.range(100, 1500);
        }
        if self.faults && self.rng.chance(0.02) {
            let d2 = self.rng.range(1, 400);
            self.at(
                d2,
                Event::Deliver {
                    to,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
        self.at(delay, Event::Deliver { to, from, bytes });
    }
}
