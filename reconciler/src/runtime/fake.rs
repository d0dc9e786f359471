//! An in-memory [`Runtime`] for tests and simulated agents (e.g. 1,000 agents speaking the real
//! protocol with a fake runtime). Time comes from [`FakeRuntime::set_now`]; crashes, health and
//! start failures are injected.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{AdoptReport, LogStream, Runtime, RuntimeError, Started, StopOutcome};
use crate::controller::BackoffPolicy;
use crate::model::InstanceId;
use crate::spec::ReplicaSpec;
use crate::status::{ExitOutcome, Health, ObservedReplica, ObservedState};

#[derive(Default)]
struct State {
    now_ms: u64,
    next_pid: i32,
    replicas: BTreeMap<InstanceId, ObservedReplica>,
    fail_next_start: Option<String>,
    calls: Vec<String>,
}

/// The fake runtime.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the clock used for start and exit times.
    pub fn set_now(&self, now_ms: u64) {
        self.lock().now_ms = now_ms;
    }

    /// Makes a running instance exit with `outcome`.
    pub fn crash(&self, id: &InstanceId, outcome: ExitOutcome) {
        let mut s = self.lock();
        let now = s.now_ms;
        if let Some(r) = s.replicas.get_mut(id) {
            r.state = ObservedState::Exited {
                at_ms: now,
                outcome,
            };
            r.pid = None;
        }
    }

    /// Sets the probe verdict of a running instance.
    pub fn set_health(&self, id: &InstanceId, health: Health) {
        if let Some(r) = self.lock().replicas.get_mut(id)
            && let ObservedState::Running { health: h } = &mut r.state
        {
            *h = health;
        }
    }

    /// The next `start` fails with this message.
    pub fn fail_next_start(&self, message: impl Into<String>) {
        self.lock().fail_next_start = Some(message.into());
    }

    /// Every call so far, e.g. `start default/web#0@0a0a0a0a`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, spec: &ReplicaSpec) -> Result<Started, RuntimeError> {
        spec.validate()?;
        let mut s = self.lock();
        s.calls.push(format!("start {}", spec.id));
        let now = s.now_ms;
        let (restart_count, backoff_step) = match s.replicas.get(&spec.id) {
            Some(r) => match &r.state {
                ObservedState::Exited { at_ms, .. } => (
                    r.restart_count + 1,
                    BackoffPolicy::next_step(r.backoff_step, at_ms.saturating_sub(r.started_at_ms)),
                ),
                _ => return Err(RuntimeError::AlreadyRunning(spec.id.clone())),
            },
            None => (0, 0),
        };
        let (state, pid, result) = match s.fail_next_start.take() {
            Some(message) => (
                ObservedState::Exited {
                    at_ms: now,
                    outcome: ExitOutcome::StartFailed {
                        message: message.clone(),
                    },
                },
                None,
                Err(RuntimeError::StartFailed {
                    id: spec.id.clone(),
                    message,
                }),
            ),
            None => {
                s.next_pid += 1;
                let pid = 1000 + s.next_pid;
                let health = if spec.health.is_some() {
                    Health::Unknown
                } else {
                    Health::NoProbe
                };
                (
                    ObservedState::Running { health },
                    Some(pid),
                    Ok(Started {
                        pid,
                        restart_count,
                        unified_cgroup: None,
                    }),
                )
            }
        };
        s.replicas.insert(
            spec.id.clone(),
            ObservedReplica {
                id: spec.id.clone(),
                state,
                pid,
                started_at_ms: now,
                restart_count,
                backoff_step,
                restart_policy: spec.restart_policy,
                grace_ms: spec.grace_ms,
                unified_cgroup: None,
                address: None,
            },
        );
        result
    }

    fn stop(&self, id: &InstanceId, _grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let mut s = self.lock();
        s.calls.push(format!("stop {id}"));
        let now = s.now_ms;
        let r = s
            .replicas
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        if !matches!(r.state, ObservedState::Running { .. }) {
            return Ok(StopOutcome::NotRunning);
        }
        r.state = ObservedState::Exited {
            at_ms: now,
            outcome: ExitOutcome::Killed,
        };
        r.pid = None;
        Ok(StopOutcome::Graceful)
    }

    fn remove(&self, id: &InstanceId, _grace: Duration) -> Result<(), RuntimeError> {
        let mut s = self.lock();
        s.calls.push(format!("remove {id}"));
        s.replicas.remove(id);
        Ok(())
    }

    fn status(&self) -> Result<Vec<ObservedReplica>, RuntimeError> {
        Ok(self.lock().replicas.values().cloned().collect())
    }

    fn adopt_existing(&self) -> Result<AdoptReport, RuntimeError> {
        Ok(AdoptReport::default())
    }

    fn logs(
        &self,
        id: &InstanceId,
        _stream: LogStream,
        _max_bytes: u64,
    ) -> Result<Vec<u8>, RuntimeError> {
        if self.lock().replicas.contains_key(id) {
            Ok(Vec::new())
        } else {
            Err(RuntimeError::NotFound(id.clone()))
        }
    }
}
