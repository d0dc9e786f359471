//! Local clusters (`nexus up`, `nexus cluster create --provider local`): the on-disk layout, the
//! one-time creation (PKI, replica configs, a join token, a client context) and the processes
//! (`nexus server` per replica, `nexus agent` per node) a supervisor runs.
//!
//! ```text
//! <dir>/cluster.json              name, replicas (name, address), nodes, token, pool, cgroup root
//! <dir>/pki/ca.{crt,key}          cluster CA
//! <dir>/pki/admin.{crt,key}       the admin user of the context
//! <dir>/replicas/rI/server.yaml   replica config (+ tls.crt/key, data/ with the ledger)
//! <dir>/nodes/node-N/             agent state: node certificate, desired.json, replica dirs
//! <dir>/logs/{rI,node-N}.log      process output
//! ```

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity};
use serde::{Deserialize, Serialize};

use crate::config::{ClientConfig, ConfigError, Context, Peer, ServerConfig, write_private};

/// A replica of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    pub name: String,
    pub addr: String,
}

/// `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layout {
    /// Cluster and context name.
    pub name: String,
    pub replicas: Vec<ReplicaEntry>,
    pub nodes: Vec<String>,
    /// Join token of the nodes (no expiry; only readable by the owner).
    pub token: String,
    /// Replica subnets pool, `10.77.0.0/16`.
    pub pool: String,
    /// cgroup directory of this cluster's nodes.
    pub cgroup_root: String,
    pub node_timeout: String,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub replicas: usize,
    pub nodes: usize,
    pub pool: Option<String>,
    pub node_timeout: String,
}

fn cerr(e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Other(e.to_string())
}

/// Where named background clusters live: `<config dir>/local-clusters/<name>`.
pub fn named_dir(name: &str) -> PathBuf {
    crate::config::config_dir()
        .join("local-clusters")
        .join(name)
}

impl Layout {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    /// Loads `cluster.json` from `dir`, if the cluster exists.
    pub fn load(dir: &Path) -> Result<Option<Layout>, ConfigError> {
        match std::fs::read_to_string(Self::path(dir)) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| ConfigError::Parse {
                    path: Self::path(dir).display().to_string(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read {
                path: Self::path(dir).display().to_string(),
                source,
            }),
        }
    }

    pub fn server_yaml(dir: &Path, replica: &str) -> PathBuf {
        dir.join("replicas").join(replica).join("server.yaml")
    }

    pub fn node_dir(dir: &Path, node: &str) -> PathBuf {
        dir.join("nodes").join(node)
    }

    pub fn log(dir: &Path, who: &str) -> PathBuf {
        dir.join("logs").join(format!("{who}.log"))
    }

    /// The client context of this cluster.
    pub fn context(&self, dir: &Path) -> Context {
        Context {
            name: self.name.clone(),
            cluster: self.name.clone(),
            servers: self.replicas.iter().map(|r| r.addr.clone()).collect(),
            server_name: "localhost".into(),
            ca: dir.join("pki/ca.crt"),
            cert: dir.join("pki/admin.crt"),
            key: dir.join("pki/admin.key"),
        }
    }

    /// Writes the context into the client config and makes it current.
    pub fn install_context(&self, dir: &Path) -> Result<(), ConfigError> {
        let mut cfg = ClientConfig::load()?;
        cfg.upsert(self.context(dir));
        cfg.save()
    }
}

fn free_port(from: u16) -> Option<u16> {
    (from..from.saturating_add(500)).find(|p| UdpSocket::bind(("127.0.0.1", *p)).is_ok())
}

/// Pools used by other local clusters or by bridges on this host.
fn pool_in_use(second: u8) -> bool {
    let prefix = format!("nx{second}b");
    let bridges = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    let clusters = std::fs::read_dir(crate::config::config_dir().join("local-clusters"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Layout::load(&e.path()).ok().flatten())
        .any(|l| l.pool == format!("10.{second}.0.0/16"));
    bridges || clusters
}

/// Creates a cluster in `dir` (which must not hold one yet); [`Layout::install_context`] makes
/// it the current context.
pub fn create(dir: &Path, spec: &Spec) -> Result<Layout, ConfigError> {
    nexus_transport::init_crypto();
    let abs = std::path::absolute(dir).map_err(cerr)?;
    let dir = abs.as_path();
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate(&spec.name, Validity::ca_default(now)).map_err(cerr)?;
    write_private(&dir.join("pki/ca.crt"), ca.cert_pem().as_bytes())?;
    write_private(&dir.join("pki/ca.key"), ca.key_pem().as_bytes())?;
    let admin = ca
        .issue(&LeafRequest::new(
            Role::User,
            "admin",
            Validity::leaf_default(now),
        ))
        .map_err(cerr)?;
    write_private(&dir.join("pki/admin.crt"), admin.cert_pem().as_bytes())?;
    write_private(&dir.join("pki/admin.key"), admin.key_pem().as_bytes())?;

    let pool = match &spec.pool {
        Some(p) => p.clone(),
        None => {
            let second = (77u8..=126)
                .find(|b| !pool_in_use(*b))
                .ok_or_else(|| cerr("no free 10.x.0.0/16 replica network pool (77..126)"))?;
            format!("10.{second}.0.0/16")
        }
    };
    let mut replicas = Vec::new();
    let mut port = 7443;
    for i in 0..spec.replicas.max(1) {
        let p = free_port(port).ok_or_else(|| cerr("no free UDP port for a replica"))?;
        port = p + 1;
        replicas.push(ReplicaEntry {
            name: format!("r{i}"),
            addr: format!("127.0.0.1:{p}"),
        });
    }
    let mut yamls = Vec::new();
    let mut keys = Vec::new();
    for r in &replicas {
        let rdir = dir.join("replicas").join(&r.name);
        let leaf = ca
            .issue(&LeafRequest::new(
                Role::Replica,
                r.name.clone(),
                Validity::leaf_default(now),
            ))
            .map_err(cerr)?;
        write_private(&rdir.join("tls.crt"), leaf.cert_pem().as_bytes())?;
        write_private(&rdir.join("tls.key"), leaf.key_pem().as_bytes())?;
        keys.push(hex::encode(leaf.identity().public_key));
    }
    for r in &replicas {
        let rdir = dir.join("replicas").join(&r.name);
        let cfg = ServerConfig {
            cluster: spec.name.clone(),
            name: r.name.clone(),
            listen: r.addr.clone(),
            data_dir: rdir.join("data"),
            ca: dir.join("pki/ca.crt"),
            ca_key: dir.join("pki/ca.key"),
            cert: rdir.join("tls.crt"),
            key: rdir.join("tls.key"),
            peers: replicas
                .iter()
                .zip(&keys)
                .filter(|(p, _)| p.name != r.name)
                .map(|(p, key)| Peer {
                    name: p.name.clone(),
                    addr: p.addr.clone(),
                    public_key: Some(key.clone()),
                })
                .collect(),
            genesis: Vec::new(),
            join_tokens: Vec::new(),
            node_timeout: Some(spec.node_timeout.clone()),
            heartbeat: None,
            network_pool: Some(pool.clone()),
            gitops: None,
        };
        let path = Layout::server_yaml(dir, &r.name);
        cfg.save(&path)?;
        yamls.push(path);
    }
    let token = super::token::create(&yamls, None)?;
    let tag = fnv_hex8(&dir.display().to_string());
    let layout = Layout {
        name: spec.name.clone(),
        replicas,
        nodes: (1..=spec.nodes).map(|i| format!("node-{i}")).collect(),
        token,
        pool,
        cgroup_root: format!("nexus/{}-{tag}", spec.name),
        node_timeout: spec.node_timeout.clone(),
    };
    let text = serde_json::to_string_pretty(&layout).map_err(cerr)?;
    write_private(&Layout::path(dir), text.as_bytes())?;
    Ok(layout)
}

/// First 8 hex digits of a cheap, stable hash (FNV-1a) of `s`.
fn fnv_hex8(s: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

/// A child process of a supervisor.
pub struct Proc {
    pub label: String,
    pub child: Child,
    pub log: PathBuf,
}

fn spawn(dir: &Path, label: &str, args: &[String]) -> Result<Proc, ConfigError> {
    use std::os::unix::process::CommandExt;
    let log = Layout::log(dir, label);
    if let Some(p) = log.parent() {
        std::fs::create_dir_all(p).map_err(cerr)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(cerr)?;
    let exe = std::env::current_exe().map_err(cerr)?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(cerr)?)
        .stderr(out)
        .env("NO_COLOR", "1")
        // Own process group: a Ctrl-C in the terminal reaches the supervisor only, which then
        // stops the agents (draining their replicas) before the replicas.
        .process_group(0)
        .spawn()
        .map_err(|e| cerr(format!("cannot start {label}: {e}")))?;
    Ok(Proc {
        label: label.to_string(),
        child,
        log,
    })
}

/// Starts replica `r`.
pub fn spawn_replica(dir: &Path, r: &ReplicaEntry) -> Result<Proc, ConfigError> {
    let yaml = Layout::server_yaml(dir, &r.name);
    spawn(
        dir,
        &r.name,
        &[
            "server".into(),
            "--config".into(),
            yaml.display().to_string(),
        ],
    )
}

/// Starts the agent of node `index` (0-based).
pub fn spawn_agent(dir: &Path, layout: &Layout, index: usize) -> Result<Proc, ConfigError> {
    let node = &layout.nodes[index];
    let servers: Vec<String> = layout.replicas.iter().map(|r| r.addr.clone()).collect();
    spawn(
        dir,
        node,
        &[
            "agent".into(),
            "--join".into(),
            servers.join(","),
            "--token".into(),
            layout.token.clone(),
            "--name".into(),
            node.clone(),
            "--state-dir".into(),
            Layout::node_dir(dir, node).display().to_string(),
            "--cgroup-root".into(),
            layout.cgroup_root.clone(),
            "--labels".into(),
            format!("zone=zone-{}", index % 3 + 1),
            "--drain-on-exit".into(),
        ],
    )
}

/// Sends `signal` to a process.
pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we started; it has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_fields(&s)?.next().map(|state| state != "Z"))
        .unwrap_or(false)
}

/// The fields of a `/proc/<pid>/stat` line after the command name, from field 3 (the state)
/// on. The name (field 2) is in parentheses and may hold spaces and parentheses itself, so the
/// fields start after the last `)`.
pub fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat.get(stat.rfind(')')? + 1..)?.split_whitespace())
}

/// Whether this process runs as root (workloads need cgroups and namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_missing_one_is_not() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("skipped: no /proc on this system");
            return;
        }
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn stat_fields_start_after_the_last_parenthesis() {
        let mut f = stat_fields("7 (a) b (c)) Z 1 2").expect("fields");
        assert_eq!(f.next(), Some("Z"));
        assert_eq!(f.next(), Some("1"));
        assert!(stat_fields("no name").is_none());
    }
}
