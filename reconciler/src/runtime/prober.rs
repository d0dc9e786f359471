//! Runs a replica's health probe on its own thread, on the schedule [`ProbeTracker`] computes,
//! and exposes the verdict. Dropping the [`Prober`] stops the thread (an in-flight probe finishes
//! within its timeout and is discarded).

use std::net::Ipv4Addr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nexus_schemas::HealthProbe;

use super::nsexec::{ExecTarget, exec_in};
use super::sys::now_ms;
use crate::probe::{ProbeTracker, http_probe_at, tcp_probe_at};
use crate::status::Health;

struct Shared {
    stopped: Mutex<bool>,
    wake: Condvar,
    tracker: Mutex<ProbeTracker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running probe loop.
pub(crate) struct Prober {
    shared: Arc<Shared>,
}

impl Prober {
    /// Starts probing a replica that started at `started_at_ms`.
    pub fn spawn(probe: HealthProbe, started_at_ms: u64, target: ExecTarget) -> Prober {
        let shared = Arc::new(Shared {
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            tracker: Mutex::new(ProbeTracker::new(&probe, started_at_ms)),
        });
        let s = shared.clone();
        let name = format!("probe-{}", target.id.replica.index);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&s, &probe, &target));
        if spawned.is_err() {
            // No thread, no verdict: the replica stays "unknown" rather than failing.
            *lock(&shared.stopped) = true;
        }
        Prober { shared }
    }

    pub fn health(&self) -> Health {
        lock(&self.shared.tracker).health()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
    }
}

fn check(probe: &HealthProbe, target: &ExecTarget) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds.max(1)));
    let host = target.address.unwrap_or(Ipv4Addr::LOCALHOST);
    if let Some(h) = &probe.http {
        http_probe_at(host, h.port, &h.path, timeout)
    } else if let Some(t) = &probe.tcp {
        tcp_probe_at(host, t.port, timeout)
    } else if let Some(e) = &probe.exec {
        match exec_in(target, &e.command, timeout) {
            Ok(out) if out.code == 0 => Ok(()),
            Ok(out) => Err(format!(
                "exit code {}: {}",
                out.code,
                String::from_utf8_lossy(&out.output).trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok(())
    }
}

fn run(s: &Shared, probe: &HealthProbe, target: &ExecTarget) {
    loop {
        let due = lock(&s.tracker).next_due_ms();
        {
            let mut stopped = lock(&s.stopped);
            loop {
                if *stopped {
                    return;
                }
                let now = now_ms();
                if now >= due {
                    break;
                }
                let wait = Duration::from_millis(due - now);
                stopped = s
                    .wake
                    .wait_timeout(stopped, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
        let at = now_ms();
        let result = check(probe, target);
        if *lock(&s.stopped) {
            return;
        }
        lock(&s.tracker).record(at, result);
    }
}
