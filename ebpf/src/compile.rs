//! The pure policy compiler: NetworkPolicy objects plus the current endpoints (every workload's
//! labels and replica addresses) become the entries of the kernel maps (policy sets, LPM rules,
//! endpoint addresses). Kubernetes NetworkPolicy semantics; no IO, no clock, deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use nexus_schemas::semantic::parse_cidr;
use nexus_schemas::{
    Labels, NetworkPolicySpec, Object, PolicyPeer, PolicyPort, PolicyType, Protocol, Spec,
    selector_matches,
};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// IP protocol numbers used in rule keys (0 = any protocol).
pub const PROTO_ANY: u8 = 0;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A workload, the unit policies select: (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadId {
    pub namespace: String,
    pub name: String,
}

impl WorkloadId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        WorkloadId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A workload's labels and the addresses its replicas currently have, on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadEndpoints {
    pub workload: WorkloadId,
    /// The Workload object's `metadata.labels`.
    pub labels: Labels,
    /// Replica addresses (IPv4 and/or IPv6), cluster-wide. May be empty (nothing running yet).
    pub addrs: Vec<IpAddr>,
}

/// A NetworkPolicy object: its namespace, name and spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyObject {
    pub namespace: String,
    pub name: String,
    pub spec: NetworkPolicySpec,
}

impl PolicyObject {
    /// The policy in `object`, if it is a NetworkPolicy.
    pub fn from_object(object: &Object) -> Option<Self> {
        match &object.spec {
            Spec::NetworkPolicy(spec) => Some(PolicyObject {
                namespace: object.metadata.namespace.clone(),
                name: object.metadata.name.clone(),
                spec: spec.clone(),
            }),
            _ => None,
        }
    }

    /// The directions this policy isolates: `policyTypes`, or by default Ingress plus Egress when
    /// egress rules are given.
    pub fn isolates(&self) -> Isolation {
        let types = &self.spec.policy_types;
        if types.is_empty() {
            Isolation {
                ingress: true,
                egress: !self.spec.egress.is_empty(),
            }
        } else {
            Isolation {
                ingress: types.contains(&PolicyType::Ingress),
                egress: types.contains(&PolicyType::Egress),
            }
        }
    }
}

/// Node-specific compile inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileOptions {
    /// Addresses of this node itself (its bridge gateway): connections from them into a local
    /// replica are always allowed, so health probes keep working under ingress isolation.
    pub node_addrs: Vec<IpAddr>,
}

/// A traffic direction, seen from the selected workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// The value in `nx_rule_key.dir`.
    pub fn code(self) -> u8 {
        match self {
            Direction::Ingress => 1,
            Direction::Egress => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Direction::Ingress),
            2 => Some(Direction::Egress),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which directions a workload is isolated in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Isolation {
    pub ingress: bool,
    pub egress: bool,
}

impl Isolation {
    /// `nx_set.isolation` bits.
    pub fn bits(self) -> u32 {
        u32::from(self.ingress) | (u32::from(self.egress) << 1)
    }

    pub fn from_bits(bits: u32) -> Self {
        Isolation {
            ingress: bits & 1 != 0,
            egress: bits & 2 != 0,
        }
    }

    pub fn get(self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    fn union(self, other: Isolation) -> Isolation {
        Isolation {
            ingress: self.ingress || other.ingress,
            egress: self.egress || other.egress,
        }
    }
}

/// A policy set: the kernel-side identity of one workload. Never 0 (0 means "no set").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetId(pub u32);

/// A rule's counter key (also the value stored in the rule map). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An address prefix in the IPv6 space; IPv4 prefixes are IPv4-mapped (`a.b.c.d/n` is
/// `::ffff:a.b.c.d/(96+n)`). Host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Prefix {
    /// Every address.
    pub const ANY: Prefix = Prefix {
        addr: Ipv6Addr::UNSPECIFIED,
        len: 0,
    };

    /// `addr/len` in the address's own family (len is clamped to 32 or 128).
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let (addr, len) = match addr {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 96 + len.min(32)),
            IpAddr::V6(v6) => (v6, len.min(128)),
        };
        let bits = u128::from(addr);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Prefix {
            addr: Ipv6Addr::from(bits & mask),
            len,
        }
    }

    /// A single address.
    pub fn host(addr: IpAddr) -> Self {
        Prefix::new(addr, 128)
    }

    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        Prefix::new(IpAddr::V6(addr), self.len).addr == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr.to_ipv4_mapped(), self.len >= 96) {
            (Some(v4), true) if self.len == 128 => write!(f, "{v4}"),
            (Some(v4), true) => write!(f, "{v4}/{}", self.len - 96),
            _ if self.len == 0 => f.write_str("any"),
            _ if self.len == 128 => write!(f, "{}", self.addr),
            _ => write!(f, "{}/{}", self.addr, self.len),
        }
    }
}

/// The IPv6 form of any address (IPv4 becomes IPv4-mapped), as the kernel maps store it.
pub fn to_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// One LPM rule: workload `set` allows connections in `direction` with peers in `peer` on
/// (`proto`, `port`); proto 0 + port 0 means every protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub set: SetId,
    pub direction: Direction,
    pub proto: u8,
    pub port: u16,
    pub peer: Prefix,
}

/// A workload's kernel identity and isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetEntry {
    pub id: SetId,
    pub isolation: Isolation,
    /// Counter keys of the implicit "deny everything else" rule per direction.
    pub deny_ingress: RuleId,
    pub deny_egress: RuleId,
}

impl SetEntry {
    pub fn deny_rule(&self, direction: Direction) -> RuleId {
        match direction {
            Direction::Ingress => self.deny_ingress,
            Direction::Egress => self.deny_egress,
        }
    }
}

/// Where a counter key came from (for `nexus debug troubleshoot`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleOrigin {
    /// Rule `index` of `direction` in policy `namespace/name`, applied to `workload`.
    Policy {
        policy: WorkloadId,
        direction: Direction,
        index: usize,
        workload: WorkloadId,
    },
    /// What `workload` denies in `direction` because no rule allows it.
    DefaultDeny {
        workload: WorkloadId,
        direction: Direction,
    },
    /// Connections from this node's own address into `workload` (health probes).
    Node { workload: WorkloadId, addr: IpAddr },
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleOrigin::Policy {
                policy,
                direction,
                index,
                workload,
            } => write!(f, "policy {policy} {direction}[{index}] for {workload}"),
            RuleOrigin::DefaultDeny {
                workload,
                direction,
            } => write!(f, "default deny {direction} of {workload}"),
            RuleOrigin::Node { workload, addr } => {
                write!(f, "node address {addr} into {workload}")
            }
        }
    }
}

/// Everything one node installs: the output of [`compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Every known workload (isolated or not) with its set.
    pub sets: BTreeMap<WorkloadId, SetEntry>,
    /// LPM rules of the isolated workloads. When several policy rules produce the same key, the
    /// first one (policies ordered by namespace/name, rules by index) names it.
    pub rules: BTreeMap<RuleKey, RuleId>,
    /// Replica address -> its workload's set (so connect() can check the destination's ingress).
    pub endpoints: BTreeMap<Ipv6Addr, SetId>,
    /// What every counter key means.
    pub origins: BTreeMap<RuleId, RuleOrigin>,
    /// Inputs that were skipped (they can only make policy stricter, never looser).
    pub warnings: Vec<String>,
}

impl CompiledPolicy {
    /// The set of `workload`, if it is known.
    pub fn set_of(&self, workload: &WorkloadId) -> Option<&SetEntry> {
        self.sets.get(workload)
    }

    /// The workload owning set `id`.
    pub fn workload_of(&self, id: SetId) -> Option<&WorkloadId> {
        self.sets.iter().find(|(_, s)| s.id == id).map(|(w, _)| w)
    }

    /// All rule ids the kernel counts: allow rules and every set's two deny rules.
    pub fn counter_ids(&self) -> BTreeSet<RuleId> {
        let mut ids: BTreeSet<RuleId> = self.rules.values().copied().collect();
        for s in self.sets.values() {
            ids.insert(s.deny_ingress);
            ids.insert(s.deny_egress);
        }
        ids
    }

    /// The rule allowing `workload` a connection in `direction` with `peer` on (`proto`,
    /// `port`), exactly as the kernel looks it up (longest prefix for the exact port and
    /// protocol, then for "any"). `Ok(None)`: allowed because that direction is not isolated.
    /// `Err(deny)`: denied, counted on the set's deny rule.
    pub fn lookup(
        &self,
        workload: &WorkloadId,
        direction: Direction,
        peer: IpAddr,
        proto: u8,
        port: u16,
    ) -> Result<Option<RuleId>, RuleId> {
        let Some(set) = self.sets.get(workload) else {
            return Ok(None);
        };
        if !set.isolation.get(direction) {
            return Ok(None);
        }
        let peer = to_v6(peer);
        let best = |proto: u8, port: u16| {
            self.rules
                .iter()
                .filter(|(k, _)| {
                    k.set == set.id
                        && k.direction == direction
                        && k.proto == proto
                        && k.port == port
                        && k.peer.contains(peer)
                })
                .max_by_key(|(k, _)| k.peer.len)
                .map(|(_, id)| *id)
        };
        let found = best(proto, port).or_else(|| {
            if proto == PROTO_ANY && port == 0 {
                None
            } else {
                best(PROTO_ANY, 0)
            }
        });
        found.map(Some).ok_or(set.deny_rule(direction))
    }

    /// Whether a new connection from a replica of `from` (at address `src`) to `dst` on
    /// (`proto`, `port`) is allowed: `from`'s egress rules, then the ingress rules of the
    /// workload owning `dst`, if any.
    pub fn allows(
        &self,
        from: &WorkloadId,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        port: u16,
    ) -> bool {
        if self
            .lookup(from, Direction::Egress, dst, proto, port)
            .is_err()
        {
            return false;
        }
        let Some(dst_set) = self.endpoints.get(&to_v6(dst)) else {
            return true;
        };
        match self.workload_of(*dst_set) {
            Some(to) => self
                .lookup(to, Direction::Ingress, src, proto, port)
                .is_ok(),
            None => true,
        }
    }
}

/// Compiles `policies` against `endpoints` for one node. Never fails: inputs it cannot honour
/// (a bad CIDR or port, a peer without selector or cidr) are skipped with a warning, which only
/// removes allows.
pub fn compile(
    policies: &[PolicyObject],
    endpoints: &[WorkloadEndpoints],
    options: &CompileOptions,
) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();

    // Workloads, deduplicated (a repeated workload's addresses are merged; its first labels win).
    let mut workloads: BTreeMap<WorkloadId, (Labels, BTreeSet<Ipv6Addr>)> = BTreeMap::new();
    for e in endpoints {
        let entry = workloads
            .entry(e.workload.clone())
            .or_insert_with(|| (e.labels.clone(), BTreeSet::new()));
        if entry.0 != e.labels {
            out.warnings.push(format!(
                "workload {} listed twice with different labels; using the first",
                e.workload
            ));
        }
        entry.1.extend(e.addrs.iter().map(|a| to_v6(*a)));
    }

    let ids = assign_set_ids(workloads.keys(), set_hash);
    for (w, id) in ids {
        let deny_ingress = rule_id(&["deny", &w.namespace, &w.name, "ingress"]);
        let deny_egress = rule_id(&["deny", &w.namespace, &w.name, "egress"]);
        out.sets.insert(
            w.clone(),
            SetEntry {
                id,
                isolation: Isolation::default(),
                deny_ingress,
                deny_egress,
            },
        );
        for (rid, direction) in [
            (deny_ingress, Direction::Ingress),
            (deny_egress, Direction::Egress),
        ] {
            out.origins.insert(
                rid,
                RuleOrigin::DefaultDeny {
                    workload: w.clone(),
                    direction,
                },
            );
        }
    }

    // Endpoint addresses (the first workload claiming an address keeps it).
    for (w, (_, addrs)) in &workloads {
        let Some(set) = out.sets.get(w).map(|s| s.id) else {
            continue;
        };
        for a in addrs {
            match out.endpoints.get(a) {
                Some(other) if *other != set => out.warnings.push(format!(
                    "address {a} is claimed by several workloads; kept for the first, ignored for {w}"
                )),
                _ => {
                    out.endpoints.insert(*a, set);
                }
            }
        }
    }

    let mut policies: Vec<&PolicyObject> = policies.iter().collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    for (w, (labels, _)) in &workloads {
        let selecting: Vec<&PolicyObject> = policies
            .iter()
            .copied()
            .filter(|p| p.namespace == w.namespace && selector_matches(&p.spec.selector, labels))
            .collect();
        let isolation = selecting
            .iter()
            .fold(Isolation::default(), |acc, p| acc.union(p.isolates()));
        let Some(set) = out.sets.get_mut(w) else {
            continue;
        };
        set.isolation = isolation;
        let set_id = set.id;

        for p in &selecting {
            let iso = p.isolates();
            let policy_id = WorkloadId::new(&p.namespace, &p.name);
            let mut rules: Vec<(Direction, usize, &[PolicyPeer], &[PolicyPort])> = Vec::new();
            if iso.ingress {
                for (i, r) in p.spec.ingress.iter().enumerate() {
                    rules.push((Direction::Ingress, i, &r.from, &r.ports));
                }
            }
            if iso.egress {
                for (i, r) in p.spec.egress.iter().enumerate() {
                    rules.push((Direction::Egress, i, &r.to, &r.ports));
                }
            }
            for (direction, index, peers, ports) in rules {
                let id = rule_id(&[
                    "allow",
                    &p.namespace,
                    &p.name,
                    direction.as_str(),
                    &index.to_string(),
                    &w.namespace,
                    &w.name,
                ]);
                let where_ = format!("policy {policy_id} {direction}[{index}]");
                let prefixes = resolve_peers(p, peers, &workloads, &where_, &mut out.warnings);
                let ports = resolve_ports(ports, &where_, &mut out.warnings);
                let mut used_rule = false;
                for peer in &prefixes {
                    for (proto, port) in &ports {
                        let key = RuleKey {
                            set: set_id,
                            direction,
                            proto: *proto,
                            port: *port,
                            peer: *peer,
                        };
                        if let std::collections::btree_map::Entry::Vacant(v) = out.rules.entry(key)
                        {
                            v.insert(id);
                            used_rule = true;
                        }
                    }
                }
                if used_rule {
                    out.origins.insert(
                        id,
                        RuleOrigin::Policy {
                            policy: policy_id.clone(),
                            direction,
                            index,
                            workload: w.clone(),
                        },
                    );
                }
            }
        }

        if isolation.ingress {
            for addr in &options.node_addrs {
                let key = RuleKey {
                    set: set_id,
                    direction: Direction::Ingress,
                    proto: PROTO_ANY,
                    port: 0,
                    peer: Prefix::host(*addr),
                };
                let id = rule_id(&["node", &w.namespace, &w.name, &addr.to_string()]);
                out.rules.entry(key).or_insert(id);
                out.origins.insert(
                    id,
                    RuleOrigin::Node {
                        workload: w.clone(),
                        addr: *addr,
                    },
                );
            }
        }
    }
    out
}

/// The prefixes a rule's peers cover; no peers means every address.
fn resolve_peers(
    policy: &PolicyObject,
    peers: &[PolicyPeer],
    workloads: &BTreeMap<WorkloadId, (Labels, BTreeSet<Ipv6Addr>)>,
    where_: &str,
    warnings: &mut Vec<String>,
) -> BTreeSet<Prefix> {
    let mut out = BTreeSet::new();
    if peers.is_empty() {
        out.insert(Prefix::ANY);
        return out;
    }
    for (i, peer) in peers.iter().enumerate() {
        match (&peer.selector, &peer.cidr) {
            (Some(selector), None) => {
                let ns = peer.namespace.as_deref().unwrap_or(&policy.namespace);
                for (w, (labels, addrs)) in workloads {
                    if w.namespace == ns && selector_matches(selector, labels) {
                        out.extend(addrs.iter().map(|a| Prefix::host(IpAddr::V6(*a))));
                    }
                }
            }
            (None, Some(cidr)) => match parse_cidr(cidr) {
                Some((addr, len)) => {
                    out.insert(Prefix::new(addr, len));
                }
                None => warnings.push(format!("{where_} peer {i}: invalid CIDR {cidr:?}; skipped")),
            },
            _ => warnings.push(format!(
                "{where_} peer {i}: needs exactly one of selector and cidr; skipped"
            )),
        }
    }
    out
}

/// (protocol, port) pairs of a rule; no ports means every protocol and port.
fn resolve_ports(ports: &[PolicyPort], where_: &str, warnings: &mut Vec<String>) -> Vec<(u8, u16)> {
    if ports.is_empty() {
        return vec![(PROTO_ANY, 0)];
    }
    let mut out = BTreeSet::new();
    for p in ports {
        let proto = match p.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        };
        match u16::try_from(p.port) {
            Ok(port) if port != 0 => {
                out.insert((proto, port));
            }
            _ => warnings.push(format!("{where_}: invalid port {}; skipped", p.port)),
        }
    }
    out.into_iter().collect()
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    *h.finalize().as_bytes()
}

/// A stable, non-zero counter key for a rule described by `parts`.
pub fn rule_id(parts: &[&str]) -> RuleId {
    let d = digest(parts);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    RuleId(u64::from_le_bytes(b).max(1))
}

/// Set ids: a hash of the workload, linear probing on collisions (in workload order), never 0.
fn assign_set_ids<'a>(
    workloads: impl Iterator<Item = &'a WorkloadId>,
    hash: impl Fn(&WorkloadId) -> u32,
) -> Vec<(WorkloadId, SetId)> {
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for w in workloads {
        let mut id = hash(w);
        while id == 0 || used.contains(&id) {
            id = id.wrapping_add(1);
        }
        used.insert(id);
        out.push((w.clone(), SetId(id)));
    }
    out
}

fn set_hash(w: &WorkloadId) -> u32 {
    let d = digest(&["set", &w.namespace, &w.name]);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}
