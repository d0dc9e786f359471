//! Node agents, replica side: agent sessions (register, heartbeat, assignment feed, logs), node
//! facts in the log (join, labels, lost attestations), and the scheduling loop that turns
//! committed state into each node's assignments and live status.
//!
//! - Soft state (never in the log, DESIGN rule 6): what each agent last reported (instances,
//!   readiness, conditions) and when this replica last heard from it.
//! - Log writes, signed by this replica's key as `replica:<name>` with source
//!   `controller:nodes`: `NodeJoin`/`NodeLabels` when an agent registers, `NodeLostAttest` when
//!   a node is silent for `node_timeout` (and its withdrawal when it is heard again). The ledger
//!   declares the node lost once f+1 replicas attested (rule 5).
//! - The scheduling loop ([`round`]) runs on every committed entry, on readiness changes and
//!   every `resync`, and publishes each node's [`AssignmentSet`] on a watch channel that the
//!   node's feed streams forward. It waits (at most `warmup`) after start until every node in
//!   the log reported, so it continues from what runs instead of re-placing everything.
//! - The same round computes the cluster's network policy feed (every NetworkPolicy, every
//!   workload's labels and its replicas' reported addresses), streamed to every agent, which
//!   enforces what f+1 replicas agree on with eBPF (docs/network-policy.md).

mod handlers;
mod liveness;
mod logs;
pub mod round;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nexus_api::agent::{AssignmentSet, FeedItem, InstanceReport, NodeStatus, RegisterRequest};
use nexus_api::network::{NodeEnforcement, PolicyFeed, RuleCount};
use nexus_ledger::audit::history;
use nexus_ledger::{Caller, Entry, Ledger, Op, Request, SignedRequest, Source};
use nexus_reconciler::model::{InstanceId, WorkloadKey, template_hash};
use nexus_reconciler::scheduler::Schedule;
use nexus_schemas::{ContentHash, Object, ObjectKey, Spec, WorkloadSpec};
use nexus_transport::pki::{CertificateAuthority, JoinTokenRecord};
use nexus_transport::rpc::Router;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, watch};

pub use round::NodeReport;

/// Least time between two scheduling rounds under a stream of changes (a longer gap batches
/// more but delays what a change means for the nodes: policy, placement).
const ROUND_GAP: Duration = Duration::from_millis(10);

/// Pause after a round, in multiples of what the round took (a round over 20 000 workloads
/// takes a few milliseconds: a change then reaches the nodes within tens of milliseconds).
const ROUND_PAUSE: u32 = 9;

/// Where join tokens come from (re-read on every join, so new tokens work without a restart).
pub type TokenSource = Arc<dyn Fn() -> Vec<JoinTokenRecord> + Send + Sync>;

/// Settings of the node side of a replica.
#[derive(Clone)]
pub struct NodesOptions {
    /// Silence after which this replica attests a node lost. Default 10 s.
    pub node_timeout: Duration,
    /// How often agents heartbeat. Default 2 s.
    pub heartbeat: Duration,
    /// Scheduling runs at least this often. Default 5 s.
    pub resync: Duration,
    /// After a start, scheduling waits until every node in the log reported, or this long.
    /// Default: `node_timeout`.
    pub warmup: Duration,
    /// Replica subnets come from `a.b.0.0/16` (node i gets `a.b.i.0/24`); `None`: replicas
    /// share their node's network. Default `10.77.0.0/16`.
    pub network_pool: Option<[u8; 2]>,
    /// Join tokens accepted by `nexus.join`.
    pub join_tokens: TokenSource,
}

impl Default for NodesOptions {
    fn default() -> Self {
        NodesOptions {
            node_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            resync: Duration::from_secs(5),
            warmup: Duration::from_secs(10),
            network_pool: Some([10, 77]),
            join_tokens: Arc::new(Vec::new),
        }
    }
}

impl std::fmt::Debug for NodesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodesOptions")
            .field("node_timeout", &self.node_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("network_pool", &self.network_pool)
            .finish_non_exhaustive()
    }
}

/// What this replica knows about one agent.
#[derive(Default)]
pub(crate) struct Agent {
    pub registration: Option<RegisterRequest>,
    pub last_seen: Option<Instant>,
    /// A heartbeat arrived since this replica started.
    pub reported: bool,
    pub instances: BTreeMap<InstanceId, InstanceReport>,
    pub acting_on: Option<String>,
    /// Hash of the policy feed the node enforces.
    pub policy: Option<String>,
    /// The node's latest per-rule policy counters.
    pub counters: Vec<RuleCount>,
    /// Command channels of the node's open feeds (connection id, sender).
    pub feeds: Vec<(u64, mpsc::Sender<FeedItem>)>,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub agents: BTreeMap<String, Agent>,
    pub sets: BTreeMap<String, watch::Sender<Option<Arc<AssignmentSet>>>>,
    pub schedule: Option<Arc<Schedule>>,
    pub statuses: BTreeMap<ObjectKey, Arc<Value>>,
    pub node_table: Arc<Vec<NodeStatus>>,
    pub warm: bool,
    pub rounds: u64,
}

/// The node side of one replica.
pub struct Nodes {
    pub(crate) replica: String,
    actor: String,
    key: SigningKey,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) opts: NodesOptions,
    pub(crate) ca: Option<CertificateAuthority>,
    /// When agents could first reach this replica (its RPC server started serving): warm-up
    /// and the liveness grace count from here, not from when the replica began starting up.
    started: Mutex<Instant>,
    pub(crate) inner: Mutex<Inner>,
    /// The network policy feed every agent gets (once scheduling is warm).
    pub(crate) policy: watch::Sender<Option<Arc<PolicyFeed>>>,
    cache: Mutex<round::Cache>,
    pub(crate) wake: Notify,
    pub(crate) logs: logs::Sessions,
    stopped: AtomicBool,
    stop: Notify,
    seq: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Nodes {
    /// `key` is this replica's certificate key (its actor is `replica:<replica>`); `ca` may sign
    /// node certificates for joining agents.
    pub fn new(
        replica: String,
        key: SigningKey,
        ledger: Arc<Ledger>,
        ca: Option<CertificateAuthority>,
        opts: NodesOptions,
    ) -> Arc<Nodes> {
        Arc::new(Nodes {
            actor: format!("replica:{replica}"),
            replica,
            key,
            ledger,
            opts,
            ca,
            started: Mutex::new(Instant::now()),
            inner: Mutex::default(),
            policy: watch::channel(None).0,
            cache: Mutex::default(),
            wake: Notify::new(),
            logs: logs::Sessions::default(),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
            seq: AtomicU64::new(0),
        })
    }

    /// See [`Nodes::serving`].
    pub(crate) fn started(&self) -> Instant {
        *self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replica now serves agents: the warm-up and the grace before a node it has not heard
    /// from is attested lost start now (starting up can take seconds under load, during which
    /// no agent can reconnect).
    pub fn serving(&self) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the agent kinds, `nexus.join` and `nexus.logs` to `router`.
    pub fn routes(self: &Arc<Self>, router: &mut Router) {
        handlers::routes(self, router);
    }

    /// Starts the scheduling and liveness loops (inside a tokio runtime). `entries` delivers
    /// committed entries.
    pub fn start(self: &Arc<Self>, entries: broadcast::Receiver<Arc<Entry>>) {
        tokio::spawn(self.clone().schedule_loop(entries));
        tokio::spawn(self.clone().liveness_loop());
    }

    /// Stops the loops.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.notify_waiters();
        self.wake.notify_one();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The live status of a workload or service (`ObjectInfo.status`).
    pub fn status_of(&self, key: &ObjectKey) -> Option<Value> {
        if key.kind == nexus_schemas::Kind::NetworkPolicy {
            return Some(self.policy_status());
        }
        self.lock().statuses.get(key).map(|v| v.as_ref().clone())
    }

    /// Where network policy is enforced (the same for every NetworkPolicy: each node installs
    /// the whole cluster's table): nodes enforcing this replica's current feed, nodes still on
    /// another one, and nodes that cannot enforce it, with their reason.
    fn policy_status(&self) -> Value {
        let current = self.policy.borrow().as_ref().map(|f| f.hash.clone());
        let (_, nodes) = self.network_debug();
        let (mut enforced, mut pending, mut not_enforced) = (Vec::new(), Vec::new(), Vec::new());
        for n in nodes {
            match (n.condition, n.enforcing) {
                (Some(c), _) => not_enforced.push(Value::String(c)),
                (None, Some(h)) if Some(&h) == current.as_ref() => enforced.push(n.node),
                (None, _) => pending.push(n.node),
            }
        }
        serde_json::json!({
            "enforcedOn": enforced,
            "pendingOn": pending,
            "notEnforced": not_enforced,
        })
    }

    /// The node table for `nexus cluster status`.
    pub fn node_table(&self) -> Vec<NodeStatus> {
        self.lock().node_table.as_ref().clone()
    }

    /// Cluster-level conditions: nodes not heartbeating, node conditions.
    pub fn conditions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.lock().node_table.iter() {
            match n.state.as_str() {
                "Lost" => out.push(format!("node {} is lost", n.name)),
                "NotReady" => out.push(format!("node {} is not heartbeating", n.name)),
                _ => {}
            }
            for c in &n.conditions {
                out.push(format!("node {}: {c}", n.name));
            }
        }
        out
    }

    /// `nexus debug troubleshoot --network`: the policy feed this replica sends agents, and what
    /// every node in the log (but lost ones) reported about its enforcement.
    pub fn network_debug(&self) -> (Option<Arc<PolicyFeed>>, Vec<NodeEnforcement>) {
        let feed = self.policy.borrow().clone();
        // The node table of the last round lists every node in the log (taking the state lock
        // here could deadlock callers that hold it, like `get`).
        let inner = self.lock();
        let nodes = inner
            .node_table
            .iter()
            .filter(|n| n.state != "Lost")
            .map(|n| n.name.clone())
            .map(|name| {
                let a = inner.agents.get(&name);
                let condition = a.and_then(|a| a.registration.as_ref()).and_then(|r| {
                    r.conditions
                        .iter()
                        .find(|c| c.starts_with("network policy"))
                        .cloned()
                });
                NodeEnforcement {
                    node: name,
                    condition,
                    enforcing: a.and_then(|a| a.policy.clone()),
                    counters: a.map(|a| a.counters.clone()).unwrap_or_default(),
                    last_seen_ms: a
                        .and_then(|a| a.last_seen)
                        .map(|t| t.elapsed().as_millis() as u64),
                }
            })
            .collect();
        (feed, nodes)
    }

    /// Number of scheduling rounds run (for tests and benchmarks).
    pub fn rounds(&self) -> u64 {
        self.lock().rounds
    }

    /// Signs `ops` as this replica and commits them; returns the height.
    pub(crate) async fn submit(&self, ops: Vec<Op>) -> Result<u64, String> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id: format!("{}-{}-{n}", self.replica, now_ms()),
            actor: self.actor.clone(),
            source: Source::Controller {
                name: "nodes".into(),
            },
            ops,
            created_at_ms: now_ms(),
        };
        let signed = SignedRequest::sign(request, &self.key);
        let caller = Caller {
            actor: self.actor.clone(),
            public_key: self.key.verifying_key().to_bytes(),
        };
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.submit(signed, &caller))
            .await
            .map_err(|e| e.to_string())?
            .map(|a| a.height)
            .map_err(|e| e.to_string())
    }

    /// This replica's actor (`replica:<name>`).
    pub(crate) fn actor(&self) -> &str {
        &self.actor
    }

    async fn schedule_loop(self: Arc<Self>, mut entries: broadcast::Receiver<Arc<Entry>>) {
        let mut tick = tokio::time::interval(self.opts.resync.min(Duration::from_secs(1)));
        let mut last_round = Instant::now();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                r = entries.recv() => {
                    if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                        return;
                    }
                }
                _ = tick.tick() => {
                    // The tick also ends the warm-up; a full resync runs every `resync`.
                    let warm = self.lock().warm;
                    if warm && last_round.elapsed() < self.opts.resync {
                        continue;
                    }
                }
                _ = self.stop.notified() => return,
            }
            if self.is_stopped() {
                return;
            }
            // The round about to run covers every entry committed so far: take them all now.
            // (Taking one per round let this receiver fall behind under a stream of commits,
            // and the channel then kept up to its capacity of entries, requests and objects
            // included, in memory: hundreds of MiB under load.)
            loop {
                match entries.try_recv() {
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Closed) => return,
                }
            }
            last_round = Instant::now();
            let me = self.clone();
            if tokio::task::spawn_blocking(move || me.round())
                .await
                .is_err()
            {
                tracing::error!("a scheduling round panicked");
            }
            // Triggers that arrive meanwhile coalesce into the next round (a trigger after a
            // quiet spell runs one at once). The pause is at least ROUND_GAP and ROUND_PAUSE
            // times what the round took, so scheduling stays below a tenth of a core under a
            // stream of changes and the ordering path (consensus, the log) keeps the CPU it
            // needs; a round slowed by a busy machine waits longer before the next one.
            tokio::time::sleep((last_round.elapsed() * ROUND_PAUSE).max(ROUND_GAP)).await;
        }
    }

    /// The soft reports as the round sees them.
    fn reports(inner: &Inner, timeout: Duration) -> BTreeMap<String, NodeReport> {
        inner
            .agents
            .iter()
            .map(|(name, a)| {
                let age = a.last_seen.map(|t| t.elapsed());
                (
                    name.clone(),
                    NodeReport {
                        instances: a.instances.clone(),
                        fresh: age.is_some_and(|d| d < timeout),
                        last_seen_ms: age.map(|d| d.as_millis() as u64),
                        conditions: a
                            .registration
                            .as_ref()
                            .map(|r| r.conditions.clone())
                            .unwrap_or_default(),
                    },
                )
            })
            .collect()
    }

    /// One scheduling round (blocking). The state's read lock is held only while the round
    /// collects what it needs (changed workloads are shared with the state, not copied, and
    /// parsed after the lock is released).
    pub(crate) fn round(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.ledger.state();
        let collected = cache.collect(&state);
        let (reports, prev, warm) = {
            let mut inner = self.lock();
            if !inner.warm {
                let all_reported = state.nodes.values().all(|n| {
                    n.lost_height.is_some()
                        || inner.agents.get(&n.info.name).is_some_and(|a| a.reported)
                });
                inner.warm = all_reported || self.started().elapsed() >= self.opts.warmup;
            }
            (
                Self::reports(&inner, self.opts.node_timeout),
                inner.schedule.clone(),
                inner.warm,
            )
        };
        drop(state);
        let snapshot = cache.finish(collected);
        let input = round::RoundInput {
            snapshot: &snapshot,
            reports: &reports,
            prev: prev.as_deref(),
            pool: self.opts.network_pool,
        };
        let mut old = |wk: &WorkloadKey, hash: &ContentHash| self.old_template(wk, hash);
        let out = round::run(&mut cache, &input, &mut old);
        drop(cache);
        let mut inner = self.lock();
        inner.rounds += 1;
        out.statuses.apply(&mut inner.statuses);
        inner.node_table = Arc::new(out.nodes);
        if !warm {
            return; // keep agents on what they run until every node reported
        }
        inner.schedule = Some(Arc::new(out.schedule));
        let policy = out.policy;
        self.policy.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.hash == policy.hash) {
                false
            } else {
                *cur = Some(policy);
                true
            }
        });
        for (node, set) in out.sets {
            let tx = inner
                .sets
                .entry(node)
                .or_insert_with(|| watch::channel(None).0);
            tx.send_if_modified(|cur| {
                if cur.as_ref().is_some_and(|c| c.hash == set.hash) {
                    false
                } else {
                    *cur = Some(set);
                    true
                }
            });
        }
    }

    /// A template of `wk` that is no longer current, from the workload's history in the log.
    /// Looked up in the store as it is first (a round makes many lookups, and the newest
    /// entries may not be appended yet), then once more after waiting for the ledger writer.
    fn old_template(&self, wk: &WorkloadKey, hash: &ContentHash) -> Option<WorkloadSpec> {
        let find = |store: &nexus_ledger::Store| {
            let view = store.read().ok()?;
            let versions = history(&view, &ObjectKey::from(wk), None).ok()?;
            versions.into_iter().rev().find_map(|v| {
                let obj: Object = serde_json::from_value(v.object?).ok()?;
                match obj.spec {
                    Spec::Workload(spec) if template_hash(&spec) == *hash => Some(spec),
                    _ => None,
                }
            })
        };
        find(self.ledger.store_now()).or_else(|| find(self.ledger.store()))
    }

    /// The latest assignment set of `node`, as a watch receiver.
    pub(crate) fn subscribe_set(&self, node: &str) -> watch::Receiver<Option<Arc<AssignmentSet>>> {
        self.lock()
            .sets
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }
}
