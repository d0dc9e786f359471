//! Network policy on the node. Every replica streams the cluster's policy feed; the agent enforces
//! only what f+1 of them agree on ([`nexus_api::network::agree`], element by element), keeps the
//! agreed input on disk (`policy.json`) so enforcement continues across agent restarts while the
//! control plane is down, and drives the node's [`NodeEnforcer`] (eBPF, docs/network-policy.md):
//! - every local-loop step reconciles the kernel with the agreed input and the running replicas
//!   (a no-op when nothing changed; forced every [`RESYNC`]);
//! - every replica start attaches the programs to its cgroup before its command runs
//!   ([`StartHook`]), so it is policed from its first packet;
//! - when the node cannot enforce (no root, no BPF, a failed update) the condition
//!   "network policy NOT enforced on node X: reason" is registered, never a silent pass.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_api::network::{MAX_REPORTED_COUNTERS, PolicyFeed, RuleCount, agree};
use nexus_ebpf::{
    LoaderOptions, NodeEnforcer, PolicyInput, PolicyObject, Replica, WorkloadEndpoints, WorkloadId,
};
use nexus_reconciler::runtime::{NetworkConfig, StartHook};
use nexus_reconciler::spec::ReplicaSpec;
use nexus_reconciler::status::{ObservedReplica, ObservedState};
use serde::{Deserialize, Serialize};

use crate::lock;

/// A full reconcile of the kernel at least this often (repairs tampered maps or links).
pub(crate) const RESYNC: Duration = Duration::from_secs(30);
/// Counters are read and reported at most this often.
pub(crate) const COUNTER_EVERY: Duration = Duration::from_secs(3);

/// What f+1 replicas agreed on, as kept on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Agreed {
    pub policies: Vec<PolicyObject>,
    pub endpoints: Vec<WorkloadEndpoints>,
    /// [`PolicyFeed::compute_hash`] of the two.
    pub hash: String,
}

impl Agreed {
    fn new(policies: Vec<PolicyObject>, endpoints: Vec<WorkloadEndpoints>) -> Self {
        let hash = PolicyFeed::compute_hash(&policies, &endpoints);
        Agreed {
            policies,
            endpoints,
            hash,
        }
    }

    fn load(path: &Path) -> Option<Agreed> {
        let text = std::fs::read_to_string(path).ok()?;
        let a: Agreed = serde_json::from_str(&text).ok()?;
        (PolicyFeed::compute_hash(&a.policies, &a.endpoints) == a.hash).then_some(a)
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    }
}

/// The node's enforcement: the eBPF enforcer (when the node has one), the agreed input, and the
/// latest counters for heartbeats.
pub(crate) struct Enforcement {
    node: String,
    options: LoaderOptions,
    path: PathBuf,
    enforcer: Mutex<NodeEnforcer>,
    agreed: Mutex<Option<Agreed>>,
    last_force: Mutex<Option<Instant>>,
    last_counters: Mutex<Option<Instant>>,
    /// (version, counters): heartbeats send them when the version moved.
    counters: Mutex<(u64, Arc<Vec<RuleCount>>)>,
}

impl Enforcement {
    /// Opens (or re-opens) the node's programs and maps and the last agreed input. Blocking.
    /// The pins live under [`pin_root`] of the runtime's cgroup root, so clusters sharing a
    /// host (local clusters, tests) never share maps.
    pub fn start(node: &str, state_dir: &Path, cgroup_root: &Path) -> Enforcement {
        let options = LoaderOptions {
            node: node.to_string(),
            pin_root: pin_root(cgroup_root),
        };
        let enforcer = NodeEnforcer::start(&options);
        let path = state_dir.join("policy.json");
        let agreed = Agreed::load(&path);
        if let Some(c) = enforcer.condition() {
            tracing::warn!("{c}");
        }
        Enforcement {
            node: node.to_string(),
            options,
            path,
            enforcer: Mutex::new(enforcer),
            agreed: Mutex::new(agreed),
            last_force: Mutex::new(None),
            last_counters: Mutex::new(None),
            counters: Mutex::new((0, Arc::new(Vec::new()))),
        }
    }

    /// "network policy NOT enforced on node X: reason", while that is so.
    pub fn condition(&self) -> Option<String> {
        lock(&self.enforcer).condition()
    }

    /// Hash of the agreed input the node enforces (`None`: none yet, or no eBPF).
    pub fn enforcing(&self) -> Option<String> {
        let e = lock(&self.enforcer);
        if !e.enforcing() || e.condition().is_some() {
            return None;
        }
        lock(&self.agreed).as_ref().map(|a| a.hash.clone())
    }

    /// Removes the node's programs, maps and pins (the agent drains: nothing runs any more).
    pub fn uninstall(&self) {
        if let Err(e) = nexus_ebpf::PolicyLoader::uninstall(&self.options) {
            tracing::warn!(node = %self.node, "cannot remove the network policy pins: {e}");
        }
        let _ = std::fs::remove_dir(&self.options.pin_root);
        let _ = std::fs::remove_file(&self.path);
    }

    /// The counters and their version.
    pub fn counters(&self) -> (u64, Arc<Vec<RuleCount>>) {
        let c = lock(&self.counters);
        (c.0, c.1.clone())
    }

    /// Takes what `need` of the `feeds` agree on; true when it changed (kept on disk first).
    pub fn evaluate<'a>(
        &self,
        feeds: impl IntoIterator<Item = &'a PolicyFeed>,
        need: usize,
    ) -> bool {
        let mut cur = lock(&self.agreed);
        let previous: &[PolicyObject] = cur.as_ref().map_or(&[], |a| &a.policies);
        let Some((policies, endpoints)) = agree(feeds, need, previous) else {
            return false;
        };
        let next = Agreed::new(policies, endpoints);
        if cur.as_ref().is_some_and(|c| c.hash == next.hash) {
            return false;
        }
        if let Err(e) = next.save(&self.path) {
            tracing::warn!("cannot keep the network policy on disk: {e}");
        }
        tracing::info!(
            node = %self.node,
            policies = next.policies.len(),
            workloads = next.endpoints.len(),
            hash = &next.hash[..12],
            "new network policy agreed by {need} replica(s)"
        );
        *cur = Some(next);
        true
    }

    /// Reconciles the kernel with the agreed input for the node's running replicas (blocking).
    /// Does nothing before the first agreement: what the kernel holds (pinned maps of an earlier
    /// agent) stays.
    pub fn sync(&self, observed: &[ObservedReplica], network: Option<&str>) {
        let Some(agreed) = lock(&self.agreed).clone() else {
            return;
        };
        let now = Instant::now();
        let force = {
            let mut last = lock(&self.last_force);
            let due = last.is_none_or(|t| now.duration_since(t) >= RESYNC);
            if due {
                *last = Some(now);
            }
            due
        };
        let input = PolicyInput {
            policies: agreed.policies,
            endpoints: agreed.endpoints,
            node_addrs: node_addrs(network),
        };
        let replicas = replicas(observed);
        let mut enforcer = lock(&self.enforcer);
        if let Some(report) = enforcer.sync(&input, &replicas, force) {
            tracing::debug!(node = %self.node, ?report, "network policy reconciled");
        }
        let read_counters = {
            let mut last = lock(&self.last_counters);
            let due = last.is_none_or(|t| now.duration_since(t) >= COUNTER_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        if read_counters && let Some(Ok(counters)) = enforcer.loader().map(|l| l.counters()) {
            let mut list: Vec<RuleCount> = counters
                .into_iter()
                .filter(|(_, c)| c.packets > 0 || c.connects > 0)
                .map(|(rule, c)| RuleCount {
                    rule: rule.0,
                    packets: c.packets,
                    bytes: c.bytes,
                    connects: c.connects,
                })
                .collect();
            list.sort_by_key(|c| std::cmp::Reverse(c.packets.saturating_add(c.connects)));
            list.truncate(MAX_REPORTED_COUNTERS);
            list.sort_by_key(|c| c.rule);
            let mut cur = lock(&self.counters);
            if cur.1.as_slice() != list.as_slice() {
                *cur = (cur.0 + 1, Arc::new(list));
            }
        }
    }
}

/// `/sys/fs/bpf/<cgroup root with '/' as '_'>`: `/sys/fs/bpf/nexus` for the default root.
pub fn pin_root(cgroup_root: &Path) -> PathBuf {
    let tag: String = cgroup_root
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tag = if tag.is_empty() || tag == "." || tag == ".." {
        "nexus".to_string()
    } else {
        tag
    };
    Path::new("/sys/fs/bpf").join(tag)
}

/// The bridge gateway of the node's subnet: health probes and node tooling come from there.
fn node_addrs(network: Option<&str>) -> Vec<IpAddr> {
    network
        .and_then(|n| NetworkConfig::parse(n).ok())
        .map(|c| vec![IpAddr::V4(c.gateway())])
        .unwrap_or_default()
}

/// The node's replicas the kernel must police: every instance that has a cgroup and has not
/// exited (also the ones stopping: they still send packets).
fn replicas(observed: &[ObservedReplica]) -> Vec<Replica> {
    let mut out: BTreeMap<PathBuf, Replica> = BTreeMap::new();
    for o in observed {
        if matches!(o.state, ObservedState::Exited { .. }) {
            continue;
        }
        let Some(cgroup) = &o.unified_cgroup else {
            continue;
        };
        let w = &o.id.replica.workload;
        out.insert(
            cgroup.clone(),
            Replica {
                cgroup: cgroup.clone(),
                workload: WorkloadId::new(&w.namespace, &w.name),
                addrs: o.address.into_iter().collect(),
            },
        );
    }
    out.into_values().collect()
}

/// Attaches the programs to a replica's cgroup before its command runs.
pub(crate) struct AttachOnStart(pub Arc<Enforcement>);

impl StartHook for AttachOnStart {
    fn before_exec(
        &self,
        spec: &ReplicaSpec,
        unified_cgroup: Option<&Path>,
        address: Option<IpAddr>,
    ) -> Result<(), String> {
        let Some(cgroup) = unified_cgroup else {
            return Ok(()); // no cgroup2 hierarchy: the node reports it cannot enforce
        };
        let mut enforcer = lock(&self.0.enforcer);
        let Some(loader) = enforcer.loader_mut() else {
            return Ok(()); // not enforcing: the node's condition says so
        };
        let w = &spec.id.replica.workload;
        let replica = Replica {
            cgroup: cgroup.to_path_buf(),
            workload: WorkloadId::new(&w.namespace, &w.name),
            addrs: address.into_iter().collect(),
        };
        loader
            .attach(&replica)
            .map(|_| ())
            .map_err(|e| format!("network policy: cannot attach to {}: {e}", cgroup.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_reconciler::model::{InstanceId, ReplicaId, WorkloadKey, template_hash};
    use nexus_reconciler::status::{ExitOutcome, Health};

    fn observed(
        name: &str,
        index: u32,
        state: ObservedState,
        cgroup: Option<&str>,
    ) -> ObservedReplica {
        let w: nexus_schemas::WorkloadSpec =
            serde_json::from_value(serde_json::json!({"command": ["sleep", "1"]})).unwrap();
        ObservedReplica {
            id: InstanceId::new(
                ReplicaId::new(WorkloadKey::new("default", name), index),
                template_hash(&w),
            ),
            state,
            pid: None,
            started_at_ms: 0,
            restart_count: 0,
            backoff_step: 0,
            restart_policy: Default::default(),
            grace_ms: 0,
            unified_cgroup: cgroup.map(PathBuf::from),
            address: Some(format!("10.77.1.{}", index + 2).parse().unwrap()),
        }
    }

    #[test]
    fn running_and_stopping_replicas_with_cgroups_are_policed() {
        let running = ObservedState::Running {
            health: Health::NoProbe,
        };
        let exited = ObservedState::Exited {
            outcome: ExitOutcome::Exited { code: 0 },
            at_ms: 0,
        };
        let list = replicas(&[
            observed("web", 0, running.clone(), Some("/cg/web-0")),
            observed("web", 1, ObservedState::Stopping, Some("/cg/web-1")),
            observed("web", 2, exited, Some("/cg/web-2")),
            observed("api", 0, running, None),
        ]);
        let got: Vec<(String, String, Vec<IpAddr>)> = list
            .into_iter()
            .map(|r| {
                (
                    r.cgroup.display().to_string(),
                    r.workload.to_string(),
                    r.addrs,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "/cg/web-0".into(),
                    "default/web".into(),
                    vec!["10.77.1.2".parse().unwrap()]
                ),
                (
                    "/cg/web-1".into(),
                    "default/web".into(),
                    vec!["10.77.1.3".parse().unwrap()]
                ),
            ]
        );
        assert_eq!(
            node_addrs(Some("10.77.3.0/24")),
            vec![IpAddr::from([10, 77, 3, 1])]
        );
        assert!(node_addrs(None).is_empty());
    }

    #[test]
    fn the_agreed_input_survives_on_disk_and_a_tampered_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let a = Agreed::new(
            Vec::new(),
            vec![WorkloadEndpoints {
                workload: WorkloadId::new("default", "web"),
                labels: Default::default(),
                addrs: vec!["10.77.1.2".parse().unwrap()],
            }],
        );
        a.save(&path).unwrap();
        assert_eq!(Agreed::load(&path), Some(a));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("10.77.1.2", "10.6.6.6");
        std::fs::write(&path, text).unwrap();
        assert_eq!(Agreed::load(&path), None);
    }
}
