//! The one object a node agent holds: [`NodeEnforcer`] opens the loader (or remembers why it
//! cannot), compiles the policy inputs it is given for this node and reconciles the kernel, and
//! turns every failure into the condition the node reports
//! ("network policy NOT enforced on node X: reason"). Blocking; call it off the async runtime.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::compile::{CompileOptions, CompiledPolicy, PolicyObject, WorkloadEndpoints, compile};
use crate::error::EbpfError;
use crate::loader::{LoaderOptions, PolicyLoader, ReconcileReport, Replica};

/// What the control plane must give a node to enforce policy: every NetworkPolicy, every
/// workload's labels and replica addresses (cluster-wide), and the node's own addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInput {
    pub policies: Vec<PolicyObject>,
    pub endpoints: Vec<WorkloadEndpoints>,
    /// This node's bridge gateway address(es): health probes come from there.
    pub node_addrs: Vec<IpAddr>,
}

impl PolicyInput {
    /// The compiled table for this node.
    pub fn compile(&self) -> CompiledPolicy {
        compile(
            &self.policies,
            &self.endpoints,
            &CompileOptions {
                node_addrs: self.node_addrs.clone(),
            },
        )
    }
}

/// A node's enforcement, or the reason there is none.
#[derive(Debug)]
pub struct NodeEnforcer {
    node: String,
    loader: Option<PolicyLoader>,
    /// Why policy is not (fully) enforced, if it is not.
    problem: Option<String>,
    last: Option<(PolicyInput, Vec<Replica>)>,
}

impl NodeEnforcer {
    /// Opens (or re-opens after a restart) the node's pinned programs and maps.
    pub fn start(options: &LoaderOptions) -> Self {
        let (loader, problem) = match PolicyLoader::open(options) {
            Ok(l) => (Some(l), None),
            Err(EbpfError::Unsupported { reason }) => (None, Some(reason)),
            Err(e) => (None, Some(e.to_string())),
        };
        NodeEnforcer {
            node: options.node.clone(),
            loader,
            problem,
            last: None,
        }
    }

    /// `Some("network policy NOT enforced on node X: reason")` while policy is not enforced (or
    /// the last update failed); `None` when the kernel holds the latest policy.
    pub fn condition(&self) -> Option<String> {
        self.problem
            .as_ref()
            .map(|r| format!("network policy NOT enforced on node {}: {r}", self.node))
    }

    /// Whether the programs are loaded at all.
    pub fn enforcing(&self) -> bool {
        self.loader.is_some()
    }

    /// The loader, for counters and status.
    pub fn loader(&self) -> Option<&PolicyLoader> {
        self.loader.as_ref()
    }

    /// The loader, to `attach` a new replica before its command runs.
    pub fn loader_mut(&mut self) -> Option<&mut PolicyLoader> {
        self.loader.as_mut()
    }

    /// Makes the kernel enforce `input` for `replicas` (this node's running replicas). Skips the
    /// work when nothing changed since the last successful call, unless `force` (periodic
    /// resync). Returns the report when it reconciled.
    pub fn sync(
        &mut self,
        input: &PolicyInput,
        replicas: &[Replica],
        force: bool,
    ) -> Option<ReconcileReport> {
        let loader = self.loader.as_mut()?;
        if !force
            && self
                .last
                .as_ref()
                .is_some_and(|(i, r)| i == input && r.as_slice() == replicas)
        {
            return None;
        }
        let compiled = input.compile();
        match loader.reconcile(&compiled, replicas) {
            Ok(report) => {
                self.problem = match report.failed.first() {
                    Some((cgroup, e)) => Some(format!(
                        "{} replica(s) not attached, first {}: {e}",
                        report.failed.len(),
                        cgroup.display()
                    )),
                    None => None,
                };
                if self.problem.is_none() {
                    self.last = Some((input.clone(), replicas.to_vec()));
                }
                Some(report)
            }
            Err(e) => {
                self.problem = Some(e.to_string());
                self.last = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_node_reports_why() {
        let opts = LoaderOptions {
            node: "a/b".into(),
            pin_root: "/nonexistent".into(),
        };
        let mut n = NodeEnforcer::start(&opts);
        assert!(!n.enforcing());
        let c = n.condition().expect("a condition");
        assert!(
            c.starts_with("network policy NOT enforced on node a/b: invalid node name"),
            "{c}"
        );
        assert!(n.sync(&PolicyInput::default(), &[], true).is_none());
    }
}
