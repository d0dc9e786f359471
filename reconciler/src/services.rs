//! The Service controller: a Service's endpoints are the ready replicas of the workloads in its
//! namespace whose labels include its selector, at their address and each port's `targetPort`
//! (default: `port`). Pure and deterministic (output sorted); computed as soft status from the
//! committed objects and the replicas the agents report, never written to the log.

use std::net::IpAddr;

use nexus_schemas::{Labels, Protocol, ServiceSpec, selector_matches};
use serde::{Deserialize, Serialize};

use crate::model::InstanceId;

/// A replica that could back a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Labels of the replica's workload.
    pub labels: &'a Labels,
    pub id: &'a InstanceId,
    pub node: &'a str,
    /// Where the replica is reached: its own address (network namespace) or its node's.
    pub address: Option<IpAddr>,
    /// Running and passing its health probe.
    pub ready: bool,
}

/// One address:port a Service sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The Service port's name (or its number as text).
    pub port_name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub instance: InstanceId,
    pub node: String,
}

impl Endpoint {
    /// `address:port` (IPv6 in brackets).
    pub fn target(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }
}

/// The endpoints of a Service in `namespace` with `spec`, from replicas of that namespace.
/// An empty selector selects nothing (as in Kubernetes, such a Service has no managed endpoints).
pub fn endpoints(
    namespace: &str,
    spec: &ServiceSpec,
    candidates: &[Candidate<'_>],
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    if spec.selector.is_empty() {
        return out;
    }
    for c in candidates {
        if c.id.replica.workload.namespace != namespace
            || !c.ready
            || !selector_matches(&spec.selector, c.labels)
        {
            continue;
        }
        let Some(address) = c.address else { continue };
        for p in &spec.ports {
            let Some(port) = u16::try_from(p.target_port.unwrap_or(p.port))
                .ok()
                .filter(|p| *p > 0)
            else {
                continue;
            };
            out.push(Endpoint {
                port_name: p.name.clone().unwrap_or_else(|| p.port.to_string()),
                address,
                port,
                protocol: p.protocol,
                instance: c.id.clone(),
                node: c.node.to_string(),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaId, WorkloadKey};
    use nexus_schemas::ContentHash;

    fn id(ns: &str, name: &str, i: u32) -> InstanceId {
        InstanceId::new(
            ReplicaId::new(WorkloadKey::new(ns, name), i),
            ContentHash([1; 32]),
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn service(selector: &[(&str, &str)], ports: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({"selector": labels(selector), "ports": ports}))
            .unwrap()
    }

    #[test]
    fn ready_matching_replicas_at_their_target_ports() {
        let web = labels(&[("app", "web"), ("tier", "frontend")]);
        let api = labels(&[("app", "api")]);
        let ids = [
            id("default", "web", 0),
            id("default", "web", 1),
            id("default", "web", 2),
            id("default", "api", 0),
            id("prod", "web", 0),
        ];
        let addr = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cands = [
            Candidate {
                labels: &web,
                id: &ids[1],
                node: "n2",
                address: addr("10.77.2.2"),
                ready: true,
            },
            Candidate {
                labels: &web,
                id: &ids[0],
                node: "n1",
                address: addr("10.77.1.2"),
                ready: true,
            },
            Candidate {
                labels: &web,
                id: &ids[2],
                node: "n1",
                address: addr("10.77.1.3"),
                ready: false,
            },
            Candidate {
                labels: &api,
                id: &ids[3],
                node: "n1",
                address: addr("10.77.1.4"),
                ready: true,
            },
            Candidate {
                labels: &web,
                id: &ids[4],
                node: "n3",
                address: addr("10.77.3.2"),
                ready: true,
            },
        ];
        let svc = service(
            &[("app", "web")],
            serde_json::json!([{"name": "http", "port": 80, "targetPort": 8080}, {"port": 9090}]),
        );
        let got: Vec<String> = endpoints("default", &svc, &cands)
            .iter()
            .map(|e| format!("{} {} {}", e.port_name, e.target(), e.node))
            .collect();
        assert_eq!(
            got,
            [
                "9090 10.77.1.2:9090 n1",
                "9090 10.77.2.2:9090 n2",
                "http 10.77.1.2:8080 n1",
                "http 10.77.2.2:8080 n2",
            ],
            "unready, other-label and other-namespace replicas are not endpoints"
        );
        assert!(
            endpoints(
                "default",
                &service(&[], serde_json::json!([{"port": 1}])),
                &cands
            )
            .is_empty()
        );
    }
}
