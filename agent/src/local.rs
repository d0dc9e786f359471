//! The agent's local loop: one `reconcile` step (observe, plan, act) on every new agreed set,
//! every tick (crashes and probe results show up here) and at back-off deadlines, whether or not
//! any replica is reachable. After each step the instance reports are published; sessions send a
//! heartbeat when they changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nexus_api::agent::{InstanceReport, Phase};
use nexus_reconciler::agent::reconcile;
use nexus_reconciler::controller::BackoffPolicy;
use nexus_reconciler::model::InstanceId;
use nexus_reconciler::status::{Health, ObservedReplica, ObservedState};

use crate::{Agent, lock, now_ms};

/// The wire report of one observed instance.
pub(crate) fn report(
    o: &ObservedReplica,
    generation: u64,
    node_ip: Option<std::net::IpAddr>,
) -> InstanceReport {
    let (phase, health, message) = match &o.state {
        ObservedState::Starting => (Phase::Starting, None, None),
        ObservedState::Running { health } => (
            Phase::Running,
            Some(
                match health {
                    Health::NoProbe => "no_probe",
                    Health::Unknown => "unknown",
                    Health::Healthy => "healthy",
                    Health::Unhealthy => "unhealthy",
                }
                .to_string(),
            ),
            None,
        ),
        ObservedState::Stopping => (Phase::Stopping, None, None),
        ObservedState::Exited { outcome, .. } => (Phase::Exited, None, Some(outcome.to_string())),
    };
    let running = matches!(phase, Phase::Running | Phase::Starting);
    InstanceReport {
        id: o.id.clone(),
        generation,
        phase,
        ready: o.ready(),
        health,
        restarts: o.restart_count,
        address: o.address.or(if running { node_ip } else { None }),
        pid: o.pid,
        started_at_ms: o.started_at_ms,
        message,
    }
}

pub(crate) async fn run(agent: Arc<Agent>) {
    let backoff = BackoffPolicy::default();
    let mut last_errors: Vec<String> = Vec::new();
    let mut wake_at: Option<u64> = None;
    loop {
        let now = now_ms();
        let sleep = wake_at
            .map(|w| Duration::from_millis(w.saturating_sub(now)))
            .unwrap_or(agent.cfg.tick)
            .min(agent.cfg.tick);
        tokio::select! {
            _ = agent.changed.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
        let (desired, network) = {
            let cur = lock(&agent.current);
            (cur.replicas.clone(), cur.network.clone())
        };
        let generations: BTreeMap<InstanceId, u64> = desired
            .iter()
            .map(|s| (s.id.clone(), s.generation))
            .collect();
        let a = agent.clone();
        let step = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            if let Some(f) = &a.fake {
                f.set_now(now);
            }
            let step = reconcile(a.runtime.as_ref(), &desired, now, &backoff);
            if let Some(e) = &a.enforcement {
                e.sync(&step.observed, network.as_deref());
            }
            step
        })
        .await;
        let Ok(step) = step else { continue };
        if let Some(e) = &agent.enforcement {
            agent.set_policy_condition(e.condition());
        }
        let errors: Vec<String> = step
            .errors
            .iter()
            .map(|(id, e)| match id {
                Some(id) => format!("{id}: {e}"),
                None => e.clone(),
            })
            .collect();
        if errors != last_errors {
            for e in &errors {
                tracing::warn!(node = %agent.cfg.name, "{e}");
            }
            last_errors = errors;
        }
        for a in &step.actions {
            tracing::debug!(node = %agent.cfg.name, ?a, "action");
        }
        wake_at = step.next_wake_ms;
        let node_ip = agent.node_ip();
        let reports: Vec<InstanceReport> = step
            .observed
            .iter()
            .map(|o| report(o, generations.get(&o.id).copied().unwrap_or(0), node_ip))
            .collect();
        agent.status.send_if_modified(|cur| {
            if cur.as_slice() == reports.as_slice() {
                false
            } else {
                *cur = Arc::new(reports);
                true
            }
        });
    }
}

/// Stops every replica (blocking; each may take its grace period) and removes the node bridge.
pub(crate) fn drain(agent: &Agent) {
    let backoff = BackoffPolicy::default();
    for _ in 0..3 {
        let step = reconcile(agent.runtime.as_ref(), &[], now_ms(), &backoff);
        if step.observed.is_empty() {
            break;
        }
    }
    if let Some(p) = &agent.process {
        if let Err(e) = p.teardown_network() {
            tracing::warn!("cannot remove the node bridge: {e}");
        }
        p.remove_cgroup_root();
    }
    if let Some(e) = &agent.enforcement {
        e.uninstall();
    }
    tracing::info!(node = %agent.cfg.name, "drained: every replica stopped");
}
