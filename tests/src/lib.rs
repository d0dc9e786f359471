//! nexus-tests: end-to-end scenarios that run real `nexus` processes (clusters on loopback,
//! network namespaces). Shared helpers live here; the scenarios are in `tests/`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nexus_cli::config::{ClientConfig, Context};

pub mod fleet;
pub mod netns;
pub mod replicas;

pub use replicas::Replicas;

/// The nexus binary built from this crate (the same code as `nexus`): cargo builds it next to
/// the test executables' `deps/` directory whenever this crate's integration tests are built.
pub fn nexus_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    dir.join("nexus-e2e")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A free UDP port on 127.0.0.1 (QUIC listens on UDP).
pub fn free_udp_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr")
}

/// A single-replica cluster in a temporary directory, with its own config dir, run as a real
/// `nexus server` process.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    server: Option<Child>,
}

impl Cluster {
    /// `nexus init` into a fresh temporary directory (nothing started yet).
    pub fn init() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_udp_addr();
        let c = Cluster {
            dir,
            addr,
            server: None,
        };
        let out = c.nexus(&["init", "--listen", &addr.to_string()]);
        assert!(
            out.status.success(),
            "nexus init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
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
        cmd.args(args)
            .current_dir(repo_root())
            .env_remove("NEXUS_CONTEXT");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `nexus ARGS` to completion.
    pub fn nexus(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nexus")
    }

    /// Path of the replica's `server.yaml`.
    pub fn server_yaml(&self) -> PathBuf {
        self.dir.path().join("data/nexus/local/server.yaml")
    }

    /// Path of the replica's ledger file.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("data/nexus/local/r0/ledger.redb")
    }

    /// Starts `nexus server` and waits until it answers.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let child = self
            .command(&[
                "server",
                "--config",
                self.server_yaml().to_str().unwrap_or_default(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nexus server");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.nexus(&["get", "all"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "server did not come up: {}\nlog:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.server_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.server.take() {
            unsafe_free_sigterm(c.id());
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

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The admin context of this cluster.
    pub fn context(&self) -> Context {
        let cfg = ClientConfig::load_from(&self.dir.path().join("config/config.yaml"))
            .expect("client config");
        cfg.contexts.into_iter().next().expect("a context")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends SIGTERM through the `kill` command (no unsafe code in tests).
fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Text of an output stream.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A small valid Workload manifest.
pub fn workload(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: {replicas}\n  command: [\"sleep\", \"3600\"]\n"
    )
}
