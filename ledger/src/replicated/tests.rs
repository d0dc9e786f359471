//! Replicated ledgers in one process, connected by an in-memory network that can cut replicas
//! off: one replica alone, four replicas under concurrent load, a restarted replica and an
//! empty one catching up, a minority that cannot decide, read barriers, certificates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ReplicaConfig;
use super::mem::{MemNet, test_config};
use crate::audit::verify_certificates;
use crate::consensus::ValidatorKey;
use crate::event::Validator;
use crate::ledger::{Caller, Ledger, LedgerConfig, SubmitError, system_clock};
use crate::plan::{Action, RequestError};
use crate::request::{Op, SignedRequest};
use crate::testutil::*;

fn seed(i: usize) -> [u8; 32] {
    [100 + i as u8; 32]
}

fn key(i: usize) -> ValidatorKey {
    ValidatorKey(
        ed25519_dalek::SigningKey::from_bytes(&seed(i))
            .verifying_key()
            .to_bytes(),
    )
}

fn validator(i: usize) -> Validator {
    Validator {
        name: format!("r{i}"),
        public_key: key(i).0,
        address: format!("r{i}"),
        power: 1,
    }
}

fn genesis(n: usize) -> Vec<Validator> {
    (0..n).map(validator).collect()
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    net: Arc<MemNet>,
    /// Validators of height 1.
    n: usize,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let c = Cluster {
            dirs: (0..n).map(|_| tempdir()).collect(),
            net: Arc::default(),
            n,
        };
        for i in 0..n {
            c.start(i);
        }
        c
    }

    fn start(&self, i: usize) -> Arc<Ledger> {
        self.start_with(i, |_| {})
    }

    fn start_with(&self, i: usize, tune: impl FnOnce(&mut ReplicaConfig)) -> Arc<Ledger> {
        let mut cfg = test_config("test", &format!("r{i}"), seed(i), genesis(self.n));
        tune(&mut cfg);
        let l = Arc::new(
            Ledger::open_replicated(
                self.dirs[i].path().join("ledger.redb"),
                LedgerConfig::default(),
                cfg,
                self.net.link(key(i)),
                system_clock(),
            )
            .expect("open replica"),
        );
        self.net.register(key(i), l.clone());
        l
    }

    fn get(&self, i: usize) -> Arc<Ledger> {
        self.net.get(&key(i)).expect("a running replica")
    }

    /// Stops replica `i` (like a crash after its last durable commit).
    fn stop(&self, i: usize) {
        if let Some(l) = self.net.remove(&key(i)) {
            l.shutdown();
        }
    }

    fn wipe(&mut self, i: usize) {
        self.stop(i);
        self.dirs[i] = tempdir();
    }

    fn cut(&self, i: usize, off: bool) {
        self.net.cut(key(i), off);
    }

    fn wait_height(&self, i: usize, h: u64) {
        let t = Instant::now();
        while self.get(i).height() < h {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "replica {i} stuck at {} < {h}: {:?}",
                self.get(i).height(),
                self.get(i).replication_status()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.dirs.len() {
            self.stop(i);
        }
    }
}

fn caller() -> Caller {
    Caller {
        actor: "user:a".into(),
        public_key: signing_key(1).verifying_key().to_bytes(),
    }
}

fn apply_req(id: &str, name: &str, replicas: u64) -> SignedRequest {
    signed(id, "user:a", vec![apply(workload(name, replicas))])
}

/// Every replica holds the same chain, and every entry's certificate verifies against the
/// validator set of its height and matches the entry's batch. A height decided while the heads
/// are read (a replica may be one entry ahead for a moment) is waited for.
fn assert_same_certified_chain(ledgers: &[Arc<Ledger>]) {
    let heads = || -> Vec<_> {
        ledgers
            .iter()
            .map(|l| l.store().head().unwrap().unwrap())
            .collect()
    };
    let t = Instant::now();
    let mut now = heads();
    while !now.windows(2).all(|w| w[0] == w[1]) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
        now = heads();
    }
    assert!(now.windows(2).all(|w| w[0] == w[1]), "heads {now:?}");
    for l in ledgers {
        let r = verify_certificates(l.store(), None, None).unwrap();
        assert_eq!(r.problem, None);
        assert_eq!(r.uncertified, 0);
        assert!(
            r.certified >= now[0].height,
            "{} < {}",
            r.certified,
            now[0].height
        );
    }
}

#[test]
fn one_replica_decides_alone_and_idles_without_heights() {
    let c = Cluster::new(1);
    let l = c.get(0);
    let a = l.submit(apply_req("1", "a", 1), &caller()).unwrap();
    assert_eq!((a.height, a.duplicate), (1, false));
    assert_eq!(a.outcomes[0].action, Action::Created);
    // A retry is answered from the log; an unchanged apply writes nothing.
    let again = l.submit(apply_req("1", "a", 1), &caller()).unwrap();
    assert!(again.duplicate);
    let same = l.submit(apply_req("2", "a", 1), &caller()).unwrap();
    assert_eq!(same.outcomes[0].action, Action::Unchanged);
    // A request failing against the current state is refused without an entry.
    let bad = signed(
        "3",
        "user:a",
        vec![Op::Delete {
            key: wkey("zz"),
            if_version: None,
        }],
    );
    assert!(matches!(
        l.submit(bad, &caller()),
        Err(SubmitError::Request(RequestError::NotFound { .. }))
    ));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(l.height(), 1, "an idle replica decides no heights");
    assert_eq!(l.read_barrier(Duration::from_secs(5)).unwrap(), 2);
    assert_same_certified_chain(std::slice::from_ref(&l));
    // Restart: the state and the height are back, and consensus continues after them.
    drop(l);
    c.stop(0);
    let l = c.start(0);
    assert_eq!(l.height(), 2);
    let b = l.submit(apply_req("4", "b", 1), &caller()).unwrap();
    assert_eq!(b.height, 3);
    assert!(l.get(&wkey("a")).is_some());
}

#[test]
fn four_replicas_order_concurrent_clients_and_agree() {
    let c = Cluster::new(4);
    let mut handles = Vec::new();
    for i in 0..4 {
        let l = c.get(i);
        handles.push(std::thread::spawn(move || {
            (0..15)
                .map(|k| {
                    let name = format!("w{i}-{k}");
                    l.submit(apply_req(&name, &name, 1), &caller())
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                        .height
                })
                .collect::<Vec<_>>()
        }));
    }
    let heights: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let top = *heights.iter().max().unwrap();
    for i in 0..4 {
        c.wait_height(i, top);
    }
    let ledgers: Vec<_> = (0..4).map(|i| c.get(i)).collect();
    assert_same_certified_chain(&ledgers);
    for l in &ledgers {
        assert_eq!(l.state().objects.len(), 60);
    }
    // The same request sent to two replicas is applied once.
    let dup = apply_req("twice", "twice", 1);
    let a = c.get(0).submit(dup.clone(), &caller()).unwrap();
    // Once replica 1 holds that entry it answers from it (a replica still behind would order the
    // request again and learn it was decided only from the entry: also applied once, but then
    // not reported as a duplicate).
    c.wait_height(1, a.height);
    let b = c.get(1).submit(dup, &caller()).unwrap();
    assert_eq!(a.height, b.height);
    assert!(b.duplicate);
    let s = c.get(2).replication_status().unwrap();
    assert_eq!(s.validators, 4);
    assert!(s.peers.len() >= 2, "{s:?}");

    // Tampered certificates are found: a forged signature, or a record for another batch.
    let store = ledgers[3].store();
    let good = store.certificate(5).unwrap().unwrap();
    let mut rec = super::batch::CertRecord::from_bytes(&good).unwrap();
    rec.cert.signatures[0].1[3] ^= 1;
    store.set_certificate(5, &rec.to_bytes()).unwrap();
    let r = verify_certificates(store, None, None).unwrap();
    assert_eq!(r.problem.map(|p| p.height()), Some(5));
    let mut rec = super::batch::CertRecord::from_bytes(&good).unwrap();
    rec.barriers.push([1; 16]);
    store.set_certificate(5, &rec.to_bytes()).unwrap();
    let r = verify_certificates(store, None, None).unwrap();
    assert!(r.problem.unwrap().to_string().contains("does not certify"));
    assert_eq!(
        verify_certificates(store, Some("other"), Some(4))
            .unwrap()
            .problem
            .map(|p| p.height()),
        Some(1),
        "another cluster's signatures"
    );
    store.set_certificate(5, &good).unwrap();
}

/// The ledger is synced only every so often: a crash can take the last appended entries with
/// it. Their decisions are in the WAL (logged before the WAL left each height), and a restart
/// replays them on its own, without any peer; the last height, whose log the WAL still holds,
/// is decided again with the peers.
#[test]
fn decisions_a_crash_took_from_the_ledger_come_back_from_the_wal() {
    let c = Cluster::new(4);
    for k in 0..2 {
        let n = format!("a{k}");
        c.get(0).submit(apply_req(&n, &n, 1), &caller()).unwrap();
    }
    c.wait_height(3, c.get(0).height());
    c.stop(3);
    let ledger = c.dirs[3].path().join("ledger.redb");
    let old = c.dirs[3].path().join("old.redb");
    std::fs::copy(&ledger, &old).unwrap();
    // This time the ledger is not synced while it runs (the crash below takes everything after
    // `before`, as if it came just before the first sync).
    let before = c
        .start_with(3, |cfg| cfg.ledger_sync_gap = Duration::from_secs(3600))
        .height();
    for k in 0..5 {
        let n = format!("b{k}");
        c.get(1).submit(apply_req(&n, &n, 1), &caller()).unwrap();
    }
    let top = c.get(1).height();
    c.wait_height(3, top);
    let head = c.get(3).store().head().unwrap().unwrap();
    // "Crash": the ledger goes back to what was durable before these heights; the WAL stays.
    c.stop(3);
    std::fs::rename(&old, &ledger).unwrap();
    c.cut(3, true);
    let l3 = c.start(3);
    assert!(before + 1 < top);
    // Alone, it gets back every height its WAL moved past (the last one's log is still the
    // WAL's current height: that one is decided again with the peers).
    c.wait_height(3, top - 1);
    c.cut(3, false);
    c.wait_height(3, top);
    assert_eq!(l3.store().head().unwrap().unwrap().hash, head.hash);
    assert_eq!(l3.state().objects.len(), 7);
    let ledgers: Vec<_> = (0..4).map(|i| c.get(i)).collect();
    assert_same_certified_chain(&ledgers);
}

/// A WAL at a height the ledger cannot reach (its ledger file was replaced or lost): the replica
/// may have voted at the heights in between, so it refuses to take part and says what to do.
#[test]
fn a_replica_whose_wal_is_ahead_of_its_ledger_refuses_to_start() {
    let c = Cluster::new(4);
    c.get(0).submit(apply_req("a", "a", 1), &caller()).unwrap();
    c.stop(3);
    let ledger = c.dirs[3].path().join("ledger.redb");
    let wal = ledger.with_extension("wal");
    std::fs::remove_file(&ledger).unwrap();
    std::fs::remove_file(&wal).unwrap();
    let mut w = crate::consensus::FileWal::open(&wal).unwrap();
    crate::consensus::Wal::reset(&mut w, 9).unwrap();
    crate::consensus::Wal::flush(&mut w).unwrap();
    drop(w);
    let l3 = c.start(3);
    let err = l3
        .submit(apply_req("b", "b", 1), &caller())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is at height 9 but the ledger") && err.contains("remove both files"),
        "{err}"
    );
    assert_eq!(l3.height(), 0, "nothing replayed, nothing decided");
}

#[test]
fn restarted_and_wiped_replicas_catch_up_and_a_minority_stands_still() {
    let mut c = Cluster::new(4);
    for k in 0..5 {
        let n = format!("x{k}");
        c.get(0).submit(apply_req(&n, &n, 1), &caller()).unwrap();
    }
    // Replica 3 goes down; three of four still decide.
    c.stop(3);
    for k in 0..5 {
        let n = format!("y{k}");
        c.get(1).submit(apply_req(&n, &n, 1), &caller()).unwrap();
    }
    let top = c.get(1).height();
    c.start(3);
    c.wait_height(3, top);
    // A wiped replica syncs from height 1.
    c.wipe(2);
    c.start(2);
    c.wait_height(2, top);
    let ledgers: Vec<_> = (0..4).map(|i| c.get(i)).collect();
    assert_same_certified_chain(&ledgers);
    assert_eq!(ledgers[2].state().objects.len(), 10);

    // Cut two replicas off: neither side has a quorum, nothing is decided.
    c.cut(0, true);
    c.cut(1, true);
    let l2 = c.get(2);
    let stuck = std::thread::spawn(move || l2.submit(apply_req("late", "late", 1), &caller()));
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..4 {
        assert_eq!(c.get(i).height(), top, "no quorum, no progress");
    }
    // Heal: the waiting request is decided and everyone converges.
    c.cut(0, false);
    c.cut(1, false);
    let h = stuck.join().unwrap().unwrap().height;
    for i in 0..4 {
        c.wait_height(i, h);
    }
    let ledgers: Vec<_> = (0..4).map(|i| c.get(i)).collect();
    assert_same_certified_chain(&ledgers);
}

#[test]
fn a_replica_added_by_a_membership_change_joins_and_a_removed_one_leaves() {
    let mut c = Cluster::new(4);
    c.dirs.push(tempdir());
    let add = signed(
        "add-r4",
        "user:a",
        vec![Op::AddValidator {
            validator: validator(4),
        }],
    );
    let at = c.get(0).submit(add, &caller()).unwrap().height;
    // The new replica starts empty, knows the cluster's genesis, and catches up.
    c.start(4);
    for k in 0..6 {
        let n = format!("m{k}");
        c.get(k % 4)
            .submit(apply_req(&n, &n, 1), &caller())
            .unwrap();
    }
    let top = c.get(0).height();
    assert!(top > at + super::MEMBERSHIP_DELAY);
    c.wait_height(4, top);
    assert_eq!(c.get(4).replication_status().unwrap().validators, 5);
    // r4 signs certificates now.
    let view = c.get(4).store().read().unwrap();
    let rec =
        super::batch::CertRecord::from_bytes(&view.certificate(top).unwrap().unwrap()).unwrap();
    drop(view);
    assert!(
        rec.cert.signatures.len() >= 4,
        "5 validators: a quorum is 4"
    );
    // Remove r0, then stop it: the four others go on.
    let rm = signed(
        "rm-r0",
        "user:a",
        vec![Op::RemoveValidator { name: "r0".into() }],
    );
    c.get(1).submit(rm, &caller()).unwrap();
    for k in 0..3 {
        let n = format!("n{k}");
        c.get(1 + k)
            .submit(apply_req(&n, &n, 1), &caller())
            .unwrap();
    }
    c.stop(0);
    for k in 0..4 {
        let n = format!("o{k}");
        c.get(1 + k)
            .submit(apply_req(&n, &n, 1), &caller())
            .unwrap();
    }
    // Each submit returned once its own replica decided it; another may still be behind.
    let top = (1..5).map(|i| c.get(i).height()).max().unwrap();
    for i in 1..5 {
        c.wait_height(i, top);
    }
    let ledgers: Vec<_> = (1..5).map(|i| c.get(i)).collect();
    assert_same_certified_chain(&ledgers);
    assert_eq!(c.get(2).replication_status().unwrap().validators, 4);
}

/// A retry whose request is decided just before the retry reads the state is answered with
/// that decision (a duplicate, at its height, with what it did), not as a request that changes
/// nothing.
#[test]
fn a_retry_decided_just_before_it_reads_the_state_is_a_duplicate() {
    let c = Cluster::new(1);
    let l = c.get(0);
    let req = apply_req("raced", "raced", 1);
    let first = Arc::new(std::sync::Mutex::new(None));
    {
        let (l, req, first) = (l.clone(), req.clone(), first.clone());
        crate::ledger::BEFORE_STATE_READ.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                // The same request through another thread, decided before this one goes on.
                let a = std::thread::spawn(move || l.submit(req, &caller()))
                    .join()
                    .unwrap()
                    .unwrap();
                *first.lock().unwrap() = Some(a);
            }))
        });
    }
    let retry = l.submit(req, &caller()).unwrap();
    let first = first.lock().unwrap().take().expect("the hook ran");
    assert!(!first.duplicate);
    assert_eq!(first.outcomes[0].action, Action::Created);
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(
        (retry.height, &retry.outcomes),
        (first.height, &first.outcomes)
    );
}
