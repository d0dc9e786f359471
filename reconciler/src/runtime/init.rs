//! The replica's init: pid 1 of the replica's own pid, mount, uts and ipc namespaces (and its own
//! network namespace in network mode).
//!
//! The agent `clone(2)`s a child into new namespaces. That child is a copy of a multi-threaded
//! process that never execs, so it runs only async-signal-safe code: raw syscalls on buffers
//! prepared before the clone, no allocation, no locks, no panics. It
//! 1. keeps only its two pipes, waits for the agent's go byte (sent once its pid is in the
//!    replica's cgroups), starts a new session (no signals from the agent's terminal),
//! 2. makes mounts private, mounts a fresh /proc, sets the host name, asks to be exempt from the
//!    OOM killer (`oom_score_adj` -1000; needs CAP_SYS_RESOURCE, silently skipped without it),
//! 3. forks the workload, which resets signals, connects stdout/stderr to pipes, changes directory
//!    and execs the command (a failure before exec reaches the agent through a close-on-exec pipe),
//! 4. then supervises: copies the pipes into size-capped log files (rotating to `<file>.1`),
//!    forwards signals (SIGTERM/INT/HUP/QUIT to every process of the namespace, others to the
//!    workload's process group), reaps every zombie, and when the workload exits writes
//!    `exit <code> <unix ms>` or `signal <n> <unix ms>` to the exit file and exits with the same
//!    code (128 + signal). The kernel then kills whatever is left in the namespace.
//!
//! Because the init, not the agent, owns the pipes and log files, replicas keep logging while the
//! agent restarts.

use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Everything the init needs, prepared before the clone.
pub(crate) struct InitPlan {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub workdir: CString,
    pub hostname: CString,
    pub stdout: CString,
    pub stdout_old: CString,
    pub stderr: CString,
    pub stderr_old: CString,
    pub exit_tmp: CString,
    pub exit_file: CString,
    pub log_cap: u64,
    /// `oom_score_adj` for the workload (the agent's own value).
    pub child_oom_adj: CString,
    /// Also a new network namespace (the agent wires it up before the release).
    pub new_net: bool,
    /// Files bind-mounted over host files in the replica's mount namespace (source, target),
    /// e.g. its own `/etc/hosts` and `/etc/resolv.conf` in network mode.
    pub binds: Vec<(CString, CString)>,
}

const STAGES: [&str; 12] = [
    "release",
    "make mounts private",
    "mount /proc",
    "set host name",
    "open log files",
    "create pipes",
    "fork",
    "change to the working directory",
    "exec",
    "open /dev/null",
    "start a session",
    "bind-mount /etc files",
];
const S_MOUNT_PRIVATE: i32 = 1;
const S_MOUNT_PROC: i32 = 2;
const S_HOSTNAME: i32 = 3;
const S_LOGS: i32 = 4;
const S_PIPES: i32 = 5;
const S_FORK: i32 = 6;
const S_CHDIR: i32 = 7;
const S_EXEC: i32 = 8;
const S_DEVNULL: i32 = 9;
const S_SETSID: i32 = 10;
const S_BIND: i32 = 11;

/// A failure before the workload's exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecFailure {
    pub stage: &'static str,
    pub errno: i32,
}

impl std::fmt::Display for ExecFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.stage,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

/// A cloned init waiting for [`Spawned::release`].
pub(crate) struct Spawned {
    pub pid: i32,
    sync: OwnedFd,
    errors: OwnedFd,
}

/// A close-on-exec pipe whose ends are not 0, 1 or 2 (the init replaces those).
fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::with_capacity(2);
    for fd in fds {
        // SAFETY: fd was just returned by pipe2 and is owned here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if fd < 3 {
            // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd >= 3 or -1.
            let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if high < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: new fd owned here; the low one is closed when `owned` drops.
            out.push(unsafe { OwnedFd::from_raw_fd(high) });
        } else {
            out.push(owned);
        }
    }
    let w = out.pop().ok_or_else(|| io::Error::other("pipe"))?;
    let r = out.pop().ok_or_else(|| io::Error::other("pipe"))?;
    Ok((r, w))
}

fn cstr_ptrs(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Clones the init into new pid, mount, uts and ipc (and, in network mode, network) namespaces.
/// It waits for `release`.
pub(crate) fn spawn(plan: &InitPlan) -> io::Result<Spawned> {
    let argv = cstr_ptrs(&plan.argv);
    let envp = cstr_ptrs(&plan.envp);
    let (sync_r, sync_w) = pipe_high()?;
    let (err_r, err_w) = pipe_high()?;
    let ctx = Ctx {
        plan,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sync_r: sync_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
    };
    let mut flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::SIGCHLD;
    if plan.new_net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: sigset operations on local storage; the child starts with every signal blocked so
    // no handler of the agent ever runs in it.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        // A fork-like clone (no new stack, no CLONE_VM): the child continues here on a copy of
        // this thread's stack. Only async-signal-safe code runs in it (see `init_main`).
        let pid = libc::syscall(
            libc::SYS_clone,
            flags as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        );
        if pid == 0 {
            init_main(&ctx);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(sync_r);
    drop(err_w);
    Ok(Spawned {
        pid: pid as i32,
        sync: sync_w,
        errors: err_r,
    })
}

impl Spawned {
    /// Lets the init go on and waits until the workload has exec'd (`Ok`) or failed before that.
    pub fn release(self, timeout: Duration) -> Result<(), ExecFailure> {
        let one = [1u8];
        // SAFETY: write of one byte from a valid buffer to our pipe.
        let w = unsafe { libc::write(self.sync.as_raw_fd(), one.as_ptr() as *const c_void, 1) };
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        drop(self.sync);
        if w != 1 {
            return Err(ExecFailure {
                stage: STAGES[0],
                errno,
            });
        }
        let fd = self.errors.as_raw_fd();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 8];
        let mut got = 0usize;
        while got < buf.len() {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as c_int;
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, left) };
            if r == 0 {
                return Err(ExecFailure {
                    stage: STAGES[S_EXEC as usize],
                    errno: libc::ETIMEDOUT,
                });
            }
            // SAFETY: read into the unfilled tail of `buf`.
            let n =
                unsafe { libc::read(fd, buf[got..].as_mut_ptr() as *mut c_void, buf.len() - got) };
            if n == 0 {
                break;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(ExecFailure {
                    stage: STAGES[S_EXEC as usize],
                    errno: e.raw_os_error().unwrap_or(0),
                });
            }
            got += n as usize;
        }
        if got == 0 {
            return Ok(());
        }
        let stage = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let stage = STAGES.get(stage as usize).copied().unwrap_or("start");
        Err(ExecFailure { stage, errno })
    }

    /// Gives up: the init sees the pipe close and exits.
    pub fn abort(self) {
        drop(self.sync);
    }
}

struct Ctx<'a> {
    plan: &'a InitPlan,
    argv: *const *const c_char,
    envp: *const *const c_char,
    sync_r: RawFd,
    err_w: RawFd,
}

// ---- Everything below runs in the cloned child: raw syscalls only. ----

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Reports `stage` and the current errno to the agent and exits.
unsafe fn fail(err_w: RawFd, stage: i32) -> ! {
    let e = errno();
    let mut rec = [0u8; 8];
    rec[..4].copy_from_slice(&stage.to_ne_bytes());
    rec[4..].copy_from_slice(&e.to_ne_bytes());
    // SAFETY: write from a stack buffer, then exit without running any user-space cleanup.
    unsafe {
        libc::write(err_w, rec.as_ptr() as *const c_void, rec.len());
        libc::_exit(127)
    }
}

unsafe fn close_range(lo: u32, hi: u32) {
    if lo <= hi {
        // SAFETY: close_range only closes descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) };
    }
}

/// Closes every fd >= 3 except `a` and `b`.
unsafe fn close_all_except(a: RawFd, b: RawFd) {
    let (lo_keep, hi_keep) = if a < b {
        (a as u32, b as u32)
    } else {
        (b as u32, a as u32)
    };
    // SAFETY: see close_range.
    unsafe {
        close_range(3, lo_keep.saturating_sub(1));
        close_range(lo_keep + 1, hi_keep.saturating_sub(1));
        close_range(hi_keep + 1, u32::MAX);
    }
}

unsafe fn write_all(fd: RawFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: write from a valid slice.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const c_void, data.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return false;
        }
        data = data.get(n as usize..).unwrap_or(&[]);
    }
    true
}

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) {
    // SAFETY: open/write/close on a NUL-terminated path.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            write_all(fd, data);
            libc::close(fd);
        }
    }
}

/// A size-capped log file with one rotated predecessor.
struct LogFile {
    fd: RawFd,
    size: u64,
    cap: u64,
    path: *const c_char,
    old: *const c_char,
}

impl LogFile {
    unsafe fn open(path: &CString, old: &CString, cap: u64) -> Option<LogFile> {
        // SAFETY: open + fstat on our own fd.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                0o640,
            );
            if fd < 0 {
                return None;
            }
            let mut st: libc::stat = std::mem::zeroed();
            let size = if libc::fstat(fd, &mut st) == 0 {
                st.st_size.max(0) as u64
            } else {
                0
            };
            Some(LogFile {
                fd,
                size,
                cap: cap.max(1),
                path: path.as_ptr(),
                old: old.as_ptr(),
            })
        }
    }

    unsafe fn rotate(&mut self) {
        // SAFETY: close/rename/open on prepared paths.
        unsafe {
            libc::close(self.fd);
            libc::rename(self.path, self.old);
            self.fd = libc::open(
                self.path,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND | libc::O_CLOEXEC,
                0o640,
            );
        }
        self.size = 0;
    }

    unsafe fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.size >= self.cap {
                // SAFETY: see rotate.
                unsafe { self.rotate() };
            }
            if self.fd < 0 {
                return;
            }
            let take = data.len().min((self.cap - self.size) as usize);
            // SAFETY: write from a valid sub-slice.
            let n = unsafe { libc::write(self.fd, data.as_ptr() as *const c_void, take) };
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                return; // disk full or similar: drop the output rather than block the replica
            }
            self.size += n as u64;
            data = data.get(n as usize..).unwrap_or(&[]);
        }
    }
}

/// A fixed buffer for formatting the exit record without allocating.
struct Line {
    buf: [u8; 96],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }

    fn push_num(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push(digits.get(i..).unwrap_or(&[]));
    }
}

unsafe fn init_main(c: &Ctx<'_>) -> ! {
    let p = c.plan;
    // SAFETY: this whole function runs in the freshly cloned single-threaded child and only makes
    // syscalls on memory prepared before the clone.
    unsafe {
        close_all_except(c.sync_r, c.err_w);
        let mut go = 0u8;
        loop {
            let n = libc::read(c.sync_r, &mut go as *mut u8 as *mut c_void, 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            libc::_exit(1); // the agent gave up (or died) before releasing us
        }
        libc::close(c.sync_r);
        if libc::setsid() < 0 {
            fail(c.err_w, S_SETSID);
        }
        let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if devnull < 0 {
            fail(c.err_w, S_DEVNULL);
        }
        for fd in 0..3 {
            libc::dup2(devnull, fd);
        }
        let none = std::ptr::null::<c_char>();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(c.err_w, S_MOUNT_PRIVATE);
        }
        for (src, dst) in &p.binds {
            if libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                none,
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                fail(c.err_w, S_BIND);
            }
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            fail(c.err_w, S_MOUNT_PROC);
        }
        let host = p.hostname.as_bytes();
        if libc::sethostname(host.as_ptr() as *const c_char, host.len()) != 0 {
            fail(c.err_w, S_HOSTNAME);
        }
        write_file(c"/proc/self/oom_score_adj", b"-1000");

        let (Some(mut out_log), Some(mut err_log)) = (
            LogFile::open(&p.stdout, &p.stdout_old, p.log_cap),
            LogFile::open(&p.stderr, &p.stderr_old, p.log_cap),
        ) else {
            fail(c.err_w, S_LOGS);
        };
        let mut out = [0 as c_int; 2];
        let mut err = [0 as c_int; 2];
        if libc::pipe2(out.as_mut_ptr(), libc::O_CLOEXEC) != 0
            || libc::pipe2(err.as_mut_ptr(), libc::O_CLOEXEC) != 0
        {
            fail(c.err_w, S_PIPES);
        }
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut mask);
        let sfd = libc::signalfd(-1, &mask, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if sfd < 0 {
            fail(c.err_w, S_PIPES);
        }

        let child = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        );
        if child < 0 {
            fail(c.err_w, S_FORK);
        }
        if child == 0 {
            exec_workload(c, devnull, out[1], err[1]);
        }
        let child = child as libc::pid_t;
        libc::close(out[1]);
        libc::close(err[1]);
        libc::close(c.err_w);
        if devnull > 2 {
            libc::close(devnull);
        }
        supervise(p, child, sfd, out[0], err[0], &mut out_log, &mut err_log)
    }
}

unsafe fn exec_workload(c: &Ctx<'_>, devnull: RawFd, out_w: RawFd, err_w: RawFd) -> ! {
    let p = c.plan;
    // SAFETY: runs in the forked workload child before exec; syscalls only.
    unsafe {
        libc::setsid();
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        write_file(c"/proc/self/oom_score_adj", p.child_oom_adj.as_bytes());
        libc::dup2(devnull, 0);
        libc::dup2(out_w, 1);
        libc::dup2(err_w, 2);
        if libc::chdir(p.workdir.as_ptr()) != 0 {
            fail(c.err_w, S_CHDIR);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(p.program.as_ptr(), c.argv, c.envp);
        fail(c.err_w, S_EXEC)
    }
}

unsafe fn supervise(
    p: &InitPlan,
    child: libc::pid_t,
    sfd: RawFd,
    out_r: RawFd,
    err_r: RawFd,
    out_log: &mut LogFile,
    err_log: &mut LogFile,
) -> ! {
    // SAFETY: single-threaded init; syscalls on its own fds and stack buffers.
    unsafe {
        let mut fds = [
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: out_r,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: err_r,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut status: Option<c_int> = None;
        let mut buf = [0u8; 16 * 1024];
        while status.is_none() {
            if libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) < 0 {
                continue; // EINTR (nothing else is expected with valid fds)
            }
            if fds[0].revents & libc::POLLIN != 0 {
                let mut si: libc::signalfd_siginfo = std::mem::zeroed();
                let size = std::mem::size_of::<libc::signalfd_siginfo>();
                while libc::read(sfd, &mut si as *mut _ as *mut c_void, size) == size as isize {
                    let sig = si.ssi_signo as c_int;
                    if sig == libc::SIGCHLD {
                        loop {
                            let mut st: c_int = 0;
                            let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                            if r <= 0 {
                                break;
                            }
                            if r == child {
                                status = Some(st);
                            }
                        }
                    } else if status.is_none() {
                        if matches!(
                            sig,
                            libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT
                        ) {
                            libc::kill(-1, sig); // every process of the namespace but us
                        } else {
                            libc::kill(-child, sig);
                        }
                    }
                }
            }
            for (i, log) in [(1usize, &mut *out_log), (2, &mut *err_log)] {
                if fds[i].fd >= 0
                    && fds[i].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                {
                    let n = libc::read(fds[i].fd, buf.as_mut_ptr() as *mut c_void, buf.len());
                    if n > 0 {
                        log.write(buf.get(..n as usize).unwrap_or(&[]));
                    } else if n == 0 || errno() != libc::EINTR {
                        fds[i].fd = -1; // poll ignores negative fds
                    }
                }
            }
        }
        // Drain what the workload wrote before it exited (without waiting for other writers).
        for (fd, log) in [(out_r, &mut *out_log), (err_r, &mut *err_log)] {
            libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
            loop {
                let n = libc::read(fd, buf.as_mut_ptr() as *mut c_void, buf.len());
                if n <= 0 {
                    break;
                }
                log.write(buf.get(..n as usize).unwrap_or(&[]));
            }
        }
        let st = status.unwrap_or(0);
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let now_ms = (ts.tv_sec.max(0) as u64) * 1000 + (ts.tv_nsec.max(0) as u64) / 1_000_000;
        let mut line = Line {
            buf: [0; 96],
            len: 0,
        };
        let code = if libc::WIFSIGNALED(st) {
            line.push(b"signal ");
            line.push_num(libc::WTERMSIG(st) as u64);
            128 + libc::WTERMSIG(st)
        } else {
            line.push(b"exit ");
            line.push_num(libc::WEXITSTATUS(st) as u64);
            libc::WEXITSTATUS(st)
        };
        line.push(b" ");
        line.push_num(now_ms);
        line.push(b"\n");
        let fd = libc::open(
            p.exit_tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd >= 0 {
            write_all(fd, line.buf.get(..line.len).unwrap_or(&[]));
            libc::close(fd);
            libc::rename(p.exit_tmp.as_ptr(), p.exit_file.as_ptr());
        }
        libc::_exit(code)
    }
}

/// Parses an exit file: `(Some(code), None)` or `(None, Some(signal))`, plus the time.
pub(crate) fn parse_exit_file(text: &str) -> Option<(Option<i32>, Option<i32>, u64)> {
    let mut f = text.split_whitespace();
    let kind = f.next()?;
    let n: i32 = f.next()?.parse().ok()?;
    let at: u64 = f.next()?.parse().ok()?;
    match kind {
        "exit" => Some((Some(n), None, at)),
        "signal" => Some((None, Some(n), at)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records() {
        assert_eq!(
            parse_exit_file("exit 3 1700000000123\n"),
            Some((Some(3), None, 1_700_000_000_123))
        );
        assert_eq!(parse_exit_file("signal 9 5"), Some((None, Some(9), 5)));
        assert_eq!(parse_exit_file("exit x 5"), None);
        assert_eq!(parse_exit_file(""), None);
        let mut l = Line {
            buf: [0; 96],
            len: 0,
        };
        l.push(b"exit ");
        l.push_num(0);
        l.push(b" ");
        l.push_num(u64::MAX);
        assert_eq!(&l.buf[..l.len], b"exit 0 18446744073709551615");
    }
}
