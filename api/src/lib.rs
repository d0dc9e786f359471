//! nexus-api: the control plane's wire API. Every RPC kind (the string a transport stream is
//! opened with) and its request/response types live here, so the CLI, replicas, node agents and
//! GitOps agree on one contract. Plain data: no IO, no logic beyond conversions.

pub mod agent;
pub mod client;
pub mod gitops;
pub mod network;

/// RPC kinds (stream names) of the client API.
pub mod kinds {
    /// Submit a signed request (apply/delete); unary, answered once durable.
    pub const SUBMIT: &str = "nexus.submit";
    /// Plan a signed request against live state without committing; unary.
    pub const DRY_RUN: &str = "nexus.dry_run";
    /// List objects; unary.
    pub const GET: &str = "nexus.get";
    /// Watch objects; server-streaming.
    pub const WATCH: &str = "nexus.watch";
    /// Every version of one object; unary.
    pub const HISTORY: &str = "nexus.history";
    /// Query the audit log; server-streaming (one record per item).
    pub const AUDIT: &str = "nexus.audit";
    /// Recompute the hash chain and signatures; unary.
    pub const VERIFY: &str = "nexus.verify";
    /// Cluster status; unary.
    pub const STATUS: &str = "nexus.status";
    /// Sync status of git sources; unary.
    pub const GITOPS_STATUS: &str = "nexus.gitops.status";
    /// Sync one git source now; unary, answered when that sync finished.
    pub const GITOPS_SYNC: &str = "nexus.gitops.sync";
    /// Network policy of one workload: policies, compiled entries, counters per node; unary.
    pub const DEBUG_NETWORK: &str = "nexus.debug.network";
}

/// Bytes carried as lower-case hex in JSON.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
