//! Raw bpf(2) calls for cgroup links, which aya 0.14 only half exposes: create a link from a
//! program fd, pin it and get it back, read its info (cgroup id, program id), point it at a new
//! program, and force-detach it. Also the cgroup id of a cgroup directory.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_attach_type` values of the four hooks.
pub const ATTACH_INGRESS: u32 = 0;
pub const ATTACH_EGRESS: u32 = 1;
pub const ATTACH_CONNECT4: u32 = 10;
pub const ATTACH_CONNECT6: u32 = 11;

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The head of `struct bpf_link_info` with the cgroup member of its union.
#[repr(C)]
#[derive(Default)]
struct RawLinkInfo {
    type_: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _rest: [u32; 9],
}

/// What the kernel says about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// 0 once the cgroup is gone (the link is defunct).
    pub cgroup_id: u64,
    pub attach_type: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] bpf_attr prefix for `cmd`; the kernel
    // reads (and for info, writes through pointers we set to live buffers) at most
    // size_of::<T>() bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(r).map_err(|_| io::Error::other("bpf returned an invalid fd"))?;
    // SAFETY: the kernel just returned this new file descriptor; we are its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn raw(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// Attaches program `prog` to cgroup `cgroup` as a bpf link (cgroup links are always
/// multi-attach; the caller keeps one link per hook and cgroup).
pub fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut a = LinkCreateAttr {
        prog_fd: raw(prog),
        target_fd: raw(cgroup),
        attach_type,
        ..Default::default()
    };
    fd_result(bpf(BPF_LINK_CREATE, &mut a)?)
}

/// Pins a bpf object (here: a link) at `path` on a bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    let mut a = ObjAttr {
        pathname: p.as_ptr() as u64,
        bpf_fd: raw(fd),
        ..Default::default()
    };
    bpf(BPF_OBJ_PIN, &mut a).map(|_| ())
}

/// Opens the bpf object pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    let mut a = ObjAttr {
        pathname: p.as_ptr() as u64,
        ..Default::default()
    };
    fd_result(bpf(BPF_OBJ_GET, &mut a)?)
}

/// The kernel's view of a link.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = RawLinkInfo::default();
    let mut a = InfoAttr {
        bpf_fd: raw(link),
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a)?;
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        cgroup_id: info.cgroup_id,
        attach_type: info.attach_type,
    })
}

/// Makes `link` run `prog` from now on (atomically, no gap in enforcement).
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = LinkUpdateAttr {
        link_fd: raw(link),
        new_prog_fd: raw(prog),
        ..Default::default()
    };
    bpf(BPF_LINK_UPDATE, &mut a).map(|_| ())
}

/// Detaches `link` from its cgroup now, even if other fds or pins still hold it.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = LinkDetachAttr {
        link_fd: raw(link),
        ..Default::default()
    };
    bpf(BPF_LINK_DETACH, &mut a).map(|_| ())
}

/// How many programs are attached directly to `cgroup` at `attach_type` (by anyone).
pub fn attached_count(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<u32> {
    let mut a = QueryAttr {
        target_fd: raw(cgroup),
        attach_type,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut a)?;
    Ok(a.prog_cnt)
}

/// Runs program `prog` `repeat` times on the packet `data` (starting with an Ethernet header)
/// with BPF_PROG_TEST_RUN, as if sent by a socket of the calling thread's cgroup. Returns the
/// program's return value and the mean run time in nanoseconds.
pub fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    let mut a = TestRunAttr {
        prog_fd: raw(prog),
        data_size_in: u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet too large"))?,
        data_in: data.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a)?;
    Ok((a.retval, a.duration))
}

/// The cgroup v2 id of a cgroup directory (its kernfs inode number).
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<ObjAttr>(), 24);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        assert_eq!(std::mem::size_of::<LinkUpdateAttr>(), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(std::mem::size_of::<QueryAttr>(), 64);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
        assert_eq!(std::mem::offset_of!(RawLinkInfo, cgroup_id), 16);
        assert_eq!(std::mem::offset_of!(RawLinkInfo, attach_type), 24);
    }

    #[test]
    fn paths_with_nul_are_refused_not_panicked_on() {
        let e = obj_get(Path::new("/sys/fs/bpf/a\0b")).expect_err("NUL path");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
