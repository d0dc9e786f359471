//! Node agents for end-to-end tests: a [`Fleet`] configures a [`Cluster`]'s replica for nodes
//! (short node timeout, its own replica network pool), creates a join token, runs `nexus agent`
//! processes, and on drop kills them and everything they started (cgroup processes, node
//! bridges, cgroup directories), so tests leave nothing behind even after kill -9.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use nexus_cli::config::ServerConfig;
use serde_json::Value;

use crate::{Cluster, text};

/// Second octet of the next fleet's replica network pool (10.<b>.0.0/16).
static NEXT_POOL: AtomicU8 = AtomicU8::new(130);

/// Whether the tests can run agents with the process runtime (root) and network namespaces.
pub fn can_run_agents(test: &str) -> bool {
    // Reading /proc/self/status avoids unsafe code: Uid line, effective uid second.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!(
            "skipping {test}: node agents run workloads in cgroups and namespaces, which needs root"
        );
        return false;
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: iproute2 (`ip`) is not installed");
        return false;
    }
    true
}

/// One `nexus agent` process.
pub struct Agent {
    pub name: String,
    args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// SIGKILL: the agent dies, its replicas keep running.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Agents of one cluster and everything they leave behind.
pub struct Fleet {
    pub pool: u8,
    pub cgroup_root: String,
    pub token: String,
    dir: PathBuf,
    addr: String,
    pub agents: Vec<Agent>,
    env: Vec<(&'static str, PathBuf)>,
}

impl Fleet {
    /// Configures the (not yet started) replica of `cluster` for nodes: `node_timeout`, a
    /// 300 ms heartbeat, a fresh replica network pool; creates a join token.
    pub fn new(cluster: &Cluster, node_timeout: &str) -> Fleet {
        let pool = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        let yaml = cluster.server_yaml();
        let mut cfg = ServerConfig::load(&yaml).expect("server.yaml");
        cfg.node_timeout = Some(node_timeout.into());
        cfg.heartbeat = Some("300ms".into());
        cfg.network_pool = Some(format!("10.{pool}.0.0/16"));
        cfg.save(&yaml).expect("write server.yaml");
        let out = cluster.nexus(&[
            "token",
            "create",
            "--config",
            yaml.to_str().unwrap_or_default(),
            "--ttl",
            "1h",
        ]);
        assert!(out.status.success(), "token create: {}", text(&out.stderr));
        Fleet {
            pool,
            cgroup_root: format!("nexus/e2e-{}-{pool}", std::process::id()),
            token: text(&out.stdout).trim().to_string(),
            dir: cluster.dir.path().to_path_buf(),
            addr: cluster.addr.to_string(),
            agents: Vec::new(),
            env: cluster.env(),
        }
    }

    /// Where the agents pin their network policy maps and links (`/sys/fs/bpf/<cgroup root>`).
    pub fn pin_root(&self) -> PathBuf {
        Path::new("/sys/fs/bpf").join(self.cgroup_root.replace('/', "_"))
    }

    /// The state directory of node `name`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name)
    }

    fn spawn(&self, args: &[String], log: &Path) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        let mut cmd = std::process::Command::new(crate::nexus_bin());
        cmd.args(args)
            .env_remove("NEXUS_CONTEXT")
            .env("NEXUS_LOG", "info,nexus_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn nexus agent")
    }

    /// Starts `nexus agent --name NAME` (labels `k=v,...` optional); returns its index.
    pub fn start(&mut self, name: &str, labels: &str) -> usize {
        self.start_with(name, labels, &[])
    }

    /// [`Fleet::start`] with more `nexus agent` arguments.
    pub fn start_with(&mut self, name: &str, labels: &str, extra: &[&str]) -> usize {
        let mut args: Vec<String> = [
            "agent",
            "--join",
            &self.addr,
            "--token",
            &self.token,
            "--name",
            name,
            "--cgroup-root",
            &self.cgroup_root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--state-dir".into());
        args.push(self.state_dir(name).display().to_string());
        if !labels.is_empty() {
            args.push("--labels".into());
            args.push(labels.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = self.dir.join(format!("agent-{name}.log"));
        let child = self.spawn(&args, &log);
        self.agents.push(Agent {
            name: name.into(),
            args,
            child: Some(child),
            log,
        });
        self.agents.len() - 1
    }

    /// Starts a stopped agent again with the same arguments.
    pub fn restart(&mut self, index: usize) {
        let (args, log) = (
            self.agents[index].args.clone(),
            self.agents[index].log.clone(),
        );
        let child = self.spawn(&args, &log);
        self.agents[index].child = Some(child);
    }

    /// Everything the agents logged.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .map(|a| {
                format!(
                    "--- {}\n{}",
                    a.name,
                    std::fs::read_to_string(&a.log).unwrap_or_default()
                )
            })
            .collect()
    }

    /// Processes in this fleet's cgroups (any hierarchy lists them all).
    pub fn cgroup_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for h in ["pids", "memory", "unified"] {
            let root = Path::new("/sys/fs/cgroup").join(h).join(&self.cgroup_root);
            if root.exists() {
                collect_pids(&root, &mut out);
                break;
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out);
        }
    }
}

fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill9();
        }
        // Replicas outlive their agents by design: kill whatever is left in our cgroups.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.cgroup_pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_tree(&h.path().join(&self.cgroup_root));
        }
        // Network policy pins of the agents (kill -9 leaves them; the links detach with them).
        let _ = std::fs::remove_dir_all(self.pin_root());
        let prefix = format!("nx{}b", self.pool);
        for e in std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", &name])
                    .status();
            }
        }
    }
}

/// Waits until `n` nodes are registered and heartbeating (`nexus cluster status`).
pub fn wait_nodes(cluster: &Cluster, fleet: &Fleet, n: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} ready nodes"),
        || fleet.logs(),
        || {
            let out = text(&cluster.nexus(&["cluster", "status"]).stdout);
            let ready = out
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                .count();
            (ready >= n).then_some(())
        },
    );
}

/// `nexus get KIND NAME -o json` → the object's live status.
pub fn status(cluster: &Cluster, kind: &str, name: &str) -> Option<Value> {
    let out = cluster.nexus(&["get", kind, name, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?.get("status").cloned()
}

/// Polls `f` until it returns `Some` or `timeout` passes; panics with `what` and `context()`.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
