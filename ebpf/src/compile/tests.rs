//! Table tests of the policy compiler: Kubernetes NetworkPolicy semantics, checked through
//! `CompiledPolicy::lookup`/`allows` (the same longest-prefix lookup the kernel does) and on the
//! raw entries.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn wl(ns: &str, name: &str, l: &[(&str, &str)], addrs: &[&str]) -> WorkloadEndpoints {
    WorkloadEndpoints {
        workload: WorkloadId::new(ns, name),
        labels: labels(l),
        addrs: addrs.iter().map(|a| ip(a)).collect(),
    }
}

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> PolicyObject {
    PolicyObject {
        namespace: ns.into(),
        name: name.into(),
        spec: serde_json::from_value(spec).expect("test policy spec"),
    }
}

fn id(ns: &str, name: &str) -> WorkloadId {
    WorkloadId::new(ns, name)
}

/// web, api (two replicas on two nodes), db in `default`; web in `prod`; an unlabelled job.
fn cluster() -> Vec<WorkloadEndpoints> {
    vec![
        wl(
            "default",
            "web",
            &[("app", "web")],
            &["10.0.1.2", "fd00::2"],
        ),
        wl(
            "default",
            "api",
            &[("app", "api"), ("tier", "backend")],
            &["10.0.1.3", "10.0.2.3", "fd00::3"],
        ),
        wl(
            "default",
            "db",
            &[("app", "db"), ("tier", "backend")],
            &["10.0.2.4"],
        ),
        wl("prod", "web", &[("app", "web")], &["10.0.3.5"]),
        wl("default", "job", &[], &[]),
    ]
}

fn web_to_api_8080() -> PolicyObject {
    policy(
        "default",
        "api-from-web",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": 8080}]}]
        }),
    )
}

fn compiled(policies: &[PolicyObject]) -> CompiledPolicy {
    compile(policies, &cluster(), &CompileOptions::default())
}

const TCP: u8 = PROTO_TCP;
const UDP: u8 = PROTO_UDP;

/// (from workload, from address, to address, proto, port, allowed)
type Case<'a> = (&'a str, &'a str, &'a str, u8, u16, bool);

fn check(c: &CompiledPolicy, cases: &[Case<'_>]) {
    for (i, (from, src, dst, proto, port, want)) in cases.iter().enumerate() {
        let (ns, name) = from.split_once('/').expect("ns/name");
        let got = c.allows(&id(ns, name), ip(src), ip(dst), *proto, *port);
        assert_eq!(
            got, *want,
            "case {i}: {from} {src} -> {dst} proto {proto} port {port}"
        );
    }
}

#[test]
fn no_policy_isolates_nothing() {
    let c = compiled(&[]);
    assert!(c.rules.is_empty());
    assert!(c.sets.values().all(|s| s.isolation == Isolation::default()));
    check(
        &c,
        &[
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 9999, true),
            ("default/web", "10.0.1.2", "8.8.8.8", UDP, 53, true),
        ],
    );
}

#[test]
fn allow_web_to_api_8080_only() {
    let c = compiled(&[web_to_api_8080()]);
    let api = c.set_of(&id("default", "api")).expect("api set");
    assert_eq!(
        api.isolation,
        Isolation {
            ingress: true,
            egress: false
        }
    );
    assert_eq!(
        c.set_of(&id("default", "web")).map(|s| s.isolation),
        Some(Isolation::default())
    );
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, true),
            ("default/web", "10.0.1.2", "10.0.2.3", TCP, 8080, true),
            ("default/web", "fd00::2", "fd00::3", TCP, 8080, true),
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 9090, false),
            ("default/web", "10.0.1.2", "10.0.1.3", UDP, 8080, false),
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 8080, false),
            ("prod/web", "10.0.3.5", "10.0.1.3", TCP, 8080, false),
            // api's egress is not isolated, db is not isolated at all.
            ("default/api", "10.0.1.3", "10.0.2.4", TCP, 5432, true),
            ("default/web", "10.0.1.2", "10.0.2.4", TCP, 5432, true),
        ],
    );
    // One entry per web address (IPv4 and IPv6), all TCP 8080 host routes.
    let api_rules: Vec<_> = c.rules.keys().filter(|k| k.set == api.id).collect();
    assert_eq!(api_rules.len(), 2, "{api_rules:?}");
    assert!(
        api_rules
            .iter()
            .all(|k| k.proto == TCP && k.port == 8080 && k.peer.len == 128)
    );
}

#[test]
fn peer_namespace_selects_other_namespace() {
    let p = policy(
        "default",
        "api-from-prod-web",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "web"}, "namespace": "prod"}]}]
        }),
    );
    let c = compiled(&[p]);
    check(
        &c,
        &[
            ("prod/web", "10.0.3.5", "10.0.1.3", TCP, 1234, true),
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 1234, false),
        ],
    );
}

#[test]
fn empty_from_is_any_peer_and_empty_ports_every_port() {
    let p = policy(
        "default",
        "p",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"ports": [{"port": 443}]}, {"from": [{"selector": {"app": "db"}}]}]
        }),
    );
    let c = compiled(&[p]);
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 443, true),
            ("prod/web", "10.0.3.5", "10.0.1.3", TCP, 443, true),
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 80, false),
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 80, true),
            ("default/db", "10.0.2.4", "10.0.1.3", UDP, 5353, true),
        ],
    );
    // No ports: protocol-less traffic (ICMP, proto 1) from db is allowed too.
    assert!(
        c.lookup(
            &id("default", "api"),
            Direction::Ingress,
            ip("10.0.2.4"),
            1,
            0
        )
        .is_ok()
    );
    assert!(
        c.lookup(
            &id("default", "api"),
            Direction::Ingress,
            ip("10.0.1.2"),
            1,
            0
        )
        .is_err()
    );
}

#[test]
fn ingress_without_rules_denies_all_ingress() {
    let p = policy(
        "default",
        "deny",
        serde_json::json!({"selector": {"app": "api"}}),
    );
    let c = compiled(&[p]);
    assert!(c.rules.is_empty());
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, false),
            ("default/api", "10.0.1.3", "10.0.2.4", TCP, 5432, true),
        ],
    );
}

#[test]
fn egress_type_without_rules_denies_all_egress_only() {
    let p = policy(
        "default",
        "no-egress",
        serde_json::json!({"selector": {"app": "web"}, "policyTypes": ["Egress"]}),
    );
    let c = compiled(&[p]);
    assert_eq!(
        c.set_of(&id("default", "web")).map(|s| s.isolation),
        Some(Isolation {
            ingress: false,
            egress: true
        })
    );
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, false),
            ("default/web", "10.0.1.2", "1.1.1.1", UDP, 53, false),
            ("default/db", "10.0.2.4", "10.0.1.2", TCP, 80, true),
        ],
    );
}

#[test]
fn egress_rules_isolate_egress_by_default() {
    let p = policy(
        "default",
        "web-out",
        serde_json::json!({
            "selector": {"app": "web"},
            "egress": [{"to": [{"selector": {"app": "api"}}], "ports": [{"port": 8080}]}]
        }),
    );
    let c = compiled(&[p]);
    assert_eq!(
        c.set_of(&id("default", "web")).map(|s| s.isolation),
        Some(Isolation {
            ingress: true,
            egress: true
        })
    );
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, true),
            ("default/web", "10.0.1.2", "10.0.2.3", TCP, 8080, true),
            ("default/web", "10.0.1.2", "10.0.2.4", TCP, 8080, false),
            ("default/web", "10.0.1.2", "93.184.216.34", TCP, 443, false),
            // web is ingress-isolated with no ingress rules: nobody may connect to it.
            ("default/api", "10.0.1.3", "10.0.1.2", TCP, 80, false),
        ],
    );
}

#[test]
fn rules_of_directions_not_in_policy_types_are_ignored() {
    let p = policy(
        "default",
        "egress-only",
        serde_json::json!({
            "selector": {"app": "api"},
            "policyTypes": ["Egress"],
            "ingress": [{"from": [{"selector": {"app": "web"}}]}],
            "egress": [{"ports": [{"port": 5432}]}]
        }),
    );
    let c = compiled(&[p]);
    let api = c.set_of(&id("default", "api")).expect("api");
    assert!(!api.isolation.ingress && api.isolation.egress);
    assert!(c.rules.keys().all(|k| k.direction == Direction::Egress));
    check(
        &c,
        &[
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 1, true),
            ("default/api", "10.0.1.3", "10.0.2.4", TCP, 5432, true),
            ("default/api", "10.0.1.3", "10.0.2.4", TCP, 5433, false),
        ],
    );
}

#[test]
fn policies_add_up() {
    let a = web_to_api_8080();
    let b = policy(
        "default",
        "api-from-db",
        serde_json::json!({
            "selector": {"tier": "backend"},
            "ingress": [{"from": [{"selector": {"app": "db"}}], "ports": [{"port": 9090}]}]
        }),
    );
    let c = compiled(&[a, b]);
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, true),
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 9090, true),
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 9090, false),
            ("default/db", "10.0.2.4", "10.0.1.3", TCP, 8080, false),
            // db is selected by the second policy as well: isolated, only db may reach 9090.
            ("default/web", "10.0.1.2", "10.0.2.4", TCP, 9090, false),
            ("default/api", "10.0.1.3", "10.0.2.4", TCP, 9090, false),
        ],
    );
}

#[test]
fn empty_selector_selects_whole_namespace_only() {
    let p = policy(
        "default",
        "default-deny",
        serde_json::json!({"selector": {}}),
    );
    let c = compiled(&[p]);
    for (w, s) in &c.sets {
        assert_eq!(s.isolation.ingress, w.namespace == "default", "{w}");
        assert!(!s.isolation.egress);
    }
    check(
        &c,
        &[
            ("prod/web", "10.0.3.5", "10.0.1.3", TCP, 8080, false),
            ("default/api", "10.0.1.3", "10.0.3.5", TCP, 8080, true),
        ],
    );
}

#[test]
fn multi_label_selectors_need_every_label() {
    let p = policy(
        "default",
        "backend",
        serde_json::json!({"selector": {"tier": "backend", "app": "db"}}),
    );
    let c = compiled(&[p]);
    assert!(c.sets[&id("default", "db")].isolation.ingress);
    assert!(!c.sets[&id("default", "api")].isolation.ingress);
}

#[test]
fn cidr_peers_match_by_longest_prefix() {
    let p = policy(
        "default",
        "cidrs",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [
                {"from": [{"cidr": "10.0.0.0/8"}], "ports": [{"port": 8080}]},
                {"from": [{"cidr": "10.0.2.0/24"}], "ports": [{"port": 8080}]},
                {"from": [{"cidr": "fd00::/64"}]}
            ]
        }),
    );
    let c = compiled(&[p]);
    let api = id("default", "api");
    let wide = c
        .lookup(&api, Direction::Ingress, ip("10.9.9.9"), TCP, 8080)
        .expect("10/8 allowed");
    let narrow = c
        .lookup(&api, Direction::Ingress, ip("10.0.2.4"), TCP, 8080)
        .expect("10.0.2/24 allowed");
    assert_ne!(wide, narrow, "the more specific rule is counted");
    assert!(matches!(
        wide.and_then(|r| c.origins.get(&r)),
        Some(RuleOrigin::Policy { index: 0, .. })
    ));
    assert!(matches!(
        narrow.and_then(|r| c.origins.get(&r)),
        Some(RuleOrigin::Policy { index: 1, .. })
    ));
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, true),
            ("default/web", "10.0.1.2", "10.0.1.3", TCP, 80, false),
            ("default/web", "fd00::2", "fd00::3", TCP, 80, true),
            ("default/web", "fd00:0:0:1::2", "fd00::3", TCP, 80, false),
        ],
    );
    assert!(
        c.lookup(&api, Direction::Ingress, ip("192.168.1.1"), TCP, 8080)
            .is_err()
    );
    // An IPv4 /8 is ::ffff:10.0.0.0/104.
    assert!(
        c.rules
            .keys()
            .any(|k| k.peer.len == 104 && k.peer.addr == ip4m("10.0.0.0"))
    );
}

fn ip4m(s: &str) -> Ipv6Addr {
    to_v6(ip(s))
}

#[test]
fn cidr_host_bits_are_masked() {
    assert_eq!(
        Prefix::new(ip("10.1.2.3"), 8),
        Prefix::new(ip("10.0.0.0"), 8)
    );
    assert_eq!(Prefix::new(ip("10.1.2.3"), 8).to_string(), "10.0.0.0/8");
    assert_eq!(Prefix::new(ip("fd00::1:2"), 64).to_string(), "fd00::/64");
    assert_eq!(Prefix::host(ip("10.1.2.3")).to_string(), "10.1.2.3");
    assert_eq!(Prefix::ANY.to_string(), "any");
    assert_eq!(Prefix::new(ip("0.0.0.0"), 0).len, 96);
    assert!(Prefix::new(ip("0.0.0.0"), 0).contains(ip4m("1.2.3.4")));
    assert!(!Prefix::new(ip("0.0.0.0"), 0).contains("fd00::1".parse().expect("v6")));
}

#[test]
fn udp_ports_do_not_allow_tcp() {
    let p = policy(
        "default",
        "dns",
        serde_json::json!({
            "selector": {"app": "web"},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]
        }),
    );
    let c = compiled(&[p]);
    check(
        &c,
        &[
            ("default/web", "10.0.1.2", "10.0.2.4", UDP, 53, true),
            ("default/web", "10.0.1.2", "10.0.2.4", TCP, 53, false),
        ],
    );
}

#[test]
fn unusable_peers_and_ports_are_skipped_with_warnings() {
    let p = policy(
        "default",
        "broken",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [
                {"from": [{"cidr": "10.0.0.0/40"}]},
                {"from": [{}]},
                {"from": [{"selector": {"app": "web"}, "cidr": "10.0.0.0/8"}]},
                {"from": [{"selector": {"app": "web"}}], "ports": [{"port": 70000}, {"port": 0}]}
            ]
        }),
    );
    let c = compiled(&[p]);
    assert_eq!(c.warnings.len(), 5, "{:#?}", c.warnings);
    // Skipping never widens: nothing but the isolation remains.
    assert!(c.rules.is_empty());
    check(
        &c,
        &[("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, false)],
    );
}

#[test]
fn selector_matching_nothing_allows_nothing() {
    let p = policy(
        "default",
        "ghost",
        serde_json::json!({
            "selector": {"app": "api"},
            "ingress": [{"from": [{"selector": {"app": "ghost"}}]}]
        }),
    );
    let c = compiled(&[p]);
    assert!(c.rules.is_empty());
    assert!(c.warnings.is_empty());
    check(
        &c,
        &[("default/web", "10.0.1.2", "10.0.1.3", TCP, 8080, false)],
    );
}

#[test]
fn node_addresses_may_always_connect_in() {
    let opts = CompileOptions {
        node_addrs: vec![ip("10.0.1.1")],
    };
    let c = compile(&[web_to_api_8080()], &cluster(), &opts);
    let api = id("default", "api");
    let rule = c
        .lookup(&api, Direction::Ingress, ip("10.0.1.1"), TCP, 31337)
        .expect("node may probe");
    assert!(matches!(
        rule.and_then(|r| c.origins.get(&r)),
        Some(RuleOrigin::Node { .. })
    ));
    // Only into isolated workloads (the others allow everything anyway), and only ingress.
    let node_rules = c
        .origins
        .values()
        .filter(|o| matches!(o, RuleOrigin::Node { .. }))
        .count();
    assert_eq!(node_rules, 1);
    assert!(c.rules.keys().all(|k| k.direction == Direction::Ingress));
}

#[test]
fn workloads_without_addresses_still_get_a_set() {
    let c = compiled(&[]);
    let job = c.set_of(&id("default", "job")).expect("job set");
    assert_ne!(job.id.0, 0);
    assert!(!c.endpoints.values().any(|s| *s == job.id));
}

#[test]
fn endpoints_map_every_replica_address() {
    let c = compiled(&[]);
    let api = c.sets[&id("default", "api")].id;
    for a in ["10.0.1.3", "10.0.2.3", "fd00::3"] {
        assert_eq!(c.endpoints.get(&to_v6(ip(a))), Some(&api), "{a}");
    }
    assert_eq!(c.endpoints.len(), 7);
}

#[test]
fn an_address_claimed_twice_is_kept_once_with_a_warning() {
    let mut eps = cluster();
    eps.push(wl("default", "thief", &[], &["10.0.1.3"]));
    let c = compile(&[], &eps, &CompileOptions::default());
    assert_eq!(
        c.endpoints.get(&to_v6(ip("10.0.1.3"))),
        Some(&c.sets[&id("default", "api")].id)
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}

#[test]
fn duplicate_workload_entries_merge_addresses() {
    let mut eps = cluster();
    eps.push(wl("default", "web", &[("app", "web")], &["10.0.2.9"]));
    let c = compile(&[web_to_api_8080()], &eps, &CompileOptions::default());
    assert!(c.warnings.is_empty());
    check(
        &c,
        &[("default/web", "10.0.2.9", "10.0.1.3", TCP, 8080, true)],
    );
}

#[test]
fn output_is_deterministic_and_order_independent() {
    let policies = vec![
        web_to_api_8080(),
        policy(
            "default",
            "deny-db",
            serde_json::json!({"selector": {"app": "db"}}),
        ),
    ];
    let a = compile(&policies, &cluster(), &CompileOptions::default());
    let mut rp = policies.clone();
    rp.reverse();
    let mut re = cluster();
    re.reverse();
    let b = compile(&rp, &re, &CompileOptions::default());
    assert_eq!(a, b);
}

#[test]
fn ids_are_stable_when_unrelated_things_change() {
    let a = compiled(&[web_to_api_8080()]);
    let mut eps = cluster();
    eps.push(wl("default", "cache", &[("app", "cache")], &["10.0.1.9"]));
    let extra = policy(
        "default",
        "cache",
        serde_json::json!({"selector": {"app": "cache"}}),
    );
    let b = compile(
        &[web_to_api_8080(), extra],
        &eps,
        &CompileOptions::default(),
    );
    for (w, s) in &a.sets {
        assert_eq!(b.sets.get(w).map(|x| x.id), Some(s.id), "{w}");
    }
    for (k, r) in &a.rules {
        assert_eq!(b.rules.get(k), Some(r));
    }
}

#[test]
fn set_ids_probe_past_collisions_and_zero() {
    let ws = [id("a", "x"), id("a", "y"), id("a", "z")];
    let ids = assign_set_ids(ws.iter(), |_| 0);
    let got: Vec<u32> = ids.iter().map(|(_, s)| s.0).collect();
    assert_eq!(got, vec![1, 2, 3]);
    let ids = assign_set_ids(ws.iter(), |_| u32::MAX);
    let got: Vec<u32> = ids.iter().map(|(_, s)| s.0).collect();
    assert_eq!(got, vec![u32::MAX, 1, 2]);
}

#[test]
fn every_counter_id_has_an_origin() {
    let opts = CompileOptions {
        node_addrs: vec![ip("10.0.1.1")],
    };
    let c = compile(&[web_to_api_8080()], &cluster(), &opts);
    for r in c.counter_ids() {
        assert!(c.origins.contains_key(&r), "{r}");
        assert_ne!(r.0, 0);
    }
    // Rule ids are per (policy rule, selected workload): two workloads, two ids.
    let p = policy(
        "default",
        "backend",
        serde_json::json!({"selector": {"tier": "backend"}, "ingress": [{"ports": [{"port": 1}]}]}),
    );
    let c = compiled(&[p]);
    let ids: BTreeSet<RuleId> = c.rules.values().copied().collect();
    assert_eq!(ids.len(), 2);
}

#[test]
fn from_object_reads_network_policies_only() {
    let yaml = serde_json::json!({
        "apiVersion": "nexus/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "team"},
        "spec": {"selector": {"app": "api"}}
    });
    let obj: Object = serde_json::from_value(yaml).expect("object");
    let p = PolicyObject::from_object(&obj).expect("a policy");
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("team", "p"));
    assert_eq!(
        p.isolates(),
        Isolation {
            ingress: true,
            egress: false
        }
    );
}

#[test]
fn isolation_bits_round_trip() {
    for bits in 0..4 {
        assert_eq!(Isolation::from_bits(bits).bits(), bits);
    }
    for d in [Direction::Ingress, Direction::Egress] {
        assert_eq!(Direction::from_code(d.code()), Some(d));
    }
    assert_eq!(Direction::from_code(0), None);
}
