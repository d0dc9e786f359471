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
    let out = cluster.nexus(&["audit", "verify", "--indexes"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("verified"),
        "clean chain and indexes must verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
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

    let ledger = path.to_str().unwrap();
    let out = cluster.nexus(&["audit", "verify", "--indexes", "--ledger", ledger]);
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

        // Invalid objects, correctly signed and sent straight over the RPC (no CLI validation
        // on the way): refused with the object and the field path, for submit and dry run.
        for (bad, path) in invalid_objects() {
            let ops = vec![
                Op::Apply {
                    object: canonical_value(&object("fine", 1)),
                    if_version: None,
                },
                Op::Apply {
                    object: bad.clone(),
                    if_version: None,
                },
            ];
            let req = SubmitRequest {
                signed: session.sign(ops, Source::Cli).to_bytes(),
            };
            for kind in [kinds::SUBMIT, kinds::DRY_RUN] {
                let err = session
                    .call::<_, serde_json::Value>(kind, &req)
                    .await
                    .expect_err("an invalid object must be refused");
                let nexus_transport::TransportError::Remote(remote) = &err else {
                    panic!("{kind}: {err}");
                };
                assert_eq!(remote.code, ErrorCode::InvalidArgument, "{kind}: {err}");
                assert!(
                    remote
                        .message
                        .contains("(operation 1) is not a valid nexus/v1 object")
                        && remote.message.contains(path),
                    "{kind}: {bad}: the error must name the object and {path}: {}",
                    remote.message
                );
                let details = remote.details.as_ref().expect("problems as details");
                assert_eq!(details["op"], 1);
                assert!(
                    details["problems"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["path"] == path)),
                    "{details}"
                );
            }
        }
        // Every invalid document of the CLI's corpus that is still a JSON object, likewise.
        let mut corpus = 0;
        for object in invalid_corpus() {
            let signed = session.sign(
                vec![Op::Apply {
                    object: object.clone(),
                    if_version: None,
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
                .expect_err("an invalid corpus document must be refused");
            assert_eq!(
                err.remote_code(),
                Some(ErrorCode::InvalidArgument),
                "{object}: {err}"
            );
            corpus += 1;
        }
        assert!(corpus >= 25, "only {corpus} corpus documents were sent");

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

/// Objects the CLI would never send, each with the field path the refusal must name.
fn invalid_objects() -> Vec<(serde_json::Value, &'static str)> {
    use serde_json::json;
    let workload = |spec: serde_json::Value| {
        let mut w = json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "bad"},
                           "spec": {"command": ["sleep", "1"]}});
        if let (Some(base), Some(extra)) = (w["spec"].as_object_mut(), spec.as_object()) {
            base.extend(extra.clone());
        }
        w
    };
    let peer = |peer: serde_json::Value| {
        json!({"apiVersion": "nexus/v1", "kind": "NetworkPolicy", "metadata": {"name": "bad"},
               "spec": {"selector": {"app": "web"}, "ingress": [{"from": [peer]}]}})
    };
    vec![
        (
            workload(json!({"resources": {"cpu": "12X"}})),
            "spec.resources.cpu",
        ),
        (
            workload(json!({"resources": {"cpu": "0"}})),
            "spec.resources.cpu",
        ),
        (
            workload(json!({"resources": {"memory": "64Qi"}})),
            "spec.resources.memory",
        ),
        (
            workload(json!({"ports": [{"port": 0}]})),
            "spec.ports[0].port",
        ),
        (
            workload(json!({"ports": [{"port": 70000}]})),
            "spec.ports[0].port",
        ),
        (workload(json!({"replicas": -2})), "spec.replicas"),
        (workload(json!({"runtime": "docker"})), "spec.runtime"),
        (workload(json!({"comand": ["x"]})), "spec.comand"),
        (
            json!({"apiVersion": "nexus/v1", "kind": "Workload",
                   "metadata": {"name": "bad", "labels": {"app": "no spaces"}},
                   "spec": {"command": ["x"]}}),
            "metadata.labels.app",
        ),
        (
            json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "Bad_Name"},
                   "spec": {"command": ["x"]}}),
            "metadata.name",
        ),
        (
            peer(json!({"selector": {"app": "a"}, "cidr": "10.0.0.0/8"})),
            "spec.ingress[0].from[0]",
        ),
        (
            peer(json!({"cidr": "10.0.0.0/40"})),
            "spec.ingress[0].from[0].cidr",
        ),
        (
            json!({"apiVersion": "nexus/v1", "kind": "GitSource", "metadata": {"name": "bad"},
                   "spec": {"url": "/srv/git/a.git", "interval": "soon"}}),
            "spec.interval",
        ),
        (
            json!({"apiVersion": "nexus/v9", "kind": "Workload", "metadata": {"name": "bad"},
                   "spec": {"command": ["x"]}}),
            "apiVersion",
        ),
    ]
}

/// The documents of the CLI's invalid-input corpus that parse as YAML maps and are invalid on
/// their own (not only in relation to other files), as JSON.
fn invalid_corpus() -> Vec<serde_json::Value> {
    let dir = nexus_tests::repo_root().join("cli/tests/fixtures/invalid");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(docs) = nexus_schemas::yaml::parse_documents(&text) else {
            continue;
        };
        for doc in docs {
            let json = doc.to_json();
            if json.is_object() && nexus_schemas::validate_value(&json).is_err() {
                out.push(json);
            }
        }
    }
    out
}
