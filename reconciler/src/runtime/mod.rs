//! The runtime seam between the node agent and whatever runs replicas: the [`Runtime`] trait, its
//! typed errors and results, and its drivers: [`process`] (cgroups + namespaces, real processes)
//! and [`fake`] (in memory, for simulated agents and tests).

pub mod cgroup;
pub mod fake;
mod init;
pub mod network;
mod nsexec;
mod prober;
pub mod process;
mod state;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::InstanceId;
use crate::spec::ReplicaSpec;
use crate::status::ObservedReplica;

pub use cgroup::{CgroupLayout, CgroupMode};
pub use network::NetworkConfig;
pub use process::{ProcessConfig, ProcessRuntime, StartHook};

/// Errors from a runtime driver.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the process runtime is not available here: {0}")]
    Unsupported(String),
    #[error("invalid replica spec: {0}")]
    InvalidSpec(#[from] crate::spec::SpecError),
    #[error("{0} is already running")]
    AlreadyRunning(InstanceId),
    #[error("{0} is not known to this runtime")]
    NotFound(InstanceId),
    #[error("{0} is not running")]
    NotRunning(InstanceId),
    #[error("could not start {id}: {message}")]
    StartFailed { id: InstanceId, message: String },
    #[error("state directory {0} is in use by another agent")]
    StateDirBusy(PathBuf),
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

impl RuntimeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What `start` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Host pid of the instance's init.
    pub pid: i32,
    pub restart_count: u32,
    /// The instance's cgroup in the unified hierarchy, if the host has one.
    pub unified_cgroup: Option<PathBuf>,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopOutcome {
    /// Exited within the grace period after SIGTERM.
    Graceful,
    /// Ignored SIGTERM for the grace period and was killed.
    Killed,
    /// Was not running.
    NotRunning,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// The result of [`Runtime::adopt_existing`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptReport {
    /// Still running, state known: now managed again.
    pub adopted: Vec<InstanceId>,
    /// Known, but exited while the agent was away: kept as exited records.
    pub exited: Vec<InstanceId>,
    /// cgroups or state that no valid record explains: their processes were killed and the
    /// leftovers removed (directory names).
    pub removed: Vec<String>,
    /// Number of processes killed while cleaning up.
    pub killed_processes: usize,
}

/// A runtime driver. Methods take `&self` so one driver can be shared by the agent's tasks; a
/// stop blocks for up to its grace period, so callers run stops in parallel when they have many.
pub trait Runtime: Send + Sync {
    /// Starts `spec`, or starts an exited instance with the same id again (its restart count goes
    /// up). Fails with [`RuntimeError::AlreadyRunning`] when it runs: never two copies.
    fn start(&self, spec: &ReplicaSpec) -> Result<Started, RuntimeError>;

    /// SIGTERM, up to `grace` to exit, then SIGKILL. The record stays (as exited) so the restart
    /// policy can apply.
    fn stop(&self, id: &InstanceId, grace: Duration) -> Result<StopOutcome, RuntimeError>;

    /// Stops the instance if it runs and removes everything it left: cgroups, state and logs.
    /// Removing an unknown instance is not an error.
    fn remove(&self, id: &InstanceId, grace: Duration) -> Result<(), RuntimeError>;

    /// Every instance the runtime knows, with exits detected since the last call.
    fn status(&self) -> Result<Vec<ObservedReplica>, RuntimeError>;

    /// After an agent restart: takes over running instances it can identify and removes everything
    /// else under its cgroup root and state directory.
    fn adopt_existing(&self) -> Result<AdoptReport, RuntimeError>;

    /// The last `max_bytes` of a stream (rotated file first, then the current one).
    fn logs(
        &self,
        id: &InstanceId,
        stream: LogStream,
        max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError>;

    /// The file a stream is being written to, for following it (`nexus logs -f`); `None` when
    /// the runtime keeps no files.
    fn log_file(&self, id: &InstanceId, stream: LogStream) -> Option<PathBuf> {
        let _ = (id, stream);
        None
    }
}
