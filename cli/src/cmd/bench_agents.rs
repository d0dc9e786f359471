//! `nexus bench agents`: the node-agent issue's figures, printed as one table.
//! - apply → all replicas running (ready as the control plane reports it), p50/p99 over N runs,
//!   for a 3-replica workload on a local cluster of real processes (1 replica, 3 agents; root);
//! - RSS of the replica and of an agent, idle and with 100 workloads on that agent;
//! - scheduler time for 10,000 workloads on 1,000 nodes (the pure function);
//! - convergence of 1,000 simulated agents (the real protocol over QUIC, fake runtime) running
//!   10,000 replicas: from the apply to every replica reported ready.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_agent::{AgentConfig, RuntimeChoice};
use nexus_api::agent::Capacity as WireCapacity;
use nexus_api::client::{
    GetRequest, GetResponse, Selector, StatusRequest, StatusResponse, SubmitRequest,
};
use nexus_api::kinds;
use nexus_ledger::{Op, Source};
use nexus_reconciler::model::{WorkloadKey, template_hash};
use nexus_reconciler::runtime::fake::FakeRuntime;
use nexus_reconciler::scheduler::{
    Capacity, Input, NodeCondition, NodeInput, WorkloadInput, schedule,
};
use nexus_schemas::quantity::{Bytes, Millicores, RawQuantity};
use nexus_schemas::{Labels, WorkloadSpec};
use serde_json::{Value, json};

use super::local::{self, Layout, Spec};
use crate::client::Session;
use crate::exit;
use crate::table::Table;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// apply → running measurements.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Simulated agents for the convergence row.
    #[arg(long, default_value_t = 1000)]
    pub sim_agents: usize,
    /// Replicas for the convergence row.
    #[arg(long, default_value_t = 10_000)]
    pub sim_replicas: usize,
    /// Skip the rows that need a real cluster (root).
    #[arg(long)]
    pub skip_real: bool,
    /// Skip the simulated-agents row.
    #[arg(long)]
    pub skip_sim: bool,
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn workload(name: &str, replicas: usize, extra: Value) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "command": ["sleep", "3600"],
        "resources": {"cpu": "10m", "memory": "16Mi"},
        "terminationGracePeriodSeconds": 1,
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": name, "labels": {"bench": "agents"}}, "spec": spec})
}

pub(crate) async fn submit(session: &Session, ops: Vec<Op>) -> Result<(), String> {
    let signed = session.sign(ops, Source::Cli);
    super::apply::submit(
        session,
        &SubmitRequest {
            signed: signed.to_bytes(),
        },
    )
    .await
    .map(drop)
    .map_err(|_| "submit failed".to_string())
}

/// Total ready replicas of the bench workloads (and their number).
async fn ready_total(session: &Session) -> Result<(u64, usize), String> {
    let r: GetResponse = session
        .call(
            kinds::GET,
            &GetRequest {
                selector: Selector {
                    kind: Some("Workload".into()),
                    labels: vec![("bench".into(), "agents".into())],
                    ..Default::default()
                },
                consistent: false,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let ready = r
        .objects
        .iter()
        .map(|o| {
            o.status
                .as_ref()
                .filter(|s| s.get("generation").and_then(Value::as_u64) == Some(o.generation))
                .and_then(|s| s.get("ready"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        })
        .sum();
    Ok((ready, r.objects.len()))
}

async fn wait_ready(session: &Session, want: u64, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready_total(session).await?.0 >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not {want} ready replicas after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn delete_op(name: &str) -> Op {
    Op::Delete {
        key: nexus_schemas::ObjectKey::new(nexus_schemas::Kind::Workload, "default", name),
        if_version: None,
    }
}

/// Rows measured on a local cluster of real processes.
async fn real(args: &Args, rows: &mut Vec<[String; 3]>) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("nexus-bench-agents-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let layout = local::create(
        &tmp,
        &Spec {
            name: "bench".into(),
            replicas: 1,
            nodes: 3,
            pool: None,
            node_timeout: "10s".into(),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut replica = local::spawn_replica(&tmp, &layout.replicas[0]).map_err(|e| e.to_string())?;
    let mut agents = Vec::new();
    for i in 0..3 {
        agents.push(local::spawn_agent(&tmp, &layout, i).map_err(|e| e.to_string())?);
    }
    let result = real_rows(
        args,
        &layout,
        &tmp,
        replica.child.id(),
        agents[0].child.id(),
        rows,
    )
    .await;
    for a in &agents {
        local::signal(a.child.id(), libc::SIGTERM);
    }
    for a in &mut agents {
        let _ = a.child.wait();
    }
    local::signal(replica.child.id(), libc::SIGTERM);
    let _ = replica.child.wait();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn real_rows(
    args: &Args,
    layout: &Layout,
    dir: &Path,
    replica_pid: u32,
    agent_pid: u32,
    rows: &mut Vec<[String; 3]>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let session = loop {
        if let Ok(s) = Session::connect_to(layout.context(dir)).await
            && let Ok(st) = s
                .call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                .await
            && st.nodes.iter().filter(|n| n["state"] == "Ready").count() == 3
        {
            break s;
        }
        if Instant::now() > deadline {
            return Err("the bench cluster did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_replica_idle, rss_agent_idle) = (rss_kib(replica_pid), rss_kib(agent_pid));

    let mut times = Vec::new();
    for i in 0..args.runs {
        let name = format!("lat-{i}");
        let t = Instant::now();
        submit(
            &session,
            vec![Op::Apply {
                object: workload(&name, 3, json!({})),
                if_version: None,
            }],
        )
        .await?;
        wait_ready(&session, 3, Duration::from_secs(60)).await?;
        times.push(t.elapsed());
        submit(&session, vec![delete_op(&name)]).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready_total(&session).await?.1 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // let the agents stop them
    }
    times.sort();
    rows.push([
        format!(
            "apply → 3 replicas running ({} runs, 3 real agents)",
            times.len()
        ),
        format!(
            "p50 {}  p99 {}",
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.99))
        ),
        format!("min {}  max {}", ms(times[0]), ms(times[times.len() - 1])),
    ]);

    // 100 single-replica workloads, all on node-1.
    let ops: Vec<Op> = (0..100)
        .map(|i| Op::Apply {
            object: workload(
                &format!("rss-{i:03}"),
                1,
                json!({"placement": {"nodeSelector": {"zone": "zone-1"}}}),
            ),
            if_version: None,
        })
        .collect();
    let t = Instant::now();
    submit(&session, ops).await?;
    wait_ready(&session, 100, Duration::from_secs(120)).await?;
    let hundred = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    rows.push([
        "RSS of the replica: idle / 100 workloads".into(),
        format!("{} / {}", mib(rss_replica_idle), mib(rss_kib(replica_pid))),
        "nexus server process".into(),
    ]);
    rows.push([
        "RSS of an agent: idle / 100 workloads".into(),
        format!("{} / {}", mib(rss_agent_idle), mib(rss_kib(agent_pid))),
        format!("100 replicas on one node started in {}", ms(hundred)),
    ]);
    let ops: Vec<Op> = (0..100)
        .map(|i| delete_op(&format!("rss-{i:03}")))
        .collect();
    submit(&session, ops).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn scheduler_row(rows: &mut Vec<[String; 3]>) {
    let mut r = Lcg(7);
    let nodes: Vec<NodeInput> = (0..1000)
        .map(|i| NodeInput {
            name: format!("node-{i:04}"),
            capacity: Capacity {
                cpu: Millicores(64_000),
                memory: Bytes(256 << 30),
                gpus: 0,
            },
            labels: Labels::from([("zone".to_string(), ["a", "b", "c"][i % 3].to_string())]),
            condition: NodeCondition::Ready,
            host_ports: false,
        })
        .collect();
    let workloads: Vec<WorkloadInput> = (0..10_000)
        .map(|i| {
            let mut spec: WorkloadSpec = serde_json::from_value(json!({"command": ["app"]}))
                .unwrap_or_else(|_| unreachable!());
            spec.replicas = 1 + r.next(5) as u32;
            spec.resources.cpu = RawQuantity(format!("{}m", 100 + 50 * r.next(10)));
            spec.resources.memory = RawQuantity(format!("{}Mi", 128 * (1 + r.next(8))));
            if i % 10 == 0 {
                spec.placement
                    .node_selector
                    .insert("zone".into(), ["a", "b", "c"][i % 3].into());
            }
            let hash = template_hash(&spec);
            WorkloadInput {
                key: WorkloadKey::new("default", format!("w{i:05}")),
                spec,
                generation: 1,
                hash,
            }
        })
        .collect();
    let replicas: u32 = workloads.iter().map(|w| w.spec.replicas).sum();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let t = Instant::now();
        let s = schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &[],
        });
        times.push(t.elapsed());
        last = Some(s);
    }
    let steady = last.map(|s| {
        let cur = s.as_current(|_| true);
        let t = Instant::now();
        let _ = schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &cur,
        });
        t.elapsed()
    });
    times.sort();
    rows.push([
        format!("scheduler: 10,000 workloads ({replicas} replicas) on 1,000 nodes"),
        format!(
            "cold {}  steady {}",
            ms(pct(&times, 0.5)),
            steady.map(ms).unwrap_or_default()
        ),
        "pure function, median of 5 / one steady pass".into(),
    ]);
}

/// In-process replica + simulated agents with fake runtimes.
async fn sim(args: &Args, rows: &mut Vec<[String; 3]>) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("nexus-bench-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let layout = local::create(
        &tmp,
        &Spec {
            name: "sim".into(),
            replicas: 1,
            nodes: 0,
            pool: None,
            node_timeout: "30s".into(),
        },
    )
    .map_err(|e| e.to_string())?;
    let yaml = Layout::server_yaml(&tmp, "r0");
    let mut opts = super::server::options(&yaml, None).map_err(|e| e.to_string())?;
    opts.rpc.max_concurrent_requests = 4096;
    let mut nodes = super::server::nodes_options(&yaml).map_err(|e| e.to_string())?;
    nodes.network_pool = None;
    let replica = nexus_server::Replica::start_with(opts, nodes)
        .await
        .map_err(|e| e.to_string())?;
    let mut handles = Vec::new();
    let t = Instant::now();
    for i in 0..args.sim_agents {
        let name = format!("sim-{i:04}");
        let mut cfg = AgentConfig::new(
            name.clone(),
            vec![layout.replicas[0].addr.clone()],
            tmp.join("nodes").join(&name),
        );
        cfg.token = Some(layout.token.clone());
        cfg.tick = Duration::from_millis(500);
        cfg.capacity = Some(WireCapacity {
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
            gpus: 0,
        });
        let rt = Arc::new(FakeRuntime::new());
        handles.push(tokio::spawn(nexus_agent::start(
            cfg,
            RuntimeChoice::Fake(rt),
        )));
    }
    let mut agents = Vec::new();
    for h in handles {
        agents.push(
            h.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
    }
    let session = Session::connect_to(layout.context(&tmp))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st: StatusResponse = session
            .call(kinds::STATUS, &StatusRequest {})
            .await
            .map_err(|e| e.to_string())?;
        if st.nodes.iter().filter(|n| n["state"] == "Ready").count() >= args.sim_agents {
            break;
        }
        if Instant::now() > deadline {
            return Err("the simulated agents did not all register".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = t.elapsed();
    let per = 10usize;
    let count = args.sim_replicas.div_ceil(per);
    let ops: Vec<Op> = (0..count)
        .map(|i| Op::Apply {
            object: workload(&format!("sim-{i:05}"), per, json!({})),
            if_version: None,
        })
        .collect();
    let want = (count * per) as u64;
    let t = Instant::now();
    submit(&session, ops).await?;
    wait_ready(&session, want, Duration::from_secs(600)).await?;
    let converged = t.elapsed();
    rows.push([
        format!(
            "convergence: {} simulated agents, {want} replicas",
            args.sim_agents
        ),
        ms(converged),
        format!(
            "apply → all ready (agents joined in {}; {} scheduling rounds)",
            ms(joined),
            replica.nodes().rounds()
        ),
    ]);
    for a in agents {
        a.stop(false).await;
    }
    replica.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

pub fn run(args: Args) -> u8 {
    let mut rows: Vec<[String; 3]> = Vec::new();
    scheduler_row(&mut rows);
    let code = crate::block_on(async {
        if !args.skip_real {
            if local::is_root() {
                if let Err(e) = real(&args, &mut rows).await {
                    eprintln!("error: real-cluster rows: {e}");
                    return exit::ERROR;
                }
            } else {
                eprintln!("skipping the real-cluster rows: they need root");
            }
        }
        if !args.skip_sim
            && let Err(e) = sim(&args, &mut rows).await
        {
            eprintln!("error: simulated agents: {e}");
            return exit::ERROR;
        }
        exit::OK
    });
    let mut t = Table::new(&["MEASUREMENT", "RESULT", "NOTES"]);
    for r in rows {
        t.row(r.to_vec());
    }
    print!("{}", t.render());
    code
}
