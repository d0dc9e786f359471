//! Whether this node can enforce network policy with eBPF (privileges, cgroup2, a BPF file
//! system), and why not. Mounts the BPF file system when it is missing and we may.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::EbpfError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Where the kernel pieces live on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The cgroup2 mount (`/sys/fs/cgroup/unified` on hybrid hosts, `/sys/fs/cgroup` on pure v2).
    pub cgroup2: PathBuf,
    /// The BPF file system holding the pins.
    pub bpffs: PathBuf,
}

fn unsupported(reason: impl Into<String>) -> EbpfError {
    EbpfError::Unsupported {
        reason: reason.into(),
    }
}

/// Checks privileges, finds the cgroup2 mount and makes sure `pin_root` is on a BPF file system
/// (mounting one at `/sys/fs/bpf` if nothing is mounted there).
pub fn check(pin_root: &Path) -> Result<Environment, EbpfError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Err(missing) = privileged(&status) {
        return Err(unsupported(format!(
            "the agent lacks {missing} (run it as root to enforce network policy)"
        )));
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| unsupported(format!("cannot read /proc/self/mounts: {e}")))?;
    let cgroup2 = cgroup2_mount(&mounts)
        .ok_or_else(|| unsupported("no cgroup2 (unified) hierarchy is mounted"))?;
    let bpffs = bpffs_for(pin_root)?;
    Ok(Environment { cgroup2, bpffs })
}

/// `Err(names)` of the capabilities missing for loading and attaching the programs.
fn privileged(proc_status: &str) -> Result<(), String> {
    let eff = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYS_ADMIN) {
        // Pinning and BPF_LINK_CREATE on cgroups need it in practice (bpffs is mode 0700).
        missing.push("CAP_SYS_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// The mount point of the first cgroup2 file system in a /proc/self/mounts text.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(point)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type)
}

/// Makes sure `pin_root` lies on a bpffs: the nearest existing ancestor must be one, or be
/// `/sys/fs/bpf` itself, where one is mounted.
fn bpffs_for(pin_root: &Path) -> Result<PathBuf, EbpfError> {
    let mut probe = pin_root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    match fs_type(&probe) {
        Ok(t) if t == BPF_FS_MAGIC => return Ok(probe),
        Ok(_) => {}
        Err(e) => {
            return Err(unsupported(format!("cannot stat {}: {e}", probe.display())));
        }
    }
    let default = Path::new("/sys/fs/bpf");
    if !pin_root.starts_with(default) || !default.is_dir() {
        return Err(unsupported(format!(
            "{} is not on a BPF file system",
            pin_root.display()
        )));
    }
    // SAFETY: plain mount(2) with static C strings.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(unsupported(format!(
            "no BPF file system at /sys/fs/bpf and mounting one failed: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(default.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_proc_status() {
        assert!(privileged("Name:\tx\nCapEff:\t000001ffffffffff\n").is_ok());
        // CAP_NET_ADMIN and CAP_SYS_ADMIN only (no CAP_BPF): SYS_ADMIN covers BPF.
        assert!(privileged("CapEff:\t0000000000201000\n").is_ok());
        assert_eq!(
            privileged("CapEff:\t0000000000000000\n"),
            Err("CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN".to_string())
        );
        assert!(privileged("garbage").is_err());
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount("cgroup2 /a\\040b cgroup2 rw 0 0"),
            Some(PathBuf::from("/a b"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
