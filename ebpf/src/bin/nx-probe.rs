//! nx-probe: the small network tool the enforcement tests and the benchmark run inside test
//! "hosts". It first joins a cgroup (`--cgroup DIR`) and a network namespace (`--netns NAME`),
//! then serves or probes TCP/UDP and prints one word per result:
//! `ok`, `EPERM`, `timeout`, `refused`, `noreply` or `error <errno>`.
//!
//! ```text
//! nx-probe [--cgroup DIR] [--netns NAME] serve PORT...          TCP: answer "ok\n", close
//! nx-probe [--cgroup DIR] [--netns NAME] serve-udp PORT...      UDP: echo every datagram
//! nx-probe [...] connect ADDR:PORT [TIMEOUT_MS]                 one TCP connection
//! nx-probe [...] udp ADDR:PORT [TIMEOUT_MS]                     connected UDP ping
//! nx-probe [...] udp-unconnected ADDR:PORT [TIMEOUT_MS]         sendto/recvfrom ping
//! nx-probe [...] repl        lines "connect ADDR:PORT TIMEOUT_MS" on stdin -> results on stdout
//! nx-probe [...] echo PORT...                                   TCP: echo every line back
//! nx-probe [...] hold ADDR:PORT      connect once; per stdin line send it, print ok/timeout/...
//! nx-probe [...] sink PORT                                      TCP: read and discard
//! nx-probe [...] blast ADDR:PORT SECONDS                        TCP: write, print bits/s
//! nx-probe [...] exec CMD ARGS...                               exec CMD inside
//! ```

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut cgroup = None;
    let mut netns = None;
    while args.len() >= 2 && args[0].starts_with("--") {
        let value = args.remove(1);
        match args.remove(0).as_str() {
            "--cgroup" => cgroup = Some(value),
            "--netns" => netns = Some(value),
            other => return fail(&format!("unknown option {other}")),
        }
    }
    if let Some(dir) = cgroup {
        let procs = format!("{dir}/cgroup.procs");
        if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
            return fail(&format!("join {procs}: {e}"));
        }
    }
    if let Some(ns) = netns {
        let path = if ns.contains('/') {
            ns
        } else {
            format!("/run/netns/{ns}")
        };
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return fail(&format!("open {path}: {e}")),
        };
        // SAFETY: setns on a namespace fd we own; this process is still single-threaded.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return fail(&format!(
                "setns {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let Some(cmd) = args.first().cloned() else {
        return fail("missing command");
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "serve" => serve_tcp(rest),
        "serve-udp" => serve_udp(rest),
        "connect" | "udp" | "udp-unconnected" => match target(rest) {
            Ok((addr, t)) => {
                println!("{}", probe(&cmd, addr, t));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        "repl" => repl(),
        "echo" => serve_with(rest, |s| {
            let mut r = std::io::BufReader::new(match s.try_clone() {
                Ok(c) => c,
                Err(_) => return,
            });
            let mut w = s;
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
        }),
        "sink" => serve_with(rest, |mut s| {
            let mut buf = vec![0u8; 1 << 17];
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        }),
        "hold" => hold(rest),
        "blast" => blast(rest),
        "exec" => match rest.split_first() {
            Some((prog, a)) => {
                let e = std::process::Command::new(prog).args(a).exec();
                fail(&format!("exec {prog}: {e}"))
            }
            None => fail("exec needs a command"),
        },
        other => fail(&format!("unknown command {other}")),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("nx-probe: {msg}");
    ExitCode::from(2)
}

fn target(rest: &[String]) -> Result<(SocketAddr, Duration), String> {
    let addr: SocketAddr = rest
        .first()
        .ok_or("missing ADDR:PORT")?
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    let ms: u64 = match rest.get(1) {
        Some(s) => s.parse().map_err(|e| format!("bad timeout: {e}"))?,
        None => 1000,
    };
    Ok((addr, Duration::from_millis(ms.max(1))))
}

fn word(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::ETIMEDOUT) | Some(libc::EAGAIN) | Some(libc::EINPROGRESS) => "timeout".into(),
        Some(n) => format!("error {n}"),
        None if e.kind() == std::io::ErrorKind::TimedOut => "timeout".into(),
        None => format!("error {e}"),
    }
}

fn probe(kind: &str, addr: SocketAddr, timeout: Duration) -> String {
    let result = match kind {
        "connect" => tcp_probe(addr, timeout),
        "udp" => udp_probe(addr, timeout, true),
        _ => udp_probe(addr, timeout, false),
    };
    result.unwrap_or_else(|e| word(&e))
}

fn tcp_probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 3];
    match s.read_exact(&mut buf) {
        Ok(()) if &buf == b"ok\n" => Ok("ok".into()),
        _ => Ok("noreply".into()),
    }
}

fn udp_probe(addr: SocketAddr, timeout: Duration, connected: bool) -> std::io::Result<String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = UdpSocket::bind(local)?;
    s.set_read_timeout(Some(timeout))?;
    if connected {
        s.connect(addr)?;
        s.send(b"ping")?;
    } else {
        s.send_to(b"ping", addr)?;
    }
    let mut buf = [0u8; 16];
    match s.recv_from(&mut buf) {
        Ok((4, from)) if &buf[..4] == b"ping" && from == addr => Ok("ok".into()),
        Ok(_) => Ok("noreply".into()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN)) => Ok("timeout".into()),
        Err(e) => Err(e),
    }
}

fn ports(rest: &[String]) -> Result<Vec<u16>, String> {
    if rest.is_empty() {
        return Err("missing PORT".into());
    }
    rest.iter()
        .map(|p| p.parse::<u16>().map_err(|e| format!("bad port {p}: {e}")))
        .collect()
}

fn serve_tcp(rest: &[String]) -> ExitCode {
    serve_with(rest, |mut s| {
        let _ = s.write_all(b"ok\n");
    })
}

/// Listens on every port of `rest` ([::], dual-stack) and runs `handle` per connection.
fn serve_with(rest: &[String], handle: fn(TcpStream)) -> ExitCode {
    let ports = match ports(rest) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut listeners = Vec::new();
    for p in ports {
        // [::] with bindv6only=0 takes IPv4 (mapped) and IPv6 connections.
        match TcpListener::bind(("::", p)) {
            Ok(l) => listeners.push(l),
            Err(e) => return fail(&format!("bind {p}: {e}")),
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    std::thread::spawn(move || handle(s));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn serve_udp(rest: &[String]) -> ExitCode {
    let ports = match ports(rest) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut sockets = Vec::new();
    for p in ports {
        match UdpSocket::bind(("::", p)) {
            Ok(s) => sockets.push(s),
            Err(e) => return fail(&format!("bind {p}: {e}")),
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let threads: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}

fn repl() -> ExitCode {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let parts: Vec<String> = line.split_whitespace().map(String::from).collect();
        let reply = match parts.split_first() {
            Some((kind, rest)) => match target(rest) {
                Ok((addr, t)) => probe(kind, addr, t),
                Err(e) => format!("error {e}"),
            },
            None => continue,
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// One connection kept open; every stdin line is sent and must come back.
fn hold(rest: &[String]) -> ExitCode {
    let (addr, timeout) = match target(rest) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout();
    let stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            println!("{}", word(&e));
            return ExitCode::SUCCESS;
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = writeln!(out, "connected").and_then(|_| out.flush());
    let Ok(read_half) = stream.try_clone() else {
        return fail("clone stream");
    };
    let mut reader = std::io::BufReader::new(read_half);
    let mut writer = stream;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match writer.write_all(format!("{line}\n").as_bytes()) {
            Err(e) => word(&e),
            Ok(()) => {
                let mut back = String::new();
                match reader.read_line(&mut back) {
                    Ok(n) if n > 0 && back.trim_end() == line => "ok".to_string(),
                    Ok(_) => "noreply".to_string(),
                    Err(e) => word(&e),
                }
            }
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Writes as fast as possible for SECONDS and prints the rate in bits per second.
fn blast(rest: &[String]) -> ExitCode {
    let (addr, _) = match target(&rest[..rest.len().min(1)]) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let secs: f64 = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return fail(&format!("connect: {}", word(&e))),
    };
    let buf = vec![0x5au8; 1 << 17];
    let start = std::time::Instant::now();
    let mut sent: u64 = 0;
    while start.elapsed().as_secs_f64() < secs {
        match s.write(&buf) {
            Ok(n) => sent += n as u64,
            Err(e) => return fail(&format!("write: {}", word(&e))),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 16];
    let _ = s.read(&mut sink);
    let elapsed = start.elapsed().as_secs_f64();
    println!("{:.0}", sent as f64 * 8.0 / elapsed);
    ExitCode::SUCCESS
}
