//! Running a command inside a running replica (exec probes, `exec`): the command joins the
//! replica's cgroups and its network, ipc, uts, pid and mount namespaces. Entering a pid namespace only
//! affects children, so the spawned process forks once more: the grandchild runs the command as a
//! member of the replica's namespace, the intermediate waits for it and exits with its status.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{RuntimeError, sys};
use crate::model::InstanceId;

/// The exit code and combined output (at most 64 KiB) of a command run in a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code, or 128 + signal.
    pub code: i32,
    pub output: Vec<u8>,
}

/// Where and how to run a command inside a replica.
#[derive(Debug, Clone)]
pub(crate) struct ExecTarget {
    pub id: InstanceId,
    /// Host pid of the replica's init and its start time (guards against pid reuse).
    pub pid: i32,
    pub start_ticks: u64,
    pub procs_files: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    /// Scratch file for the output.
    pub scratch: PathBuf,
    /// The replica's own address (network mode), where HTTP and TCP probes connect.
    pub address: Option<std::net::Ipv4Addr>,
}

/// Runs `argv` inside the target's namespaces and cgroups; kills it after `timeout`.
pub(crate) fn exec_in(
    t: &ExecTarget,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let ExecTarget {
        id,
        pid,
        start_ticks,
        procs_files,
        env,
        workdir,
        scratch,
        address: _,
    } = t;
    let (pid, start_ticks) = (*pid, *start_ticks);
    let Some(program) = argv.first() else {
        return Err(RuntimeError::InvalidSpec(
            crate::spec::SpecError::EmptyCommand,
        ));
    };
    let mut ns = Vec::new();
    // `net` first: joining it needs the host's mount namespace for nothing, and it is the
    // replica's own namespace in network mode (the host's otherwise, a no-op).
    for name in ["net", "ipc", "uts", "pid", "mnt"] {
        let path = format!("/proc/{pid}/ns/{name}");
        ns.push(File::open(&path).map_err(|e| RuntimeError::io("open namespace", &path, e))?);
    }
    // The namespace files pin what we opened; make sure it was the replica's init.
    if !sys::alive(pid, start_ticks) {
        return Err(RuntimeError::NotRunning(id.clone()));
    }
    let mut procs = Vec::new();
    for f in procs_files {
        procs.push(
            OpenOptions::new()
                .write(true)
                .open(f)
                .map_err(|e| RuntimeError::io("open", f, e))?,
        );
    }
    let cwd =
        CString::new(workdir.as_os_str().as_encoded_bytes()).map_err(|_| RuntimeError::State {
            path: workdir.to_path_buf(),
            message: "working directory contains NUL".into(),
        })?;
    let out = File::create(scratch).map_err(|e| RuntimeError::io("create", scratch, e))?;
    let err = out
        .try_clone()
        .map_err(|e| RuntimeError::io("dup", scratch, e))?;

    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let ns_fds: Vec<i32> = ns.iter().map(|f| f.as_raw_fd()).collect();
    let procs_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child and only makes syscalls on fds and buffers
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &ns_fds {
                if libc::setns(fd, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let z = 0 as libc::c_long;
            let child = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, z, z, z, z);
            if child < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if child == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for &fd in &procs_fds {
                    libc::write(fd, b"0".as_ptr() as *const libc::c_void, 1);
                }
                libc::chdir(cwd.as_ptr());
                return Ok(()); // exec the command, inside the replica's pid namespace
            }
            // The intermediate: let the spawner see the exec through its close-on-exec pipe
            // as soon as the grandchild execs, then pass the grandchild's status on.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            let mut st = 0;
            while libc::waitpid(child as libc::pid_t, &mut st, 0) < 0 {
                if *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            let code = if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            };
            libc::_exit(code)
        });
    }
    let mut child = cmd.spawn().map_err(|e| RuntimeError::Sys {
        op: "exec in replica",
        source: e,
    })?;
    drop(ns);
    drop(procs);
    let deadline = Instant::now() + timeout;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                break status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill(); // the grandchild follows through its parent-death signal
                let _ = child.wait();
                let _ = std::fs::remove_file(scratch);
                return Err(RuntimeError::Sys {
                    op: "exec in replica",
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
            Err(e) => {
                return Err(RuntimeError::Sys {
                    op: "wait",
                    source: e,
                });
            }
        }
    };
    let mut output = Vec::new();
    if let Ok(f) = File::open(scratch) {
        let _ = f.take(64 * 1024).read_to_end(&mut output);
    }
    let _ = std::fs::remove_file(scratch);
    Ok(ExecOutput { code, output })
}
