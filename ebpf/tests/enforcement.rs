//! Kernel enforcement, end to end (root): replicas are network namespaces on per-node bridges
//! with their own cgroups, two loaders play two nodes' agents, and `nx-probe` processes connect.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use nexus_ebpf::testbed::{Host, Testbed, skip_reason};
use nexus_ebpf::{
    CompileOptions, CompiledPolicy, Direction, EbpfError, Hook, LoaderOptions, PolicyLoader,
    PolicyObject, Replica, RuleOrigin, WorkloadEndpoints, WorkloadId, compile,
};

const PROBE: &str = env!("CARGO_BIN_EXE_nx-probe");
/// How long a probe waits for an answer that should not come (a dropped SYN).
const DROP_WAIT: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_millis(2000);

fn skip() -> bool {
    match skip_reason() {
        Some(r) => {
            println!("skipped: {r}");
            true
        }
        None => false,
    }
}

/// Uninstalls a node's pins on drop, also when the test fails.
struct Pins(LoaderOptions);

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = PolicyLoader::uninstall(&self.0) {
            eprintln!("uninstall {}: {e}", self.0.node);
        }
    }
}

fn policy(name: &str, spec: serde_json::Value) -> PolicyObject {
    PolicyObject {
        namespace: "default".into(),
        name: name.into(),
        spec: serde_json::from_value(spec).expect("policy spec"),
    }
}

fn workload(name: &str, hosts: &[&Host]) -> WorkloadEndpoints {
    WorkloadEndpoints {
        workload: WorkloadId::new("default", name),
        labels: [("app".to_string(), name.to_string())].into(),
        addrs: hosts.iter().flat_map(|h| h.addrs()).collect(),
    }
}

fn replica(name: &str, h: &Host) -> Replica {
    Replica {
        cgroup: h.cgroup.clone().expect("replica host has a cgroup"),
        workload: WorkloadId::new("default", name),
        addrs: h.addrs(),
    }
}

fn node_policy(policies: &[PolicyObject], eps: &[WorkloadEndpoints], node: u8) -> CompiledPolicy {
    let opts = CompileOptions {
        node_addrs: vec![IpAddr::V4(Testbed::gateway(node))],
    };
    let c = compile(policies, eps, &opts);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    c
}

struct Scene {
    tb: Testbed,
    web: Host,
    api1: Host,
    api2: Host,
    db: Host,
    outsider: Host,
    router: Host,
}

impl Scene {
    fn new() -> Scene {
        let mut tb = Testbed::new(std::path::Path::new(PROBE)).expect("testbed");
        let web = tb.add_host(1, 2, "web", true).expect("web");
        let api1 = tb.add_host(1, 3, "api1", true).expect("api1");
        let outsider = tb.add_host(1, 50, "outsider", false).expect("outsider");
        let api2 = tb.add_host(2, 3, "api2", true).expect("api2");
        let db = tb.add_host(2, 4, "db", true).expect("db");
        for h in [&api1, &api2] {
            tb.spawn(h, &["serve", "8080", "9090"]).expect("api serve");
            tb.spawn(h, &["serve-udp", "5353"]).expect("api serve-udp");
        }
        for h in [&web, &db] {
            tb.spawn(h, &["serve", "8080"]).expect("serve");
        }
        let router = tb.router_host();
        Scene {
            tb,
            web,
            api1,
            api2,
            db,
            outsider,
            router,
        }
    }

    fn endpoints(&self) -> Vec<WorkloadEndpoints> {
        vec![
            workload("web", &[&self.web]),
            workload("api", &[&self.api1, &self.api2]),
            workload("db", &[&self.db]),
        ]
    }

    fn replicas(&self, node: u8) -> Vec<Replica> {
        if node == 1 {
            vec![replica("web", &self.web), replica("api", &self.api1)]
        } else {
            vec![replica("api", &self.api2), replica("db", &self.db)]
        }
    }

    /// Probes and compares with the expected words: (from, kind, target, expected).
    fn expect(&self, cases: &[(&Host, &str, String, &str)]) {
        let mut failures = Vec::new();
        for (from, kind, target, want) in cases {
            let wait = if *want == "timeout" { DROP_WAIT } else { WAIT };
            let got = self
                .tb
                .probe(from, kind, target, wait)
                .unwrap_or_else(|e| format!("probe failed: {e}"));
            if got != *want {
                failures.push(format!(
                    "{} {kind} {target}: got {got}, want {want}",
                    from.name
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

fn at(h: &Host, port: u16) -> String {
    format!("{}:{port}", h.v4)
}

fn at6(h: &Host, port: u16) -> String {
    format!("[{}]:{port}", h.v6)
}

fn base_policies(api_from: &[&str], web_isolated: bool) -> Vec<PolicyObject> {
    let from: Vec<serde_json::Value> = api_from
        .iter()
        .map(|a| serde_json::json!({"selector": {"app": a}}))
        .collect();
    let mut out = vec![
        policy(
            "api-from-web",
            serde_json::json!({
                "selector": {"app": "api"},
                "ingress": [{"from": from, "ports": [{"port": 8080}, {"port": 5353, "protocol": "UDP"}]}]
            }),
        ),
        policy(
            "api-no-egress",
            serde_json::json!({"selector": {"app": "api"}, "policyTypes": ["Egress"]}),
        ),
    ];
    if web_isolated {
        out.push(policy(
            "web-no-ingress",
            serde_json::json!({"selector": {"app": "web"}}),
        ));
    }
    out
}

#[test]
fn policy_is_enforced_across_nodes_survives_restarts_and_cleans_up() {
    if skip() {
        return;
    }
    let s = Scene::new();
    let opts1 = LoaderOptions::new(format!("{}-n1", s.tb.id));
    let opts2 = LoaderOptions::new(format!("{}-n2", s.tb.id));
    let _pins = (Pins(opts1.clone()), Pins(opts2.clone()));
    let mut node1 = PolicyLoader::open(&opts1).expect("open node1");
    let mut node2 = PolicyLoader::open(&opts2).expect("open node2");

    let policies = base_policies(&["web"], true);
    let p1 = node_policy(&policies, &s.endpoints(), 1);
    let p2 = node_policy(&policies, &s.endpoints(), 2);
    for (loader, p, n) in [(&mut node1, &p1, 1), (&mut node2, &p2, 2)] {
        let r = loader.reconcile(p, &s.replicas(n)).expect("reconcile");
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(r.attached.len(), 2);
        assert!(
            r.attached
                .iter()
                .all(|a| a.created == 4 && a.known_workload)
        );
    }

    let (web, api1, api2, db) = (&s.web, &s.api1, &s.api2, &s.db);
    s.expect(&[
        // Allowed: same node, across nodes, IPv6. Replies pass web's ingress isolation and
        // api's egress isolation because they belong to connections opened the allowed way.
        (web, "connect", at(api1, 8080), "ok"),
        (web, "connect", at(api2, 8080), "ok"),
        (web, "connect", at6(api1, 8080), "ok"),
        (web, "connect", at6(api2, 8080), "ok"),
        (web, "udp-unconnected", at(api1, 5353), "ok"),
        (web, "udp", at(api2, 5353), "ok"),
        // Denied at connect(): immediately, EPERM.
        (web, "connect", at(api1, 9090), "EPERM"),
        (web, "connect", at6(api2, 9090), "EPERM"),
        (db, "connect", at(api1, 8080), "EPERM"),
        (db, "connect", at(api2, 8080), "EPERM"),
        (db, "udp", at(api2, 5353), "EPERM"),
        (api1, "connect", at(db, 8080), "EPERM"),
        (api1, "udp-unconnected", at(db, 5353), "EPERM"),
        (db, "connect", at(web, 8080), "EPERM"),
        // Not covered by a connect hook: dropped at the destination's ingress.
        (&s.outsider, "connect", at(api1, 8080), "timeout"),
        (&s.outsider, "connect", at(web, 8080), "timeout"),
        (db, "udp-unconnected", at(api1, 5353), "timeout"),
        // The node itself may always connect in (health probes); loopback is always allowed.
        (&s.router, "connect", at(api1, 9090), "ok"),
        (api1, "connect", "127.0.0.1:9090".into(), "ok"),
        (api1, "connect", at(api1, 9090), "ok"),
    ]);

    // Counters: the allow rule and the default deny of api's ingress on node 1.
    let counters = node1.counters().expect("counters");
    let api = WorkloadId::new("default", "api");
    let allow = p1
        .origins
        .iter()
        .find(|(_, o)| {
            matches!(o, RuleOrigin::Policy { workload, direction: Direction::Ingress, .. } if *workload == api)
        })
        .map(|(id, _)| *id)
        .expect("api allow rule");
    let deny = p1.sets[&api].deny_ingress;
    assert!(counters[&allow].packets > 0, "{:?}", counters[&allow]);
    assert!(counters[&allow].connects > 0, "{:?}", counters[&allow]);
    assert!(counters[&deny].packets > 0, "{:?}", counters[&deny]);
    // A read-only inspector (what `nexus debug troubleshoot` uses) sees the same counters.
    let inspector = nexus_ebpf::Inspector::open(&opts1).expect("inspector");
    assert_eq!(inspector.counters().expect("counters"), counters);
    let text = nexus_ebpf::explain(
        &base_policies(&["web"], true),
        &s.endpoints(),
        &p1,
        &api,
        &counters,
    )
    .expect("explain api")
    .to_string();
    assert!(
        text.contains("ingress allowed:") && text.contains("egress: nothing allowed"),
        "{text}"
    );
    let deny2 = node2.counters().expect("counters")[&p2.sets[&api].deny_ingress];
    assert!(deny2.connects >= 2, "{deny2:?}");
    assert!(node1.stats().expect("stats").local > 0);

    // A policy change: db may reach api too, and web is no longer isolated.
    let policies = base_policies(&["web", "db"], false);
    let p1 = node_policy(&policies, &s.endpoints(), 1);
    let p2 = node_policy(&policies, &s.endpoints(), 2);
    let st = node1.apply(&p1).expect("apply");
    assert!(st.map_ops > 0 && st.map_ops < 20, "{st:?}");
    node2.apply(&p2).expect("apply");
    s.expect(&[
        (db, "connect", at(api1, 8080), "ok"),
        (db, "connect", at(api2, 8080), "ok"),
        (db, "connect", at(web, 8080), "ok"),
        (&s.outsider, "connect", at(web, 8080), "ok"),
        (db, "connect", at(api1, 9090), "EPERM"),
    ]);

    // Agent restart: dropping the loaders keeps everything enforced.
    let installed = node1.installed().clone();
    drop(node1);
    drop(node2);
    s.expect(&[
        (web, "connect", at(api1, 8080), "ok"),
        (web, "connect", at(api1, 9090), "EPERM"),
        (&s.outsider, "connect", at(api1, 8080), "timeout"),
    ]);
    // The restarted agent re-opens the pins and re-uses the links instead of attaching twice.
    let mut node1 = PolicyLoader::open(&opts1).expect("reopen node1");
    let mut node2 = PolicyLoader::open(&opts2).expect("reopen node2");
    assert_eq!(node1.installed(), &installed);
    let r = node1.reconcile(&p1, &s.replicas(1)).expect("reconcile");
    assert_eq!(r.apply.map_ops, 0);
    assert!(r.detached.is_empty());
    assert!(
        r.attached.iter().all(|a| a.created == 0 && a.updated == 4),
        "{:?}",
        r.attached
    );
    node2.reconcile(&p2, &s.replicas(2)).expect("reconcile");
    let cg = std::fs::File::open(api1.cgroup.as_ref().expect("cgroup")).expect("open cgroup");
    for hook in Hook::ALL {
        let n = nexus_ebpf::sys::attached_count(cg.as_fd(), hook.attach_type()).expect("query");
        assert_eq!(n, 1, "{hook:?} attached once");
    }
    // The new loader changes the verdict: api now only accepts 7070.
    let mut policies = base_policies(&["web", "db"], false);
    policies[0].spec.ingress[0].ports[0].port = 7070;
    let p1 = node_policy(&policies, &s.endpoints(), 1);
    let p2 = node_policy(&policies, &s.endpoints(), 2);
    node1.apply(&p1).expect("apply");
    node2.apply(&p2).expect("apply");
    s.expect(&[
        (web, "connect", at(api1, 8080), "EPERM"),
        (db, "connect", at(api2, 8080), "EPERM"),
        (web, "connect", at(api2, 8080), "EPERM"),
    ]);

    // api1 stops: reconcile without it detaches its programs and forgets its cgroup.
    let api1_id = std::fs::metadata(api1.cgroup.as_ref().expect("cgroup"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("cgroup id");
    let r = node1
        .reconcile(&p1, &[replica("web", web)])
        .expect("reconcile");
    assert_eq!(r.detached, vec![api1_id]);
    assert!(
        !node1
            .pin_dir()
            .join("links")
            .join(api1_id.to_string())
            .exists()
    );
    assert!(!node1.cgroup_entries().contains_key(&api1_id));
    for hook in Hook::ALL {
        let n = nexus_ebpf::sys::attached_count(cg.as_fd(), hook.attach_type()).expect("query");
        assert_eq!(n, 0, "{hook:?} detached");
    }
    s.expect(&[(&s.outsider, "connect", at(api1, 8080), "ok")]);
}

#[test]
fn stale_cgroups_are_collected_and_uninstall_removes_everything() {
    if skip() {
        return;
    }
    let mut tb = Testbed::new(std::path::Path::new(PROBE)).expect("testbed");
    let gone = tb.add_host(1, 2, "gone", true).expect("host");
    let opts = LoaderOptions::new(format!("{}-n1", tb.id));
    let _pins = Pins(opts.clone());
    // Through the agent-facing wrapper: the first sync attaches, an unchanged one is skipped.
    let mut enforcer = nexus_ebpf::NodeEnforcer::start(&opts);
    assert_eq!(enforcer.condition(), None);
    let input = nexus_ebpf::PolicyInput {
        endpoints: vec![workload("gone", &[&gone])],
        ..Default::default()
    };
    let r = enforcer
        .sync(&input, &[replica("gone", &gone)], false)
        .expect("first sync reconciles");
    let id = r.attached[0].cgroup_id;
    assert!(
        enforcer
            .sync(&input, &[replica("gone", &gone)], false)
            .is_none()
    );
    assert!(
        enforcer
            .sync(&input, &[replica("gone", &gone)], true)
            .is_some()
    );
    drop(enforcer);
    // A new loader re-points the pinned links at its programs once; then attaching is a no-op.
    let mut loader = PolicyLoader::open(&opts).expect("open");
    let p = input.compile();
    let again = loader.attach(&replica("gone", &gone)).expect("attach");
    assert_eq!((again.created, again.updated), (0, 4));
    let again = loader.attach(&replica("gone", &gone)).expect("attach");
    assert_eq!((again.created, again.updated), (0, 0));
    // The runtime removes the cgroup (the links go defunct); the next reconcile collects them.
    std::fs::remove_dir(gone.cgroup.as_ref().expect("cgroup")).expect("rmdir");
    let r = loader.reconcile(&p, &[]).expect("reconcile");
    assert_eq!(r.detached, vec![id]);
    assert!(loader.attached_ids().expect("ids").is_empty());
    assert!(loader.cgroup_entries().is_empty());
    let dir = loader.pin_dir().to_path_buf();
    drop(loader);
    PolicyLoader::uninstall(&opts).expect("uninstall");
    assert!(!dir.exists());
}

#[test]
fn unusable_environments_are_reported_not_ignored() {
    if skip() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("nexus-ebpf-not-bpffs-{}", std::process::id()));
    let opts = LoaderOptions {
        node: "n1".into(),
        pin_root: tmp,
    };
    match PolicyLoader::open(&opts) {
        Err(EbpfError::Unsupported { reason }) => {
            assert!(reason.contains("not on a BPF file system"), "{reason}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    for bad in ["", "a/b", "..", "x".repeat(65).as_str()] {
        assert!(matches!(
            PolicyLoader::open(&LoaderOptions::new(bad)),
            Err(EbpfError::InvalidNode(_))
        ));
    }
}

#[test]
fn pins_of_another_layout_version_are_refused() {
    if skip() {
        return;
    }
    let opts = LoaderOptions::new(format!("nxt{}-abi", std::process::id()));
    let _pins = Pins(opts.clone());
    drop(PolicyLoader::open(&opts).expect("open"));
    let meta = opts.pin_root.join(&opts.node).join("maps").join("nx_meta");
    let data = aya::maps::MapData::from_pin(&meta).expect("pinned meta");
    let mut map: aya::maps::Array<_, nexus_ebpf::maps::Meta> = aya::maps::Map::from_map_data(data)
        .expect("map")
        .try_into()
        .expect("array");
    let v = nexus_ebpf::maps::Meta {
        abi: 99,
        reserved: 0,
    };
    map.set(0, v, 0).expect("write meta");
    match PolicyLoader::open(&opts) {
        Err(EbpfError::Incompatible { found: 99, .. }) => {}
        other => panic!("expected Incompatible, got {other:?}"),
    }
}

#[test]
fn established_connections_follow_policy_changes_and_nested_cgroups_are_covered() {
    if skip() {
        return;
    }
    let mut tb = Testbed::new(std::path::Path::new(PROBE)).expect("testbed");
    let web = tb.add_host(1, 2, "web", true).expect("web");
    let api = tb.add_host(1, 3, "api", true).expect("api");
    tb.spawn(&api, &["echo", "7000"]).expect("echo");
    let nested = tb.sub_cgroup(&web, "worker").expect("nested cgroup");
    let opts = LoaderOptions::new(format!("{}-n1", tb.id));
    let _pins = Pins(opts.clone());
    let mut loader = PolicyLoader::open(&opts).expect("open");
    let eps = vec![workload("web", &[&web]), workload("api", &[&api])];
    let allow = |port: u16| {
        let p = policy(
            "api-from-web",
            serde_json::json!({
                "selector": {"app": "api"},
                "ingress": [{"from": [{"selector": {"app": "web"}}], "ports": [{"port": port}]}]
            }),
        );
        compile(&[p], &eps, &CompileOptions::default())
    };
    let replicas = [replica("web", &web), replica("api", &api)];
    loader
        .reconcile(&allow(7000), &replicas)
        .expect("reconcile");

    let target = at(&api, 7000);
    let mut held = tb
        .interactive(&web, &["hold", &target, "500"])
        .expect("hold");
    assert_eq!(held.read_line().expect("connect"), "connected");
    assert_eq!(held.line("one").expect("send"), "ok");
    // A process in a cgroup below web's is still web.
    assert_eq!(
        tb.probe(&nested, "connect", &at(&api, 7001), WAIT)
            .expect("probe"),
        "EPERM"
    );
    // Revoking the rule stops the open connection at its next packet (no conntrack bypass).
    loader.apply(&allow(7001)).expect("apply");
    assert_eq!(held.line("two").expect("send"), "timeout");
    assert_eq!(
        tb.probe(&nested, "connect", &at(&api, 7001), WAIT)
            .expect("probe"),
        "refused"
    );
    drop(held);
}
