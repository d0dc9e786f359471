//! Health probes: the pure [`ProbeTracker`] (when to probe next, when a replica turns healthy or
//! unhealthy; time passed in) and the network probes (HTTP GET and TCP connect on the node's
//! loopback, or on the replica's own address when it has its own network namespace). Exec
//! probes run inside the replica's namespaces and live with the process runtime.
//!
//! Semantics: no probe before `initialDelaySeconds` after start; then one every `periodSeconds`,
//! each bounded by `timeoutSeconds`. The first success makes the replica healthy (and ready);
//! `failureThreshold` consecutive failures make it unhealthy (the controller then terminates it and
//! the restart policy applies). A success resets the failure count.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nexus_schemas::HealthProbe;

use crate::status::Health;

/// Tracks probe results for one running replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    initial_delay_ms: u64,
    period_ms: u64,
    failure_threshold: u32,
    started_at_ms: u64,
    last_probe_ms: Option<u64>,
    failures: u32,
    health: Health,
    last_error: Option<String>,
}

impl ProbeTracker {
    /// A tracker for a replica started at `started_at_ms`.
    pub fn new(probe: &HealthProbe, started_at_ms: u64) -> Self {
        ProbeTracker {
            initial_delay_ms: u64::from(probe.initial_delay_seconds) * 1000,
            period_ms: u64::from(probe.period_seconds.max(1)) * 1000,
            failure_threshold: probe.failure_threshold.max(1),
            started_at_ms,
            last_probe_ms: None,
            failures: 0,
            health: Health::Unknown,
            last_error: None,
        }
    }

    /// When the next probe should run.
    pub fn next_due_ms(&self) -> u64 {
        match self.last_probe_ms {
            None => self.started_at_ms.saturating_add(self.initial_delay_ms),
            Some(t) => t.saturating_add(self.period_ms),
        }
    }

    /// Records the result of a probe that started at `at_ms`; returns the new health.
    pub fn record(&mut self, at_ms: u64, result: Result<(), String>) -> Health {
        self.last_probe_ms = Some(at_ms);
        match result {
            Ok(()) => {
                self.failures = 0;
                self.health = Health::Healthy;
                self.last_error = None;
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(e);
                if self.failures >= self.failure_threshold {
                    self.health = Health::Unhealthy;
                }
            }
        }
        self.health
    }

    /// Current verdict.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Why the last probe failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

fn socket(host: Ipv4Addr, port: u32) -> Result<SocketAddr, String> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {port}"))?;
    Ok(SocketAddr::from((host, port)))
}

/// Healthy when a TCP connection to 127.0.0.1:`port` opens within `timeout`.
pub fn tcp_probe(port: u32, timeout: Duration) -> Result<(), String> {
    tcp_probe_at(Ipv4Addr::LOCALHOST, port, timeout)
}

/// Healthy when a TCP connection to `host`:`port` opens within `timeout` (`host` is the
/// replica's own address when it has its own network namespace).
pub fn tcp_probe_at(host: Ipv4Addr, port: u32, timeout: Duration) -> Result<(), String> {
    let addr = socket(host, port)?;
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Healthy when `GET path` on 127.0.0.1:`port` answers 2xx or 3xx within `timeout`.
pub fn http_probe(port: u32, path: &str, timeout: Duration) -> Result<(), String> {
    http_probe_at(Ipv4Addr::LOCALHOST, port, path, timeout)
}

/// Healthy when `GET path` on `host`:`port` answers 2xx or 3xx within `timeout`.
pub fn http_probe_at(
    host: Ipv4Addr,
    port: u32,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addr = socket(host, port)?;
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("invalid path {path:?}"));
    }
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: nexus-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    // Read until the status line is complete.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        if Instant::now() >= deadline {
            return Err("timed out".into());
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (version, code) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP response: {:?}", line.trim()));
    }
    match code.parse::<u16>() {
        Ok(c) if (200..400).contains(&c) => Ok(()),
        Ok(c) => Err(format!("HTTP {c}")),
        Err(_) => Err(format!("bad status line {:?}", line.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn probe(delay: u32, period: u32, threshold: u32) -> HealthProbe {
        HealthProbe {
            http: None,
            tcp: Some(nexus_schemas::TcpProbe { port: 1 }),
            exec: None,
            initial_delay_seconds: delay,
            period_seconds: period,
            timeout_seconds: 1,
            failure_threshold: threshold,
        }
    }

    #[test]
    fn tracker_timeline() {
        let mut t = ProbeTracker::new(&probe(3, 5, 2), 10_000);
        assert_eq!(t.next_due_ms(), 13_000);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(
            t.record(13_000, Err("refused".into())),
            Health::Unknown,
            "below the threshold"
        );
        assert_eq!(t.next_due_ms(), 18_000);
        assert_eq!(t.record(18_000, Ok(())), Health::Healthy);
        assert_eq!(
            t.record(23_000, Err("x".into())),
            Health::Healthy,
            "one failure is tolerated"
        );
        assert_eq!(t.last_error(), Some("x"));
        assert_eq!(t.record(28_000, Err("y".into())), Health::Unhealthy);
        assert_eq!(
            t.record(33_000, Ok(())),
            Health::Healthy,
            "recovers on success"
        );
        let mut one = ProbeTracker::new(&probe(0, 1, 1), 0);
        assert_eq!(one.next_due_ms(), 0);
        assert_eq!(one.record(0, Err("x".into())), Health::Unhealthy);
    }

    fn serve_once(response: &'static str) -> u32 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                assert!(
                    String::from_utf8_lossy(&buf[..n]).starts_with("GET /healthz HTTP/1.1\r\n")
                );
                let _ = s.write_all(response.as_bytes());
            }
        });
        u32::from(port)
    }

    #[test]
    fn http_probe_statuses() {
        let t = Duration::from_secs(2);
        assert_eq!(
            http_probe(
                serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                "/healthz",
                t
            ),
            Ok(())
        );
        assert_eq!(
            http_probe(serve_once("HTTP/1.0 302 Found\r\n\r\n"), "healthz", t),
            Ok(())
        );
        assert_eq!(
            http_probe(
                serve_once("HTTP/1.1 503 Unavailable\r\n\r\n"),
                "/healthz",
                t
            ),
            Err("HTTP 503".into())
        );
        assert!(
            http_probe(serve_once("SSH-2.0-OpenSSH\r\n"), "/healthz", t)
                .unwrap_err()
                .contains("not an HTTP")
        );
        assert!(http_probe(0, "/", t).unwrap_err().contains("invalid port"));
        assert!(http_probe(1, "/a b", t).is_err());
    }

    #[test]
    fn http_probe_times_out_on_a_silent_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(l.local_addr().unwrap().port());
        let start = Instant::now();
        let r = http_probe(port, "/", Duration::from_millis(200));
        assert!(r.is_err(), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[test]
    fn tcp_probe_open_and_closed() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = u32::from(l.local_addr().unwrap().port());
        assert_eq!(tcp_probe(port, Duration::from_secs(1)), Ok(()));
        drop(l);
        assert!(
            tcp_probe(port, Duration::from_secs(1))
                .unwrap_err()
                .contains("refused")
        );
    }
}
