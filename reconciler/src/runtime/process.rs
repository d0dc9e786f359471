//! The `process` runtime driver: each replica is a command run by its own init (see `init`) in
//! new pid/mount/uts/ipc namespaces (plus a network namespace on the node bridge in network mode,
//! see `network`), inside one cgroup per hierarchy under
//! `<cgroup root>/<node>/<namespace>.<name>-<index>-<hash8>`, with its state, logs and scratch
//! directory under `<state dir>/replicas/<same name>`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupLayout, ReplicaCgroup};
use super::init::{self, InitPlan, parse_exit_file};
use super::network::{self, Network, NetworkConfig};
use super::nsexec::{ExecTarget, exec_in};
use super::prober::Prober;
use super::state::{self, ExitRecord, ReplicaDir, ReplicaState, STATE_VERSION};
use super::sys::{self, Wait, now_ms};
use super::{AdoptReport, LogStream, Runtime, RuntimeError, Started, StopOutcome};
use crate::controller::BackoffPolicy;
use crate::model::InstanceId;
use crate::spec::{ReplicaSpec, SpecError};
use crate::status::{ExitOutcome, Health, ObservedReplica, ObservedState};

pub use super::nsexec::ExecOutput;

/// `PATH` given to replicas that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Settings of the process runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// This node's name (a path component of the cgroup root).
    pub node: String,
    /// Where replica state, logs and scratch directories live.
    pub state_dir: PathBuf,
    /// cgroup directory (relative to each hierarchy's mount) holding the nodes. Default `nexus`.
    pub cgroup_root: PathBuf,
    /// Each log file rotates when it reaches this size; one rotated file is kept. Default 10 MiB.
    pub log_cap_bytes: u64,
    /// `pids.max` for replicas whose spec sets none. Default 4096.
    pub default_pids_max: u64,
    /// How long a start may take until the command has exec'd. Default 10 s.
    pub start_timeout: Duration,
    /// Give each replica its own network namespace on this node subnet (see [`network`]);
    /// `None` = replicas share the node's network. Can also be set later with
    /// [`ProcessRuntime::set_network`].
    ///
    /// [`network`]: super::network
    pub network: Option<NetworkConfig>,
}

impl ProcessConfig {
    /// Defaults for node `node` with state under `state_dir`.
    pub fn new(node: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        ProcessConfig {
            node: node.into(),
            state_dir: state_dir.into(),
            cgroup_root: PathBuf::from("nexus"),
            log_cap_bytes: 10 << 20,
            default_pids_max: 4096,
            start_timeout: Duration::from_secs(10),
            network: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Stopping,
    Exited,
}

struct Record {
    state: ReplicaState,
    phase: Phase,
    stop_requested: bool,
    prober: Option<Prober>,
}

/// Runs for every replica start after its cgroup and network namespace exist and before its
/// command runs: the agent attaches network policy here, so a replica is policed from its first
/// packet. An error fails the start (the replica never runs unpoliced).
pub trait StartHook: Send + Sync {
    fn before_exec(
        &self,
        spec: &ReplicaSpec,
        unified_cgroup: Option<&Path>,
        address: Option<std::net::IpAddr>,
    ) -> Result<(), String>;
}

/// The process runtime. Replicas outlive it: dropping the driver leaves them running for the
/// next agent to adopt.
pub struct ProcessRuntime {
    config: ProcessConfig,
    layout: CgroupLayout,
    root: PathBuf,
    boot_id: String,
    oom_adj: String,
    records: Mutex<BTreeMap<InstanceId, Record>>,
    exec_seq: AtomicU64,
    network: RwLock<Option<Network>>,
    start_hook: RwLock<Option<Arc<dyn StartHook>>>,
    /// Exclusive `flock` on `<state dir>/agent.lock`: one driver per state directory.
    _lock: fs::File,
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

fn cstring(what: &'static str, s: impl Into<Vec<u8>>) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::InvalidSpec(SpecError::Nul(what)))
}

fn path_cstring(p: &Path) -> Result<CString, RuntimeError> {
    cstring("path", p.as_os_str().as_encoded_bytes())
}

/// Finds `program` the way a shell would: as given when it has a '/', else in `PATH`.
fn resolve(program: &str, path_env: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    for dir in path_env.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!("command not found: {program}"))
}

impl ProcessRuntime {
    /// Detects cgroups and prepares the node's cgroup root and state directory. Needs root.
    pub fn new(config: ProcessConfig) -> Result<Self, RuntimeError> {
        if !sys::is_root() {
            return Err(RuntimeError::Unsupported(
                "the process runtime needs root".into(),
            ));
        }
        if !valid_component(&config.node) {
            return Err(RuntimeError::Unsupported(format!(
                "node name {:?} is not a valid directory name",
                config.node
            )));
        }
        let layout = CgroupLayout::detect()?;
        let root = config.cgroup_root.join(&config.node);
        layout.ensure_root(&root)?;
        let replicas = config.state_dir.join("replicas");
        fs::create_dir_all(&replicas).map_err(|e| RuntimeError::io("create", &replicas, e))?;
        let lock_path = config.state_dir.join("agent.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| RuntimeError::io("open", &lock_path, e))?;
        // SAFETY: flock on an fd we own. The fd is close-on-exec and every replica init closes
        // inherited fds, so the lock dies with this driver.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&lock),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(RuntimeError::StateDirBusy(config.state_dir.clone()));
        }
        let network = match &config.network {
            Some(n) => Some(Network::setup(n.clone())?),
            None => None,
        };
        let oom_adj = fs::read_to_string("/proc/self/oom_score_adj")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(ProcessRuntime {
            config,
            layout,
            root,
            boot_id: sys::boot_id(),
            oom_adj: if oom_adj.is_empty() {
                "0".into()
            } else {
                oom_adj
            },
            records: Mutex::new(BTreeMap::new()),
            exec_seq: AtomicU64::new(0),
            network: RwLock::new(network),
            start_hook: RwLock::new(None),
            _lock: lock,
        })
    }

    /// Switches network mode on (each replica started from now on gets its own network
    /// namespace on `config`'s subnet) and sets up the node bridge. Replicas already running keep
    /// their network. Idempotent.
    /// Installs the hook every start runs before the command (see [`StartHook`]).
    pub fn set_start_hook(&self, hook: Arc<dyn StartHook>) {
        *self.start_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    pub fn set_network(&self, config: NetworkConfig) -> Result<(), RuntimeError> {
        if self.network().is_some_and(|n| n.config == config) {
            return Ok(());
        }
        let net = Network::setup(config)?;
        *self.network.write().unwrap_or_else(|e| e.into_inner()) = Some(net);
        Ok(())
    }

    /// The node network, when replicas get their own network namespaces.
    pub fn network(&self) -> Option<Network> {
        self.network
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops using network mode and deletes the node bridge (after the node was drained).
    pub fn teardown_network(&self) -> Result<(), RuntimeError> {
        let net = self
            .network
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match net {
            Some(n) => n.teardown(),
            None => Ok(()),
        }
    }

    /// Removes the node's (empty) cgroup directories and any parent directories under the
    /// hierarchies' mounts that are left empty, after the node was drained. Non-empty ones stay.
    pub fn remove_cgroup_root(&self) {
        let l = &self.layout;
        for h in [&l.memory, &l.cpu, &l.pids, &l.unified]
            .into_iter()
            .flatten()
        {
            let mut dir = h.join(&self.root);
            while dir != *h && fs::remove_dir(&dir).is_ok() {
                if !dir.pop() {
                    break;
                }
            }
        }
    }

    /// The detected cgroup layout.
    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The cgroup directories of an instance (whether or not it runs).
    pub fn cgroup(&self, id: &InstanceId) -> ReplicaCgroup {
        self.layout.replica(&self.root, &id.dir_name())
    }

    /// The current and rotated log file of a stream.
    pub fn log_paths(&self, id: &InstanceId, stream: LogStream) -> (PathBuf, PathBuf) {
        self.dir(id).log(stream)
    }

    /// The default working directory of an instance.
    pub fn scratch_dir(&self, id: &InstanceId) -> PathBuf {
        self.dir(id).work()
    }

    /// Runs a command inside a running instance (its namespaces and cgroups), like an exec probe.
    pub fn exec(
        &self,
        id: &InstanceId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let target = {
            let records = self.lock();
            let r = records
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            if r.phase != Phase::Running {
                return Err(RuntimeError::NotRunning(id.clone()));
            }
            let n = self.exec_seq.fetch_add(1, Ordering::Relaxed);
            self.exec_target(&r.state, &format!("exec-{n}.out"))
        };
        exec_in(&target, argv, timeout)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<InstanceId, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dir(&self, id: &InstanceId) -> ReplicaDir {
        ReplicaDir::new(&self.config.state_dir, &id.dir_name())
    }

    fn workdir(&self, spec: &ReplicaSpec) -> PathBuf {
        spec.working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir(&spec.id).work())
    }

    /// The replica's environment: its own variables over nexus defaults.
    fn env(&self, spec: &ReplicaSpec) -> BTreeMap<String, String> {
        let id = &spec.id;
        let mut env = BTreeMap::from([
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            (
                "HOME".to_string(),
                self.workdir(spec).to_string_lossy().into_owned(),
            ),
            ("HOSTNAME".to_string(), id.hostname()),
            (
                "NEXUS_NAMESPACE".to_string(),
                id.replica.workload.namespace.clone(),
            ),
            (
                "NEXUS_WORKLOAD".to_string(),
                id.replica.workload.name.clone(),
            ),
            ("NEXUS_REPLICA".to_string(), id.replica.index.to_string()),
            ("NEXUS_INSTANCE".to_string(), id.dir_name()),
            ("NEXUS_NODE".to_string(), self.config.node.clone()),
        ]);
        env.extend(spec.env.clone());
        env
    }

    fn exec_target(&self, st: &ReplicaState, scratch: &str) -> ExecTarget {
        ExecTarget {
            id: st.spec.id.clone(),
            pid: st.pid.unwrap_or(0),
            start_ticks: st.pid_start_ticks,
            procs_files: self.cgroup(&st.spec.id).procs_files(),
            env: self.env(&st.spec),
            workdir: self.workdir(&st.spec),
            scratch: self.dir(&st.spec.id).root.join(scratch),
            address: st.address,
        }
    }

    fn prober(&self, st: &ReplicaState) -> Option<Prober> {
        let probe = st.spec.health.clone()?;
        Some(Prober::spawn(
            probe,
            st.started_at_ms,
            self.exec_target(st, "probe.out"),
        ))
    }

    /// Waits until the init is gone (reaping it when it is our child).
    fn wait_gone(pid: i32, ticks: u64, timeout: Duration) -> (bool, Option<i32>) {
        let deadline = Instant::now() + timeout;
        loop {
            match sys::try_wait(pid) {
                Wait::Exited(st) => return (true, Some(st)),
                Wait::NotChild if !sys::alive(pid, ticks) => return (true, None),
                _ => {}
            }
            if Instant::now() >= deadline {
                return (false, None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// In network mode the replica gets its own `/etc/hosts` (localhost and its host name at its
    /// address) and `/etc/resolv.conf`: the host's name servers are not reachable from replica
    /// subnets (no NAT), so it lists none and lookups of outside names fail at once instead of
    /// timing out. Returns the (source, target) bind mounts.
    fn etc_files(
        &self,
        spec: &ReplicaSpec,
        address: &std::net::Ipv4Addr,
    ) -> Result<Vec<(CString, CString)>, RuntimeError> {
        let etc = self.dir(&spec.id).root.join("etc");
        fs::create_dir_all(&etc).map_err(|e| RuntimeError::io("create", &etc, e))?;
        let hosts = etc.join("hosts");
        let text = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{}\n",
            spec.id.hostname()
        );
        fs::write(&hosts, text).map_err(|e| RuntimeError::io("write", &hosts, e))?;
        let resolv = etc.join("resolv.conf");
        fs::write(
            &resolv,
            "# nexus: replicas in their own network namespace have no name server yet\noptions timeout:1 attempts:1\n",
        )
        .map_err(|e| RuntimeError::io("write", &resolv, e))?;
        let mut binds = Vec::new();
        for (src, dst) in [(hosts, "/etc/hosts"), (resolv, "/etc/resolv.conf")] {
            if Path::new(dst).exists() {
                binds.push((path_cstring(&src)?, cstring("path", dst)?));
            }
        }
        Ok(binds)
    }

    /// Everything from creating directories to the exec of the command.
    fn launch(
        &self,
        spec: &ReplicaSpec,
        restart_count: u32,
        backoff_step: u32,
        host: Option<(Network, u8)>,
    ) -> Result<ReplicaState, RuntimeError> {
        let id = &spec.id;
        let name = id.dir_name();
        let dir = self.dir(id);
        dir.create()?;
        let _ = fs::remove_file(dir.exit());
        let workdir = self.workdir(spec);
        let env = self.env(spec);
        let path_env = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        let program =
            resolve(&spec.command[0], path_env).map_err(|message| RuntimeError::StartFailed {
                id: id.clone(),
                message,
            })?;

        let (stdout, stdout_old) = dir.log(LogStream::Stdout);
        let (stderr, stderr_old) = dir.log(LogStream::Stderr);
        let plan = InitPlan {
            program: path_cstring(&program)?,
            argv: spec
                .command
                .iter()
                .map(|a| cstring("command", a.as_str()))
                .collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstring("env", format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            workdir: path_cstring(&workdir)?,
            hostname: cstring("hostname", id.hostname())?,
            stdout: path_cstring(&stdout)?,
            stdout_old: path_cstring(&stdout_old)?,
            stderr: path_cstring(&stderr)?,
            stderr_old: path_cstring(&stderr_old)?,
            exit_tmp: path_cstring(&dir.exit_tmp())?,
            exit_file: path_cstring(&dir.exit())?,
            log_cap: self.config.log_cap_bytes,
            child_oom_adj: cstring("oom_score_adj", self.oom_adj.as_str())?,
            new_net: host.is_some(),
            binds: match &host {
                Some((net, h)) => self.etc_files(spec, &net.config.host(*h))?,
                None => Vec::new(),
            },
        };

        let cg = self.layout.replica(&self.root, &name);
        if cg.exists() {
            cg.remove()?; // leftovers of an earlier run
        }
        cg.create(&spec.limits, self.config.default_pids_max)?;
        let spawned = match init::spawn(&plan) {
            Ok(s) => s,
            Err(e) => {
                let _ = cg.remove();
                return Err(RuntimeError::Sys {
                    op: "clone replica init",
                    source: e,
                });
            }
        };
        let pid = spawned.pid;
        let give_up = |spawned: init::Spawned| {
            spawned.abort();
            if !Self::wait_gone(pid, 0, Duration::from_secs(2)).0 {
                sys::kill_pid(pid);
                Self::wait_gone(pid, 0, Duration::from_secs(2));
            }
            let _ = cg.remove();
        };
        if let Err(e) = cg.add(pid) {
            give_up(spawned);
            return Err(e);
        }
        let address = match &host {
            Some((net, h)) => match net.attach(pid, *h) {
                Ok(a) => Some(a),
                Err(e) => {
                    give_up(spawned);
                    return Err(RuntimeError::StartFailed {
                        id: id.clone(),
                        message: format!("network: {e}"),
                    });
                }
            },
            None => None,
        };
        let hook = self
            .start_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook
            && let Err(message) = hook.before_exec(
                spec,
                cg.unified.as_deref(),
                address.map(std::net::IpAddr::V4),
            )
        {
            give_up(spawned);
            return Err(RuntimeError::StartFailed {
                id: id.clone(),
                message,
            });
        }
        let state = ReplicaState {
            version: STATE_VERSION,
            spec: spec.clone(),
            pid: Some(pid),
            pid_start_ticks: sys::proc_stat(pid).map(|s| s.1).unwrap_or(0),
            boot_id: self.boot_id.clone(),
            started_at_ms: now_ms(),
            restart_count,
            backoff_step,
            exit: None,
            address,
        };
        if let Err(e) = dir.save(&state) {
            give_up(spawned);
            return Err(e);
        }
        if let Err(failure) = spawned.release(self.config.start_timeout) {
            // The init exits on its own after a failure; kill it if it does not.
            if !Self::wait_gone(pid, state.pid_start_ticks, Duration::from_secs(2)).0 {
                let _ = sys::signal(pid, state.pid_start_ticks, libc::SIGKILL);
                Self::wait_gone(pid, state.pid_start_ticks, Duration::from_secs(2));
            }
            let _ = cg.remove();
            return Err(RuntimeError::StartFailed {
                id: id.clone(),
                message: failure.to_string(),
            });
        }
        Ok(state)
    }

    /// Records how a run ended, removes its cgroups and saves the state.
    fn finalize(&self, r: &mut Record, wait_status: Option<i32>) {
        let id = r.state.spec.id.clone();
        let cg = self.cgroup(&id);
        let dir = self.dir(&id);
        let oom = cg.oom_kills() > 0;
        let exit_file = fs::read_to_string(dir.exit())
            .ok()
            .and_then(|t| parse_exit_file(&t));
        let at_ms = exit_file.map(|e| e.2).unwrap_or_else(now_ms);
        let (code, signal) = match (exit_file, wait_status) {
            (Some((c, s, _)), _) => (c, s),
            (None, Some(st)) => sys::decode_status(st),
            (None, None) => (None, None),
        };
        let outcome = if r.stop_requested {
            ExitOutcome::Killed
        } else if oom {
            ExitOutcome::OomKilled
        } else if let Some(code) = code {
            ExitOutcome::Exited { code }
        } else if let Some(signal) = signal {
            ExitOutcome::Signaled { signal }
        } else {
            ExitOutcome::Lost
        };
        let _ = cg.remove();
        r.state.exit = Some(ExitRecord { at_ms, outcome });
        r.state.pid = None;
        r.phase = Phase::Exited;
        r.prober = None;
        r.stop_requested = false;
        let _ = dir.save(&r.state);
    }

    fn observe(&self, r: &Record) -> ObservedReplica {
        let st = &r.state;
        let state = match r.phase {
            Phase::Starting => ObservedState::Starting,
            Phase::Stopping => ObservedState::Stopping,
            Phase::Running => ObservedState::Running {
                health: match (&r.prober, &st.spec.health) {
                    (Some(p), _) => p.health(),
                    (None, Some(_)) => Health::Unknown,
                    (None, None) => Health::NoProbe,
                },
            },
            Phase::Exited => {
                let e = st.exit.clone().unwrap_or(ExitRecord {
                    at_ms: st.started_at_ms,
                    outcome: ExitOutcome::Lost,
                });
                ObservedState::Exited {
                    at_ms: e.at_ms,
                    outcome: e.outcome,
                }
            }
        };
        let running = matches!(r.phase, Phase::Running | Phase::Stopping);
        ObservedReplica {
            id: st.spec.id.clone(),
            state,
            pid: if running { st.pid } else { None },
            started_at_ms: st.started_at_ms,
            restart_count: st.restart_count,
            backoff_step: st.backoff_step,
            restart_policy: st.spec.restart_policy,
            grace_ms: st.spec.grace_ms,
            unified_cgroup: if running {
                self.cgroup(&st.spec.id).unified
            } else {
                None
            },
            address: if running {
                st.address.map(std::net::IpAddr::V4)
            } else {
                None
            },
        }
    }
}

impl Runtime for ProcessRuntime {
    fn start(&self, spec: &ReplicaSpec) -> Result<Started, RuntimeError> {
        spec.validate()?;
        if spec.runtime != nexus_schemas::Runtime::Process {
            return Err(RuntimeError::Unsupported(
                "the process driver runs `runtime: process` workloads only".into(),
            ));
        }
        let id = spec.id.clone();
        let net = self.network();
        let (restart_count, backoff_step, host) = {
            let mut records = self.lock();
            // In network mode, the instance keeps its address across restarts; a new one gets
            // the lowest free host number (reserved in its record while the lock is held).
            let host = match &net {
                None => None,
                Some(n) => {
                    let kept = records
                        .get(&id)
                        .and_then(|r| r.state.address)
                        .and_then(|a| n.config.host_of(a));
                    match kept {
                        Some(h) => Some(h),
                        None => {
                            let used: BTreeSet<u8> = records
                                .values()
                                .filter_map(|r| r.state.address)
                                .filter_map(|a| n.config.host_of(a))
                                .collect();
                            Some(network::allocate(&used).ok_or_else(|| {
                                RuntimeError::StartFailed {
                                    id: id.clone(),
                                    message: format!(
                                        "network: no free address left in {}",
                                        n.config.cidr()
                                    ),
                                }
                            })?)
                        }
                    }
                }
            };
            let address = match (&net, host) {
                (Some(n), Some(h)) => Some(n.config.host(h)),
                _ => None,
            };
            let (restart_count, backoff_step) = match records.get_mut(&id) {
                Some(r) if r.phase != Phase::Exited => {
                    return Err(RuntimeError::AlreadyRunning(id));
                }
                Some(r) => {
                    r.phase = Phase::Starting;
                    r.state.address = address;
                    let ran_for = r
                        .state
                        .exit
                        .as_ref()
                        .map(|e| e.at_ms.saturating_sub(r.state.started_at_ms))
                        .unwrap_or(0);
                    (
                        r.state.restart_count.saturating_add(1),
                        BackoffPolicy::next_step(r.state.backoff_step, ran_for),
                    )
                }
                None => {
                    let placeholder = ReplicaState {
                        version: STATE_VERSION,
                        spec: spec.clone(),
                        pid: None,
                        pid_start_ticks: 0,
                        boot_id: self.boot_id.clone(),
                        started_at_ms: now_ms(),
                        restart_count: 0,
                        backoff_step: 0,
                        exit: None,
                        address,
                    };
                    records.insert(
                        id.clone(),
                        Record {
                            state: placeholder,
                            phase: Phase::Starting,
                            stop_requested: false,
                            prober: None,
                        },
                    );
                    (0, 0)
                }
            };
            (restart_count, backoff_step, host)
        };
        let result = self.launch(spec, restart_count, backoff_step, net.zip(host));
        let mut records = self.lock();
        let Some(r) = records.get_mut(&id) else {
            return Err(RuntimeError::NotFound(id));
        };
        match result {
            Ok(state) => {
                r.prober = self.prober(&state);
                r.state = state;
                r.phase = Phase::Running;
                Ok(Started {
                    pid: r.state.pid.unwrap_or(0),
                    restart_count,
                    unified_cgroup: self.cgroup(&id).unified,
                })
            }
            Err(e) => {
                let message = match &e {
                    RuntimeError::StartFailed { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                r.state = ReplicaState {
                    spec: spec.clone(),
                    pid: None,
                    started_at_ms: now_ms(),
                    restart_count,
                    backoff_step,
                    exit: Some(ExitRecord {
                        at_ms: now_ms(),
                        outcome: ExitOutcome::StartFailed { message },
                    }),
                    ..r.state.clone()
                };
                r.phase = Phase::Exited;
                let _ = self.dir(&id).save(&r.state);
                Err(e)
            }
        }
    }

    fn stop(&self, id: &InstanceId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let (pid, ticks) = {
            let mut records = self.lock();
            let r = records
                .get_mut(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
            match r.phase {
                Phase::Exited => return Ok(StopOutcome::NotRunning),
                Phase::Starting | Phase::Stopping => {
                    return Err(RuntimeError::NotRunning(id.clone()));
                }
                Phase::Running => {}
            }
            r.phase = Phase::Stopping;
            r.stop_requested = true;
            r.prober = None;
            (r.state.pid.unwrap_or(0), r.state.pid_start_ticks)
        };
        let _ = sys::signal(pid, ticks, libc::SIGTERM);
        let (mut gone, mut status) = Self::wait_gone(pid, ticks, grace);
        let outcome = if gone {
            StopOutcome::Graceful
        } else {
            StopOutcome::Killed
        };
        if !gone {
            let _ = sys::signal(pid, ticks, libc::SIGKILL);
            self.cgroup(id).kill_all(Duration::from_secs(1));
            (gone, status) = Self::wait_gone(pid, ticks, Duration::from_secs(5));
        }
        let mut records = self.lock();
        if let Some(r) = records.get_mut(id) {
            self.finalize(r, status);
        }
        if !gone {
            return Err(RuntimeError::Sys {
                op: "kill replica",
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
        Ok(outcome)
    }

    fn remove(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError> {
        let running = self.lock().get(id).map(|r| r.phase == Phase::Running);
        if running == Some(true) {
            self.stop(id, grace)?;
        }
        let address = self.lock().remove(id).and_then(|r| r.state.address);
        if let (Some(net), Some(a)) = (self.network(), address)
            && let Some(h) = net.config.host_of(a)
        {
            net.detach(h);
        }
        self.cgroup(id).remove()?;
        self.dir(id).remove()
    }

    fn status(&self) -> Result<Vec<ObservedReplica>, RuntimeError> {
        let mut records = self.lock();
        for r in records.values_mut() {
            if r.phase != Phase::Running {
                continue;
            }
            let (pid, ticks) = (r.state.pid.unwrap_or(0), r.state.pid_start_ticks);
            let gone = match sys::try_wait(pid) {
                Wait::Exited(st) => Some(Some(st)),
                Wait::Running => None,
                Wait::NotChild => (!sys::alive(pid, ticks)).then_some(None),
            };
            if let Some(st) = gone {
                self.finalize(r, st);
            }
        }
        Ok(records.values().map(|r| self.observe(r)).collect())
    }

    fn adopt_existing(&self) -> Result<AdoptReport, RuntimeError> {
        let mut report = AdoptReport::default();
        let mut names: BTreeSet<String> = self.layout.list(&self.root);
        names.extend(state::list(&self.config.state_dir));
        let mut records = self.lock();
        let managed: BTreeSet<String> = records.keys().map(InstanceId::dir_name).collect();
        for name in names {
            if managed.contains(&name) {
                continue;
            }
            let dir = ReplicaDir::new(&self.config.state_dir, &name);
            let cg = self.layout.replica(&self.root, &name);
            let loaded = dir.load().ok().filter(|s| s.spec.id.dir_name() == name);
            let Some(mut st) = loaded else {
                report.killed_processes += cg.remove()?;
                dir.remove()?;
                report.removed.push(name);
                continue;
            };
            let same_boot = st.boot_id == self.boot_id;
            let alive = st
                .pid
                .is_some_and(|pid| same_boot && sys::alive(pid, st.pid_start_ticks));
            let in_cgroup = st.pid.is_some_and(|pid| cg.procs().contains(&pid));
            let id = st.spec.id.clone();
            if st.exit.is_none() && alive && in_cgroup {
                let prober = self.prober(&st);
                records.insert(
                    id.clone(),
                    Record {
                        state: st,
                        phase: Phase::Running,
                        stop_requested: false,
                        prober,
                    },
                );
                report.adopted.push(id);
                continue;
            }
            if let Some(pid) = st.pid
                && !alive
            {
                let _ = sys::try_wait(pid); // reap it if it happens to be our child
            }
            if alive && let Some(pid) = st.pid {
                // Ours by identity but not where it belongs: it must not linger.
                if sys::signal(pid, st.pid_start_ticks, libc::SIGKILL).unwrap_or(false) {
                    report.killed_processes += 1;
                }
            }
            report.killed_processes += cg.remove()?;
            if st.exit.is_none() {
                let exit_file = fs::read_to_string(dir.exit())
                    .ok()
                    .and_then(|t| parse_exit_file(&t));
                let (at_ms, outcome) = match exit_file {
                    Some((Some(code), _, at)) => (at, ExitOutcome::Exited { code }),
                    Some((None, Some(signal), at)) => (at, ExitOutcome::Signaled { signal }),
                    _ => (now_ms(), ExitOutcome::Lost),
                };
                st.exit = Some(ExitRecord { at_ms, outcome });
                st.pid = None;
                dir.save(&st)?;
            }
            records.insert(
                id.clone(),
                Record {
                    state: st,
                    phase: Phase::Exited,
                    stop_requested: false,
                    prober: None,
                },
            );
            report.exited.push(id);
        }
        if let Some(net) = self.network() {
            // veths of replicas that are gone (normally the kernel removed them already).
            let keep: BTreeSet<u8> = records
                .values()
                .filter(|r| r.phase == Phase::Running)
                .filter_map(|r| r.state.address)
                .filter_map(|a| net.config.host_of(a))
                .collect();
            net.remove_unknown(&keep);
        }
        Ok(report)
    }

    fn logs(
        &self,
        id: &InstanceId,
        stream: LogStream,
        max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError> {
        let dir = self.dir(id);
        if !dir.root.exists() {
            return Err(RuntimeError::NotFound(id.clone()));
        }
        let (current, old) = dir.log(stream);
        state::tail(&old, &current, max_bytes)
    }

    fn log_file(&self, id: &InstanceId, stream: LogStream) -> Option<PathBuf> {
        Some(self.dir(id).log(stream).0)
    }
}
