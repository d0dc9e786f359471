/* nexus network policy: cgroup_skb ingress/egress filters and cgroup connect4/connect6 hooks.
 *
 * One copy of these programs is loaded per node and attached to every replica's cgroup (cgroup v2).
 * A replica's cgroup id selects its policy set (its workload); rules are an LPM trie keyed by
 * (set, direction, protocol, port, peer prefix). Connections are judged in the direction they
 * were opened in: a TCP socket that called connect() is "active" (marked in socket storage by the
 * connect hook), so its packets are checked against the egress rules with the remote port, and
 * every other TCP socket is "passive", so its packets are checked against the ingress rules with
 * the local port. Replies of an allowed connection therefore pass, and a policy change applies to
 * established connections at their next packet. Non-TCP flows remember who sent first in an LRU
 * table. See docs/network-policy.md. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "nexus_policy.h"

#define NX_PASS 1
#define NX_DROP 0

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NX_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct nx_cgroup);
} nx_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NX_MAX_SETS);
	__type(key, __u32);
	__type(value, struct nx_set);
} nx_sets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, NX_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nx_rule_key);
	__type(value, __u64);
} nx_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NX_MAX_ENDPOINTS);
	__type(key, __u8[16]);
	__type(value, __u32);
} nx_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NX_MAX_COUNTERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct nx_counter);
} nx_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NX_MAX_FLOWS);
	__type(key, struct nx_flow_key);
	__type(value, __u32);
} nx_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} nx_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NX_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} nx_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nx_meta);
} nx_meta SEC(".maps");

/* A parsed packet from the replica's point of view. */
struct nx_pkt {
	__u8 peer[16] __attribute__((aligned(8)));
	__u8 local[16] __attribute__((aligned(8)));
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
};

static __always_inline void nx_stat(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&nx_stats, &index);

	if (v)
		*v += 1;
}

static __always_inline void nx_count(__u64 rule, __u32 bytes, int connect)
{
	struct nx_counter *c;

	if (!rule)
		return;
	c = bpf_map_lookup_elem(&nx_counters, &rule);
	if (!c)
		return;
	if (connect) {
		c->connects += 1;
	} else {
		c->packets += 1;
		c->bytes += bytes;
	}
}

/* The counter key of the first rule of `set_id` that allows (dir, proto, port, peer), or 0. */
static __always_inline __u64 nx_match(__u32 set_id, __u8 dir, __u8 proto, __u16 port,
				      const __u8 *peer)
{
	struct nx_rule_key key = {};
	__u64 *rule;

	key.prefixlen = NX_RULE_FIXED_BITS + 128;
	key.set_id = set_id;
	key.dir = dir;
	key.proto = proto;
	key.port = port;
	__builtin_memcpy(key.addr, peer, 16);
	rule = bpf_map_lookup_elem(&nx_rules, &key);
	if (rule)
		return *rule;
	if (proto == 0 && port == 0)
		return 0;
	key.proto = 0;
	key.port = 0;
	rule = bpf_map_lookup_elem(&nx_rules, &key);
	if (rule)
		return *rule;
	return 0;
}

static __always_inline int nx_addr_eq(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a;
	const __u64 *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* Traffic that never leaves the replica: loopback addresses, or the replica talking to itself. */
static __always_inline int nx_is_local(const __u8 *peer, const __u8 *local,
				       const struct nx_cgroup *cg)
{
	const __u32 *w = (const __u32 *)peer;

	/* ::1 */
	if (w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1))
		return 1;
	/* ::ffff:127.0.0.0/104 */
	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff) && peer[12] == 127)
		return 1;
	if (local && nx_addr_eq(peer, local))
		return 1;
	if ((cg->flags & NX_CGROUP_HAS_ADDR4) && nx_addr_eq(peer, cg->addr4))
		return 1;
	if ((cg->flags & NX_CGROUP_HAS_ADDR6) && nx_addr_eq(peer, cg->addr6))
		return 1;
	return 0;
}

static __always_inline int nx_is_v4(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

static __always_inline void nx_map_v4(__u8 *out, __u32 addr)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = addr;
}

/* Parses the IP header (cgroup_skb data starts at the network header) and the ports of TCP and
 * UDP. Returns 0 on success. */
static __always_inline int nx_parse(struct __sk_buff *skb, int egress, struct nx_pkt *p)
{
	__u8 first;
	__u32 l4 = 0;
	__u16 ports[2] = {0, 0};
	__u8 *src = egress ? p->local : p->peer;
	__u8 *dst = egress ? p->peer : p->local;

	if (bpf_skb_load_bytes(skb, 0, &first, 1))
		return -1;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		nx_map_v4(src, ip.saddr);
		nx_map_v4(dst, ip.daddr);
		p->proto = ip.protocol;
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0; /* a later fragment carries no ports */
		l4 = (__u32)ip.ihl * 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		__builtin_memcpy(src, &ip6.saddr, 16);
		__builtin_memcpy(dst, &ip6.daddr, 16);
		p->proto = ip6.nexthdr;
		l4 = sizeof(ip6);
	} else {
		return -1;
	}
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
		if (l4 < 20 || l4 > 60 + 20)
			return -1;
		if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
			return -1;
		if (egress) {
			p->local_port = bpf_ntohs(ports[0]);
			p->remote_port = bpf_ntohs(ports[1]);
		} else {
			p->local_port = bpf_ntohs(ports[1]);
			p->remote_port = bpf_ntohs(ports[0]);
		}
	}
	return 0;
}

/* The config of the replica owning the packet's socket: its cgroup, else the deepest ancestor
 * with a config (a cgroup the workload created below its own). */
static __always_inline struct nx_cgroup *nx_cgroup_skb(struct __sk_buff *skb, __u64 *id_out)
{
	__u64 id = bpf_skb_cgroup_id(skb);
	struct nx_cgroup *cg = bpf_map_lookup_elem(&nx_cgroups, &id);
	int level;

	if (cg) {
		*id_out = id;
		return cg;
	}
	for (level = NX_MAX_LEVEL; level > 0; level--) {
		id = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!id)
			continue;
		cg = bpf_map_lookup_elem(&nx_cgroups, &id);
		if (cg) {
			*id_out = id;
			return cg;
		}
	}
	return 0;
}

static __always_inline struct nx_cgroup *nx_cgroup_current(void)
{
	__u64 id = bpf_get_current_cgroup_id();
	struct nx_cgroup *cg = bpf_map_lookup_elem(&nx_cgroups, &id);
	int level;

	if (cg)
		return cg;
	for (level = NX_MAX_LEVEL; level > 0; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		cg = bpf_map_lookup_elem(&nx_cgroups, &id);
		if (cg)
			return cg;
	}
	return 0;
}

/* Did this TCP socket open its connection itself? */
static __always_inline int nx_sock_active(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;
	__u32 *mark;

	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	mark = bpf_sk_storage_get(&nx_socks, sk, 0, 0);
	return mark && *mark == NX_SOCK_ACTIVE;
}

static __always_inline int nx_filter(struct __sk_buff *skb, int egress)
{
	struct nx_pkt p = {};
	struct nx_flow_key fk = {};
	struct nx_cgroup *cg;
	struct nx_set *set;
	__u64 cgid = 0;
	__u64 rule;
	__u32 *flow = 0;
	__u32 outbound;
	__u32 isolation;
	__u32 set_id;
	__u8 dir;
	__u16 port;

	cg = nx_cgroup_skb(skb, &cgid);
	if (!cg) {
		nx_stat(NX_STAT_UNMANAGED);
		return NX_DROP;
	}
	set_id = cg->set_id;
	set = bpf_map_lookup_elem(&nx_sets, &set_id);
	if (!set)
		return NX_PASS;
	isolation = set->isolation;
	if (!isolation)
		return NX_PASS;
	if (nx_parse(skb, egress, &p)) {
		nx_stat(NX_STAT_MALFORMED);
		if (isolation & (egress ? NX_ISOLATE_EGRESS : NX_ISOLATE_INGRESS))
			return NX_DROP;
		return NX_PASS;
	}
	if (nx_is_local(p.peer, p.local, cg)) {
		nx_stat(NX_STAT_LOCAL);
		return NX_PASS;
	}

	/* Which way was this connection opened? */
	if (p.proto == IPPROTO_TCP) {
		outbound = nx_sock_active(skb);
	} else {
		fk.cgroup_id = cgid;
		__builtin_memcpy(fk.addr, p.peer, 16);
		fk.local_port = p.local_port;
		fk.remote_port = p.remote_port;
		fk.proto = p.proto;
		flow = bpf_map_lookup_elem(&nx_flows, &fk);
		if (flow)
			outbound = *flow == NX_FLOW_OUTBOUND;
		else
			outbound = egress; /* this packet opens the flow */
	}

	if (outbound) {
		dir = NX_DIR_EGRESS;
		port = p.remote_port;
		if (!(isolation & NX_ISOLATE_EGRESS))
			goto allowed;
	} else {
		dir = NX_DIR_INGRESS;
		port = p.local_port;
		if (!(isolation & NX_ISOLATE_INGRESS))
			goto allowed;
	}
	rule = nx_match(set_id, dir, p.proto, port, p.peer);
	if (!rule) {
		nx_count(dir == NX_DIR_EGRESS ? set->deny_egress_rule : set->deny_ingress_rule,
			 skb->len, 0);
		return NX_DROP;
	}
	nx_count(rule, skb->len, 0);
allowed:
	if (p.proto != IPPROTO_TCP && !flow) {
		__u32 v = outbound ? NX_FLOW_OUTBOUND : NX_FLOW_INBOUND;
		long err = bpf_map_update_elem(&nx_flows, &fk, &v, BPF_NOEXIST);

		if (err && err != -17 /* EEXIST: another CPU recorded it first */)
			nx_stat(NX_STAT_FLOW_FULL);
	}
	return NX_PASS;
}

SEC("cgroup_skb/ingress")
int nexus_ingress(struct __sk_buff *skb)
{
	return nx_filter(skb, 0);
}

SEC("cgroup_skb/egress")
int nexus_egress(struct __sk_buff *skb)
{
	return nx_filter(skb, 1);
}

/* connect(): the replica's egress rules, then (for a destination that is a known replica) that
 * replica's ingress rules, so a connection either side would refuse fails at once with EPERM
 * instead of timing out. Allowed TCP sockets are marked active. */
static __always_inline int nx_connect(struct bpf_sock_addr *ctx, const __u8 *peer)
{
	struct nx_cgroup *cg = nx_cgroup_current();
	struct nx_set *set;
	struct nx_set *dset;
	__u32 set_id;
	__u32 *dst_set;
	__u32 proto = ctx->protocol;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u64 rule;
	__u32 *mark;
	const __u8 *own;

	if (!cg) {
		nx_stat(NX_STAT_UNMANAGED);
		return NX_DROP;
	}
	if (nx_is_local(peer, 0, cg)) {
		nx_stat(NX_STAT_LOCAL);
		goto allowed;
	}
	set_id = cg->set_id;
	set = bpf_map_lookup_elem(&nx_sets, &set_id);
	if (set && (set->isolation & NX_ISOLATE_EGRESS)) {
		rule = nx_match(set_id, NX_DIR_EGRESS, proto, port, peer);
		if (!rule) {
			nx_count(set->deny_egress_rule, 0, 1);
			return NX_DROP;
		}
		nx_count(rule, 0, 1);
	}
	/* The source address the destination will see: the replica's own one of the same family. */
	if (nx_is_v4(peer)) {
		if (!(cg->flags & NX_CGROUP_HAS_ADDR4))
			goto allowed;
		own = cg->addr4;
	} else {
		if (!(cg->flags & NX_CGROUP_HAS_ADDR6))
			goto allowed;
		own = cg->addr6;
	}
	dst_set = bpf_map_lookup_elem(&nx_endpoints, peer);
	if (!dst_set)
		goto allowed;
	set_id = *dst_set;
	dset = bpf_map_lookup_elem(&nx_sets, &set_id);
	if (!dset || !(dset->isolation & NX_ISOLATE_INGRESS))
		goto allowed;
	rule = nx_match(set_id, NX_DIR_INGRESS, proto, port, own);
	if (!rule) {
		nx_count(dset->deny_ingress_rule, 0, 1);
		return NX_DROP;
	}
	nx_count(rule, 0, 1);
allowed:
	if (proto == IPPROTO_TCP && ctx->sk) {
		mark = bpf_sk_storage_get(&nx_socks, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (mark)
			*mark = NX_SOCK_ACTIVE;
	}
	return NX_PASS;
}

SEC("cgroup/connect4")
int nexus_connect4(struct bpf_sock_addr *ctx)
{
	__u8 peer[16] __attribute__((aligned(8)));

	nx_map_v4(peer, ctx->user_ip4);
	return nx_connect(ctx, peer);
}

SEC("cgroup/connect6")
int nexus_connect6(struct bpf_sock_addr *ctx)
{
	__u8 peer[16] __attribute__((aligned(8)));
	__u32 *w = (__u32 *)peer;

	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	return nx_connect(ctx, peer);
}

char LICENSE[] SEC("license") = "Apache-2.0";
