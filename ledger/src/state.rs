//! The desired state: a pure fold over entries. Objects with their generation and resource
//! version, nodes, and the validator set. Everything a controller or `nexus get` sees is this fold.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use nexus_schemas::{ContentHash, Kind, ObjectKey};
use serde_json::Value;
use thiserror::Error;

use crate::entry::{Entry, EntryHash};
use crate::event::{EventBody, NodeInfo, Validator};
use crate::request::Source;

/// An object as the log made it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectState {
    /// Canonical JSON of the object.
    pub object: Value,
    pub content_hash: ContentHash,
    /// 1 at creation, +1 on each content change.
    pub generation: u64,
    /// Height of the last change; what `if_version` compares against.
    pub resource_version: u64,
    pub created_height: u64,
    pub updated_height: u64,
    pub last_actor: String,
    pub last_source: Source,
    /// Set at creation and kept across updates: `apply`, `gitops:<ns/name>` or
    /// `controller:<name>`. A change whose source is not the owner is drift (GitOps issue).
    pub owner: String,
}

/// A node as the log made it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub info: NodeInfo,
    /// Height of the node's first join (kept when it joins again).
    pub joined_height: u64,
    /// Set by a `NodeLost` event, cleared when the node joins again.
    pub lost_height: Option<u64>,
    /// Replicas that currently attest the node is lost (see [`crate::nodes`]); cleared when the
    /// node joins again.
    pub lost_attesters: BTreeSet<String>,
}

/// The last commit a GitSource wrote into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSync {
    /// The repository URL as the source spelled it.
    pub repo: String,
    pub commit: String,
    /// Height of the entry that holds it.
    pub height: u64,
}

/// The state after some prefix of the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Height of the last applied entry (0 = empty log).
    pub height: u64,
    /// Hash of the last applied entry.
    pub head_hash: EntryHash,
    pub timestamp_ms: u64,
    pub objects: BTreeMap<ObjectKey, Arc<ObjectState>>,
    pub nodes: BTreeMap<String, NodeState>,
    /// The validator set that decides height `self.height + 1`.
    pub validators: Vec<Validator>,
    /// A validator set that decides heights from the given one on (promoted into `validators`
    /// once the state reaches the height before it).
    pub pending_validators: Option<(u64, Vec<Validator>)>,
    /// Per GitSource (`namespace/name`), the last commit an entry recorded for it: what the next
    /// sync of that source is compared with (fast-forward or force-push, no going back).
    pub git_syncs: BTreeMap<String, GitSync>,
    /// Which objects changed at which recent height (not part of what the state means).
    pub journal: ChangeJournal,
}

/// Most changes a [`ChangeJournal`] remembers.
pub const JOURNAL_MAX: usize = 65_536;

/// The objects that changed at recent heights, for readers that follow the state: a scheduling
/// round looks at what changed since its last round instead of at every object. Bounded (the
/// oldest changes are forgotten first); two states are equal whatever their journals hold.
#[derive(Debug, Clone, Default)]
pub struct ChangeJournal {
    /// (height, key), oldest first.
    changes: VecDeque<(u64, ObjectKey)>,
    /// Every change at a height above this one is in `changes`.
    complete_after: u64,
}

impl PartialEq for ChangeJournal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ChangeJournal {
    /// An empty journal for a state at `height` (earlier changes are unknown).
    pub fn starting_at(height: u64) -> Self {
        ChangeJournal {
            changes: VecDeque::new(),
            complete_after: height,
        }
    }

    fn record(&mut self, height: u64, key: &ObjectKey) {
        self.changes.push_back((height, key.clone()));
        while self.changes.len() > JOURNAL_MAX {
            if let Some((h, _)) = self.changes.pop_front() {
                self.complete_after = self.complete_after.max(h);
            }
        }
    }
}

/// An entry that does not extend this state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FoldError {
    #[error("entry at height {found} does not follow height {expected_prev}")]
    Gap { expected_prev: u64, found: u64 },
    #[error("entry {height} links to {found} but the previous entry is {expected}")]
    BrokenLink {
        height: u64,
        expected: EntryHash,
        found: EntryHash,
    },
    #[error("entry {height}: event {event} names request {request}, which does not exist")]
    BadRequestIndex {
        height: u64,
        event: usize,
        request: u32,
    },
}

/// Read access to objects and nodes, shared by [`State`] and staged views used while planning.
pub trait ObjectView {
    fn object(&self, key: &ObjectKey) -> Option<&ObjectState>;
    /// The height the next entry will have.
    fn next_height(&self) -> u64;
    /// A node.
    fn node(&self, name: &str) -> Option<&NodeState>;
    /// How many replicas vote (the validator set's size; 1 without a validator set).
    fn voters(&self) -> usize;
    /// The validator set, and the height a pending change takes effect at (if one is pending).
    fn membership(&self) -> (&[Validator], Option<u64>);
}

impl ObjectView for State {
    fn object(&self, key: &ObjectKey) -> Option<&ObjectState> {
        self.get(key)
    }
    fn next_height(&self) -> u64 {
        self.height + 1
    }
    fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.get(name)
    }
    fn voters(&self) -> usize {
        self.validators.len().max(1)
    }
    fn membership(&self) -> (&[Validator], Option<u64>) {
        (
            &self.validators,
            self.pending_validators.as_ref().map(|(h, _)| *h),
        )
    }
}

/// The object after an object event, or `None` when it no longer exists. Non-object events
/// leave `prev` unchanged. Shared by the fold and the planner so both agree.
pub(crate) fn next_object(
    prev: Option<&ObjectState>,
    body: &EventBody,
    height: u64,
    actor: &str,
    source: &Source,
) -> Option<ObjectState> {
    match body {
        EventBody::ObjectApplied {
            object,
            content_hash,
            generation,
            ..
        } => Some(ObjectState {
            object: object.clone(),
            content_hash: *content_hash,
            generation: *generation,
            resource_version: height,
            created_height: prev.map_or(height, |p| p.created_height),
            updated_height: height,
            last_actor: actor.to_owned(),
            last_source: source.clone(),
            owner: prev.map_or_else(|| source.owner(), |p| p.owner.clone()),
        }),
        EventBody::ObjectDeleted { .. } => None,
        _ => prev.cloned(),
    }
}

impl State {
    /// The empty state before the first entry.
    pub fn new() -> State {
        State::default()
    }

    /// A copy to read on another thread (a snapshot to encode): the objects are shared, not
    /// copied, and the change journal starts empty at this height. Cheap next to encoding:
    /// the node thread takes it while it holds the state, the ledger writer encodes it.
    pub fn detached(&self) -> State {
        State {
            height: self.height,
            head_hash: self.head_hash,
            timestamp_ms: self.timestamp_ms,
            objects: self.objects.clone(),
            nodes: self.nodes.clone(),
            validators: self.validators.clone(),
            pending_validators: self.pending_validators.clone(),
            git_syncs: self.git_syncs.clone(),
            journal: ChangeJournal::starting_at(self.height),
        }
    }

    /// Applies the next entry. Fails, leaving the state untouched, when the entry does not
    /// extend this state (wrong height or previous hash) or names a missing request.
    /// The keys of objects changed at heights above `height` (a key may appear more than once),
    /// or `None` when the journal does not reach back that far.
    pub fn changed_since(&self, height: u64) -> Option<impl Iterator<Item = &ObjectKey>> {
        if height < self.journal.complete_after || height > self.height {
            return None;
        }
        Some(
            self.journal
                .changes
                .iter()
                .rev()
                .take_while(move |(h, _)| *h > height)
                .map(|(_, k)| k),
        )
    }

    pub fn apply_entry(&mut self, entry: &Entry) -> Result<(), FoldError> {
        if entry.height != self.height + 1 {
            return Err(FoldError::Gap {
                expected_prev: self.height,
                found: entry.height,
            });
        }
        if entry.prev_hash != self.head_hash {
            return Err(FoldError::BrokenLink {
                height: entry.height,
                expected: self.head_hash,
                found: entry.prev_hash,
            });
        }
        if let Some((event, e)) = entry
            .events
            .iter()
            .enumerate()
            .find(|(_, e)| e.request as usize >= entry.requests.len())
        {
            return Err(FoldError::BadRequestIndex {
                height: entry.height,
                event,
                request: e.request,
            });
        }
        for e in &entry.events {
            let req = &entry.requests[e.request as usize].request;
            self.apply_event(entry.height, &req.actor, &req.source, &e.body);
        }
        // A git-sourced request counts once it changed something: an entry may also hold
        // requests that failed or changed nothing when they were executed.
        let mut changed = vec![false; entry.requests.len()];
        for e in &entry.events {
            changed[e.request as usize] = true;
        }
        for (r, _) in entry.requests.iter().zip(changed).filter(|(_, c)| *c) {
            if let Source::Gitops {
                git_source,
                repo,
                commit,
                ..
            } = &r.request.source
            {
                let sync = GitSync {
                    repo: repo.clone(),
                    commit: commit.clone(),
                    height: entry.height,
                };
                self.git_syncs.insert(git_source.clone(), sync);
            }
        }
        self.height = entry.height;
        self.head_hash = entry.hash;
        self.timestamp_ms = entry.timestamp_ms;
        if let Some((at, _)) = &self.pending_validators
            && *at <= self.height + 1
            && let Some((_, set)) = self.pending_validators.take()
        {
            self.validators = set;
        }
        Ok(())
    }

    /// Applies one event at `height` (the fold step; callers keep heights in order).
    pub(crate) fn apply_event(
        &mut self,
        height: u64,
        actor: &str,
        source: &Source,
        body: &EventBody,
    ) {
        match body {
            EventBody::ObjectApplied { key, .. } | EventBody::ObjectDeleted { key, .. } => {
                self.journal.record(height, key);
                match next_object(self.get(key), body, height, actor, source) {
                    Some(o) => {
                        self.objects.insert(key.clone(), Arc::new(o));
                    }
                    None => {
                        self.objects.remove(key);
                    }
                }
            }
            EventBody::NodeJoined { .. }
            | EventBody::NodeLabelsChanged { .. }
            | EventBody::NodeLostAttestation { .. }
            | EventBody::NodeLost { .. } => {
                if let Some(name) = crate::nodes::node_name(body)
                    && let Some(n) = crate::nodes::next_node(self.nodes.get(name), body, height)
                {
                    self.nodes.insert(name.to_string(), n);
                }
            }
            EventBody::MembershipChanged {
                validators,
                effective_height,
            } => {
                self.pending_validators = Some((*effective_height, validators.clone()));
            }
        }
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Option<&ObjectState> {
        self.objects.get(key).map(|o| &**o)
    }

    /// Objects of a kind, optionally in one namespace, ordered by namespace and name.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = (&ObjectKey, &ObjectState)> {
        self.list_shared(kind, namespace).map(|(k, o)| (k, &**o))
    }

    /// [`State::list`] with each object as the state shares it (a reader that keeps objects
    /// past the state's lock takes a reference, not a copy).
    pub fn list_shared(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = (&ObjectKey, &Arc<ObjectState>)> {
        let start = ObjectKey::new(kind, namespace.unwrap_or(""), "");
        self.objects.range(start..).take_while(move |(k, _)| {
            k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::build_entry;
    use crate::event::Event;
    use crate::request::{Op, Request, SignedRequest};
    use ed25519_dalek::SigningKey;

    fn req(actor: &str, source: Source) -> SignedRequest {
        let r = Request {
            id: "x".into(),
            actor: actor.into(),
            source,
            ops: vec![Op::Delete {
                key: key("a"),
                if_version: None,
            }],
            created_at_ms: 0,
        };
        SignedRequest::sign(r, &SigningKey::from_bytes(&[1; 32]))
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Service, "default", name)
    }

    fn applied(name: &str, gen_: u64, v: i64) -> Event {
        Event {
            request: 0,
            body: EventBody::ObjectApplied {
                key: key(name),
                object: serde_json::json!({ "v": v }),
                content_hash: ContentHash([v as u8; 32]),
                generation: gen_,
            },
        }
    }

    #[test]
    fn fold_tracks_versions_owner_and_deletes() {
        let git = Source::Gitops {
            git_source: "default/apps".into(),
            repo: "r".into(),
            commit: "c".into(),
            tree: "t".into(),
            author: "a".into(),
            committer: "c".into(),
            message: "m".into(),
            claim: String::new(),
            forced_over: None,
        };
        let e1 = build_entry(
            EntryHash::ZERO,
            1,
            100,
            vec![req("git", git.clone())],
            vec![applied("a", 1, 1), applied("b", 1, 1)],
        )
        .unwrap();
        let e2 = build_entry(
            e1.hash,
            2,
            200,
            vec![req("user:alice", Source::Cli)],
            vec![applied("a", 2, 2)],
        )
        .unwrap();
        let e3 = build_entry(
            e2.hash,
            3,
            300,
            vec![req("user:bob", Source::Cli)],
            vec![Event {
                request: 0,
                body: EventBody::ObjectDeleted {
                    key: key("b"),
                    generation: 1,
                },
            }],
        )
        .unwrap();
        let mut s = State::new();
        for e in [&e1, &e2, &e3] {
            s.apply_entry(e).unwrap();
        }
        assert_eq!((s.height, s.head_hash, s.timestamp_ms), (3, e3.hash, 300));
        let a = s.get(&key("a")).unwrap();
        assert_eq!(
            (
                a.generation,
                a.resource_version,
                a.created_height,
                a.updated_height
            ),
            (2, 2, 1, 2)
        );
        assert_eq!(a.last_actor, "user:alice");
        assert_eq!(a.owner, "gitops:default/apps");
        assert_eq!(a.last_source, Source::Cli);
        assert!(s.get(&key("b")).is_none());
        assert_eq!(s.list(Kind::Service, Some("default")).count(), 1);
        assert_eq!(s.list(Kind::Workload, None).count(), 0);
        assert_eq!(
            s.git_syncs["default/apps"],
            GitSync {
                repo: "r".into(),
                commit: "c".into(),
                height: 1
            }
        );
        assert_eq!(s.git_syncs.len(), 1);
        // A git-sourced request that changed nothing (it failed when executed) does not count.
        let mut idle = req("replica:r0", git.clone());
        if let Source::Gitops { commit, .. } = &mut idle.request.source {
            *commit = "c2".into();
        }
        let e4 = build_entry(e3.hash, 4, 400, vec![idle], vec![]).unwrap();
        s.apply_entry(&e4).unwrap();
        assert_eq!(s.git_syncs["default/apps"].commit, "c");
    }

    #[test]
    fn fold_refuses_gaps_and_broken_links() {
        let e1 = build_entry(
            EntryHash::ZERO,
            1,
            1,
            vec![req("a", Source::Cli)],
            vec![applied("a", 1, 1)],
        )
        .unwrap();
        let e2 = build_entry(
            EntryHash([5; 32]),
            2,
            1,
            vec![req("a", Source::Cli)],
            vec![],
        )
        .unwrap();
        let mut s = State::new();
        assert!(matches!(s.apply_entry(&e2), Err(FoldError::Gap { .. })));
        s.apply_entry(&e1).unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply_entry(&e2),
            Err(FoldError::BrokenLink { height: 2, .. })
        ));
        assert_eq!(s, before);
    }

    #[test]
    fn membership_takes_effect_at_its_height() {
        let v = vec![Validator {
            name: "r1".into(),
            public_key: [1; 32],
            address: "a".into(),
            power: 1,
        }];
        let ev = Event {
            request: 0,
            body: EventBody::MembershipChanged {
                validators: v.clone(),
                effective_height: 3,
            },
        };
        let e1 = build_entry(EntryHash::ZERO, 1, 1, vec![req("a", Source::Cli)], vec![ev]).unwrap();
        let e2 = build_entry(e1.hash, 2, 1, vec![req("a", Source::Cli)], vec![]).unwrap();
        let e3 = build_entry(e2.hash, 3, 1, vec![req("a", Source::Cli)], vec![]).unwrap();
        let mut s = State::new();
        s.apply_entry(&e1).unwrap();
        assert!(s.validators.is_empty());
        s.apply_entry(&e2).unwrap();
        assert_eq!(s.validators, v, "the new set decides height 3");
        s.apply_entry(&e3).unwrap();
        assert_eq!(s.validators, v);
        assert!(s.pending_validators.is_none());
    }

    /// The journal lists what changed after a height, as long as it reaches back that far.
    #[test]
    fn journal_lists_changes_since_a_height() {
        let mut s = State::new();
        let mut prev = EntryHash::ZERO;
        for (h, names) in [(1, vec!["a", "b"]), (2, vec!["c"]), (3, vec!["a"])] {
            let events = names.iter().map(|n| applied(n, 1, h as i64)).collect();
            let e = build_entry(prev, h, 1, vec![req("a", Source::Cli)], events).unwrap();
            s.apply_entry(&e).unwrap();
            prev = e.hash;
        }
        let since = |s: &State, h| {
            s.changed_since(h)
                .map(|i| i.map(|k| k.name.clone()).collect::<Vec<_>>())
        };
        assert_eq!(since(&s, 3), Some(vec![]));
        assert_eq!(since(&s, 1), Some(vec!["a".into(), "c".into()]));
        assert_eq!(since(&s, 0).map(|v| v.len()), Some(4));
        assert_eq!(since(&s, 4), None, "ahead of the state");
        // A state restored at height 3 knows nothing before it.
        let mut restored = s.clone();
        restored.journal = ChangeJournal::starting_at(3);
        assert_eq!(since(&restored, 2), None);
        assert_eq!(since(&restored, 3), Some(vec![]));
        assert_eq!(restored, s, "journals do not make states differ");
        // Bounded: forgetting old changes makes older heights unknown.
        let mut j = ChangeJournal::default();
        for i in 0..(JOURNAL_MAX as u64 + 10) {
            j.record(i + 1, &key("x"));
        }
        assert_eq!(j.changes.len(), JOURNAL_MAX);
        assert_eq!(j.complete_after, 10);
    }

    /// A detached copy means the same state, shares every object instead of copying it, and
    /// knows no changes before its height.
    #[test]
    fn a_detached_copy_shares_the_objects() {
        let mut s = State::new();
        let mut prev = EntryHash::ZERO;
        for (h, names) in [(1, vec!["a", "b"]), (2, vec!["c"])] {
            let events = names.iter().map(|n| applied(n, 1, h as i64)).collect();
            let e = build_entry(prev, h, 1, vec![req("a", Source::Cli)], events).unwrap();
            s.apply_entry(&e).unwrap();
            prev = e.hash;
        }
        let d = s.detached();
        assert_eq!(d, s);
        assert_eq!((d.height, d.head_hash), (2, prev));
        assert_eq!(d.objects.len(), 3);
        for (k, o) in &s.objects {
            assert!(Arc::ptr_eq(o, &d.objects[k]), "{k} is copied, not shared");
        }
        assert!(d.changed_since(1).is_none());
        assert!(s.changed_since(1).is_some());
        // The original moves on; the copy stays as it was.
        let e = build_entry(
            prev,
            3,
            1,
            vec![req("a", Source::Cli)],
            vec![applied("d", 1, 3)],
        );
        s.apply_entry(&e.unwrap()).unwrap();
        assert_eq!((d.height, d.objects.len(), s.objects.len()), (2, 3, 4));
    }
}
