//! `nexus up`: a local cluster on loopback, supervised in the foreground. The first run creates
//! it under `./.nexus` (PKI, replica configs, a join token, a client context); every run starts
//! the replicas (`nexus server`) and one agent per node (`nexus agent --drain-on-exit`), applies
//! `manifests/examples`, waits with progress until the workloads are ready and prints what runs
//! where. Ctrl-C stops the agents (which stop their replicas), then the control plane; running
//! it again resumes the same cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nexus_api::agent::NodeStatus;
use nexus_api::client::{
    GetRequest, GetResponse, Selector, StatusRequest, StatusResponse, SubmitRequest,
};
use nexus_api::kinds;
use nexus_ledger::{Op, Source};
use nexus_schemas::canonical_value;
use serde_json::Value;

use super::local::{self, Layout, Proc, Spec};
use crate::client::Session;
use crate::exit;
use crate::render::render_diagnostics;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the cluster lives.
    #[arg(long, default_value = ".nexus")]
    pub dir: PathBuf,
    /// Cluster and context name (first run only).
    #[arg(long, default_value = "up")]
    pub name: String,
    /// Control-plane replicas (first run only): 4 tolerate one faulty replica (3f+1, f = 1);
    /// 1 runs a single replica without fault tolerance.
    #[arg(long, default_value_t = 4)]
    pub replicas: usize,
    /// Nodes, one agent each (first run only).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replica network pool (`10.77.0.0/16`; default: the first free 10.x.0.0/16 from 10.77).
    #[arg(long)]
    pub network_pool: Option<String>,
    /// Silence after which a node is declared lost (first run only).
    #[arg(long, default_value = "10s")]
    pub node_timeout: String,
    /// Manifests to apply once the nodes joined.
    #[arg(short = 'f', long = "filename", default_value = "manifests/examples")]
    pub manifests: Vec<PathBuf>,
    /// Apply nothing.
    #[arg(long)]
    pub no_apply: bool,
    /// Touch this file once the cluster is up (used by `nexus cluster create`).
    #[arg(long, hide = true)]
    pub ready_file: Option<PathBuf>,
}

fn status_line(nodes: &[NodeStatus], want: usize) -> String {
    let ready = nodes.iter().filter(|n| n.state == "Ready").count();
    format!("waiting for nodes: {ready}/{want} registered and heartbeating")
}

async fn connect(layout: &Layout, dir: &Path, deadline: Instant) -> Result<Session, String> {
    loop {
        match Session::connect_to(layout.context(dir)).await {
            Ok(s) => {
                if s.call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                    .await
                    .is_ok()
                {
                    return Ok(s);
                }
            }
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_nodes(session: &Session, want: usize, deadline: Instant) -> Result<(), String> {
    let mut last = String::new();
    loop {
        let st: StatusResponse = session
            .call(kinds::STATUS, &StatusRequest {})
            .await
            .map_err(|e| e.to_string())?;
        let nodes: Vec<NodeStatus> = st
            .nodes
            .iter()
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect();
        if nodes.iter().filter(|n| n.state == "Ready").count() >= want {
            return Ok(());
        }
        let l = status_line(&nodes, want);
        if l != last {
            eprintln!("{l}");
            last = l;
        }
        if Instant::now() > deadline {
            return Err(format!("{last}: giving up"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Validates and applies manifest paths; prints kubectl-style outcomes. GitSources with a
/// relative local URL point into the cluster directory `dir` (see [`super::up_git`]).
pub async fn apply_paths(session: &Session, paths: &[PathBuf], dir: &Path) -> Result<(), String> {
    let files = crate::load::load_sources(paths).map_err(|e| e.to_string())?;
    let v = nexus_schemas::validate_sources(&files);
    if v.has_errors() {
        eprint!(
            "{}",
            render_diagnostics(&v.diagnostics, &files, crate::stderr_is_tty())
        );
        return Err("the manifests have errors; nothing was applied".into());
    }
    let mut objects: Vec<Value> = v
        .objects
        .iter()
        .map(|o| canonical_value(&o.object))
        .collect();
    for note in super::up_git::provision(dir, &mut objects)? {
        eprintln!("{note}");
    }
    let ops: Vec<Op> = objects
        .into_iter()
        .map(|object| Op::Apply {
            object,
            if_version: None,
        })
        .collect();
    let signed = session.sign(ops, Source::Cli);
    let r = super::apply::submit(
        session,
        &SubmitRequest {
            signed: signed.to_bytes(),
        },
    )
    .await
    .map_err(|_| "apply failed".to_string())?;
    super::apply::print_outcomes(&r.outcomes, "");
    Ok(())
}

fn s(v: &Value, p: &str) -> String {
    match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(o) => o.to_string(),
    }
}

/// What runs where, and what to try next.
pub async fn summary(session: &Session, layout: &Layout, dir: &Path) -> String {
    let mut out = String::new();
    let get = |kind: &str| GetRequest {
        selector: Selector {
            kind: Some(kind.into()),
            ..Default::default()
        },
        consistent: false,
    };
    out.push_str(&format!(
        "\nnexus cluster {:?} is up: {} replica(s) ({}), {} node(s); state in {}\n",
        layout.name,
        layout.replicas.len(),
        layout
            .replicas
            .iter()
            .map(|r| r.addr.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        layout.nodes.len(),
        dir.display()
    ));
    if let Ok(w) = session
        .call::<_, GetResponse>(kinds::GET, &get("Workload"))
        .await
        && !w.objects.is_empty()
    {
        let mut t = crate::table::Table::new(&["WORKLOAD", "READY", "REPLICAS (node address)"]);
        for o in &w.objects {
            let st = o.status.clone().unwrap_or(Value::Null);
            let reps = st
                .get("replicas")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            format!("#{} {} {}", s(r, "/index"), s(r, "/node"), s(r, "/address"))
                                .trim_end()
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.row(vec![
                s(&o.object, "/metadata/name"),
                format!("{}/{}", s(&st, "/ready"), s(&st, "/desired")),
                reps,
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if let Ok(sv) = session
        .call::<_, GetResponse>(kinds::GET, &get("Service"))
        .await
        && !sv.objects.is_empty()
    {
        let mut t = crate::table::Table::new(&["SERVICE", "ENDPOINTS"]);
        for o in &sv.objects {
            let eps = o
                .status
                .as_ref()
                .and_then(|st| st.get("endpoints"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.row(vec![s(&o.object, "/metadata/name"), eps]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out.push_str(
        "\nTry:\n  nexus get workloads -o wide       desired/ready replicas and their nodes\n  \
         nexus get services -o wide        endpoints (replica address:port)\n  \
         nexus logs workload/web -f        output of every web replica\n  \
         nexus cluster status              replicas, nodes, capacity, allocations\n  \
         nexus history workload/web        every version: who, when, what changed\n  \
         nexus audit                       the audit log; `nexus audit verify` proves it\n  \
         nexus gitops status               git sources: synced commit, errors, drift\n  \
         nexus service deploy 'python3 -m http.server 9000' --name files --replicas 2 --port 9000 --wait\n\n\
         Ctrl-C stops the cluster (the agents stop their replicas first); `nexus up` resumes it.\n",
    );
    out
}

fn stop_all(agents: &mut [Proc], replicas: &mut [Proc]) {
    let groups = [
        ("stopping the agents (they stop their replicas)...", agents),
        ("stopping the control plane...", replicas),
    ];
    for (what, group) in groups {
        if !group.is_empty() {
            eprintln!("{what}");
        }
        for p in group.iter() {
            local::signal(p.child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for p in group.iter_mut() {
            loop {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Creates or loads the cluster in `args.dir`.
pub fn prepare(args: &Args) -> Result<(PathBuf, Layout), String> {
    let dir = std::path::absolute(&args.dir).map_err(|e| e.to_string())?;
    match Layout::load(&dir).map_err(|e| e.to_string())? {
        Some(l) => {
            l.install_context(&dir).map_err(|e| e.to_string())?;
            eprintln!(
                "resuming cluster {:?} from {} (context {:?})",
                l.name,
                dir.display(),
                l.name
            );
            Ok((dir, l))
        }
        None => {
            let spec = Spec {
                name: args.name.clone(),
                replicas: args.replicas,
                nodes: args.nodes,
                pool: args.network_pool.clone(),
                node_timeout: args.node_timeout.clone(),
            };
            let l = local::create(&dir, &spec).map_err(|e| e.to_string())?;
            l.install_context(&dir).map_err(|e| e.to_string())?;
            eprintln!(
                "created cluster {:?} in {}: {} replica(s), {} node(s), replica network {}; context {:?} is now current",
                l.name,
                dir.display(),
                l.replicas.len(),
                l.nodes.len(),
                l.pool,
                l.name
            );
            Ok((dir, l))
        }
    }
}

pub fn run(args: Args) -> u8 {
    if !local::is_root() {
        eprintln!(
            "error: nexus up runs workloads as isolated processes (cgroups, namespaces, a network \
             namespace per replica), which needs root: run it with sudo"
        );
        return exit::ERROR;
    }
    let (dir, layout) = match prepare(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let mut replicas = Vec::new();
    for r in &layout.replicas {
        match local::spawn_replica(&dir, r) {
            Ok(p) => replicas.push(p),
            Err(e) => {
                eprintln!("error: {e}");
                stop_all(&mut [], &mut replicas);
                return exit::ERROR;
            }
        }
    }
    eprintln!(
        "started {} replica(s); logs in {}",
        replicas.len(),
        dir.join("logs").display()
    );
    let mut agents = Vec::new();
    for i in 0..layout.nodes.len() {
        match local::spawn_agent(&dir, &layout, i) {
            Ok(p) => agents.push(p),
            Err(e) => {
                eprintln!("error: {e}");
                stop_all(&mut agents, &mut replicas);
                return exit::ERROR;
            }
        }
    }
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            stop_all(&mut agents, &mut replicas);
            return exit::ERROR;
        }
    };
    let code = rt.block_on(async {
        let bring_up = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            let session = connect(&layout, &dir, deadline).await?;
            wait_nodes(&session, layout.nodes.len(), deadline).await?;
            let manifests: Vec<PathBuf> = args
                .manifests
                .iter()
                .filter(|p| p.exists())
                .cloned()
                .collect();
            if !args.no_apply {
                if manifests.is_empty() {
                    eprintln!(
                        "note: {} not found here: nothing applied (use -f PATH)",
                        args.manifests
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                } else {
                    apply_paths(&session, &manifests, &dir).await?;
                }
            }
            if let Err(e) = super::wait::until_ready(&session, &[], Duration::from_secs(120)).await
            {
                eprintln!("warning: {e}");
            }
            print!("{}", summary(&session, &layout, &dir).await);
            Ok::<(), String>(())
        };
        tokio::select! {
            r = bring_up => {
                if let Err(e) = r {
                    eprintln!("error: {e} (see the logs in {})", dir.join("logs").display());
                    return exit::ERROR;
                }
            }
            _ = crate::wait_for_shutdown_signal() => return exit::OK,
        }
        if let Some(f) = &args.ready_file {
            let _ = std::fs::write(f, b"up\n");
        }
        let mut reported = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = crate::wait_for_shutdown_signal() => return exit::OK,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            for p in agents.iter_mut().chain(replicas.iter_mut()) {
                if let Ok(Some(st)) = p.child.try_wait()
                    && reported.insert(p.label.clone())
                {
                    eprintln!(
                        "warning: {} exited ({st}); see {}",
                        p.label,
                        p.log.display()
                    );
                }
            }
        }
    });
    stop_all(&mut agents, &mut replicas);
    eprintln!(
        "stopped; `nexus up --dir {}` resumes the cluster",
        args.dir.display()
    );
    code
}
