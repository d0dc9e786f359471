//! Network policy on the wire: what replicas send agents so their nodes enforce it
//! ([`PolicyFeed`]), what agents report back (per-rule counters), and
//! `nexus debug troubleshoot WORKLOAD --network` ([`DebugNetworkRequest`]).
//!
//! The policies come from committed state, the endpoint addresses from what agents report (soft
//! state): replicas can differ for a moment, so an agent takes a policy or an address only when
//! f+1 replicas sent it ([`agree`]), as it does with assignment sets (BFT rule 4).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use nexus_ebpf::{PolicyObject, WorkloadEndpoints, WorkloadId};
use nexus_schemas::Labels;
use serde::{Deserialize, Serialize};

/// Every NetworkPolicy and every workload's labels and replica addresses, cluster-wide: the same
/// for every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFeed {
    /// Committed height the feed was computed at (informational, outside the hash).
    pub height: u64,
    /// Sorted by (namespace, name).
    pub policies: Vec<PolicyObject>,
    /// Sorted by workload; addresses sorted.
    pub endpoints: Vec<WorkloadEndpoints>,
    /// [`PolicyFeed::compute_hash`] of the policies and endpoints.
    pub hash: String,
}

impl PolicyFeed {
    /// Builds a feed (sorting everything) with its hash.
    pub fn new(
        height: u64,
        mut policies: Vec<PolicyObject>,
        mut endpoints: Vec<WorkloadEndpoints>,
    ) -> Self {
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        policies.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
        for e in &mut endpoints {
            e.addrs.sort();
            e.addrs.dedup();
        }
        endpoints.sort_by(|a, b| a.workload.cmp(&b.workload));
        endpoints.dedup_by(|a, b| a.workload == b.workload);
        let hash = Self::compute_hash(&policies, &endpoints);
        PolicyFeed {
            height,
            policies,
            endpoints,
            hash,
        }
    }

    /// blake3 (hex) of the policies and endpoints as JSON (serialized straight to bytes: going
    /// through a `serde_json::Value` first was a tenth of a scheduling round).
    pub fn compute_hash(policies: &[PolicyObject], endpoints: &[WorkloadEndpoints]) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            endpoints: &'a [WorkloadEndpoints],
            policies: &'a [PolicyObject],
        }
        let text = serde_json::to_vec(&Body {
            endpoints,
            policies,
        })
        .unwrap_or_default();
        blake3::hash(&text).to_hex().to_string()
    }

    /// Whether `hash` really is the hash of the content (and the content is sorted, as
    /// [`PolicyFeed::new`] makes it).
    pub fn verify(&self) -> bool {
        Self::compute_hash(&self.policies, &self.endpoints) == self.hash
    }
}

/// What f+1 of the replicas' feeds agree on, element by element: a policy (with exactly that
/// spec) when `need` feeds hold it; a workload with the labels `need` feeds give it, and each of
/// its addresses that `need` feeds list. A single replica can neither add a policy, nor grant a
/// workload's identity to an address, nor change labels. `None` when fewer than `need` feeds are
/// known: the caller keeps what it had.
///
/// While a policy changes, replicas may hold different versions of it with none held by `need`
/// of them: the version in `previous` (the last agreement) then stays, so a policy never
/// vanishes (un-isolating its workloads) on its way from one version to the next.
pub fn agree<'a>(
    feeds: impl IntoIterator<Item = &'a PolicyFeed>,
    need: usize,
    previous: &[PolicyObject],
) -> Option<(Vec<PolicyObject>, Vec<WorkloadEndpoints>)> {
    let feeds: Vec<&PolicyFeed> = feeds.into_iter().collect();
    let need = need.max(1);
    if feeds.len() < need {
        return None;
    }
    let mut policies: BTreeMap<String, (usize, &PolicyObject)> = BTreeMap::new();
    let mut labels: BTreeMap<(&WorkloadId, String), (usize, &Labels)> = BTreeMap::new();
    let mut addrs: BTreeMap<(&WorkloadId, IpAddr), usize> = BTreeMap::new();
    for f in &feeds {
        let mut seen = BTreeSet::new();
        for p in &f.policies {
            let key = serde_json::to_string(p).unwrap_or_default();
            if seen.insert(key.clone()) {
                policies.entry(key).or_insert((0, p)).0 += 1;
            }
        }
        let mut seen = BTreeSet::new();
        for e in &f.endpoints {
            if !seen.insert(&e.workload) {
                continue;
            }
            let key = serde_json::to_string(&e.labels).unwrap_or_default();
            labels.entry((&e.workload, key)).or_insert((0, &e.labels)).0 += 1;
            let mut seen_addr = BTreeSet::new();
            for a in &e.addrs {
                if seen_addr.insert(*a) {
                    *addrs.entry((&e.workload, *a)).or_default() += 1;
                }
            }
        }
    }
    let mut agreed: BTreeMap<(&str, &str), &PolicyObject> = BTreeMap::new();
    let mut contested: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (n, p) in policies.values() {
        let name = (p.namespace.as_str(), p.name.as_str());
        if *n >= need {
            agreed.insert(name, p);
        } else {
            contested.insert(name);
        }
    }
    for p in previous {
        let name = (p.namespace.as_str(), p.name.as_str());
        if contested.contains(&name) && !agreed.contains_key(&name) {
            agreed.insert(name, p);
        }
    }
    let policies: Vec<PolicyObject> = agreed.into_values().cloned().collect();
    let mut endpoints: BTreeMap<&WorkloadId, WorkloadEndpoints> = BTreeMap::new();
    for ((w, _), (n, l)) in labels {
        if n >= need {
            endpoints.entry(w).or_insert_with(|| WorkloadEndpoints {
                workload: w.clone(),
                labels: l.clone(),
                addrs: Vec::new(),
            });
        }
    }
    for ((w, a), n) in addrs {
        if n >= need
            && let Some(e) = endpoints.get_mut(w)
        {
            e.addrs.push(a);
        }
    }
    let feed = PolicyFeed::new(0, policies, endpoints.into_values().collect());
    Some((feed.policies, feed.endpoints))
}

/// One rule's counts on one node, summed over CPUs (agent → replica, in heartbeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    pub rule: u64,
    pub packets: u64,
    pub bytes: u64,
    pub connects: u64,
}

/// Most counters an agent reports (the busiest first).
pub const MAX_REPORTED_COUNTERS: usize = 4096;

/// `nexus.debug.network`: the network policy of one workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugNetworkRequest {
    pub namespace: String,
    pub name: String,
}

/// What one node reports about its enforcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEnforcement {
    pub node: String,
    /// `network policy NOT enforced on node X: reason`, when it is not.
    pub condition: Option<String>,
    /// The hash of the policy the node enforces (`None`: none agreed yet).
    pub enforcing: Option<String>,
    /// The node's counters (all rules, not only this workload's).
    pub counters: Vec<RuleCount>,
    /// Milliseconds since the replica last heard from the node.
    pub last_seen_ms: Option<u64>,
}

/// The answer: the replica's own feed (from which the CLI compiles and explains, as the node
/// does) and what every node reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugNetworkResponse {
    pub replica: String,
    pub feed: PolicyFeed,
    pub nodes: Vec<NodeEnforcement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, app: &str) -> PolicyObject {
        let spec = serde_json::from_value(serde_json::json!({
            "selector": {"app": app},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": 8080}]}]
        }))
        .unwrap();
        PolicyObject {
            namespace: "default".into(),
            name: name.into(),
            spec,
        }
    }

    fn ep(name: &str, addrs: &[&str]) -> WorkloadEndpoints {
        WorkloadEndpoints {
            workload: WorkloadId::new("default", name),
            labels: [("app".to_string(), name.to_string())]
                .into_iter()
                .collect(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn hash_covers_content_not_height_or_order() {
        let a = PolicyFeed::new(
            3,
            vec![policy("b", "api"), policy("a", "db")],
            vec![ep("web", &["10.0.0.3", "10.0.0.2"]), ep("api", &[])],
        );
        let b = PolicyFeed::new(
            9,
            vec![policy("a", "db"), policy("b", "api")],
            vec![ep("api", &[]), ep("web", &["10.0.0.2", "10.0.0.3"])],
        );
        assert_eq!(a.hash, b.hash);
        assert!(a.verify());
        let mut forged = a.clone();
        forged.endpoints[1].addrs.push("10.9.9.9".parse().unwrap());
        assert!(!forged.verify());
    }

    #[test]
    fn agreement_is_per_element_and_needs_f_plus_1() {
        let honest = PolicyFeed::new(5, vec![policy("p", "api")], vec![ep("web", &["10.0.0.2"])]);
        // One replica is a step ahead: it already knows a second web replica and a new policy.
        let ahead = PolicyFeed::new(
            6,
            vec![policy("p", "api"), policy("q", "db")],
            vec![ep("web", &["10.0.0.2", "10.0.0.3"])],
        );
        // A Byzantine replica claims its own address is a web replica and relabels web.
        let mut evil_web = ep("web", &["10.0.0.2", "10.6.6.6"]);
        evil_web.labels.insert("role".into(), "admin".into());
        let evil = PolicyFeed::new(6, vec![], vec![evil_web]);

        assert_eq!(agree([&honest], 2, &[]), None, "one feed is not f+1 = 2");
        let (policies, endpoints) = agree([&honest, &ahead, &evil], 2, &[]).unwrap();
        assert_eq!(policies, vec![policy("p", "api")]);
        assert_eq!(endpoints, vec![ep("web", &["10.0.0.2"])]);
        let (policies, endpoints) = agree([&honest, &ahead, &ahead, &evil], 2, &[]).unwrap();
        assert_eq!(policies, vec![policy("p", "api"), policy("q", "db")]);
        assert_eq!(endpoints, vec![ep("web", &["10.0.0.2", "10.0.0.3"])]);
        // With a single replica (f = 0) its feed is the answer.
        let (policies, endpoints) = agree([&ahead], 1, &[]).unwrap();
        assert_eq!((policies, endpoints), (ahead.policies, ahead.endpoints));
    }

    #[test]
    fn a_changing_policy_keeps_its_last_agreed_version_until_f_plus_1_hold_the_next() {
        let v1 = policy("p", "api");
        let mut v2 = policy("p", "api");
        v2.spec.ingress.clear();
        let old = PolicyFeed::new(5, vec![v1.clone()], vec![]);
        let new = PolicyFeed::new(6, vec![v2.clone()], vec![]);
        let (p, _) = agree([&old, &new], 2, std::slice::from_ref(&v1)).unwrap();
        assert_eq!(
            p,
            vec![v1.clone()],
            "neither version has f+1: keep the agreed one"
        );
        let (p, _) = agree([&old, &new, &new], 2, std::slice::from_ref(&v1)).unwrap();
        assert_eq!(p, vec![v2.clone()]);
        // A deletion (nobody holds any version of it any more) is not contested.
        let gone = PolicyFeed::new(7, vec![], vec![]);
        let (p, _) = agree([&gone, &gone], 2, std::slice::from_ref(&v2)).unwrap();
        assert!(p.is_empty());
        // A policy only one (maybe Byzantine) replica claims is not kept from nowhere.
        let (p, _) = agree([&gone, &new], 2, &[]).unwrap();
        assert!(p.is_empty());
    }
}
