//! The kernel map layout (a mirror of `bpf/nexus_policy.h`) and the pure translation of a
//! [`CompiledPolicy`] and replica addresses into raw map entries, plus the diff between two
//! such states that the loader applies incrementally.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::compile::{CompiledPolicy, Direction, RuleKey, SetId};

/// `NX_ABI_VERSION`: bump with any layout change (the loader refuses pins of another version).
pub const ABI_VERSION: u32 = 1;
/// `NX_RULE_FIXED_BITS`: key bits before the address.
pub const RULE_FIXED_BITS: u32 = 64;

/// Map names (also their pin file names under `<pin dir>/maps/`).
pub const MAP_CGROUPS: &str = "nx_cgroups";
pub const MAP_SETS: &str = "nx_sets";
pub const MAP_RULES: &str = "nx_rules";
pub const MAP_ENDPOINTS: &str = "nx_endpoints";
pub const MAP_COUNTERS: &str = "nx_counters";
pub const MAP_FLOWS: &str = "nx_flows";
pub const MAP_SOCKS: &str = "nx_socks";
pub const MAP_STATS: &str = "nx_stats";
pub const MAP_META: &str = "nx_meta";
pub const ALL_MAPS: [&str; 9] = [
    MAP_CGROUPS,
    MAP_SETS,
    MAP_RULES,
    MAP_ENDPOINTS,
    MAP_COUNTERS,
    MAP_FLOWS,
    MAP_SOCKS,
    MAP_STATS,
    MAP_META,
];

/// `nx_cgroup.flags` bits.
pub const CGROUP_HAS_ADDR4: u32 = 1;
pub const CGROUP_HAS_ADDR6: u32 = 2;

/// `nx_stats` indexes.
pub const STAT_UNMANAGED: u32 = 0;
pub const STAT_LOCAL: u32 = 1;
pub const STAT_MALFORMED: u32 = 2;
pub const STAT_FLOW_FULL: u32 = 3;

/// `struct nx_cgroup`: the value of `nx_cgroups[cgroup id]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupVal {
    pub set_id: u32,
    pub flags: u32,
    pub addr4: [u8; 16],
    pub addr6: [u8; 16],
}

/// `struct nx_set`: the value of `nx_sets[set id]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetVal {
    pub isolation: u32,
    pub reserved: u32,
    pub deny_ingress_rule: u64,
    pub deny_egress_rule: u64,
}

/// `struct nx_rule_key` without its leading `prefixlen` (aya's `lpm_trie::Key` adds it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleData {
    pub set_id: u32,
    pub dir: u8,
    pub proto: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

/// `struct nx_counter`: per-CPU counts of one rule.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
    pub connects: u64,
}

impl std::ops::AddAssign for Counter {
    fn add_assign(&mut self, o: Counter) {
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.connects = self.connects.saturating_add(o.connects);
    }
}

/// `struct nx_meta`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub abi: u32,
    pub reserved: u32,
}

// SAFETY: plain #[repr(C)] structs of integers and byte arrays, without padding (checked below),
// so every bit pattern is a valid value and their bytes can be copied to and from the kernel.
unsafe impl aya::Pod for CgroupVal {}
unsafe impl aya::Pod for SetVal {}
unsafe impl aya::Pod for RuleData {}
unsafe impl aya::Pod for Counter {}
unsafe impl aya::Pod for Meta {}

const _: () = {
    assert!(std::mem::size_of::<CgroupVal>() == 40);
    assert!(std::mem::size_of::<SetVal>() == 24);
    assert!(std::mem::size_of::<RuleData>() == 24);
    assert!(std::mem::size_of::<Counter>() == 24);
    assert!(std::mem::size_of::<Meta>() == 8);
};

/// An LPM rule entry key: (prefixlen, data).
pub type RawRuleKey = (u32, RuleData);

impl RuleData {
    /// The raw key of a compiled rule.
    pub fn from_key(k: &RuleKey) -> RawRuleKey {
        (
            RULE_FIXED_BITS + u32::from(k.peer.len),
            RuleData {
                set_id: k.set.0,
                dir: k.direction.code(),
                proto: k.proto,
                port: k.port,
                addr: k.peer.addr.octets(),
            },
        )
    }
}

/// The replica part of a cgroup's value: its own addresses (first IPv4, first IPv6).
pub fn cgroup_val(set: Option<SetId>, addrs: &[IpAddr]) -> CgroupVal {
    let mut v = CgroupVal {
        set_id: set.map_or(0, |s| s.0),
        ..CgroupVal::default()
    };
    if let Some(IpAddr::V4(a)) = addrs.iter().find(|a| a.is_ipv4()) {
        v.addr4 = a.to_ipv6_mapped().octets();
        v.flags |= CGROUP_HAS_ADDR4;
    }
    if let Some(IpAddr::V6(a)) = addrs.iter().find(|a| a.is_ipv6()) {
        v.addr6 = a.octets();
        v.flags |= CGROUP_HAS_ADDR6;
    }
    v
}

/// The policy part of the maps (everything but the per-replica cgroup entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMaps {
    pub sets: BTreeMap<u32, SetVal>,
    pub rules: BTreeMap<RawRuleKey, u64>,
    pub endpoints: BTreeMap<[u8; 16], u32>,
    pub counters: BTreeSet<u64>,
}

impl PolicyMaps {
    /// The entries that implement `policy`.
    pub fn from_policy(policy: &CompiledPolicy) -> Self {
        let mut out = PolicyMaps::default();
        for s in policy.sets.values() {
            out.sets.insert(
                s.id.0,
                SetVal {
                    isolation: s.isolation.bits(),
                    reserved: 0,
                    deny_ingress_rule: s.deny_rule(Direction::Ingress).0,
                    deny_egress_rule: s.deny_rule(Direction::Egress).0,
                },
            );
        }
        for (k, id) in &policy.rules {
            out.rules.insert(RuleData::from_key(k), id.0);
        }
        for (a, s) in &policy.endpoints {
            out.endpoints.insert(a.octets(), s.0);
        }
        out.counters = policy.counter_ids().into_iter().map(|r| r.0).collect();
        out
    }

    pub fn len(&self) -> usize {
        self.sets.len() + self.rules.len() + self.endpoints.len() + self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Changes to one map: entries to write (new or changed) and keys to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDiff<K, V> {
    pub upsert: Vec<(K, V)>,
    pub delete: Vec<K>,
}

impl<K, V> Default for MapDiff<K, V> {
    fn default() -> Self {
        MapDiff {
            upsert: Vec::new(),
            delete: Vec::new(),
        }
    }
}

impl<K, V> MapDiff<K, V> {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.delete.is_empty()
    }
}

/// The difference between two maps.
pub fn diff_map<K: Ord + Clone, V: PartialEq + Clone>(
    have: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> MapDiff<K, V> {
    let mut d = MapDiff::default();
    for (k, v) in want {
        if have.get(k) != Some(v) {
            d.upsert.push((k.clone(), v.clone()));
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) {
            d.delete.push(k.clone());
        }
    }
    d
}

/// Everything to change to go from one [`PolicyMaps`] to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    pub sets: MapDiff<u32, SetVal>,
    pub rules: MapDiff<RawRuleKey, u64>,
    pub endpoints: MapDiff<[u8; 16], u32>,
    pub counters_add: Vec<u64>,
    pub counters_delete: Vec<u64>,
}

impl PolicyDiff {
    pub fn between(have: &PolicyMaps, want: &PolicyMaps) -> Self {
        PolicyDiff {
            sets: diff_map(&have.sets, &want.sets),
            rules: diff_map(&have.rules, &want.rules),
            endpoints: diff_map(&have.endpoints, &want.endpoints),
            counters_add: want.counters.difference(&have.counters).copied().collect(),
            counters_delete: have.counters.difference(&want.counters).copied().collect(),
        }
    }

    /// Number of map operations.
    pub fn ops(&self) -> usize {
        self.sets.upsert.len()
            + self.sets.delete.len()
            + self.rules.upsert.len()
            + self.rules.delete.len()
            + self.endpoints.upsert.len()
            + self.endpoints.delete.len()
            + self.counters_add.len()
            + self.counters_delete.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{
        CompileOptions, PolicyObject, Prefix, RuleKey, WorkloadEndpoints, WorkloadId, compile,
    };

    fn policy_and_endpoints(port: u32) -> CompiledPolicy {
        let spec = serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": port}]}]
        });
        let p = PolicyObject {
            namespace: "default".into(),
            name: "p".into(),
            spec: serde_json::from_value(spec).expect("spec"),
        };
        let eps = vec![
            WorkloadEndpoints {
                workload: WorkloadId::new("default", "web"),
                labels: [("app".to_string(), "web".to_string())].into(),
                addrs: vec!["10.0.0.2".parse().expect("ip")],
            },
            WorkloadEndpoints {
                workload: WorkloadId::new("default", "api"),
                labels: [("app".to_string(), "api".to_string())].into(),
                addrs: vec!["10.0.0.3".parse().expect("ip")],
            },
        ];
        compile(&[p], &eps, &CompileOptions::default())
    }

    #[test]
    fn rule_keys_are_prefix_bits_after_the_fixed_part() {
        let k = RuleKey {
            set: SetId(7),
            direction: Direction::Egress,
            proto: 6,
            port: 8080,
            peer: Prefix::new("10.1.0.0".parse().expect("ip"), 16),
        };
        let (len, d) = RuleData::from_key(&k);
        assert_eq!(len, 64 + 96 + 16);
        assert_eq!((d.set_id, d.dir, d.proto, d.port), (7, 2, 6, 8080));
        assert_eq!(&d.addr[10..14], &[0xff, 0xff, 10, 1]);
        assert_eq!(&d.addr[14..], &[0, 0]);
    }

    #[test]
    fn cgroup_values_carry_one_address_per_family() {
        let v = cgroup_val(
            Some(SetId(3)),
            &[
                "10.0.0.2".parse().expect("ip"),
                "10.0.0.9".parse().expect("ip"),
                "fd00::2".parse().expect("ip"),
            ],
        );
        assert_eq!(v.set_id, 3);
        assert_eq!(v.flags, CGROUP_HAS_ADDR4 | CGROUP_HAS_ADDR6);
        assert_eq!(&v.addr4[12..], &[10, 0, 0, 2]);
        assert_eq!(v.addr6[0], 0xfd);
        let none = cgroup_val(None, &[]);
        assert_eq!((none.set_id, none.flags), (0, 0));
    }

    #[test]
    fn a_port_change_rewrites_only_the_rule() {
        let a = PolicyMaps::from_policy(&policy_and_endpoints(8080));
        let b = PolicyMaps::from_policy(&policy_and_endpoints(9090));
        let d = PolicyDiff::between(&a, &b);
        assert_eq!(d.rules.upsert.len(), 1);
        assert_eq!(d.rules.delete.len(), 1);
        assert!(d.sets.is_empty() && d.endpoints.is_empty());
        assert!(d.counters_add.is_empty() && d.counters_delete.is_empty());
        assert_eq!(d.ops(), 2);
        assert_eq!(PolicyDiff::between(&b, &b).ops(), 0);
    }

    #[test]
    fn from_empty_everything_is_added() {
        let want = PolicyMaps::from_policy(&policy_and_endpoints(8080));
        let d = PolicyDiff::between(&PolicyMaps::default(), &want);
        assert_eq!(d.ops(), want.len());
        assert_eq!(want.sets.len(), 2);
        assert_eq!(want.rules.len(), 1);
        assert_eq!(want.endpoints.len(), 2);
        // One allow rule and two deny rules per set.
        assert_eq!(want.counters.len(), 5);
    }
}
