//! Observed state of instances on a node, as runtimes report it and controllers read it (soft
//! state: never written to the log).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use nexus_schemas::RestartPolicy;
use serde::{Deserialize, Serialize};

use crate::model::InstanceId;

/// Result of the health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// No probe configured.
    NoProbe,
    /// Probe configured, no verdict yet (initial delay, or no success and fewer failures than the
    /// threshold).
    Unknown,
    Healthy,
    /// `failureThreshold` consecutive failures.
    Unhealthy,
}

/// How an instance's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitOutcome {
    /// Exited by itself with this code.
    Exited { code: i32 },
    /// Killed by a signal it did not catch.
    Signaled { signal: i32 },
    /// Killed by the kernel for exceeding its memory limit.
    OomKilled,
    /// Stopped by the agent (failed health check or a stop request).
    Killed,
    /// Could not be started (command not found, bad working directory, ...).
    StartFailed { message: String },
    /// Gone while the agent was not watching, with no exit status left behind.
    Lost,
}

impl ExitOutcome {
    /// Exit code 0.
    pub fn is_success(&self) -> bool {
        matches!(self, ExitOutcome::Exited { code: 0 })
    }
}

impl fmt::Display for ExitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitOutcome::Exited { code } => write!(f, "exited with code {code}"),
            ExitOutcome::Signaled { signal } => write!(f, "killed by signal {signal}"),
            ExitOutcome::OomKilled => f.write_str("killed: out of memory"),
            ExitOutcome::Killed => f.write_str("stopped by the agent"),
            ExitOutcome::StartFailed { message } => write!(f, "failed to start: {message}"),
            ExitOutcome::Lost => f.write_str("lost while the agent was down"),
        }
    }
}

/// Lifecycle state of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservedState {
    /// Being started.
    Starting,
    /// Process alive.
    Running { health: Health },
    /// A stop is in progress.
    Stopping,
    /// Process gone; the record is kept for the restart policy.
    Exited { at_ms: u64, outcome: ExitOutcome },
}

/// One instance as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedReplica {
    pub id: InstanceId,
    pub state: ObservedState,
    /// Host pid of the instance's init (pid 1 of its namespace), while running.
    pub pid: Option<i32>,
    /// When the current (or last) run started, unix milliseconds.
    pub started_at_ms: u64,
    /// Restarts since the instance was first started on this node.
    pub restart_count: u32,
    /// Restarts since the instance last ran for at least [`crate::controller::BACKOFF_RESET_MS`];
    /// drives the exponential back-off.
    pub backoff_step: u32,
    pub restart_policy: RestartPolicy,
    pub grace_ms: u64,
    /// The instance's cgroup in the unified (cgroup2) hierarchy, where eBPF programs attach.
    pub unified_cgroup: Option<PathBuf>,
    /// The instance's own address when it runs in its own network namespace (`None`: it shares
    /// the node's network, or does not run).
    #[serde(default)]
    pub address: Option<IpAddr>,
}

impl ObservedReplica {
    /// Running and, when it has a probe, passing it.
    pub fn ready(&self) -> bool {
        matches!(
            self.state,
            ObservedState::Running {
                health: Health::Healthy | Health::NoProbe
            }
        )
    }
}
