//! The node agent's local loop, without the network: one [`reconcile`] step (observe the runtime,
//! plan, act), the last desired set kept on disk so replicas keep being healed while the control
//! plane is unreachable, and node capacity detection for the join/heartbeat messages.
//!
//! The network side (wired elsewhere) feeds [`reconcile`] with the `ReplicaSpec`s assigned to this
//! node (after the f+1 agreement check) and reports `ReconcileReport::observed` upstream.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::controller::{Action, BackoffPolicy, next_wake, plan};
use crate::model::InstanceId;
use crate::runtime::{Runtime, RuntimeError};
use crate::scheduler::Capacity;
use crate::spec::ReplicaSpec;
use crate::status::ObservedReplica;

/// What one reconcile step did.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// The actions planned (and attempted).
    pub actions: Vec<Action>,
    /// What failed (the instance, when the failure is about one), with the runtime's message.
    pub errors: Vec<(Option<InstanceId>, String)>,
    /// Call again by then at the latest (back-off deadlines).
    pub next_wake_ms: Option<u64>,
    /// Status after the actions.
    pub observed: Vec<ObservedReplica>,
}

/// One level-triggered step: reads the runtime's status, plans against `desired`, executes the
/// plan. Stops and terminations run in parallel (each may wait its grace period), then restarts
/// and starts run in order.
pub fn reconcile(
    runtime: &dyn Runtime,
    desired: &[ReplicaSpec],
    now_ms: u64,
    backoff: &BackoffPolicy,
) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    let observed = match runtime.status() {
        Ok(o) => o,
        Err(e) => {
            report.errors.push((None, format!("status: {e}")));
            return report;
        }
    };
    let actions = plan(desired, &observed, now_ms, backoff);
    let stopping: Vec<&Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Stop { .. } | Action::Terminate { .. }))
        .collect();
    let results: Vec<(InstanceId, Result<(), RuntimeError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = stopping
            .iter()
            .map(|a| {
                s.spawn(move || {
                    let r = match a {
                        Action::Stop { id, grace_ms, .. } => {
                            runtime.remove(id, Duration::from_millis(*grace_ms))
                        }
                        Action::Terminate { id, grace_ms, .. } => {
                            runtime.stop(id, Duration::from_millis(*grace_ms)).map(drop)
                        }
                        _ => Ok(()),
                    };
                    (a.id().clone(), r)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (id, r) in results {
        if let Err(e) = r {
            report.errors.push((Some(id), e.to_string()));
        }
    }
    for a in &actions {
        if let Action::Start { spec } | Action::Restart { spec, .. } = a
            && let Err(e) = runtime.start(spec)
        {
            report.errors.push((Some(spec.id.clone()), e.to_string()));
        }
    }
    report.next_wake_ms = next_wake(&actions);
    report.actions = actions;
    match runtime.status() {
        Ok(o) => report.observed = o,
        Err(e) => report.errors.push((None, format!("status: {e}"))),
    }
    report
}

/// The desired set as last received from the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSet {
    /// Opaque version from the control plane (e.g. the log height the assignment came from).
    pub version: u64,
    pub replicas: Vec<ReplicaSpec>,
}

impl DesiredSet {
    /// Writes the set atomically.
    pub fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| RuntimeError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(|e| RuntimeError::io("write", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename", path, e))
    }

    /// Reads the set; a missing file is an empty set, a corrupt one an error.
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RuntimeError::State {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DesiredSet::default()),
            Err(e) => Err(RuntimeError::io("read", path, e)),
        }
    }
}

/// This machine's capacity: online CPUs, MemTotal, and GPUs listed by `nvidia-smi -L` when it
/// exists.
pub fn detect_capacity() -> Capacity {
    use nexus_schemas::quantity::{Bytes, Millicores};
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_total_kib(&t))
        .unwrap_or(0);
    let gpus = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count() as u32
        })
        .unwrap_or(0);
    Capacity {
        cpu: Millicores(cpus * 1000),
        memory: Bytes(mem_kib.saturating_mul(1024)),
        gpus,
    }
}

fn parse_meminfo_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaId, WorkloadKey};
    use crate::runtime::fake::FakeRuntime;
    use crate::status::{ExitOutcome, Health, ObservedState};
    use nexus_schemas::{ContentHash, RestartPolicy};

    fn spec(name: &str) -> ReplicaSpec {
        ReplicaSpec {
            id: InstanceId::new(
                ReplicaId::new(WorkloadKey::new("default", name), 0),
                ContentHash([1; 32]),
            ),
            generation: 1,
            runtime: Default::default(),
            command: vec!["x".into()],
            env: Default::default(),
            working_dir: None,
            limits: Default::default(),
            health: None,
            restart_policy: RestartPolicy::Always,
            grace_ms: 100,
        }
    }

    #[test]
    fn self_heals_with_backoff_and_converges() {
        let rt = FakeRuntime::new();
        let bo = BackoffPolicy {
            initial_ms: 1000,
            max_ms: 60_000,
        };
        let (a, b) = (spec("a"), spec("b"));
        rt.set_now(0);
        let r = reconcile(&rt, &[a.clone(), b.clone()], 0, &bo);
        assert!(r.errors.is_empty());
        assert_eq!(r.observed.len(), 2);
        assert!(
            reconcile(&rt, &[a.clone(), b.clone()], 10, &bo)
                .actions
                .is_empty(),
            "idempotent"
        );

        rt.set_now(100);
        rt.crash(&a.id, ExitOutcome::Signaled { signal: 9 });
        let r = reconcile(&rt, &[a.clone(), b.clone()], 200, &bo);
        assert_eq!(r.next_wake_ms, Some(1100));
        let r = reconcile(&rt, &[a.clone(), b.clone()], 1100, &bo);
        assert!(
            matches!(r.actions.as_slice(), [Action::Restart { .. }]),
            "{:?}",
            r.actions
        );
        let ra = r.observed.iter().find(|o| o.id == a.id).unwrap();
        assert_eq!((ra.restart_count, ra.backoff_step), (1, 1));

        // Unhealthy: terminated, then restarted after the back-off.
        rt.set_now(2000);
        rt.set_health(&b.id, Health::Unhealthy);
        let r = reconcile(&rt, &[a.clone(), b.clone()], 2000, &bo);
        assert!(matches!(r.actions.as_slice(), [Action::Terminate { .. }]));
        let rb = r.observed.iter().find(|o| o.id == b.id).unwrap();
        assert!(matches!(
            rb.state,
            ObservedState::Exited {
                outcome: ExitOutcome::Killed,
                ..
            }
        ));
        assert_eq!(
            reconcile(&rt, &[a.clone(), b.clone()], 2999, &bo).next_wake_ms,
            Some(3000)
        );
        reconcile(&rt, &[a.clone(), b.clone()], 3000, &bo);

        // Desired set shrinks: b is removed.
        let r = reconcile(&rt, std::slice::from_ref(&a), 4000, &bo);
        assert!(matches!(r.actions.as_slice(), [Action::Stop { .. }]));
        assert_eq!(r.observed.len(), 1);
        assert!(rt.calls().contains(&format!("remove {}", b.id)));
    }

    #[test]
    fn start_failures_are_reported_and_retried() {
        let rt = FakeRuntime::new();
        let bo = BackoffPolicy::default();
        rt.fail_next_start("command not found: x");
        let r = reconcile(&rt, &[spec("a")], 0, &bo);
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].1.contains("command not found"));
        assert_eq!(r.next_wake_ms, None);
        let r = reconcile(&rt, &[spec("a")], 10, &bo);
        assert_eq!(r.next_wake_ms, Some(1000));
        let r = reconcile(&rt, &[spec("a")], 1000, &bo);
        assert!(r.errors.is_empty());
        assert!(r.observed[0].ready());
    }

    #[test]
    fn desired_set_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("desired.json");
        assert_eq!(DesiredSet::load(&p).unwrap(), DesiredSet::default());
        let set = DesiredSet {
            version: 9,
            replicas: vec![spec("a")],
        };
        set.save(&p).unwrap();
        assert_eq!(DesiredSet::load(&p).unwrap(), set);
        fs::write(&p, b"[").unwrap();
        assert!(DesiredSet::load(&p).is_err());
    }

    #[test]
    fn capacity() {
        assert_eq!(
            parse_meminfo_total_kib("MemTotal:       24684500 kB\nMemFree: 1 kB\n"),
            Some(24_684_500)
        );
        assert_eq!(parse_meminfo_total_kib("nothing"), None);
        let c = detect_capacity();
        assert!(c.cpu.0 >= 1000 && c.memory.0 > 0);
    }
}
