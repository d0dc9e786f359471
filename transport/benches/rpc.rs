//! Loopback RPC benchmark: handshake, unary latency, concurrent throughput, streaming and
//! one-way rates, large payloads. Prints a table; `cargo bench -p nexus-transport`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use nexus_transport::pki::{CertificateAuthority, LeafRequest, Role, Validity};
use nexus_transport::quic::{
    ClientOptions, ClientTls, Endpoint, ServerOptions, ServerTls, ServerTrust,
};
use nexus_transport::rpc::{Access, Router, RpcClient, RpcConfig, RpcServer};

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn row(what: &str, value: String) {
    println!("| {what:<44} | {value:>24} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    nexus_transport::init_crypto();
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate("bench", Validity::ca_default(now)).unwrap();
    let server_cert = ca
        .issue(&LeafRequest::new(
            Role::Replica,
            "r0",
            Validity::leaf_default(now),
        ))
        .unwrap();
    let user = ca
        .issue(&LeafRequest::new(
            Role::Replica,
            "r1",
            Validity::leaf_default(now),
        ))
        .unwrap();

    let received = Arc::new(AtomicU64::new(0));
    let mut router = Router::new();
    router.unary(
        "echo",
        Access::Authenticated,
        |_ctx, s: String| async move { Ok(s) },
    );
    router.streaming("items", Access::Authenticated, |_ctx, n: u64| async move {
        Ok(futures::stream::iter((0..n).map(Ok)))
    });
    let r2 = received.clone();
    router.oneway(
        "gossip",
        Access::Roles(vec![Role::Replica]),
        move |_ctx, _m: u64| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    let tls = ServerTls::new(ca.cert_der(), &server_cert, &ServerOptions::default()).unwrap();
    let ep = Endpoint::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let server = RpcServer::new(ep, router, RpcConfig::default()).spawn();
    let addr = server.local_addr();
    let ctls = ClientTls::new(
        ServerTrust::Ca(ca.cert_der().clone()),
        Some(&user),
        &ClientOptions::default(),
    )
    .unwrap();
    let cep = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

    println!("| measurement (loopback, 2 cores)              |                    value |");
    println!("|----------------------------------------------|--------------------------|");

    let mut hs = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let c = RpcClient::connect(&cep, addr, "localhost", &ctls, RpcConfig::default())
            .await
            .unwrap();
        hs.push(t.elapsed());
        c.close();
    }
    row(
        "connect + mTLS handshake + hello, p50 / p99",
        format!("{:?} / {:?}", pct(hs.clone(), 0.5), pct(hs, 0.99)),
    );

    let c = RpcClient::connect(&cep, addr, "localhost", &ctls, RpcConfig::default())
        .await
        .unwrap();
    let mut lat = Vec::new();
    for i in 0..2000 {
        let t = Instant::now();
        let _: String = c.call("echo", &format!("m{i}")).await.unwrap();
        lat.push(t.elapsed());
    }
    row(
        "unary call latency (sequential), p50 / p99",
        format!("{:?} / {:?}", pct(lat.clone(), 0.5), pct(lat, 0.99)),
    );

    let total = 20_000;
    let t = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..total / 100 {
                    let _: String = c.call("echo", &format!("m{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    row(
        "unary throughput, 100 concurrent, 1 conn",
        format!("{:.0} calls/s", total as f64 / t.elapsed().as_secs_f64()),
    );

    let n = 200_000u64;
    let t = Instant::now();
    let mut s = c.call_stream::<_, u64>("items", &n).await.unwrap();
    let mut count = 0;
    while let Some(item) = s.next().await {
        item.unwrap();
        count += 1;
    }
    assert_eq!(count, n);
    row(
        "server-streaming items",
        format!("{:.0} items/s", n as f64 / t.elapsed().as_secs_f64()),
    );

    let m = 20_000u64;
    let t = Instant::now();
    for i in 0..m {
        c.send_oneway("gossip", &i).await.unwrap();
    }
    while received.load(Ordering::Relaxed) < m {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    row(
        "one-way messages (send until all handled)",
        format!("{:.0} msgs/s", m as f64 / t.elapsed().as_secs_f64()),
    );

    let big = "x".repeat(4 << 20);
    let t = Instant::now();
    for _ in 0..10 {
        let back: String = c.call("echo", &big).await.unwrap();
        assert_eq!(back.len(), big.len());
    }
    row(
        "4 MiB echo (request + reply)",
        format!("{:.0} MiB/s each way", 40.0 / t.elapsed().as_secs_f64()),
    );
    server.shutdown().await;
}
