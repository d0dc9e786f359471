//! The node's policy loader (IO): loads the programs once per node, keeps maps and links pinned
//! under `/sys/fs/bpf/nexus/<node>/` (so enforcement survives an agent restart and a restarted
//! agent re-opens them), attaches the programs to each replica's cgroup, and applies a
//! [`CompiledPolicy`] to the maps incrementally. See docs/network-policy.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuValues};
use aya::programs::{CgroupSkb, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};

use crate::compile::{CompiledPolicy, RuleId, WorkloadId};
use crate::error::EbpfError;
use crate::inspect::{Maps, Stats, open_map};
use crate::maps::*;
use crate::support::{self, Environment};
use crate::sys;

/// The compiled programs (from clang via build.rs, or the committed object).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nexus_policy.bpf.o"));

/// Where pins live unless told otherwise: `<root>/<node>/{maps,links}`.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/nexus";

/// The four attach points of every replica cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Ingress,
    Egress,
    Connect4,
    Connect6,
}

impl Hook {
    pub const ALL: [Hook; 4] = [Hook::Ingress, Hook::Egress, Hook::Connect4, Hook::Connect6];

    /// The program's function name in the object.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Ingress => "nexus_ingress",
            Hook::Egress => "nexus_egress",
            Hook::Connect4 => "nexus_connect4",
            Hook::Connect6 => "nexus_connect6",
        }
    }

    /// The pin file name under `links/<cgroup id>/`.
    pub fn pin_name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
            Hook::Connect4 => "connect4",
            Hook::Connect6 => "connect6",
        }
    }

    pub fn attach_type(self) -> u32 {
        match self {
            Hook::Ingress => sys::ATTACH_INGRESS,
            Hook::Egress => sys::ATTACH_EGRESS,
            Hook::Connect4 => sys::ATTACH_CONNECT4,
            Hook::Connect6 => sys::ATTACH_CONNECT6,
        }
    }
}

/// Which node's pins to use, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderOptions {
    /// The node name (the pin directory name): 1-64 characters of `[A-Za-z0-9._-]`.
    pub node: String,
    /// Default [`DEFAULT_PIN_ROOT`].
    pub pin_root: PathBuf,
}

impl LoaderOptions {
    pub fn new(node: impl Into<String>) -> Self {
        LoaderOptions {
            node: node.into(),
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
        }
    }

    /// `<pin_root>/<node>`, after checking the node name.
    pub fn pin_dir(&self) -> Result<PathBuf, EbpfError> {
        let n = &self.node;
        let ok = !n.is_empty()
            && n.len() <= 64
            && n != "."
            && n != ".."
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(self.pin_root.join(n))
        } else {
            Err(EbpfError::InvalidNode(n.clone()))
        }
    }
}

/// A running replica as the loader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its cgroup directory in the cgroup2 hierarchy (`ObservedReplica::unified_cgroup`).
    pub cgroup: PathBuf,
    /// The workload it belongs to (selects its policy set).
    pub workload: WorkloadId,
    /// Its own addresses (the first IPv4 and first IPv6 are used).
    pub addrs: Vec<IpAddr>,
}

/// What [`PolicyLoader::attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    pub cgroup_id: u64,
    /// Hooks newly attached (0 when all four pinned links were already in place).
    pub created: usize,
    /// Pinned links re-pointed at this loader's programs (after an agent restart).
    pub updated: usize,
    /// False when the replica's workload is not in the applied policy (not isolated until it is).
    pub known_workload: bool,
}

/// What an [`PolicyLoader::apply`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub map_ops: usize,
    pub cgroups_updated: usize,
    pub elapsed: Duration,
}

/// What [`PolicyLoader::reconcile`] did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub apply: ApplyStats,
    pub attached: Vec<Attached>,
    pub detached: Vec<u64>,
    /// Replicas that could not be attached (for example their cgroup vanished); the rest were.
    pub failed: Vec<(PathBuf, EbpfError)>,
}

/// One attached replica cgroup as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub cgroup_id: u64,
    /// (hook, link info) for every pinned link; a link whose cgroup is gone has `cgroup_id` 0.
    pub links: Vec<(Hook, sys::LinkInfo)>,
}

/// The programs of one node, attached to its replicas' cgroups and fed by [`CompiledPolicy`]s.
/// Dropping it leaves everything pinned and enforced; [`PolicyLoader::uninstall`] removes it.
pub struct PolicyLoader {
    dir: PathBuf,
    env: Environment,
    ebpf: Ebpf,
    maps: Maps,
    installed: PolicyMaps,
    cgroups: BTreeMap<u64, CgroupVal>,
    policy: CompiledPolicy,
    replicas: BTreeMap<u64, Replica>,
}

impl std::fmt::Debug for PolicyLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLoader")
            .field("dir", &self.dir)
            .field("sets", &self.installed.sets.len())
            .field("rules", &self.installed.rules.len())
            .field("cgroups", &self.cgroups.len())
            .finish()
    }
}

impl PolicyLoader {
    /// Loads the programs for `options.node`, creating or re-opening its pinned maps. Errors with
    /// [`EbpfError::Unsupported`] when this node cannot enforce policy.
    pub fn open(options: &LoaderOptions) -> Result<Self, EbpfError> {
        let dir = options.pin_dir()?;
        let env = support::check(&options.pin_root)?;
        let maps_dir = dir.join("maps");
        for d in [&maps_dir, &dir.join("links")] {
            std::fs::create_dir_all(d)
                .map_err(|e| EbpfError::io(format!("create {}", d.display()), e))?;
        }
        let meta_pin = maps_dir.join(MAP_META);
        if meta_pin.exists() {
            let found = read_abi(&meta_pin)?;
            if found != 0 && found != ABI_VERSION {
                return Err(EbpfError::Incompatible {
                    dir,
                    found,
                    expected: ABI_VERSION,
                });
            }
        }

        let mut loader = EbpfLoader::new();
        for name in ALL_MAPS {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| unsupported(format!("loading the eBPF object failed: {e}")))?;
        for hook in Hook::ALL {
            load_program(&mut ebpf, hook)?;
        }
        let mut maps = Maps::open(&maps_dir)?;
        let meta = maps.meta.get(&0, 0).map_err(EbpfError::map(MAP_META))?;
        if meta.abi == 0 {
            let v = Meta {
                abi: ABI_VERSION,
                reserved: 0,
            };
            maps.meta.set(0, v, 0).map_err(EbpfError::map(MAP_META))?;
        }
        let installed = maps.read_policy()?;
        let cgroups = maps.read_cgroups()?;
        Ok(PolicyLoader {
            dir,
            env,
            ebpf,
            maps,
            installed,
            cgroups,
            policy: CompiledPolicy::default(),
            replicas: BTreeMap::new(),
        })
    }

    /// The pin directory of this node.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup2 mount and BPF file system found at start-up.
    pub fn environment(&self) -> &Environment {
        &self.env
    }

    /// The policy last applied by this loader (empty right after `open`).
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// Makes the maps hold exactly `policy`: adds first, then changes, then deletes, so a
    /// connection allowed before and after never sees a deny in between. Also re-points the
    /// cgroup entries of known replicas whose workload changed set.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<ApplyStats, EbpfError> {
        let start = Instant::now();
        let want = PolicyMaps::from_policy(policy);
        let diff = PolicyDiff::between(&self.installed, &want);
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| EbpfError::io(format!("count CPUs ({what})"), e))?;

        for id in &diff.counters_add {
            let zero = PerCpuValues::try_from(vec![Counter::default(); nr_cpus])
                .map_err(|e| EbpfError::io("per-CPU counter", e))?;
            // BPF_NOEXIST: a counter that survived a restart keeps its counts.
            match self.maps.counters.insert(id, zero, 1) {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(EbpfError::map(MAP_COUNTERS)(e)),
            }
            self.installed.counters.insert(*id);
        }
        for ((len, data), v) in &diff.rules.upsert {
            let key = aya::maps::lpm_trie::Key::new(*len, *data);
            self.maps
                .rules
                .insert(&key, v, 0)
                .map_err(EbpfError::map(MAP_RULES))?;
            self.installed.rules.insert((*len, *data), *v);
        }
        for (k, v) in &diff.endpoints.upsert {
            self.maps
                .endpoints
                .insert(k, v, 0)
                .map_err(EbpfError::map(MAP_ENDPOINTS))?;
            self.installed.endpoints.insert(*k, *v);
        }
        for (k, v) in &diff.sets.upsert {
            self.maps
                .sets
                .insert(k, v, 0)
                .map_err(EbpfError::map(MAP_SETS))?;
            self.installed.sets.insert(*k, *v);
        }
        self.policy = policy.clone();
        let cgroups_updated = self.refresh_cgroups()?;
        for (len, data) in &diff.rules.delete {
            let key = aya::maps::lpm_trie::Key::new(*len, *data);
            remove_ok(self.maps.rules.remove(&key), MAP_RULES)?;
            self.installed.rules.remove(&(*len, *data));
        }
        for k in &diff.endpoints.delete {
            remove_ok(self.maps.endpoints.remove(k), MAP_ENDPOINTS)?;
            self.installed.endpoints.remove(k);
        }
        for k in &diff.sets.delete {
            remove_ok(self.maps.sets.remove(k), MAP_SETS)?;
            self.installed.sets.remove(k);
        }
        for k in &diff.counters_delete {
            remove_ok(self.maps.counters.remove(k), MAP_COUNTERS)?;
            self.installed.counters.remove(k);
        }
        Ok(ApplyStats {
            map_ops: diff.ops(),
            cgroups_updated,
            elapsed: start.elapsed(),
        })
    }

    /// Rewrites the cgroup entries of known replicas whose value changed under the current policy.
    fn refresh_cgroups(&mut self) -> Result<usize, EbpfError> {
        let mut n = 0;
        let wanted: Vec<(u64, CgroupVal)> = self
            .replicas
            .iter()
            .map(|(id, r)| (*id, self.cgroup_val(r)))
            .collect();
        for (id, v) in wanted {
            if self.cgroups.get(&id) != Some(&v) {
                self.write_cgroup(id, v)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn cgroup_val(&self, r: &Replica) -> CgroupVal {
        cgroup_val(self.policy.set_of(&r.workload).map(|s| s.id), &r.addrs)
    }

    fn write_cgroup(&mut self, id: u64, v: CgroupVal) -> Result<(), EbpfError> {
        self.maps
            .cgroups
            .insert(id, v, 0)
            .map_err(EbpfError::map(MAP_CGROUPS))?;
        self.cgroups.insert(id, v);
        Ok(())
    }

    /// Attaches the programs to a replica's cgroup (idempotent). Call it as soon as the cgroup
    /// exists, ideally before the replica's command runs. Its config is written first, so the
    /// programs never see the cgroup unconfigured. Pinned links left by a previous agent are
    /// re-used (and re-pointed at this loader's programs), never attached twice.
    pub fn attach(&mut self, replica: &Replica) -> Result<Attached, EbpfError> {
        let cg_err = |what: &'static str| {
            let cgroup = replica.cgroup.clone();
            move |source| EbpfError::Cgroup {
                cgroup,
                what,
                source,
            }
        };
        let cgroup = File::open(&replica.cgroup).map_err(cg_err("open"))?;
        let id = sys::cgroup_id(&replica.cgroup).map_err(cg_err("stat"))?;
        self.replicas.insert(id, replica.clone());
        let mut v = self.cgroup_val(replica);
        if v.set_id == 0 {
            // Workload not in the applied policy (for example right after a restart, before the
            // first apply): keep the set the cgroup already has rather than un-isolating it.
            if let Some(old) = self.cgroups.get(&id) {
                v.set_id = old.set_id;
            }
        }
        if self.cgroups.get(&id) != Some(&v) {
            self.write_cgroup(id, v)?;
        }
        let link_dir = self.link_dir(id);
        std::fs::create_dir_all(&link_dir).map_err(cg_err("create link pin directory"))?;
        let mut out = Attached {
            cgroup_id: id,
            created: 0,
            updated: 0,
            known_workload: v.set_id != 0,
        };
        for hook in Hook::ALL {
            let pin = link_dir.join(hook.pin_name());
            let prog = self.program_fd(hook)?;
            if let Some(link) = open_live_link(&pin, id).map_err(cg_err("open pinned link"))? {
                let prog_id = self.program_id(hook)?;
                let info = sys::link_info(link.as_fd()).map_err(cg_err("link info"))?;
                if info.prog_id != prog_id {
                    sys::link_update(link.as_fd(), prog.as_fd()).map_err(cg_err("update link"))?;
                    out.updated += 1;
                }
                continue;
            }
            let link = sys::link_create(prog.as_fd(), cgroup.as_fd(), hook.attach_type())
                .map_err(cg_err("attach"))?;
            if let Err(e) = sys::obj_pin(link.as_fd(), &pin) {
                // Dropping the only fd of an unpinned link detaches it again.
                drop(link);
                return Err(cg_err("pin link")(e));
            }
            out.created += 1;
        }
        Ok(out)
    }

    /// Writes the config of cgroup `cgroup_id` as `replica`'s, without attaching anything (the
    /// benchmark runs programs with BPF_PROG_TEST_RUN from its own cgroup).
    pub(crate) fn configure_cgroup(
        &mut self,
        cgroup_id: u64,
        replica: &Replica,
    ) -> Result<(), EbpfError> {
        self.replicas.insert(cgroup_id, replica.clone());
        let v = self.cgroup_val(replica);
        self.write_cgroup(cgroup_id, v)
    }

    /// Runs `hook`'s program `repeat` times on `packet` (Ethernet frame, BPF_PROG_TEST_RUN) as
    /// if a socket of the calling thread's cgroup sent or received it: (verdict, mean ns/run).
    /// Verdict 1 = pass, 0 = drop.
    pub fn test_run(
        &self,
        hook: Hook,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(u32, u32), EbpfError> {
        let prog = self.program_fd(hook)?;
        sys::prog_test_run(prog.as_fd(), packet, repeat)
            .map_err(|e| EbpfError::io(format!("test run of {}", hook.program()), e))
    }

    /// Detaches the programs from cgroup `cgroup_id` and forgets its config. Returns whether
    /// anything was attached. Works after the cgroup directory is gone.
    pub fn detach(&mut self, cgroup_id: u64) -> Result<bool, EbpfError> {
        let link_dir = self.link_dir(cgroup_id);
        let mut found = false;
        for hook in Hook::ALL {
            let pin = link_dir.join(hook.pin_name());
            match sys::obj_get(&pin) {
                Ok(link) => {
                    found = true;
                    // A defunct link (cgroup already removed) refuses detach: nothing to do.
                    let _ = sys::link_detach(link.as_fd());
                    std::fs::remove_file(&pin)
                        .map_err(|e| EbpfError::io(format!("remove {}", pin.display()), e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(EbpfError::io(format!("open {}", pin.display()), e)),
            }
        }
        match std::fs::remove_dir(&link_dir) {
            Ok(()) => found = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(EbpfError::io(format!("remove {}", link_dir.display()), e)),
        }
        if self.cgroups.remove(&cgroup_id).is_some() {
            found = true;
            remove_ok(self.maps.cgroups.remove(&cgroup_id), MAP_CGROUPS)?;
        }
        self.replicas.remove(&cgroup_id);
        Ok(found)
    }

    /// [`PolicyLoader::detach`] by cgroup directory (which must still exist).
    pub fn detach_path(&mut self, cgroup: &Path) -> Result<bool, EbpfError> {
        let id = sys::cgroup_id(cgroup).map_err(|source| EbpfError::Cgroup {
            cgroup: cgroup.to_path_buf(),
            what: "stat",
            source,
        })?;
        self.detach(id)
    }

    /// The level-triggered entry point: apply `policy`, attach every replica of `replicas`, and
    /// detach every cgroup attached earlier (by this or a previous agent) that is not listed.
    pub fn reconcile(
        &mut self,
        policy: &CompiledPolicy,
        replicas: &[Replica],
    ) -> Result<ReconcileReport, EbpfError> {
        let mut report = ReconcileReport {
            apply: self.apply(policy)?,
            ..ReconcileReport::default()
        };
        let mut keep = BTreeSet::new();
        for r in replicas {
            match self.attach(r) {
                Ok(a) => {
                    keep.insert(a.cgroup_id);
                    report.attached.push(a);
                }
                Err(e) => report.failed.push((r.cgroup.clone(), e)),
            }
        }
        let mut stale: BTreeSet<u64> = self.attached_ids()?.into_iter().collect();
        stale.extend(self.cgroups.keys().copied());
        for id in stale.difference(&keep) {
            if self.detach(*id)? {
                report.detached.push(*id);
            }
        }
        Ok(report)
    }

    /// Cgroup ids with pinned links.
    pub fn attached_ids(&self) -> Result<Vec<u64>, EbpfError> {
        let dir = self.dir.join("links");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| EbpfError::io(format!("read {}", dir.display()), e))?;
        let mut ids = Vec::new();
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Per attached cgroup, what the kernel reports about its links.
    pub fn links(&self) -> Result<Vec<LinkStatus>, EbpfError> {
        let mut out = Vec::new();
        for id in self.attached_ids()? {
            let mut links = Vec::new();
            for hook in Hook::ALL {
                let pin = self.link_dir(id).join(hook.pin_name());
                if let Ok(fd) = sys::obj_get(&pin) {
                    let info = sys::link_info(fd.as_fd())
                        .map_err(|e| EbpfError::io(format!("link info {}", pin.display()), e))?;
                    links.push((hook, info));
                }
            }
            out.push(LinkStatus {
                cgroup_id: id,
                links,
            });
        }
        Ok(out)
    }

    /// Allow/deny counts per rule id (see [`CompiledPolicy::origins`] for what each id means).
    pub fn counters(&self) -> Result<BTreeMap<RuleId, Counter>, EbpfError> {
        self.maps.counters()
    }

    /// Program-level event counts.
    pub fn stats(&self) -> Result<Stats, EbpfError> {
        self.maps.stats()
    }

    /// The policy entries currently installed (read from this loader's mirror).
    pub fn installed(&self) -> &PolicyMaps {
        &self.installed
    }

    /// The installed cgroup entries: cgroup id -> config.
    pub fn cgroup_entries(&self) -> &BTreeMap<u64, CgroupVal> {
        &self.cgroups
    }

    /// Detaches every link and removes every pin of `node`: the node stops enforcing policy.
    pub fn uninstall(options: &LoaderOptions) -> Result<(), EbpfError> {
        let dir = options.pin_dir()?;
        let links = dir.join("links");
        if let Ok(entries) = std::fs::read_dir(&links) {
            for e in entries.flatten() {
                for hook in Hook::ALL {
                    let pin = e.path().join(hook.pin_name());
                    if let Ok(link) = sys::obj_get(&pin) {
                        let _ = sys::link_detach(link.as_fd());
                    }
                    remove_file_ok(&pin)?;
                }
                remove_dir_ok(&e.path())?;
            }
        }
        remove_dir_ok(&links)?;
        let maps = dir.join("maps");
        for name in ALL_MAPS {
            remove_file_ok(&maps.join(name))?;
        }
        remove_dir_ok(&maps)?;
        remove_dir_ok(&dir)?;
        Ok(())
    }

    fn link_dir(&self, cgroup_id: u64) -> PathBuf {
        self.dir.join("links").join(cgroup_id.to_string())
    }

    fn program_fd(&self, hook: Hook) -> Result<OwnedFd, EbpfError> {
        let missing = || unsupported(format!("program {} missing", hook.program()));
        let p = self.ebpf.program(hook.program()).ok_or_else(missing)?;
        let fd = match hook {
            Hook::Ingress | Hook::Egress => {
                let p: &CgroupSkb = p.try_into().map_err(|_| missing())?;
                p.fd().map_err(|_| missing())?.as_fd().try_clone_to_owned()
            }
            Hook::Connect4 | Hook::Connect6 => {
                let p: &CgroupSockAddr = p.try_into().map_err(|_| missing())?;
                p.fd().map_err(|_| missing())?.as_fd().try_clone_to_owned()
            }
        };
        fd.map_err(|e| EbpfError::io("duplicate program fd", e))
    }

    fn program_id(&self, hook: Hook) -> Result<u32, EbpfError> {
        let missing = || unsupported(format!("program {} missing", hook.program()));
        let p = self.ebpf.program(hook.program()).ok_or_else(missing)?;
        let info = p
            .info()
            .map_err(|e| EbpfError::io("program info", io::Error::other(e)))?;
        Ok(info.id())
    }
}

fn unsupported(reason: String) -> EbpfError {
    EbpfError::Unsupported { reason }
}

fn load_program(ebpf: &mut Ebpf, hook: Hook) -> Result<(), EbpfError> {
    let name = hook.program();
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| unsupported(format!("program {name} missing from the object")))?;
    let refused = |e: aya::programs::ProgramError| {
        unsupported(format!("the kernel refused program {name}: {e}"))
    };
    match hook {
        Hook::Ingress | Hook::Egress => {
            let p: &mut CgroupSkb = p.try_into().map_err(refused)?;
            p.load().map_err(refused)
        }
        Hook::Connect4 | Hook::Connect6 => {
            let p: &mut CgroupSockAddr = p.try_into().map_err(refused)?;
            p.load().map_err(refused)
        }
    }
}

fn read_abi(pin: &Path) -> Result<u32, EbpfError> {
    let map = open_map(pin.parent().unwrap_or(Path::new("/")), MAP_META)?;
    let meta: Array<MapData, Meta> = map.try_into().map_err(EbpfError::map(MAP_META))?;
    Ok(meta.get(&0, 0).map_err(EbpfError::map(MAP_META))?.abi)
}

/// The pinned link at `pin` if it is still attached to cgroup `id`; a stale pin is removed.
fn open_live_link(pin: &Path, id: u64) -> io::Result<Option<OwnedFd>> {
    let link = match sys::obj_get(pin) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if sys::link_info(link.as_fd())?.cgroup_id == id {
        return Ok(Some(link));
    }
    std::fs::remove_file(pin)?;
    Ok(None)
}

fn remove_ok(r: Result<(), aya::maps::MapError>, map: &'static str) -> Result<(), EbpfError> {
    match r {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(EbpfError::map(map)(e)),
    }
}

fn remove_file_ok(p: &Path) -> Result<(), EbpfError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(EbpfError::io(format!("remove {}", p.display()), e))
        }
        _ => Ok(()),
    }
}

fn remove_dir_ok(p: &Path) -> Result<(), EbpfError> {
    match std::fs::remove_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(EbpfError::io(format!("remove {}", p.display()), e))
        }
        _ => Ok(()),
    }
}
