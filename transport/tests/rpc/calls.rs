//! Calls that should work: unary, streaming, one-way, concurrency, replica mesh, timeouts.

use crate::fixture::*;

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
    // Raw one-way bodies arrive byte for byte, without JSON.
    replica
        .send_oneway_bytes("raw", &[0xff; 1000])
        .await
        .unwrap();
    let (from, _, msg) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from.as_str(), msg.round), ("replica:r1", 1000));
    // A long-lived one-way stream carries many messages, in order, several per write; a user
    // cannot open one for a replica-only kind.
    let mut stream = replica.open_oneway_stream("raw").await.unwrap();
    stream.send(&[vec![1; 10], vec![2; 20]]).await.unwrap();
    stream.send(&[vec![3; 30]]).await.unwrap();
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let (_, _, msg) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        sizes.push(msg.round);
    }
    assert_eq!(sizes, vec![10, 20, 30], "in order");
    stream.finish();
    let refused_before = f.server.stats().handler_errors;
    let mut from_user = user.open_oneway_stream("raw").await.unwrap();
    from_user.send(&[vec![4; 40]]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.server.stats().handler_errors == refused_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "user stream was not refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rx.try_recv().is_err(),
        "a user's stream must not reach the handler"
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

#[tokio::test]
async fn open_watches_do_not_use_up_request_slots() {
    let f = fixture(RpcConfig {
        max_concurrent_requests: 1,
        ..RpcConfig::default()
    })
    .await;
    let node = issue(&f.ca, Role::Node, "n1");
    let c = connect(&f, Some(&node)).await;
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut w = c.call_stream::<_, u64>("ticks", &()).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap(), 0);
        watches.push(w);
    }
    // With one request slot and three live watches, unary calls still get through.
    for i in 0..5 {
        let r: EchoReply = c.call("echo", &echo(&format!("{i}"))).await.unwrap();
        assert_eq!(r.text, format!("{i}"));
    }
    for w in &mut watches {
        assert!(w.next().await.unwrap().unwrap() >= 1);
    }
}
