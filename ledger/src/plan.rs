//! Planning: the pure step that turns a request into events against the current state, with
//! kubectl's per-object outcomes. Idempotent (an object whose canonical hash is unchanged makes no
//! event), optimistic (`if_version`), atomic (any failing operation fails the whole request and
//! yields no events). Every replica runs the same plan over the same state, so all agree.

use std::collections::HashMap;
use std::fmt;

use nexus_schemas::semantic::is_dns_label;
use nexus_schemas::{API_VERSION, ContentHash, Object, ObjectKey, canonical_value};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::sorted_json;
use crate::event::EventBody;
use crate::request::{Op, Request, Source};
use crate::state::{NodeState, ObjectState, ObjectView, State, next_object};

/// Most operations in one request.
pub const MAX_OPS: usize = 10_000;
/// Longest request id.
pub const MAX_ID_LEN: usize = 128;

/// What a request did to one object (kubectl's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one object of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectOutcome {
    pub key: ObjectKey,
    pub action: Action,
    /// The object's generation after the request (the last one for deletes).
    pub generation: u64,
    /// The object's resource version after the request (the deleting height for deletes).
    pub resource_version: u64,
}

/// The events a request makes and the outcome per operation, in operation order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub events: Vec<EventBody>,
    pub outcomes: Vec<ObjectOutcome>,
}

/// Why a request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RequestError {
    #[error("the request has no operations")]
    Empty,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("operation {op}: not a valid {API_VERSION} object: {message}")]
    InvalidObject { op: usize, message: String },
    #[error("{key} appears more than once in the request")]
    DuplicateObject { key: ObjectKey },
    #[error("conflict on {key}: {}", conflict_text(*.expected, *.current))]
    Conflict {
        key: ObjectKey,
        expected: u64,
        current: Option<u64>,
    },
    #[error("{key} not found")]
    NotFound { key: ObjectKey },
    #[error("request id {id:?} was already used by {actor} for a different request")]
    RequestIdReused { id: String, actor: String },
    #[error("node {name:?} is not known")]
    UnknownNode { name: String },
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

fn conflict_text(expected: u64, current: Option<u64>) -> String {
    match (expected, current) {
        (0, Some(c)) => format!("expected it not to exist, but it exists at resource version {c}"),
        (e, Some(c)) => format!("expected resource version {e}, current resource version is {c}"),
        (e, None) => format!("expected resource version {e}, but it does not exist"),
    }
}

/// A state with the changes of earlier requests of the same entry layered on top, so a batch of
/// requests can be planned one after the other without touching the committed state.
#[derive(Debug)]
pub struct Staged<'a> {
    base: &'a State,
    changes: HashMap<ObjectKey, Option<ObjectState>>,
    nodes: HashMap<String, NodeState>,
    /// A validator-set change planned earlier in the batch takes effect at this height.
    membership: Option<u64>,
}

impl<'a> Staged<'a> {
    pub fn new(base: &'a State) -> Self {
        Staged {
            base,
            changes: HashMap::new(),
            nodes: HashMap::new(),
            membership: None,
        }
    }

    /// Layers the events of a planned request on top.
    pub fn stage(&mut self, actor: &str, source: &Source, events: &[EventBody]) {
        let height = self.next_height();
        for body in events {
            if let Some(key) = body.object_key() {
                let next = next_object(self.object(key), body, height, actor, source);
                self.changes.insert(key.clone(), next);
            } else if let Some(name) = crate::nodes::node_name(body)
                && let Some(next) = crate::nodes::next_node(self.node(name), body, height)
            {
                self.nodes.insert(name.to_string(), next);
            } else if let EventBody::MembershipChanged {
                effective_height, ..
            } = body
            {
                self.membership = Some(*effective_height);
            }
        }
    }
}

impl ObjectView for Staged<'_> {
    fn object(&self, key: &ObjectKey) -> Option<&ObjectState> {
        match self.changes.get(key) {
            Some(staged) => staged.as_ref(),
            None => self.base.object(key),
        }
    }
    fn next_height(&self) -> u64 {
        self.base.next_height()
    }
    fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.get(name).or_else(|| self.base.node(name))
    }
    fn voters(&self) -> usize {
        self.base.voters()
    }
    fn membership(&self) -> (&[crate::event::Validator], Option<u64>) {
        let (set, pending) = self.base.membership();
        (set, self.membership.or(pending))
    }
}

/// Checks shape limits that do not depend on state.
fn check_shape(req: &Request) -> Result<(), RequestError> {
    if req.id.is_empty() || req.id.len() > MAX_ID_LEN {
        return Err(RequestError::Invalid(format!(
            "the request id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    if req.actor.is_empty() {
        return Err(RequestError::Invalid("the actor is empty".into()));
    }
    if req.ops.is_empty() {
        return Err(RequestError::Empty);
    }
    if req.ops.len() > MAX_OPS {
        return Err(RequestError::Invalid(format!(
            "{} operations; at most {MAX_OPS} per request",
            req.ops.len()
        )));
    }
    Ok(())
}

/// Who may claim a source: git-sourced changes come only from replicas (`replica:<name>`), which
/// sign them after syncing and which every replica re-checks against git before accepting them
/// (see [`crate::admission`]). A user cannot write "this came from commit X".
fn check_source(req: &Request) -> Result<(), RequestError> {
    if let Source::Gitops { git_source, .. } = &req.source
        && !req.actor.starts_with("replica:")
    {
        return Err(RequestError::NotAllowed(format!(
            "changes from git source {git_source} are written by replicas; {} is not one",
            req.actor
        )));
    }
    Ok(())
}

/// An apply operation, parsed and canonicalized.
fn parse_object(
    op: usize,
    value: &serde_json::Value,
) -> Result<(ObjectKey, serde_json::Value, ContentHash), RequestError> {
    let invalid = |message: String| RequestError::InvalidObject { op, message };
    let obj =
        <Object as serde::Deserialize>::deserialize(value).map_err(|e| invalid(e.to_string()))?;
    if obj.api_version != API_VERSION {
        return Err(invalid(format!(
            "apiVersion is {:?}, expected {API_VERSION:?}",
            obj.api_version
        )));
    }
    for (what, v) in [
        ("metadata.name", &obj.metadata.name),
        ("metadata.namespace", &obj.metadata.namespace),
    ] {
        if !is_dns_label(v) {
            return Err(invalid(format!("{what} {v:?} is not a DNS-1123 label")));
        }
    }
    let canonical = canonical_value(&obj);
    // Same bytes as nexus_schemas::content_hash: blake3 of the sorted compact JSON.
    let hash = ContentHash(*blake3::hash(sorted_json(&canonical).as_bytes()).as_bytes());
    Ok((obj.key(), canonical, hash))
}

fn check_version(
    key: &ObjectKey,
    if_version: Option<u64>,
    current: Option<&ObjectState>,
) -> Result<(), RequestError> {
    let Some(expected) = if_version else {
        return Ok(());
    };
    let current_rv = current.map(|c| c.resource_version);
    let ok = match current_rv {
        Some(rv) => rv == expected,
        None => expected == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(RequestError::Conflict {
            key: key.clone(),
            expected,
            current: current_rv,
        })
    }
}

/// Plans `req` against `view`: the events it makes and the per-object outcomes, or the first
/// reason it must be refused (then nothing happens).
pub fn plan_request<V: ObjectView + ?Sized>(view: &V, req: &Request) -> Result<Plan, RequestError> {
    check_shape(req)?;
    check_source(req)?;
    let height = view.next_height();
    let mut seen = std::collections::HashSet::new();
    let mut seen_nodes = std::collections::HashSet::new();
    let mut plan = Plan {
        events: Vec::new(),
        outcomes: Vec::with_capacity(req.ops.len()),
    };
    for (i, op) in req.ops.iter().enumerate() {
        if let Some(events) = crate::membership::plan_membership_op(view, req, op) {
            // Validator-set changes have no object outcome either; one per request.
            if req.ops.len() > 1 {
                return Err(RequestError::Invalid(
                    "a validator-set change must be the only operation of its request".into(),
                ));
            }
            plan.events.extend(events?);
            continue;
        }
        if let Some(events) = crate::nodes::plan_node_op(view, req, op) {
            // Node operations have no object outcome; their effects are the events. Each op
            // plans against the state before the request, so a node may appear only once.
            let name = crate::nodes::op_node(op).unwrap_or_default();
            if !seen_nodes.insert(name.to_string()) {
                return Err(RequestError::Invalid(format!(
                    "node {name:?} appears more than once in the request"
                )));
            }
            plan.events.extend(events?);
            continue;
        }
        let (key, outcome, event) = match op {
            Op::Apply { object, if_version } => {
                let (key, object, content_hash) = parse_object(i, object)?;
                let current = view.object(&key);
                check_version(&key, *if_version, current)?;
                match current {
                    Some(c) if c.content_hash == content_hash => {
                        let o = ObjectOutcome {
                            key: key.clone(),
                            action: Action::Unchanged,
                            generation: c.generation,
                            resource_version: c.resource_version,
                        };
                        (key, o, None)
                    }
                    _ => {
                        let (action, generation) = match current {
                            Some(c) => (Action::Configured, c.generation + 1),
                            None => (Action::Created, 1),
                        };
                        let o = ObjectOutcome {
                            key: key.clone(),
                            action,
                            generation,
                            resource_version: height,
                        };
                        let e = EventBody::ObjectApplied {
                            key: key.clone(),
                            object,
                            content_hash,
                            generation,
                        };
                        (key, o, Some(e))
                    }
                }
            }
            Op::Delete { key, if_version } => {
                let current = view.object(key);
                check_version(key, *if_version, current)?;
                let Some(c) = current else {
                    return Err(RequestError::NotFound { key: key.clone() });
                };
                let o = ObjectOutcome {
                    key: key.clone(),
                    action: Action::Deleted,
                    generation: c.generation,
                    resource_version: height,
                };
                (
                    key.clone(),
                    o,
                    Some(EventBody::ObjectDeleted {
                        key: key.clone(),
                        generation: c.generation,
                    }),
                )
            }
            Op::NodeJoin { .. }
            | Op::NodeLabels { .. }
            | Op::NodeLostAttest { .. }
            | Op::AddValidator { .. }
            | Op::RemoveValidator { .. } => continue,
        };
        if !seen.insert(key.clone()) {
            return Err(RequestError::DuplicateObject { key });
        }
        plan.outcomes.push(outcome);
        plan.events.extend(event);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;

    fn run(state: &State, ops: Vec<Op>) -> Result<Plan, RequestError> {
        plan_request(state, &request("r", "user:alice", ops))
    }

    /// Applies a plan to the state as the next entry would.
    fn commit(state: &mut State, plan: &Plan) {
        let h = state.height + 1;
        for e in &plan.events {
            state.apply_event(h, "user:alice", &Source::Cli, e);
        }
        state.height = h;
    }

    fn actions(p: &Plan) -> Vec<Action> {
        p.outcomes.iter().map(|o| o.action).collect()
    }

    #[test]
    fn create_configure_unchanged_delete() {
        let mut s = State::new();
        let p = run(&s, vec![apply(workload("a", 1)), apply(workload("b", 1))]).unwrap();
        assert_eq!(actions(&p), [Action::Created, Action::Created]);
        assert_eq!(p.outcomes[0].generation, 1);
        assert_eq!(p.outcomes[0].resource_version, 1);
        commit(&mut s, &p);
        // Same content written differently (defaults spelled out, keys reordered): unchanged.
        let same = json!({"kind": "Workload", "apiVersion": "nexus/v1", "spec": {"replicas": 1, "command": ["/bin/app"]}, "metadata": {"namespace": "default", "name": "a"}});
        let p = run(&s, vec![apply(same), apply(workload("b", 3))]).unwrap();
        assert_eq!(actions(&p), [Action::Unchanged, Action::Configured]);
        assert_eq!(p.events.len(), 1, "no event for the unchanged object");
        assert_eq!(
            (p.outcomes[0].generation, p.outcomes[0].resource_version),
            (1, 1)
        );
        assert_eq!(
            (p.outcomes[1].generation, p.outcomes[1].resource_version),
            (2, 2)
        );
        commit(&mut s, &p);
        let p = run(
            &s,
            vec![Op::Delete {
                key: wkey("a"),
                if_version: None,
            }],
        )
        .unwrap();
        assert_eq!(actions(&p), [Action::Deleted]);
        commit(&mut s, &p);
        assert!(s.get(&wkey("a")).is_none());
        // Re-created objects start again at generation 1.
        let p = run(&s, vec![apply(workload("a", 2))]).unwrap();
        assert_eq!(
            (p.outcomes[0].action, p.outcomes[0].generation),
            (Action::Created, 1)
        );
    }

    #[test]
    fn only_replicas_write_git_sourced_changes() {
        let git = Source::Gitops {
            git_source: "default/apps".into(),
            repo: "/srv/apps.git".into(),
            commit: "c".into(),
            tree: "t".into(),
            author: "a".into(),
            committer: "c".into(),
            message: "m".into(),
            claim: String::new(),
            forced_over: None,
        };
        let mut r = request("r", "user:alice", vec![apply(workload("a", 1))]);
        r.source = git;
        assert!(matches!(
            plan_request(&State::new(), &r),
            Err(RequestError::NotAllowed(m)) if m.contains("user:alice")
        ));
        r.actor = "replica:r0".into();
        assert_eq!(plan_request(&State::new(), &r).unwrap().events.len(), 1);
    }

    #[test]
    fn content_hash_matches_the_schemas_crate() {
        let v = workload("a", 2);
        let obj: nexus_schemas::Object = serde_json::from_value(v.clone()).unwrap();
        let p = run(&State::new(), vec![apply(v)]).unwrap();
        let EventBody::ObjectApplied { content_hash, .. } = &p.events[0] else {
            panic!()
        };
        assert_eq!(*content_hash, nexus_schemas::content_hash(&obj));
    }

    #[test]
    fn if_version_conflicts_name_the_current_version() {
        let mut s = State::new();
        let p = run(&s, vec![apply(workload("a", 1))]).unwrap();
        commit(&mut s, &p);
        let p = run(&s, vec![apply(workload("a", 2))]).unwrap();
        commit(&mut s, &p);
        let rv = s.get(&wkey("a")).unwrap().resource_version;
        assert_eq!(rv, 2);
        let err = run(
            &s,
            vec![Op::Apply {
                object: workload("a", 3),
                if_version: Some(1),
            }],
        )
        .unwrap_err();
        assert_eq!(
            err,
            RequestError::Conflict {
                key: wkey("a"),
                expected: 1,
                current: Some(2)
            }
        );
        assert_eq!(
            err.to_string(),
            "conflict on Workload default/a: expected resource version 1, current resource version is 2"
        );
        assert!(
            run(
                &s,
                vec![Op::Apply {
                    object: workload("a", 3),
                    if_version: Some(2)
                }]
            )
            .is_ok()
        );
        // 0 = create only.
        let err = run(
            &s,
            vec![Op::Apply {
                object: workload("a", 3),
                if_version: Some(0),
            }],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("expected it not to exist"),
            "{err}"
        );
        assert!(
            run(
                &s,
                vec![Op::Apply {
                    object: workload("new", 1),
                    if_version: Some(0)
                }]
            )
            .is_ok()
        );
        let err = run(
            &s,
            vec![Op::Delete {
                key: wkey("a"),
                if_version: Some(7),
            }],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RequestError::Conflict {
                current: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn any_failing_operation_fails_the_whole_request() {
        let mut s = State::new();
        let p = run(&s, vec![apply(workload("a", 1))]).unwrap();
        commit(&mut s, &p);
        let before = s.clone();
        let cases = vec![
            (
                vec![
                    apply(workload("b", 1)),
                    Op::Delete {
                        key: wkey("missing"),
                        if_version: None,
                    },
                ],
                "not found",
            ),
            (
                vec![
                    apply(workload("b", 1)),
                    apply(
                        json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "c"}, "spec": {"replicas": "x"}}),
                    ),
                ],
                "operation 1",
            ),
            (
                vec![
                    apply(workload("b", 1)),
                    apply(
                        json!({"apiVersion": "nexus/v2", "kind": "Workload", "metadata": {"name": "c"}, "spec": {"command": ["x"]}}),
                    ),
                ],
                "apiVersion",
            ),
            (
                vec![apply(workload("b", 1)), apply(workload("Bad_Name", 1))],
                "DNS-1123",
            ),
            (
                vec![apply(workload("b", 1)), apply(workload("b", 2))],
                "more than once",
            ),
            (
                vec![
                    apply(workload("b", 1)),
                    Op::Apply {
                        object: workload("a", 5),
                        if_version: Some(9),
                    },
                ],
                "conflict",
            ),
            (vec![], "no operations"),
        ];
        for (ops, needle) in cases {
            let err = run(&s, ops).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{err} should contain {needle}"
            );
        }
        assert_eq!(s, before);
    }

    #[test]
    fn staged_view_sees_earlier_requests_of_the_batch() {
        let s = State::new();
        let mut staged = Staged::new(&s);
        let p1 = plan_request(&staged, &request("1", "u", vec![apply(workload("a", 1))])).unwrap();
        staged.stage("u", &Source::Cli, &p1.events);
        let p2 = plan_request(
            &staged,
            &request(
                "2",
                "u",
                vec![apply(workload("a", 1)), apply(workload("b", 1))],
            ),
        )
        .unwrap();
        assert_eq!(actions(&p2), [Action::Unchanged, Action::Created]);
        let err = plan_request(
            &staged,
            &request(
                "3",
                "u",
                vec![Op::Apply {
                    object: workload("a", 2),
                    if_version: Some(0),
                }],
            ),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RequestError::Conflict {
                current: Some(1),
                ..
            }
        ));
        assert!(s.objects.is_empty(), "the committed state is untouched");
    }
}
