//! nexus-agent: the node agent. It joins the cluster once (join token → node certificate),
//! connects to every replica in its config with mutual TLS as `node:<name>`, registers its
//! capacity and labels, follows each replica's assignment feed and acts only on a set that f+1
//! replicas sent identically ([`agree`], DESIGN BFT rule 4), runs it with a reconciler runtime
//! (`agent::reconcile` every tick, on every new set and at back-off deadlines), reports what runs
//! (heartbeats: soft state), and serves log requests. The agreed set is kept on disk, so the
//! agent heals its replicas while the control plane is down and after its own restarts.
//!
//! - [`identity`]: join or reuse the node certificate.
//! - [`session`]: one replica connection with reconnects and exponential back-off.
//! - [`local`]: the reconcile loop and status reports.
//! - [`logs`]: streaming log files to a replica for `nexus logs`.
//! - [`policy`]: network policy — f+1 agreement on the replicas' policy feeds, eBPF
//!   enforcement on the node, the "NOT enforced" condition, counters for troubleshooting.

pub mod agree;
pub mod identity;
mod local;
mod logs;
mod policy;
mod session;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nexus_api::agent::{AssignmentSet, Capacity, InstanceReport, NETWORK_LABEL};
use nexus_api::network::PolicyFeed;
use nexus_reconciler::agent::{DesiredSet, detect_capacity};
use nexus_reconciler::runtime::fake::FakeRuntime;
use nexus_reconciler::runtime::{NetworkConfig, ProcessConfig, ProcessRuntime, Runtime};
use nexus_reconciler::spec::ReplicaSpec;
use nexus_transport::quic::Endpoint;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use identity::NodeIdentity;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("identity: {0}")]
    Identity(String),
    #[error("{0}")]
    Io(String),
    #[error("runtime: {0}")]
    Runtime(String),
    #[error("network: {0}")]
    Transport(String),
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (the certificate's CN).
    pub name: String,
    /// Every replica, `host:port`.
    pub servers: Vec<String>,
    /// TLS name replicas present (`localhost` for local clusters).
    pub server_name: String,
    /// Join token for the first start.
    pub token: Option<String>,
    pub state_dir: PathBuf,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Address the node is reached at (replicas in host-network mode). Default `127.0.0.1`.
    pub address: String,
    /// Capacity to announce instead of the detected one.
    pub capacity: Option<Capacity>,
    /// How often the local loop looks at the runtime. Default 250 ms.
    pub tick: Duration,
    /// Stop every replica (and remove the node bridge) when the agent exits. Default false:
    /// replicas keep running for the next agent to adopt.
    pub drain_on_exit: bool,
    /// Longest pause between reconnection attempts. Default 5 s.
    pub max_backoff: Duration,
    /// Enforce network policy with eBPF (process runtime). Default true; when false the node
    /// reports that it does not.
    pub network_policy: bool,
}

impl AgentConfig {
    /// Defaults for node `name` talking to `servers`, with state under `state_dir`.
    pub fn new(
        name: impl Into<String>,
        servers: Vec<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            name: name.into(),
            servers,
            server_name: "localhost".into(),
            token: None,
            state_dir: state_dir.into(),
            labels: BTreeMap::new(),
            address: "127.0.0.1".into(),
            capacity: None,
            tick: Duration::from_millis(250),
            drain_on_exit: false,
            max_backoff: Duration::from_secs(5),
            network_policy: true,
        }
    }
}

/// What runs the replicas.
pub enum RuntimeChoice {
    /// Real processes (needs root); `cgroup_root` separates clusters on one host.
    Process { cgroup_root: PathBuf },
    /// In memory, for simulated agents.
    Fake(Arc<FakeRuntime>),
}

/// What the agent acts on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Current {
    pub hash: Option<String>,
    pub network: Option<String>,
    pub replicas: Vec<ReplicaSpec>,
}

/// State shared by the agent's tasks.
pub(crate) struct Agent {
    pub cfg: AgentConfig,
    pub identity: NodeIdentity,
    pub endpoint: Endpoint,
    pub runtime: Arc<dyn Runtime>,
    pub process: Option<Arc<ProcessRuntime>>,
    pub fake: Option<Arc<FakeRuntime>>,
    pub capacity: Capacity,
    /// f+1.
    pub need: usize,
    /// Latest verified set per replica (index into `cfg.servers`).
    pub feeds: Mutex<BTreeMap<usize, AssignmentSet>>,
    /// Latest verified network policy feed per replica.
    pub policy_feeds: Mutex<BTreeMap<usize, PolicyFeed>>,
    /// Network policy enforcement (process runtime only; simulated agents have none).
    pub(crate) enforcement: Option<Arc<policy::Enforcement>>,
    pub current: Mutex<Current>,
    /// Wakes the local loop (a new set to act on).
    pub changed: Notify,
    /// Latest instance reports (sessions heartbeat when it changes).
    pub status: watch::Sender<Arc<Vec<InstanceReport>>>,
    /// Labels and conditions as registered; a change makes every session register again.
    pub registration: watch::Sender<(BTreeMap<String, String>, Vec<String>)>,
    pub log_tasks: Mutex<HashMap<u64, Vec<tokio::task::AbortHandle>>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Agent {
    fn desired_path(&self) -> PathBuf {
        self.cfg.state_dir.join("desired.json")
    }
    fn network_path(&self) -> PathBuf {
        self.cfg.state_dir.join("network.json")
    }

    /// The node's address for replicas in host-network mode.
    pub fn node_ip(&self) -> Option<IpAddr> {
        self.cfg.address.parse().ok()
    }

    /// Looks for a set f+1 replicas agree on and, when it differs from the current one, makes it
    /// current (network first, then the set on disk, then the local loop).
    pub fn evaluate(&self) {
        let set = {
            let feeds = lock(&self.feeds);
            match agree::agreed(&self.cfg.name, feeds.values(), self.need) {
                Some(s) => s.clone(),
                None => return,
            }
        };
        let mut cur = lock(&self.current);
        if cur.hash.as_deref() == Some(set.hash.as_str()) {
            return;
        }
        if set.network != cur.network {
            self.apply_network(set.network.as_deref());
        }
        let desired = DesiredSet {
            version: set.height,
            replicas: set.replicas.clone(),
        };
        if let Err(e) = desired.save(&self.desired_path()) {
            tracing::warn!("cannot keep the assignments on disk: {e}");
        }
        let net = serde_json::json!({ "network": set.network });
        let _ = std::fs::write(self.network_path(), net.to_string());
        tracing::info!(
            node = %self.cfg.name,
            replicas = set.replicas.len(),
            height = set.height,
            hash = &set.hash[..12],
            "new assignments agreed by {} replica(s)",
            self.need
        );
        *cur = Current {
            hash: Some(set.hash.clone()),
            network: set.network.clone(),
            replicas: set.replicas,
        };
        drop(cur);
        self.changed.notify_one();
    }

    /// Takes the network policy f+1 replicas agree on; the local loop enforces it.
    pub fn evaluate_policy(&self) {
        let Some(e) = &self.enforcement else { return };
        let changed = {
            let feeds = lock(&self.policy_feeds);
            e.evaluate(feeds.values(), self.need)
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// Registers `condition` as the node's network policy condition (or clears it).
    pub(crate) fn set_policy_condition(&self, condition: Option<String>) {
        self.registration.send_if_modified(|(_, conditions)| {
            let current = conditions.iter().find(|c| c.starts_with("network policy"));
            if current == condition.as_ref() {
                return false;
            }
            conditions.retain(|c| !c.starts_with("network policy"));
            conditions.extend(condition.clone());
            true
        });
    }

    /// Switches the process runtime to the node subnet; on failure replicas share the host
    /// network and the node says so (label and condition).
    fn apply_network(&self, network: Option<&str>) {
        let Some(p) = &self.process else { return };
        let Some(net) = network else { return };
        let result = NetworkConfig::parse(net)
            .map_err(|e| e.to_string())
            .and_then(|c| p.set_network(c).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!("replica networking unavailable, using the host network: {e}");
            self.registration.send_modify(|(labels, conditions)| {
                labels.insert(NETWORK_LABEL.into(), "host".into());
                conditions.retain(|c| !c.starts_with("host network"));
                conditions.push(format!(
                    "host network: replicas share the node's network ({e})"
                ));
            });
        }
    }
}

/// A running agent.
pub struct AgentHandle {
    agent: Arc<Agent>,
    tasks: Vec<JoinHandle<()>>,
}

impl AgentHandle {
    /// What the agent's replicas look like now.
    pub fn instances(&self) -> Vec<InstanceReport> {
        self.agent.status.borrow().as_ref().clone()
    }

    /// Hash of the set the agent acts on.
    pub fn acting_on(&self) -> Option<String> {
        lock(&self.agent.current).hash.clone()
    }

    /// Disconnects; with `drain`, stops every replica first and removes the node bridge.
    pub async fn stop(self, drain: bool) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        for (_, handles) in lock(&self.agent.log_tasks).drain() {
            for h in handles {
                h.abort();
            }
        }
        if drain {
            let a = self.agent.clone();
            let _ = tokio::task::spawn_blocking(move || local::drain(&a)).await;
        }
        self.agent.endpoint.close();
    }
}

fn network_capable(process: bool) -> (String, Vec<String>) {
    if !process {
        return ("isolated".into(), Vec::new());
    }
    match std::process::Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => ("isolated".into(), Vec::new()),
        _ => (
            "host".into(),
            vec![
                "host network: replicas share the node's network (iproute2 `ip` not found)".into(),
            ],
        ),
    }
}

/// Starts the agent: identity (joining when needed), runtime (adopting what a previous agent
/// left running), the local loop on the last agreed set, and one session per replica.
pub async fn start(cfg: AgentConfig, runtime: RuntimeChoice) -> Result<AgentHandle, AgentError> {
    nexus_transport::init_crypto();
    if cfg.servers.is_empty() {
        return Err(AgentError::Config("no replica addresses (--join)".into()));
    }
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| AgentError::Io(format!("{}: {e}", cfg.state_dir.display())))?;
    let bind = "0.0.0.0:0"
        .parse()
        .map_err(|_| AgentError::Config("bind".into()))?;
    let endpoint = Endpoint::client(bind).map_err(|e| AgentError::Transport(e.to_string()))?;
    let mut delay = Duration::from_millis(200);
    let identity = loop {
        match identity::load_or_join(
            &cfg.state_dir,
            &cfg.name,
            &cfg.servers,
            &cfg.server_name,
            cfg.token.as_deref(),
            &endpoint,
        )
        .await
        {
            Ok(id) => break id,
            Err(AgentError::Identity(msg)) if msg.starts_with("cannot join") => {
                tracing::warn!("{msg}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(cfg.max_backoff);
            }
            Err(e) => return Err(e),
        }
    };

    let network_file = cfg.state_dir.join("network.json");
    let saved_network: Option<String> = std::fs::read_to_string(&network_file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("network")?.as_str().map(str::to_string));
    let mut pins_for = None;
    let (runtime, process, fake): (Arc<dyn Runtime>, _, _) = match runtime {
        RuntimeChoice::Process { cgroup_root } => {
            pins_for = Some(cgroup_root.clone());
            let mut pc = ProcessConfig::new(cfg.name.clone(), cfg.state_dir.clone());
            pc.cgroup_root = cgroup_root;
            pc.network = saved_network
                .as_deref()
                .and_then(|n| NetworkConfig::parse(n).ok());
            let p = tokio::task::spawn_blocking(move || ProcessRuntime::new(pc))
                .await
                .map_err(|e| AgentError::Runtime(e.to_string()))?
                .map_err(|e| AgentError::Runtime(e.to_string()))?;
            let p = Arc::new(p);
            let report = p
                .adopt_existing()
                .map_err(|e| AgentError::Runtime(e.to_string()))?;
            if !report.adopted.is_empty() || !report.removed.is_empty() {
                tracing::info!(
                    adopted = report.adopted.len(),
                    exited = report.exited.len(),
                    removed = report.removed.len(),
                    "took over what the previous agent left"
                );
            }
            (p.clone() as Arc<dyn Runtime>, Some(p), None)
        }
        RuntimeChoice::Fake(f) => (f.clone() as Arc<dyn Runtime>, None, Some(f)),
    };
    let desired = DesiredSet::load(&cfg.state_dir.join("desired.json")).unwrap_or_default();
    let current = Current {
        hash: (!desired.replicas.is_empty()).then(|| {
            AssignmentSet::compute_hash(&cfg.name, saved_network.as_deref(), &desired.replicas)
        }),
        network: saved_network,
        replicas: desired.replicas,
    };
    let mut conditions = Vec::new();
    let enforcement = match (&process, pins_for) {
        (Some(_), Some(_)) if !cfg.network_policy => {
            conditions.push(format!(
                "network policy NOT enforced on node {}: disabled (--no-network-policy)",
                cfg.name
            ));
            None
        }
        (Some(p), Some(root)) => {
            let (name, dir) = (cfg.name.clone(), cfg.state_dir.clone());
            let e =
                tokio::task::spawn_blocking(move || policy::Enforcement::start(&name, &dir, &root))
                    .await
                    .map_err(|e| AgentError::Runtime(e.to_string()))?;
            let e = Arc::new(e);
            p.set_start_hook(Arc::new(policy::AttachOnStart(e.clone())));
            Some(e)
        }
        _ => None,
    };
    let (network_label, network_conditions) = network_capable(process.is_some());
    conditions.extend(network_conditions);
    conditions.extend(enforcement.as_ref().and_then(|e| e.condition()));
    let mut labels = cfg.labels.clone();
    labels.insert(NETWORK_LABEL.into(), network_label);
    let capacity = cfg.capacity.unwrap_or_else(|| {
        let c = detect_capacity();
        Capacity {
            cpu_millis: c.cpu.0,
            memory_bytes: c.memory.0,
            gpus: c.gpus,
        }
    });
    let need = agree::quorum(cfg.servers.len());
    let agent = Arc::new(Agent {
        identity,
        endpoint,
        runtime,
        process,
        fake,
        capacity,
        need,
        feeds: Mutex::default(),
        policy_feeds: Mutex::default(),
        enforcement,
        current: Mutex::new(current),
        changed: Notify::new(),
        status: watch::channel(Arc::new(Vec::new())).0,
        registration: watch::channel((labels, conditions)).0,
        log_tasks: Mutex::default(),
        cfg,
    });
    let mut tasks = vec![tokio::spawn(local::run(agent.clone()))];
    for i in 0..agent.cfg.servers.len() {
        tasks.push(tokio::spawn(session::run(agent.clone(), i)));
    }
    Ok(AgentHandle { agent, tasks })
}

/// Runs the agent until `shutdown` resolves, then stops it (draining when configured).
pub async fn run(
    cfg: AgentConfig,
    runtime: RuntimeChoice,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let drain = cfg.drain_on_exit;
    tokio::pin!(shutdown);
    let handle = tokio::select! {
        h = start(cfg, runtime) => h?,
        _ = &mut shutdown => return Ok(()),
    };
    shutdown.await;
    handle.stop(drain).await;
    Ok(())
}
