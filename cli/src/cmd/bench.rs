//! `nexus bench ...`: measured figures printed as tables (the issues' speed targets are checked
//! here, never by timed assertions in tests).

use std::path::PathBuf;
use std::time::Instant;

use crate::exit;
use crate::load::load_sources;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Node agents: apply → running p50/p99, replica and agent RSS, scheduler time, and
    /// convergence of 1,000 simulated agents running 10,000 replicas.
    Agents(super::bench_agents::Args),
    /// GitOps: push -> entry committed p50/p99 with the notify watcher, the webhook and
    /// polling; first sync, peak RSS and a one-file push for a repository of 5,000 manifests.
    Gitops(super::bench_gitops::Args),
    /// Network policy (root): a policy change committed to the ledger -> enforced in the kernel
    /// on the node, p50/p99, on a local cluster of real processes.
    Network(super::bench_network::Args),
    /// Apply latency/throughput (through a real replica over QUIC, and through the ledger front)
    /// with 1, 8 and 64 clients; audit queries and `audit verify` over a generated log.
    Ledger {
        /// Events in the generated log for the audit and verify rows.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Seconds per apply concurrency level.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Scratch directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// BFT replication: commit p50/p99 and throughput of 4 nexus replicas (real processes on
    /// loopback) next to a 3-member etcd 3.4 cluster, ~1 KB values, 1/16/64 clients.
    Replication(super::bench_replication::Args),
    /// Validate N generated objects, one file each, in one directory (target: 10,000 in < 1 s).
    Validate {
        /// Number of objects to generate.
        #[arg(long, default_value_t = 10_000)]
        objects: usize,
        /// Directory to generate into (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Repetitions; the table shows the median and the best.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

pub fn run(args: Args) -> u8 {
    match args.what {
        What::Agents(a) => super::bench_agents::run(a),
        What::Gitops(a) => super::bench_gitops::run(a),
        What::Network(a) => super::bench_network::run(a),
        What::Replication(a) => super::bench_replication::run(a),
        What::Validate { objects, dir, runs } => bench_validate(objects, dir, runs),
        What::Ledger {
            events,
            seconds,
            dir,
        } => super::bench_ledger::run(events, seconds, dir),
    }
}

/// Writes `n` manifests (a mix of the four kinds) into `dir`, one file each.
pub fn generate_manifests(dir: &std::path::Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let app = format!("app-{}", i / 4);
        let text = match i % 4 {
            0 | 1 => format!(
                "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: wl-{i}\n  labels: {{app: {app}, tier: backend}}\nspec:\n  replicas: {r}\n  command: [\"python3\", \"-m\", \"http.server\", \"{port}\"]\n  env: {{LOG_LEVEL: info}}\n  ports: [{{name: http, port: {port}}}]\n  resources: {{cpu: 250m, memory: 128Mi}}\n  health: {{http: {{path: /, port: {port}}}}}\n",
                r = 1 + i % 5,
                port = 8000 + i % 1000
            ),
            2 => format!(
                "apiVersion: nexus/v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
            _ => format!(
                "apiVersion: nexus/v1\nkind: NetworkPolicy\nmetadata: {{name: np-{i}}}\nspec:\n  selector: {{app: {app}}}\n  ingress:\n    - from: [{{selector: {{tier: frontend}}}}, {{cidr: 10.0.0.0/8}}]\n      ports: [{{port: 8080}}]\n"
            ),
        };
        std::fs::write(dir.join(format!("m-{i:05}.yaml")), text)?;
    }
    Ok(())
}

fn bench_validate(n: usize, dir: Option<PathBuf>, runs: usize) -> u8 {
    let (dir, _guard) = match dir {
        Some(d) => (d, None),
        None => match tempdir() {
            Ok(t) => (t.0.clone(), Some(t)),
            Err(e) => {
                eprintln!("error: cannot create a temporary directory: {e}");
                return exit::ERROR;
            }
        },
    };
    if let Err(e) = generate_manifests(&dir, n) {
        eprintln!("error: cannot write manifests into {}: {e}", dir.display());
        return exit::ERROR;
    }
    let mut load_ms = Vec::new();
    let mut total_ms = Vec::new();
    let mut objects = 0;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let files = match load_sources(std::slice::from_ref(&dir)) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let t1 = Instant::now();
        let v = nexus_schemas::validate_sources(&files);
        let t2 = Instant::now();
        if v.has_errors() {
            eprintln!(
                "error: generated manifests are invalid: {}",
                v.diagnostics[0].one_line()
            );
            return exit::ERROR;
        }
        objects = v.objects.len();
        load_ms.push((t1 - t0).as_secs_f64() * 1000.0);
        total_ms.push((t2 - t0).as_secs_f64() * 1000.0);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let (load_med, load_best) = stats(&mut load_ms);
    let (tot_med, tot_best) = stats(&mut total_ms);
    println!(
        "nexus bench validate: {objects} objects in {n} files ({} runs)",
        runs.max(1)
    );
    println!("{:<32} {:>12} {:>12}", "phase", "median ms", "best ms");
    println!(
        "{:<32} {:>12.1} {:>12.1}",
        "read directory", load_med, load_best
    );
    println!(
        "{:<32} {:>12.1} {:>12.1}",
        "parse + validate",
        tot_med - load_med,
        tot_best - load_best
    );
    println!(
        "{:<32} {:>12.1} {:>12.1}",
        "total (target < 1000 ms)", tot_med, tot_best
    );
    println!(
        "{:<32} {:>12.0}",
        "objects per second (median)",
        objects as f64 / (tot_med / 1000.0)
    );
    exit::OK
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> std::io::Result<TempDir> {
    let base = std::env::temp_dir().join(format!(
        "nexus-bench-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&base)?;
    Ok(TempDir(base))
}
