//! A multi-replica cluster of real `nexus server` processes for end-to-end tests: `nexus init
//! --replicas N` into a temporary directory, each replica on its own address (free loopback
//! ports, or addresses the caller chose, e.g. inside network namespaces), per-replica client
//! contexts (`r0`, `r1`, ...) beside the cluster's own, and kill -9 / restart / wipe of one
//! replica. Every process is killed when the [`Replicas`] is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nexus_cli::config::{ClientConfig, Context, ServerConfig};

use crate::{free_udp_addr, nexus_bin, repo_root, text};

/// The cluster name `nexus init` is given (also the name of the context over all replicas).
pub const CLUSTER: &str = "local";

/// Replicas of one cluster.
pub struct Replicas {
    pub dir: tempfile::TempDir,
    /// Where each replica listens.
    pub addrs: Vec<SocketAddr>,
    procs: Vec<Option<Child>>,
    /// Per replica: a command prefix its server runs under (e.g. `ip netns exec ns0`).
    prefix: Vec<Vec<String>>,
}

impl Replicas {
    /// `nexus init --replicas n`, each replica on a free loopback port (nothing started yet).
    pub fn init(n: usize) -> Replicas {
        let addrs = (0..n).map(|_| free_udp_addr()).collect();
        Self::init_at(addrs)
    }

    /// `nexus init --replicas addrs.len()`, then each replica's `server.yaml`, its peers and
    /// the client contexts rewritten to listen on / dial `addrs`.
    pub fn init_at(addrs: Vec<SocketAddr>) -> Replicas {
        let n = addrs.len();
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Replicas {
            dir,
            addrs: addrs.clone(),
            procs: (0..n).map(|_| None).collect(),
            prefix: vec![Vec::new(); n],
        };
        let first = addrs.first().expect("at least one replica").to_string();
        let out = r.nexus(&["init", "--replicas", &n.to_string(), "--listen", &first]);
        assert!(
            out.status.success(),
            "nexus init failed: {}",
            text(&out.stderr)
        );
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        for i in 0..n {
            let path = r.server_yaml(i);
            let mut cfg = ServerConfig::load(&path).expect("server.yaml");
            cfg.listen = addrs[i].to_string();
            for p in &mut cfg.peers {
                if let Some(j) = names.iter().position(|x| *x == p.name) {
                    p.addr = addrs[j].to_string();
                }
            }
            cfg.save(&path).expect("write server.yaml");
        }
        let path = r.dir.path().join("config/config.yaml");
        let mut cfg = ClientConfig::load_from(&path).expect("client config");
        let main = cfg
            .contexts
            .iter_mut()
            .find(|c| c.name == CLUSTER)
            .expect("the cluster's context");
        main.servers = addrs.iter().map(|a| a.to_string()).collect();
        let main = main.clone();
        for (i, a) in addrs.iter().enumerate() {
            cfg.contexts.push(Context {
                name: names[i].clone(),
                servers: vec![a.to_string()],
                ..main.clone()
            });
        }
        cfg.current_context = Some(CLUSTER.into());
        let body = serde_json::to_string(&cfg).expect("config as json");
        // JSON is YAML: the config loader reads it back.
        std::fs::write(&path, body).expect("write client config");
        r
    }

    /// `nexus cluster member prepare rN` (N = the next index) with r0's config as the
    /// template, on a free loopback port: its certificate and `server.yaml` are written, a
    /// context `rN` is added and the cluster's context lists it too. Not started, and not a
    /// validator until `nexus cluster member add`. Returns N.
    pub fn prepare_new(&mut self) -> usize {
        let n = self.len();
        let addr = free_udp_addr();
        let like = self.server_yaml(0).display().to_string();
        let out = self.nexus(&[
            "cluster",
            "member",
            "prepare",
            &format!("r{n}"),
            "--listen",
            &addr.to_string(),
            "--like",
            &like,
        ]);
        assert!(
            out.status.success(),
            "member prepare: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        self.addrs.push(addr);
        self.procs.push(None);
        self.prefix.push(Vec::new());
        let path = self.dir.path().join("config/config.yaml");
        let mut cfg = ClientConfig::load_from(&path).expect("client config");
        let main = cfg
            .contexts
            .iter_mut()
            .find(|c| c.name == CLUSTER)
            .expect("the cluster's context");
        main.servers.push(addr.to_string());
        let one = Context {
            name: format!("r{n}"),
            servers: vec![addr.to_string()],
            ..main.clone()
        };
        cfg.contexts.push(one);
        let body = serde_json::to_string(&cfg).expect("config as json");
        std::fs::write(&path, body).expect("write client config");
        n
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Runs replica `i`'s server under `prefix` (e.g. `["ip", "netns", "exec", "ns0"]`).
    pub fn set_prefix(&mut self, i: usize, prefix: Vec<String>) {
        self.prefix[i] = prefix;
    }

    /// Environment pointing nexus at this cluster's config and data.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("NEXUS_CONFIG_DIR", self.dir.path().join("config")),
            ("XDG_DATA_HOME", self.dir.path().join("data")),
            ("NO_COLOR", PathBuf::from("1")),
        ]
    }

    /// A `nexus` command with this cluster's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(nexus_bin());
        self.setup(&mut cmd, args);
        cmd
    }

    fn setup(&self, cmd: &mut Command, args: &[&str]) {
        cmd.args(args)
            .current_dir(repo_root())
            .env_remove("NEXUS_CONTEXT")
            .env("RUST_LOG", "info,arc_malachitebft=warn");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// Runs `nexus ARGS` to completion.
    pub fn nexus(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nexus")
    }

    /// Runs `nexus ARGS` under replica `i`'s prefix (inside its namespace, say).
    pub fn nexus_at(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = match self.prefix[i].split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(nexus_bin());
                c
            }
            None => Command::new(nexus_bin()),
        };
        self.setup(&mut cmd, args);
        cmd.stdin(Stdio::null()).output().expect("run nexus")
    }

    /// Replica `i`'s directory (certificate, `server.yaml`, ledger).
    pub fn replica_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("data/nexus/{CLUSTER}/r{i}"))
    }

    pub fn server_yaml(&self, i: usize) -> PathBuf {
        self.replica_dir(i).join("server.yaml")
    }

    pub fn ledger_path(&self, i: usize) -> PathBuf {
        self.replica_dir(i).join("ledger.redb")
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("r{i}.log"))
    }

    /// Replica `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The last `lines` lines of every replica's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            let log = self.log(i);
            let all: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- r{i} (last {lines} lines) ---\n"));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Starts replica `i`'s `nexus server` (does not wait).
    pub fn spawn(&mut self, i: usize) {
        assert!(self.procs[i].is_none(), "r{i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("server log");
        let yaml = self.server_yaml(i).display().to_string();
        let args = ["server", "--config", yaml.as_str()];
        let mut cmd = match self.prefix[i].split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(nexus_bin());
                c
            }
            None => Command::new(nexus_bin()),
        };
        self.setup(&mut cmd, &args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nexus server");
        self.procs[i] = Some(child);
    }

    /// Starts replica `i` and waits until it answers.
    pub fn start(&mut self, i: usize) {
        self.spawn(i);
        self.wait_answering(i);
    }

    /// Starts every replica, then waits until each answers.
    pub fn start_all(&mut self) {
        for i in 0..self.len() {
            self.spawn(i);
        }
        for i in 0..self.len() {
            self.wait_answering(i);
        }
    }

    /// Waits until replica `i` answers a status call.
    pub fn wait_answering(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.nexus_at(i, &["--context", &format!("r{i}"), "cluster", "status"]);
            if out.status.success() {
                return;
            }
            if let Some(Ok(Some(st))) = self.procs[i].as_mut().map(|c| c.try_wait()) {
                panic!("r{i} exited ({st}):\n{}", self.log(i));
            }
            if Instant::now() > deadline {
                panic!(
                    "r{i} did not come up: {}\nlog:\n{}",
                    text(&out.stderr),
                    self.log(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether replica `i` was started and not killed.
    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// SIGKILL replica `i`: no clean shutdown.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM replica `i` and wait (SIGKILL after 10 s).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes replica `i`'s ledger (entries, certificates) and its consensus WAL beside it: it
    /// starts empty next time, with only its certificate and `server.yaml`. The replica must be
    /// stopped.
    pub fn wipe(&mut self, i: usize) {
        assert!(!self.running(i), "wipe r{i} only while it is stopped");
        let ledger = self.ledger_path(i);
        for path in [ledger.with_extension("wal"), ledger] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove {}: {e}", path.display()),
            }
        }
    }

    /// The context over every replica (the client picks the first that answers).
    pub fn context(&self) -> Context {
        self.context_named(CLUSTER)
    }

    /// The context that reaches replica `i` only.
    pub fn context_of(&self, i: usize) -> Context {
        self.context_named(&format!("r{i}"))
    }

    fn context_named(&self, name: &str) -> Context {
        let cfg = ClientConfig::load_from(&self.dir.path().join("config/config.yaml"))
            .expect("client config");
        cfg.contexts
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no context {name}"))
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill9(i);
        }
        // NEXUS_TEST_KEEP=DIR keeps a failed test's cluster (configs, ledgers, logs) in DIR.
        if std::thread::panicking()
            && let Some(keep) = std::env::var_os("NEXUS_TEST_KEEP")
        {
            let _ = Command::new("cp")
                .arg("-a")
                .arg(self.dir.path())
                .arg(&keep)
                .status();
            eprintln!("kept the cluster in {}", PathBuf::from(keep).display());
        }
    }
}
