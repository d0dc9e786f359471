//! The scheduler: a deterministic pure function from committed state (workloads, nodes, current
//! assignments, observed readiness) to desired assignments. No clock, no randomness, no hash-map
//! iteration: every honest replica computes the same output from the same input.
//!
//! Rules, in order:
//! 1. Current instances are dropped when their workload is gone, their node is lost or unknown, or
//!    their index is beyond `replicas`. Everything else stays where it is (stable placement), even
//!    on a node that is not ready or no longer matches the selector.
//! 2. A slot whose new-template instance is ready drops its old instance; a slot keeps at most one
//!    old instance while its new one is not ready yet.
//! 3. Resources of kept instances are reserved first (all workloads), then new instances are placed
//!    workload by workload (sorted by key), slot by slot.
//! 4. An empty slot is filled at once. A slot running an old template is updated by surging (a new
//!    instance next to the old one, while `replicas + maxSurge` allows) or else by replacing it
//!    (while at least `replicas - maxUnavailable` slots stay ready); an unready old instance is
//!    replaced freely. With both limits 0, a surge of 1 is used so updates make progress.
//! 5. A node is eligible when it is ready, has every selector label, has the CPU, memory and GPUs
//!    free, none of the instance's host ports in use (only on nodes whose replicas share the
//!    node's network, `host_ports`), and fewer than `maxPerNode` instances of the
//!    workload. Among eligible nodes: fewest instances of this workload, then most free capacity
//!    (free CPU fraction + free memory fraction), then node name.

mod explain;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use nexus_schemas::quantity::{Bytes, Millicores};
use nexus_schemas::{ContentHash, Labels, Protocol, WorkloadSpec, selector_matches};
use serde::{Deserialize, Serialize};

pub use explain::{NoFit, Reason};

use crate::model::{Footprint, InstanceId, ReplicaId, WorkloadKey};

/// A workload as committed: key, spec, generation and the template hash its replicas must run
/// (normally [`crate::model::template_hash`] of the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInput {
    pub key: WorkloadKey,
    pub spec: WorkloadSpec,
    pub generation: u64,
    pub hash: ContentHash,
}

/// Liveness of a node as committed in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeCondition {
    /// Heartbeating: eligible for new replicas.
    Ready,
    /// Not heartbeating, not yet lost: keeps its replicas, gets no new ones.
    NotReady,
    /// Declared lost (f+1 attestations): its replicas are rescheduled elsewhere.
    Lost,
}

/// Allocatable resources of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu: Millicores,
    pub memory: Bytes,
    pub gpus: u32,
}

/// A node as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInput {
    pub name: String,
    pub capacity: Capacity,
    pub labels: Labels,
    pub condition: NodeCondition,
    /// Replicas on this node share its network, so their host ports conflict. `false` when each
    /// replica has a network namespace (and an address) of its own: ports are then not reserved.
    pub host_ports: bool,
}

/// An instance the previous schedule assigned, with its observed readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentInstance {
    pub id: InstanceId,
    pub node: String,
    /// Workload generation the instance was assigned at.
    pub generation: u64,
    /// What it reserves (from the spec it was started with).
    pub footprint: Footprint,
    /// Observed: running and passing its health probe.
    pub ready: bool,
}

/// Everything the scheduler looks at.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub workloads: &'a [WorkloadInput],
    pub nodes: &'a [NodeInput],
    pub current: &'a [CurrentInstance],
}

/// What an assignment means for the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AssignmentKind {
    /// Already assigned there, current template: keeps running.
    Keep,
    /// Newly placed: the node starts it.
    Start,
    /// Old template kept running while its slot's new instance becomes ready.
    KeepOld,
}

/// One desired instance on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: InstanceId,
    pub node: String,
    pub generation: u64,
    pub footprint: Footprint,
    pub kind: AssignmentKind,
}

/// A slot that could not get its new instance placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unschedulable {
    pub id: InstanceId,
    pub reason: Reason,
}

/// Progress of a workload towards its current template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub workload: WorkloadKey,
    pub hash: ContentHash,
    pub desired: u32,
    /// Instances of the current template assigned (ready or not).
    pub updated: u32,
    /// Of those, observed ready.
    pub updated_ready: u32,
    /// Old-template instances still assigned.
    pub old: u32,
}

impl Rollout {
    /// Every slot runs the current template and is ready.
    pub fn complete(&self) -> bool {
        self.old == 0 && self.updated == self.desired && self.updated_ready == self.desired
    }
}

/// The scheduler's output, sorted by instance id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schedule {
    pub assignments: Vec<Assignment>,
    pub unschedulable: Vec<Unschedulable>,
    pub rollouts: Vec<Rollout>,
}

impl Schedule {
    /// The assignments of one node.
    pub fn for_node<'s>(&'s self, node: &'s str) -> impl Iterator<Item = &'s Assignment> + 's {
        self.assignments.iter().filter(move |a| a.node == node)
    }

    /// The next round's [`CurrentInstance`]s, given observed readiness.
    pub fn as_current(&self, ready: impl Fn(&InstanceId) -> bool) -> Vec<CurrentInstance> {
        self.assignments
            .iter()
            .map(|a| CurrentInstance {
                id: a.id.clone(),
                node: a.node.clone(),
                generation: a.generation,
                footprint: a.footprint.clone(),
                ready: ready(&a.id),
            })
            .collect()
    }
}

/// A node during scheduling.
struct NodeState<'a> {
    input: &'a NodeInput,
    ready: bool,
    free_cpu: i128,
    free_mem: i128,
    free_gpus: i128,
    ports: BTreeSet<(u16, Protocol)>,
    /// XOR of the keyed hashes of `ports` (kept with the set, for the cluster fingerprint).
    ports_x: u64,
}

impl NodeState<'_> {
    /// Free CPU fraction + free memory fraction, in parts per million each.
    fn score(&self) -> u64 {
        let frac = |free: i128, cap: u64| -> i128 {
            let free = free.max(0);
            if cap == 0 {
                0
            } else if let Ok(f) = u64::try_from(free)
                && let Some(scaled) = f.checked_mul(1_000_000)
            {
                i128::from(scaled / cap) // the common case, without 128-bit division
            } else {
                free.saturating_mul(1_000_000) / i128::from(cap)
            }
        };
        let s = frac(self.free_cpu, self.input.capacity.cpu.0)
            + frac(self.free_mem, self.input.capacity.memory.0);
        u64::try_from(s.clamp(0, i128::from(u64::MAX))).unwrap_or(0)
    }

    fn fits(&self, fp: &Footprint) -> bool {
        self.free_cpu >= i128::from(fp.cpu.0)
            && self.free_mem >= i128::from(fp.memory.0)
            && self.free_gpus >= i128::from(fp.gpus)
            && !self.port_conflict(fp)
    }

    fn port_conflict(&self, fp: &Footprint) -> bool {
        self.input.host_ports && fp.ports.iter().any(|p| self.ports.contains(p))
    }
}

/// Mutable cluster view: nodes with free capacity, plus an index of ready nodes by score, and a
/// fingerprint of everything placement reads from it that changes while scheduling (free
/// resources and ports per node), kept up to date by every reservation.
struct Cluster<'a> {
    nodes: Vec<NodeState<'a>>,
    by_score: BTreeSet<(Reverse<u64>, usize)>,
    keys: &'a RandomState,
    fp: u64,
}

impl<'a> Cluster<'a> {
    fn new(inputs: &'a [NodeInput], keys: &'a RandomState) -> Self {
        let mut sorted: Vec<&NodeInput> = inputs.iter().collect();
        // Duplicated names (malformed input) keep the same entry whatever the input order.
        sorted.sort_by(|a, b| {
            let cap = |n: &NodeInput| (n.capacity.cpu, n.capacity.memory, n.capacity.gpus);
            a.name
                .cmp(&b.name)
                .then(cap(a).cmp(&cap(b)))
                .then(a.condition.cmp(&b.condition))
                .then(a.labels.cmp(&b.labels))
                .then(a.host_ports.cmp(&b.host_ports))
        });
        sorted.dedup_by(|b, a| a.name == b.name);
        let nodes: Vec<NodeState<'a>> = sorted
            .into_iter()
            .map(|n| NodeState {
                input: n,
                ready: n.condition == NodeCondition::Ready,
                free_cpu: i128::from(n.capacity.cpu.0),
                free_mem: i128::from(n.capacity.memory.0),
                free_gpus: i128::from(n.capacity.gpus),
                ports: BTreeSet::new(),
                ports_x: 0,
            })
            .collect();
        let mut c = Cluster {
            nodes,
            by_score: BTreeSet::new(),
            keys,
            fp: 0,
        };
        c.fp = (0..c.nodes.len()).fold(0u64, |fp, i| fp.wrapping_add(c.node_hash(i)));
        c
    }

    /// Keyed hash of what changes on node `i` while scheduling.
    fn node_hash(&self, i: usize) -> u64 {
        let n = &self.nodes[i];
        self.keys
            .hash_one((i, n.free_cpu, n.free_mem, n.free_gpus, n.ports_x))
    }

    /// Keyed hash of what does not change while scheduling: every node's input, in index order.
    fn static_hash(&self) -> u64 {
        let mut h = self.keys.build_hasher();
        for n in &self.nodes {
            let i = n.input;
            (&i.name, i.capacity.cpu, i.capacity.memory, i.capacity.gpus).hash(&mut h);
            (&i.labels, i.condition as u8, i.host_ports).hash(&mut h);
        }
        h.finish()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes
            .binary_search_by(|n| n.input.name.as_str().cmp(name))
            .ok()
    }

    fn build_index(&mut self) {
        self.by_score = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ready)
            .map(|(i, n)| (Reverse(n.score()), i))
            .collect();
    }

    /// Adds (`sign = 1`) or releases (`sign = -1`) a footprint on node `i`.
    fn reserve(&mut self, i: usize, fp: &Footprint, sign: i128) {
        if i >= self.nodes.len() {
            return;
        }
        let old_hash = self.node_hash(i);
        let keys = self.keys;
        let n = &mut self.nodes[i];
        let indexed = n.ready;
        let before = n.score();
        n.free_cpu -= sign * i128::from(fp.cpu.0);
        n.free_mem -= sign * i128::from(fp.memory.0);
        n.free_gpus -= sign * i128::from(fp.gpus);
        for p in fp.ports.iter().filter(|_| n.input.host_ports) {
            let changed = if sign > 0 {
                n.ports.insert(*p)
            } else {
                n.ports.remove(p)
            };
            if changed {
                n.ports_x ^= keys.hash_one(p);
            }
        }
        let after = n.score();
        if indexed && before != after {
            self.by_score.remove(&(Reverse(before), i));
            self.by_score.insert((Reverse(after), i));
        }
        self.fp = self
            .fp
            .wrapping_sub(old_hash)
            .wrapping_add(self.node_hash(i));
    }
}

/// What one placement looks for.
struct Want<'a> {
    footprint: &'a Footprint,
    selector: &'a Labels,
    max_per_node: u32,
}

/// Instances of the workload being placed, per node index.
type Counts = BTreeMap<usize, u32>;

fn count(counts: &Counts, i: usize) -> u32 {
    counts.get(&i).copied().unwrap_or(0)
}

/// Best eligible node, or `None`.
fn find_node(
    cluster: &Cluster<'_>,
    want: &Want<'_>,
    counts: &Counts,
    matching: Option<&[usize]>,
) -> Option<usize> {
    let eligible = |i: usize| -> bool {
        let n = &cluster.nodes[i];
        n.ready
            && n.fits(want.footprint)
            && (want.max_per_node == 0 || count(counts, i) < want.max_per_node)
    };
    let mut best: Option<(u32, Reverse<u64>, usize)> = None;
    match matching {
        None => {
            for &(score, i) in &cluster.by_score {
                if !eligible(i) {
                    continue;
                }
                let key = (count(counts, i), score, i);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
                if key.0 == 0 {
                    // Visiting in score order: the first eligible node without this workload wins.
                    break;
                }
            }
        }
        Some(list) => {
            for &i in list {
                if !eligible(i) {
                    continue;
                }
                let key = (count(counts, i), Reverse(cluster.nodes[i].score()), i);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
    }
    best.map(|(_, _, i)| i)
}

/// Explains why [`find_node`] found nothing.
fn explain(cluster: &Cluster<'_>, want: &Want<'_>) -> Reason {
    if !cluster.nodes.iter().any(|n| n.ready) {
        return Reason::NoReadyNodes;
    }
    let matching: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&i| selector_matches(want.selector, &cluster.nodes[i].input.labels))
        .collect();
    let selector = explain::selector_text(want.selector);
    if matching.is_empty() {
        return Reason::NoNodeMatchesSelector { selector };
    }
    let ready: Vec<usize> = matching
        .into_iter()
        .filter(|&i| cluster.nodes[i].ready)
        .collect();
    if ready.is_empty() {
        return Reason::NoReadyNodeMatchesSelector { selector };
    }
    let fp = want.footprint;
    let mut nf = NoFit {
        candidates: ready.len(),
        want_cpu: fp.cpu,
        want_memory: fp.memory,
        want_gpus: fp.gpus,
        max_per_node_limit: want.max_per_node,
        ..NoFit::default()
    };
    for i in ready {
        let n = &cluster.nodes[i];
        if n.free_cpu < i128::from(fp.cpu.0) {
            nf.cpu += 1;
        } else if n.free_mem < i128::from(fp.memory.0) {
            nf.memory += 1;
        } else if n.free_gpus < i128::from(fp.gpus) {
            nf.gpus += 1;
        } else if let Some(p) = fp
            .ports
            .iter()
            .find(|p| n.input.host_ports && n.ports.contains(p))
        {
            nf.ports += 1;
            nf.port.get_or_insert(*p);
        } else {
            nf.max_per_node += 1;
        }
    }
    Reason::NoFit(nf)
}

/// One slot of a workload during scheduling.
#[derive(Default)]
struct Slot<'a> {
    new: Option<(&'a CurrentInstance, usize)>,
    old: Option<(&'a CurrentInstance, usize)>,
}

/// What the scheduler decided for one workload: its assignments (sorted by instance id), the
/// slots it could not place, and its rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadOutcome {
    pub assignments: Vec<Assignment>,
    pub unschedulable: Vec<Unschedulable>,
    pub rollout: Rollout,
}

/// A reservation a workload's placement made (node index, footprint, +1 or -1).
type Reservation = (usize, Footprint, i8);

#[derive(Debug)]
struct MemoEntry {
    key: WorkloadKey,
    version: u64,
    slots: u64,
    nodes: u64,
    before: u64,
    reservations: Vec<Reservation>,
    outcome: Arc<WorkloadOutcome>,
    /// The outcome assigns something (read without touching the outcome).
    assigns: bool,
}

/// What [`schedule_memo`] remembers between rounds: per workload, its outcome and everything it
/// was computed from (the workload's version, a keyed hash of its current instances, of the
/// nodes, and of the cluster's free resources when its turn came), plus the reservations it
/// made. A workload whose inputs are all unchanged gets its outcome again, its reservations
/// replayed, without placing anything: a round over thousands of unchanged workloads costs a
/// comparison each, and its output is exactly what a full computation gives.
///
/// The hashes are SipHash with keys chosen when the memo is made, so inputs cannot be crafted
/// to collide.
#[derive(Debug, Default)]
pub struct Memo {
    /// Sorted by key.
    entries: Vec<MemoEntry>,
    /// An empty vector with room for the next call's entries.
    spare: Vec<MemoEntry>,
    keys: RandomState,
    /// Workloads computed (not taken from the memo) by the last call.
    pub computed: usize,
}

/// Computes the desired assignments. Pure and deterministic; the output does not depend on the
/// order of the input slices.
pub fn schedule(input: &Input<'_>) -> Schedule {
    let workloads: Vec<&WorkloadInput> = input.workloads.iter().collect();
    schedule_refs(workloads, input.nodes, input.current)
}

/// [`schedule`] over borrowed workloads (a caller that keeps its workloads elsewhere need not
/// copy them into one slice every round).
pub fn schedule_refs(
    workloads: Vec<&WorkloadInput>,
    nodes: &[NodeInput],
    current: &[CurrentInstance],
) -> Schedule {
    let versioned = workloads.into_iter().map(|w| (w, 0)).collect();
    let mut memo = Memo::default();
    schedule_memo(versioned, nodes, current, &mut memo);
    let mut out = Schedule::default();
    for o in memo.outcomes() {
        out.assignments.extend(o.assignments.iter().cloned());
        out.unschedulable.extend(o.unschedulable.iter().cloned());
        out.rollouts.push(o.rollout.clone());
    }
    out
}

impl Memo {
    /// The outcomes of the last [`schedule_memo`], one per workload in key order (a duplicated
    /// key keeps its highest generation). Concatenating their assignments gives them sorted by
    /// instance id.
    pub fn outcomes(&self) -> impl ExactSizeIterator<Item = &Arc<WorkloadOutcome>> {
        self.entries.iter().map(|e| &e.outcome)
    }

    /// The assignments of the last call, sorted by instance id (workloads that assign nothing
    /// are skipped without reading their outcomes).
    pub fn assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.entries
            .iter()
            .filter(|e| e.assigns)
            .flat_map(|e| &e.outcome.assignments)
    }
}

/// [`schedule_refs`] with a [`Memo`] kept between calls; see [`Memo::outcomes`] for the result.
/// Each workload comes with a version that identifies its key and content: a number the caller
/// changes whenever the workload changes and never gives two workloads (0: none; the workload
/// is then found by key and computed again).
pub fn schedule_memo(
    mut workloads: Vec<(&WorkloadInput, u64)>,
    nodes: &[NodeInput],
    current: &[CurrentInstance],
    memo: &mut Memo,
) {
    // Workloads sorted by key; a duplicated key keeps its highest generation.
    let limits = |w: &WorkloadInput| {
        let r = &w.spec.rolling_update;
        (w.spec.replicas, r.max_surge, r.max_unavailable)
    };
    if !workloads.is_sorted_by(|(a, _), (b, _)| a.key < b.key) {
        workloads.sort_by(|(a, av), (b, bv)| {
            a.key
                .cmp(&b.key)
                .then(b.generation.cmp(&a.generation))
                .then(a.hash.cmp(&b.hash))
                .then(limits(a).cmp(&limits(b)))
                .then(av.cmp(bv))
        });
        workloads.dedup_by(|(b, _), (a, _)| a.key == b.key);
    }
    schedule_memo_sorted(workloads, nodes, current, memo);
}

/// [`schedule_memo`] for workloads the caller keeps sorted by key, each key once (checked in
/// debug builds only: a round over thousands of workloads need not compare their keys again).
pub fn schedule_memo_sorted(
    workloads: Vec<(&WorkloadInput, u64)>,
    nodes: &[NodeInput],
    current: &[CurrentInstance],
    memo: &mut Memo,
) {
    debug_assert!(workloads.is_sorted_by(|(a, _), (b, _)| a.key < b.key));
    let keys = memo.keys.clone();
    let mut cluster = Cluster::new(nodes, &keys);
    let nodes_hash = cluster.static_hash();

    // Current instances grouped by workload, in id order, each at most once.
    let mut current: Vec<&CurrentInstance> = current.iter().collect();
    current.sort_by(|a, b| {
        a.id.cmp(&b.id)
            .then(a.node.cmp(&b.node))
            .then(b.ready.cmp(&a.ready))
            .then(b.generation.cmp(&a.generation))
    });
    current.dedup_by(|b, a| a.id == b.id);

    // Phase 1: which current instances stay.
    // Only workloads with current instances have slots here (by workload index); the others'
    // slots are all empty.
    let mut slots: Vec<(usize, Vec<Slot<'_>>, u64)> = Vec::new();
    let mut cursor = 0;
    while cursor < current.len() {
        let of = &current[cursor].id.replica.workload;
        let Ok(wi) = workloads.binary_search_by(|(w, _)| w.key.cmp(of)) else {
            // Instances of workloads that no longer exist: dropped.
            while cursor < current.len() && &current[cursor].id.replica.workload == of {
                cursor += 1;
            }
            continue;
        };
        let w = workloads[wi].0;
        let replicas = w.spec.replicas as usize;
        let mut ws: Vec<Slot<'_>> = Vec::new();
        ws.resize_with(replicas, Slot::default);
        let mut olds: BTreeMap<usize, Vec<(&CurrentInstance, usize)>> = BTreeMap::new();
        while cursor < current.len() && current[cursor].id.replica.workload == w.key {
            let c = current[cursor];
            cursor += 1;
            let Some(ni) = cluster.index(&c.node) else {
                continue;
            };
            if cluster.nodes[ni].input.condition == NodeCondition::Lost {
                continue;
            }
            let Some(slot) = ws.get_mut(c.id.replica.index as usize) else {
                continue;
            };
            if c.id.hash == w.hash {
                slot.new = Some((c, ni));
            } else {
                olds.entry(c.id.replica.index as usize)
                    .or_default()
                    .push((c, ni));
            }
        }
        for (index, mut candidates) in olds {
            let slot = &mut ws[index];
            if slot.new.is_some_and(|(n, _)| n.ready) {
                continue; // replaced: the new instance is ready
            }
            candidates.sort_by(|(a, _), (b, _)| {
                b.ready
                    .cmp(&a.ready)
                    .then(b.generation.cmp(&a.generation))
                    .then(a.node.cmp(&b.node))
            });
            slot.old = candidates.first().copied();
        }
        let mut h = keys.build_hasher();
        for (i, s) in ws.iter().enumerate() {
            let tagged = s.new.iter().map(|x| (0u8, x));
            for (tag, (c, ni)) in tagged.chain(s.old.iter().map(|x| (1u8, x))) {
                cluster.reserve(*ni, &c.footprint, 1);
                (i, tag, &c.id, &c.node, c.generation, c.ready).hash(&mut h);
                (&c.footprint, *ni).hash(&mut h);
            }
        }
        slots.push((wi, ws, h.finish()));
    }
    cluster.build_index();

    // Phase 2: fill and update slots, workload by workload; unchanged workloads whose turn
    // finds the cluster as it was come from the memo.
    let mut selector_cache: BTreeMap<&Labels, Vec<usize>> = BTreeMap::new();
    // Entries move from the last call's vector to the spare one (both keep their capacity).
    let mut old_entries = std::mem::take(&mut memo.entries);
    let mut entries = std::mem::take(&mut memo.spare);
    entries.clear();
    entries.reserve(workloads.len());
    let mut old = old_entries.drain(..).peekable();
    let mut slots = slots.into_iter().peekable();
    memo.computed = 0;
    for (wi, &(w, version)) in workloads.iter().enumerate() {
        let (ws, slots_hash) = match slots.next_if(|(i, _, _)| *i == wi) {
            Some((_, ws, h)) => (ws, h),
            None => (Vec::new(), 0),
        };
        // The same version is the same workload; otherwise keys tell (entries of workloads
        // that are gone are skipped).
        let same = |e: &MemoEntry| {
            if version != 0 && e.version == version {
                std::cmp::Ordering::Equal
            } else {
                e.key.cmp(&w.key)
            }
        };
        while old.next_if(|e| same(e).is_lt()).is_some() {}
        let before = cluster.fp;
        let reuse = old.next_if(|e| same(e).is_eq()).filter(|e| {
            version != 0
                && e.version == version
                && e.slots == slots_hash
                && e.nodes == nodes_hash
                && e.before == before
        });
        let entry = match reuse {
            Some(e) => {
                for (i, fp, sign) in &e.reservations {
                    cluster.reserve(*i, fp, i128::from(*sign));
                }
                e
            }
            None => {
                memo.computed += 1;
                let mut reservations = Vec::new();
                let outcome = place(w, &ws, &mut cluster, &mut selector_cache, &mut reservations);
                MemoEntry {
                    key: w.key.clone(),
                    version,
                    slots: slots_hash,
                    nodes: nodes_hash,
                    before,
                    reservations,
                    assigns: !outcome.assignments.is_empty(),
                    outcome: Arc::new(outcome),
                }
            }
        };
        entries.push(entry);
    }
    drop(old);
    memo.entries = entries;
    memo.spare = old_entries;
}

/// Adds (`sign = 1`) or releases (`sign = -1`) a footprint on node `i` and records it.
fn reserve(
    cluster: &mut Cluster<'_>,
    reservations: &mut Vec<Reservation>,
    i: usize,
    fp: &Footprint,
    sign: i8,
) {
    cluster.reserve(i, fp, i128::from(sign));
    reservations.push((i, fp.clone(), sign));
}

/// Phase 2 for one workload: keeps, starts and replaces its instances on `cluster`, recording
/// every reservation it makes.
fn place<'w>(
    w: &'w WorkloadInput,
    ws: &[Slot<'_>],
    cluster: &mut Cluster<'_>,
    selector_cache: &mut BTreeMap<&'w Labels, Vec<usize>>,
    reservations: &mut Vec<Reservation>,
) -> WorkloadOutcome {
    let spec = &w.spec;
    let replicas = spec.replicas;
    let (mut surge, unavailable) = (
        spec.rolling_update.max_surge,
        spec.rolling_update.max_unavailable,
    );
    if surge == 0 && unavailable == 0 {
        surge = 1;
    }
    let mut counts: Counts = BTreeMap::new();
    let mut running: i64 = 0;
    let mut available: i64 = 0;
    for s in ws {
        for (_, ni) in s.new.iter().chain(s.old.iter()) {
            *counts.entry(*ni).or_default() += 1;
            running += 1;
        }
        if s.new.is_some_and(|(c, _)| c.ready) || s.old.is_some_and(|(c, _)| c.ready) {
            available += 1;
        }
    }
    let mut surge_budget = i64::from(replicas) + i64::from(surge) - running;
    let mut unavailable_budget = i64::from(unavailable) - (i64::from(replicas) - available);

    let footprint = Footprint::of(spec);
    let matching: Option<&[usize]> = if spec.placement.node_selector.is_empty() {
        None
    } else {
        let list = selector_cache
            .entry(&spec.placement.node_selector)
            .or_insert_with(|| {
                (0..cluster.nodes.len())
                    .filter(|&i| {
                        selector_matches(
                            &spec.placement.node_selector,
                            &cluster.nodes[i].input.labels,
                        )
                    })
                    .collect()
            });
        Some(list.as_slice())
    };
    let mut out = WorkloadOutcome {
        assignments: Vec::new(),
        unschedulable: Vec::new(),
        rollout: Rollout {
            workload: w.key.clone(),
            hash: w.hash,
            desired: replicas,
            updated: 0,
            updated_ready: 0,
            old: 0,
        },
    };
    let mut fresh_failure: Option<Reason> = None;

    for index in 0..replicas as usize {
        let slot = ws.get(index);
        let (new, old) = (slot.and_then(|s| s.new), slot.and_then(|s| s.old));
        let id = || InstanceId::new(ReplicaId::new(w.key.clone(), index as u32), w.hash);
        let keep = |out: &mut WorkloadOutcome, c: &CurrentInstance, kind| {
            out.assignments.push(Assignment {
                id: c.id.clone(),
                node: c.node.clone(),
                generation: c.generation,
                footprint: c.footprint.clone(),
                kind,
            });
        };
        if let Some((c, _)) = new {
            keep(&mut out, c, AssignmentKind::Keep);
            out.rollout.updated += 1;
            out.rollout.updated_ready += u32::from(c.ready);
            if let Some((o, _)) = old {
                keep(&mut out, o, AssignmentKind::KeepOld);
                out.rollout.old += 1;
            }
            continue;
        }
        let fp = match &footprint {
            Ok(fp) => fp,
            Err(e) => {
                if let Some((o, _)) = old {
                    keep(&mut out, o, AssignmentKind::KeepOld);
                    out.rollout.old += 1;
                }
                out.unschedulable.push(Unschedulable {
                    id: id(),
                    reason: Reason::InvalidSpec(e.to_string()),
                });
                continue;
            }
        };
        let want = Want {
            footprint: fp,
            selector: &spec.placement.node_selector,
            max_per_node: spec.placement.max_per_node,
        };
        let place = |cluster: &mut Cluster<'_>,
                     counts: &mut Counts,
                     res: &mut Vec<Reservation>|
         -> Result<usize, Reason> {
            match find_node(cluster, &want, counts, matching) {
                Some(i) => {
                    reserve(cluster, res, i, fp, 1);
                    *counts.entry(i).or_default() += 1;
                    Ok(i)
                }
                None => Err(explain(cluster, &want)),
            }
        };
        let start = |out: &mut WorkloadOutcome, i: usize, cluster: &Cluster<'_>| {
            out.assignments.push(Assignment {
                id: id(),
                node: cluster.nodes[i].input.name.clone(),
                generation: w.generation,
                footprint: fp.clone(),
                kind: AssignmentKind::Start,
            });
        };

        match old {
            None => {
                // An empty slot: fill it (a failure for one fresh slot holds for the rest).
                let result = match &fresh_failure {
                    Some(r) => Err(r.clone()),
                    None => place(cluster, &mut counts, reservations),
                };
                match result {
                    Ok(i) => {
                        start(&mut out, i, cluster);
                        out.rollout.updated += 1;
                    }
                    Err(reason) => {
                        fresh_failure = Some(reason.clone());
                        out.unschedulable.push(Unschedulable { id: id(), reason });
                    }
                }
            }
            Some((o, oi)) => {
                let mut placed = false;
                let mut failure = None;
                if o.ready && surge_budget > 0 {
                    match place(cluster, &mut counts, reservations) {
                        Ok(i) => {
                            start(&mut out, i, cluster);
                            keep(&mut out, o, AssignmentKind::KeepOld);
                            out.rollout.old += 1;
                            surge_budget -= 1;
                            placed = true;
                        }
                        Err(r) => failure = Some(r),
                    }
                }
                if !placed && (!o.ready || unavailable_budget > 0) {
                    // Replace: release the old instance, place, restore it if nothing fits.
                    reserve(cluster, reservations, oi, &o.footprint, -1);
                    if let Some(n) = counts.get_mut(&oi) {
                        *n = n.saturating_sub(1);
                    }
                    match place(cluster, &mut counts, reservations) {
                        Ok(i) => {
                            start(&mut out, i, cluster);
                            if o.ready {
                                unavailable_budget -= 1;
                            }
                            placed = true;
                        }
                        Err(r) => {
                            reserve(cluster, reservations, oi, &o.footprint, 1);
                            *counts.entry(oi).or_default() += 1;
                            failure = Some(r);
                        }
                    }
                }
                if placed {
                    out.rollout.updated += 1;
                } else {
                    keep(&mut out, o, AssignmentKind::KeepOld);
                    out.rollout.old += 1;
                    if let Some(reason) = failure {
                        out.unschedulable.push(Unschedulable { id: id(), reason });
                    }
                }
            }
        }
    }
    out.assignments.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
