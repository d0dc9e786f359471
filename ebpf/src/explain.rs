//! What applies to one workload and what the kernel counted for it, for
//! `nexus debug troubleshoot WORKLOAD --network`: pure, from the policy inputs, the compiled
//! policy and the counters read on the nodes (summed by the caller with [`sum_counters`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;

use nexus_schemas::selector_matches;

use crate::compile::{
    CompiledPolicy, Direction, Isolation, PROTO_ANY, PROTO_TCP, PROTO_UDP, PolicyObject, Prefix,
    RuleId, RuleOrigin, WorkloadEndpoints, WorkloadId,
};
use crate::maps::Counter;

/// One allow entry of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    pub direction: Direction,
    pub peer: Prefix,
    pub proto: u8,
    pub port: u16,
    pub rule: RuleId,
    pub origin: Option<RuleOrigin>,
    pub counter: Counter,
}

/// Everything about one workload's network policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub workload: WorkloadId,
    pub isolation: Isolation,
    /// Policies selecting the workload.
    pub policies: Vec<WorkloadId>,
    pub addresses: Vec<Ipv6Addr>,
    pub rules: Vec<RuleLine>,
    /// Per isolated direction: the default-deny rule and what it counted.
    pub denied: Vec<(Direction, RuleId, Counter)>,
}

/// Adds up the counters read on several nodes.
pub fn sum_counters<'a>(
    per_node: impl IntoIterator<Item = &'a BTreeMap<RuleId, Counter>>,
) -> BTreeMap<RuleId, Counter> {
    let mut out: BTreeMap<RuleId, Counter> = BTreeMap::new();
    for m in per_node {
        for (k, v) in m {
            *out.entry(*k).or_default() += *v;
        }
    }
    out
}

/// The explanation for `workload`, or `None` when the compiled policy does not know it.
pub fn explain(
    policies: &[PolicyObject],
    endpoints: &[WorkloadEndpoints],
    compiled: &CompiledPolicy,
    workload: &WorkloadId,
    counters: &BTreeMap<RuleId, Counter>,
) -> Option<Explanation> {
    let set = compiled.set_of(workload)?;
    let labels = endpoints
        .iter()
        .find(|e| &e.workload == workload)
        .map(|e| e.labels.clone())
        .unwrap_or_default();
    let mut selecting: Vec<WorkloadId> = policies
        .iter()
        .filter(|p| {
            p.namespace == workload.namespace && selector_matches(&p.spec.selector, &labels)
        })
        .map(|p| WorkloadId::new(&p.namespace, &p.name))
        .collect();
    selecting.sort();
    let count = |r: RuleId| counters.get(&r).copied().unwrap_or_default();
    let rules = compiled
        .rules
        .iter()
        .filter(|(k, _)| k.set == set.id)
        .map(|(k, r)| RuleLine {
            direction: k.direction,
            peer: k.peer,
            proto: k.proto,
            port: k.port,
            rule: *r,
            origin: compiled.origins.get(r).cloned(),
            counter: count(*r),
        })
        .collect();
    let denied = [Direction::Ingress, Direction::Egress]
        .into_iter()
        .filter(|d| set.isolation.get(*d))
        .map(|d| (d, set.deny_rule(d), count(set.deny_rule(d))))
        .collect();
    let addresses = compiled
        .endpoints
        .iter()
        .filter(|(_, s)| **s == set.id)
        .map(|(a, _)| *a)
        .collect();
    Some(Explanation {
        workload: workload.clone(),
        isolation: set.isolation,
        policies: selecting,
        addresses,
        rules,
        denied,
    })
}

fn ports(proto: u8, port: u16) -> String {
    match (proto, port) {
        (PROTO_ANY, 0) => "any".into(),
        (PROTO_TCP, p) => format!("tcp/{p}"),
        (PROTO_UDP, p) => format!("udp/{p}"),
        (n, 0) => format!("proto {n}"),
        (n, p) => format!("proto {n}/{p}"),
    }
}

fn counts(c: &Counter) -> String {
    format!(
        "packets {} bytes {} connects {}",
        c.packets, c.bytes, c.connects
    )
}

fn addr(a: &Ipv6Addr) -> String {
    match a.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => a.to_string(),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let iso = |d: bool| if d { "isolated" } else { "open" };
        writeln!(
            f,
            "workload {}: ingress {}, egress {}",
            self.workload,
            iso(self.isolation.ingress),
            iso(self.isolation.egress)
        )?;
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(
            f,
            "selected by: {}",
            list(self.policies.iter().map(ToString::to_string).collect())
        )?;
        writeln!(
            f,
            "addresses: {}",
            list(self.addresses.iter().map(addr).collect())
        )?;
        for d in [Direction::Ingress, Direction::Egress] {
            if !self.isolation.get(d) {
                writeln!(f, "{d}: everything allowed (not isolated)")?;
                continue;
            }
            let lines: Vec<&RuleLine> = self.rules.iter().filter(|r| r.direction == d).collect();
            let peer_word = if d == Direction::Ingress {
                "from"
            } else {
                "to"
            };
            if lines.is_empty() {
                writeln!(f, "{d}: nothing allowed")?;
            } else {
                writeln!(f, "{d} allowed:")?;
            }
            for r in lines {
                let origin = r
                    .origin
                    .as_ref()
                    .map_or("?".to_string(), ToString::to_string);
                writeln!(
                    f,
                    "  {peer_word} {:<24} {:<10} {}  [{}] {}",
                    r.peer.to_string(),
                    ports(r.proto, r.port),
                    counts(&r.counter),
                    r.rule,
                    origin
                )?;
            }
            if let Some((_, rule, c)) = self.denied.iter().find(|(dd, _, _)| *dd == d) {
                writeln!(f, "  denied (no rule): {}  [{rule}]", counts(c))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{CompileOptions, compile};

    #[test]
    fn explains_rules_isolation_and_counts() {
        let eps = vec![
            WorkloadEndpoints {
                workload: WorkloadId::new("default", "web"),
                labels: [("app".to_string(), "web".to_string())].into(),
                addrs: vec!["10.0.1.2".parse().expect("ip")],
            },
            WorkloadEndpoints {
                workload: WorkloadId::new("default", "api"),
                labels: [("app".to_string(), "api".to_string())].into(),
                addrs: vec!["10.0.1.3".parse().expect("ip")],
            },
        ];
        let spec = serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": 8080}]}]
        });
        let policies = vec![PolicyObject {
            namespace: "default".into(),
            name: "api-from-web".into(),
            spec: serde_json::from_value(spec).expect("spec"),
        }];
        let c = compile(&policies, &eps, &CompileOptions::default());
        let api = WorkloadId::new("default", "api");
        let allow = *c.rules.values().next().expect("one rule");
        let deny = c.sets[&api].deny_ingress;
        let node1: BTreeMap<RuleId, Counter> = [
            (
                allow,
                Counter {
                    packets: 5,
                    bytes: 300,
                    connects: 1,
                },
            ),
            (
                deny,
                Counter {
                    packets: 2,
                    bytes: 120,
                    connects: 0,
                },
            ),
        ]
        .into();
        let node2: BTreeMap<RuleId, Counter> = [(
            deny,
            Counter {
                packets: 0,
                bytes: 0,
                connects: 3,
            },
        )]
        .into();
        let counters = sum_counters([&node1, &node2]);
        let e = explain(&policies, &eps, &c, &api, &counters).expect("known workload");
        let text = e.to_string();
        let want = format!(
            "workload default/api: ingress isolated, egress open\n\
             selected by: default/api-from-web\n\
             addresses: 10.0.1.3\n\
             ingress allowed:\n  \
             from 10.0.1.2                 tcp/8080   packets 5 bytes 300 connects 1  [{allow}] \
             policy default/api-from-web ingress[0] for default/api\n  \
             denied (no rule): packets 2 bytes 120 connects 3  [{deny}]\n\
             egress: everything allowed (not isolated)\n"
        );
        assert_eq!(text, want);
        assert!(explain(&policies, &eps, &c, &WorkloadId::new("x", "y"), &counters).is_none());
    }
}
