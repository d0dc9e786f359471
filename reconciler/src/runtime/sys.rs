//! Thin, safe wrappers over the process syscalls the process runtime needs: wall clock, /proc stat
//! (start time, state), waitpid without blocking, signals through pidfds (no pid-reuse races).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This boot's id (pids mean nothing across reboots).
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// (state, start time in clock ticks since boot) from /proc/<pid>/stat.
pub(crate) fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the fields after the command name, which may itself contain spaces and parentheses.
pub(crate) fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields after the name are numbered from 3 (state); starttime is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `pid` that started at `start_ticks` is still alive (not a zombie).
pub(crate) fn alive(pid: i32, start_ticks: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_ticks && state != 'Z' && state != 'X')
}

/// Result of a non-blocking wait for one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    Running,
    /// Reaped with this raw wait status.
    Exited(i32),
    /// Not our child (adopted after an agent restart): watch /proc instead.
    NotChild,
}

pub(crate) fn try_wait(pid: i32) -> Wait {
    if pid <= 0 {
        return Wait::NotChild; // waitpid(0 or -n) would reap someone else's children
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid pointer to an int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Wait::Exited(status);
        }
        if r == 0 {
            return Wait::Running;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Wait::NotChild;
    }
}

/// Decodes a raw wait status into (exit code, signal).
pub(crate) fn decode_status(status: i32) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to `pid` if it is still the process that started at `start_ticks`. Returns
/// `Ok(false)` when that process is gone.
pub(crate) fn signal(pid: i32, start_ticks: u64, signal: i32) -> io::Result<bool> {
    if pid <= 0 {
        return Ok(false);
    }
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(e) => return Err(e),
    };
    // The pidfd pins the process we opened; if it is the one we mean, the signal cannot reach
    // a later process that reused the pid.
    match proc_stat(pid) {
        Some((_, start)) if start == start_ticks => {}
        _ => return Ok(false),
    }
    // SAFETY: valid pidfd, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(true)
}

/// SIGKILL to a pid we found in a cgroup (no identity to check: everything there must go).
pub(crate) fn kill_pid(pid: i32) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_names() {
        let line = "1234 (we ird) name)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z 1 2"), None);
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert!(alive(std::process::id() as i32, me.1));
        assert!(!alive(std::process::id() as i32, me.1 + 1));
    }
}
