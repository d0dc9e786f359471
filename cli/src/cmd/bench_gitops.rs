//! `nexus bench gitops`: push -> entry committed through a real replica (in this process, with a
//! real bare repository driven by the `git` command), from the moment `git push` starts until
//! the entry naming the commit is committed, p50/p90/p99 with the notify watcher, with the
//! webhook and with polling (p99 only with at least 100 pushes); then a repository of 5,000
//! manifests synced end to end (first sync time and peak RSS, a one-file push, a no-op resync).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_api::client::SubmitRequest;
use nexus_ledger::{Op, Source};
use nexus_server::Replica;
use serde_json::json;

use super::local::{self, Layout, Spec};
use crate::client::Session;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pushes measured with the watcher and with the webhook (p99 is shown from 100 on).
    #[arg(long, default_value_t = 200)]
    pub pushes: usize,
    /// Pushes measured with polling (each waits for a poll, so they are slow to collect; p99 is
    /// shown from 100 on).
    #[arg(long, default_value_t = 30)]
    pub poll_pushes: usize,
    /// Poll interval of the polling mode.
    #[arg(long, default_value = "5s")]
    pub poll_interval: String,
    /// Manifests in the large repository (0 skips that part).
    #[arg(long, default_value_t = 5000)]
    pub manifests: usize,
    /// Scratch directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const SECRET: &str = "bench-secret";

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How pushes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Watch,
    Webhook,
    Poll,
}

/// A replica in this process, its client session, and when each synced commit was committed.
struct Bench {
    replica: Replica,
    session: Session,
    committed: Arc<Mutex<HashMap<String, Instant>>>,
    gitops: Arc<nexus_server::GitOps>,
    webhook: Option<std::net::SocketAddr>,
    repo: PathBuf,
    work: PathBuf,
}

async fn start(dir: &Path, mode: Mode) -> Result<Bench, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let layout = local::create(
        &dir.join("cluster"),
        &Spec {
            name: "bench-gitops".into(),
            replicas: 1,
            nodes: 0,
            pool: None,
            node_timeout: "30s".into(),
        },
    )
    .map_err(|e| e.to_string())?;
    let yaml = Layout::server_yaml(&dir.join("cluster"), "r0");
    let mut opts = super::server::options(&yaml, None).map_err(|e| e.to_string())?;
    opts.gitops.watch_local = mode == Mode::Watch;
    if mode == Mode::Webhook {
        opts.gitops.webhook_listen = Some("127.0.0.1:0".parse().map_err(|_| "bad address")?);
    }
    let mut nodes = super::server::nodes_options(&yaml).map_err(|e| e.to_string())?;
    nodes.network_pool = None;
    let replica = Replica::start_with(opts, nodes)
        .await
        .map_err(|e| e.to_string())?;
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rx = replica.ledger().subscribe();
    let c = committed.clone();
    std::thread::spawn(move || {
        while let Ok(entry) = rx.recv() {
            let now = Instant::now();
            for r in &entry.requests {
                if let Some(commit) = r.request.source.commit() {
                    c.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(commit.to_string(), now);
                }
            }
        }
    });
    let session = Session::connect_to(layout.context(&dir.join("cluster")))
        .await
        .map_err(|e| e.to_string())?;
    let repo = dir.join("origin.git");
    let work = dir.join("work");
    git(dir, &["init", "-q", "--bare", "-b", "main", "origin.git"])?;
    git(dir, &["clone", "-q", "origin.git", "work"])?;
    git(&work, &["checkout", "-q", "-b", "main"])?;
    std::fs::write(dir.join("hook.secret"), SECRET).map_err(|e| e.to_string())?;
    Ok(Bench {
        webhook: replica.gitops().webhook_addr(),
        gitops: replica.gitops().clone(),
        replica,
        session,
        committed,
        repo,
        work,
    })
}

impl Bench {
    /// Commits everything in the clone and pushes; returns the commit and when `git push`
    /// started (latencies include the push itself, as a user waiting for the cluster sees it).
    fn push(&self, msg: &str) -> Result<(String, Instant), String> {
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "-m", msg])?;
        let commit = git(&self.work, &["rev-parse", "HEAD"])?;
        let at = Instant::now();
        git(&self.work, &["push", "-q", "origin", "main"])?;
        Ok((commit, at))
    }

    /// Applies the GitSource `apps` following the clone's origin.
    async fn add_source(&self, interval: &str, dir: &Path) -> Result<(), String> {
        let obj = json!({"apiVersion": "nexus/v1", "kind": "GitSource",
            "metadata": {"name": "apps", "namespace": "default"},
            "spec": {"url": self.repo.display().to_string(), "branch": "main", "path": "deploy",
                     "interval": interval, "prune": true, "selfHeal": false,
                     "webhookSecretFile": dir.join("hook.secret").display().to_string()}});
        let obj: nexus_schemas::Object = serde_json::from_value(obj).map_err(|e| e.to_string())?;
        let signed = self.session.sign(
            vec![Op::Apply {
                object: nexus_schemas::canonical_value(&obj),
                if_version: None,
            }],
            Source::Cli,
        );
        super::apply::submit(
            &self.session,
            &SubmitRequest {
                signed: signed.to_bytes(),
            },
        )
        .await
        .map_err(|_| "applying the GitSource failed".to_string())?;
        Ok(())
    }

    /// Waits until an entry with `commit` is committed; returns when it was.
    async fn committed(&self, commit: &str, timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self
                .committed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(commit)
            {
                return Ok(*t);
            }
            if Instant::now() > deadline {
                let st = self.gitops.statuses();
                return Err(format!(
                    "commit {commit} was not synced within {timeout:?}: {:?}",
                    st.first().and_then(|s| s.error.clone())
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn post_webhook(&self) -> Result<(), String> {
        use std::io::{Read, Write};
        let addr = self.webhook.ok_or("no webhook endpoint")?;
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = nexus_gitops::watch::sign_body(SECRET.as_bytes(), body);
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let head = format!(
            "POST /hooks/git/apps HTTP/1.1\r\nHost: {addr}\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        s.write_all(body).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        if !resp.starts_with("HTTP/1.1 202") {
            return Err(format!("webhook answered {resp:?}"));
        }
        Ok(())
    }
}

fn workload(i: usize) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: app\nspec:\n  replicas: {}\n  command: [sleep, \"3600\"]\n",
        i % 50 + 1
    )
}

/// Samples below which a 99th percentile is not reported.
const MIN_P99_SAMPLES: usize = 100;

/// The `p` quantile of sorted samples (the sample at the rounded rank).
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Push -> entry latencies (ms) for one mode.
async fn latency(
    dir: &Path,
    mode: Mode,
    pushes: usize,
    interval: &str,
) -> Result<Vec<f64>, String> {
    let b = start(dir, mode).await?;
    std::fs::create_dir_all(b.work.join("deploy")).map_err(|e| e.to_string())?;
    std::fs::write(b.work.join("deploy/app.yaml"), workload(0)).map_err(|e| e.to_string())?;
    let (first, _) = b.push("initial")?;
    let src_interval = if mode == Mode::Poll { interval } else { "1h" };
    b.add_source(src_interval, dir).await?;
    b.committed(&first, Duration::from_secs(60)).await?;
    let poll = humantime::parse_duration(interval).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in 1..=pushes {
        // Polling: push at a different phase of the poll cycle each time.
        let gap = match mode {
            Mode::Poll => poll.mul_f64(((i * 7919) % 100) as f64 / 100.0),
            _ => Duration::from_millis(100),
        };
        tokio::time::sleep(gap).await;
        std::fs::write(b.work.join("deploy/app.yaml"), workload(i)).map_err(|e| e.to_string())?;
        let (commit, pushed) = b.push(&format!("push {i}"))?;
        if mode == Mode::Webhook {
            b.post_webhook()?;
        }
        let at = b
            .committed(&commit, poll * 3 + Duration::from_secs(30))
            .await?;
        out.push(at.saturating_duration_since(pushed).as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The large repository, end to end.
async fn large(dir: &Path, n: usize, rows: &mut Vec<[String; 2]>) -> Result<(), String> {
    let b = start(dir, Mode::Watch).await?;
    let deploy = b.work.join("deploy");
    super::bench::generate_manifests(&deploy, n).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (first, _) = b.push("5,000 manifests")?;
    let commit_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss_before = status_kib("VmRSS:").unwrap_or(0);
    let peaks = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    b.add_source("1h", dir).await?;
    let at = b.committed(&first, Duration::from_secs(600)).await?;
    let first_ms = at.saturating_duration_since(t).as_secs_f64() * 1000.0;
    let peak = status_kib("VmHWM:").unwrap_or(0);
    let rss_after = status_kib("VmRSS:").unwrap_or(0);
    // Counted in the committed state (the source's status is updated a moment after the entry).
    let objects = b
        .replica
        .ledger()
        .state()
        .objects
        .values()
        .filter(|o| o.owner == "gitops:default/apps")
        .count();
    rows.push([
        format!("{n} manifests: git add + commit + push"),
        format!("{commit_ms:.0} ms"),
    ]);
    rows.push([
        format!("{n} manifests: apply GitSource -> entry committed ({objects} objects)"),
        format!("{first_ms:.0} ms"),
    ]);
    rows.push([
        format!(
            "{n} manifests: process RSS before / {} during the first sync / after",
            if peaks { "peak" } else { "peak (since start)" }
        ),
        format!(
            "{:.0} / {:.0} / {:.0} MiB",
            rss_before as f64 / 1024.0,
            peak as f64 / 1024.0,
            rss_after as f64 / 1024.0
        ),
    ]);
    // One file changes.
    let one = deploy.join("m-00000.yaml");
    let text = std::fs::read_to_string(&one).map_err(|e| e.to_string())?;
    std::fs::write(&one, text.replace("LOG_LEVEL: info", "LOG_LEVEL: debug"))
        .map_err(|e| e.to_string())?;
    let (c2, pushed) = b.push("one file")?;
    let at = b.committed(&c2, Duration::from_secs(120)).await?;
    rows.push([
        format!("{n} manifests: one-file push -> entry committed (watcher)"),
        format!(
            "{:.0} ms",
            at.saturating_duration_since(pushed).as_secs_f64() * 1000.0
        ),
    ]);
    let id = nexus_gitops::SourceId::new("default", "apps");
    let mut noop = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        b.gitops.sync_now(&id, Duration::from_secs(120)).await?;
        noop.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    noop.sort_by(f64::total_cmp);
    rows.push([
        format!("{n} manifests: no-op resync (fetch, validate, plan)"),
        format!("{:.0} ms (median of 3)", noop[1]),
    ]);
    Ok(())
}

pub fn run(args: Args) -> u8 {
    let (dir, cleanup) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("nexus-bench-gitops-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let result = crate::block_on_result(async {
        let mut lat = Vec::new();
        let modes = [
            ("notify watcher", Mode::Watch, args.pushes),
            (
                "webhook (HMAC-signed POST after the push)",
                Mode::Webhook,
                args.pushes,
            ),
            ("polling", Mode::Poll, args.poll_pushes),
        ];
        for (i, (name, mode, n)) in modes.into_iter().enumerate() {
            let v = latency(&dir.join(format!("lat-{i}")), mode, n, &args.poll_interval).await?;
            lat.push((name, n, v));
        }
        let mut rows = Vec::new();
        if args.manifests > 0 {
            large(&dir.join("large"), args.manifests, &mut rows).await?;
        }
        Ok((lat, rows))
    });
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (lat, rows) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    println!(
        "nexus bench gitops: git push started -> entry committed, through one replica (local bare repository)"
    );
    println!(
        "{:<46} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "trigger", "pushes", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut short = false;
    for (name, n, v) in &lat {
        let name = if name.starts_with("polling") {
            format!("polling every {}", args.poll_interval)
        } else {
            name.to_string()
        };
        // With fewer than 100 samples the 99th percentile is just the maximum: not shown.
        let p99 = if v.len() >= MIN_P99_SAMPLES {
            format!("{:.1}", pct(v, 0.99))
        } else {
            short = true;
            "n/a".to_string()
        };
        println!(
            "{:<46} {:>7} {:>9.1} {:>9.1} {:>9} {:>9.1}",
            name,
            n,
            pct(v, 0.5),
            pct(v, 0.9),
            p99,
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    if short {
        println!(
            "(p99 n/a: fewer than {MIN_P99_SAMPLES} pushes, where p99 would only repeat the maximum)"
        );
    }
    if !rows.is_empty() {
        println!();
        for [k, v] in &rows {
            println!("{k:<72} {v}");
        }
    }
    exit::OK
}
