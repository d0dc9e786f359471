//! Network namespaces as separate hosts for partition tests (root only): one bridge in the
//! test's namespace, and per host a namespace joined to the bridge by a veth pair, with an
//! address on a private /24 this module picks (10.<a>.<b>.0/24, unused by any route here).
//! A host is cut off by taking its veth's bridge end down (inside, its own address keeps
//! working, so it can still be asked where it is) and healed by bringing it up again.
//! Everything is deleted when the [`Hosts`] is dropped, also after a failed assertion.

use std::net::Ipv4Addr;
use std::process::Command;

/// Whether this process runs as root and `ip` is available; prints why not otherwise.
pub fn can_use_netns(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: network namespaces need root");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: iproute2 (`ip`) is not installed");
        return false;
    }
    true
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Hosts in their own network namespaces on one bridge.
pub struct Hosts {
    tag: String,
    bridge: String,
    /// Namespace names, by host.
    pub namespaces: Vec<String>,
    /// Each host's address.
    pub addrs: Vec<Ipv4Addr>,
    veths: Vec<String>,
}

impl Hosts {
    /// Creates `n` hosts; `Err` says what failed (what was created is removed again).
    pub fn create(n: usize) -> Result<Hosts, String> {
        let tag = format!("{:05}", std::process::id() % 100_000);
        let subnet = free_subnet()?;
        let mut h = Hosts {
            bridge: format!("nxpb{tag}"),
            tag,
            namespaces: Vec::new(),
            addrs: Vec::new(),
            veths: Vec::new(),
        };
        h.setup(n, subnet)?;
        Ok(h)
    }

    fn setup(&mut self, n: usize, [a, b]: [u8; 2]) -> Result<(), String> {
        let br = self.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge"])?;
        let gw = format!("10.{a}.{b}.254/24");
        ip(&["addr", "add", &gw, "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..n {
            let ns = format!("nxp{}-{i}", self.tag);
            let host_end = format!("nxp{}h{i}", self.tag);
            let inner = format!("nxp{}n{i}", self.tag);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &inner,
            ])?;
            self.veths.push(host_end.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &br])?;
            ip(&["link", "set", &host_end, "up"])?;
            let addr = Ipv4Addr::new(10, a, b, (i + 1) as u8);
            let cidr = format!("{addr}/24");
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// The command prefix that runs a program inside host `i`.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespaces[i].clone(),
        ]
    }

    /// Cuts host `i` off the bridge (`true`) or joins it again (`false`).
    pub fn cut(&self, i: usize, off: bool) -> Result<(), String> {
        ip(&[
            "link",
            "set",
            &self.veths[i],
            if off { "down" } else { "up" },
        ])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        for v in &self.veths {
            let _ = ip(&["link", "del", v]);
        }
        if let Err(e) = ip(&["link", "del", &self.bridge]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A 10.a.b.0/24 that no route on this machine touches.
fn free_subnet() -> Result<[u8; 2], String> {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map_err(|e| format!("ip route: {e}"))?;
    let routes = String::from_utf8_lossy(&out.stdout).into_owned();
    let seed = std::process::id();
    for k in 0..200u32 {
        let b = ((seed + k * 37) % 200 + 20) as u8;
        let a = 213u8;
        let prefix = format!("10.{a}.{b}.");
        if !routes.contains(&prefix) && !routes.contains(&format!("10.{a}.0.0/16")) {
            return Ok([a, b]);
        }
    }
    Err("no free 10.213.x.0/24 subnet".into())
}
