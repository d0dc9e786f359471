/* The map layout shared by nexus_policy.bpf.c and the Rust loader (ebpf/src/maps.rs mirrors every
 * struct with #[repr(C)] and checks the sizes). Change NX_ABI_VERSION whenever a layout changes:
 * the loader refuses to reuse pinned maps of another version. See docs/network-policy.md. */
#ifndef NEXUS_POLICY_H
#define NEXUS_POLICY_H

#include <linux/types.h>

#define NX_ABI_VERSION 1

/* Map capacities. */
#define NX_MAX_CGROUPS 16384
#define NX_MAX_SETS 16384
#define NX_MAX_RULES 262144
#define NX_MAX_ENDPOINTS 65536
#define NX_MAX_COUNTERS 262144
#define NX_MAX_FLOWS 65536
/* Deepest cgroup level searched when a socket sits in a cgroup below a replica's cgroup. */
#define NX_MAX_LEVEL 16

/* Rule directions (nx_rule_key.dir). */
#define NX_DIR_INGRESS 1
#define NX_DIR_EGRESS 2

/* nx_set.isolation bits: the workload is isolated for connections in that direction. */
#define NX_ISOLATE_INGRESS 1
#define NX_ISOLATE_EGRESS 2

/* nx_cgroup.flags bits. */
#define NX_CGROUP_HAS_ADDR4 1
#define NX_CGROUP_HAS_ADDR6 2

/* nx_flows values: who opened a non-TCP flow. */
#define NX_FLOW_OUTBOUND 1
#define NX_FLOW_INBOUND 2

/* nx_socks value: the socket called connect() (it opened its connection). */
#define NX_SOCK_ACTIVE 1

/* Bits of the rule key before the address: set_id (32) + dir (8) + proto (8) + port (16). */
#define NX_RULE_FIXED_BITS 64

/* nx_stats indexes (per-CPU u64 counters). */
#define NX_STAT_UNMANAGED 0  /* packet or connect in an attached cgroup without a config: denied */
#define NX_STAT_LOCAL 1      /* loopback / own-address traffic: allowed */
#define NX_STAT_MALFORMED 2  /* unparsable packet in an isolated workload: denied */
#define NX_STAT_FLOW_FULL 3  /* a flow record could not be stored */
#define NX_STAT_MAX 8

/* nx_cgroups value, keyed by the cgroup v2 id (__u64) of a replica's cgroup. */
struct nx_cgroup {
	__u32 set_id;    /* the replica's policy set (its workload); 0 = none */
	__u32 flags;     /* NX_CGROUP_HAS_ADDR4 | NX_CGROUP_HAS_ADDR6 */
	__u8 addr4[16];  /* the replica's own IPv4 address, IPv4-mapped */
	__u8 addr6[16];  /* the replica's own IPv6 address */
};

/* nx_sets value, keyed by set id (__u32): one per workload. */
struct nx_set {
	__u32 isolation;           /* NX_ISOLATE_* */
	__u32 reserved;
	__u64 deny_ingress_rule;   /* counter key for ingress connections no rule allowed */
	__u64 deny_egress_rule;    /* counter key for egress connections no rule allowed */
};

/* nx_rules key (LPM trie). prefixlen counts bits from set_id on: NX_RULE_FIXED_BITS + the
 * address prefix (IPv4 prefixes are mapped: /n -> 96 + n). proto 0 and port 0 mean "any".
 * The value is the rule's counter key (__u64). */
struct nx_rule_key {
	__u32 prefixlen;
	__u32 set_id;
	__u8 dir;
	__u8 proto;
	__u16 port;      /* host byte order */
	__u8 addr[16];   /* network byte order */
};

/* nx_counters value (per-CPU hash keyed by rule counter key). */
struct nx_counter {
	__u64 packets;
	__u64 bytes;
	__u64 connects;
};

/* nx_flows key (LRU hash): a non-TCP flow of one replica cgroup. */
struct nx_flow_key {
	__u64 cgroup_id;
	__u8 addr[16];      /* the peer */
	__u16 local_port;   /* host byte order */
	__u16 remote_port;  /* host byte order */
	__u8 proto;
	__u8 pad[3];
};

/* nx_meta value (array, one entry). */
struct nx_meta {
	__u32 abi;
	__u32 reserved;
};

#endif
