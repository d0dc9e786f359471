//! Audit tests: queries through each index, history with diffs, and verification finding
//! tampering, broken links, bad signatures and missing entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus_schemas::Kind;
use redb::ReadableTable;

use super::*;
use crate::entry::{EntryHash, build_entry};
use crate::event::{Event, EventBody};
use crate::ledger::{Caller, Clock, Ledger, LedgerConfig};
use crate::plan::Action;
use crate::request::RequestHead;
use crate::request::{Op, SignedRequest, Source};
use crate::sequencer::SingleNode;
use crate::store::{Commit, EVENTS, HEADERS, REQUEST_HEADS, REQUESTS, Store, StoreConfig};
use crate::testutil::*;

fn git(commit: &str) -> Source {
    Source::Gitops {
        git_source: "default/apps".into(),
        repo: "/srv/apps.git".into(),
        commit: commit.into(),
        tree: "t".into(),
        author: "Ann".into(),
        committer: "Ann".into(),
        message: "deploy".into(),
        claim: String::new(),
        forced_over: None,
    }
}

/// Submits from several actors and sources; entry `h` has timestamp `1000 + h - 1`.
fn populated() -> (tempfile::TempDir, Ledger) {
    let dir = tempdir();
    let t = Arc::new(AtomicU64::new(1000));
    let clock: Clock = Arc::new(move || t.fetch_add(1, Ordering::Relaxed));
    let l = Ledger::open_with(
        dir.path().join("l.redb"),
        LedgerConfig::default(),
        Box::new(SingleNode),
        clock,
    )
    .unwrap();
    let submit = |id: &str, actor: &str, seed: u8, source: Source, ops: Vec<Op>| {
        let mut r = request(id, actor, ops);
        r.source = source;
        let who = Caller {
            actor: actor.into(),
            public_key: signing_key(seed).verifying_key().to_bytes(),
        };
        l.submit(SignedRequest::sign(r, &signing_key(seed)), &who)
            .unwrap()
    };
    submit(
        "1",
        "user:alice",
        1,
        Source::Cli,
        vec![apply(workload("api", 1)), apply(workload("db", 1))],
    ); // h1
    submit(
        "2",
        "user:bob",
        2,
        Source::Cli,
        vec![apply(workload("api", 2))],
    ); // h2
    submit(
        "3",
        "replica:git",
        3,
        git("abc123def"),
        vec![apply(workload("web", 1)), apply(workload("api", 3))],
    ); // h3
    submit(
        "4",
        "controller:sched",
        4,
        Source::Controller {
            name: "sched".into(),
        },
        vec![apply(workload("db", 2))],
    ); // h4
    submit(
        "5",
        "user:alice",
        1,
        Source::Cli,
        vec![Op::Delete {
            key: wkey("api"),
            if_version: None,
        }],
    ); // h5
    submit(
        "6",
        "replica:git",
        3,
        git("fff000"),
        vec![apply(workload("api", 1))],
    ); // h6
    (dir, l)
}

fn ids(records: &[AuditRecord]) -> Vec<(u64, u32)> {
    records.iter().map(|r| (r.id.height, r.id.index)).collect()
}

fn run(l: &Ledger, q: AuditQuery) -> Vec<AuditRecord> {
    query(&l.store().read().unwrap(), &q).unwrap()
}

fn obj(name: &str) -> AuditQuery {
    AuditQuery {
        kind: Some(Kind::Workload),
        namespace: Some("default".into()),
        name: Some(name.into()),
        ..AuditQuery::default()
    }
}

#[test]
fn queries_by_object_actor_source_commit_and_time() {
    let (_d, l) = populated();
    assert_eq!(
        ids(&run(&l, obj("api"))),
        [(1, 0), (2, 0), (3, 1), (5, 0), (6, 0)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                limit: Some(2),
                ..obj("api")
            }
        )),
        [(5, 0), (6, 0)],
        "the most recent, oldest first"
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                actor: Some("user:alice".into()),
                ..AuditQuery::default()
            }
        )),
        [(1, 0), (1, 1), (5, 0)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                source_type: Some("gitops".into()),
                ..AuditQuery::default()
            }
        )),
        [(3, 0), (3, 1), (6, 0)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                source_type: Some("controller".into()),
                ..AuditQuery::default()
            }
        )),
        [(4, 0)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                commit: Some("abc1".into()),
                ..AuditQuery::default()
            }
        )),
        [(3, 0), (3, 1)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                commit: Some("fff000".into()),
                ..AuditQuery::default()
            }
        )),
        [(6, 0)]
    );
    assert!(
        run(
            &l,
            AuditQuery {
                commit: Some("0000".into()),
                ..AuditQuery::default()
            }
        )
        .is_empty()
    );
    // Time: entry h has time 999 + h.
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                since_ms: Some(1002),
                until_ms: Some(1003),
                ..AuditQuery::default()
            }
        )),
        [(3, 0), (3, 1), (4, 0)]
    );
    assert!(
        run(
            &l,
            AuditQuery {
                since_ms: Some(5000),
                ..AuditQuery::default()
            }
        )
        .is_empty()
    );
    assert!(
        run(
            &l,
            AuditQuery {
                until_ms: Some(10),
                ..AuditQuery::default()
            }
        )
        .is_empty()
    );
    // Combined filters and a kind-only scan.
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                actor: Some("replica:git".into()),
                name: Some("api".into()),
                ..AuditQuery::default()
            }
        )),
        [(3, 1), (6, 0)]
    );
    assert_eq!(
        ids(&run(
            &l,
            AuditQuery {
                actor: Some("user:alice".into()),
                since_ms: Some(1001),
                ..AuditQuery::default()
            }
        )),
        [(5, 0)]
    );
    assert_eq!(
        run(
            &l,
            AuditQuery {
                kind: Some(Kind::Workload),
                ..AuditQuery::default()
            }
        )
        .len(),
        8
    );
    assert!(
        run(
            &l,
            AuditQuery {
                kind: Some(Kind::Service),
                ..AuditQuery::default()
            }
        )
        .is_empty()
    );
    // Paging backwards with a cursor.
    let page1 = run(
        &l,
        AuditQuery {
            limit: Some(3),
            ..AuditQuery::default()
        },
    );
    assert_eq!(ids(&page1), [(4, 0), (5, 0), (6, 0)]);
    let page2 = run(
        &l,
        AuditQuery {
            limit: Some(3),
            before: Some(page1[0].id),
            ..AuditQuery::default()
        },
    );
    assert_eq!(ids(&page2), [(2, 0), (3, 0), (3, 1)]);
}

#[test]
fn records_carry_who_when_and_where() {
    let (_d, l) = populated();
    let r = &run(
        &l,
        AuditQuery {
            commit: Some("abc".into()),
            limit: Some(1),
            ..AuditQuery::default()
        },
    )[0];
    assert_eq!(
        (r.actor.as_str(), r.request_id.as_str(), r.timestamp_ms),
        ("replica:git", "3", 1002)
    );
    assert_eq!(r.source.commit(), Some("abc123def"));
    let j = r.to_json();
    assert_eq!(j["type"], "object_applied");
    assert_eq!(j["name"], "api");
    assert_eq!(j["generation"], 3);
    assert_eq!(j["source"]["type"], "gitops");
    assert_eq!(j["source"]["commit"], "abc123def");
    assert_eq!(j["object"]["spec"]["replicas"], 3);
    assert_eq!(j["content_hash"].as_str().unwrap().len(), 64);
}

#[test]
fn history_shows_every_version_with_diffs() {
    let (_d, l) = populated();
    let view = l.store().read().unwrap();
    let h = history(&view, &wkey("api"), None).unwrap();
    let summary: Vec<(u64, Action, u64, &str)> = h
        .iter()
        .map(|v| (v.id.height, v.action, v.generation, v.actor.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, Action::Created, 1, "user:alice"),
            (2, Action::Configured, 2, "user:bob"),
            (3, Action::Configured, 3, "replica:git"),
            (5, Action::Deleted, 3, "user:alice"),
            (6, Action::Created, 1, "replica:git")
        ]
    );
    assert_eq!(h[1].changes.len(), 1);
    assert_eq!(h[1].changes[0].path, "spec.replicas");
    assert_eq!(
        (h[1].changes[0].old.clone(), h[1].changes[0].new.clone()),
        (Some(1.into()), Some(2.into()))
    );
    assert!(h[3].object.is_none());
    let last2 = history(&view, &wkey("api"), Some(2)).unwrap();
    assert_eq!(
        last2.iter().map(|v| v.id.height).collect::<Vec<_>>(),
        [5, 6]
    );
    let limited = history(&view, &wkey("api"), Some(4)).unwrap();
    assert_eq!(
        limited[0].changes, h[1].changes,
        "the first returned version is still diffed"
    );
    assert!(history(&view, &wkey("nothing"), None).unwrap().is_empty());
}

/// Rewrites one stored value through redb.
fn tamper<K: redb::Key + 'static>(
    store: &Store,
    table: redb::TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    f: impl FnOnce(&mut Vec<u8>),
) {
    let txn = store.db().begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        let mut bytes = t.get(&key).unwrap().unwrap().value().to_vec();
        f(&mut bytes);
        t.insert(&key, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

fn problem(store: &Store) -> Option<Problem> {
    let r = verify(store).unwrap();
    r.problem
}

#[test]
fn verify_accepts_an_intact_chain() {
    let (_d, l) = populated();
    let r = verify(l.store()).unwrap();
    assert!(r.is_ok(), "{:?}", r.problem);
    assert_eq!((r.entries, r.requests, r.events), (6, 6, 8));
    for threads in [1, 2, 5, 16] {
        let r = verify_with(
            l.store(),
            &VerifyOptions {
                threads,
                indexes: threads != 2,
                ..VerifyOptions::default()
            },
        )
        .unwrap();
        assert!(r.is_ok() && r.entries == 6, "{threads} threads: {r:?}");
    }
    let at4 = l.store().entry(4).unwrap().unwrap().hash;
    let r = verify_with(
        l.store(),
        &VerifyOptions {
            up_to: Some(4),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(r.is_ok() && r.entries == 4, "{r:?}");
    assert_eq!(r.head.map(|h| (h.height, h.hash)), Some((4, at4)));
    let empty_dir = tempdir();
    let empty = Store::open(empty_dir.path().join("e.redb"), StoreConfig::default()).unwrap();
    assert!(verify(&empty).unwrap().is_ok());
}

#[test]
fn verify_names_the_height_of_a_flipped_byte() {
    let (_d, l) = populated();
    // An object inside an event of entry 3.
    tamper(l.store(), EVENTS, (3u64, 1u32), |b| {
        let n = b.len();
        b[n - 10] ^= 0x01;
    });
    let p = problem(l.store()).unwrap();
    assert!(matches!(p, Problem::HashMismatch { height: 3, .. }), "{p}");
    assert!(p.to_string().starts_with("entry 3: hash mismatch"), "{p}");
}

#[test]
fn verify_reports_broken_links_and_missing_entries() {
    let (_d, l) = populated();
    tamper(l.store(), HEADERS, 4u64, |b| b[9] ^= 0xff); // prev_hash
    assert!(matches!(
        problem(l.store()),
        Some(Problem::BrokenLink { height: 4, .. })
    ));
    let (_d, l) = populated();
    tamper(l.store(), HEADERS, 2u64, |b| b.truncate(10));
    assert!(matches!(
        problem(l.store()),
        Some(Problem::Undecodable { height: 2, .. })
    ));
    let (_d, l) = populated();
    {
        let txn = l.store().db().begin_write().unwrap();
        txn.open_table(HEADERS).unwrap().remove(5u64).unwrap();
        txn.commit().unwrap();
    }
    let p = problem(l.store()).unwrap();
    assert_eq!(p.height(), 5, "{p}");
}

#[test]
fn verify_catches_an_audit_head_row_that_names_another_actor() {
    let (_d, l) = populated();
    tamper(l.store(), REQUEST_HEADS, (2u64, 0u32), |b| {
        let head = RequestHead::from_bytes(b).unwrap();
        assert_eq!(head.actor, "user:bob");
        *b = RequestHead {
            actor: "user:mallory".into(),
            ..head
        }
        .to_bytes();
    });
    // Audit output reads the row (that is what makes it fast); verify holds it to the record.
    assert_eq!(run(&l, obj("api"))[1].actor, "user:mallory");
    let p = problem(l.store()).unwrap();
    assert!(
        matches!(p, Problem::Inconsistent { height: 2, .. })
            && p.to_string().contains("audit index row of request 0"),
        "{p}"
    );
}

#[test]
fn verify_catches_index_rows_removed_or_altered_beside_the_chain() {
    use crate::store::{BY_ACTOR, BY_COMMIT, BY_OBJECT, BY_TIME};
    // Each case removes or alters one row of entry 3 (a GitOps apply of `api` by replica:git)
    // that a query by object, actor, commit or time goes through.
    type Edit = Box<dyn Fn(&redb::WriteTransaction)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "object index",
            Box::new(|txn| {
                let mut t = txn.open_table(BY_OBJECT).unwrap();
                t.retain(|k, _| k.3 != 3).unwrap();
            }),
        ),
        (
            "actor index",
            Box::new(|txn| {
                let mut t = txn.open_table(BY_ACTOR).unwrap();
                t.insert(("replica:git", 3u64, 0u32), (0u32, 0u32)).unwrap();
            }),
        ),
        (
            "commit index",
            Box::new(|txn| {
                let mut t = txn.open_table(BY_COMMIT).unwrap();
                t.retain(|k, _| k.1 != 3).unwrap();
            }),
        ),
        (
            "time index",
            Box::new(|txn| {
                let mut t = txn.open_table(BY_TIME).unwrap();
                t.retain(|k, _| k.1 != 3).unwrap();
            }),
        ),
    ];
    for (what, edit) in cases {
        let (_d, l) = populated();
        let txn = l.store().db().begin_write().unwrap();
        edit(&txn);
        txn.commit().unwrap();
        assert!(
            problem(l.store()).is_none(),
            "{what}: indexes are checked on request only"
        );
        let opts = VerifyOptions {
            indexes: true,
            ..VerifyOptions::default()
        };
        let p = verify_with(l.store(), &opts)
            .unwrap()
            .problem
            .unwrap_or_else(|| panic!("{what}: not detected"));
        assert!(
            p.height() == 3 && p.to_string().contains(what),
            "{what}: {p}"
        );
    }
}

#[test]
fn stores_without_audit_head_rows_fall_back_and_get_them_on_open() {
    let (d, l) = populated();
    let all = run(&l, AuditQuery::default());
    assert_eq!(all.len(), 8);
    let clear = |store: &Store| {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(REQUEST_HEADS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.commit().unwrap();
    };
    clear(l.store());
    // Without the rows, queries read the signed records and give the same answer; verify
    // names the first request without its row.
    assert_eq!(run(&l, AuditQuery::default()), all);
    let p = problem(l.store()).unwrap();
    assert!(
        p.height() == 1 && p.to_string().contains("row of request 0 is missing"),
        "{p}"
    );
    drop(l);
    let store = Store::open(d.path().join("l.redb"), StoreConfig::default()).unwrap();
    assert!(verify(&store).unwrap().is_ok(), "rows rebuilt on open");
    let view = store.read().unwrap();
    assert_eq!(query(&view, &AuditQuery::default()).unwrap(), all);
}

#[test]
fn verify_detects_a_forged_signature_under_a_valid_hash() {
    // A Byzantine writer builds a well-formed entry around a request alice never signed.
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap();
    let mut state = crate::state::State::new();
    commit_requests(
        &store,
        &mut state,
        1,
        vec![signed("1", "user:alice", vec![apply(workload("a", 1))])],
    );
    let mut forged = signed("2", "user:alice", vec![apply(workload("b", 1))]);
    forged.request.ops = vec![apply(workload("evil", 1))];
    let ex = crate::execute::execute(&state, std::slice::from_ref(&forged));
    let commit = ex.into_commit(state.head_hash, 2, 2, None).unwrap();
    store.append(&[commit]).unwrap();
    assert!(matches!(
        problem(&store),
        Some(Problem::BadSignature {
            height: 2,
            request: 0,
            ..
        })
    ));
    // A key policy catches a request signed with a key that is not the actor's.
    let only_seed_2 = |_: &str, key: &[u8; 32]| *key == signing_key(2).verifying_key().to_bytes();
    let r = verify_with(
        &store,
        &VerifyOptions {
            trusted_key: Some(&only_seed_2),
            signatures: false,
            threads: 1,
            up_to: None,
            indexes: true,
        },
    )
    .unwrap();
    assert!(
        matches!(r.problem, Some(Problem::UntrustedKey { height: 1, .. })),
        "{:?}",
        r.problem
    );
}

#[test]
fn verify_catches_rows_that_do_not_match_the_header() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap();
    let mut state = crate::state::State::new();
    commit_requests(
        &store,
        &mut state,
        1,
        vec![signed("1", "u", vec![apply(workload("a", 1))])],
    );
    commit_requests(
        &store,
        &mut state,
        2,
        vec![signed("2", "u", vec![apply(workload("b", 1))])],
    );
    // An extra event row in entry 1.
    {
        let txn = store.db().begin_write().unwrap();
        let extra = Event {
            request: 0,
            body: EventBody::ObjectDeleted {
                key: wkey("a"),
                generation: 1,
            },
        }
        .to_bytes();
        txn.open_table(EVENTS)
            .unwrap()
            .insert((1u64, 1u32), extra.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let p = problem(&store).unwrap();
    assert_eq!(p.height(), 1, "{p}");
    // A request row removed from entry 2.
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap();
    let mut state = crate::state::State::new();
    commit_requests(
        &store,
        &mut state,
        1,
        vec![signed("1", "u", vec![apply(workload("a", 1))])],
    );
    commit_requests(
        &store,
        &mut state,
        2,
        vec![signed("2", "u", vec![apply(workload("b", 1))])],
    );
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(REQUESTS)
            .unwrap()
            .remove((2u64, 0u32))
            .unwrap();
        txn.commit().unwrap();
    }
    assert_eq!(problem(&store).unwrap().height(), 2);
}

#[test]
fn verify_finds_a_byte_flipped_in_the_raw_file() {
    let dir = tempdir();
    let path = dir.path().join("l.redb");
    {
        let store = Store::open(&path, StoreConfig::default()).unwrap();
        let mut state = crate::state::State::new();
        for i in 1..=5u64 {
            let mut w = workload(&format!("w{i}"), 1);
            if i == 4 {
                w["metadata"]["labels"] = serde_json::json!({"marker": "zqxjkvw"});
            }
            commit_requests(
                &store,
                &mut state,
                i,
                vec![signed(&i.to_string(), "u", vec![apply(w)])],
            );
        }
    }
    // Flip a byte in every copy of the marker (request and event rows, live or not).
    let mut bytes = std::fs::read(&path).unwrap();
    let marker = b"zqxjkvw";
    let mut flipped = 0;
    for i in 0..bytes.len() - marker.len() {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i + 3] = b'J';
            flipped += 1;
        }
    }
    assert!(flipped >= 2, "marker found {flipped} times");
    std::fs::write(&path, &bytes).unwrap();
    let store = Store::open(&path, StoreConfig::default()).unwrap();
    let p = problem(&store).unwrap();
    assert!(matches!(p, Problem::HashMismatch { height: 4, .. }), "{p}");
}

#[test]
fn verify_reports_entries_appended_with_a_bad_request_index() {
    // build_entry refuses bad indexes, so write the rows of a hand-made entry directly.
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap();
    let req = signed("1", "u", vec![apply(workload("a", 1))]);
    let good = build_entry(EntryHash::ZERO, 1, 1, vec![req.clone()], vec![]).unwrap();
    store
        .append(&[Commit {
            entry: Arc::new(good.clone()),
            certificate: None,
            outcomes: vec![vec![]],
            errors: vec![],
            encoded: None,
        }])
        .unwrap();
    let mut bad = good.encode();
    bad.events.push(
        Event {
            request: 3,
            body: EventBody::ObjectDeleted {
                key: wkey("a"),
                generation: 1,
            },
        }
        .to_bytes(),
    );
    bad.header.n_events = 1;
    let mut hasher = bad.header.hasher();
    bad.requests
        .iter()
        .chain(bad.events.iter())
        .for_each(|r| hasher.record(r));
    bad.header.hash = hasher.finish();
    {
        let txn = store.db().begin_write().unwrap();
        txn.open_table(HEADERS)
            .unwrap()
            .insert(1u64, bad.header.to_bytes().as_slice())
            .unwrap();
        txn.open_table(EVENTS)
            .unwrap()
            .insert((1u64, 0u32), bad.events[0].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let p = problem(&store).unwrap();
    assert!(matches!(p, Problem::Inconsistent { height: 1, .. }), "{p}");
}

/// Six signed applies by alice, with ids "0" to "5".
fn six_applies() -> Vec<SignedRequest> {
    (0..6)
        .map(|i| {
            signed(
                &i.to_string(),
                "user:alice",
                vec![apply(workload(&format!("w{i}"), 1))],
            )
        })
        .collect()
}

/// What `audit verify` finds in a store holding `requests` as entry 1, bypassing admission.
fn problem_of_one_entry(requests: &[SignedRequest]) -> Option<Problem> {
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), StoreConfig::default()).unwrap();
    let ex = crate::execute::execute(&crate::state::State::new(), requests);
    store
        .append(&[ex.into_commit(EntryHash::ZERO, 1, 1, None).unwrap()])
        .unwrap();
    problem(&store)
}

#[test]
fn verify_finds_the_forged_request_inside_a_batch() {
    let mut requests = six_applies();
    requests[4].request.ops = vec![apply(workload("evil", 1))];
    let p = problem_of_one_entry(&requests).unwrap();
    assert!(
        matches!(p, Problem::BadSignature { height: 1, request: 4, ref id } if id == "4"),
        "{p}"
    );
}

/// A signature by `key` over `req` whose `R` is the identity point and whose `s` is `k·a`: the
/// equation `[s]B = R + [k]A` holds, so a batch check passes it, but `R` has small order, which
/// strict verification (what a replica admits by) refuses.
fn small_order_r_signature(req: &crate::Request, key: &ed25519_dalek::SigningKey) -> [u8; 64] {
    use sha2_11::{Digest, Sha512};
    let mut r = [0u8; 32];
    r[0] = 1; // the identity (y = 1), compressed
    let a = key.verifying_key().to_bytes();
    let h = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(req.signing_bytes())
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h);
    let k = curve25519_dalek::Scalar::from_bytes_mod_order_wide(&wide);
    let s = k * key.to_scalar();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

#[test]
fn verify_refuses_a_signature_only_a_batch_check_accepts() {
    let key = signing_key(1);
    let mut requests = six_applies();
    requests[3].signature = small_order_r_signature(&requests[3].request, &key);
    // The ledger's own rule refuses it; a batch of the six accepts it.
    assert!(requests[3].verify().is_err());
    let messages: Vec<Vec<u8>> = requests.iter().map(|r| r.request.signing_bytes()).collect();
    let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = requests
        .iter()
        .map(|r| ed25519_dalek::Signature::from_bytes(&r.signature))
        .collect();
    let keys = vec![key.verifying_key(); requests.len()];
    assert!(ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok());

    let p = problem_of_one_entry(&requests).unwrap();
    assert!(
        matches!(p, Problem::BadSignature { height: 1, request: 3, ref id } if id == "3"),
        "{p}"
    );
}
