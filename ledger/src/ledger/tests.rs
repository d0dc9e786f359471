//! Ledger front tests: submit semantics, signatures, retries, group commit under concurrency,
//! the sequencer seam, and reopening.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::plan::Action;
use crate::request::Op;
use crate::sequencer::{Decision, Proposal, SequencerError};
use crate::testutil::*;

fn test_clock() -> Clock {
    let t = Arc::new(AtomicU64::new(1_000));
    Arc::new(move || t.fetch_add(1, Ordering::Relaxed))
}

fn config() -> LedgerConfig {
    LedgerConfig {
        store: StoreConfig {
            snapshot_every: 50,
            cache_bytes: 16 << 20,
            ..StoreConfig::default()
        },
        ..LedgerConfig::default()
    }
}

fn open(path: &Path) -> Ledger {
    Ledger::open_with(path, config(), Box::new(SingleNode), test_clock()).unwrap()
}

fn caller(actor: &str, seed: u8) -> Caller {
    Caller {
        actor: actor.into(),
        public_key: signing_key(seed).verifying_key().to_bytes(),
    }
}

fn sign(id: &str, actor: &str, seed: u8, ops: Vec<Op>) -> SignedRequest {
    SignedRequest::sign(request(id, actor, ops), &signing_key(seed))
}

fn actions(a: &Applied) -> Vec<Action> {
    a.outcomes.iter().map(|o| o.action).collect()
}

#[test]
fn submit_reports_kubectl_outcomes_and_is_idempotent() {
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    let alice = caller("user:alice", 1);
    let a = l
        .submit(
            sign(
                "1",
                "user:alice",
                1,
                vec![apply(workload("a", 1)), apply(workload("b", 1))],
            ),
            &alice,
        )
        .unwrap();
    assert_eq!(
        (a.height, actions(&a)),
        (1, vec![Action::Created, Action::Created])
    );
    let a = l
        .submit(
            sign(
                "2",
                "user:alice",
                1,
                vec![apply(workload("a", 1)), apply(workload("b", 2))],
            ),
            &alice,
        )
        .unwrap();
    assert_eq!(
        (a.height, actions(&a)),
        (2, vec![Action::Unchanged, Action::Configured])
    );
    // Nothing changes: no entry, no event.
    let a = l
        .submit(
            sign(
                "3",
                "user:alice",
                1,
                vec![apply(workload("a", 1)), apply(workload("b", 2))],
            ),
            &alice,
        )
        .unwrap();
    assert_eq!(
        (a.height, actions(&a)),
        (2, vec![Action::Unchanged, Action::Unchanged])
    );
    assert_eq!(l.height(), 2);
    let b = l.get(&wkey("b")).unwrap();
    assert_eq!(
        (
            b.generation,
            b.resource_version,
            b.last_actor.as_str(),
            b.owner.as_str()
        ),
        (2, 2, "user:alice", "apply")
    );
    let a = l
        .submit(
            sign(
                "4",
                "user:alice",
                1,
                vec![Op::Delete {
                    key: wkey("a"),
                    if_version: Some(1),
                }],
            ),
            &alice,
        )
        .unwrap();
    assert_eq!(actions(&a), [Action::Deleted]);
    assert!(l.get(&wkey("a")).is_none());
}

#[test]
fn conflicts_and_failed_operations_write_nothing() {
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    let alice = caller("user:alice", 1);
    l.submit(
        sign("1", "user:alice", 1, vec![apply(workload("a", 1))]),
        &alice,
    )
    .unwrap();
    let err = l
        .submit(
            sign(
                "2",
                "user:alice",
                1,
                vec![Op::Apply {
                    object: workload("a", 2),
                    if_version: Some(7),
                }],
            ),
            &alice,
        )
        .unwrap_err();
    assert_eq!(
        err,
        SubmitError::Request(RequestError::Conflict {
            key: wkey("a"),
            expected: 7,
            current: Some(1)
        })
    );
    let err = l
        .submit(
            sign(
                "3",
                "user:alice",
                1,
                vec![
                    apply(workload("b", 1)),
                    Op::Delete {
                        key: wkey("nope"),
                        if_version: None,
                    },
                ],
            ),
            &alice,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        SubmitError::Request(RequestError::NotFound { .. })
    ));
    assert!(l.get(&wkey("b")).is_none(), "the whole request failed");
    assert_eq!(l.height(), 1);
    assert_eq!(l.store().head().unwrap().unwrap().height, 1);
}

#[test]
fn admission_refuses_before_anything_is_written() {
    struct NoEvil;
    impl crate::admission::Admission for NoEvil {
        fn admit(&self, state: &State, req: &SignedRequest) -> Result<(), String> {
            let evil = req.request.ops.iter().any(
                |op| matches!(op, Op::Apply { object, .. } if object["metadata"]["name"] == "evil"),
            );
            if evil {
                Err(format!("evil at height {}", state.height))
            } else {
                Ok(())
            }
        }
    }
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    l.set_admission(Arc::new(NoEvil));
    let alice = caller("user:alice", 1);
    l.submit(
        sign("1", "user:alice", 1, vec![apply(workload("a", 1))]),
        &alice,
    )
    .unwrap();
    let err = l
        .submit(
            sign("2", "user:alice", 1, vec![apply(workload("evil", 1))]),
            &alice,
        )
        .unwrap_err();
    assert_eq!(err, SubmitError::Refused("evil at height 1".into()));
    assert_eq!(l.height(), 1, "a refused request writes nothing");
    assert!(l.get(&wkey("evil")).is_none());
}

#[test]
fn signatures_are_checked_against_the_callers_certificate() {
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    let req = sign("1", "user:alice", 1, vec![apply(workload("a", 1))]);
    let err = l.submit(req.clone(), &caller("user:bob", 1)).unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Signature(SignatureError::ActorMismatch { .. })
        ),
        "{err}"
    );
    let err = l.submit(req.clone(), &caller("user:alice", 2)).unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Signature(SignatureError::KeyMismatch { .. })
        ),
        "{err}"
    );
    let mut forged = req.clone();
    forged.request.ops = vec![apply(workload("evil", 1))];
    let err = l.submit(forged, &caller("user:alice", 1)).unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Signature(SignatureError::BadSignature { .. })
        ),
        "{err}"
    );
    assert_eq!(l.height(), 0);
}

#[test]
fn a_retried_request_id_is_applied_once() {
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    let alice = caller("user:alice", 1);
    let req = sign("req-1", "user:alice", 1, vec![apply(workload("a", 1))]);
    let first = l.submit(req.clone(), &alice).unwrap();
    // Someone else changes the object; the retry must not revert it.
    l.submit(
        sign("other", "user:alice", 1, vec![apply(workload("a", 5))]),
        &alice,
    )
    .unwrap();
    let retry = l.submit(req.clone(), &alice).unwrap();
    assert_eq!(
        retry,
        Applied {
            duplicate: true,
            ..first.clone()
        }
    );
    assert_eq!(l.height(), 2);
    assert_eq!(l.get(&wkey("a")).unwrap().generation, 2);
    let err = l
        .submit(
            sign("req-1", "user:alice", 1, vec![apply(workload("zzz", 1))]),
            &alice,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Request(RequestError::RequestIdReused { .. })
        ),
        "{err}"
    );
    // Also after a restart.
    drop(l);
    let l = open(&dir.path().join("l.redb"));
    assert_eq!(
        l.submit(req, &alice).unwrap(),
        Applied {
            duplicate: true,
            ..first
        }
    );
}

#[test]
fn concurrent_submitters_share_entries() {
    let dir = tempdir();
    let l = Arc::new(open(&dir.path().join("l.redb")));
    let entries = l.subscribe();
    let threads = 8;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                let actor = format!("user:t{t}");
                let who = Caller {
                    actor: actor.clone(),
                    public_key: signing_key(t as u8 + 1).verifying_key().to_bytes(),
                };
                let mut heights = Vec::new();
                for i in 0..per_thread {
                    // Each thread creates its own objects and keeps updating a shared one.
                    let ops = vec![
                        apply(workload(&format!("t{t}-{i}"), 1)),
                        apply(workload("shared", (t * 1000 + i) as u64 + 1)),
                    ];
                    let a = l
                        .submit(sign(&format!("{t}-{i}"), &actor, t as u8 + 1, ops), &who)
                        .unwrap();
                    heights.push(a.height);
                }
                heights
            })
        })
        .collect();
    let mut all_heights = Vec::new();
    for h in handles {
        let heights = h.join().unwrap();
        assert!(
            heights.windows(2).all(|w| w[0] < w[1]),
            "each caller sees its own requests in order"
        );
        all_heights.extend(heights);
    }
    let total = threads * per_thread;
    let height = l.height();
    assert!(
        height < total as u64,
        "group commit: {height} entries for {total} requests"
    );
    let state = l.state().clone();
    assert_eq!(state.objects.len(), total + 1);
    assert_eq!(state.get(&wkey("shared")).unwrap().generation, total as u64);
    // The subscription saw every entry, in order, and the store folds to the same state.
    let seen: Vec<u64> = entries.try_iter().map(|e| e.height).collect();
    assert_eq!(seen, (1..=height).collect::<Vec<_>>());
    let (folded, _) = l.store().load_state().unwrap();
    assert_eq!(folded, state);
}

/// A sequencer that, like a BFT engine, decides another replica's value first: one foreign
/// request, and only the first of the proposed ones.
struct Foreign {
    foreign: Option<SignedRequest>,
}

impl Sequencer for Foreign {
    fn decide(&mut self, _height: u64, proposal: Proposal) -> Result<Decision, SequencerError> {
        let mut requests: Vec<SignedRequest> = self.foreign.take().into_iter().collect();
        requests.extend(proposal.requests.into_iter().take(1));
        Ok(Decision {
            requests,
            timestamp_ms: proposal.timestamp_ms,
            certificate: Some(b"cert".to_vec()),
        })
    }
}

#[test]
fn the_sequencer_seam_requeues_undecided_requests() {
    let dir = tempdir();
    let foreign = sign(
        "f",
        "user:zed",
        9,
        vec![apply(workload("from-elsewhere", 1))],
    );
    let l = Arc::new(
        Ledger::open_with(
            dir.path().join("l.redb"),
            config(),
            Box::new(Foreign {
                foreign: Some(foreign),
            }),
            test_clock(),
        )
        .unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let l = l.clone();
            std::thread::spawn(move || {
                l.submit(
                    sign(
                        &format!("r{i}"),
                        "user:alice",
                        1,
                        vec![apply(workload(&format!("w{i}"), 1))],
                    ),
                    &caller("user:alice", 1),
                )
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = l.state().clone();
    assert_eq!(s.objects.len(), 5);
    assert_eq!(
        s.get(&wkey("from-elsewhere")).unwrap().last_actor,
        "user:zed"
    );
    assert!(s.height >= 4);
    assert_eq!(l.store().certificate(1).unwrap(), Some(b"cert".to_vec()));
}

#[test]
fn reopening_after_drop_restores_state() {
    let dir = tempdir();
    let path = dir.path().join("l.redb");
    let before = {
        let l = open(&path);
        let alice = caller("user:alice", 1);
        for i in 0..120u64 {
            l.submit(
                sign(
                    &format!("{i}"),
                    "user:alice",
                    1,
                    vec![apply(workload(&format!("w{}", i % 7), i + 1))],
                ),
                &alice,
            )
            .unwrap();
        }
        l.state().clone()
    };
    let l = open(&path);
    assert_eq!(*l.state(), before);
    assert_eq!(l.load_report().snapshot_height, Some(100));
    assert_eq!(l.load_report().replayed, 20);
}

/// Set in the child process of [`acknowledged_applies_survive_kill_9`].
const CRASH_ENV: &str = "NEXUS_LEDGER_CRASH_CHILD";

/// Only does something as the child of the crash test: submits from 4 threads until killed,
/// printing `ACK <actor> <id> <height>` after each acknowledgement.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CRASH_ENV) else {
        return;
    };
    let l = Arc::new(Ledger::open(&path, config()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let (l, out) = (l.clone(), out.clone());
            std::thread::spawn(move || {
                let actor = format!("user:c{t}");
                let who = Caller {
                    actor: actor.clone(),
                    public_key: signing_key(t + 1).verifying_key().to_bytes(),
                };
                for i in 0u64.. {
                    let ops = vec![apply(workload(&format!("c{t}-{}", i % 50), i + 1))];
                    let a = l
                        .submit(sign(&format!("{t}-{i}"), &actor, t + 1, ops), &who)
                        .unwrap();
                    use std::io::Write;
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {actor} {t}-{i} {}", a.height).unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn acknowledged_applies_survive_kill_9() {
    use std::io::BufRead;
    let dir = tempdir();
    let path = dir.path().join("l.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ledger::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["ACK", actor, id, height] = parts[..] {
            acked.push((
                actor.to_string(),
                id.to_string(),
                height.parse::<u64>().unwrap(),
            ));
        }
        if acked.len() == 300 {
            child.kill().unwrap(); // SIGKILL: no clean shutdown
            break;
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 300, "the child stopped early");

    let l = open(&path);
    for (actor, id, height) in &acked {
        let rec = l
            .store()
            .request_record(actor, id)
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {actor} {id} is missing"));
        assert_eq!(rec.height, *height);
    }
    // The state equals a full fold of the log, and the chain links.
    let mut full = State::new();
    let head = l.store().head().unwrap().unwrap();
    for h in 1..=head.height {
        full.apply_entry(&l.store().entry(h).unwrap().unwrap())
            .unwrap();
    }
    assert_eq!(*l.state(), full);
    // And it keeps working.
    let a = l
        .submit(
            sign("after", "user:c0", 1, vec![apply(workload("after", 1))]),
            &caller("user:c0", 1),
        )
        .unwrap();
    assert_eq!(a.height, head.height + 1);
}

/// A signed request with an invalid object (as a client that skips the CLI's validation would
/// send it) is refused with the object, the field and the fix; nothing is written, and the
/// request id stays free.
#[test]
fn invalid_objects_are_refused_and_nothing_is_written() {
    let dir = tempdir();
    let l = open(&dir.path().join("l.redb"));
    let alice = caller("user:alice", 1);
    l.submit(
        sign("0", "user:alice", 1, vec![apply(workload("a", 1))]),
        &alice,
    )
    .unwrap();
    let before = (l.height(), l.state().objects.clone());
    let mut bad = workload("b", 1);
    bad["spec"]["ports"] = serde_json::json!([{"port": 70000}]);
    let ops = vec![apply(workload("c", 1)), apply(bad)];
    let err = l
        .submit(sign("1", "user:alice", 1, ops.clone()), &alice)
        .unwrap_err();
    let SubmitError::Request(RequestError::InvalidObject {
        op,
        object,
        problems,
        ..
    }) = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*op, object.as_ref()), (1, Some(&wkey("b"))));
    assert_eq!(problems[0].path, "spec.ports[0].port");
    let text = err.to_string();
    assert!(
        text.starts_with("Workload default/b (operation 1) is not a valid nexus/v1 object")
            && text.contains("spec.ports[0].port must be between 1 and 65535, found 70000")
            && text.contains("help: "),
        "{text}"
    );
    assert_eq!((l.height(), l.state().objects.clone()), before);
    assert_eq!(l.store().head().unwrap().map(|h| h.height), Some(before.0));
    assert!(
        l.store()
            .request_record("user:alice", "1")
            .unwrap()
            .is_none()
    );
    // Dry runs say the same.
    let dry = l.dry_run(&request("2", "user:alice", ops)).unwrap_err();
    assert!(matches!(dry, RequestError::InvalidObject { op: 1, .. }));
}

/// `try_state` answers at once: the state when nothing folds into it, `None` while an entry
/// is being folded (the write lock is held), never waiting for it.
#[test]
fn try_state_does_not_wait_for_a_fold() {
    let dir = tempdir();
    let ledger = open(&dir.path().join("l.redb"));
    assert_eq!(ledger.try_state().map(|s| s.height), Some(ledger.height()));
    let folding = ledger.state.write().unwrap();
    assert!(ledger.try_state().is_none());
    drop(folding);
    assert!(ledger.try_state().is_some());
}
