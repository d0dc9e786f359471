//! The node agent protocol (agent ↔ replica) and log streaming (CLI → replica → agent).
//!
//! An agent holds a `node:<name>` certificate and connects to every replica in its config:
//! 1. [`kinds::REGISTER`] (unary): address, capacity, labels, network mode. The replica records
//!    the join or change in the log (signed by the replica, see `nexus_ledger::nodes`).
//! 2. [`kinds::FEED`] (server-streaming): the node's full desired set ([`AssignmentSet`]) each
//!    time it changes, and log requests ([`FeedItem::Logs`]). Every honest replica computes the
//!    same set from committed state, so the agent acts only on a set that f+1 replicas sent
//!    with the same hash (BFT rule 4); [`AssignmentSet::verify`] checks the hash covers the
//!    content.
//! 3. [`kinds::HEARTBEAT`] (unary, every couple of seconds and whenever a replica's state
//!    changes): observed instance status — soft state, never written to the log (rule 6).
//! 4. [`kinds::LOG_CHUNK`] (unary): log data for a log request, forwarded to the CLI that asked
//!    through [`kinds::LOGS`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use nexus_reconciler::model::InstanceId;
use nexus_reconciler::spec::ReplicaSpec;
use serde::{Deserialize, Serialize};

/// RPC kinds of the agent protocol.
pub mod kinds {
    /// Agent → replica, unary: [`super::RegisterRequest`] → [`super::RegisterResponse`].
    pub const REGISTER: &str = "nexus.agent.register";
    /// Agent → replica, unary: [`super::Heartbeat`] → [`super::HeartbeatResponse`].
    pub const HEARTBEAT: &str = "nexus.agent.heartbeat";
    /// Agent → replica, server-streaming: [`super::FeedRequest`] → [`super::FeedItem`]s.
    pub const FEED: &str = "nexus.agent.feed";
    /// Agent → replica, unary: [`super::LogChunk`] → [`super::LogChunkAck`].
    pub const LOG_CHUNK: &str = "nexus.agent.log_chunk";
    /// CLI → replica, server-streaming: [`super::LogsRequest`] → [`super::LogItem`]s.
    pub const LOGS: &str = "nexus.logs";
}

/// Node label the agent sets: `isolated` when each replica has its own network namespace,
/// `host` when replicas share the node's network (host ports then conflict).
pub const NETWORK_LABEL: &str = "nexus.io/network";

/// What a node offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// Agent → replica on connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Where the node is reached (its replicas, in host-network mode), e.g. `127.0.0.1`.
    pub address: String,
    pub capacity: Capacity,
    /// Operator labels plus the agent's own (`nexus.io/network`).
    pub labels: BTreeMap<String, String>,
    /// Human-readable problems ("network policy NOT enforced: ...", "host network: ...").
    #[serde(default)]
    pub conditions: Vec<String>,
    pub agent_version: String,
}

/// Replica → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub replica: String,
    /// Committed height when the registration was recorded.
    pub height: u64,
    /// How often the agent should heartbeat.
    pub heartbeat_ms: u64,
    /// Silence after which the replica attests the node lost.
    pub node_timeout_ms: u64,
}

/// An instance's lifecycle phase as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    Stopping,
    Exited,
}

/// One instance on the node (soft state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub id: InstanceId,
    /// Workload generation the instance was assigned at.
    pub generation: u64,
    pub phase: Phase,
    /// Running and passing its probe.
    pub ready: bool,
    /// `no_probe`, `unknown`, `healthy`, `unhealthy` while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    pub restarts: u32,
    /// Where it is reached: its own address, or the node's in host-network mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub started_at_ms: u64,
    /// How the last run ended, or why it could not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Agent → replica, periodically and on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases with every heartbeat of this agent process.
    pub seq: u64,
    /// Hash of the assignment set the agent acts on (`None`: none agreed yet).
    pub acting_on: Option<String>,
    pub instances: Vec<InstanceReport>,
    #[serde(default)]
    pub conditions: Vec<String>,
    /// Hash of the network policy feed the node enforces (`None`: none agreed, or no eBPF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The node's per-rule policy counters (at most
    /// [`crate::network::MAX_REPORTED_COUNTERS`], the busiest); sent when they changed, at
    /// most every few seconds (`None`: unchanged since the last heartbeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Vec<crate::network::RuleCount>>,
}

/// Replica → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub height: u64,
    /// False when the replica does not know this node as live (it restarted, or the node was
    /// declared lost): the agent registers again.
    pub registered: bool,
}

/// Opens the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedRequest {}

/// The full desired state of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentSet {
    pub node: String,
    /// Committed height the set was computed at (informational: replicas at different heights
    /// can send the same set).
    pub height: u64,
    /// The node's replica subnet (`10.77.3.0/24`): each replica gets its own network namespace
    /// on it. `None`: replicas share the node's network.
    pub network: Option<String>,
    /// Sorted by instance id.
    pub replicas: Vec<ReplicaSpec>,
    /// [`AssignmentSet::compute_hash`] of the rest.
    pub hash: String,
}

impl AssignmentSet {
    /// Builds a set (sorting the replicas) with its hash.
    pub fn new(
        node: String,
        height: u64,
        network: Option<String>,
        mut replicas: Vec<ReplicaSpec>,
    ) -> Self {
        replicas.sort_by(|a, b| a.id.cmp(&b.id));
        let hash = Self::compute_hash(&node, network.as_deref(), &replicas);
        AssignmentSet {
            node,
            height,
            network,
            replicas,
            hash,
        }
    }

    /// blake3 (hex) of the node name, network and replica specs as JSON. The height is left out
    /// so replicas at different heights that agree on the content send the same hash.
    pub fn compute_hash(node: &str, network: Option<&str>, replicas: &[ReplicaSpec]) -> String {
        let body = serde_json::json!({"node": node, "network": network, "replicas": replicas});
        let text = serde_json::to_vec(&body).unwrap_or_default();
        blake3::hash(&text).to_hex().to_string()
    }

    /// Whether `hash` really is the hash of the content.
    pub fn verify(&self) -> bool {
        Self::compute_hash(&self.node, self.network.as_deref(), &self.replicas) == self.hash
    }
}

/// Which output stream a log chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Replica → agent: send logs of these instances for session `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    pub session: u64,
    pub instances: Vec<InstanceId>,
    /// Keep sending what is appended.
    pub follow: bool,
    /// Start with at most this many bytes of each stream's end.
    pub tail_bytes: u64,
}

/// One item of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedItem {
    Assignments(AssignmentSet),
    /// The cluster's network policy and endpoints (the same for every node), whenever it
    /// changes.
    Policy(crate::network::PolicyFeed),
    Logs(LogRequest),
    /// The CLI went away: stop sending for this session.
    CancelLogs {
        session: u64,
    },
}

/// Agent → replica: log data for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub session: u64,
    pub instance: InstanceId,
    pub stream: Stream,
    #[serde(with = "crate::hex_bytes")]
    pub data: Vec<u8>,
    /// Nothing more will come for this instance (not following, or it is gone).
    #[serde(default)]
    pub eof: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Replica → agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunkAck {
    /// False when nobody is listening any more: stop.
    pub keep_going: bool,
}

/// CLI → replica: `nexus logs workload/NAME [-f] [--replica I]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub namespace: String,
    pub name: String,
    /// Only this replica index.
    pub replica: Option<u32>,
    pub follow: bool,
    pub tail_bytes: u64,
}

/// Replica → CLI: a piece of one replica's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogItem {
    /// Replica index.
    pub replica: u32,
    /// Instance (`namespace/name#index@hash8`).
    pub instance: String,
    pub node: String,
    pub stream: Stream,
    #[serde(with = "crate::hex_bytes")]
    pub data: Vec<u8>,
    #[serde(default)]
    pub eof: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A node as `nexus cluster status` shows it (in `StatusResponse::nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Reserved by the replicas assigned to it.
    pub allocated: Capacity,
    /// Instances assigned / of those ready.
    pub assigned: u32,
    pub ready: u32,
    /// `Ready` (heartbeating to this replica), `NotReady` (silent, not yet lost), `Lost`.
    pub state: String,
    /// Milliseconds since this replica last heard from it.
    pub last_seen_ms: Option<u64>,
    /// The replica subnet, in network mode.
    pub network: Option<String>,
    pub conditions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_reconciler::model::{ReplicaId, WorkloadKey, template_hash};
    use nexus_schemas::WorkloadSpec;

    fn spec(name: &str) -> ReplicaSpec {
        let w: WorkloadSpec =
            serde_json::from_value(serde_json::json!({"command": ["sleep", "1"]})).unwrap();
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("default", name), 0),
            template_hash(&w),
        );
        ReplicaSpec::from_workload(id, 1, &w).unwrap()
    }

    #[test]
    fn hash_covers_content_not_height_or_order() {
        let a = AssignmentSet::new("n1".into(), 5, None, vec![spec("b"), spec("a")]);
        let b = AssignmentSet::new("n1".into(), 9, None, vec![spec("a"), spec("b")]);
        assert_eq!(a.hash, b.hash);
        assert!(a.verify());
        let mut forged = a.clone();
        forged.replicas[0].command = vec!["evil".into()];
        assert!(
            !forged.verify(),
            "a changed spec no longer matches the hash"
        );
        let other =
            AssignmentSet::new("n1".into(), 5, Some("10.77.1.0/24".into()), vec![spec("a")]);
        assert_ne!(other.hash, a.hash);
        let j = serde_json::to_string(&FeedItem::Assignments(a.clone())).unwrap();
        assert!(j.starts_with(r#"{"type":"assignments""#), "{j}");
        assert_eq!(
            serde_json::from_str::<FeedItem>(&j).unwrap(),
            FeedItem::Assignments(a)
        );
    }
}
