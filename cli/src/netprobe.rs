//! Network probes from inside a workload replica, for network policy tests and benchmarks: a
//! long-running client that joins the replica's network namespace (`nsenter --net`) and its
//! cgroup in the cgroup2 hierarchy (so the replica's eBPF programs police it exactly like the
//! replica's own sockets), then answers `connect` requests one line at a time with `ok`,
//! `EPERM`, `timeout`, `refused` or `error <errno>`. And the small TCP server the test
//! workloads run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A workload command: accept and close TCP connections on every port in `ports`.
pub fn server_command(ports: &[u16]) -> Vec<String> {
    let script = format!(
        "import socket, threading\n\
         def serve(p):\n    s = socket.socket()\n    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    s.bind(('0.0.0.0', p))\n    s.listen(128)\n    while True:\n        c, _ = s.accept()\n        c.close()\n\
         ts = [threading.Thread(target=serve, args=(p,)) for p in {ports:?}]\n\
         [t.start() for t in ts]\n\
         print('serving', {ports:?}, flush=True)\n\
         [t.join() for t in ts]\n"
    );
    vec!["python3".into(), "-u".into(), "-c".into(), script]
}

const CLIENT: &str = "import socket, sys
for line in sys.stdin:
    host, port, ms = line.split()
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(int(ms) / 1000)
    try:
        s.connect((host, int(port)))
        r = 'ok'
    except PermissionError:
        r = 'EPERM'
    except socket.timeout:
        r = 'timeout'
    except ConnectionRefusedError:
        r = 'refused'
    except OSError as e:
        r = 'error %d' % e.errno
    finally:
        s.close()
    print(r, flush=True)
";

/// The cgroup2 directory of process `pid` (`0::/path` in /proc/PID/cgroup, under the unified
/// mount: `/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2 hosts).
pub fn unified_cgroup_of(pid: i64) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mount = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        Path::new("/sys/fs/cgroup/unified")
    } else {
        Path::new("/sys/fs/cgroup")
    };
    Some(mount.join(rel.trim_start_matches('/')))
}

/// A client inside a replica.
pub struct Probe {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Probe {
    /// Enters the network namespace and the cgroup of the replica whose init is `pid`.
    pub fn enter(pid: i64) -> Result<Probe, String> {
        let cgroup = unified_cgroup_of(pid).ok_or_else(|| format!("no cgroup2 for pid {pid}"))?;
        let procs = cgroup.join("cgroup.procs");
        let mut child = Command::new("nsenter")
            .args(["--target", &pid.to_string(), "--net", "--", "sh", "-c"])
            .arg(format!(
                "echo $$ > '{}' && exec python3 -u -c \"$0\"",
                procs.display()
            ))
            .arg(CLIENT)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("nsenter: {e}"))?;
        let input = child.stdin.take().ok_or("no stdin")?;
        let output = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Probe {
            child,
            input,
            output,
        })
    }

    /// One TCP connect to `addr:port` with a timeout: the result word.
    pub fn connect(&mut self, addr: &str, port: u16, timeout_ms: u64) -> String {
        if writeln!(self.input, "{addr} {port} {timeout_ms}").is_err() {
            return "probe gone".into();
        }
        let mut line = String::new();
        match self.output.read_line(&mut line) {
            Ok(0) | Err(_) => "probe gone".into(),
            Ok(_) => line.trim().to_string(),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
