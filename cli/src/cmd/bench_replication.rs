//! `nexus bench replication`: commit latency and throughput of four nexus replicas (real
//! `nexus server` processes on loopback, BFT consensus, every request signed and verified) next
//! to a three-member etcd 3.4 cluster on loopback, with the same ~1 KB value and 1, 16 and 64
//! concurrent clients. It starts and stops everything itself. etcd is driven through its v3
//! JSON gateway (`POST /v3/kv/put`) over keep-alive HTTP/1.1 connections, one per client.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_api::client::{StatusRequest, StatusResponse, SubmitRequest, SubmitResponse};
use nexus_api::kinds;
use nexus_ledger::{Op, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::local::{self, Layout, Proc, Spec};
use crate::client::Session;
use crate::config::Context;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds measured per system and client level (after a short warm-up).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Client concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 16, 64])]
    pub clients: Vec<usize>,
    /// The etcd binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
    /// Measure nexus only.
    #[arg(long)]
    pub no_etcd: bool,
    /// Scratch directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One measured level.
#[derive(Debug, Clone)]
struct Level {
    clients: usize,
    p50_ms: f64,
    p99_ms: f64,
    throughput: f64,
    ops: usize,
    /// CPU time (user + system, all threads) the system's server processes used in the
    /// measured window, in seconds; `None` where /proc cannot be read.
    cpu_s: Option<f64>,
}

pub fn run(args: Args) -> u8 {
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("nexus-bench-replication-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: {}: {e}", dir.display());
        return exit::ERROR;
    }
    let result = crate::block_on_result(async {
        tokio::select! {
            r = bench(&args, &dir) => r,
            _ = crate::wait_for_shutdown_signal() => Err("interrupted".into()),
        }
    });
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(report) => {
            print!("{report}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::ERROR
        }
    }
}

async fn bench(args: &Args, dir: &Path) -> Result<String, String> {
    let value =
        serde_json::to_vec(&super::bench_ledger::payload(0, 0, 0)).map_err(|e| e.to_string())?;
    let per_level = Duration::from_secs(args.seconds.max(1));
    let etcd_version = if args.no_etcd {
        None
    } else {
        Some(etcd_version(&args.etcd)?)
    };

    eprintln!("measuring the disk's fdatasync latency...");
    let disk = fsync_probe(dir, 500)?;

    eprintln!("starting 4 nexus replicas...");
    let nexus = {
        let cluster = NexusCluster::start(&dir.join("nexus")).await?;
        let mut rows = Vec::new();
        for &c in &args.clients {
            eprintln!("nexus: {c} client(s) for {}s...", per_level.as_secs());
            rows.push(cluster.level(c, per_level).await?);
        }
        cluster.stop();
        rows
    };
    let etcd = match &etcd_version {
        None => Vec::new(),
        Some(_) => {
            eprintln!("starting 3 etcd members...");
            let cluster = EtcdCluster::start(&args.etcd, &dir.join("etcd")).await?;
            let mut rows = Vec::new();
            for &c in &args.clients {
                eprintln!("etcd: {c} client(s) for {}s...", per_level.as_secs());
                rows.push(cluster.level(c, per_level, &value).await?);
            }
            cluster.stop();
            rows
        }
    };
    Ok(render(
        &nexus,
        &etcd,
        etcd_version.as_deref(),
        value.len(),
        per_level,
        disk,
    ))
}

/// Latency of `fdatasync` after writing the next 4 KiB of a file sized beforehand (`set_len`, as
/// the consensus WAL grows) in `dir`, `n` times, on the otherwise idle machine: (p50, p99, max)
/// in ms. Both systems fsync on their commit path (nexus three times in sequence per height,
/// etcd once per batch), so this line tells a run on a slow or busy disk from a slow run.
fn fsync_probe(dir: &Path, n: usize) -> Result<(f64, f64, f64), String> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let fail = |e: std::io::Error| format!("disk probe in {}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut f = std::fs::File::create(&path).map_err(fail)?;
    f.set_len((n * 4096) as u64).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    let block = [0x5au8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block).map_err(fail)?;
        f.sync_data().map_err(fail)?;
        lat.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    let max = lat.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let (p50, p99, _) = quantiles(lat);
    Ok((p50, p99, max))
}

fn render(
    nexus: &[Level],
    etcd: &[Level],
    etcd_version: Option<&str>,
    value_bytes: usize,
    per_level: Duration,
    (disk_p50, disk_p99, disk_max): (f64, f64, f64),
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "nexus bench replication: 4 nexus replicas vs {}, loopback, {value_bytes}-byte values, \
         {} s per level, {cores} cores\n\
         disk: fdatasync after a 4 KiB append p50 {disk_p50:.2} ms, p99 {disk_p99:.2} ms, \
         max {disk_max:.2} ms (idle machine, before the runs)\n\n",
        etcd_version.map_or("no etcd".to_string(), |v| format!("3 etcd {v} members")),
        per_level.as_secs()
    );
    out.push_str(&format!(
        "{:<10} {:>7} {:>10} {:>10} {:>12} {:>8} {:>11} {:>11}\n",
        "system", "clients", "p50", "p99", "throughput", "commits", "server cpu", "cpu/commit"
    ));
    let row = |sys: &str, l: &Level| {
        let (cores, per_commit) = match cpu_use(l, per_level) {
            Some((cores, ms)) => (format!("{cores:.2} cores"), format!("{ms:.2} ms")),
            None => ("-".to_string(), "-".to_string()),
        };
        format!(
            "{:<10} {:>7} {:>7.2} ms {:>7.2} ms {:>10.0}/s {:>8} {:>11} {:>11}\n",
            sys, l.clients, l.p50_ms, l.p99_ms, l.throughput, l.ops, cores, per_commit
        )
    };
    for l in nexus {
        out.push_str(&row("nexus", l));
        if let Some(e) = etcd.iter().find(|e| e.clients == l.clients) {
            out.push_str(&row("etcd", e));
        }
    }
    out.push_str(
        "server cpu: user + system time of the server processes (all threads) in the measured \
         window, in cores;\ncpu/commit: that time per commit (the load generator is not \
         counted)\n",
    );
    if !etcd.is_empty() {
        out.push_str(&format!(
            "\n{:<18} {:>7} {:>8} {:>8} {:>11} {:>11}\n",
            "ratio nexus/etcd", "clients", "p50", "p99", "throughput", "cpu/commit"
        ));
        for l in nexus {
            if let Some(e) = etcd.iter().find(|e| e.clients == l.clients) {
                let cpu = match (cpu_use(l, per_level), cpu_use(e, per_level)) {
                    (Some((_, n)), Some((_, e))) if e > 0.0 => format!("{:.2}x", n / e),
                    _ => "-".to_string(),
                };
                out.push_str(&format!(
                    "{:<18} {:>7} {:>7.2}x {:>7.2}x {:>10.2}x {:>11}\n",
                    "",
                    l.clients,
                    l.p50_ms / e.p50_ms,
                    l.p99_ms / e.p99_ms,
                    l.throughput / e.throughput,
                    cpu
                ));
            }
        }
    }
    out.push_str("\ntargets:\n");
    match nexus.iter().find(|l| l.clients == 1) {
        Some(l) => out.push_str(&format!(
            "  p99 <= 10 ms at 1 client:              {:.2} ms  {}\n",
            l.p99_ms,
            if l.p99_ms <= 10.0 { "met" } else { "MISSED" }
        )),
        None => out.push_str("  p99 <= 10 ms at 1 client:              not measured\n"),
    }
    let n64 = nexus.iter().find(|l| l.clients == 64);
    let e64 = etcd.iter().find(|l| l.clients == 64);
    match (n64, e64) {
        (Some(n), Some(e)) => {
            let r = n.throughput / e.throughput;
            out.push_str(&format!(
                "  throughput >= 0.5x etcd at 64 clients: {r:.2}x  {}\n",
                if r >= 0.5 { "met" } else { "MISSED" }
            ));
        }
        _ => out.push_str("  throughput >= 0.5x etcd at 64 clients: not measured\n"),
    }
    out
}

/// The servers' CPU use in a level: (cores busy on average, ms of CPU per commit).
fn cpu_use(l: &Level, per_level: Duration) -> Option<(f64, f64)> {
    let cpu = l.cpu_s?;
    let secs = per_level.as_secs_f64();
    (secs > 0.0 && l.ops > 0).then(|| (cpu / secs, cpu * 1e3 / l.ops as f64))
}

/// (p50, p99, count) of latencies in ms.
fn quantiles(mut lat: Vec<Duration>) -> (f64, f64, usize) {
    lat.sort_unstable();
    let at = |q: f64| {
        lat.get(((lat.len().saturating_sub(1)) as f64 * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.99), lat.len())
}

/// Runs `clients` closed-loop clients: a warm-up, then `per_level` measured; each client is
/// `op(client, i)` called in a loop.
async fn closed_loop<F, Fut>(
    clients: usize,
    per_level: Duration,
    servers: Vec<u32>,
    op: F,
) -> Result<Level, String>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + warmup;
    let end = start + per_level;
    let meter = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before = cpu_seconds(&servers);
        tokio::time::sleep_until(end.into()).await;
        Some(cpu_seconds(&servers)? - before?)
    });
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                op(c, i).await?;
                i += 1;
                if t >= start {
                    lat.push(t.elapsed());
                }
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let (p50_ms, p99_ms, ops) = quantiles(all);
    Ok(Level {
        clients,
        p50_ms,
        p99_ms,
        throughput: ops as f64 / per_level.as_secs_f64(),
        ops,
        cpu_s: meter.await.ok().flatten(),
    })
}

/// CPU time (user + system, all threads) the processes `pids` have used so far, in seconds;
/// `None` where /proc cannot be read (not Linux) or a process is gone.
fn cpu_seconds(pids: &[u32]) -> Option<f64> {
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_s <= 0 {
        return None;
    }
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ticks += proc_cpu_ticks(&stat)?;
    }
    Some(ticks as f64 / ticks_per_s as f64)
}

/// utime + stime of a `/proc/<pid>/stat` line (its 14th and 15th fields), in clock ticks.
fn proc_cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = local::stat_fields(stat)?;
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Child processes killed on drop (also when the benchmark fails or is interrupted).
struct Children(Vec<Child>);

impl Children {
    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &self.0 {
            local::signal(c.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct NexusCluster {
    contexts: Vec<Context>,
    procs: Children,
}

impl NexusCluster {
    async fn start(dir: &Path) -> Result<NexusCluster, String> {
        let layout = local::create(
            dir,
            &Spec {
                name: "bench".into(),
                replicas: 4,
                nodes: 0,
                pool: Some("host".into()),
                node_timeout: "10s".into(),
            },
        )
        .map_err(|e| e.to_string())?;
        let abs = std::path::absolute(dir).map_err(|e| e.to_string())?;
        let mut procs = Children(Vec::new());
        for r in &layout.replicas {
            let p: Proc = local::spawn_replica(&abs, r).map_err(|e| e.to_string())?;
            procs.0.push(p.child);
        }
        let all = layout.context(&abs);
        let contexts: Vec<Context> = layout
            .replicas
            .iter()
            .map(|r| Context {
                servers: vec![r.addr.clone()],
                ..all.clone()
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, ctx) in contexts.iter().enumerate() {
            loop {
                let up = match Session::connect_to(ctx.clone()).await {
                    Ok(s) => s
                        .call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                if up {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(Layout::log(&abs, &format!("r{i}")))
                        .unwrap_or_default();
                    return Err(format!("nexus replica r{i} did not come up:\n{log}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(NexusCluster { contexts, procs })
    }

    /// `clients` clients, client k talking to replica k mod 4 over its own mTLS connection.
    async fn level(&self, clients: usize, per_level: Duration) -> Result<Level, String> {
        let mut sessions = Vec::new();
        for k in 0..clients {
            let ctx = self.contexts[k % self.contexts.len()].clone();
            sessions.push(Arc::new(
                Session::connect_to(ctx).await.map_err(|e| e.to_string())?,
            ));
        }
        let sessions = Arc::new(sessions);
        // The client side stays cheap, as etcd's does (it shares the machine): one validated
        // payload per level, renamed per request; each request is still signed.
        let template = Arc::new(super::bench_ledger::payload(clients, 0, 0));
        closed_loop(clients, per_level, self.procs.pids(), move |c, i| {
            let session = sessions[c].clone();
            let template = template.clone();
            async move {
                let mut object = (*template).clone();
                object["metadata"]["name"] =
                    serde_json::Value::String(format!("b{clients}-{c}-{i}"));
                let (_, signed) = session.sign_to_bytes(
                    vec![Op::Apply {
                        object,
                        if_version: None,
                    }],
                    Source::Cli,
                );
                let req = SubmitRequest { signed };
                session
                    .call::<_, SubmitResponse>(kinds::SUBMIT, &req)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }

    fn stop(self) {}
}

fn etcd_version(bin: &Path) -> Result<String, String> {
    let out = Command::new(bin).arg("--version").output().map_err(|e| {
        format!(
            "cannot run {}: {e} (install etcd 3.4: apt-get install etcd-server; or --no-etcd)",
            bin.display()
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{} --version printed no version: {text}", bin.display()))
}

fn free_tcp_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

struct EtcdCluster {
    clients: Vec<SocketAddr>,
    procs: Children,
}

impl EtcdCluster {
    async fn start(bin: &Path, dir: &Path) -> Result<EtcdCluster, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_tcp_port()?, free_tcp_port()?));
        }
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let initial = initial.join(",");
        let mut procs = Children(Vec::new());
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log =
                std::fs::File::create(dir.join(format!("e{i}.log"))).map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("e{i}.etcd")))
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-token")
                .arg(format!("nexus-bench-{}", std::process::id()))
                .arg("--initial-cluster-state")
                .arg("new")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            procs.0.push(child);
        }
        let clients: Vec<SocketAddr> = ports
            .iter()
            .map(|(c, _)| SocketAddr::from(([127, 0, 0, 1], *c)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, addr) in clients.iter().enumerate() {
            loop {
                let healthy = async {
                    let mut conn = Http::connect(*addr).await?;
                    let (code, body) = conn.request("GET", "/health", None).await?;
                    Ok::<_, String>(code == 200 && body.contains("true"))
                }
                .await;
                if healthy == Ok(true) {
                    break;
                }
                if Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(dir.join(format!("e{i}.log"))).unwrap_or_default();
                    return Err(format!(
                        "etcd member e{i} is not healthy ({healthy:?}):\n{log}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(EtcdCluster { clients, procs })
    }

    /// `clients` clients, client k on its own keep-alive connection to member k mod 3.
    async fn level(
        &self,
        clients: usize,
        per_level: Duration,
        value: &[u8],
    ) -> Result<Level, String> {
        let mut conns = Vec::new();
        for k in 0..clients {
            conns.push(Arc::new(tokio::sync::Mutex::new(
                Http::connect(self.clients[k % self.clients.len()]).await?,
            )));
        }
        let conns = Arc::new(conns);
        let value = Arc::new(base64(value));
        closed_loop(clients, per_level, self.procs.pids(), move |c, i| {
            let conn = conns[c].clone();
            let value = value.clone();
            async move {
                let key = base64(format!("/bench/{clients}/{c}/{i}").as_bytes());
                let body = format!("{{\"key\":\"{key}\",\"value\":\"{value}\"}}");
                let (code, text) = conn
                    .lock()
                    .await
                    .request("POST", "/v3/kv/put", Some(body.as_bytes()))
                    .await?;
                if code == 200 {
                    Ok(())
                } else {
                    Err(format!("etcd put: HTTP {code}: {text}"))
                }
            }
        })
        .await
    }

    fn stop(self) {}
}

/// A minimal HTTP/1.1 client on one keep-alive connection (enough for etcd's JSON gateway).
struct Http {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Result<Http, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Http {
            stream,
            host: addr.to_string(),
            buf: Vec::new(),
        })
    }

    /// Sends one request and reads its response: (status code, body).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, String), String> {
        let body = body.unwrap_or_default();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream
            .write_all(&req)
            .await
            .map_err(|e| e.to_string())?;
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad HTTP response: {head}"))?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let body = if let Some(len) = header("content-length") {
            let len: usize = len.parse().map_err(|_| format!("bad length {len}"))?;
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len).collect::<Vec<u8>>()
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut out = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = find(&self.buf, b"\r\n") {
                        break p;
                    }
                    self.fill().await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| format!("bad chunk size {size_text:?}"))?;
                self.buf.drain(..line_end + 2);
                while self.buf.len() < size + 2 {
                    self.fill().await?;
                }
                out.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break out;
                }
            }
        } else {
            return Err(format!("HTTP response without a length: {head}"));
        };
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 with padding (etcd's gateway takes `bytes` fields so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let (p50, p99, n) = quantiles(lat);
        assert_eq!(n, 100);
        assert!((p50 - 51.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 99.0).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // utime 1234 and stime 56 are fields 14 and 15; the name holds spaces and a ')'.
        let stat = "4242 (nexus (r0) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 \
                    9 0 77 1000 10 18446744073709551615";
        assert_eq!(proc_cpu_ticks(stat), Some(1290));
        assert_eq!(proc_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(proc_cpu_ticks("no parentheses"), None);
    }

    #[test]
    fn cpu_use_is_cores_and_ms_per_commit() {
        let level = |cpu_s, ops| Level {
            clients: 1,
            p50_ms: 1.0,
            p99_ms: 2.0,
            throughput: 0.0,
            ops,
            cpu_s,
        };
        let ten_s = Duration::from_secs(10);
        let (cores, ms) = cpu_use(&level(Some(15.0), 1000), ten_s).expect("measured");
        assert!((cores - 1.5).abs() < 1e-9, "{cores}");
        assert!((ms - 15.0).abs() < 1e-9, "{ms}");
        assert_eq!(cpu_use(&level(None, 1000), ten_s), None);
        assert_eq!(cpu_use(&level(Some(1.0), 0), ten_s), None);
    }

    #[test]
    fn cpu_time_advances_while_this_process_spins() {
        if !Path::new("/proc/self/stat").exists() {
            eprintln!("skipped: no /proc on this system");
            return;
        }
        let me = [std::process::id()];
        let before = cpu_seconds(&me).expect("readable /proc/<pid>/stat");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut x = 0u64;
        while cpu_seconds(&me).expect("readable /proc/<pid>/stat") <= before {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            assert!(
                Instant::now() < deadline,
                "no CPU time counted in 5 s of spinning"
            );
        }
        assert_eq!(
            cpu_seconds(&[u32::MAX]),
            None,
            "a process that does not exist"
        );
    }
}
