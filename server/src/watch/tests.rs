//! Watch events from committed entries: selectors, objects entering and leaving a label
//! selector, deletes of objects the watch never showed, and entries read after the state moved on.

use ed25519_dalek::SigningKey;
use nexus_api::client::{Selector, WatchEvent};
use nexus_ledger::{Entry, Op, Request, SignedRequest, Source, State, execute};
use nexus_schemas::{Kind, ObjectKey};
use serde_json::{Value, json};

use super::*;

fn workload(name: &str, app: &str, replicas: u64) -> Op {
    Op::Apply {
        object: json!({"apiVersion": "nexus/v1", "kind": "Workload",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"command": ["sleep", "60"], "replicas": replicas}}),
        if_version: None,
    }
}

fn delete(name: &str) -> Op {
    Op::Delete {
        key: ObjectKey::new(Kind::Workload, "default", name),
        if_version: None,
    }
}

/// Commits `ops` as the next entry of `state` and returns it.
fn commit(state: &mut State, ops: Vec<Op>) -> Entry {
    let request = Request {
        id: format!("r{}", state.height + 1),
        actor: "user:alice".into(),
        source: Source::Cli,
        ops,
        created_at_ms: 0,
    };
    let signed = SignedRequest::sign(request, &SigningKey::from_bytes(&[7; 32]));
    let ex = execute(state, &[signed]);
    assert_eq!(ex.results.len(), 1);
    assert!(ex.results[0].is_ok(), "{:?}", ex.results[0]);
    let commit = ex
        .into_commit(state.head_hash, state.height + 1, 1_000, None)
        .expect("entry");
    state.apply_entry(&commit.entry).expect("fold");
    std::sync::Arc::unwrap_or_clone(commit.entry)
}

fn summary(events: &[WatchEvent]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|e| {
            let name = e
                .object
                .as_ref()
                .and_then(|o| o.object.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string();
            (e.event_type.clone(), name, e.height)
        })
        .collect()
}

fn ev(t: &str, name: &str, h: u64) -> (String, String, u64) {
    (t.into(), name.into(), h)
}

#[test]
fn a_label_selector_watch_sees_objects_enter_and_leave() {
    let mut state = State::new();
    commit(
        &mut state,
        vec![workload("a", "web", 1), workload("b", "db", 1)],
    );
    let sel = Selector {
        kind: Some("Workload".into()),
        labels: vec![("app".into(), "web".into())],
        ..Default::default()
    };
    let kind = selector_kind(&sel).unwrap();
    let mut visible = Visible::new();
    let first = initial(&state, &sel, kind, &mut visible);
    assert_eq!(summary(&first), [ev("ADDED", "a", 1), ev("SYNCED", "-", 1)]);

    let mut seen = Vec::new();
    for ops in [
        vec![workload("b", "web", 1)], // b enters the selector
        vec![workload("a", "web", 2)], // a changes
        vec![workload("a", "api", 2)], // a leaves the selector
        vec![workload("c", "db", 1)],  // never selected
        vec![delete("c")],             // deleting it says nothing
        vec![delete("b")],
    ] {
        let entry = commit(&mut state, ops);
        seen.extend(summary(&events_of(
            &entry,
            &state,
            &sel,
            kind,
            &mut visible,
        )));
    }
    assert_eq!(
        seen,
        [
            ev("ADDED", "b", 2),
            ev("MODIFIED", "a", 3),
            ev("DELETED", "a", 4),
            ev("DELETED", "b", 7),
        ]
    );
    assert!(visible.is_empty());
}

/// The watch task reads entries after the state may have moved on: an object created and deleted
/// before its creation entry is processed is still shown, with the entry's own bookkeeping.
#[test]
fn entries_read_after_the_state_moved_on_still_make_their_events() {
    let mut state = State::new();
    let created = commit(&mut state, vec![workload("late", "web", 3)]);
    let deleted = commit(&mut state, vec![delete("late")]);
    let sel = Selector::default();
    let mut visible = Visible::new();
    let added = events_of(&created, &state, &sel, None, &mut visible);
    assert_eq!(summary(&added), [ev("ADDED", "late", 1)]);
    let info = added[0].object.as_ref().unwrap();
    assert_eq!(
        (info.generation, info.created_height, info.resource_version),
        (1, 1, 1)
    );
    assert_eq!(
        (info.last_actor.as_str(), info.owner.as_str()),
        ("user:alice", "apply")
    );
    assert_eq!(info.object["spec"]["replicas"], 3);
    let gone = events_of(&deleted, &state, &sel, None, &mut visible);
    assert_eq!(summary(&gone), [ev("DELETED", "late", 2)]);
}

#[test]
fn selectors_filter_by_kind_namespace_and_name() {
    let key = ObjectKey::new(Kind::Service, "prod", "web");
    let obj = json!({"metadata": {"labels": {"app": "web"}}});
    let sel = |kind: Option<&str>, ns: Option<&str>, name: Option<&str>| Selector {
        kind: kind.map(Into::into),
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
        labels: vec![],
    };
    let cases = [
        (sel(None, None, None), true),
        (sel(Some("svc"), Some("prod"), Some("web")), true),
        (sel(Some("Workload"), None, None), false),
        (sel(None, Some("default"), None), false),
        (sel(None, None, Some("api")), false),
    ];
    for (s, want) in cases {
        let kind = selector_kind(&s).unwrap();
        assert_eq!(selected(&s, kind, &key, Some(&obj)), want, "{s:?}");
    }
    let err = selector_kind(&sel(Some("Pod"), None, None)).unwrap_err();
    assert!(
        err.message.contains("unknown kind \"Pod\""),
        "{}",
        err.message
    );
}
