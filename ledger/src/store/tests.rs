//! Store tests: durable append, refusal of entries that do not extend the log, certificates,
//! retry records, and snapshots.

use super::*;
use crate::entry::build_entry;
use crate::execute::execute;
use crate::request::Op;
use crate::testutil::*;

fn config(snapshot_every: u64) -> StoreConfig {
    StoreConfig {
        snapshot_every,
        cache_bytes: 16 << 20,
        ..StoreConfig::default()
    }
}

#[test]
fn append_and_reopen() {
    let dir = tempdir();
    let path = dir.path().join("l.redb");
    let mut state = State::new();
    let (e1, e2) = {
        let store = Store::open(&path, config(0)).unwrap();
        assert_eq!(store.head().unwrap(), None);
        let e1 = commit_requests(
            &store,
            &mut state,
            10,
            vec![signed(
                "1",
                "user:a",
                vec![apply(workload("a", 1)), apply(workload("b", 1))],
            )],
        );
        let e2 = commit_requests(
            &store,
            &mut state,
            20,
            vec![signed(
                "2",
                "user:b",
                vec![Op::Delete {
                    key: wkey("a"),
                    if_version: None,
                }],
            )],
        );
        (e1, e2)
    };
    let store = Store::open(&path, config(0)).unwrap();
    assert_eq!(
        store.head().unwrap(),
        Some(Head {
            height: 2,
            hash: e2.hash,
            timestamp_ms: 20
        })
    );
    assert_eq!(store.entry(1).unwrap().unwrap(), e1);
    assert_eq!(store.entry(2).unwrap().unwrap(), e2);
    assert_eq!(store.entry(3).unwrap(), None);
    let (loaded, report) = store.load_state().unwrap();
    assert_eq!(loaded, state);
    assert_eq!(report.replayed, 2);
    let rec = store.request_record("user:a", "1").unwrap().unwrap();
    assert_eq!((rec.height, rec.index, rec.outcomes.len()), (1, 0, 2));
    assert_eq!(rec.digest, e1.requests[0].request.digest());
    assert_eq!(
        store.request_record("user:b", "1").unwrap(),
        None,
        "ids are scoped by actor"
    );
}

#[test]
fn entries_that_do_not_extend_the_log_are_refused_whole() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), config(0)).unwrap();
    let mut state = State::new();
    let e1 = commit_requests(
        &store,
        &mut state,
        10,
        vec![signed("1", "u", vec![apply(workload("a", 1))])],
    );
    let good = execute(&state, &[signed("2", "u", vec![apply(workload("b", 1))])])
        .into_commit(e1.hash, 2, 11, None)
        .unwrap();
    let outcomes = good.outcomes.clone();
    let make = |prev, h, ts| Commit {
        entry: Arc::new(
            build_entry(
                prev,
                h,
                ts,
                good.entry.requests.clone(),
                good.entry.events.clone(),
            )
            .unwrap(),
        ),
        certificate: None,
        outcomes: outcomes.clone(),
        errors: vec![],
        encoded: None,
    };
    let cases = vec![
        (make(e1.hash, 3, 11), "log ends at height 1"),
        (make(EntryHash([3; 32]), 2, 11), "links to"),
        (make(e1.hash, 2, 9), "before the previous"),
    ];
    for (c, needle) in cases {
        let err = store.append(&[c]).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let mut tampered = good.clone();
    Arc::make_mut(&mut tampered.entry).timestamp_ms += 1;
    assert!(matches!(
        store.append(&[tampered]),
        Err(StoreError::HashMismatch { height: 2 })
    ));
    let mut no_outcomes = good.clone();
    no_outcomes.outcomes.clear();
    assert!(matches!(
        store.append(&[no_outcomes]),
        Err(StoreError::Outcomes { .. })
    ));
    // A good entry followed by a bad one: neither is written.
    let bad_second = make(good.entry.hash, 4, 12);
    assert!(store.append(&[good.clone(), bad_second]).is_err());
    assert_eq!(store.head().unwrap().unwrap().height, 1);
    // The same request id again is refused by the store as well.
    store.append(std::slice::from_ref(&good)).unwrap();
    let again = execute(
        &State::new(),
        &[signed("2", "u", vec![apply(workload("z", 1))])],
    )
    .into_commit(good.entry.hash, 3, 12, None)
    .unwrap();
    assert!(matches!(
        store.append(&[again]),
        Err(StoreError::DuplicateRequest { height: 3, .. })
    ));
}

#[test]
fn several_entries_in_one_transaction_and_certificates() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), config(0)).unwrap();
    let mut state = State::new();
    let mut commits = Vec::new();
    for i in 0..5u64 {
        let ex = execute(
            &state,
            &[signed(
                &format!("r{i}"),
                "u",
                vec![apply(workload(&format!("w{i}"), 1))],
            )],
        );
        let c = ex
            .into_commit(
                state.head_hash,
                state.height + 1,
                100 + i,
                Some(vec![i as u8; 3]),
            )
            .unwrap();
        state.apply_entry(&c.entry).unwrap();
        commits.push(c);
    }
    store.append(&commits).unwrap();
    assert_eq!(store.head().unwrap().unwrap().height, 5);
    assert_eq!(store.certificate(3).unwrap(), Some(vec![2, 2, 2]));
    store.set_certificate(3, b"later").unwrap();
    assert_eq!(store.certificate(3).unwrap(), Some(b"later".to_vec()));
    assert!(matches!(
        store.set_certificate(9, b"x"),
        Err(StoreError::Missing { height: 9 })
    ));
    let range = store.read().unwrap().entries(2, 4).unwrap();
    assert_eq!(
        range.iter().map(|(e, _)| e.height).collect::<Vec<_>>(),
        [2, 3, 4]
    );
}

#[test]
fn snapshot_and_reopen_equals_full_replay() {
    let dir = tempdir();
    let snap_path = dir.path().join("snap.redb");
    let full_path = dir.path().join("full.redb");
    let snapped = Store::open(&snap_path, config(4)).unwrap();
    let full = Store::open(&full_path, config(0)).unwrap();
    let mut state = State::new();
    for i in 0..10u64 {
        let reqs = vec![signed(
            &format!("r{i}"),
            "user:a",
            vec![
                apply(workload(&format!("w{}", i % 3), i + 1)),
                apply(workload(&format!("x{i}"), 1)),
            ],
        )];
        let ex = execute(&state, &reqs);
        let c = ex
            .into_commit(state.head_hash, state.height + 1, i, None)
            .unwrap();
        snapped.append(std::slice::from_ref(&c)).unwrap();
        full.append(std::slice::from_ref(&c)).unwrap();
        state.apply_entry(&c.entry).unwrap();
        if state.height.is_multiple_of(4) {
            snapped.write_snapshot(&state).unwrap();
        }
    }
    drop(snapped);
    let snapped = Store::open(&snap_path, config(4)).unwrap();
    let (a, ra) = snapped.load_state().unwrap();
    let (b, rb) = full.load_state().unwrap();
    assert_eq!(a, state);
    assert_eq!(b, state);
    assert_eq!((ra.snapshot_height, ra.replayed), (Some(8), 2));
    assert_eq!((rb.snapshot_height, rb.replayed), (None, 10));
    assert_eq!(
        snapped.read().unwrap().snapshots().unwrap().len(),
        2,
        "older snapshots are dropped"
    );

    // A corrupt newest snapshot is skipped, the older one used.
    {
        let txn = snapped.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SNAPSHOTS).unwrap();
            let mut bytes = t.get(8).unwrap().unwrap().value().to_vec();
            bytes[20] ^= 1;
            t.insert(8, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (c, rc) = snapped.load_state().unwrap();
    assert_eq!(c, state);
    assert_eq!(
        (rc.snapshot_height, rc.replayed, rc.skipped_snapshots.len()),
        (Some(4), 6, 1)
    );
}

#[test]
fn undecodable_rows_are_typed_errors_naming_the_height() {
    let dir = tempdir();
    let store = Store::open(dir.path().join("l.redb"), config(0)).unwrap();
    let mut state = State::new();
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
        vec![signed("2", "u", vec![apply(workload("a", 2))])],
    );
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(EVENTS)
            .unwrap()
            .insert((2u64, 0u32), [1u8, 0, 0].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = store.entry(2).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { height: 2, .. }),
        "{err}"
    );
    assert!(matches!(
        store.load_state(),
        Err(StoreError::Corrupt { height: 2, .. })
    ));
}
