//! `nexus bench network` (root): how fast a NetworkPolicy change committed to the ledger is
//! enforced by the kernel, end to end. A local cluster of real processes (one replica, two
//! agents) runs `web` on one node and `api` on the other; a client inside the web replica (its
//! network namespace and cgroup, see [`crate::netprobe`]) connects to api:8080 while the policy
//! flips between allowing and denying it. Each flip is timed from the signed apply until the
//! first connect that sees the new verdict, split into the commit (the apply acknowledged) and
//! commit → enforced (replica round, feed to the agent, f+1 agreement, eBPF map update).
//! Throughput with and without the programs is measured by `cargo bench -p nexus-ebpf`.

use std::time::{Duration, Instant};

use nexus_api::client::{GetRequest, GetResponse, Selector, StatusRequest, StatusResponse};
use nexus_api::kinds;
use nexus_ledger::Op;
use serde_json::{Value, json};

use super::bench_agents::{ms, pct, submit};
use super::local::{self, Spec};
use crate::client::Session;
use crate::exit;
use crate::netprobe::{Probe, server_command};
use crate::table::Table;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Policy changes to time (alternately denying and allowing web -> api:8080).
    #[arg(long, default_value_t = 100)]
    pub flips: usize,
}

fn workload(name: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "command": server_command(&[8080, 9090]),
            "resources": {"cpu": "50m", "memory": "32Mi"},
            "placement": {"nodeSelector": {"zone": zone}},
            "terminationGracePeriodSeconds": 1,
        }
    })
}

/// The policy on api: ingress from web on `port` only.
fn policy(port: u16) -> Value {
    json!({
        "apiVersion": "nexus/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bench-api"},
        "spec": {
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": port}]}],
        }
    })
}

fn apply(object: Value) -> Op {
    Op::Apply {
        object,
        if_version: None,
    }
}

/// The first replica of `name` once it is ready: (pid, address).
async fn ready_replica(session: &Session, name: &str) -> Result<(i64, String), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: GetResponse = session
            .call(
                kinds::GET,
                &GetRequest {
                    selector: Selector {
                        kind: Some("Workload".into()),
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    consistent: false,
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let first = r
            .objects
            .first()
            .and_then(|o| o.status.as_ref())
            .and_then(|s| s.pointer("/replicas/0").cloned());
        if let Some(rep) = first
            && rep["ready"] == true
            && let (Some(pid), Some(addr)) = (rep["pid"].as_i64(), rep["address"].as_str())
        {
            return Ok((pid, addr.to_string()));
        }
        if Instant::now() > deadline {
            return Err(format!("{name} did not become ready"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Probes until the verdict is `want`; the time it took.
fn until(probe: &mut Probe, addr: &str, want: &str) -> Result<Instant, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = probe.connect(addr, 8080, 50);
        if got == want {
            return Ok(Instant::now());
        }
        if got == "probe gone" || Instant::now() > deadline {
            return Err(format!("web -> api:8080 never became {want} (last: {got})"));
        }
    }
}

async fn measure(
    args: &Args,
    session: &Session,
    rows: &mut Vec<[String; 3]>,
) -> Result<(), String> {
    submit(
        session,
        vec![
            apply(workload("web", "zone-1")),
            apply(workload("api", "zone-2")),
        ],
    )
    .await?;
    let (web_pid, _) = ready_replica(session, "web").await?;
    let (_, api_addr) = ready_replica(session, "api").await?;
    let mut probe = Probe::enter(web_pid)?;
    tokio::task::block_in_place(|| until(&mut probe, &api_addr, "ok"))?;
    let idle: Vec<Duration> = tokio::task::block_in_place(|| {
        (0..200)
            .map(|_| {
                let t = Instant::now();
                probe.connect(&api_addr, 8080, 500);
                t.elapsed()
            })
            .collect()
    });
    let (mut total, mut commit, mut enforce) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.flips {
        // Even flips deny 8080 (only 9090 allowed), odd ones allow it again.
        let (port, want) = if i % 2 == 0 {
            (9090, "EPERM")
        } else {
            (8080, "ok")
        };
        let t = Instant::now();
        submit(session, vec![apply(policy(port))]).await?;
        let committed = Instant::now();
        let seen = tokio::task::block_in_place(|| until(&mut probe, &api_addr, want))?;
        total.push(seen - t);
        commit.push(committed - t);
        enforce.push(seen.saturating_duration_since(committed));
    }
    for v in [&mut total, &mut commit, &mut enforce] {
        v.sort();
    }
    let mut idle = idle;
    idle.sort();
    let row = |label: String, v: &[Duration], note: &str| {
        [
            label,
            format!("p50 {}  p99 {}", ms(pct(v, 0.5)), ms(pct(v, 0.99))),
            note.to_string(),
        ]
    };
    rows.push(row(
        format!(
            "policy change → enforced on the node ({} flips)",
            total.len()
        ),
        &total,
        "signed apply until a connect from web sees the new verdict",
    ));
    rows.push(row(
        "  of which: apply committed".into(),
        &commit,
        "acknowledged by the replica (durable)",
    ));
    rows.push(row(
        "  of which: commit → kernel".into(),
        &enforce,
        "round, feed, f+1 agreement, eBPF map update",
    ));
    rows.push(row(
        "probe round trip, no change (200)".into(),
        &idle,
        "connect from inside web, through a pipe",
    ));
    Ok(())
}

async fn real(args: &Args, rows: &mut Vec<[String; 3]>) -> Result<(), String> {
    let tmp = std::env::temp_dir().join(format!("nexus-bench-network-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let layout = local::create(
        &tmp,
        &Spec {
            name: "bench-net".into(),
            replicas: 1,
            nodes: 2,
            pool: None,
            node_timeout: "10s".into(),
        },
    )
    .map_err(|e| e.to_string())?;
    let mut replica = local::spawn_replica(&tmp, &layout.replicas[0]).map_err(|e| e.to_string())?;
    let mut agents = Vec::new();
    for i in 0..2 {
        agents.push(local::spawn_agent(&tmp, &layout, i).map_err(|e| e.to_string())?);
    }
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let session = loop {
            if let Ok(s) = Session::connect_to(layout.context(&tmp)).await
                && let Ok(st) = s
                    .call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                    .await
                && st.nodes.iter().filter(|n| n["state"] == "Ready").count() == 2
            {
                if let Some(c) = st
                    .conditions
                    .iter()
                    .find(|c| c.contains("network policy NOT enforced"))
                {
                    return Err(c.clone());
                }
                break s;
            }
            if Instant::now() > deadline {
                return Err("the bench cluster did not come up".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        measure(args, &session, rows).await
    }
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

pub fn run(args: Args) -> u8 {
    if !local::is_root() {
        eprintln!("error: nexus bench network runs workloads and eBPF programs: it needs root");
        return exit::ERROR;
    }
    let mut rows = Vec::new();
    let code = crate::block_on(async {
        match real(&args, &mut rows).await {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        }
    });
    let mut t = Table::new(&["MEASUREMENT", "RESULT", "NOTES"]);
    for r in rows {
        t.row(r.to_vec());
    }
    print!("{}", t.render());
    code
}
