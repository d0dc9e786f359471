//! Network mode of the process runtime against the real kernel: every replica in its own network
//! namespace on the node bridge, the same port on several replicas, probes on the replica's
//! address, routing between two nodes' bridges, adoption keeping addresses, cleanup of veths.
//! Needs root, cgroups and iproute2; skips with a printed reason otherwise.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nexus_reconciler::model::{InstanceId, ReplicaId, WorkloadKey, template_hash};
use nexus_reconciler::runtime::network::Network;
use nexus_reconciler::runtime::{
    CgroupLayout, NetworkConfig, ProcessConfig, ProcessRuntime, Runtime,
};
use nexus_reconciler::spec::ReplicaSpec;
use nexus_reconciler::status::ObservedReplica;
use nexus_schemas::WorkloadSpec;

struct Node {
    rt: Option<ProcessRuntime>,
    config: ProcessConfig,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(name: &str, subnet: Ipv4Addr) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ProcessConfig::new(
            format!("test-{}-net-{name}", std::process::id()),
            dir.path(),
        );
        config.network = Some(NetworkConfig::new(subnet));
        let rt = ProcessRuntime::new(config.clone()).unwrap();
        Node {
            rt: Some(rt),
            config,
            _dir: dir,
        }
    }

    fn rt(&self) -> &ProcessRuntime {
        self.rt.as_ref().unwrap()
    }

    fn net(&self) -> Network {
        self.rt().network().expect("network mode")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = &self.rt {
            for o in rt.status().unwrap_or_default() {
                let _ = rt.remove(&o.id, Duration::ZERO);
            }
            let layout = rt.layout().clone();
            for h in [&layout.memory, &layout.cpu, &layout.pids, &layout.unified]
                .into_iter()
                .flatten()
            {
                let _ = fs::remove_dir(h.join(&self.config.cgroup_root).join(&self.config.node));
            }
            let _ = rt.teardown_network();
        }
    }
}

fn skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: network namespaces need root");
        return true;
    }
    if let Err(e) = CgroupLayout::detect() {
        eprintln!("skipping {test}: {e}");
        return true;
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: iproute2 (`ip`) is not installed");
        return true;
    }
    false
}

/// A /24 no other test run uses at the same time: 10.250.<x>.0 with x from the pid.
fn subnet(offset: u8) -> Ipv4Addr {
    let x = (std::process::id() % 100) as u8 * 2 + 1 + offset;
    Ipv4Addr::new(10, 250, x, 0)
}

fn server(name: &str, index: u32) -> ReplicaSpec {
    let w: WorkloadSpec = serde_json::from_value(serde_json::json!({
        "command": ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"],
        "health": {"http": {"path": "/", "port": 8080}, "periodSeconds": 1},
    }))
    .unwrap();
    let id = InstanceId::new(
        ReplicaId::new(WorkloadKey::new("default", name), index),
        template_hash(&w),
    );
    ReplicaSpec::from_workload(id, 1, &w).unwrap()
}

fn observed(rt: &ProcessRuntime, id: &InstanceId) -> Option<ObservedReplica> {
    rt.status().unwrap().into_iter().find(|o| &o.id == id)
}

fn wait_ready(rt: &ProcessRuntime, id: &InstanceId) -> ObservedReplica {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(o) = observed(rt, id).filter(|o| o.ready()) {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became ready: {:?}",
            observed(rt, id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_status(addr: IpAddr) -> String {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(addr, 8080), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}:8080: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.lines().next().unwrap_or_default().to_string()
}

#[test]
fn replicas_get_their_own_addresses_and_route_between_nodes() {
    if skip("replicas_get_their_own_addresses_and_route_between_nodes") {
        return;
    }
    let (net1, net2) = (subnet(0), subnet(1));
    let mut n1 = Node::new("a", net1);
    let n2 = Node::new("b", net2);
    let c1 = NetworkConfig::new(net1);
    assert!(
        std::path::Path::new("/sys/class/net")
            .join(c1.bridge())
            .exists()
    );

    // Two replicas on one node listen on the same port, each at its own address.
    let (a, b) = (server("web", 0), server("web", 1));
    n1.rt().start(&a).unwrap();
    n1.rt().start(&b).unwrap();
    let oa = wait_ready(n1.rt(), &a.id);
    let ob = wait_ready(n1.rt(), &b.id);
    assert_eq!(oa.address, Some(IpAddr::V4(c1.host(2))));
    assert_eq!(ob.address, Some(IpAddr::V4(c1.host(3))));
    for addr in [oa.address.unwrap(), ob.address.unwrap()] {
        assert!(http_status(addr).contains("200"), "{addr}");
    }
    assert_eq!(n1.net().existing_hosts(), BTreeSet::from([2, 3]));

    // A replica on the other node reaches them through the two bridges (ip_forward).
    let client = {
        let w: WorkloadSpec = serde_json::from_value(serde_json::json!({
            "command": ["sleep", "60"],
        }))
        .unwrap();
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("default", "client"), 0),
            template_hash(&w),
        );
        ReplicaSpec::from_workload(id, 1, &w).unwrap()
    };
    n2.rt().start(&client).unwrap();
    let url = format!("http://{}:8080/", c1.host(2));
    let out = n2
        .rt()
        .exec(
            &client.id,
            &[
                "python3".into(),
                "-c".into(),
                format!("import urllib.request; print(urllib.request.urlopen('{url}').status)"),
            ],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        (out.code, String::from_utf8_lossy(&out.output).trim()),
        (0, "200"),
        "cross-node request"
    );
    let inside = n2
        .rt()
        .exec(
            &client.id,
            &["cat".into(), "/proc/net/route".into()],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&inside.output).contains("eth0"),
        "exec joins the replica's network namespace"
    );
    let hosts = n2
        .rt()
        .exec(
            &client.id,
            &["cat".into(), "/etc/hosts".into()],
            Duration::from_secs(5),
        )
        .unwrap();
    let want = format!("{}\tclient-0", NetworkConfig::new(net2).host(2));
    assert!(
        String::from_utf8_lossy(&hosts.output).contains(&want),
        "the replica's own /etc/hosts: {:?}",
        String::from_utf8_lossy(&hosts.output)
    );

    // An agent restart adopts the replicas with their addresses; a stopped replica's veth goes.
    drop(n1.rt.take());
    n1.rt = Some(ProcessRuntime::new(n1.config.clone()).unwrap());
    let report = n1.rt().adopt_existing().unwrap();
    assert_eq!(report.adopted.len(), 2, "{report:?}");
    assert_eq!(
        observed(n1.rt(), &a.id).unwrap().address,
        oa.address,
        "same address after adoption"
    );
    n1.rt().remove(&a.id, Duration::from_secs(5)).unwrap();
    assert_eq!(n1.net().existing_hosts(), BTreeSet::from([3]));
    // The freed address is reused by the next new replica.
    let c = server("web", 2);
    n1.rt().start(&c).unwrap();
    assert_eq!(
        observed(n1.rt(), &c.id).unwrap().address,
        Some(IpAddr::V4(c1.host(2)))
    );
}
