//! Planning: the pure step that turns a request into events against the current state, with
//! kubectl's per-object outcomes. Idempotent (an object whose canonical hash is unchanged makes no
//! event), optimistic (`if_version`), atomic (any failing operation fails the whole request and
//! yields no events). Every replica runs the same plan over the same state, so all agree.

use std::collections::HashMap;
use std::fmt;

use nexus_schemas::{API_VERSION, ContentHash, ObjectKey, canonical_value};
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
/// Most problems an [`RequestError::InvalidObject`] lists (the rest are counted).
pub const MAX_PROBLEMS: usize = 20;

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
    /// An object failed the manifest validator (the same checks `nexus validate` runs).
    #[error("{}", invalid_object_text(*.op, .object.as_ref(), .problems, *.omitted))]
    InvalidObject {
        /// Index of the operation in the request.
        op: usize,
        /// The object it claims to be, when its kind and name can be read.
        #[serde(default)]
        object: Option<ObjectKey>,
        /// The problems, in the order found (at most [`MAX_PROBLEMS`]).
        #[serde(default)]
        problems: Vec<FieldProblem>,
        /// How many more problems were found than listed.
        #[serde(default)]
        omitted: usize,
    },
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

/// One problem of an invalid object, at a field path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Where in the object (`spec.resources.cpu`, `spec.ports[0].port`).
    pub path: String,
    /// The stable diagnostic code (`nexus::invalid-quantity`).
    pub code: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl From<nexus_schemas::Problem> for FieldProblem {
    fn from(p: nexus_schemas::Problem) -> Self {
        FieldProblem {
            path: p.path.to_string(),
            code: p.code.to_string(),
            message: p.message,
            help: p.help,
        }
    }
}

impl fmt::Display for FieldProblem {
    /// `path: message` (the path once, when the message already starts with it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.starts_with(&self.path) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn invalid_object_text(
    op: usize,
    object: Option<&ObjectKey>,
    problems: &[FieldProblem],
    omitted: usize,
) -> String {
    use std::fmt::Write;
    let what = match object {
        Some(key) => format!("{key} (operation {op})"),
        None => format!("operation {op}"),
    };
    let mut out = format!("{what} is not a valid {API_VERSION} object; nothing was written");
    for p in problems {
        let _ = write!(out, "\n  {p}");
        if let Some(help) = &p.help {
            let _ = write!(out, "\n    help: {help}");
        }
    }
    if omitted > 0 {
        let _ = write!(out, "\n  ... and {omitted} more problem(s)");
    }
    if problems.is_empty() && omitted == 0 {
        out.push_str(" (run `nexus validate` on its manifest to see why)");
    }
    out
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

    /// Layers the events of a planned request on top. A staged object keeps its versions,
    /// hashes and owner but not its body (`object` is `null`): planning never reads bodies, and
    /// copying every applied object again cost a tenth of executing a batch.
    pub fn stage(&mut self, actor: &str, source: &Source, events: &[EventBody]) {
        let height = self.next_height();
        for body in events {
            if let Some(key) = body.object_key() {
                let next = match body {
                    EventBody::ObjectApplied {
                        key,
                        content_hash,
                        generation,
                        ..
                    } => {
                        let bodiless = EventBody::ObjectApplied {
                            key: key.clone(),
                            object: serde_json::Value::Null,
                            content_hash: *content_hash,
                            generation: *generation,
                        };
                        next_object(self.object(key), &bodiless, height, actor, source)
                    }
                    _ => next_object(self.object(key), body, height, actor, source),
                };
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

/// Checks one object of an apply with the manifest validator (JSON Schema and semantic
/// checks, exactly what `nexus validate` runs on files): the typed object or why not.
fn validate_object(
    op: usize,
    value: &serde_json::Value,
) -> Result<nexus_schemas::Object, RequestError> {
    nexus_schemas::validate_value(value).map_err(|problems| {
        let omitted = problems.len().saturating_sub(MAX_PROBLEMS);
        RequestError::InvalidObject {
            op,
            object: nexus_schemas::claimed_key(value),
            problems: problems
                .into_iter()
                .take(MAX_PROBLEMS)
                .map(FieldProblem::from)
                .collect(),
            omitted,
        }
    })
}

/// Checks every object a request applies with the manifest validator, before it is queued or
/// proposed and when a proposed batch is validated; the first invalid object refuses the whole
/// request. Depends on the request alone, so every replica reaches the same verdict.
pub fn check_objects(req: &Request) -> Result<(), RequestError> {
    for (i, op) in req.ops.iter().enumerate() {
        if let Op::Apply { object, .. } = op {
            validate_object(i, object)?;
        }
    }
    Ok(())
}

/// An applied object as planning uses it: validated, canonical, hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedObject {
    pub key: ObjectKey,
    /// The canonical form (defaults explicit, one spelling per quantity).
    pub object: serde_json::Value,
    pub content_hash: ContentHash,
}

/// An apply operation, validated and canonicalized. Pure: depends on the object alone, so a
/// replica may compute it once per request and reuse it ([`crate::prepared::Prepared`]).
pub fn parse_object(op: usize, value: &serde_json::Value) -> Result<ParsedObject, RequestError> {
    let obj = validate_object(op, value)?;
    let canonical = canonical_value(&obj);
    // Same bytes as nexus_schemas::content_hash: blake3 of the sorted compact JSON.
    let hash = ContentHash(*blake3::hash(sorted_json(&canonical).as_bytes()).as_bytes());
    Ok(ParsedObject {
        key: obj.key(),
        object: canonical,
        content_hash: hash,
    })
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
    plan_request_with(view, req, &mut |i, object| parse_object(i, object))
}

/// [`plan_request`] with the objects of apply operations parsed by `parse` (operation index,
/// object), which must answer exactly what [`parse_object`] would: a caller that parsed them
/// before hands the results in instead of validating every object again.
pub fn plan_request_with<V: ObjectView + ?Sized>(
    view: &V,
    req: &Request,
    parse: &mut dyn FnMut(usize, &serde_json::Value) -> Result<ParsedObject, RequestError>,
) -> Result<Plan, RequestError> {
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
                let ParsedObject {
                    key,
                    object,
                    content_hash,
                } = parse(i, object)?;
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
                "metadata.name: invalid name \"Bad_Name\"",
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

    /// A Workload with `spec` merged over a valid one.
    fn workload_with(spec: serde_json::Value) -> serde_json::Value {
        let mut w = workload("web", 1);
        if let (Some(base), Some(extra)) = (w["spec"].as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        w
    }

    /// Every kind of invalid object is refused with the field path of each problem; the
    /// request's valid objects are not applied either.
    #[test]
    fn invalid_objects_are_refused_naming_the_field() {
        let policy = |peer: serde_json::Value| {
            json!({"apiVersion": "nexus/v1", "kind": "NetworkPolicy", "metadata": {"name": "p"},
                   "spec": {"selector": {"app": "web"}, "ingress": [{"from": [peer]}]}})
        };
        let git = |interval: &str| {
            json!({"apiVersion": "nexus/v1", "kind": "GitSource", "metadata": {"name": "g"},
                   "spec": {"url": "/srv/git/a.git", "interval": interval}})
        };
        let cases = [
            (
                workload_with(json!({"resources": {"cpu": "12X"}})),
                "spec.resources.cpu",
                "nexus::invalid-quantity",
            ),
            (
                workload_with(json!({"resources": {"cpu": "0"}})),
                "spec.resources.cpu",
                "nexus::out-of-range",
            ),
            (
                workload_with(json!({"resources": {"memory": "1.5"}})),
                "spec.resources.memory",
                "nexus::invalid-quantity",
            ),
            (
                workload_with(json!({"ports": [{"port": 0}]})),
                "spec.ports[0].port",
                "nexus::out-of-range",
            ),
            (
                workload_with(json!({"ports": [{"port": 70000}]})),
                "spec.ports[0].port",
                "nexus::out-of-range",
            ),
            (
                workload_with(json!({"replicas": -1})),
                "spec.replicas",
                "nexus::out-of-range",
            ),
            (
                workload_with(json!({"replicas": "3"})),
                "spec.replicas",
                "nexus::wrong-type",
            ),
            (
                workload_with(json!({"replicaz": 3})),
                "spec.replicaz",
                "nexus::unknown-field",
            ),
            (
                workload_with(json!({"env": {"1BAD": "x"}})),
                "spec.env.1BAD",
                "nexus::invalid-name",
            ),
            (
                workload_with(
                    json!({"health": {"http": {"path": "/", "port": 80}, "tcp": {"port": 80}}}),
                ),
                "spec.health",
                "nexus::invalid-probe",
            ),
            (
                json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "web", "labels": {"app": "-x-"}}, "spec": {"command": ["x"]}}),
                "metadata.labels.app",
                "nexus::invalid-label",
            ),
            (
                json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "web", "namespace": "Prod"}, "spec": {"command": ["x"]}}),
                "metadata.namespace",
                "nexus::invalid-name",
            ),
            (
                policy(json!({"selector": {"app": "a"}, "cidr": "10.0.0.0/8"})),
                "spec.ingress[0].from[0]",
                "nexus::invalid-peer",
            ),
            (
                policy(json!({"cidr": "10.0.0.300/8"})),
                "spec.ingress[0].from[0].cidr",
                "nexus::invalid-cidr",
            ),
            (
                git("10 minutes"),
                "spec.interval",
                "nexus::invalid-duration",
            ),
            (git("10ms"), "spec.interval", "nexus::out-of-range"),
            (
                json!({"apiVersion": "nexus/v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": {}, "ports": [{"port": 80}]}}),
                "spec.selector",
                "nexus::invalid-value",
            ),
            (
                json!({"apiVersion": "nexus/v2", "kind": "Workload", "metadata": {"name": "web"}, "spec": {"command": ["x"]}}),
                "apiVersion",
                "nexus::unknown-api-version",
            ),
            (
                json!({"apiVersion": "nexus/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}),
                "kind",
                "nexus::unknown-kind",
            ),
        ];
        let state = State::new();
        for (object, path, code) in cases {
            let err = run(
                &state,
                vec![apply(workload("ok", 1)), apply(object.clone())],
            )
            .expect_err("an invalid object must be refused");
            let RequestError::InvalidObject { op, problems, .. } = &err else {
                panic!("{object}: not InvalidObject: {err:?}");
            };
            assert_eq!(*op, 1);
            assert!(
                problems.iter().any(|p| p.path == path && p.code == code),
                "{object}: expected {code} at {path}, got {problems:?}"
            );
            assert!(err.to_string().contains(path), "{err}");
            // The same verdict when the request is checked on its own (admission, proposals).
            let req = request("r", "user:alice", vec![apply(object)]);
            assert!(matches!(
                check_objects(&req),
                Err(RequestError::InvalidObject { op: 0, .. })
            ));
        }
        assert!(check_objects(&request("r", "u", vec![apply(workload("ok", 1))])).is_ok());
    }

    #[test]
    fn an_invalid_object_error_names_the_object_the_field_and_what_to_do() {
        let err = run(
            &State::new(),
            vec![apply(workload_with(
                json!({"resources": {"cpu": "12X"}, "ports": [{"port": 70000}]}),
            ))],
        )
        .unwrap_err();
        expect_test::expect![[r#"
            Workload default/web (operation 0) is not a valid nexus/v1 object; nothing was written
              spec.ports[0].port must be between 1 and 65535, found 70000
                help: spec.ports[0].port: Port number the process listens on (1-65535).
              spec.resources.cpu: invalid CPU quantity "12X": unknown suffix "X" in "12X"
                help: CPU is whole cores ("2", "1.5") or millicores with `m` ("500m")"#]]
        .assert_eq(&err.to_string());
        // Refused requests are recorded with their error (replicated ledger): it round-trips,
        // and a record written before problems were listed still reads.
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<RequestError>(&json).unwrap(), err);
        let old: RequestError =
            serde_json::from_str(r#"{"InvalidObject":{"op":2,"message":"bad"}}"#).unwrap();
        assert_eq!(
            old.to_string(),
            "operation 2 is not a valid nexus/v1 object; nothing was written (run `nexus validate` on its manifest to see why)"
        );
        // Hundreds of problems are listed up to a bound and counted beyond it.
        let ports: Vec<_> = (0..100).map(|_| json!({"port": 0})).collect();
        let err = run(
            &State::new(),
            vec![apply(workload_with(json!({"ports": ports})))],
        )
        .unwrap_err();
        let RequestError::InvalidObject {
            problems, omitted, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(problems.len(), MAX_PROBLEMS);
        assert!(*omitted > 0 && err.to_string().contains(&format!("and {omitted} more")));
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
