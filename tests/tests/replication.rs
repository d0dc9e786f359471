//! BFT replication end to end, with four real `nexus server` processes: kill -9 of one replica
//! at random moments under load from concurrent clients (it catches up, no acknowledged apply
//! is lost, every chain is the same and every certificate verifies); a wiped replica syncs
//! from height 0; every replica, proposer or not, answers clients; a retried request id is
//! applied once; and (root) a replica cut off in its own network namespace stands still while
//! the other three commit, then converges after the partition heals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nexus_api::client::{
    GetRequest, GetResponse, HistoryRequest, HistoryResponse, Selector, StatusRequest,
    StatusResponse, SubmitRequest, SubmitResponse,
};
use nexus_api::kinds;
use nexus_cli::client::Session;
use nexus_cli::config::Context;
use nexus_ledger::{Op, Source};
use nexus_schemas::{Object, SourceFile, canonical_value, content_hash, validate_sources};
use nexus_tests::netns::{Hosts, can_use_netns};
use nexus_tests::{Replicas, text, workload};

fn object(name: &str, replicas: u32) -> Object {
    let v = validate_sources(&[SourceFile::from_text("t.yaml", workload(name, replicas))]);
    assert!(!v.has_errors(), "{:?}", v.diagnostics);
    v.objects.into_iter().next().unwrap().object
}

fn apply_op(obj: &Object) -> Vec<Op> {
    vec![Op::Apply {
        object: canonical_value(obj),
        if_version: None,
    }]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small xorshift PRNG: the kill schedule is random, and its seed is printed so a failing
/// run can be replayed with `NEXUS_TEST_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("NEXUS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("kill schedule seed: {seed} (replay with NEXUS_TEST_SEED={seed})");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn connect(ctx: &Context) -> Result<Session, String> {
    Session::connect_to(ctx.clone())
        .await
        .map_err(|e| e.to_string())
}

async fn status(ctx: &Context) -> Result<StatusResponse, String> {
    let s = connect(ctx).await?;
    s.call(kinds::STATUS, &StatusRequest {})
        .await
        .map_err(|e| e.to_string())
}

/// Waits until every replica is at one height with one head hash; returns that height.
fn wait_converged(rt: &tokio::runtime::Runtime, r: &Replicas, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let all: Vec<Result<(u64, String), String>> = (0..r.len())
            .map(|i| {
                rt.block_on(status(&r.context_of(i)))
                    .map(|s| (s.height, s.head_hash))
            })
            .collect();
        if let Some(Ok(first)) = all.first()
            && all.iter().all(|x| x.as_ref() == Ok(first))
        {
            return first.0;
        }
        if Instant::now() > deadline {
            panic!(
                "replicas did not converge within {within:?}: {all:?}\n{}",
                r.logs_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until replica `i` reports a height of at least `h`.
fn wait_height(rt: &tokio::runtime::Runtime, r: &Replicas, i: usize, h: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = rt.block_on(status(&r.context_of(i)));
        if matches!(&now, Ok(s) if s.height >= h) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "r{i} did not reach height {h} within {within:?}: {now:?}\n{}",
                r.logs_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `nexus audit verify --all-replicas` passes and names every replica.
fn verify_all_replicas(r: &Replicas) {
    let out = r.nexus(&["audit", "verify", "--all-replicas"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify --all-replicas: {stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("all {} replicas hold the same chain", r.len())),
        "{stdout}"
    );
    for i in 0..r.len() {
        assert!(stdout.contains(&format!("✓ replica r{i}:")), "{stdout}");
    }
}

fn workloads(rt: &tokio::runtime::Runtime, ctx: &Context) -> GetResponse {
    rt.block_on(async {
        let s = connect(ctx).await?;
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
        .map_err(|e| e.to_string())
    })
    .expect("get workloads")
}

const CLIENTS: usize = 8;
/// Applies each client makes at least; it keeps going until the kills are over.
const MIN_PER_CLIENT: usize = 40;
const KILLS: usize = 3;

#[test]
fn kill_9_of_any_replica_under_load_loses_no_acknowledged_apply() {
    let t0 = Instant::now();
    let mut r = Replicas::init(4);
    r.start_all();
    let rt = runtime();
    let contexts: Vec<Context> = (0..r.len()).map(|i| r.context_of(i)).collect();
    let acked = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    // Client c starts at replica c % 4 (so most requests arrive at a replica that is not the
    // proposer of the next height). A call that fails is retried with the same signed request
    // (same id) at the next replica: it is applied at most once.
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let (contexts, acked, retried, done) = (
            contexts.clone(),
            acked.clone(),
            retried.clone(),
            done.clone(),
        );
        handles.push(rt.spawn(async move {
            let mut at = c % contexts.len();
            let mut acks: Vec<(String, String, u64)> = Vec::new();
            let mut session: Option<Session> = None;
            let mut i = 0;
            while i < MIN_PER_CLIENT || !done.load(Ordering::SeqCst) {
                let name = format!("c{c}-{i}");
                i += 1;
                let obj = object(&name, (i % 5) as u32);
                let hash = content_hash(&obj).to_hex();
                let mut signed = None;
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "client {c}: {name} never acknowledged"
                    );
                    let s = match session.take() {
                        Some(s) => s,
                        None => match connect(&contexts[at]).await {
                            Ok(s) => s,
                            Err(_) => {
                                at = (at + 1) % contexts.len();
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let req = signed
                        .get_or_insert_with(|| SubmitRequest {
                            signed: s.sign(apply_op(&obj), Source::Cli).to_bytes(),
                        })
                        .clone();
                    match s.call::<_, SubmitResponse>(kinds::SUBMIT, &req).await {
                        Ok(resp) => {
                            acks.push((name.clone(), hash.clone(), resp.height));
                            acked.fetch_add(1, Ordering::SeqCst);
                            session = Some(s);
                            break;
                        }
                        Err(e) if e.remote_code().is_none() || e.is_retryable() => {
                            retried.fetch_add(1, Ordering::SeqCst);
                            at = (at + 1) % contexts.len();
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("client {c}: apply {name} refused: {e}"),
                    }
                }
            }
            acks
        }));
    }

    // kill -9 a random replica at a random moment, restart it after a random pause, and check
    // that it catches up with where the others were, while the load goes on.
    let mut rng = Rng::from_env();
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        let victim = rng.below(r.len() as u64) as usize;
        let before = acked.load(Ordering::SeqCst);
        r.kill9(victim);
        std::thread::sleep(Duration::from_millis(100 + rng.below(900)));
        let others = (0..r.len())
            .filter(|i| *i != victim)
            .filter_map(|i| rt.block_on(status(&r.context_of(i))).ok())
            .map(|s| s.height)
            .max()
            .unwrap_or(0);
        r.start(victim);
        eprintln!(
            "kill {k}: r{victim} killed at {before} acks, restarted at {} acks (others at height {others})",
            acked.load(Ordering::SeqCst)
        );
        wait_height(&rt, &r, victim, others, Duration::from_secs(30));
    }
    done.store(true, Ordering::SeqCst);
    let mut all_acks = Vec::new();
    for h in handles {
        all_acks.extend(rt.block_on(h).expect("client task"));
    }
    eprintln!(
        "{} applies acknowledged ({} calls retried) in {:?}",
        all_acks.len(),
        retried.load(Ordering::SeqCst),
        t0.elapsed()
    );
    assert!(all_acks.len() >= CLIENTS * MIN_PER_CLIENT);

    // Every replica holds every acknowledged apply, with the acknowledged content, and nothing
    // else; all are at the same height with the same head.
    let height = wait_converged(&rt, &r, Duration::from_secs(30));
    eprintln!("all replicas at height {height}");
    for (i, ctx) in contexts.iter().enumerate() {
        let live = workloads(&rt, ctx);
        let by_name: BTreeMap<String, String> = live
            .objects
            .iter()
            .map(|o| (o.key().2, o.content_hash.clone()))
            .collect();
        for (name, hash, h) in &all_acks {
            assert_eq!(
                by_name.get(name),
                Some(hash),
                "r{i}: acknowledged apply of {name} at height {h} is missing"
            );
            assert!(*h <= height);
        }
        assert_eq!(
            by_name.len(),
            all_acks.len(),
            "r{i} holds unacknowledged objects"
        );
    }
    // Same chain everywhere, every entry certified by 2f+1 of its height's validators.
    verify_all_replicas(&r);
    eprintln!("done in {:?}", t0.elapsed());
}

#[test]
fn a_wiped_replica_syncs_from_zero_any_replica_answers_and_a_retry_applies_once() {
    let t0 = Instant::now();
    let mut r = Replicas::init(4);
    r.start_all();
    let rt = runtime();
    let dir = r.dir.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();

    // Every replica answers an apply with the height that holds it, whoever proposes: the
    // proposer rotates, so most of these arrive at a replica that is not the proposer.
    let mut heights = Vec::new();
    for i in 0..r.len() {
        for k in 0..2 {
            let name = format!("via-r{i}-{k}");
            let f = dir.join(format!("{name}.yaml"));
            std::fs::write(&f, workload(&name, 1)).unwrap();
            let out = r.nexus(&[
                "--context",
                &format!("r{i}"),
                "apply",
                "-f",
                f.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "apply via r{i}: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
            let st = rt.block_on(status(&r.context_of(i))).unwrap();
            heights.push(st.height);
        }
    }
    assert!(
        heights.windows(2).all(|w| w[0] < w[1]),
        "every apply is its own later height: {heights:?}"
    );

    // One signed request sent to all four replicas at once, then once more to one of them: it
    // is decided once, everyone answers with that height, and the object has one version.
    let retry = object("retried", 2);
    let (answers, again) = rt.block_on(async {
        let sessions: Vec<Session> = futures::future::join_all(
            (0..r.len())
                .map(|i| {
                    let ctx = r.context_of(i);
                    async move { connect(&ctx).await }
                })
                .collect::<Vec<_>>(),
        )
        .await
        .into_iter()
        .map(|s| s.expect("connect"))
        .collect();
        let req = SubmitRequest {
            signed: sessions[0].sign(apply_op(&retry), Source::Cli).to_bytes(),
        };
        let calls = sessions
            .iter()
            .map(|s| s.call::<_, SubmitResponse>(kinds::SUBMIT, &req))
            .collect::<Vec<_>>();
        let answers: Vec<SubmitResponse> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|a| a.expect("submit"))
            .collect();
        let again: SubmitResponse = sessions[3].call(kinds::SUBMIT, &req).await.expect("retry");
        (answers, again)
    });
    let h = answers[0].height;
    assert!(answers.iter().all(|a| a.height == h), "{answers:?}");
    assert_eq!(again.height, h);
    assert!(again.duplicate, "a retry is answered as a duplicate");
    assert!(answers.iter().all(|a| a.request_id == again.request_id));
    let history: HistoryResponse = rt.block_on(async {
        let s = connect(&r.context_of(2)).await.unwrap();
        s.call(
            kinds::HISTORY,
            &HistoryRequest {
                kind: "Workload".into(),
                namespace: "default".into(),
                name: "retried".into(),
                limit: None,
            },
        )
        .await
        .expect("history")
    });
    assert_eq!(
        history.versions.len(),
        1,
        "applied once: {:?}",
        history.versions
    );
    assert_eq!(history.versions[0].height, h);

    // r3 loses its whole ledger; the cluster goes on without it; restarted empty, it syncs
    // every entry from height 0, certificates included.
    r.kill9(3);
    r.wipe(3);
    for k in 0..3 {
        let name = format!("while-wiped-{k}");
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, workload(&name, 1)).unwrap();
        let out = r.nexus(&["apply", "-f", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let top = rt.block_on(status(&r.context_of(0))).unwrap().height;
    r.start(3);
    wait_height(&rt, &r, 3, top, Duration::from_secs(30));
    let synced = workloads(&rt, &r.context_of(3));
    assert_eq!(
        synced.objects.len(),
        r.len() * 2 + 1 + 3,
        "r3 holds every object again"
    );
    // And it takes part again: an apply through r3 is decided and held by everyone.
    let f = dir.join("after-sync.yaml");
    std::fs::write(&f, workload("after-sync", 1)).unwrap();
    let out = r.nexus(&["--context", "r3", "apply", "-f", f.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_converged(&rt, &r, Duration::from_secs(30));
    verify_all_replicas(&r);

    // `cluster status` shows every replica with its height and round, and soon every one as
    // reachable (r3's peers last heard from it before it restarted).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = r.nexus(&["cluster", "status"]);
        let st = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        for i in 0..r.len() {
            assert!(st.contains(&format!("r{i}")), "{st}");
        }
        if !st.contains("unreachable") {
            break;
        }
        if Instant::now() > deadline {
            let views: Vec<String> = (0..r.len())
                .map(|i| {
                    let ctx = format!("r{i}");
                    text(&r.nexus(&["--context", &ctx, "cluster", "status"]).stdout)
                })
                .collect();
            panic!(
                "{st}\nas each replica sees it:\n{}\n{}",
                views.join("\n"),
                r.logs_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("done in {:?}", t0.elapsed());
}

/// The height in the first line of `nexus cluster status` (`cluster NAME  height N  ...`).
fn status_height(out: &str) -> Option<u64> {
    let first = out.lines().next()?;
    let mut words = first.split_whitespace();
    while let Some(w) = words.next() {
        if w == "height" {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[test]
fn a_partitioned_minority_stands_still_and_converges_after_healing() {
    if !can_use_netns("a_partitioned_minority_stands_still_and_converges_after_healing") {
        return;
    }
    let t0 = Instant::now();
    let hosts = Hosts::create(4).expect("network namespaces");
    let addrs = hosts
        .addrs
        .iter()
        .map(|a| std::net::SocketAddr::new((*a).into(), 7443))
        .collect();
    let mut r = Replicas::init_at(addrs);
    for i in 0..r.len() {
        r.set_prefix(i, hosts.exec_prefix(i));
    }
    r.start_all();
    let rt = runtime();
    let dir = r.dir.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    let apply = |r: &Replicas, name: &str| {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, workload(name, 1)).unwrap();
        let out = r.nexus(&["apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply {name}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    for k in 0..3 {
        apply(&r, &format!("before-{k}"));
    }
    let before = wait_converged(&rt, &r, Duration::from_secs(30));

    // Cut r3 off. The three others keep committing; r3, asked from inside its namespace,
    // stays where it was.
    let victim = 3;
    hosts.cut(victim, true).expect("cut");
    let cut_status = |r: &Replicas| {
        let out = r.nexus_at(victim, &["--context", "r3", "cluster", "status"]);
        assert!(
            out.status.success(),
            "status of the cut-off replica: {}",
            text(&out.stderr)
        );
        status_height(&text(&out.stdout)).expect("a height in cluster status")
    };
    assert_eq!(cut_status(&r), before);
    for k in 0..5 {
        apply(&r, &format!("during-{k}"));
    }
    let majority = rt.block_on(status(&r.context_of(0))).unwrap().height;
    assert!(majority >= before + 5, "the majority commits: {majority}");
    for i in 0..3 {
        wait_height(&rt, &r, i, majority, Duration::from_secs(10));
    }
    // The majority sees r3 as unreachable.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = r.nexus(&["--context", "r0", "cluster", "status"]);
        let st = text(&out.stdout);
        if st
            .lines()
            .any(|l| l.starts_with("r3") && l.contains("unreachable"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r3 never shown unreachable:\n{st}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A minority of one makes no progress, whatever it is asked.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cut_status(&r), before, "the cut-off replica decided alone");

    // Heal: r3 catches up and all four hold the same chain.
    hosts.cut(victim, false).expect("heal");
    wait_height(&rt, &r, victim, majority, Duration::from_secs(30));
    apply(&r, "after-heal");
    wait_converged(&rt, &r, Duration::from_secs(30));
    verify_all_replicas(&r);
    let all = workloads(&rt, &r.context_of(victim));
    assert_eq!(all.objects.len(), 9);
    drop(r);
    drop(hosts);
    eprintln!("done in {:?}", t0.elapsed());
}

#[test]
fn a_fifth_replica_joins_by_a_membership_change_and_a_removed_one_leaves() {
    let t0 = Instant::now();
    let mut r = Replicas::init(4);
    r.start_all();
    let rt = runtime();
    let dir = r.dir.path().join("m");
    std::fs::create_dir_all(&dir).unwrap();
    let apply = |r: &Replicas, context: &str, name: &str| {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, workload(name, 1)).unwrap();
        let out = r.nexus(&["--context", context, "apply", "-f", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "apply {name} via {context}: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            r.logs_tail(30)
        );
    };
    for k in 0..3 {
        apply(&r, "local", &format!("before-{k}"));
    }

    // The documented procedure (docs/membership.md): prepare r4 from r0's config, start it
    // empty, add it; it syncs and votes from the height the change takes effect.
    let n = r.prepare_new();
    r.start(n);
    let cert = r.replica_dir(n).join("tls.crt");
    let addr = r.addrs[n].to_string();
    let out = r.nexus(&[
        "cluster",
        "member",
        "add",
        &format!("r{n}"),
        "--addr",
        &addr,
        "--cert",
        cert.to_str().unwrap(),
    ]);
    let said = text(&out.stdout);
    assert!(
        out.status.success(),
        "member add: {said}{}",
        text(&out.stderr)
    );
    assert!(
        said.contains("joins the validator set from height"),
        "{said}"
    );
    for k in 0..3 {
        apply(&r, &format!("r{n}"), &format!("via-new-{k}"));
    }
    wait_converged(&rt, &r, Duration::from_secs(30));

    // Five validators need four votes: with r0 down, progress needs r4's vote.
    r.kill9(0);
    apply(&r, "r2", "needs-r4");

    // Remove r0 (down). Once that took effect the set is r1..r4 (quorum 3), so the cluster
    // also goes on with r1 down: with five validators and two down it could not.
    let out = r.nexus(&["--context", "r1", "cluster", "member", "remove", "r0"]);
    assert!(
        out.status.success(),
        "member remove: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for k in 0..2 {
        apply(&r, "r2", &format!("after-remove-{k}"));
    }
    r.kill9(1);
    apply(&r, "r3", "without-r0-and-r1");

    // Everyone comes back: r1 catches up; r0, no longer a validator, keeps the prefix it has.
    r.start(0);
    r.start(1);
    let top = rt.block_on(status(&r.context_of(2))).unwrap().height;
    wait_height(&rt, &r, 1, top, Duration::from_secs(30));
    verify_all_replicas(&r);
    let out = r.nexus(&["--context", "r2", "cluster", "status"]);
    let st = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(st.contains("r4"), "{st}");
    assert!(
        !st.lines().any(|l| l.starts_with("r0 ")),
        "r0 is no longer listed as a replica:\n{st}"
    );
    eprintln!("done in {:?}", t0.elapsed());
}
