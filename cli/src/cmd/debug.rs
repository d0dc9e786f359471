//! `nexus debug troubleshoot WORKLOAD --network`: the policies that select a workload, the
//! entries compiled for it (the same table is installed on every node), what the kernel counted
//! per rule (summed over nodes), and each node's enforcement: in sync with the replica's policy,
//! behind, or NOT enforced and why.

use std::collections::BTreeMap;

use nexus_api::kinds;
use nexus_api::network::{DebugNetworkRequest, DebugNetworkResponse, NodeEnforcement};
use nexus_ebpf::{CompileOptions, Counter, RuleId, WorkloadId, compile, explain, sum_counters};

use crate::client::{Session, explain as explain_error};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Explain why a workload's traffic passes or not.
    Troubleshoot(TroubleshootArgs),
}

#[derive(Debug, clap::Args)]
pub struct TroubleshootArgs {
    /// `NAME`, `NAMESPACE/NAME` or `workload/NAME`.
    pub workload: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Network policy: policies, compiled entries, counters per node.
    #[arg(long, required = true)]
    pub network: bool,
}

fn workload_id(arg: &str, namespace: &str) -> WorkloadId {
    let arg = arg.strip_prefix("workload/").unwrap_or(arg);
    match arg.split_once('/') {
        Some((ns, name)) => WorkloadId::new(ns, name),
        None => WorkloadId::new(namespace, arg),
    }
}

fn counters_of(n: &NodeEnforcement) -> BTreeMap<RuleId, Counter> {
    n.counters
        .iter()
        .map(|c| {
            (
                RuleId(c.rule),
                Counter {
                    packets: c.packets,
                    bytes: c.bytes,
                    connects: c.connects,
                },
            )
        })
        .collect()
}

/// The report for `workload` (pure).
pub fn render(resp: &DebugNetworkResponse, workload: &WorkloadId) -> Result<String, String> {
    let feed = &resp.feed;
    if feed.policies.is_empty() {
        // The feed then carries no endpoints either (nobody needs them).
        let mut out = format!(
            "no NetworkPolicy exists in the cluster: no workload is isolated, so {workload} \
             (if it exists: `nexus get workloads`) may send and receive whatever the network \
             allows\nnodes (replica {}):\n",
            resp.replica
        );
        if resp.nodes.is_empty() {
            out.push_str("  (no nodes)\n");
        }
        for n in &resp.nodes {
            let state = n
                .condition
                .clone()
                .unwrap_or_else(|| "can enforce network policy".into());
            out.push_str(&format!("  {:<16} {state}\n", n.node));
        }
        return Ok(out);
    }
    let compiled = compile(&feed.policies, &feed.endpoints, &CompileOptions::default());
    let per_node: Vec<BTreeMap<RuleId, Counter>> = resp.nodes.iter().map(counters_of).collect();
    let total = sum_counters(per_node.iter());
    let Some(e) = explain(&feed.policies, &feed.endpoints, &compiled, workload, &total) else {
        return Err(format!(
            "workload {workload} is not in the cluster's network policy (replica {} knows {} workloads): check the name with `nexus get workloads`",
            resp.replica,
            feed.endpoints.len()
        ));
    };
    let mut out = e.to_string();
    let rules: Vec<RuleId> = e
        .rules
        .iter()
        .map(|r| r.rule)
        .chain(e.denied.iter().map(|d| d.1))
        .collect();
    out.push_str(&format!(
        "nodes (policy {} from replica {}):\n",
        short(&feed.hash),
        resp.replica
    ));
    if resp.nodes.is_empty() {
        out.push_str("  (no nodes)\n");
    }
    for (n, counters) in resp.nodes.iter().zip(&per_node) {
        let state = match (&n.condition, &n.enforcing) {
            (Some(c), _) => c.clone(),
            (None, Some(h)) if *h == feed.hash => "enforcing the current policy".into(),
            (None, Some(h)) => format!("enforcing policy {} (behind or ahead)", short(h)),
            (None, None) => "no policy agreed yet".into(),
        };
        let (mut allowed, mut denied) = (Counter::default(), Counter::default());
        for r in &rules {
            if let Some(c) = counters.get(r) {
                if e.denied.iter().any(|d| d.1 == *r) {
                    denied += *c;
                } else {
                    allowed += *c;
                }
            }
        }
        out.push_str(&format!(
            "  {:<16} {state}; this workload: allowed {} packets / {} connects, denied {} packets / {} connects\n",
            n.node, allowed.packets, allowed.connects, denied.packets, denied.connects
        ));
    }
    Ok(out)
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let What::Troubleshoot(a) = args.what;
    let workload = workload_id(&a.workload, &a.namespace);
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let req = DebugNetworkRequest {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        };
        let resp: DebugNetworkResponse = match session.call(kinds::DEBUG_NETWORK, &req).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", explain_error(&e));
                return exit::ERROR;
            }
        };
        match render(&resp, &workload) {
            Ok(text) => {
                print!("{text}");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_api::network::{PolicyFeed, RuleCount};
    use nexus_ebpf::{PolicyObject, WorkloadEndpoints};

    fn node(
        name: &str,
        condition: Option<&str>,
        enforcing: Option<&str>,
        counters: Vec<RuleCount>,
    ) -> NodeEnforcement {
        NodeEnforcement {
            node: name.into(),
            condition: condition.map(Into::into),
            enforcing: enforcing.map(Into::into),
            counters,
            last_seen_ms: Some(100),
        }
    }

    #[test]
    fn without_any_policy_nothing_is_isolated() {
        let resp = DebugNetworkResponse {
            replica: "r0".into(),
            nodes: vec![
                node("node-1", None, None, vec![]),
                node(
                    "node-2",
                    Some("network policy NOT enforced on node node-2: no BPF"),
                    None,
                    vec![],
                ),
            ],
            feed: PolicyFeed::new(3, vec![], vec![]),
        };
        let text = render(&resp, &WorkloadId::new("default", "web")).unwrap();
        assert!(
            text.contains("no NetworkPolicy exists") && text.contains("default/web"),
            "{text}"
        );
        assert!(
            text.contains("node-1           can enforce network policy")
                && text.contains("NOT enforced on node node-2"),
            "{text}"
        );
    }

    #[test]
    fn explains_the_workload_and_every_node() {
        let ep = |name: &str, addr: &str| WorkloadEndpoints {
            workload: WorkloadId::new("default", name),
            labels: [("app".to_string(), name.to_string())].into(),
            addrs: vec![addr.parse().unwrap()],
        };
        let spec = serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": 8080}]}]
        });
        let feed = PolicyFeed::new(
            7,
            vec![PolicyObject {
                namespace: "default".into(),
                name: "api-from-web".into(),
                spec: serde_json::from_value(spec).unwrap(),
            }],
            vec![ep("web", "10.77.1.2"), ep("api", "10.77.2.2")],
        );
        let api = WorkloadId::new("default", "api");
        let compiled = compile(&feed.policies, &feed.endpoints, &CompileOptions::default());
        let allow = compiled.rules.values().next().unwrap().0;
        let deny = compiled.sets[&api].deny_ingress.0;
        let count = |rule, packets, connects| RuleCount {
            rule,
            packets,
            bytes: packets * 60,
            connects,
        };
        let resp = DebugNetworkResponse {
            replica: "r0".into(),
            nodes: vec![
                node(
                    "node-1",
                    None,
                    Some(feed.hash.as_str()),
                    vec![count(allow, 10, 1), count(deny, 0, 2)],
                ),
                node(
                    "node-2",
                    Some("network policy NOT enforced on node node-2: not root"),
                    None,
                    vec![],
                ),
            ],
            feed,
        };
        let text = render(&resp, &workload_id("workload/api", "default")).unwrap();
        let want = format!(
            "workload default/api: ingress isolated, egress open\n\
             selected by: default/api-from-web\n\
             addresses: 10.77.2.2\n\
             ingress allowed:\n  \
             from 10.77.1.2                tcp/8080   packets 10 bytes 600 connects 1  [{}] policy default/api-from-web ingress[0] for default/api\n  \
             denied (no rule): packets 0 bytes 0 connects 2  [{}]\n\
             egress: everything allowed (not isolated)\n\
             nodes (policy {} from replica r0):\n  \
             node-1           enforcing the current policy; this workload: allowed 10 packets / 1 connects, denied 0 packets / 2 connects\n  \
             node-2           network policy NOT enforced on node node-2: not root; this workload: allowed 0 packets / 0 connects, denied 0 packets / 0 connects\n",
            RuleId(allow),
            RuleId(deny),
            short(&resp.feed.hash)
        );
        assert_eq!(text, want);
        let e = render(&resp, &WorkloadId::new("default", "nope")).unwrap_err();
        assert!(e.contains("not in the cluster's network policy"), "{e}");
    }
}
