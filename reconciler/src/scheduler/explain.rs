//! Why a replica could not be placed: the typed reason and its one-line explanation
//! ("no node has 4 CPU free", "no node matches selector gpu=true").

use std::fmt;

use nexus_schemas::Protocol;
use nexus_schemas::quantity::{Bytes, Millicores};
use serde::{Deserialize, Serialize};

/// Why the scheduler could not place a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The cluster has no ready node at all.
    NoReadyNodes,
    /// No node (ready or not) has all the selector's labels.
    NoNodeMatchesSelector { selector: String },
    /// Nodes match the selector, but none of them is ready.
    NoReadyNodeMatchesSelector { selector: String },
    /// Ready nodes match, but none has room; counts say why each node was rejected (the first
    /// failing check per node, in the order cpu, memory, gpus, port, maxPerNode).
    NoFit(NoFit),
    /// The workload's resources do not parse (validation should have caught this).
    InvalidSpec(String),
}

/// Per-check rejection counts for [`Reason::NoFit`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NoFit {
    /// Ready nodes matching the selector.
    pub candidates: usize,
    pub cpu: usize,
    pub memory: usize,
    pub gpus: usize,
    pub ports: usize,
    pub max_per_node: usize,
    /// The request that did not fit.
    pub want_cpu: Millicores,
    pub want_memory: Bytes,
    pub want_gpus: u32,
    /// The first port that was taken on some node.
    pub port: Option<(u16, Protocol)>,
    /// The workload's `placement.maxPerNode`.
    pub max_per_node_limit: u32,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

impl NoFit {
    fn parts(&self) -> Vec<(usize, String, String)> {
        let port = self
            .port
            .map(|(p, pr)| format!("{p}/{}", proto(pr)))
            .unwrap_or_default();
        let gpus = if self.want_gpus == 1 {
            "1 GPU".to_string()
        } else {
            format!("{} GPUs", self.want_gpus)
        };
        let rpn = plural(self.max_per_node_limit as usize, "replica", "replicas");
        vec![
            (
                self.cpu,
                format!("{} CPU free", self.want_cpu),
                format!("without {} CPU free", self.want_cpu),
            ),
            (
                self.memory,
                format!("{} memory free", self.want_memory),
                format!("without {} memory free", self.want_memory),
            ),
            (
                self.gpus,
                format!("{gpus} free"),
                format!("without {gpus} free"),
            ),
            (
                self.ports,
                format!("port {port} free"),
                format!("with port {port} taken"),
            ),
            (
                self.max_per_node,
                String::new(),
                format!("already running {rpn} (maxPerNode)"),
            ),
        ]
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoReadyNodes => f.write_str("no ready node"),
            Reason::NoNodeMatchesSelector { selector } => {
                write!(f, "no node matches selector {selector}")
            }
            Reason::NoReadyNodeMatchesSelector { selector } => {
                write!(f, "no ready node matches selector {selector}")
            }
            Reason::InvalidSpec(e) => write!(f, "invalid workload: {e}"),
            Reason::NoFit(n) => {
                let parts: Vec<_> = n.parts().into_iter().filter(|(c, _, _)| *c > 0).collect();
                match parts.as_slice() {
                    [(_, has, _)] if n.max_per_node == 0 => write!(f, "no node has {has}"),
                    [_] => write!(
                        f,
                        "every matching node already runs {} (maxPerNode)",
                        plural(n.max_per_node_limit as usize, "replica", "replicas")
                    ),
                    _ => {
                        let detail: Vec<String> = parts
                            .iter()
                            .map(|(c, _, why)| format!("{} {why}", plural(*c, "node", "nodes")))
                            .collect();
                        write!(f, "no node fits: {}", detail.join(", "))
                    }
                }
            }
        }
    }
}

/// `k=v,k2=v2` for messages.
pub(crate) fn selector_text(selector: &nexus_schemas::Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nf() -> NoFit {
        NoFit {
            candidates: 3,
            want_cpu: Millicores(4000),
            want_memory: Bytes(1 << 30),
            want_gpus: 1,
            max_per_node_limit: 1,
            port: Some((8080, Protocol::Tcp)),
            ..NoFit::default()
        }
    }

    #[test]
    fn messages() {
        let cases = [
            (
                Reason::NoFit(NoFit { cpu: 3, ..nf() }),
                "no node has 4 CPU free",
            ),
            (
                Reason::NoFit(NoFit { memory: 3, ..nf() }),
                "no node has 1Gi memory free",
            ),
            (
                Reason::NoFit(NoFit { gpus: 3, ..nf() }),
                "no node has 1 GPU free",
            ),
            (
                Reason::NoFit(NoFit { ports: 3, ..nf() }),
                "no node has port 8080/TCP free",
            ),
            (
                Reason::NoFit(NoFit {
                    max_per_node: 3,
                    ..nf()
                }),
                "every matching node already runs 1 replica (maxPerNode)",
            ),
            (
                Reason::NoFit(NoFit {
                    cpu: 2,
                    memory: 1,
                    ..nf()
                }),
                "no node fits: 2 nodes without 4 CPU free, 1 node without 1Gi memory free",
            ),
            (
                Reason::NoNodeMatchesSelector {
                    selector: "gpu=true".into(),
                },
                "no node matches selector gpu=true",
            ),
            (Reason::NoReadyNodes, "no ready node"),
        ];
        for (reason, want) in cases {
            assert_eq!(reason.to_string(), want);
        }
        let half = Reason::NoFit(NoFit {
            cpu: 1,
            want_cpu: Millicores(500),
            ..nf()
        });
        assert_eq!(half.to_string(), "no node has 500m CPU free");
    }
}
