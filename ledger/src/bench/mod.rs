//! `nexus bench ledger`: preparing a signed request as a replica does (signature, JSON, validation);
//! apply latency and throughput through the group-commit front with 1, 8
//! and 64 concurrent submitters; audit queries by object and by actor, and `audit verify`, over a
//! generated log of (by default) 1,000,000 events. Returns a [`BenchTable`] the CLI prints.

pub mod generate;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::json;

use crate::audit::{AuditQuery, history, query, verify};
use crate::ledger::{Caller, Ledger, LedgerConfig};
use crate::request::{Op, Request, SignedRequest, Source};
use crate::store::{Store, StoreConfig, StoreError};
use generate::{GenConfig, actor_name, generate, object_key};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Scratch directory (created; the databases are removed afterwards).
    pub dir: PathBuf,
    /// Concurrent submitters for the apply benchmark.
    pub concurrency: Vec<usize>,
    /// How long each apply level runs.
    pub apply_duration: Duration,
    /// Shape of the generated log for the audit and verify benchmarks.
    pub log: GenConfig,
    /// Queries timed per query type.
    pub queries: usize,
    /// Events returned per query.
    pub query_limit: usize,
    /// Signed requests prepared (decoded, signature checked, objects validated) one by one.
    pub prepare_requests: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            dir: std::env::temp_dir().join(format!("nexus-bench-{}", std::process::id())),
            concurrency: vec![1, 8, 64],
            apply_duration: Duration::from_secs(3),
            log: GenConfig::default(),
            queries: 200,
            query_limit: 100,
            prepare_requests: 2000,
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    pub name: String,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Operations per second.
    pub throughput: Option<f64>,
    /// Wall time of the whole measurement.
    pub total: Duration,
    pub note: String,
}

/// The results, printable as a plain-text table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BenchTable {
    pub rows: Vec<BenchRow>,
}

impl fmt::Display for BenchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
        writeln!(
            f,
            "{:<34} {:>11} {:>11} {:>14} {:>10}  notes",
            "benchmark", "p50", "p99", "throughput", "total"
        )?;
        for r in &self.rows {
            let tp = r
                .throughput
                .map_or("-".to_string(), |t| format!("{t:.0}/s"));
            writeln!(
                f,
                "{:<34} {:>11} {:>11} {:>14} {:>9.2}s  {}",
                r.name,
                ms(r.p50_ms),
                ms(r.p99_ms),
                tp,
                r.total.as_secs_f64(),
                r.note
            )?;
        }
        Ok(())
    }
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Open(#[from] crate::ledger::OpenError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Failed(String),
}

/// (p50, p99) of durations, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (Option<f64>, Option<f64>) {
    if samples.is_empty() {
        return (None, None);
    }
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (Some(at(0.50)), Some(at(0.99)))
}

/// Runs every benchmark; `progress` receives a line before each step.
pub fn run(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<BenchTable, BenchError> {
    std::fs::create_dir_all(&cfg.dir)?;
    let result = run_in(cfg, progress);
    let _ = std::fs::remove_dir_all(&cfg.dir);
    result
}

fn run_in(cfg: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<BenchTable, BenchError> {
    let mut table = BenchTable::default();
    progress(&format!(
        "preparing {} signed 1 KiB applies as a replica does",
        cfg.prepare_requests
    ));
    table.rows.push(prepare_row(cfg.prepare_requests)?);
    for &c in &cfg.concurrency {
        progress(&format!(
            "apply with {c} concurrent submitters for {:?}",
            cfg.apply_duration
        ));
        table.rows.push(apply_level(cfg, c)?);
    }
    let path = cfg.dir.join("audit.redb");
    let store = Store::open(&path, StoreConfig::default())?;
    progress(&format!("generating {} events", cfg.log.events));
    let start = Instant::now();
    let stats = generate(&store, &cfg.log)?;
    let took = start.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    table.rows.push(BenchRow {
        name: format!("generate {} events", stats.events),
        p50_ms: None,
        p99_ms: None,
        throughput: Some(stats.events as f64 / took.as_secs_f64()),
        total: took,
        note: format!(
            "{} entries, {} signed requests, {} MiB",
            stats.entries,
            stats.requests,
            size >> 20
        ),
    });
    progress("audit queries");
    table.rows.extend(audit_rows(cfg, &store)?);
    progress("verify");
    let start = Instant::now();
    let report = verify(&store)?;
    let took = start.elapsed();
    if let Some(p) = report.problem {
        return Err(BenchError::Failed(format!(
            "verify found a problem in the generated log: {p}"
        )));
    }
    table.rows.push(BenchRow {
        name: format!("audit verify ({} events)", report.events),
        p50_ms: None,
        p99_ms: None,
        throughput: Some(report.events as f64 / took.as_secs_f64()),
        total: took,
        note: format!("{} entries, {} signatures", report.entries, report.requests),
    });
    Ok(table)
}

/// What every replica does with every request it receives (from a client or a peer) before it
/// can propose or vote on it: [`crate::prepared::Prepared::decode`] of a signed 1 KiB apply.
/// The note splits the mean into the signature check, the JSON decode and the object validation,
/// each timed in a loop of its own.
fn prepare_row(n: usize) -> Result<BenchRow, BenchError> {
    let key = SigningKey::from_bytes(blake3::hash(b"bench-prepare").as_bytes());
    let items: Vec<Vec<u8>> = (0..n.max(1))
        .map(|i| {
            let req = Request {
                id: format!("p-{i}"),
                actor: "user:bench".into(),
                source: Source::Cli,
                ops: vec![Op::Apply {
                    object: kib_workload(&format!("p{i}"), 3),
                    if_version: None,
                }],
                created_at_ms: 0,
            };
            SignedRequest::sign_to_bytes(req, &key).1
        })
        .collect();
    let mut latencies = Vec::with_capacity(items.len());
    let start = Instant::now();
    for item in &items {
        let t0 = Instant::now();
        let p = crate::prepared::Prepared::decode(item)
            .ok_or_else(|| BenchError::Failed("a benchmark request does not decode".into()))?;
        latencies.push(t0.elapsed());
        if p.signature.is_err() || p.check_objects().is_err() {
            return Err(BenchError::Failed(
                "a benchmark request does not verify or validate".into(),
            ));
        }
    }
    let total = start.elapsed();
    let decoded: Vec<SignedRequest> = items
        .iter()
        .filter_map(|b| SignedRequest::from_bytes(b).ok())
        .collect();
    let t0 = Instant::now();
    for item in &items {
        let raw = crate::request::RawSignedRequest::decode(item);
        let _ = std::hint::black_box(raw.map(|r| r.verify()));
    }
    let verify = t0.elapsed();
    let t0 = Instant::now();
    for item in &items {
        let raw = crate::request::RawSignedRequest::decode(item);
        let _ = std::hint::black_box(raw.map(|r| serde_json::from_str::<Request>(r.json).is_ok()));
    }
    let json = t0.elapsed();
    let t0 = Instant::now();
    for s in &decoded {
        for (i, op) in s.request.ops.iter().enumerate() {
            if let Op::Apply { object, .. } = op {
                let _ = std::hint::black_box(crate::plan::parse_object(i, object));
            }
        }
    }
    let parse = t0.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / decoded.len().max(1) as f64;
    let (p50_ms, p99_ms) = percentiles(&mut latencies);
    Ok(BenchRow {
        name: "prepare a signed 1 KiB apply".into(),
        p50_ms,
        p99_ms,
        throughput: Some(items.len() as f64 / total.as_secs_f64()),
        total,
        note: format!(
            "{} requests on one thread; mean {:.1} µs, of which signature {:.1} µs, JSON decode {:.1} µs, validate and canonicalize {:.1} µs",
            items.len(),
            per(total),
            per(verify),
            per(json),
            per(parse)
        ),
    })
}

/// A Workload of about 1 KiB of canonical JSON.
fn kib_workload(name: &str, replicas: u64) -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| {
            (
                format!("SETTING_{i:02}"),
                json!(format!("value-{i:02}-{name}-padding")),
            )
        })
        .collect();
    json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": name, "labels": {"app": name}}, "spec": {"replicas": replicas, "command": ["/usr/bin/server", "--port", "8080"], "env": env, "ports": [{"port": 8080}]}})
}

fn apply_level(cfg: &BenchConfig, concurrency: usize) -> Result<BenchRow, BenchError> {
    let path = cfg.dir.join(format!("apply-{concurrency}.redb"));
    let ledger = Arc::new(Ledger::open(&path, LedgerConfig::default())?);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|t| {
            let (ledger, stop) = (ledger.clone(), stop.clone());
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let key = SigningKey::from_bytes(
                    blake3::hash(format!("bench-{t}").as_bytes()).as_bytes(),
                );
                let caller = Caller {
                    actor: format!("user:bench{t}"),
                    public_key: key.verifying_key().to_bytes(),
                };
                let mut latencies = Vec::new();
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let ops = vec![Op::Apply {
                        object: kib_workload(&format!("b{t}-{}", i % 100), i + 1),
                        if_version: None,
                    }];
                    let req = Request {
                        id: format!("{t}-{i}"),
                        actor: caller.actor.clone(),
                        source: Source::Cli,
                        ops,
                        created_at_ms: 0,
                    };
                    let signed = SignedRequest::sign(req, &key);
                    let t0 = Instant::now();
                    ledger.submit(signed, &caller).map_err(|e| e.to_string())?;
                    latencies.push(t0.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    std::thread::sleep(cfg.apply_duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        let lat = h
            .join()
            .map_err(|_| BenchError::Failed("a submitter panicked".into()))?
            .map_err(BenchError::Failed)?;
        all.extend(lat);
    }
    let took = start.elapsed();
    let entries = ledger.height();
    let n = all.len();
    let (p50_ms, p99_ms) = percentiles(&mut all);
    Ok(BenchRow {
        name: format!(
            "apply, {concurrency} submitter{}",
            if concurrency == 1 { "" } else { "s" }
        ),
        p50_ms,
        p99_ms,
        throughput: Some(n as f64 / took.as_secs_f64()),
        total: took,
        note: format!(
            "{n} requests in {entries} entries ({:.1} per fsync), ~1 KiB object each",
            n as f64 / entries.max(1) as f64
        ),
    })
}

/// A fixed pseudo-random pick in `0..n` for query number `i` (no clock, no global RNG).
fn pick(i: usize, n: usize) -> usize {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % n.max(1) as u64) as usize
}

/// Times `cfg.queries` runs of `f` (which returns how many events it read).
fn time_queries(
    cfg: &BenchConfig,
    name: String,
    mut f: impl FnMut(usize) -> Result<usize, StoreError>,
) -> Result<BenchRow, BenchError> {
    let mut samples = Vec::with_capacity(cfg.queries);
    let mut returned = 0;
    let start = Instant::now();
    for i in 0..cfg.queries {
        let t0 = Instant::now();
        returned += f(i)?;
        samples.push(t0.elapsed());
    }
    let took = start.elapsed();
    let (p50_ms, p99_ms) = percentiles(&mut samples);
    let note = format!(
        "{:.0} events per query, fresh read transaction each",
        returned as f64 / cfg.queries.max(1) as f64
    );
    Ok(BenchRow {
        name,
        p50_ms,
        p99_ms,
        throughput: Some(cfg.queries as f64 / took.as_secs_f64()),
        total: took,
        note,
    })
}

fn audit_rows(cfg: &BenchConfig, store: &Store) -> Result<Vec<BenchRow>, BenchError> {
    let limit = Some(cfg.query_limit);
    let (objects, actors) = (cfg.log.objects, cfg.log.actors);
    let by_object = time_queries(
        cfg,
        format!("audit by object (limit {})", cfg.query_limit),
        |i| {
            let key = object_key(pick(i, objects));
            let q = AuditQuery {
                kind: Some(key.kind),
                namespace: Some(key.namespace),
                name: Some(key.name),
                limit,
                ..AuditQuery::default()
            };
            Ok(query(&store.read()?, &q)?.len())
        },
    )?;
    let by_actor = time_queries(
        cfg,
        format!("audit by actor (limit {})", cfg.query_limit),
        |i| {
            let q = AuditQuery {
                actor: Some(actor_name(pick(i, actors))),
                limit,
                ..AuditQuery::default()
            };
            Ok(query(&store.read()?, &q)?.len())
        },
    )?;
    let hist = time_queries(
        cfg,
        format!("history with diffs (limit {})", cfg.query_limit),
        |i| Ok(history(&store.read()?, &object_key(pick(i, objects)), limit)?.len()),
    )?;
    Ok(vec![by_object, by_actor, hist])
}
