//! `nexus agent --join ADDR --token TOKEN`: runs a node agent until Ctrl-C or SIGTERM. The
//! first run joins (the token buys a node certificate, kept under the state directory); later
//! runs reuse it. Replicas keep running when the agent stops (the next agent adopts them)
//! unless `--drain-on-exit`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nexus_agent::{AgentConfig, RuntimeChoice};
use nexus_api::agent::Capacity;
use nexus_schemas::quantity::{Bytes, Millicores};

use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Replica addresses (host:port), comma-separated or repeated: every replica of the cluster.
    #[arg(
        long = "join",
        value_name = "ADDR",
        required = true,
        value_delimiter = ','
    )]
    pub join: Vec<String>,
    /// Join token (`nexus token create`); needed on the first run only.
    #[arg(long, env = "NEXUS_JOIN_TOKEN")]
    pub token: Option<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Node labels (`zone=a,disk=ssd`).
    #[arg(long)]
    pub labels: Option<String>,
    /// Where the node certificate, the last assignments and replica state live
    /// (default: $XDG_DATA_HOME/nexus/agent/<name>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address the node is reached at (for replicas sharing the host network).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// cgroup directory (under each hierarchy) holding this cluster's nodes.
    #[arg(long, default_value = "nexus")]
    pub cgroup_root: PathBuf,
    /// TLS name the replicas present.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// CPU to announce instead of the detected count (`4`, `1500m`).
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory to announce instead of the detected amount (`8Gi`).
    #[arg(long)]
    pub memory: Option<String>,
    /// Stop every replica when the agent exits (`nexus up` uses this).
    #[arg(long)]
    pub drain_on_exit: bool,
    /// Do not enforce network policy on this node (no eBPF); the node then reports
    /// "network policy NOT enforced", shown by `cluster status` and `get`.
    #[arg(long)]
    pub no_network_policy: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".into())
}

fn config(args: &Args) -> Result<AgentConfig, String> {
    let name = args.name.clone().unwrap_or_else(hostname);
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::config::data_dir().join("agent").join(&name));
    let mut cfg = AgentConfig::new(name, args.join.clone(), state_dir);
    cfg.token = args.token.clone();
    cfg.server_name = args.server_name.clone();
    cfg.address = args.address.clone();
    cfg.drain_on_exit = args.drain_on_exit;
    cfg.network_policy = !args.no_network_policy;
    let labels: BTreeMap<String, String> =
        super::apply::parse_labels(args.labels.as_deref().unwrap_or(""))?
            .into_iter()
            .collect();
    cfg.labels = labels;
    if args.cpu.is_some() || args.memory.is_some() {
        let detected = nexus_reconciler::agent::detect_capacity();
        let cpu = match &args.cpu {
            Some(c) => {
                Millicores::parse(c)
                    .map_err(|e| format!("--cpu {c:?}: {e}"))?
                    .0
            }
            None => detected.cpu.0,
        };
        let memory = match &args.memory {
            Some(m) => {
                Bytes::parse(m)
                    .map_err(|e| format!("--memory {m:?}: {e}"))?
                    .0
            }
            None => detected.memory.0,
        };
        cfg.capacity = Some(Capacity {
            cpu_millis: cpu,
            memory_bytes: memory,
            gpus: detected.gpus,
        });
    }
    Ok(cfg)
}

pub fn run(args: Args) -> u8 {
    crate::init_logging();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let runtime = RuntimeChoice::Process {
        cgroup_root: args.cgroup_root.clone(),
    };
    crate::block_on(async move {
        eprintln!(
            "nexus agent {} joining {} (state in {})",
            cfg.name,
            cfg.servers.join(", "),
            cfg.state_dir.display()
        );
        match nexus_agent::run(cfg, runtime, crate::wait_for_shutdown_signal()).await {
            Ok(()) => {
                eprintln!("agent stopped");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        }
    })
}
