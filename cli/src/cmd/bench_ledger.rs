//! `nexus bench ledger`: apply latency and throughput through a real replica over QUIC with 1, 8
//! and 64 clients (each its own mTLS connection, every request signed and verified), then the
//! ledger crate's own table (group-commit front, audit queries and `audit verify` over a
//! generated log of a million events).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nexus_api::client::{SubmitRequest, SubmitResponse};
use nexus_api::kinds;
use nexus_ledger::bench::{BenchConfig, BenchRow, BenchTable};
use nexus_ledger::{Op, Source};
use nexus_server::{Replica, ReplicaOptions};
use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity};

use crate::client::Session;
use crate::config::Context;
use crate::exit;

pub fn run(events: u64, seconds: u64, dir: Option<PathBuf>) -> u8 {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("nexus-bench-ledger-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return exit::ERROR;
    }
    let mut table = BenchTable::default();
    eprintln!("apply through a replica over QUIC ({seconds} s per level)...");
    match crate::block_on_result(quic_levels(&dir, Duration::from_secs(seconds))) {
        Ok(rows) => table.rows.extend(rows),
        Err(e) => {
            eprintln!("error: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return exit::ERROR;
        }
    }
    let mut cfg = BenchConfig {
        dir: dir.join("ledger"),
        apply_duration: Duration::from_secs(seconds),
        ..Default::default()
    };
    cfg.log.events = events;
    let result = nexus_ledger::bench::run(&cfg, &mut |line| eprintln!("{line}"));
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(t) => {
            table.rows.extend(t.rows);
            println!(
                "nexus bench ledger (targets: audit queries < 10 ms, verify of 1,000,000 events < 5 s)"
            );
            print!("{table}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

async fn quic_levels(dir: &std::path::Path, per_level: Duration) -> Result<Vec<BenchRow>, String> {
    nexus_transport::init_crypto();
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate("bench", Validity::ca_default(now))
        .map_err(|e| e.to_string())?;
    let replica = ca
        .issue(&LeafRequest::new(
            Role::Replica,
            "r0",
            Validity::leaf_default(now),
        ))
        .map_err(|e| e.to_string())?;
    let user = ca
        .issue(&LeafRequest::new(
            Role::User,
            "bench",
            Validity::leaf_default(now),
        ))
        .map_err(|e| e.to_string())?;
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).map_err(|e| e.to_string())?;
    for (name, text) in [
        ("ca.crt", ca.cert_pem().to_string()),
        ("user.crt", user.cert_pem().to_string()),
        ("user.key", user.key_pem().to_string()),
    ] {
        std::fs::write(pki.join(name), text).map_err(|e| e.to_string())?;
    }
    let opts = ReplicaOptions {
        cluster: "bench".into(),
        name: "r0".into(),
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|_| "bad address".to_string())?,
        data_dir: dir.join("replica"),
        ca_pem: ca.cert_pem().to_string(),
        ca_key_pem: None,
        cert_pem: replica.cert_pem().to_string(),
        key_pem: replica.key_pem().to_string(),
        ledger: Default::default(),
        rpc: Default::default(),
        gitops: Default::default(),
        replication: Default::default(),
    };
    let server = Replica::start(opts).await.map_err(|e| e.to_string())?;
    let ctx = Context {
        name: "bench".into(),
        cluster: "bench".into(),
        servers: vec![server.local_addr().to_string()],
        server_name: "localhost".into(),
        ca: pki.join("ca.crt"),
        cert: pki.join("user.crt"),
        key: pki.join("user.key"),
    };
    let mut rows = Vec::new();
    for clients in [1usize, 8, 64] {
        let mut sessions = Vec::new();
        for _ in 0..clients {
            sessions.push(Arc::new(
                Session::connect_to(ctx.clone())
                    .await
                    .map_err(|e| e.to_string())?,
            ));
        }
        let start = Instant::now();
        let deadline = start + per_level;
        let mut tasks = Vec::new();
        for (c, session) in sessions.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let object = payload(clients, c, i);
                    i += 1;
                    let signed = session.sign(
                        vec![Op::Apply {
                            object,
                            if_version: None,
                        }],
                        Source::Cli,
                    );
                    let t = Instant::now();
                    let r: Result<SubmitResponse, _> = session
                        .call(
                            kinds::SUBMIT,
                            &SubmitRequest {
                                signed: signed.to_bytes(),
                            },
                        )
                        .await;
                    r.map_err(|e| e.to_string())?;
                    lat.push(t.elapsed());
                }
                Ok::<_, String>(lat)
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.map_err(|e| e.to_string())??);
        }
        let total = start.elapsed();
        all.sort_unstable();
        let at = |q: f64| {
            all.get(((all.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map(|d| d.as_secs_f64() * 1e3)
        };
        rows.push(BenchRow {
            name: format!(
                "apply over QUIC, {clients} client{}",
                if clients == 1 { "" } else { "s" }
            ),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            throughput: Some(all.len() as f64 / total.as_secs_f64()),
            total,
            note: format!(
                "{} applies of ~1 KB signed workloads, fsync per entry",
                all.len()
            ),
        });
    }
    server.shutdown().await;
    Ok(rows)
}

/// A ~1 KB canonical Workload, distinct per (level, client, i).
pub(crate) fn payload(level: usize, client: usize, i: u64) -> serde_json::Value {
    let name = format!("b{level}-{client}-{i}");
    let text = format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{app: bench, tier: backend, level: \"l{level}\"}}\nspec:\n  replicas: 3\n  command: [\"python3\", \"-m\", \"http.server\", \"8080\", \"--bind\", \"0.0.0.0\"]\n  env: {{LOG_LEVEL: info, REGION: eu-west-1, FEATURE_FLAGS: \"a,b,c,d,e,f,g,h\", PADDING: \"{pad}\"}}\n  ports: [{{name: http, port: 8080}}]\n  resources: {{cpu: 250m, memory: 128Mi}}\n  health: {{http: {{path: /healthz, port: 8080}}}}\n",
        pad = "x".repeat(400)
    );
    let v = nexus_schemas::validate_sources(&[nexus_schemas::SourceFile::from_text(
        "bench.yaml",
        text,
    )]);
    v.objects
        .first()
        .map(|o| nexus_schemas::canonical_value(&o.object))
        .unwrap_or_default()
}
