//! End-to-end tests over real QUIC on 127.0.0.1: mTLS, streaming, one-way messages, join,
//! and every refusal path (foreign CA, no certificate, oversized/garbage frames, versions).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nexus_transport::error::{CERT_REQUIRED_MESSAGE, ErrorCode, RpcError, TransportError};
use nexus_transport::join::{
    JOIN_KIND, JoinError, JoinRequest, JoinResponse, join_cluster, sign_join,
};
use nexus_transport::pki::{
    CertificateAuthority, JoinToken, JoinTokenRecord, LeafCert, LeafRequest, Role, Validity,
};
use nexus_transport::quic::{
    ClientOptions, ClientTls, Endpoint, ServerOptions, ServerTls, ServerTrust,
};
use nexus_transport::rpc::{
    Access, Context, Router, RpcClient, RpcConfig, RpcServer, ServerHandle, encode_frame,
    read_frame,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Echo {
    text: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct EchoReply {
    text: String,
    from: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Gossip {
    round: u64,
}

struct Fixture {
    ca: Arc<CertificateAuthority>,
    server: ServerHandle,
    addr: SocketAddr,
    gossip: Mutex<mpsc::UnboundedReceiver<(String, SocketAddr, Gossip)>>,
    token: JoinToken,
    watch_dropped: Arc<AtomicBool>,
}

fn validity() -> Validity {
    Validity::leaf_default(SystemTime::now())
}

fn issue(ca: &CertificateAuthority, role: Role, name: &str) -> LeafCert {
    ca.issue(&LeafRequest::new(role, name, validity())).unwrap()
}

fn router(
    ca: Arc<CertificateAuthority>,
    record: JoinTokenRecord,
    gossip: mpsc::UnboundedSender<(String, SocketAddr, Gossip)>,
    watch_dropped: Arc<AtomicBool>,
) -> Router {
    let mut r = Router::new();
    r.unary(
        "echo",
        Access::Authenticated,
        |ctx: Context, req: Echo| async move {
            Ok(EchoReply {
                text: req.text,
                from: ctx.identity()?.to_string(),
            })
        },
    );
    r.unary(
        "missing",
        Access::Authenticated,
        |_ctx, _req: Echo| async move { Err::<EchoReply, _>(RpcError::not_found("no such thing")) },
    );
    r.unary(
        "slow",
        Access::Authenticated,
        |_ctx, _req: Echo| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Echo {
                text: "late".into(),
            })
        },
    );
    r.unary(
        "panic",
        Access::Authenticated,
        |_ctx, req: Echo| async move {
            if req.text == "boom" {
                panic!("handler bug");
            }
            Ok(req)
        },
    );
    r.unary("big", Access::Authenticated, |_ctx, n: usize| async move {
        Ok("x".repeat(n))
    });
    r.streaming("count", Access::Authenticated, |_ctx, n: u64| async move {
        Ok(futures::stream::iter((0..n).map(Ok)))
    });
    r.streaming(
        "count_then_fail",
        Access::Authenticated,
        |_ctx, n: u64| async move {
            Ok(futures::stream::iter((0..n).map(Ok).chain([Err(
                RpcError::new(ErrorCode::Unavailable, "leader lost"),
            )])))
        },
    );
    r.streaming("ticks", Access::Authenticated, move |_ctx, _req: ()| {
        let dropped = watch_dropped.clone();
        async move {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for i in 0u64.. {
                    if tx.send(Ok(i)).await.is_err() {
                        dropped.store(true, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            Ok(nexus_transport::rpc::channel_stream(rx))
        }
    });
    r.oneway(
        "gossip",
        Access::Roles(vec![Role::Replica]),
        move |ctx: Context, msg: Gossip| {
            let tx = gossip.clone();
            async move {
                let from = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
                let _ = tx.send((from, ctx.remote, msg));
            }
        },
    );
    r.unary(
        JOIN_KIND,
        Access::Public,
        move |ctx: Context, req: JoinRequest| {
            let ca = ca.clone();
            let record = record.clone();
            async move {
                let lookup = |id: &str| (id == record.id).then(|| record.clone());
                let (resp, _identity) = sign_join(
                    &ca,
                    lookup,
                    &req,
                    SystemTime::now(),
                    Validity::leaf_default(SystemTime::now()),
                    vec![ctx.remote.ip()],
                )?;
                Ok::<JoinResponse, RpcError>(resp)
            }
        },
    );
    r
}

async fn fixture(cfg: RpcConfig) -> Fixture {
    nexus_transport::init_crypto();
    nexus_transport::init_crypto(); // idempotent
    let ca = Arc::new(
        CertificateAuthority::generate("test", Validity::ca_default(SystemTime::now())).unwrap(),
    );
    let server_cert = issue(&ca, Role::Replica, "r0");
    let tls = ServerTls::new(ca.cert_der(), &server_cert, &ServerOptions::default()).unwrap();
    let endpoint = Endpoint::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let token = JoinToken::generate(ca.fingerprint()).unwrap();
    let record = token.record(Some(SystemTime::now() + Duration::from_secs(600)));
    let (gtx, grx) = mpsc::unbounded_channel();
    let watch_dropped = Arc::new(AtomicBool::new(false));
    let router = router(ca.clone(), record, gtx, watch_dropped.clone());
    let server = RpcServer::new(endpoint, router, cfg).spawn();
    let addr = server.local_addr();
    Fixture {
        ca,
        server,
        addr,
        gossip: Mutex::new(grx),
        token,
        watch_dropped,
    }
}

fn small_server() -> RpcConfig {
    RpcConfig {
        max_frame: 64 * 1024,
        request_read_timeout: Duration::from_millis(300),
        ..RpcConfig::default()
    }
}

fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn connect_with(
    f: &Fixture,
    trust: ServerTrust,
    cert: Option<&LeafCert>,
    cfg: RpcConfig,
) -> Result<RpcClient, TransportError> {
    let tls = ClientTls::new(trust, cert, &ClientOptions::default())?;
    RpcClient::connect(&client_endpoint(), f.addr, "localhost", &tls, cfg).await
}

async fn connect(f: &Fixture, cert: Option<&LeafCert>) -> RpcClient {
    connect_with(
        f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        cert,
        RpcConfig::default(),
    )
    .await
    .unwrap()
}

fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}

#[tokio::test]
async fn mtls_round_trip_identifies_both_sides() {
    let f = fixture(RpcConfig::default()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let c = connect(&f, Some(&alice)).await;
    assert_eq!(c.server().unwrap().to_string(), "replica:r0");
    assert_eq!(c.seen_as().unwrap(), alice.identity());
    let reply: EchoReply = c.call("echo", &echo("hi")).await.unwrap();
    assert_eq!(
        reply,
        EchoReply {
            text: "hi".into(),
            from: "user:alice".into()
        }
    );

    let err = c
        .call::<_, EchoReply>("missing", &echo("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::Remote(e) if e.code == ErrorCode::NotFound && e.message == "no such thing"),
        "{err}"
    );
    let err = c
        .call::<_, EchoReply>("nope", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownKind), "{err}");
    // A body of the wrong shape is an invalid argument, not a crash.
    let err = c.call::<_, EchoReply>("echo", &42).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::InvalidArgument), "{err}");

    // Dialing by IP works too: the server cert carries 127.0.0.1.
    let tls = ClientTls::new(
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        &ClientOptions::default(),
    )
    .unwrap();
    let by_ip = RpcClient::connect(
        &client_endpoint(),
        f.addr,
        "127.0.0.1",
        &tls,
        RpcConfig::default(),
    )
    .await
    .unwrap();
    let _: EchoReply = by_ip.call("echo", &echo("ip")).await.unwrap();
    assert!(f.server.stats().calls_ok >= 4);
}

#[tokio::test]
async fn server_streaming_items_end_errors_and_cancellation() {
    let f = fixture(RpcConfig::default()).await;
    let node = issue(&f.ca, Role::Node, "n1");
    let c = connect(&f, Some(&node)).await;

    let mut s = c.call_stream::<_, u64>("count", &5u64).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(s.next().await.is_none());

    let mut s = c
        .call_stream::<_, u64>("count_then_fail", &2u64)
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    let err = s.next().await.unwrap().unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Unavailable), "{err}");
    assert!(s.next().await.is_none());

    // Dropping a watch stops the server-side stream.
    let mut s = c.call_stream::<_, u64>("ticks", &()).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    drop(s);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.watch_dropped.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server kept streaming to a gone client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn client_cert_from_another_ca_is_refused_at_handshake() {
    let f = fixture(RpcConfig::default()).await;
    let other_ca =
        CertificateAuthority::generate("other", Validity::ca_default(SystemTime::now())).unwrap();
    let mallory = issue(&other_ca, Role::User, "alice");
    let err = connect_with(
        &f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&mallory),
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    eprintln!("foreign client cert: {err}");
    let TransportError::HandshakeRefused { reason } = &err else {
        panic!("expected a handshake refusal, got {err:?}");
    };
    assert!(
        reason.contains("UnknownCA") || reason.contains("UnknownIssuer"),
        "{reason}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.server.stats().handshake_failures == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn client_refuses_servers_of_another_ca_or_role() {
    let f = fixture(RpcConfig::default()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let other_ca =
        CertificateAuthority::generate("other", Validity::ca_default(SystemTime::now())).unwrap();
    let err = connect_with(
        &f,
        ServerTrust::Ca(other_ca.cert_der().clone()),
        Some(&alice),
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::HandshakeRefused { reason } if reason.contains("UnknownIssuer")),
        "{err:?}"
    );

    // The dialed name must be in the server certificate.
    let tls = ClientTls::new(
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        &ClientOptions::default(),
    )
    .unwrap();
    let err = RpcClient::connect(
        &client_endpoint(),
        f.addr,
        "example.com",
        &tls,
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::HandshakeRefused { reason } if reason.contains("not valid for name \"example.com\"")),
        "{err:?}"
    );

    // A node certificate serving where a replica is expected.
    let node = issue(&f.ca, Role::Node, "n1");
    let tls = ServerTls::new(f.ca.cert_der(), &node, &ServerOptions::default()).unwrap();
    let ep = Endpoint::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let srv = RpcServer::new(ep, Router::new(), RpcConfig::default()).spawn();
    let ctls = ClientTls::new(
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        &ClientOptions::default(),
    )
    .unwrap();
    let err = RpcClient::connect(
        &client_endpoint(),
        srv.local_addr(),
        "localhost",
        &ctls,
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::HandshakeRefused { reason } if reason.contains("node:n1") && reason.contains("Replica")),
        "{err:?}"
    );
    // Users cannot serve at all.
    assert!(matches!(
        ServerTls::new(f.ca.cert_der(), &alice, &ServerOptions::default()),
        Err(TransportError::Config(_))
    ));
    srv.shutdown().await;
}

#[tokio::test]
async fn anonymous_client_gets_certificate_required_but_can_join() {
    let f = fixture(RpcConfig::default()).await;
    let anon = connect(&f, None).await;
    assert!(anon.seen_as().is_none());
    let err = anon
        .call::<_, EchoReply>("echo", &echo("hi"))
        .await
        .unwrap_err();
    let TransportError::Remote(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    assert_eq!(e.message, CERT_REQUIRED_MESSAGE);
    assert!(err.to_string().contains("run `nexus init`"), "{err}");
    // Unknown kinds look the same to anonymous clients.
    let err = anon
        .call::<_, EchoReply>("nope", &echo("hi"))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Unauthenticated));
    let mut s = anon.call_stream::<_, u64>("count", &3u64).await.unwrap();
    assert_eq!(
        s.next().await.unwrap().unwrap_err().remote_code(),
        Some(ErrorCode::Unauthenticated)
    );

    // The join flow: pin the CA by hash only, trade a CSR for a node certificate.
    let token: JoinToken = f.token.to_string().parse().unwrap();
    let opts = ClientOptions::default();
    let joined = join_cluster(
        &client_endpoint(),
        f.addr,
        "localhost",
        &token,
        "n1",
        &opts,
        RpcConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(joined.cert.identity().to_string(), "node:n1");
    assert_eq!(joined.ca_pem, f.ca.cert_pem());
    let node = connect(&f, Some(&joined.cert)).await;
    let reply: EchoReply = node.call("echo", &echo("joined")).await.unwrap();
    assert_eq!(reply.from, "node:n1");

    // A wrong secret is refused without saying which part was wrong.
    let mut text = f.token.to_string();
    let flip = text.len() - 70; // inside the secret
    let c = if &text[flip..=flip] == "0" { "1" } else { "0" };
    text.replace_range(flip..=flip, c);
    let bad: JoinToken = text.parse().unwrap();
    let err = join_cluster(
        &client_endpoint(),
        f.addr,
        "localhost",
        &bad,
        "n2",
        &opts,
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JoinError::Transport(TransportError::Remote(e)) if e.code == ErrorCode::PermissionDenied && e.message.contains("not recognised")),
        "{err:?}"
    );
    // A token pinning another CA never reaches the server's join handler.
    let other = JoinToken::from_parts([1; 8], [2; 16], [3; 32]);
    let err = join_cluster(
        &client_endpoint(),
        f.addr,
        "localhost",
        &other,
        "n3",
        &opts,
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, JoinError::Transport(TransportError::HandshakeRefused { reason }) if reason.contains("pinned")),
        "{err:?}"
    );
}

#[tokio::test]
async fn oversized_frames_are_refused_on_both_sides_and_the_server_keeps_serving() {
    let f = fixture(small_server()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let c = connect(&f, Some(&alice)).await; // client limit: 16 MiB

    // Server side refuses a 100 KiB request (limit 64 KiB) and says so.
    let err = c
        .call::<_, EchoReply>("echo", &echo(&"x".repeat(100 * 1024)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { remote: true, limit: 65536, size } if size > 100 * 1024),
        "{err:?}"
    );
    let stats = f.server.stats();
    assert_eq!(stats.protocol_errors, 1);
    let (code, msg) = stats.last_protocol_error.unwrap();
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(msg.contains("exceeds the limit of 65536 bytes"), "{msg}");

    // Same connection, next stream: still served.
    let ok: EchoReply = c.call("echo", &echo("still here")).await.unwrap();
    assert_eq!(ok.text, "still here");

    // Client side refuses to send beyond its own limit.
    let tiny = connect_with(
        &f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        RpcConfig {
            max_frame: 1024,
            ..RpcConfig::default()
        },
    )
    .await
    .unwrap();
    let err = tiny
        .call::<_, EchoReply>("echo", &echo(&"y".repeat(2000)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                remote: false,
                limit: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    // ... and to read a reply beyond it.
    let err = tiny.call::<_, String>("big", &5000usize).await.unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::FrameTooLarge {
                remote: false,
                limit: 1024,
                ..
            }
        ),
        "{err:?}"
    );
    // A reply over the server's own limit becomes an error frame, not a broken stream.
    let err = c
        .call::<_, String>("big", &(100 * 1024usize))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::FrameTooLarge), "{err:?}");
    let _: EchoReply = c.call("echo", &echo("and still")).await.unwrap();
}

/// Sends raw bytes on a fresh stream and returns the server's single reply frame as an error.
async fn raw_exchange(c: &RpcClient, bytes: &[u8], finish: bool) -> RpcError {
    let (mut send, mut recv) = c.connection().quinn().open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut recv, 1 << 20))
        .await
        .expect("the server must answer, not hang")
        .unwrap()
        .expect("an error frame before the stream closes");
    let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
    let err: RpcError = serde_json::from_value(v["error"].clone()).unwrap();
    assert!(
        read_frame(&mut recv, 1 << 20).await.unwrap().is_none(),
        "stream closes after the error"
    );
    err
}

fn frames(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        encode_frame(&mut out, p).unwrap();
    }
    out
}

#[tokio::test]
async fn garbage_truncation_and_unknown_versions_get_error_frames() {
    let f = fixture(small_server()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let c = connect(&f, Some(&alice)).await;

    let e = raw_exchange(&c, b"hello world, this is not a frame", true).await;
    assert_eq!(e.code, ErrorCode::FrameTooLarge, "{e:?}");
    let e = raw_exchange(&c, &frames(&[b"{not json"]), true).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(
        e.message.contains("malformed request header"),
        "{}",
        e.message
    );
    let e = raw_exchange(&c, &frames(&[b"[1,2,3]"]), true).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    let mut truncated = frames(&[br#"{"v":1,"kind":"echo"}"#]);
    truncated.extend_from_slice(&100u32.to_be_bytes());
    truncated.extend_from_slice(b"{\"text\"");
    let e = raw_exchange(&c, &truncated, true).await;
    assert_eq!(e.code, ErrorCode::BadFrame);
    assert!(e.message.contains("ended inside a frame"), "{}", e.message);
    let e = raw_exchange(&c, &frames(&[br#"{"v":1,"kind":"echo"}"#]), true).await;
    assert_eq!(e.code, ErrorCode::BadFrame, "missing body: {e:?}");
    // A stalled sender is timed out, not waited for forever.
    let e = raw_exchange(&c, &frames(&[br#"{"v":1,"kind":"echo"}"#]), false).await;
    assert_eq!(e.code, ErrorCode::Timeout, "{e:?}");

    let e = raw_exchange(&c, &frames(&[br#"{"v":99,"kind":"echo"}"#, b"{}"]), true).await;
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert!(
        e.message.contains("version 99 is not supported"),
        "{}",
        e.message
    );
    assert_eq!(e.details.unwrap()["supported"], serde_json::json!([1]));

    // A panicking handler is an internal error; the server survives.
    let err = c.call::<_, Echo>("panic", &echo("boom")).await.unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::Internal));
    let ok: Echo = c.call("panic", &echo("fine")).await.unwrap();
    assert_eq!(ok.text, "fine");
    assert!(f.server.stats().protocol_errors >= 7);
}

#[tokio::test]
async fn hundred_concurrent_calls_on_one_connection() {
    let f = fixture(RpcConfig::default()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let c = connect(&f, Some(&alice)).await;
    let started = std::time::Instant::now();
    let calls = (0..100).map(|i| {
        let c = c.clone();
        async move {
            let r: EchoReply = c.call("echo", &echo(&format!("m{i}"))).await.unwrap();
            assert_eq!(r.text, format!("m{i}"));
        }
    });
    futures::future::join_all(calls).await;
    eprintln!("100 concurrent calls: {:?}", started.elapsed());
    assert_eq!(f.server.stats().connections, 1);
}

#[tokio::test]
async fn one_way_gossip_carries_the_sender_identity_and_respects_roles() {
    let f = fixture(RpcConfig::default()).await;
    let r1 = issue(&f.ca, Role::Replica, "r1");
    let alice = issue(&f.ca, Role::User, "alice");
    let user = connect(&f, Some(&alice)).await;
    user.send_oneway("gossip", &Gossip { round: 666 })
        .await
        .unwrap();
    let replica = connect(&f, Some(&r1)).await;
    for round in 1..=3 {
        replica
            .send_oneway("gossip", &Gossip { round })
            .await
            .unwrap();
    }
    let mut rx = f.gossip.lock().await;
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (from, _, msg) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, "replica:r1");
        rounds.push(msg.round);
    }
    rounds.sort();
    assert_eq!(rounds, vec![1, 2, 3]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.server.stats().handler_errors == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "user gossip was not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rx.try_recv().is_err(),
        "a user's gossip must not reach the handler"
    );
    // A one-way kind called as a request is refused clearly.
    let err = replica
        .call::<_, ()>("gossip", &Gossip { round: 9 })
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(ErrorCode::UnknownKind), "{err}");
}

#[tokio::test]
async fn replicas_dial_each_other_from_their_server_endpoints() {
    let f = fixture(RpcConfig::default()).await;
    // A second replica with its own server endpoint dials r0 from the same socket.
    let r1 = issue(&f.ca, Role::Replica, "r1");
    let tls = ServerTls::new(f.ca.cert_der(), &r1, &ServerOptions::default()).unwrap();
    let ep = Endpoint::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let r1_server = RpcServer::new(ep.clone(), Router::new(), RpcConfig::default()).spawn();
    let ctls = ClientTls::new(
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&r1),
        &ClientOptions::default(),
    )
    .unwrap();
    let to_r0 = RpcClient::connect(
        r1_server.endpoint(),
        f.addr,
        "localhost",
        &ctls,
        RpcConfig::default(),
    )
    .await
    .unwrap();
    to_r0
        .send_oneway("gossip", &Gossip { round: 7 })
        .await
        .unwrap();
    let (from, remote, msg) =
        tokio::time::timeout(Duration::from_secs(5), f.gossip.lock().await.recv())
            .await
            .unwrap()
            .unwrap();
    assert_eq!((from.as_str(), msg.round), ("replica:r1", 7));
    // The message came from r1's own server socket: one UDP port per replica.
    assert_eq!(remote, ep.local_addr().unwrap());
    r1_server.shutdown().await;
}

#[tokio::test]
async fn timeouts_and_connect_failures_are_typed() {
    let f = fixture(RpcConfig::default()).await;
    let alice = issue(&f.ca, Role::User, "alice");
    let c = connect_with(
        &f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        RpcConfig {
            call_timeout: Duration::from_millis(200),
            ..RpcConfig::default()
        },
    )
    .await
    .unwrap();
    let err = c.call::<_, Echo>("slow", &echo("x")).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());

    // Nobody listens on this port.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let tls = ClientTls::new(
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&alice),
        &ClientOptions {
            connect_timeout: Duration::from_millis(300),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let err = RpcClient::connect(
        &client_endpoint(),
        addr,
        "localhost",
        &tls,
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");

    // After shutdown, calls on an open client fail as a lost connection.
    f.server.shutdown().await;
    let err = c
        .call::<_, EchoReply>("echo", &echo("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::ConnectionLost { .. }),
        "{err:?}"
    );
}
