//! Replica networking for the process runtime: each replica gets its own network namespace with
//! a veth pair into a per-node bridge, so several replicas can listen on the same port on one
//! machine and every replica has an address of its own (see docs/networking.md).
//!
//! Layout for a node whose subnet is `10.B.N.0/24`:
//! - bridge `nx<B>b<N>` in the root namespace with address `10.B.N.1/24` (the gateway);
//! - replica host number `H` (2..=254) gets the address `10.B.N.H/24` on its `eth0`, a default
//!   route via the gateway and `lo` up; the host end of its veth is `nx<B>v<N>-<H>`, enslaved
//!   to the bridge;
//! - `net.ipv4.ip_forward` is set to 1, so the bridges of different nodes on one host (all in the
//!   root namespace) route to each other.
//!
//! The kernel removes a veth pair when the replica's namespace dies with its last process, so a
//! stop needs no cleanup; [`Network::detach`] and [`Network::remove_unknown`] handle leftovers.
//! Commands run through `ip -batch -` (iproute2), two processes per replica start.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::RuntimeError;

/// First and last host number handed to replicas (.1 is the gateway, .255 broadcast).
pub const FIRST_HOST: u8 = 2;
pub const LAST_HOST: u8 = 254;

/// A node's replica network: its /24 subnet and the names derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The subnet's network address (`a.b.c.0`); the prefix is always /24.
    pub subnet: Ipv4Addr,
}

impl NetworkConfig {
    /// The network of subnet `subnet` (any address inside it; the last octet is ignored).
    pub fn new(subnet: Ipv4Addr) -> Self {
        let [a, b, c, _] = subnet.octets();
        NetworkConfig {
            subnet: Ipv4Addr::new(a, b, c, 0),
        }
    }

    /// Parses `a.b.c.0/24` (only /24 subnets are supported).
    pub fn parse(cidr: &str) -> Result<Self, String> {
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR (a.b.c.0/24)"))?;
        if prefix != "24" {
            return Err(format!("{cidr:?}: node subnets must be /24"));
        }
        let ip: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{cidr:?}: {addr:?} is not an IPv4 address"))?;
        if ip.octets()[3] != 0 {
            return Err(format!("{cidr:?}: the network address must end in .0"));
        }
        Ok(NetworkConfig::new(ip))
    }

    /// `a.b.c.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/24", self.subnet)
    }

    /// The bridge's address, `a.b.c.1`.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// `a.b.c.<host>`.
    pub fn host(&self, host: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, host)
    }

    /// The host number of `addr` if it lies in this subnet.
    pub fn host_of(&self, addr: Ipv4Addr) -> Option<u8> {
        let [a, b, c, h] = addr.octets();
        (self.host(0) == Ipv4Addr::new(a, b, c, 0)).then_some(h)
    }

    /// `nx<B>b<N>` (at most 9 bytes; interface names may have 15).
    pub fn bridge(&self) -> String {
        let [_, b, c, _] = self.subnet.octets();
        format!("nx{b}b{c}")
    }

    fn veth_prefix(&self) -> String {
        let [_, b, c, _] = self.subnet.octets();
        format!("nx{b}v{c}-")
    }

    /// The host end of replica `host`'s veth: `nx<B>v<N>-<H>` (at most 13 bytes).
    pub fn veth(&self, host: u8) -> String {
        format!("{}{host}", self.veth_prefix())
    }
}

/// The lowest host number in `FIRST_HOST..=LAST_HOST` not in `used`.
pub fn allocate(used: &BTreeSet<u8>) -> Option<u8> {
    (FIRST_HOST..=LAST_HOST).find(|h| !used.contains(h))
}

fn net_err(op: &'static str, message: String) -> RuntimeError {
    RuntimeError::Sys {
        op,
        source: std::io::Error::other(message),
    }
}

/// Runs `ip -batch -` with `script` on stdin, optionally inside the network namespace `netns`.
fn ip_batch(op: &'static str, script: &str, netns: Option<&File>) -> Result<(), RuntimeError> {
    let mut cmd = Command::new("ip");
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls setns on an
        // fd opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| net_err(op, format!("cannot run `ip` (is iproute2 installed?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| net_err(op, e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(net_err(
            op,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Operations on one node's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub config: NetworkConfig,
}

impl Network {
    /// Creates the bridge with the gateway address (idempotent) and enables IPv4 forwarding.
    pub fn setup(config: NetworkConfig) -> Result<Network, RuntimeError> {
        let br = config.bridge();
        let mut script = String::new();
        if !link_exists(&br) {
            script.push_str(&format!("link add {br} type bridge\n"));
        }
        script.push_str(&format!(
            "addr replace {}/24 dev {br}\nlink set {br} up\n",
            config.gateway()
        ));
        ip_batch("set up the node bridge", &script, None)?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
            .map_err(|e| RuntimeError::io("write", "/proc/sys/net/ipv4/ip_forward", e))?;
        Ok(Network { config })
    }

    /// Gives the (not yet released) replica init `pid`, which runs in a new network namespace,
    /// host number `host`: veth pair, address, default route, loopback. Returns its address.
    pub fn attach(&self, pid: i32, host: u8) -> Result<Ipv4Addr, RuntimeError> {
        let c = &self.config;
        let veth = c.veth(host);
        let mut script = String::new();
        if link_exists(&veth) {
            script.push_str(&format!("link del {veth}\n")); // left over from a crash
        }
        script.push_str(&format!(
            "link add {veth} type veth peer name eth0 netns {pid}\nlink set {veth} master {} up\n",
            c.bridge()
        ));
        ip_batch("create the replica's veth pair", &script, None)?;
        let ns_path = format!("/proc/{pid}/ns/net");
        let ns = File::open(&ns_path).map_err(|e| RuntimeError::io("open", &ns_path, e))?;
        let addr = c.host(host);
        let inside = format!(
            "addr add {addr}/24 dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via {}\n",
            c.gateway()
        );
        if let Err(e) = ip_batch("configure the replica's network", &inside, Some(&ns)) {
            self.detach(host);
            return Err(e);
        }
        Ok(addr)
    }

    /// Deletes replica `host`'s veth if it still exists (the kernel normally does it).
    pub fn detach(&self, host: u8) {
        let veth = self.config.veth(host);
        if link_exists(&veth) {
            let _ = ip_batch("delete a veth", &format!("link del {veth}\n"), None);
        }
    }

    /// Host numbers of this node's veths that exist now.
    pub fn existing_hosts(&self) -> BTreeSet<u8> {
        let prefix = self.config.veth_prefix();
        std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix)?.parse::<u8>().ok()
            })
            .collect()
    }

    /// Deletes this node's veths whose host number is not in `keep`; returns how many.
    pub fn remove_unknown(&self, keep: &BTreeSet<u8>) -> usize {
        let stale: Vec<u8> = self
            .existing_hosts()
            .into_iter()
            .filter(|h| !keep.contains(h))
            .collect();
        for h in &stale {
            self.detach(*h);
        }
        stale.len()
    }

    /// Deletes the bridge (when the node is drained).
    pub fn teardown(&self) -> Result<(), RuntimeError> {
        let br = self.config.bridge();
        if link_exists(&br) {
            ip_batch("delete the node bridge", &format!("link del {br}\n"), None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let c = NetworkConfig::parse("10.77.3.0/24").unwrap();
        assert_eq!(c.bridge(), "nx77b3");
        assert_eq!(c.veth(254), "nx77v3-254");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 77, 3, 1));
        assert_eq!(c.host(7), Ipv4Addr::new(10, 77, 3, 7));
        assert_eq!(c.host_of(Ipv4Addr::new(10, 77, 3, 9)), Some(9));
        assert_eq!(c.host_of(Ipv4Addr::new(10, 77, 4, 9)), None);
        assert_eq!(c.cidr(), "10.77.3.0/24");
        let longest = NetworkConfig::new(Ipv4Addr::new(10, 255, 255, 0));
        assert!(longest.veth(254).len() <= 15 && longest.bridge().len() <= 15);
        for bad in ["10.77.3.0", "10.77.3.0/16", "10.77.3.5/24", "x/24"] {
            assert!(NetworkConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_takes_the_lowest_free_host() {
        assert_eq!(allocate(&BTreeSet::new()), Some(2));
        assert_eq!(allocate(&[2, 3, 5].into()), Some(4));
        let full: BTreeSet<u8> = (FIRST_HOST..=LAST_HOST).collect();
        assert_eq!(allocate(&full), None);
    }
}
