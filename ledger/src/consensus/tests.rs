//! Node-level tests on a small lossless in-process network: replicas on redb files restarting
//! from disk, an empty replica syncing from height 1, forged sync records, and halting when the
//! WAL cannot be flushed.

use std::collections::BTreeMap;
use std::time::Duration;

use super::codec::{WireMsg, decode_wire, encode_wire};
use super::signing::{ChainId, Signer, Verifier, verify_commit_cert};
use super::timers::TimerId;
use super::wal::{MemWal, Wal, WalError};
use super::{
    App, Batch, Consensus, Decided, DecidedStore, Host, MemStore, Node, NodeConfig, NodeError,
    RedbStore, RedbWal, ValidatorKey, ValidatorSet,
};

#[derive(Debug, Default)]
struct LoopHost {
    now: u64,
    out: Vec<(Option<ValidatorKey>, Vec<u8>)>,
    timers: Vec<(TimerId, u64, Duration)>,
}

impl Host for LoopHost {
    fn send(&mut self, to: ValidatorKey, msg: Vec<u8>) {
        self.out.push((Some(to), msg));
    }
    fn broadcast(&mut self, msg: Vec<u8>) {
        self.out.push((None, msg));
    }
    fn set_timer(&mut self, timer: TimerId, generation: u64, after: Duration) {
        self.timers.push((timer, generation, after));
    }
    fn now_ms(&self) -> u64 {
        self.now
    }
}

#[derive(Debug, Clone)]
struct TestApp {
    vs: ValidatorSet,
    decided: Vec<u64>,
}

impl App for TestApp {
    fn validator_set(&self, _height: u64) -> Option<ValidatorSet> {
        Some(self.vs.clone())
    }
    fn validate(&mut self, _height: u64, _batch: &Batch) -> bool {
        true
    }
    fn on_decided(&mut self, d: &Decided) {
        self.decided.push(d.height);
    }
}

fn config(chain: ChainId) -> NodeConfig {
    let mut c = NodeConfig::new(chain);
    c.empty_batch_delay = Duration::from_millis(50);
    c.status_interval = Duration::from_millis(200);
    c
}

type TNode<W, S> = Node<LoopHost, W, S, TestApp>;

enum Ev {
    Msg(usize, usize, Vec<u8>),
    Timer(usize, u64, TimerId, u64),
}

/// A lossless network with 5 ms links and virtual time. Replicas may be absent (`None`).
struct Net<W: Wal, S: DecidedStore> {
    nodes: Vec<Option<TNode<W, S>>>,
    keys: Vec<ValidatorKey>,
    incarnation: Vec<u64>,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Ev>,
}

impl<W: Wal, S: DecidedStore> Net<W, S> {
    fn new(keys: Vec<ValidatorKey>) -> Self {
        let n = keys.len();
        Net {
            nodes: (0..n).map(|_| None).collect(),
            keys,
            incarnation: vec![0; n],
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
        }
    }

    fn put(&mut self, i: usize, mut node: TNode<W, S>) {
        self.incarnation[i] += 1;
        node.host_mut().now = self.now;
        node.start().unwrap();
        self.nodes[i] = Some(node);
        self.flush(i);
    }

    fn take(&mut self, i: usize) -> Option<TNode<W, S>> {
        self.incarnation[i] += 1;
        self.nodes[i].take()
    }

    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let out = std::mem::take(&mut node.host_mut().out);
        let timers = std::mem::take(&mut node.host_mut().timers);
        for (to, bytes) in out {
            let dests: Vec<usize> = match to {
                Some(k) => self.keys.iter().position(|x| *x == k).into_iter().collect(),
                None => (0..self.keys.len()).filter(|j| *j != i).collect(),
            };
            for j in dests {
                self.seq += 1;
                self.events
                    .insert((self.now + 5, self.seq), Ev::Msg(i, j, bytes.clone()));
            }
        }
        for (id, generation, after) in timers {
            self.seq += 1;
            let at = self.now + after.as_millis() as u64;
            let inc = self.incarnation[i];
            self.events
                .insert((at, self.seq), Ev::Timer(i, inc, id, generation));
        }
    }

    fn tip(&self, i: usize) -> u64 {
        self.nodes[i]
            .as_ref()
            .and_then(|n| n.status().tip)
            .unwrap_or(0)
    }

    /// Run until every present replica has decided `height`, or panic after `limit_ms`.
    fn run_until(&mut self, height: u64, limit_ms: u64) {
        let deadline = self.now + limit_ms;
        while (0..self.nodes.len()).any(|i| self.nodes[i].is_some() && self.tip(i) < height) {
            let Some(((t, _), ev)) = self.events.pop_first() else {
                panic!("no more events")
            };
            assert!(
                t <= deadline,
                "height {height} not reached by {deadline} ms"
            );
            self.now = t;
            let (i, r) = match ev {
                Ev::Msg(from, to, bytes) => {
                    let key = self.keys[from];
                    let Some(n) = self.nodes[to].as_mut() else {
                        continue;
                    };
                    n.host_mut().now = t;
                    (to, n.on_message(key, &bytes))
                }
                Ev::Timer(i, inc, id, generation) => {
                    if inc != self.incarnation[i] {
                        continue;
                    }
                    let Some(n) = self.nodes[i].as_mut() else {
                        continue;
                    };
                    n.host_mut().now = t;
                    (i, n.on_timer(id, generation))
                }
            };
            r.unwrap();
            self.flush(i);
        }
    }
}

fn cluster(n: u8) -> (ChainId, Vec<Signer>, ValidatorSet) {
    let chain = ChainId::from_name("node-tests");
    let signers: Vec<Signer> = (1..=n).map(|i| Signer::from_seed(chain, [i; 32])).collect();
    let vs = ValidatorSet::equal(signers.iter().map(|s| s.address())).unwrap();
    (chain, signers, vs)
}

fn app(vs: &ValidatorSet) -> TestApp {
    TestApp {
        vs: vs.clone(),
        decided: Vec::new(),
    }
}

fn same_chain(a: &impl DecidedStore, b: &impl DecidedStore, upto: u64) {
    for h in 1..=upto {
        let x = a.get(h).unwrap().unwrap();
        let y = b.get(h).unwrap().unwrap();
        assert_eq!(x.batch.id(), y.batch.id(), "height {h}");
    }
}

#[test]
fn redb_replicas_restart_from_disk_and_agree() {
    let (chain, signers, vs) = cluster(4);
    let dir = tempfile::tempdir().unwrap();
    let path = |i: usize, what: &str| dir.path().join(format!("{what}-{i}.redb"));
    let open = |i: usize| -> TNode<RedbWal, RedbStore> {
        Node::new(
            config(chain),
            signers[i].clone(),
            LoopHost::default(),
            RedbWal::open(path(i, "wal")).unwrap(),
            RedbStore::open(path(i, "decided")).unwrap(),
            app(&vs),
        )
    };
    let mut net = Net::new(signers.iter().map(|s| s.address()).collect());
    for i in 0..4 {
        net.put(i, open(i));
    }
    net.nodes[0]
        .as_mut()
        .unwrap()
        .submit(vec![b"alpha".to_vec(), b"beta".to_vec()])
        .unwrap();
    net.flush(0);
    net.run_until(4, 60_000);
    // Crash replica 2 (close its files) and bring it back from disk.
    drop(net.take(2));
    net.run_until(6, 60_000);
    net.put(2, open(2));
    net.run_until(9, 120_000);
    let verifier = Verifier::new(chain);
    let stores: Vec<&RedbStore> = net
        .nodes
        .iter()
        .map(|n| n.as_ref().unwrap().store())
        .collect();
    for s in &stores[1..] {
        same_chain(stores[0], *s, 9);
    }
    let mut items = Vec::new();
    for h in 1..=9 {
        let d = stores[2].get(h).unwrap().unwrap();
        verify_commit_cert(&verifier, &d.cert, &vs).unwrap();
        items.extend(d.batch.items().iter().cloned());
    }
    assert_eq!(
        items,
        vec![b"alpha".to_vec(), b"beta".to_vec()],
        "each item once"
    );
}

#[test]
fn empty_replica_syncs_from_height_one() {
    let (chain, signers, vs) = cluster(4);
    let make = |i: usize| -> TNode<MemWal, MemStore> {
        Node::new(
            config(chain),
            signers[i].clone(),
            LoopHost::default(),
            MemWal::new(),
            MemStore::new(),
            app(&vs),
        )
    };
    let mut net = Net::new(signers.iter().map(|s| s.address()).collect());
    for i in 0..3 {
        net.put(i, make(i));
    }
    net.run_until(12, 120_000);
    net.put(3, make(3));
    net.run_until(16, 120_000);
    let late = net.nodes[3].as_ref().unwrap();
    let st = late.status();
    assert!(st.stats.decided_by_sync >= 10, "{st:?}");
    assert_eq!(
        late.app().decided,
        (1..=st.tip.unwrap()).collect::<Vec<_>>()
    );
    same_chain(net.nodes[0].as_ref().unwrap().store(), late.store(), 16);
}

#[test]
fn forged_sync_records_are_refused_and_good_ones_accepted() {
    let (chain, signers, vs) = cluster(4);
    let make = |i: usize| -> TNode<MemWal, MemStore> {
        Node::new(
            config(chain),
            signers[i].clone(),
            LoopHost::default(),
            MemWal::new(),
            MemStore::new(),
            app(&vs),
        )
    };
    let mut net = Net::new(signers.iter().map(|s| s.address()).collect());
    for i in 0..3 {
        net.put(i, make(i));
    }
    net.run_until(2, 60_000);
    let good = net.nodes[0]
        .as_ref()
        .unwrap()
        .store()
        .get(1)
        .unwrap()
        .unwrap();
    // A fresh replica, fed by hand.
    let mut fresh = make(3);
    fresh.start().unwrap();
    let from = signers[0].address();
    let mut padded = good.clone();
    padded.cert.signatures.push((signers[3].address(), [9; 64]));
    let mut short = good.clone();
    short.cert.signatures.truncate(2);
    for bad in [padded, short] {
        let msg = encode_wire(&WireMsg::SyncResponse(vec![bad]));
        fresh.on_message(from, &msg).unwrap();
        assert_eq!(fresh.status().tip, None);
    }
    assert_eq!(fresh.status().stats.sync_records_rejected, 2);
    let msg = encode_wire(&WireMsg::SyncResponse(vec![good.clone()]));
    fresh.on_message(from, &msg).unwrap();
    assert_eq!(fresh.status().tip, Some(1));
    let stored = fresh.store().get(1).unwrap().unwrap();
    assert_eq!(stored.batch.id(), good.batch.id());
    let sorted = |d: &Decided| {
        let mut s = d.cert.signatures.clone();
        s.sort();
        s
    };
    assert_eq!(sorted(&stored), sorted(&good));
    // Garbage is counted and ignored.
    fresh.on_message(from, b"\x01\x07\xff\xff\xff\xff").unwrap();
    fresh.on_message(from, b"").unwrap();
    assert_eq!(fresh.status().stats.undecodable_messages, 2);
}

/// A WAL whose flushes fail once `broken` is set.
#[derive(Debug, Default)]
struct BrokenWal {
    inner: MemWal,
    broken: bool,
}

impl Wal for BrokenWal {
    fn height(&self) -> Option<u64> {
        self.inner.height()
    }
    fn append(&mut self, e: Vec<u8>) {
        self.inner.append(e);
    }
    fn flush(&mut self) -> Result<(), WalError> {
        if self.broken {
            return Err(WalError("disk full".into()));
        }
        self.inner.flush()
    }
    fn reset(&mut self, h: u64) -> Result<(), WalError> {
        self.inner.reset(h)
    }
    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        self.inner.entries()
    }
}

#[test]
fn a_failing_wal_stops_the_replica_before_it_votes() {
    let (chain, signers, vs) = cluster(4);
    // Height 1, round 0 is proposed by the first validator in canonical order; we are another.
    let proposer = vs.proposer(super::types::Height(1), 0).key();
    let me = signers.iter().find(|s| s.address() != proposer).unwrap();
    let mut node: Node<LoopHost, BrokenWal, MemStore, TestApp> = Node::new(
        config(chain),
        me.clone(),
        LoopHost::default(),
        BrokenWal::default(),
        MemStore::new(),
        app(&vs),
    );
    node.start().unwrap();
    node.host_mut().out.clear();
    let signer = signers.iter().find(|s| s.address() == proposer).unwrap();
    let p = signer.sign_proposal(super::types::Proposal {
        height: super::types::Height(1),
        round: arc_malachitebft_core_types::Round::new(0),
        value: Batch::new(vec![b"x".to_vec()]),
        pol_round: arc_malachitebft_core_types::Round::Nil,
        proposer,
    });
    node.wal_mut_for_tests().broken = true;
    let r = node.on_message(proposer, &encode_wire(&WireMsg::Proposal(p)));
    assert!(matches!(r, Err(NodeError::Wal(_))), "{r:?}");
    let votes = node
        .host()
        .out
        .iter()
        .filter(|(_, b)| matches!(decode_wire(b), Ok(WireMsg::Vote(_))))
        .count();
    assert_eq!(votes, 0, "no vote leaves without a durable WAL");
    assert!(matches!(
        node.submit(vec![b"y".to_vec()]),
        Err(NodeError::Halted(_))
    ));
    assert!(node.status().halted.is_some());
}

#[test]
fn a_node_on_redb_can_move_to_its_own_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Node<LoopHost, RedbWal, RedbStore, TestApp>>();
}

#[test]
fn a_started_node_announces_itself_at_once() {
    // Peers may hold a stale beacon from this replica's previous run: the first one goes out
    // right at start, idle (lazy heights) or not, then one per interval.
    let (chain, signers, vs) = cluster(4);
    for lazy in [true, false] {
        let mut cfg = config(chain);
        cfg.lazy_heights = lazy;
        let mut node: TNode<MemWal, MemStore> = Node::new(
            cfg,
            signers[0].clone(),
            LoopHost::default(),
            MemWal::new(),
            MemStore::new(),
            app(&vs),
        );
        node.start().unwrap();
        let status = node
            .host()
            .timers
            .iter()
            .find(|(id, _, _)| *id == TimerId(super::timers::TimerKey::Status))
            .copied();
        let Some((id, generation, after)) = status else {
            panic!("lazy {lazy}: no status timer: {:?}", node.host().timers);
        };
        assert_eq!(after, Duration::ZERO, "lazy {lazy}: the first beacon waits");
        node.host_mut().out.clear();
        node.host_mut().timers.clear();
        node.on_timer(id, generation).unwrap();
        let beacons = node
            .host()
            .out
            .iter()
            .filter(|(to, b)| to.is_none() && matches!(decode_wire(b), Ok(WireMsg::Status { .. })))
            .count();
        assert_eq!(beacons, 1, "lazy {lazy}");
        assert!(
            node.host().timers.iter().any(|(id, _, after)| *id
                == TimerId(super::timers::TimerKey::Status)
                && *after == Duration::from_millis(200)),
            "lazy {lazy}: then one per interval: {:?}",
            node.host().timers
        );
    }
}
