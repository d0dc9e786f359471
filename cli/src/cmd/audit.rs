//! `nexus audit`: who changed what, when, from which commit; `nexus audit verify` recomputes
//! the hash chain, every signature and every commit certificate and names the first bad height;
//! `--all-replicas` also checks that every replica holds the same chain.

use nexus_api::client::{
    AuditRequest, StatusRequest, StatusResponse, VerifyRequest, VerifyResponse,
};
use nexus_api::kinds;

use super::history::source_text;
use crate::client::{Session, explain};
use crate::exit;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub verify: Option<Verify>,
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    /// Events at or after: RFC 3339 time (2026-11-25T10:00:00Z) or a duration ago (1h, 30m).
    #[arg(long)]
    pub since: Option<String>,
    /// Events at or before: RFC 3339 time or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// cli, gitops or controller.
    #[arg(long)]
    pub source: Option<String>,
    /// A git commit id or prefix.
    #[arg(long)]
    pub commit: Option<String>,
    /// The most recent N events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// table, or json (one event per line, for piping).
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum Verify {
    /// Recompute the hash chain, every request signature and every commit certificate (against
    /// its height's validator set); exit 1 and name the first bad height on failure.
    Verify {
        /// Verify a stopped replica's ledger file directly instead of asking a running replica.
        #[arg(long, value_name = "FILE", conflicts_with = "all_replicas")]
        ledger: Option<std::path::PathBuf>,
        /// Ask every replica of the context: each must verify, and all must hold the same chain
        /// (compared at the lowest height any of them reached).
        #[arg(long)]
        all_replicas: bool,
        /// Also check that the query indexes (object, actor, source, commit, time) hold every
        /// row the log implies, so that no query can miss an event (about 40 % slower).
        #[arg(long)]
        indexes: bool,
    },
}

/// Parses an RFC 3339 time or a duration ago into ms since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(crate::client::now_ms().saturating_sub(d.as_millis() as u64)),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-25T10:00:00Z) nor a duration (1h, 30m)"
        )),
    }
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    if let Some(Verify::Verify {
        ledger,
        all_replicas,
        indexes,
    }) = &args.verify
    {
        let indexes = *indexes;
        return match (ledger, all_replicas) {
            (Some(path), _) => verify_offline(path, indexes),
            (None, true) => verify_all(context, indexes),
            (None, false) => verify(context, indexes),
        };
    }
    let since = match args.since.as_deref().map(parse_time).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --since: {e}");
            return exit::ERROR;
        }
    };
    let until = match args.until.as_deref().map(parse_time).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --until: {e}");
            return exit::ERROR;
        }
    };
    let kind = match &args.kind {
        Some(k) => match nexus_schemas::Kind::parse(k) {
            Some(k) => Some(k.as_str().to_string()),
            None => {
                eprintln!("error: unknown kind {k:?}");
                return exit::ERROR;
            }
        },
        None => None,
    };
    let req = AuditRequest {
        kind,
        namespace: args.namespace.clone(),
        name: args.name.clone(),
        actor: args.actor.clone(),
        source: args.source.clone(),
        commit: args.commit.clone(),
        since_ms: since,
        until_ms: until,
        limit: args.limit,
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let mut stream = match session
            .client
            .call_stream::<_, serde_json::Value>(kinds::AUDIT, &req)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return exit::ERROR;
            }
        };
        let mut table = Table::new(&[
            "HEIGHT", "TIME", "ACTOR", "SOURCE", "EVENT", "OBJECT", "GEN",
        ]);
        let mut n = 0;
        while let Some(item) = stream.next().await {
            let rec = match item {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}", explain(&e));
                    return exit::ERROR;
                }
            };
            n += 1;
            if args.output == "json" {
                println!("{rec}");
                continue;
            }
            let g = |k: &str| {
                rec.get(k)
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .unwrap_or_default()
            };
            let object = if rec.get("kind").is_some() {
                format!(
                    "{}/{}/{}",
                    g("kind").to_ascii_lowercase(),
                    g("namespace"),
                    g("name")
                )
            } else {
                String::new()
            };
            let ts = rec
                .get("timestamp_ms")
                .and_then(|t| t.as_u64())
                .unwrap_or(0);
            table.row(vec![
                g("height"),
                crate::fmt_time(ts),
                g("actor"),
                source_text(rec.get("source").unwrap_or(&serde_json::Value::Null)),
                g("type"),
                object,
                g("generation"),
            ]);
        }
        if args.output == "table" {
            print!("{}", table.render());
            if n == 0 {
                eprintln!("No events match.");
            }
        }
        exit::OK
    })
}

fn verify(context: Option<&str>, indexes: bool) -> u8 {
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        match session
            .call::<_, VerifyResponse>(
                kinds::VERIFY,
                &VerifyRequest {
                    up_to: None,
                    indexes,
                },
            )
            .await
        {
            Ok(r) => {
                print_report(&r);
                if r.ok { exit::OK } else { exit::INVALID }
            }
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                exit::ERROR
            }
        }
    })
}

fn print_report(r: &VerifyResponse) {
    if r.ok {
        println!(
            "✓ replica {}: {} entries, {} requests, {} events, {} certificates verified (head {} at height {}) in {} ms",
            r.replica,
            r.entries,
            r.requests,
            r.events,
            r.certified,
            short(&r.head_hash),
            r.head_height,
            r.elapsed_ms
        );
    } else {
        println!(
            "✗ replica {}: the chain does NOT verify; first bad height: {}",
            r.replica,
            r.first_bad_height
                .map(|h| h.to_string())
                .unwrap_or_else(|| "?".into())
        );
        for p in &r.problems {
            println!("  {p}");
        }
    }
}

/// Every replica of the context verifies its chain up to the lowest height any of them has,
/// and reports the same entry hash there.
fn verify_all(context: Option<&str>, indexes: bool) -> u8 {
    let ctx = match crate::config::ClientConfig::load().and_then(|c| c.resolve(context).cloned()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    crate::block_on(async move {
        let mut sessions = Vec::new();
        let mut failed = false;
        for server in &ctx.servers {
            let one = crate::config::Context {
                servers: vec![server.clone()],
                ..ctx.clone()
            };
            match Session::connect_to(one).await {
                Ok(s) => match s
                    .call::<_, StatusResponse>(kinds::STATUS, &StatusRequest {})
                    .await
                {
                    Ok(st) => sessions.push((server.clone(), s, st.height)),
                    Err(e) => {
                        println!("✗ {server}: {}", explain(&e));
                        failed = true;
                    }
                },
                Err(e) => {
                    println!("✗ {server}: {e}");
                    failed = true;
                }
            }
        }
        let Some(at) = sessions.iter().map(|(_, _, h)| *h).min() else {
            eprintln!("error: no replica answered");
            return exit::ERROR;
        };
        let mut hashes = std::collections::BTreeMap::new();
        for (server, s, _) in &sessions {
            let req = VerifyRequest {
                up_to: Some(at),
                indexes,
            };
            match s.call::<_, VerifyResponse>(kinds::VERIFY, &req).await {
                Ok(r) => {
                    print_report(&r);
                    failed |= !r.ok;
                    hashes
                        .entry(r.head_hash.clone())
                        .or_insert_with(Vec::new)
                        .push(r.replica.clone());
                }
                Err(e) => {
                    println!("✗ {server}: {}", explain(&e));
                    failed = true;
                }
            }
        }
        if hashes.len() > 1 {
            println!("✗ the replicas hold DIFFERENT chains at height {at}:");
            for (h, names) in &hashes {
                println!("  {} held by {}", short(h), names.join(", "));
            }
            return exit::INVALID;
        }
        if failed {
            return exit::INVALID;
        }
        println!(
            "✓ all {} replicas hold the same chain up to height {at} (head {})",
            sessions.len(),
            hashes.keys().next().map(|h| short(h)).unwrap_or_default()
        );
        exit::OK
    })
}

/// Verifies a ledger file without a server (the replica must be stopped: redb locks the file).
fn verify_offline(path: &std::path::Path, indexes: bool) -> u8 {
    if !path.exists() {
        eprintln!("error: {}: no such file", path.display());
        return exit::ERROR;
    }
    let t = std::time::Instant::now();
    let store = match nexus_ledger::Store::open(path, nexus_ledger::StoreConfig::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", path.display());
            return exit::ERROR;
        }
    };
    let certs = match nexus_ledger::audit::verify_certificates(&store, None, None) {
        Ok(c) => c,
        Err(e) => {
            println!("✗ {}: cannot read the certificates: {e}", path.display());
            return exit::INVALID;
        }
    };
    let opts = nexus_ledger::audit::VerifyOptions {
        indexes,
        ..Default::default()
    };
    let verified = nexus_ledger::audit::verify_with(&store, &opts).map(|mut r| {
        if let Some(p) = certs.problem.clone()
            && r.problem.as_ref().is_none_or(|q| p.height() < q.height())
        {
            r.problem = Some(p);
        }
        r
    });
    match verified {
        Ok(r) if r.is_ok() => {
            let (h, hash) = r
                .head
                .as_ref()
                .map(|h| (h.height, h.hash.to_string()))
                .unwrap_or((0, String::new()));
            println!(
                "✓ {}: {} entries, {} requests, {} events, {} certificates verified (head {} at height {h}) in {} ms",
                path.display(),
                r.entries,
                r.requests,
                r.events,
                certs.certified,
                short(&hash),
                t.elapsed().as_millis()
            );
            exit::OK
        }
        Ok(r) => {
            let p = r.problem.as_ref();
            println!(
                "✗ {}: the chain does NOT verify; first bad height: {}",
                path.display(),
                p.map(|p| p.height().to_string())
                    .unwrap_or_else(|| "?".into())
            );
            if let Some(p) = p {
                println!("  {p}");
            }
            exit::INVALID
        }
        Err(e) => {
            println!("✗ {}: cannot read the ledger: {e}", path.display());
            exit::INVALID
        }
    }
}

fn short(h: &str) -> String {
    h.chars().take(12).collect()
}
