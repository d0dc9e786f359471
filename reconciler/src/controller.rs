//! The node-level workload controller: a level-triggered, idempotent
//! `plan(desired, observed, now) -> Vec<Action>`. It looks only at what should run on this node
//! and what runs, never at why it was called; time is an argument, never read.
//!
//! Rules:
//! - desired, not observed: `Start`.
//! - observed, not desired: `Stop` (tear down and forget), unless a stop is already in progress.
//! - running and unhealthy: `Terminate` (stop the process, keep the record so the restart policy
//!   and back-off apply to it).
//! - exited: with `Always`, or `OnFailure` and a failed outcome, `Restart` once the back-off has
//!   passed since the exit, else `Wait` until then; with `Never` (or `OnFailure` and exit code 0)
//!   nothing: the record stays as the final state.
//! - starting, stopping, running and not unhealthy: nothing.
//!
//! Actions come out in a fixed order: stops, terminations, restarts, starts, waits; each group
//! sorted by instance id. Stops first free resources before starts use them.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use nexus_schemas::RestartPolicy;
use serde::{Deserialize, Serialize};

use crate::model::InstanceId;
use crate::spec::ReplicaSpec;
use crate::status::{Health, ObservedReplica, ObservedState};

/// A run at least this long resets the back-off (10 minutes).
pub const BACKOFF_RESET_MS: u64 = 10 * 60 * 1000;

/// Exponential back-off between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffPolicy {
    /// Delay before the first restart.
    pub initial_ms: u64,
    /// Upper bound of the delay.
    pub max_ms: u64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial_ms: 1000,
            max_ms: 5 * 60 * 1000,
        }
    }
}

impl BackoffPolicy {
    /// Delay before restart number `step + 1` of a quick-failing instance:
    /// `initial * 2^step`, capped at `max`.
    pub fn delay_ms(&self, step: u32) -> u64 {
        let factor = 1u64.checked_shl(step.min(40)).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The back-off step after a run that lasted `ran_for_ms` ended (runtimes call this when they
    /// restart an instance).
    pub fn next_step(prev_step: u32, ran_for_ms: u64) -> u32 {
        if ran_for_ms >= BACKOFF_RESET_MS {
            0
        } else {
            prev_step.saturating_add(1)
        }
    }
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Start an instance that does not exist on the node.
    Start { spec: ReplicaSpec },
    /// Start an exited instance again (its restart count goes up).
    Restart { spec: ReplicaSpec, reason: String },
    /// Stop the process (SIGTERM, grace, SIGKILL) but keep the record.
    Terminate {
        id: InstanceId,
        grace_ms: u64,
        reason: String,
    },
    /// Stop the process if it runs and remove everything the instance left (cgroups, state, logs).
    Stop {
        id: InstanceId,
        grace_ms: u64,
        reason: String,
    },
    /// Nothing to do before `until_ms` (back-off); come back then.
    Wait {
        id: InstanceId,
        until_ms: u64,
        reason: String,
    },
}

impl Action {
    /// The instance the action is about.
    pub fn id(&self) -> &InstanceId {
        match self {
            Action::Start { spec } | Action::Restart { spec, .. } => &spec.id,
            Action::Terminate { id, .. } | Action::Stop { id, .. } | Action::Wait { id, .. } => id,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Action::Stop { .. } => 0,
            Action::Terminate { .. } => 1,
            Action::Restart { .. } => 2,
            Action::Start { .. } => 3,
            Action::Wait { .. } => 4,
        }
    }
}

/// The earliest `Wait` deadline: when the caller should plan again at the latest.
pub fn next_wake(actions: &[Action]) -> Option<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Wait { until_ms, .. } => Some(*until_ms),
            _ => None,
        })
        .min()
}

/// Plans the actions that bring `observed` to `desired` on one node at time `now_ms`.
pub fn plan(
    desired: &[ReplicaSpec],
    observed: &[ObservedReplica],
    now_ms: u64,
    backoff: &BackoffPolicy,
) -> Vec<Action> {
    let desired: BTreeMap<&InstanceId, &ReplicaSpec> =
        desired.iter().rev().map(|s| (&s.id, s)).collect();
    let observed: BTreeMap<&InstanceId, &ObservedReplica> =
        observed.iter().rev().map(|o| (&o.id, o)).collect();
    let mut actions = Vec::new();

    for (id, o) in &observed {
        if !desired.contains_key(id) && o.state != ObservedState::Stopping {
            actions.push(Action::Stop {
                id: (*id).clone(),
                grace_ms: o.grace_ms,
                reason: "not assigned to this node".into(),
            });
        }
    }

    for (id, spec) in &desired {
        let Some(o) = observed.get(id) else {
            actions.push(Action::Start {
                spec: (*spec).clone(),
            });
            continue;
        };
        match &o.state {
            ObservedState::Starting | ObservedState::Stopping => {}
            ObservedState::Running { health } => {
                if *health == Health::Unhealthy {
                    actions.push(Action::Terminate {
                        id: (*id).clone(),
                        grace_ms: spec.grace_ms,
                        reason: "health check failed".into(),
                    });
                }
            }
            ObservedState::Exited { at_ms, outcome } => {
                let restart = match spec.restart_policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !outcome.is_success(),
                    RestartPolicy::Never => false,
                };
                if !restart {
                    continue;
                }
                let until_ms = at_ms.saturating_add(backoff.delay_ms(o.backoff_step));
                let reason = format!("{outcome}; restart {}", o.restart_count + 1);
                if now_ms >= until_ms {
                    actions.push(Action::Restart {
                        spec: (*spec).clone(),
                        reason,
                    });
                } else {
                    actions.push(Action::Wait {
                        id: (*id).clone(),
                        until_ms,
                        reason: format!("back-off: {reason}"),
                    });
                }
            }
        }
    }
    actions.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.id().cmp(b.id())));
    actions
}
