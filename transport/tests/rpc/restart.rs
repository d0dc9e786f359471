//! A server that died without closing its connections (a crash, `kill -9`) and came back on the
//! same address with the same certificate: its peers learn at once that their old connections
//! are gone (QUIC stateless reset), instead of after their idle timeout.

use std::time::Instant;

use crate::fixture::*;

/// Serves the fixture's router with `tls` on `addr` in a runtime of its own, so that the test
/// can make the server vanish without a word by shutting that runtime down.
fn serve(
    tls: &ServerTls,
    ca: &Arc<CertificateAuthority>,
    record: &JoinTokenRecord,
    addr: SocketAddr,
) -> (tokio::runtime::Runtime, ServerHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        // The old socket may take a moment to be released after a crash.
        let mut tries = 0;
        let endpoint = loop {
            match Endpoint::server(addr, tls) {
                Ok(e) => break e,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        let (gtx, _grx) = mpsc::unbounded_channel();
        let router = router(
            ca.clone(),
            record.clone(),
            gtx,
            Arc::new(AtomicBool::new(false)),
        );
        RpcServer::new(endpoint, router, RpcConfig::default()).spawn()
    });
    (rt, server)
}

#[test]
fn a_restarted_server_resets_the_connections_of_its_previous_run() {
    nexus_transport::init_crypto();
    let ca = Arc::new(
        CertificateAuthority::generate("test", Validity::ca_default(SystemTime::now())).unwrap(),
    );
    let tls = ServerTls::new(
        ca.cert_der(),
        &issue(&ca, Role::Replica, "r0"),
        &ServerOptions::default(),
    )
    .unwrap();
    let record = JoinToken::generate(ca.fingerprint()).unwrap().record(None);
    let (first, server) = serve(&tls, &ca, &record, "127.0.0.1:0".parse().unwrap());
    let addr = server.local_addr();

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let alice = issue(&ca, Role::User, "alice");
    let client_tls = ClientTls::new(
        ServerTrust::Ca(ca.cert_der().clone()),
        Some(&alice),
        &ClientOptions::default(), // 30 s idle timeout
    )
    .unwrap();
    let endpoint = client_rt.block_on(async { client_endpoint() });
    let connect = || {
        client_rt.block_on(async {
            RpcClient::connect(
                &endpoint,
                addr,
                "localhost",
                &client_tls,
                RpcConfig::default(),
            )
            .await
            .unwrap()
        })
    };
    let echo = |c: &RpcClient, text: &str| {
        client_rt.block_on(c.call::<_, EchoReply>("echo", &Echo { text: text.into() }))
    };
    let client = connect();
    assert_eq!(echo(&client, "before").unwrap().text, "before");

    // The server vanishes: no CONNECTION_CLOSE is sent. It comes back with the same certificate.
    first.shutdown_background();
    drop(server);
    let (_second, _server) = serve(&tls, &ca, &record, addr);

    let t = Instant::now();
    let err = echo(&client, "after").unwrap_err();
    assert!(
        matches!(&err, TransportError::ConnectionLost { reason } if reason.contains("reset by peer")),
        "the old connection is reset, not left to time out ({:?}): {err}",
        t.elapsed()
    );
    // A new connection to the restarted server works.
    assert_eq!(echo(&connect(), "again").unwrap().text, "again");
}
