//! Watchers against real repositories and sockets: a push to a local bare repository wakes the
//! notify watcher; the webhook endpoint accepts signed requests and refuses the rest.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, workload};
use nexus_gitops::watch::{
    ChangeEvent, LocalWatcher, Trigger, WebhookConfig, serve_webhooks, sign_body,
};
use nexus_gitops::{GitRepo, SourceId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[tokio::test]
async fn notify_watcher_fires_after_a_push() {
    let f = Fixture::new();
    f.write("a.yaml", &workload("a", 1));
    f.commit("one");
    f.push();
    let git_dir = GitRepo::open(&f.origin).unwrap().git_dir().to_path_buf();
    let (tx, mut rx) = mpsc::channel(8);
    let id = SourceId::new("default", "local");
    let _w = LocalWatcher::spawn(id.clone(), &git_dir, Duration::from_millis(200), tx).unwrap();
    // Nothing happens while nobody pushes.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), rx.recv())
            .await
            .is_err()
    );

    f.write("a.yaml", &workload("a", 2));
    f.commit("two");
    let pushed = Instant::now();
    f.push();
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("watcher fired")
        .unwrap();
    println!(
        "notify watcher fired {:?} after the push returned",
        pushed.elapsed()
    );
    assert_eq!(
        ev,
        ChangeEvent {
            source: id,
            trigger: Trigger::LocalRefs
        }
    );
    // One push is one event (debounced), not one per file touched.
    assert!(
        tokio::time::timeout(Duration::from_millis(600), rx.recv())
            .await
            .is_err()
    );
}

async fn request(addr: std::net::SocketAddr, raw: Vec<u8>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&raw).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn post(path: &str, body: &[u8], sig: Option<&str>) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: nexus\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(s) = sig {
        r.push_str(&format!("X-Hub-Signature-256: {s}\r\n"));
    }
    r.push_str("\r\n");
    let mut v = r.into_bytes();
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn webhook_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::channel(8);
    let secrets: nexus_gitops::watch::webhook::SecretLookup =
        Arc::new(|id: &SourceId| (id.name == "apps").then(|| b"s3cret".to_vec()));
    let config = WebhookConfig {
        max_body: 1000,
        read_timeout: Duration::from_millis(500),
        ..WebhookConfig::default()
    };
    tokio::spawn(serve_webhooks(listener, secrets, tx, config));
    let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    // Good signature: 202 and one event.
    let good = sign_body(b"s3cret", body);
    let resp = request(addr, post("/hooks/git/apps", body, Some(&good))).await;
    assert!(resp.starts_with("HTTP/1.1 202 Accepted\r\n"), "{resp}");
    let ev = rx.recv().await.unwrap();
    assert_eq!(
        ev,
        ChangeEvent {
            source: SourceId::new("default", "apps"),
            trigger: Trigger::Webhook
        }
    );

    // Bad, missing or wrong-secret signatures: 401 and no event.
    let wrong = sign_body(b"guess", body);
    for sig in [Some(wrong.as_str()), None, Some("sha256=1234")] {
        let resp = request(addr, post("/hooks/git/apps", body, sig)).await;
        assert!(resp.starts_with("HTTP/1.1 401 "), "{resp}");
    }
    // Tampered body with the original signature.
    let resp = request(
        addr,
        post(
            "/hooks/git/apps",
            br#"{"ref":"refs/heads/evil"}"#,
            Some(&good),
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 401 "), "{resp}");
    // Unknown source, wrong method, oversized body, chunked, garbage.
    assert!(
        request(addr, post("/hooks/git/nope", body, Some(&good)))
            .await
            .starts_with("HTTP/1.1 404 ")
    );
    assert!(
        request(addr, b"GET /hooks/git/apps HTTP/1.1\r\n\r\n".to_vec())
            .await
            .starts_with("HTTP/1.1 405 ")
    );
    let big = vec![b'x'; 5000];
    assert!(
        request(
            addr,
            post("/hooks/git/apps", &big, Some(&sign_body(b"s3cret", &big)))
        )
        .await
        .starts_with("HTTP/1.1 413 ")
    );
    assert!(
        request(
            addr,
            b"POST /hooks/git/apps HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
        )
        .await
        .starts_with("HTTP/1.1 411 ")
    );
    assert!(
        request(addr, b"\x00\x01 nonsense\r\n\r\n".to_vec())
            .await
            .starts_with("HTTP/1.1 400 ")
    );
    // A client that stops sending mid-body gets 408 instead of holding the slot.
    let mut partial = post("/hooks/git/apps", body, Some(&good));
    partial.truncate(partial.len() - 5);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&partial).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    // None of the refused requests produced an event.
    assert!(rx.try_recv().is_err());
}
