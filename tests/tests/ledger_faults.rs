//! The ledger issue's faults, end to end with a real `nexus server` process: kill -9 during
//! 10,000 applies from 8 concurrent clients loses no acknowledged apply; a flipped byte is found
//! by `nexus audit verify`; bad clients and bad requests are refused with nothing written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_api::client::{GetRequest, GetResponse, Selector, SubmitRequest, SubmitResponse};
use nexus_api::kinds;
use nexus_cli::client::Session;
use nexus_ledger::{Op, Source, State, Store, StoreConfig};
use nexus_schemas::{Object, SourceFile, canonical_value, content_hash, validate_sources};
use nexus_tests::{Cluster, text, workload};
use nexus_transport::ErrorCode;

fn object(name: &str, replicas: u32) -> Object {
    let v = validate_sources(&[SourceFile::from_text("t.yaml", workload(name, replicas))]);
    assert!(!v.has_errors(), "{:?}", v.diagnostics);
    v.objects.into_iter().next().unwrap().object
}

const CLIENTS: usize = 8;
const TOTAL: usize = 10_000;
const KILL_AFTER: usize = 3_000;

#[test]
fn acknowledged_applies_survive_kill_9_under_load() {
    let mut cluster = Cluster::init();
    cluster.start();
    let ctx = cluster.context();
    let acked = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();

    // Each client applies TOTAL / CLIENTS distinct objects; a failed call is retried with the same
    // signed request (same id) after reconnecting, so it is applied at most once.
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let (ctx, acked) = (ctx.clone(), acked.clone());
        handles.push(rt.spawn(async move {
            let mut acks: Vec<(String, String, u64)> = Vec::new();
            let mut session = connect(&ctx).await;
            for i in 0..TOTAL / CLIENTS {
                let name = format!("c{c}-{i}");
                let obj = object(&name, (i % 5) as u32);
                let hash = content_hash(&obj).to_hex();
                let signed = session.sign(
                    vec![Op::Apply {
                        object: canonical_value(&obj),
                        if_version: None,
                    }],
                    Source::Cli,
                );
                let req = SubmitRequest {
                    signed: signed.to_bytes(),
                };
                loop {
                    match session.call::<_, SubmitResponse>(kinds::SUBMIT, &req).await {
                        Ok(r) => {
                            acks.push((name.clone(), hash.clone(), r.height));
                            acked.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(e) if e.remote_code().is_none() || e.is_retryable() => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            session = connect(&ctx).await;
                        }
                        Err(e) => panic!("client {c}: apply {name} refused: {e}"),
                    }
                }
            }
            acks
        }));
    }

    // kill -9 the server in the middle of the load, then bring it back.
    let t0 = Instant::now();
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "load stalled at {} acks",
            acked.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_kill = acked.load(Ordering::SeqCst);
    cluster.kill9();
    std::thread::sleep(Duration::from_millis(300));
    cluster.start();
    let mut all_acks = Vec::new();
    for h in handles {
        all_acks.extend(rt.block_on(h).expect("client task"));
    }
    assert_eq!(all_acks.len(), TOTAL);
    eprintln!(
        "killed at {at_kill} acknowledged applies; {} in {:?}",
        all_acks.len(),
        t0.elapsed()
    );

    // Every acknowledged apply is present with the content that was acknowledged.
    let live: GetResponse = rt.block_on(async {
        let s = connect(&ctx).await;
        s.call(
            kinds::GET,
            &GetRequest {
                selector: Selector {
                    kind: Some("Workload".into()),
                    ..Default::default()
                },
                consistent: false,
            },
        )
        .await
        .expect("get")
    });
    let by_name: BTreeMap<String, String> = live
        .objects
        .iter()
        .map(|o| (o.key().2, o.content_hash.clone()))
        .collect();
    for (name, hash, height) in &all_acks {
        assert_eq!(
            by_name.get(name),
            Some(hash),
            "acknowledged apply of {name} at height {height} is missing after kill -9"
        );
        assert!(*height <= live.height);
    }

    // The chain verifies.
    let out = cluster.nexus(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    cluster.stop();

    // The state the replica restored (snapshot + tail) equals the fold of the whole log.
    let store = Store::open(cluster.ledger_path(), StoreConfig::default()).expect("open ledger");
    let (restored, _) = store.load_state().expect("load state");
    let mut folded = State::new();
    let head = store.head().expect("head").expect("non-empty log");
    for h in 1..=head.height {
        let entry = store.entry(h).expect("read entry").expect("entry present");
        folded.apply_entry(&entry).expect("fold");
    }
    assert_eq!(restored.height, folded.height);
    assert_eq!(
        restored.objects, folded.objects,
        "restored state differs from the fold of the log"
    );
    assert_eq!(folded.objects.len(), TOTAL);
}

async fn connect(ctx: &nexus_cli::config::Context) -> Session {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Session::connect_to(ctx.clone()).await {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("cannot reconnect: {e}"),
        }
    }
}

#[test]
fn a_flipped_byte_is_found_by_audit_verify() {
    let mut cluster = Cluster::init();
    cluster.start();
    let dir = cluster.dir.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, name) in ["first", "second", "third"].iter().enumerate() {
        let marker = if i == 1 {
            "tamper-marker-5f3a9c"
        } else {
            "untouched"
        };
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, format!("apiVersion: nexus/v1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  command: [\"echo\", \"{marker}\"]\n")).unwrap();
        let out = cluster.nexus(&["apply", "-f", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = cluster.nexus(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "clean chain must verify: {}",
        text(&out.stdout)
    );
    cluster.stop();

    // Flip one byte of the marker inside the stored entry at height 2.
    let path = cluster.ledger_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let marker = b"tamper-marker-5f3a9c";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker stored in the ledger file");
    bytes[at + 7] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let out = cluster.nexus(&["audit", "verify", "--ledger", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "tampered chain must fail: {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("first bad height: 2"),
        "verify must name height 2: {stdout}"
    );
}

#[test]
fn bad_clients_and_bad_requests_are_refused_and_nothing_is_written() {
    let mut cluster = Cluster::init();
    cluster.start();
    let ok = cluster.nexus(&["apply", "-f", "manifests/examples/web.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    // Invalid manifests: diagnostics, exit 1, nothing sent.
    let bad = cluster.nexus(&[
        "apply",
        "-f",
        "cli/tests/fixtures/invalid/40-many-problems.yaml",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("nothing was applied"),
        "{}",
        text(&bad.stderr)
    );

    let ctx = cluster.context();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let session = Session::connect_to(ctx.clone()).await.expect("connect");
        let before: GetResponse = session
            .call(kinds::GET, &GetRequest::default())
            .await
            .unwrap();

        // A request signed by another key than the connection's certificate.
        let other = nexus_transport::pki::CertificateAuthority::generate(
            "other",
            nexus_transport::pki::Validity::ca_default(std::time::SystemTime::now()),
        )
        .unwrap();
        let mallory = other
            .issue(&nexus_transport::pki::LeafRequest::new(
                nexus_transport::pki::Role::User,
                "admin",
                nexus_transport::pki::Validity::leaf_default(std::time::SystemTime::now()),
            ))
            .unwrap();
        let obj = object("forged", 1);
        let request = nexus_ledger::Request {
            id: "forged-1".into(),
            actor: session.actor(),
            source: Source::Cli,
            ops: vec![Op::Apply {
                object: canonical_value(&obj),
                if_version: None,
            }],
            created_at_ms: 0,
        };
        let forged = nexus_ledger::SignedRequest::sign(request, mallory.signing_key());
        let err = session
            .call::<_, SubmitResponse>(
                kinds::SUBMIT,
                &SubmitRequest {
                    signed: forged.to_bytes(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.remote_code(),
            Some(ErrorCode::PermissionDenied),
            "{err}"
        );

        // Garbage instead of a signed request.
        let err = session
            .call::<_, SubmitResponse>(
                kinds::SUBMIT,
                &SubmitRequest {
                    signed: vec![0xde, 0xad, 0xbe, 0xef],
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::InvalidArgument), "{err}");

        // Conflict: if_version that does not match.
        let signed = session.sign(
            vec![Op::Apply {
                object: canonical_value(&object("web", 5)),
                if_version: Some(999),
            }],
            Source::Cli,
        );
        let err = session
            .call::<_, SubmitResponse>(
                kinds::SUBMIT,
                &SubmitRequest {
                    signed: signed.to_bytes(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::Conflict), "{err}");

        let after: GetResponse = session
            .call(kinds::GET, &GetRequest::default())
            .await
            .unwrap();
        assert_eq!(
            before.height, after.height,
            "a refused request must not write an entry"
        );
        assert_eq!(before.objects, after.objects);

        // A client certificate from another cluster's CA is refused at the handshake.
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("m.crt"), dir.path().join("m.key"));
        std::fs::write(&cert, mallory.cert_pem()).unwrap();
        std::fs::write(&key, mallory.key_pem()).unwrap();
        let foreign = nexus_cli::config::Context {
            cert,
            key,
            ..ctx.clone()
        };
        match Session::connect_to(foreign).await {
            Ok(_) => panic!("a certificate from another CA must be refused"),
            Err(e) => assert!(
                e.to_string().contains("UnknownCA") || e.to_string().contains("unknown"),
                "{e}"
            ),
        }
    });
}
