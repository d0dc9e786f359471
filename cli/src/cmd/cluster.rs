//! `nexus cluster create NAME --nodes N --provider local` / `delete NAME` / `list`: named
//! background local clusters (a detached `nexus up` supervisor under
//! `<config dir>/local-clusters/NAME`, with a pid file); `nexus cluster status [--watch]`:
//! replicas, nodes, capacity, allocations and conditions of the current context's cluster;
//! `nexus cluster member add | remove`: validator-set changes ([`member`]).

mod member;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nexus_api::agent::NodeStatus;
use nexus_api::client::{StatusRequest, StatusResponse};
use nexus_api::kinds;

use super::local::{self, Layout};
use crate::client::{Session, explain};
use crate::config::ClientConfig;
use crate::exit;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    /// Processes on this machine (replicas on loopback, nodes as agents).
    Local,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Create and start a named cluster in the background.
    Create {
        name: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Control-plane replicas: 4 tolerate one faulty replica; 1 runs without fault tolerance.
        #[arg(long, default_value_t = 4)]
        replicas: usize,
        #[arg(long, value_enum, default_value_t = Provider::Local)]
        provider: Provider,
        /// Apply these manifests once it is up.
        #[arg(short = 'f', long = "filename")]
        manifests: Vec<std::path::PathBuf>,
        #[arg(long, default_value = "10s")]
        node_timeout: String,
    },
    /// Stop a named cluster (its replicas stop) and delete it.
    Delete { name: String },
    /// Named local clusters.
    List,
    /// Replicas, nodes, capacity, allocations and conditions.
    Status {
        /// Refresh every second.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Change the validator set: add or remove a control-plane replica.
    #[command(subcommand)]
    Member(member::Member),
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    match args.what {
        What::Create {
            name,
            nodes,
            replicas,
            provider: Provider::Local,
            manifests,
            node_timeout,
        } => create(&name, nodes, replicas, &manifests, &node_timeout),
        What::Delete { name } => delete(&name),
        What::List => list(),
        What::Status { watch } => status(context, watch),
        What::Member(m) => member::run(m, context),
    }
}

fn pid_of(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("up.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn create(
    name: &str,
    nodes: usize,
    replicas: usize,
    manifests: &[std::path::PathBuf],
    node_timeout: &str,
) -> u8 {
    if !local::is_root() {
        eprintln!("error: local clusters run workloads as isolated processes, which needs root");
        return exit::ERROR;
    }
    let dir = local::named_dir(name);
    if pid_of(&dir).is_some_and(local::alive) {
        eprintln!(
            "error: cluster {name:?} is already running (`nexus cluster delete {name}` stops it)"
        );
        return exit::ERROR;
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return exit::ERROR;
    }
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let log = match std::fs::File::create(dir.join("up.log")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot find the nexus binary");
        return exit::ERROR;
    };
    let mut cmd = Command::new(exe);
    cmd.args(["up", "--dir"])
        .arg(&dir)
        .args(["--name", name, "--nodes", &nodes.to_string()])
        .args([
            "--replicas",
            &replicas.to_string(),
            "--node-timeout",
            node_timeout,
        ])
        .arg("--ready-file")
        .arg(&ready);
    if manifests.is_empty() {
        cmd.arg("--no-apply");
    }
    for m in manifests {
        cmd.arg("-f").arg(m);
    }
    let Ok(err) = log.try_clone() else {
        return exit::ERROR;
    };
    use std::os::unix::process::CommandExt;
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the supervisor: {e}");
            return exit::ERROR;
        }
    };
    let _ = std::fs::write(dir.join("up.pid"), format!("{}\n", child.id()));
    let deadline = Instant::now() + Duration::from_secs(180);
    eprintln!(
        "creating cluster {name:?} ({replicas} replica(s), {nodes} node(s)); log: {}",
        dir.join("up.log").display()
    );
    loop {
        if ready.exists() {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            eprintln!("error: the cluster supervisor exited ({st}):");
            eprint!(
                "{}",
                std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
            );
            return exit::ERROR;
        }
        if Instant::now() > deadline {
            eprintln!(
                "error: cluster {name:?} did not come up within 3 minutes; see {}",
                dir.join("up.log").display()
            );
            return exit::ERROR;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
    for line in log
        .lines()
        .filter(|l| !l.starts_with("Ctrl-C stops the cluster"))
    {
        println!("{line}");
    }
    println!(
        "cluster {name:?} runs in the background (pid {}); context {name:?} is current; \
         `nexus cluster delete {name}` stops and removes it",
        child.id()
    );
    exit::OK
}

fn delete(name: &str) -> u8 {
    let dir = local::named_dir(name);
    if !dir.exists() {
        eprintln!("error: no local cluster named {name:?}");
        return exit::INVALID;
    }
    if let Some(pid) = pid_of(&dir).filter(|p| local::alive(*p)) {
        eprintln!("stopping cluster {name:?} (pid {pid}); its agents stop their replicas");
        local::signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(120);
        while local::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if local::alive(pid) {
            eprintln!("error: the supervisor did not stop; kill {pid} and retry");
            return exit::ERROR;
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return exit::ERROR;
    }
    if let Ok(mut cfg) = ClientConfig::load() {
        cfg.contexts.retain(|c| c.name != name);
        if cfg.current_context.as_deref() == Some(name) {
            cfg.current_context = cfg.contexts.first().map(|c| c.name.clone());
        }
        let _ = cfg.save();
    }
    println!("cluster {name:?} deleted");
    exit::OK
}

fn list() -> u8 {
    let root = crate::config::config_dir().join("local-clusters");
    let mut t = Table::new(&["NAME", "STATE", "REPLICAS", "NODES", "NETWORK", "DIR"]);
    let mut entries: Vec<_> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(Some(l)) = Layout::load(&e.path()) else {
            continue;
        };
        let running = pid_of(&e.path()).is_some_and(local::alive);
        t.row(vec![
            l.name.clone(),
            if running { "running" } else { "stopped" }.into(),
            l.replicas.len().to_string(),
            l.nodes.len().to_string(),
            l.pool.clone(),
            e.path().display().to_string(),
        ]);
    }
    print!("{}", t.render());
    exit::OK
}

fn gib(b: u64) -> String {
    format!("{:.1}Gi", b as f64 / f64::from(1u32 << 30))
}

/// The status report as text.
pub fn render(st: &StatusResponse) -> String {
    let mut out = format!(
        "cluster {}  height {}  objects {}\n\n",
        st.cluster, st.height, st.objects
    );
    let mut t = Table::new(&["REPLICA", "ADDRESS", "HEIGHT", "ROUND", "HEALTH", "LAG"]);
    for r in &st.replicas {
        t.row(vec![
            if r.name == st.replica {
                format!("{} (answering)", r.name)
            } else {
                r.name.clone()
            },
            r.addr.clone(),
            r.height.to_string(),
            r.round.map_or_else(|| "-".to_string(), |x| x.to_string()),
            r.health.clone(),
            r.lag.to_string(),
        ]);
    }
    out.push_str(&t.render());
    let nodes: Vec<NodeStatus> = st
        .nodes
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect();
    out.push('\n');
    let mut t = Table::new(&[
        "NODE",
        "STATE",
        "CPU (alloc/cap)",
        "MEMORY (alloc/cap)",
        "REPLICAS (ready/assigned)",
        "NETWORK",
        "LABELS",
    ]);
    for n in &nodes {
        t.row(vec![
            n.name.clone(),
            n.state.clone(),
            format!("{}m/{}m", n.allocated.cpu_millis, n.capacity.cpu_millis),
            format!(
                "{}/{}",
                gib(n.allocated.memory_bytes),
                gib(n.capacity.memory_bytes)
            ),
            format!("{}/{}", n.ready, n.assigned),
            n.network.clone().unwrap_or_else(|| "host".into()),
            n.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    if nodes.is_empty() {
        out.push_str(
            "no nodes have joined (nexus token create, then nexus agent --join ... --token ...)\n",
        );
    } else {
        out.push_str(&t.render());
    }
    if !st.conditions.is_empty() {
        out.push_str("\nconditions:\n");
        for c in &st.conditions {
            out.push_str(&format!("  {c}\n"));
        }
    }
    out
}

fn status(context: Option<&str>, watch: bool) -> u8 {
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        loop {
            match session
                .call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                .await
            {
                Ok(st) => {
                    if watch {
                        print!("\x1b[2J\x1b[H");
                    }
                    print!("{}", render(&st));
                }
                Err(e) => {
                    eprintln!("error: {}", explain(&e));
                    return exit::ERROR;
                }
            }
            if !watch {
                return exit::OK;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = crate::wait_for_shutdown_signal() => return exit::OK,
            }
        }
    })
}
