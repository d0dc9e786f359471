//! One scheduling round, without IO: committed state + what agents report + the previous
//! schedule → the schedule, each node's [`AssignmentSet`], workload and service status, and the
//! node table. Every honest replica running it on the same committed state and the same
//! readiness computes the same sets (BFT rule 4); node liveness enters only through committed
//! `NodeLost` facts, never through this replica's own view of heartbeats.
//!
//! Objects are parsed once per resource version ([`Cache`]); replica specs of old templates
//! (still running during a rolling update) come from a lookup the caller backs with the log's
//! history of the workload.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use nexus_api::agent::{
    AssignmentSet, Capacity as WireCapacity, InstanceReport, NETWORK_LABEL, NodeStatus, Phase,
};
use nexus_api::network::PolicyFeed;
use nexus_ebpf::{PolicyObject, WorkloadEndpoints, WorkloadId};
use nexus_ledger::state::NodeState;
use nexus_ledger::{ObjectState, State};
use nexus_reconciler::model::{
    Footprint, InstanceId, WorkloadKey, template_hash, template_hash_of_canonical,
};
use nexus_reconciler::scheduler::{
    Assignment, Capacity, CurrentInstance, Memo, NodeCondition, NodeInput, Schedule, WorkloadInput,
    WorkloadOutcome, schedule_memo_sorted,
};
use nexus_reconciler::services::{Candidate, endpoints};
use nexus_reconciler::spec::ReplicaSpec;
use nexus_schemas::quantity::{Bytes, Millicores};
use nexus_schemas::{
    ContentHash, Kind, Labels, Object, ObjectKey, ServiceSpec, Spec, WorkloadSpec,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// What this replica knows about one node from its agent (soft state).
#[derive(Debug, Clone, Default)]
pub struct NodeReport {
    pub instances: BTreeMap<InstanceId, InstanceReport>,
    /// Heard from within the node timeout.
    pub fresh: bool,
    pub last_seen_ms: Option<u64>,
    pub conditions: Vec<String>,
}

/// A workload parsed from its canonical object.
#[derive(Debug)]
struct ParsedWorkload {
    input: WorkloadInput,
    labels: Labels,
    okey: ObjectKey,
    resource_version: u64,
    /// Unique to this parse (a changed or recreated workload gets a new one): the scheduler
    /// memo's version.
    serial: u64,
}

/// A workload's status and what it was built from.
#[derive(Debug)]
struct StatusEntry {
    key: ObjectKey,
    /// The workload as parsed (its content).
    workload: Arc<ParsedWorkload>,
    outcome: Arc<WorkloadOutcome>,
    /// Hash of the rest of its inputs (generation, spec errors, its instances' reports); 0 when
    /// nothing runs and nothing is reported (the outcome alone decides).
    print: u64,
}

/// Statuses that changed in a round, in the order found (`None`: the object is gone). Indexing
/// by key finds a status that changed (tests).
#[derive(Debug, Default)]
pub struct StatusChanges(pub Vec<(ObjectKey, Option<Arc<Value>>)>);

impl StatusChanges {
    /// The new status of `key`, if it changed in this round.
    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Applies the changes to a table of statuses.
    pub fn apply(self, table: &mut BTreeMap<ObjectKey, Arc<Value>>) {
        for (k, v) in self.0 {
            match v {
                Some(v) => {
                    table.insert(k, v);
                }
                None => {
                    table.remove(&k);
                }
            }
        }
    }
}

impl std::ops::Index<&ObjectKey> for StatusChanges {
    type Output = Value;
    fn index(&self, key: &ObjectKey) -> &Value {
        match self.get(key) {
            Some(v) => v,
            None => panic!("the status of {key} did not change in this round"),
        }
    }
}

/// A node's last assignment set and what it was built from.
#[derive(Debug)]
struct CachedSet {
    ids: Vec<(InstanceId, u64)>,
    network: Option<String>,
    errors: Vec<(WorkloadKey, String)>,
    set: Arc<AssignmentSet>,
}

/// Objects parsed once per resource version, every template seen (by hash), and each node's
/// last assignment set.
#[derive(Debug, Default)]
pub struct Cache {
    /// Every workload of the state at `height`, sorted by key (shared with the round's snapshot,
    /// updated in place between rounds).
    workloads: Arc<Vec<Arc<ParsedWorkload>>>,
    /// The state height `workloads` reflects (`None`: never collected).
    height: Option<u64>,
    /// Numbers each parsed workload: a changed or recreated workload gets a new one.
    serial: u64,
    services: HashMap<ObjectKey, (u64, Arc<ServiceSpec>)>,
    policies: HashMap<ObjectKey, (u64, Arc<PolicyObject>)>,
    /// Specs of templates that are no longer their workload's current one (kept from the
    /// workload's last version, or read from its history), for instances still running them.
    templates: HashMap<(WorkloadKey, ContentHash), WorkloadSpec>,
    sets: HashMap<String, CachedSet>,
    /// The scheduler's memory of each workload's outcome.
    memo: Memo,
    /// Workload statuses in key order, with what they were built from.
    statuses: Vec<StatusEntry>,
    /// An empty vector with room for the next round's statuses.
    spare_statuses: Vec<StatusEntry>,
    service_statuses: BTreeMap<ObjectKey, Arc<Value>>,
}

impl Cache {
    /// Remembers a template (e.g. one read from the workload's history).
    pub fn add_template(&mut self, key: WorkloadKey, spec: WorkloadSpec) {
        self.templates.insert((key, template_hash(&spec)), spec);
    }
}

fn parse(value: &Value) -> Option<Object> {
    Object::deserialize(value).ok()
}

type Services = Vec<(ObjectKey, Arc<ServiceSpec>)>;

/// An object either parsed already or still to parse.
enum Item<T> {
    Cached(Arc<T>),
    Raw { resource_version: u64, value: Value },
}

/// A workload as [`Cache::collect`] found it.
struct WorkloadChange {
    key: ObjectKey,
    now: Now,
}

enum Now {
    Gone,
    /// As cached (at this resource version).
    Same(u64),
    /// Changed: the object as the state holds it (shared, parsed after the lock is released).
    Changed(Arc<ObjectState>),
}

/// What a round needs from the state, taken quickly under its read lock ([`Cache::collect`]):
/// the workloads that changed (all of them only on the first round, or when the state's change
/// journal does not reach back to the last round), services and policies by reference when
/// cached, only changed ones copied.
pub struct Collected {
    height: u64,
    /// Sorted by key; `full`: every workload of the state (anything else is gone).
    workloads: Vec<WorkloadChange>,
    full: bool,
    services: Vec<(ObjectKey, Item<ServiceSpec>)>,
    policies: Vec<(ObjectKey, Item<PolicyObject>)>,
    nodes: Vec<NodeState>,
}

/// The committed state a round works on (no lock held).
pub struct Snapshot {
    pub height: u64,
    workloads: Arc<Vec<Arc<ParsedWorkload>>>,
    services: Services,
    policies: Vec<Arc<PolicyObject>>,
    pub nodes: Vec<NodeState>,
}

impl Cache {
    /// Under the state lock: cheap, parses nothing. Workloads: only those the state's change
    /// journal lists since the last round.
    pub fn collect(&mut self, state: &State) -> Collected {
        let workload_change = |key: &ObjectKey| WorkloadChange {
            key: key.clone(),
            now: match state.objects.get(key) {
                Some(o) => Now::Changed(o.clone()),
                None => Now::Gone,
            },
        };
        let changed = self
            .height
            .and_then(|h| state.changed_since(h))
            .map(|keys| {
                let mut keys: Vec<&ObjectKey> = keys.filter(|k| k.kind == Kind::Workload).collect();
                keys.sort();
                keys.dedup();
                keys
            });
        let (workloads, full) = match changed {
            Some(keys) => (keys.into_iter().map(workload_change).collect(), false),
            None => {
                let cached = &self.workloads;
                let all = state
                    .list_shared(Kind::Workload, None)
                    .map(|(key, o)| {
                        let same = cached
                            .binary_search_by(|w| w.okey.cmp(key))
                            .is_ok_and(|i| cached[i].resource_version == o.resource_version);
                        let rv = o.resource_version;
                        WorkloadChange {
                            key: key.clone(),
                            now: if same {
                                Now::Same(rv)
                            } else {
                                Now::Changed(o.clone())
                            },
                        }
                    })
                    .collect();
                (all, true)
            }
        };
        let mut services = Vec::new();
        for (key, o) in state.list(Kind::Service, None) {
            let item = match self
                .services
                .get(key)
                .filter(|(rv, _)| *rv == o.resource_version)
            {
                Some((_, s)) => Item::Cached(s.clone()),
                None => Item::Raw {
                    resource_version: o.resource_version,
                    value: o.object.clone(),
                },
            };
            services.push((key.clone(), item));
        }
        let mut policies = Vec::new();
        for (key, o) in state.list(Kind::NetworkPolicy, None) {
            let item = match self
                .policies
                .get(key)
                .filter(|(rv, _)| *rv == o.resource_version)
            {
                Some((_, p)) => Item::Cached(p.clone()),
                None => Item::Raw {
                    resource_version: o.resource_version,
                    value: o.object.clone(),
                },
            };
            policies.push((key.clone(), item));
        }
        // Forget deleted services and policies. Every cached key was live once, so a cache
        // holds a deleted one only if it is larger than what is live now (a stale entry is
        // harmless meanwhile: lookups are by live key and resource version).
        if self.services.len() > services.len() {
            self.services.retain(|k, _| state.objects.contains_key(k));
        }
        if self.policies.len() > policies.len() {
            self.policies.retain(|k, _| state.objects.contains_key(k));
        }
        Collected {
            height: state.height,
            workloads,
            full,
            services,
            policies,
            nodes: state.nodes.values().cloned().collect(),
        }
    }

    /// Without the lock: parses what changed.
    pub fn finish(&mut self, c: Collected) -> Snapshot {
        let mut parsed: Vec<Option<Arc<ParsedWorkload>>> = Vec::with_capacity(c.workloads.len());
        for change in &c.workloads {
            let p = match &change.now {
                Now::Same(rv) => {
                    let i = self.workloads.binary_search_by(|w| w.okey.cmp(&change.key));
                    i.ok()
                        .map(|i| self.workloads[i].clone())
                        .filter(|w| w.resource_version == *rv)
                }
                Now::Changed(o) => {
                    self.parse_workload(&change.key, o.resource_version, o.generation, &o.object)
                }
                Now::Gone => None,
            };
            parsed.push(p);
        }
        let workloads = Arc::make_mut(&mut self.workloads);
        if c.full {
            *workloads = parsed.into_iter().flatten().collect();
        } else {
            for (change, p) in c.workloads.iter().zip(parsed) {
                match (workloads.binary_search_by(|w| w.okey.cmp(&change.key)), p) {
                    (Ok(i), Some(p)) => {
                        let old = std::mem::replace(&mut workloads[i], p);
                        if old.input.hash != workloads[i].input.hash {
                            // A new template: the old one may still run during the rollout.
                            let key = (old.input.key.clone(), old.input.hash);
                            self.templates.insert(key, old.input.spec.clone());
                        }
                    }
                    (Ok(i), None) => {
                        workloads.remove(i);
                    }
                    (Err(i), Some(p)) => workloads.insert(i, p),
                    (Err(_), None) => {}
                }
            }
        }
        let deleted = c.full || c.workloads.iter().any(|w| matches!(w.now, Now::Gone));
        if deleted && !self.templates.is_empty() {
            let live = &self.workloads;
            self.templates
                .retain(|(wk, _), _| live.binary_search_by(|w| w.input.key.cmp(wk)).is_ok());
        }
        self.height = Some(c.height);
        let mut services = Vec::with_capacity(c.services.len());
        for (key, item) in c.services {
            match item {
                Item::Cached(s) => services.push((key, s)),
                Item::Raw {
                    resource_version,
                    value,
                } => {
                    let Some(Spec::Service(spec)) = parse(&value).map(|o| o.spec) else {
                        continue;
                    };
                    let s = Arc::new(spec);
                    self.services
                        .insert(key.clone(), (resource_version, s.clone()));
                    services.push((key, s));
                }
            }
        }
        let mut policies = Vec::with_capacity(c.policies.len());
        for (key, item) in c.policies {
            match item {
                Item::Cached(p) => policies.push(p),
                Item::Raw {
                    resource_version,
                    value,
                } => {
                    let Some(p) = parse(&value).as_ref().and_then(PolicyObject::from_object) else {
                        continue;
                    };
                    let p = Arc::new(p);
                    self.policies.insert(key, (resource_version, p.clone()));
                    policies.push(p);
                }
            }
        }
        Snapshot {
            height: c.height,
            workloads: self.workloads.clone(),
            services,
            policies,
            nodes: c.nodes,
        }
    }

    fn parse_workload(
        &mut self,
        key: &ObjectKey,
        resource_version: u64,
        generation: u64,
        value: &Value,
    ) -> Option<Arc<ParsedWorkload>> {
        let obj = parse(value)?;
        let Spec::Workload(spec) = obj.spec else {
            return None;
        };
        let wk = WorkloadKey::from(key);
        // The state holds canonical objects: hash the template on the JSON (the typed spec
        // gives the same hash, at twice the cost).
        let hash = template_hash_of_canonical(value).unwrap_or_else(|| template_hash(&spec));
        self.serial += 1;
        Some(Arc::new(ParsedWorkload {
            input: WorkloadInput {
                key: wk,
                spec,
                generation,
                hash,
            },
            labels: obj.metadata.labels,
            okey: key.clone(),
            resource_version,
            serial: self.serial,
        }))
    }

    /// Both steps at once (tests).
    pub fn snapshot(&mut self, state: &State) -> Snapshot {
        let c = self.collect(state);
        self.finish(c)
    }
}

/// The /24 of each node in a `a.b.0.0/16` pool: node number `i` (1-based, in order of first
/// join, then name) gets `a.b.i.0/24`; nodes beyond 254 get none (host network).
pub fn node_subnets(nodes: &[NodeState], pool: Option<[u8; 2]>) -> BTreeMap<String, String> {
    let Some([a, b]) = pool else {
        return BTreeMap::new();
    };
    let mut order: Vec<(u64, &str)> = nodes
        .iter()
        .map(|n| (n.joined_height, n.info.name.as_str()))
        .collect();
    order.sort();
    order
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i < 254)
        .map(|(i, (_, name))| (name.to_string(), format!("{a}.{b}.{}.0/24", i + 1)))
        .collect()
}

/// Everything a round looks at.
pub struct RoundInput<'a> {
    pub snapshot: &'a Snapshot,
    pub reports: &'a BTreeMap<String, NodeReport>,
    /// The previous round's schedule; `None` on the first round after start (current
    /// placement is then taken from what the agents report running).
    pub prev: Option<&'a Schedule>,
    pub pool: Option<[u8; 2]>,
}

/// What a round produced.
#[derive(Debug, Default)]
pub struct RoundOutput {
    /// Where instances go: the assignments (unschedulable slots and rollouts are in the
    /// workloads' statuses).
    pub schedule: Schedule,
    /// One per node in the log (lost nodes get an empty set).
    pub sets: BTreeMap<String, Arc<AssignmentSet>>,
    /// `ObjectInfo.status` of workloads and services that changed in this round.
    pub statuses: StatusChanges,
    pub nodes: Vec<NodeStatus>,
    /// The network policy feed every node gets.
    pub policy: Arc<PolicyFeed>,
}

fn report<'r>(
    reports: &'r BTreeMap<String, NodeReport>,
    node: &str,
    id: &InstanceId,
) -> Option<&'r InstanceReport> {
    reports.get(node)?.instances.get(id)
}

/// Runs one round. `old_template` finds the spec of a template no longer current (from the
/// workload's history); instances whose spec cannot be found are left out of the sets.
///
/// The cost of a round follows what changed: the scheduler's [`Memo`] hands back the outcome of
/// every workload whose inputs are unchanged, and a workload's status is rebuilt only when its
/// outcome, its instances' reports or its spec errors changed. What is left per workload is a
/// few comparisons.
pub fn run(
    cache: &mut Cache,
    input: &RoundInput<'_>,
    old_template: &mut dyn FnMut(&WorkloadKey, &ContentHash) -> Option<WorkloadSpec>,
) -> RoundOutput {
    let snap = input.snapshot;
    let (workloads, services) = (&snap.workloads[..], &snap.services);
    let nodes: Vec<NodeInput> = snap
        .nodes
        .iter()
        .map(|n| NodeInput {
            name: n.info.name.clone(),
            capacity: Capacity {
                cpu: Millicores(n.info.cpu_millis),
                memory: Bytes(n.info.memory_bytes),
                gpus: n.info.gpus,
            },
            labels: n.info.labels.clone(),
            condition: if n.lost_height.is_some() {
                NodeCondition::Lost
            } else {
                NodeCondition::Ready
            },
            host_ports: n.info.labels.get(NETWORK_LABEL).map(String::as_str) != Some("isolated"),
        })
        .collect();
    let current: Vec<CurrentInstance> = match input.prev {
        Some(prev) => {
            let node_of: HashMap<&InstanceId, &str> = prev
                .assignments
                .iter()
                .map(|a| (&a.id, a.node.as_str()))
                .collect();
            prev.as_current(|id| {
                node_of
                    .get(id)
                    .and_then(|node| report(input.reports, node, id))
                    .is_some_and(|r| r.ready)
            })
        }
        None => seed(&snap.nodes, input.reports, workloads),
    };
    // The cache keeps its workloads sorted by key, each once.
    schedule_memo_sorted(
        workloads.iter().map(|w| (&w.input, w.serial)).collect(),
        &nodes,
        &current,
        &mut cache.memo,
    );
    let memo = &cache.memo;
    // Keys are unique in the state, so there is one outcome per workload, in the same order.
    debug_assert_eq!(memo.outcomes().len(), workloads.len());
    let assignments: Vec<&Assignment> = memo.assignments().collect();

    // Each node's set, rebuilt only when its instances (id, generation) or subnet changed: the
    // same instance always has the same spec (the template hash covers everything in it).
    let subnets = node_subnets(&snap.nodes, input.pool);
    let mut per_node: BTreeMap<&str, Vec<&Assignment>> = BTreeMap::new();
    for a in &assignments {
        per_node.entry(a.node.as_str()).or_default().push(a);
    }
    let mut spec_errors: BTreeMap<WorkloadKey, String> = BTreeMap::new();
    let mut out = RoundOutput::default();
    cache
        .sets
        .retain(|name, _| snap.nodes.iter().any(|n| &n.info.name == name));
    for n in &snap.nodes {
        let name = n.info.name.clone();
        let assigned = if n.lost_height.is_some() {
            Vec::new()
        } else {
            per_node.get(name.as_str()).cloned().unwrap_or_default()
        };
        let ids: Vec<(InstanceId, u64)> = assigned
            .iter()
            .map(|a| (a.id.clone(), a.generation))
            .collect();
        let network = subnets.get(&name).cloned();
        if let Some(c) = cache.sets.get(&name)
            && c.ids == ids
            && c.network == network
        {
            spec_errors.extend(c.errors.iter().cloned());
            out.sets.insert(name, c.set.clone());
            continue;
        }
        let mut replicas = Vec::with_capacity(assigned.len());
        let mut errors = Vec::new();
        for a in assigned {
            let wk = &a.id.replica.workload;
            let current = find_workload(workloads, wk).filter(|w| w.input.hash == a.id.hash);
            let spec = match current {
                Some(w) => &w.input.spec,
                None => {
                    let key = (wk.clone(), a.id.hash);
                    if !cache.templates.contains_key(&key)
                        && let Some(spec) = old_template(wk, &a.id.hash)
                    {
                        cache.templates.insert(key.clone(), spec);
                    }
                    match cache.templates.get(&key) {
                        Some(spec) => spec,
                        None => continue,
                    }
                }
            };
            match ReplicaSpec::from_workload(a.id.clone(), a.generation, spec) {
                Ok(r) => replicas.push(r),
                Err(e) => errors.push((wk.clone(), e.to_string())),
            }
        }
        spec_errors.extend(errors.iter().cloned());
        let set = Arc::new(AssignmentSet::new(
            name.clone(),
            snap.height,
            network.clone(),
            replicas,
        ));
        cache.sets.insert(
            name.clone(),
            CachedSet {
                ids,
                network,
                errors,
                set: set.clone(),
            },
        );
        out.sets.insert(name, set);
    }

    // Workload status, one workload at a time: rebuilt only when what it shows changed.
    let mut old_statuses = std::mem::take(&mut cache.statuses);
    let mut statuses = std::mem::take(&mut cache.spare_statuses);
    statuses.clear();
    statuses.reserve(workloads.len());
    let mut old = old_statuses.drain(..).peekable();
    for (w, outcome) in workloads.iter().zip(memo.outcomes()) {
        // The same parse is the same workload (a pointer comparison, nothing read); otherwise
        // keys tell.
        let same = |e: &StatusEntry| {
            if Arc::ptr_eq(&e.workload, w) {
                std::cmp::Ordering::Equal
            } else {
                e.key.cmp(&w.okey)
            }
        };
        // A pending workload whose outcome is the same: its status cannot have changed.
        if spec_errors.is_empty()
            && let Some(e) = old.next_if(|e| {
                Arc::ptr_eq(&e.workload, w) && Arc::ptr_eq(&e.outcome, outcome) && e.print == 0
            })
        {
            statuses.push(e);
            continue;
        }
        while let Some(gone) = old.next_if(|e| same(e).is_lt()) {
            out.statuses.0.push((gone.key, None));
        }
        let key = &w.input.key;
        let spec_error = spec_errors.get(key);
        // What the status shows beyond the outcome: the reports of its instances (nothing when
        // nothing runs and nothing is reported, the common case for a pending workload).
        let print = if outcome.assignments.is_empty() && spec_error.is_none() {
            0
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (w.input.generation, w.input.spec.replicas, &w.input.hash).hash(&mut h);
            spec_error.hash(&mut h);
            for a in &outcome.assignments {
                if let Some(r) = report(input.reports, &a.node, &a.id) {
                    let message = &r.message;
                    (
                        r.ready,
                        r.phase as u8,
                        r.restarts,
                        r.address,
                        r.pid,
                        message,
                    )
                        .hash(&mut h);
                }
            }
            h.finish()
        };
        // (A status built from other inputs is dropped here and rebuilt below.)
        if let Some(e) = old.next_if(|e| same(e).is_eq())
            && Arc::ptr_eq(&e.outcome, outcome)
            && e.print == print
        {
            statuses.push(e);
            continue;
        }
        let status = Arc::new(workload_status(w, outcome, spec_error, input.reports));
        out.statuses.0.push((w.okey.clone(), Some(status)));
        statuses.push(StatusEntry {
            key: w.okey.clone(),
            workload: w.clone(),
            outcome: outcome.clone(),
            print,
        });
    }
    for gone in old {
        out.statuses.0.push((gone.key, None));
    }
    cache.statuses = statuses;
    cache.spare_statuses = old_statuses;

    // Service endpoints, one service at a time.
    let candidates: Vec<(&Labels, &InstanceId, &str, Option<std::net::IpAddr>, bool)> = assignments
        .iter()
        .filter_map(|a| {
            let w = find_workload(workloads, &a.id.replica.workload)?;
            let r = report(input.reports, &a.node, &a.id);
            Some((
                &w.labels,
                &a.id,
                a.node.as_str(),
                r.and_then(|r| r.address),
                r.is_some_and(|r| r.ready),
            ))
        })
        .collect();
    let cands: Vec<Candidate<'_>> = candidates
        .iter()
        .map(|(labels, id, node, address, ready)| Candidate {
            labels,
            id,
            node,
            address: *address,
            ready: *ready,
        })
        .collect();
    let mut service_statuses = BTreeMap::new();
    for (key, spec) in services {
        let eps = endpoints(&key.namespace, spec, &cands);
        let status = json!({
            "endpoints": eps.iter().map(|e| e.target()).collect::<Vec<_>>(),
            "detail": eps.iter().map(|e| json!({
                "port": e.port_name,
                "target": e.target(),
                "node": e.node,
                "replica": e.instance.replica.index,
            })).collect::<Vec<_>>(),
        });
        let status = match cache.service_statuses.remove(key) {
            Some(prev) if *prev == status => prev,
            _ => {
                let status = Arc::new(status);
                out.statuses.0.push((key.clone(), Some(status.clone())));
                status
            }
        };
        service_statuses.insert(key.clone(), status);
    }
    for (gone, _) in std::mem::replace(&mut cache.service_statuses, service_statuses) {
        out.statuses.0.push((gone, None));
    }

    // Node table.
    for n in &snap.nodes {
        let name = &n.info.name;
        let r = input.reports.get(name);
        let mut allocated = WireCapacity::default();
        let (mut assigned, mut ready) = (0u32, 0u32);
        for a in per_node.remove(name.as_str()).unwrap_or_default() {
            allocated.cpu_millis += a.footprint.cpu.0;
            allocated.memory_bytes += a.footprint.memory.0;
            allocated.gpus += a.footprint.gpus;
            assigned += 1;
            ready += u32::from(report(input.reports, name, &a.id).is_some_and(|r| r.ready));
        }
        out.nodes.push(NodeStatus {
            name: name.clone(),
            address: n.info.address.clone(),
            labels: n.info.labels.clone(),
            capacity: WireCapacity {
                cpu_millis: n.info.cpu_millis,
                memory_bytes: n.info.memory_bytes,
                gpus: n.info.gpus,
            },
            allocated,
            assigned,
            ready,
            state: if n.lost_height.is_some() {
                "Lost"
            } else if r.is_some_and(|r| r.fresh) {
                "Ready"
            } else {
                "NotReady"
            }
            .into(),
            last_seen_ms: r.and_then(|r| r.last_seen_ms),
            network: subnets.get(name).cloned(),
            conditions: r.map(|r| r.conditions.clone()).unwrap_or_default(),
        });
    }
    out.policy = Arc::new(policy_feed(snap, input.reports));
    out.schedule = Schedule {
        assignments: assignments.into_iter().cloned().collect(),
        unschedulable: Vec::new(),
        rollouts: Vec::new(),
    };
    out
}

/// The workload of `key` in `workloads` (sorted by key).
fn find_workload<'w>(
    workloads: &'w [Arc<ParsedWorkload>],
    key: &WorkloadKey,
) -> Option<&'w ParsedWorkload> {
    workloads
        .binary_search_by(|w| w.input.key.cmp(key))
        .ok()
        .map(|i| &*workloads[i])
}

/// `ObjectInfo.status` of a workload.
fn workload_status(
    w: &ParsedWorkload,
    outcome: &WorkloadOutcome,
    spec_error: Option<&String>,
    reports: &BTreeMap<String, NodeReport>,
) -> Value {
    let rollout = &outcome.rollout;
    let mut problems: Vec<String> = outcome
        .unschedulable
        .iter()
        .map(|u| format!("replica {}: {}", u.id.replica.index, u.reason))
        .collect();
    if let Some(e) = spec_error {
        problems.push(format!("cannot run: {e}"));
    }
    let mut nodes_used = BTreeSet::new();
    let mut ready = 0u32;
    let replicas: Vec<Value> = outcome
        .assignments
        .iter()
        .map(|a| {
            nodes_used.insert(a.node.clone());
            let r = report(reports, &a.node, &a.id);
            let is_ready = r.is_some_and(|r| r.ready) && a.id.hash == w.input.hash;
            ready += u32::from(is_ready);
            json!({
                "index": a.id.replica.index,
                "hash": a.id.hash8(),
                "node": a.node,
                "current": a.id.hash == w.input.hash,
                "phase": r.map_or("pending".to_string(), |r| phase_name(r.phase).to_string()),
                "ready": r.is_some_and(|r| r.ready),
                "address": r.and_then(|r| r.address).map(|a| a.to_string()),
                "restarts": r.map_or(0, |r| r.restarts),
                "pid": r.and_then(|r| r.pid),
                "message": r.and_then(|r| r.message.clone()),
            })
        })
        .collect();
    json!({
        "generation": w.input.generation,
        "desired": w.input.spec.replicas,
        "ready": ready,
        "updated": rollout.updated,
        "old": rollout.old,
        "complete": rollout.complete() && ready == w.input.spec.replicas,
        "nodes": nodes_used.into_iter().collect::<Vec<_>>(),
        "replicas": replicas,
        "problems": problems,
    })
}

/// The cluster's network policy feed: every NetworkPolicy, and every workload's labels with the
/// addresses its instances report on any node (whatever template they run: an old replica still
/// serving during a rolling update is still that workload).
///
/// Without any NetworkPolicy nothing is isolated and nobody needs endpoints: the feed is then
/// empty (and cheap, however many workloads run).
fn policy_feed(snap: &Snapshot, reports: &BTreeMap<String, NodeReport>) -> PolicyFeed {
    if snap.policies.is_empty() {
        return PolicyFeed::new(snap.height, Vec::new(), Vec::new());
    }
    let mut addrs: BTreeMap<&WorkloadKey, Vec<std::net::IpAddr>> = BTreeMap::new();
    for r in reports.values() {
        for (id, i) in &r.instances {
            if i.phase != Phase::Exited
                && let Some(a) = i.address
            {
                addrs.entry(&id.replica.workload).or_default().push(a);
            }
        }
    }
    let endpoints = snap
        .workloads
        .iter()
        .map(|w| {
            let key = &w.input.key;
            WorkloadEndpoints {
                workload: WorkloadId::new(&key.namespace, &key.name),
                labels: w.labels.clone(),
                addrs: addrs.remove(key).unwrap_or_default(),
            }
        })
        .collect();
    let policies = snap.policies.iter().map(|p| (**p).clone()).collect();
    PolicyFeed::new(snap.height, policies, endpoints)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Exited => "exited",
    }
}

/// The placement agents report, for the first round after a start: instances of existing
/// workloads on nodes that are in the log and not lost.
fn seed(
    nodes: &[NodeState],
    reports: &BTreeMap<String, NodeReport>,
    workloads: &[Arc<ParsedWorkload>],
) -> Vec<CurrentInstance> {
    let mut out = Vec::new();
    for (node, r) in reports {
        if nodes
            .iter()
            .find(|n| &n.info.name == node)
            .is_none_or(|n| n.lost_height.is_some())
        {
            continue;
        }
        for (id, rep) in &r.instances {
            let Some(w) = find_workload(workloads, &id.replica.workload) else {
                continue;
            };
            let Ok(footprint) = Footprint::of(&w.input.spec) else {
                continue;
            };
            out.push(CurrentInstance {
                id: id.clone(),
                node: node.clone(),
                generation: rep.generation,
                footprint,
                ready: rep.ready,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
