//! BFT rule 4 against the real protocol: an agent configured with four replicas (f = 1) acts
//! only on an assignment set two of them sent identically. Fake replicas speak the agent
//! protocol over QUIC with mutual TLS; the agent runs with the fake runtime. A Byzantine replica
//! sending a bogus set (with a correct hash) gets nothing started; once a second honest replica
//! is up, the honest set runs and the bogus one never does.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream;
use nexus_agent::{AgentConfig, RuntimeChoice};
use nexus_api::agent::{
    AssignmentSet, FeedItem, FeedRequest, Heartbeat, HeartbeatResponse, RegisterRequest,
    RegisterResponse, kinds,
};
use nexus_reconciler::model::{InstanceId, ReplicaId, WorkloadKey, template_hash};
use nexus_reconciler::runtime::fake::FakeRuntime;
use nexus_reconciler::spec::ReplicaSpec;
use nexus_schemas::WorkloadSpec;
use nexus_transport::RpcError;
use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity, cert_der_from_pem};
use nexus_transport::quic::{Endpoint, ServerOptions, ServerTls};
use nexus_transport::rpc::{Access, Context, Router, RpcConfig, RpcServer, ServerHandle};

fn spec(name: &str, cmd: &str) -> ReplicaSpec {
    let w: WorkloadSpec = serde_json::from_value(serde_json::json!({"command": [cmd]})).unwrap();
    let id = InstanceId::new(
        ReplicaId::new(WorkloadKey::new("default", name), 0),
        template_hash(&w),
    );
    ReplicaSpec::from_workload(id, 1, &w).unwrap()
}

fn free_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A replica that registers anyone and streams one fixed set.
fn fake_replica(
    ca: &CertificateAuthority,
    name: &str,
    addr: SocketAddr,
    set: AssignmentSet,
) -> ServerHandle {
    let leaf = ca
        .issue(&LeafRequest::new(
            Role::Replica,
            name,
            Validity::leaf_default(SystemTime::now()),
        ))
        .unwrap();
    let ca_der = cert_der_from_pem(ca.cert_pem()).unwrap();
    let tls = ServerTls::new(&ca_der, &leaf, &ServerOptions::default()).unwrap();
    let endpoint = Endpoint::server(addr, &tls).unwrap();
    let mut r = Router::new();
    let replica = name.to_string();
    r.unary(
        kinds::REGISTER,
        Access::Roles(vec![Role::Node]),
        move |_ctx: Context, _req: RegisterRequest| {
            let replica = replica.clone();
            async move {
                Ok(RegisterResponse {
                    replica,
                    height: 1,
                    heartbeat_ms: 200,
                    node_timeout_ms: 10_000,
                })
            }
        },
    );
    r.unary(
        kinds::HEARTBEAT,
        Access::Roles(vec![Role::Node]),
        |_ctx: Context, _hb: Heartbeat| async move {
            Ok(HeartbeatResponse {
                height: 1,
                registered: true,
            })
        },
    );
    let set = Arc::new(set);
    r.streaming(
        kinds::FEED,
        Access::Roles(vec![Role::Node]),
        move |_ctx: Context, _req: FeedRequest| {
            let set = set.clone();
            async move {
                let items: Vec<Result<FeedItem, RpcError>> =
                    vec![Ok(FeedItem::Assignments((*set).clone()))];
                // Keep the stream open after the set, like a real feed.
                Ok(futures::StreamExt::chain(
                    stream::iter(items),
                    stream::pending(),
                ))
            }
        },
    );
    RpcServer::new(endpoint, r, RpcConfig::default()).spawn()
}

fn started(rt: &FakeRuntime) -> Vec<String> {
    rt.calls()
        .into_iter()
        .filter(|c| c.starts_with("start "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_assignment_from_one_replica_starts_nothing() {
    nexus_transport::init_crypto();
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate("byz", Validity::ca_default(now)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = ca
        .issue(&LeafRequest::new(
            Role::Node,
            "n1",
            Validity::leaf_default(now),
        ))
        .unwrap();
    std::fs::write(dir.path().join("node.crt"), node.cert_pem()).unwrap();
    std::fs::write(dir.path().join("node.key"), node.key_pem()).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();

    let honest = AssignmentSet::new("n1".into(), 3, None, vec![spec("web", "good")]);
    let bogus = AssignmentSet::new("n1".into(), 3, None, vec![spec("miner", "evil")]);
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let _a = fake_replica(&ca, "r0", addrs[0], honest.clone());
    let _byz = fake_replica(&ca, "r1", addrs[1], bogus.clone());
    // r2 and r3 are down for now.

    let rt = Arc::new(FakeRuntime::new());
    let mut cfg = AgentConfig::new(
        "n1",
        addrs.iter().map(|a| a.to_string()).collect(),
        dir.path(),
    );
    cfg.tick = Duration::from_millis(50);
    cfg.max_backoff = Duration::from_millis(300);
    let agent = nexus_agent::start(cfg, RuntimeChoice::Fake(rt.clone()))
        .await
        .unwrap();

    // One honest and one Byzantine feed: no set has f+1 = 2 votes, nothing runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(started(&rt), Vec::<String>::new());
    assert_eq!(agent.acting_on(), None);

    // A second honest replica comes up: the honest set has two votes and runs.
    let _b = fake_replica(&ca, "r2", addrs[2], honest.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.acting_on().as_deref() != Some(honest.hash.as_str()) {
        assert!(Instant::now() < deadline, "the honest set never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = started(&rt);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("default/web#0"), "{calls:?}");
    assert!(!calls.iter().any(|c| c.contains("miner")));
    agent.stop(false).await;
}
