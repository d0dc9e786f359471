//! Read access to a node's pinned maps, shared by the loader and by [`Inspector`], which opens
//! them without loading or attaching anything (for `nexus debug troubleshoot` next to a running
//! agent): installed entries, allow/deny counters, program statistics.

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap};

use crate::compile::RuleId;
use crate::error::EbpfError;
use crate::loader::LoaderOptions;
use crate::maps::*;

/// Program-level event counts (`nx_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets/connects in an attached cgroup without a config (denied).
    pub unmanaged: u64,
    /// Loopback or own-address traffic (always allowed).
    pub local: u64,
    /// Unparsable packets in an isolated workload (denied).
    pub malformed: u64,
    /// Flow records that could not be stored.
    pub flow_full: u64,
}

/// Typed handles on the pinned maps.
pub(crate) struct Maps {
    pub(crate) cgroups: HashMap<MapData, u64, CgroupVal>,
    pub(crate) sets: HashMap<MapData, u32, SetVal>,
    pub(crate) rules: LpmTrie<MapData, RuleData, u64>,
    pub(crate) endpoints: HashMap<MapData, [u8; 16], u32>,
    pub(crate) counters: PerCpuHashMap<MapData, u64, Counter>,
    pub(crate) stats: PerCpuArray<MapData, u64>,
    pub(crate) meta: Array<MapData, Meta>,
}

pub(crate) fn open_map(dir: &Path, name: &'static str) -> Result<Map, EbpfError> {
    let data = MapData::from_pin(dir.join(name)).map_err(EbpfError::map(name))?;
    Map::from_map_data(data).map_err(EbpfError::map(name))
}

impl Maps {
    pub(crate) fn open(dir: &Path) -> Result<Self, EbpfError> {
        Ok(Maps {
            cgroups: open_map(dir, MAP_CGROUPS)?
                .try_into()
                .map_err(EbpfError::map(MAP_CGROUPS))?,
            sets: open_map(dir, MAP_SETS)?
                .try_into()
                .map_err(EbpfError::map(MAP_SETS))?,
            rules: open_map(dir, MAP_RULES)?
                .try_into()
                .map_err(EbpfError::map(MAP_RULES))?,
            endpoints: open_map(dir, MAP_ENDPOINTS)?
                .try_into()
                .map_err(EbpfError::map(MAP_ENDPOINTS))?,
            counters: open_map(dir, MAP_COUNTERS)?
                .try_into()
                .map_err(EbpfError::map(MAP_COUNTERS))?,
            stats: open_map(dir, MAP_STATS)?
                .try_into()
                .map_err(EbpfError::map(MAP_STATS))?,
            meta: open_map(dir, MAP_META)?
                .try_into()
                .map_err(EbpfError::map(MAP_META))?,
        })
    }

    /// Reads the policy maps back (after a restart: what the previous agent installed).
    pub(crate) fn read_policy(&self) -> Result<PolicyMaps, EbpfError> {
        let mut out = PolicyMaps::default();
        for e in self.sets.iter() {
            let (k, v) = e.map_err(EbpfError::map(MAP_SETS))?;
            out.sets.insert(k, v);
        }
        for e in self.rules.iter() {
            let (k, v) = e.map_err(EbpfError::map(MAP_RULES))?;
            out.rules.insert((k.prefix_len(), k.data()), v);
        }
        for e in self.endpoints.iter() {
            let (k, v) = e.map_err(EbpfError::map(MAP_ENDPOINTS))?;
            out.endpoints.insert(k, v);
        }
        for k in self.counters.keys() {
            out.counters
                .insert(k.map_err(EbpfError::map(MAP_COUNTERS))?);
        }
        Ok(out)
    }

    pub(crate) fn read_cgroups(&self) -> Result<BTreeMap<u64, CgroupVal>, EbpfError> {
        let mut out = BTreeMap::new();
        for e in self.cgroups.iter() {
            let (k, v) = e.map_err(EbpfError::map(MAP_CGROUPS))?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Allow/deny counts per rule, summed over CPUs.
    pub(crate) fn counters(&self) -> Result<BTreeMap<RuleId, Counter>, EbpfError> {
        let mut out = BTreeMap::new();
        for e in self.counters.iter() {
            let (k, per_cpu) = e.map_err(EbpfError::map(MAP_COUNTERS))?;
            let mut sum = Counter::default();
            for c in per_cpu.iter() {
                sum += *c;
            }
            out.insert(RuleId(k), sum);
        }
        Ok(out)
    }

    pub(crate) fn stats(&self) -> Result<Stats, EbpfError> {
        let get = |i: u32| -> Result<u64, EbpfError> {
            let v = self.stats.get(&i, 0).map_err(EbpfError::map(MAP_STATS))?;
            Ok(v.iter().fold(0u64, |a, b| a.saturating_add(*b)))
        };
        Ok(Stats {
            unmanaged: get(STAT_UNMANAGED)?,
            local: get(STAT_LOCAL)?,
            malformed: get(STAT_MALFORMED)?,
            flow_full: get(STAT_FLOW_FULL)?,
        })
    }
}

/// Read-only access to a node's pinned maps.
pub struct Inspector {
    maps: Maps,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").finish_non_exhaustive()
    }
}

impl Inspector {
    /// Opens the pinned maps of `options.node` (they exist once a loader ran on the node).
    pub fn open(options: &LoaderOptions) -> Result<Self, EbpfError> {
        let dir = options.pin_dir()?.join("maps");
        Ok(Inspector {
            maps: Maps::open(&dir)?,
        })
    }

    /// Allow/deny counts per rule id, summed over CPUs.
    pub fn counters(&self) -> Result<BTreeMap<RuleId, Counter>, EbpfError> {
        self.maps.counters()
    }

    /// Program-level event counts.
    pub fn stats(&self) -> Result<Stats, EbpfError> {
        self.maps.stats()
    }

    /// The installed policy entries.
    pub fn installed(&self) -> Result<PolicyMaps, EbpfError> {
        self.maps.read_policy()
    }

    /// The installed replica cgroup entries.
    pub fn cgroups(&self) -> Result<BTreeMap<u64, CgroupVal>, EbpfError> {
        self.maps.read_cgroups()
    }
}
