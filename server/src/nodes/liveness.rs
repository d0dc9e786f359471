//! Node liveness as seen by this replica: a node silent for `node_timeout` (counted from this
//! replica's start, plus [`STARTUP_GRACE`], when it never heard from it) gets this replica's
//! lost attestation in the log;
//! a node heard from again gets it withdrawn. The ledger declares the node lost at f+1
//! attestations (DESIGN rule 5), and the scheduler then moves its replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_ledger::Op;

use super::Nodes;

/// Extra silence allowed, after this replica starts, for a node it has not heard from yet: more
/// than an agent's longest reconnect back-off (5 s) plus a handshake, so a control-plane restart
/// does not declare healthy nodes lost (and stop their replicas) before they reconnect.
const STARTUP_GRACE: Duration = Duration::from_secs(10);

impl Nodes {
    pub(super) async fn liveness_loop(self: Arc<Self>) {
        let every =
            (self.opts.node_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.notified() => return,
            }
            if self.is_stopped() {
                return;
            }
            self.logs.sweep(&self);
            for op in self.liveness_ops() {
                if let Err(e) = self.submit(vec![op.clone()]).await {
                    tracing::warn!(?op, "node liveness: {e}");
                }
            }
        }
    }

    /// The attestations and withdrawals due now.
    fn liveness_ops(&self) -> Vec<Op> {
        let mut silent = Vec::new();
        let started = self.started();
        {
            let state = self.ledger.state();
            let inner = self.lock();
            for n in state.nodes.values() {
                if n.lost_height.is_some() {
                    continue;
                }
                let name = &n.info.name;
                // A node this replica never heard from since it started gets a grace on top:
                // after a control-plane restart its agent may still be in its reconnect back-off.
                let (last, timeout) = match inner.agents.get(name).and_then(|a| a.last_seen) {
                    Some(t) => (t.max(started), self.opts.node_timeout),
                    None => (started, self.opts.node_timeout + STARTUP_GRACE),
                };
                let is_silent = Instant::now().duration_since(last) > timeout;
                let attested = n.lost_attesters.contains(self.actor());
                if is_silent != attested {
                    silent.push((name.clone(), is_silent));
                }
            }
        }
        silent
            .into_iter()
            .map(|(name, lost)| {
                if lost {
                    tracing::warn!(node = %name, timeout = ?self.opts.node_timeout, "node silent: attesting it lost");
                } else {
                    tracing::info!(node = %name, "node heard from again: withdrawing the lost attestation");
                }
                Op::NodeLostAttest { name, lost }
            })
            .collect()
    }
}
