//! Refusals: foreign or expired certificates, wrong server roles, anonymous clients, join
//! tokens, oversized and malformed frames, unknown versions.

use crate::fixture::*;

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
async fn expired_client_certificates_are_refused() {
    let f = fixture(RpcConfig::default()).await;
    let day = Duration::from_secs(86_400);
    let past = Validity {
        not_before: SystemTime::now() - 2 * day,
        not_after: SystemTime::now() - day,
    };
    let old =
        f.ca.issue(&LeafRequest::new(Role::User, "alice", past))
            .unwrap();
    let err = connect_with(
        &f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        Some(&old),
        RpcConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::HandshakeRefused { reason } if reason.contains("CertificateExpired") && reason.contains("has expired")),
        "{err:?}"
    );
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
