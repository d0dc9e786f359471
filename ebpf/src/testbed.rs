//! Root-only support for the enforcement tests and the benchmark: a private "router" network
//! namespace holding one bridge per simulated node, one network namespace per replica or outside
//! host (veth into its node's bridge, IPv4 10.231.<node>.<host>/24 and IPv6 fd77:<node>::<host>),
//! test cgroups under `<cgroup2>/nexus-test-<id>/`, and `nx-probe` processes joined to both.
//! Everything is removed on drop, also when a test fails. All addresses live inside namespaces
//! this module creates, so concurrent testbeds and the host never see each other's traffic.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a root-only test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if crate::support::cgroup2_mount(&mounts).is_none() {
        return Some("no cgroup2 hierarchy is mounted".into());
    }
    None
}

fn run(cmd: &mut Command) -> io::Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> io::Result<String> {
    run(Command::new("ip").args(args))
}

/// Creates a network namespace with IPv6 duplicate address detection off (link-local addresses
/// would otherwise stay tentative for a second or two, and routed IPv6 fail meanwhile), running
/// `extra` shell commands inside it too.
fn netns_add(name: &str, extra: &str) -> io::Result<()> {
    ip(&["netns", "add", name])?;
    let script = format!(
        "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
         echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad{extra}"
    );
    run(Command::new("ip").args(["netns", "exec", name, "sh", "-c", &script]))?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// A simulated replica or outside host: a network namespace, its addresses, and (for replicas)
/// a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub node: u8,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// The host's cgroup in the cgroup2 hierarchy (None: an outside host in no test cgroup).
    pub cgroup: Option<PathBuf>,
}

impl Host {
    pub fn addrs(&self) -> Vec<IpAddr> {
        vec![IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

/// A long-running `nx-probe repl` inside a host, for many probes without process start-up cost.
#[derive(Debug)]
pub struct Prober {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Prober {
    /// Runs one probe ("connect", "udp" or "udp-unconnected") and returns its result word.
    pub fn probe(&mut self, kind: &str, target: &str, timeout: Duration) -> io::Result<String> {
        self.line(&format!("{kind} {target} {}", timeout.as_millis()))
    }

    /// Sends one input line and returns the next output line.
    pub fn line(&mut self, input: &str) -> io::Result<String> {
        writeln!(self.stdin, "{input}")?;
        self.stdin.flush()?;
        self.read_line()
    }

    /// The next output line.
    pub fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            return Err(io::Error::other("nx-probe exited"));
        }
        Ok(line.trim().to_string())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The network namespaces, cgroups and processes of one test.
#[derive(Debug)]
pub struct Testbed {
    pub id: String,
    probe_bin: PathBuf,
    router: String,
    cgroup_root: PathBuf,
    netns: Vec<String>,
    cgroups: Vec<PathBuf>,
    children: Vec<Child>,
    nodes: Vec<u8>,
}

impl Testbed {
    /// A new, empty testbed; `probe_bin` is the `nx-probe` binary.
    pub fn new(probe_bin: &Path) -> io::Result<Self> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let cgroup2 = crate::support::cgroup2_mount(&mounts)
            .ok_or_else(|| io::Error::other("no cgroup2 mount"))?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("nxt{}x{n}", std::process::id());
        let cgroup_root = cgroup2.join(format!("nexus-test-{id}"));
        let mut tb = Testbed {
            router: format!("{id}-router"),
            id,
            probe_bin: probe_bin.to_path_buf(),
            cgroup_root: cgroup_root.clone(),
            netns: Vec::new(),
            cgroups: Vec::new(),
            children: Vec::new(),
            nodes: Vec::new(),
        };
        std::fs::create_dir(&cgroup_root)?;
        tb.cgroups.push(cgroup_root);
        let router = tb.router.clone();
        tb.netns.push(router.clone());
        netns_add(
            &router,
            " && echo 1 > /proc/sys/net/ipv4/ip_forward \
             && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        )?;
        Ok(tb)
    }

    /// The cgroup directory that holds node `node`'s replica cgroups.
    pub fn node_cgroup(&self, node: u8) -> PathBuf {
        self.cgroup_root.join(format!("node{node}"))
    }

    fn ensure_node(&mut self, node: u8) -> io::Result<()> {
        if self.nodes.contains(&node) {
            return Ok(());
        }
        let r = self.router.clone();
        let br = format!("br{node}");
        ip(&["-n", &r, "link", "add", &br, "type", "bridge"])?;
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("10.231.{node}.1/24"),
            "dev",
            &br,
        ])?;
        ip(&[
            "-n",
            &r,
            "-6",
            "addr",
            "add",
            &format!("fd77:{node}::1/64"),
            "dev",
            &br,
            "nodad",
        ])?;
        ip(&["-n", &r, "link", "set", &br, "up"])?;
        let dir = self.node_cgroup(node);
        std::fs::create_dir(&dir)?;
        self.cgroups.push(dir);
        self.nodes.push(node);
        Ok(())
    }

    /// The router namespace as a host (no cgroup): it owns every node's bridge address, so a
    /// process there connects to node N's replicas from `10.231.N.1` like a node-local process.
    pub fn router_host(&self) -> Host {
        Host {
            name: "router".into(),
            netns: self.router.clone(),
            node: 0,
            v4: Ipv4Addr::new(10, 231, 0, 1),
            v6: Ipv6Addr::LOCALHOST,
            cgroup: None,
        }
    }

    /// The address node `node`'s bridge has (what a node-local process connects from).
    pub fn gateway(node: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, node, 1)
    }

    /// Adds host number `host` (2..=254) on node `node`. With `in_cgroup`, it gets a cgroup
    /// `node<node>/<name>` that processes started with [`Testbed::spawn`] join.
    pub fn add_host(
        &mut self,
        node: u8,
        host: u8,
        name: &str,
        in_cgroup: bool,
    ) -> io::Result<Host> {
        self.ensure_node(node)?;
        let ns = format!("{}-{name}", self.id);
        self.netns.push(ns.clone());
        netns_add(&ns, "")?;
        let r = self.router.clone();
        let veth = format!("v{node}-{host}");
        ip(&[
            "-n", &r, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&[
            "-n",
            &r,
            "link",
            "set",
            &veth,
            "master",
            &format!("br{node}"),
            "up",
        ])?;
        let v4 = Ipv4Addr::new(10, 231, node, host);
        let v6: Ipv6Addr = format!("fd77:{node}::{host}")
            .parse()
            .map_err(io::Error::other)?;
        ip(&["-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.231.{node}.1"),
        ])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd77:{node}::1"),
        ])?;
        let cgroup = if in_cgroup {
            let dir = self.node_cgroup(node).join(name);
            std::fs::create_dir(&dir)?;
            self.cgroups.push(dir.clone());
            Some(dir)
        } else {
            None
        };
        Ok(Host {
            name: name.into(),
            netns: ns,
            node,
            v4,
            v6,
            cgroup,
        })
    }

    /// A cgroup below `host`'s own (a workload that creates cgroups of its own), as a host.
    pub fn sub_cgroup(&mut self, host: &Host, name: &str) -> io::Result<Host> {
        let parent = host
            .cgroup
            .as_ref()
            .ok_or_else(|| io::Error::other("host has no cgroup"))?;
        let dir = parent.join(name);
        std::fs::create_dir(&dir)?;
        self.cgroups.push(dir.clone());
        Ok(Host {
            cgroup: Some(dir),
            ..host.clone()
        })
    }

    fn command(&self, host: &Host) -> Command {
        let mut c = Command::new(&self.probe_bin);
        if let Some(cg) = &host.cgroup {
            c.arg("--cgroup").arg(cg);
        }
        c.arg("--netns").arg(&host.netns);
        c
    }

    /// Starts a long-running `nx-probe` (serve, serve-udp, exec ...) in `host` and waits for its
    /// first output line when it serves ("ready").
    pub fn spawn(&mut self, host: &Host, args: &[&str]) -> io::Result<()> {
        let mut child = self
            .command(host)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        if args
            .first()
            .is_some_and(|a| matches!(*a, "serve" | "serve-udp" | "echo" | "sink"))
        {
            let mut line = String::new();
            if let Some(out) = child.stdout.as_mut() {
                BufReader::new(out).read_line(&mut line)?;
            }
            if line.trim() != "ready" {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!("nx-probe {args:?} did not start")));
            }
        }
        self.children.push(child);
        Ok(())
    }

    /// Runs `nx-probe` once in `host` and returns its output (one result word for probes).
    pub fn probe(
        &self,
        host: &Host,
        kind: &str,
        target: &str,
        timeout: Duration,
    ) -> io::Result<String> {
        let ms = timeout.as_millis().to_string();
        Ok(run(self.command(host).args([kind, target, &ms]))?
            .trim()
            .to_string())
    }

    /// Runs any `nx-probe` command once in `host` and returns its output.
    pub fn run_probe(&self, host: &Host, args: &[&str]) -> io::Result<String> {
        run(self.command(host).args(args))
    }

    /// A `nx-probe repl` in `host`.
    pub fn prober(&self, host: &Host) -> io::Result<Prober> {
        self.interactive(host, &["repl"])
    }

    /// Any `nx-probe` command in `host` driven line by line (`repl`, `hold ADDR:PORT`).
    pub fn interactive(&self, host: &Host, args: &[&str]) -> io::Result<Prober> {
        let mut child = self
            .command(host)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("nx-probe repl without pipes"));
        };
        Ok(Prober {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Runs a command to completion inside `host` (through `nx-probe exec`).
    pub fn exec(&self, host: &Host, args: &[&str]) -> io::Result<String> {
        run(self.command(host).arg("exec").args(args))
    }

    /// Starts a command inside `host` and leaves it running until drop.
    pub fn exec_background(&mut self, host: &Host, args: &[&str]) -> io::Result<()> {
        let child = self
            .command(host)
            .arg("exec")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        Ok(())
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.netns.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        // Processes may take a moment to leave their cgroups after being reaped.
        for dir in self.cgroups.iter().rev() {
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}
