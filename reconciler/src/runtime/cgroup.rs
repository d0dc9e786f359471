//! cgroups: detecting the host's mode (v1, hybrid, pure v2) from the mount table, and one cgroup
//! per replica in every hierarchy that matters: `<mount>/<root>/<replica>` under the v1
//! `memory`, `cpu` and `pids` controllers plus the unified hierarchy (where eBPF attaches) on v1
//! and hybrid hosts; `<cgroup2 mount>/<root>/<replica>` with `memory.max`/`cpu.max`/`pids.max`
//! on pure v2 hosts.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::RuntimeError;
use super::sys;
use crate::spec::Limits;

/// CFS period used for CPU quotas (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts.
const MIN_QUOTA_US: u64 = 1_000;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// v1 controllers only.
    Legacy,
    /// v1 controllers plus a cgroup2 mount without those controllers (e.g. /sys/fs/cgroup/unified).
    Hybrid,
    /// cgroup2 only.
    Unified,
}

/// Where each hierarchy is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

/// Decodes the octal escapes (`\040`) the kernel uses in mount paths.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl CgroupLayout {
    /// Reads /proc/self/mounts.
    pub fn detect() -> Result<Self, RuntimeError> {
        let text = fs::read_to_string("/proc/self/mounts")
            .map_err(|e| RuntimeError::io("read", "/proc/self/mounts", e))?;
        Self::from_mounts(&text)
    }

    /// Parses a mount table (the format of /proc/self/mounts).
    pub fn from_mounts(text: &str) -> Result<Self, RuntimeError> {
        let mut layout = CgroupLayout {
            mode: CgroupMode::Unified,
            memory: None,
            cpu: None,
            pids: None,
            unified: None,
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(path), Some(fstype), Some(opts)) = (f.get(1), f.get(2), f.get(3)) else {
                continue;
            };
            let path = PathBuf::from(unescape(path));
            match *fstype {
                "cgroup2" => {
                    layout.unified.get_or_insert(path);
                }
                "cgroup" => {
                    for o in opts.split(',') {
                        let slot = match o {
                            "memory" => &mut layout.memory,
                            "cpu" => &mut layout.cpu,
                            "pids" => &mut layout.pids,
                            _ => continue,
                        };
                        slot.get_or_insert_with(|| path.clone());
                    }
                }
                _ => {}
            }
        }
        let v1 = layout.memory.is_some() || layout.cpu.is_some() || layout.pids.is_some();
        layout.mode = match (v1, layout.unified.is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::Legacy,
            (false, true) => CgroupMode::Unified,
            (false, false) => {
                return Err(RuntimeError::Unsupported(
                    "no cgroup hierarchy is mounted".into(),
                ));
            }
        };
        Ok(layout)
    }

    /// Every hierarchy root the runtime uses, v1 controllers first.
    fn hierarchies(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::new();
        if self.mode != CgroupMode::Unified {
            for p in [&self.memory, &self.cpu, &self.pids].into_iter().flatten() {
                if !v.contains(&p.as_path()) {
                    v.push(p);
                }
            }
        }
        if let Some(u) = &self.unified {
            v.push(u);
        }
        v
    }

    /// Creates `<hierarchy>/<root>` everywhere; on pure v2 enables the memory, cpu and pids
    /// controllers down to it.
    pub fn ensure_root(&self, root: &Path) -> Result<(), RuntimeError> {
        for h in self.hierarchies() {
            let dir = h.join(root);
            fs::create_dir_all(&dir).map_err(|e| RuntimeError::io("create cgroup", &dir, e))?;
        }
        if self.mode == CgroupMode::Unified
            && let Some(u) = &self.unified
        {
            let mut dir = u.clone();
            let mut levels = vec![dir.clone()];
            for c in root.components() {
                dir.push(c);
                levels.push(dir.clone());
            }
            for level in levels {
                let available =
                    fs::read_to_string(level.join("cgroup.controllers")).unwrap_or_default();
                let want: Vec<String> = ["memory", "cpu", "pids"]
                    .iter()
                    .filter(|c| available.split_whitespace().any(|a| a == **c))
                    .map(|c| format!("+{c}"))
                    .collect();
                if !want.is_empty() {
                    let f = level.join("cgroup.subtree_control");
                    fs::write(&f, want.join(" "))
                        .map_err(|e| RuntimeError::io("enable controllers", &f, e))?;
                }
            }
        }
        Ok(())
    }

    /// Names of the replica directories under `<root>` in any hierarchy.
    pub fn list(&self, root: &Path) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for h in self.hierarchies() {
            if let Ok(rd) = fs::read_dir(h.join(root)) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        names
    }

    /// The cgroups of replica `name` under `root` (paths only; nothing is created).
    pub fn replica(&self, root: &Path, name: &str) -> ReplicaCgroup {
        let at = |p: &Option<PathBuf>| p.as_ref().map(|p| p.join(root).join(name));
        match self.mode {
            CgroupMode::Unified => ReplicaCgroup {
                mode: self.mode,
                memory: None,
                cpu: None,
                pids: None,
                unified: at(&self.unified),
            },
            _ => ReplicaCgroup {
                mode: self.mode,
                memory: at(&self.memory),
                cpu: at(&self.cpu),
                pids: at(&self.pids),
                unified: at(&self.unified),
            },
        }
    }
}

/// One replica's cgroup directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCgroup {
    pub mode: CgroupMode,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    /// In the unified hierarchy: on v2 hosts it carries the limits, on hybrid hosts only the
    /// membership (eBPF programs attach here).
    pub unified: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(|e| RuntimeError::io("write", path, e))
}

impl ReplicaCgroup {
    /// Every directory, deduplicated.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::new();
        for p in [&self.memory, &self.cpu, &self.pids, &self.unified]
            .into_iter()
            .flatten()
        {
            if !v.contains(&p.as_path()) {
                v.push(p);
            }
        }
        v
    }

    /// The `cgroup.procs` files a process must be written to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self, limits: &Limits, default_pids: u64) -> Result<(), RuntimeError> {
        for d in self.dirs() {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::io("create cgroup", d, e)),
            }
        }
        let pids = limits.pids.unwrap_or(default_pids);
        let quota = limits
            .cpu_millis
            .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US));
        if self.mode == CgroupMode::Unified {
            let Some(u) = &self.unified else {
                return Ok(());
            };
            if let Some(m) = limits.memory_bytes {
                write(&u.join("memory.max"), &m.to_string())?;
                // No swap, and an OOM kill takes the whole replica down (as on v1 with pid 1 gone).
                let _ = fs::write(u.join("memory.swap.max"), "0");
                let _ = fs::write(u.join("memory.oom.group"), "1");
            }
            let cpu = match quota {
                Some(q) => format!("{q} {CPU_PERIOD_US}"),
                None => format!("max {CPU_PERIOD_US}"),
            };
            write(&u.join("cpu.max"), &cpu)?;
            write(&u.join("pids.max"), &pids.to_string())?;
        } else {
            if let (Some(d), Some(m)) = (&self.memory, limits.memory_bytes) {
                write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                // Memory+swap equal to memory: no swapping around the limit (absent without swap
                // accounting).
                let _ = fs::write(d.join("memory.memsw.limit_in_bytes"), m.to_string());
            }
            if let Some(d) = &self.cpu {
                write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                let q = quota.map(|q| q.to_string()).unwrap_or_else(|| "-1".into());
                write(&d.join("cpu.cfs_quota_us"), &q)?;
            }
            if let Some(d) = &self.pids {
                write(&d.join("pids.max"), &pids.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into every directory.
    pub fn add(&self, pid: i32) -> Result<(), RuntimeError> {
        for f in self.procs_files() {
            write(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Processes in any of the directories.
    pub fn procs(&self) -> BTreeSet<i32> {
        let mut out = BTreeSet::new();
        for f in self.procs_files() {
            if let Ok(text) = fs::read_to_string(&f) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out
    }

    /// OOM kills counted by the memory controller.
    pub fn oom_kills(&self) -> u64 {
        let (file, dir) = match self.mode {
            CgroupMode::Unified => ("memory.events", &self.unified),
            _ => ("memory.oom_control", &self.memory),
        };
        let Some(dir) = dir else { return 0 };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .filter_map(|v| v.trim().parse().ok())
            .next()
            .unwrap_or(0)
    }

    /// Whether any directory exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }

    /// Kills every process in the cgroups (`cgroup.kill` where the kernel has it, then SIGKILL
    /// to each pid listed) until they are empty or `timeout` passes. Returns how many pids were
    /// signalled.
    pub fn kill_all(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut killed = BTreeSet::new();
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                return killed.len();
            }
            if let Some(u) = &self.unified {
                let _ = fs::write(u.join("cgroup.kill"), "1");
            }
            for pid in procs {
                sys::kill_pid(pid);
                killed.insert(pid);
            }
            if Instant::now() >= deadline {
                return killed.len();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the directories (retrying while the kernel finishes tearing
    /// the processes down).
    pub fn remove(&self) -> Result<usize, RuntimeError> {
        let killed = self.kill_all(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(2);
        for d in self.dirs() {
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        self.kill_all(Duration::from_millis(50));
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(RuntimeError::io("remove cgroup", d, e)),
                }
            }
        }
        Ok(killed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn detects_hybrid() {
        let l = CgroupLayout::from_mounts(HYBRID).unwrap();
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(
            l.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            l.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let r = l.replica(Path::new("nexus/n1"), "default.web-0-0123abcd");
        assert_eq!(
            r.procs_files(),
            [
                "/sys/fs/cgroup/memory/nexus/n1/default.web-0-0123abcd/cgroup.procs",
                "/sys/fs/cgroup/cpu/nexus/n1/default.web-0-0123abcd/cgroup.procs",
                "/sys/fs/cgroup/pids/nexus/n1/default.web-0-0123abcd/cgroup.procs",
                "/sys/fs/cgroup/unified/nexus/n1/default.web-0-0123abcd/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn detects_unified_legacy_and_comounts() {
        let v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n";
        let l = CgroupLayout::from_mounts(v2).unwrap();
        assert_eq!(l.mode, CgroupMode::Unified);
        let r = l.replica(Path::new("nexus/n1"), "x");
        assert_eq!(r.dirs(), [Path::new("/sys/fs/cgroup/nexus/n1/x")]);
        let v1 = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        let l = CgroupLayout::from_mounts(v1).unwrap();
        assert_eq!(l.mode, CgroupMode::Legacy);
        assert_eq!(
            l.cpu.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(l.pids, None);
        let spaced = "cgroup2 /mnt/my\\040cgroups cgroup2 rw 0 0\n";
        assert_eq!(
            CgroupLayout::from_mounts(spaced)
                .unwrap()
                .unified
                .as_deref(),
            Some(Path::new("/mnt/my cgroups"))
        );
        assert!(CgroupLayout::from_mounts("proc /proc proc rw 0 0\n").is_err());
        assert!(CgroupLayout::from_mounts("").is_err());
    }
}
