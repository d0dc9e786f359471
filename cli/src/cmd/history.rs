//! `nexus history KIND/NAME`: every version of an object — who, when, from where — and the
//! field changes between consecutive versions.

use nexus_api::client::{HistoryRequest, HistoryResponse};
use nexus_api::kinds;
use nexus_schemas::Kind;

use crate::client::{Session, explain};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The object as KIND/NAME (e.g. workload/web).
    pub object: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only the most recent N versions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let Some((kind, name)) = args.object.split_once('/') else {
        eprintln!("error: expected KIND/NAME, e.g. workload/web");
        return exit::ERROR;
    };
    let Some(kind) = Kind::parse(kind) else {
        eprintln!("error: unknown kind {kind:?}");
        return exit::ERROR;
    };
    let req = HistoryRequest {
        kind: kind.as_str().into(),
        namespace: args.namespace.clone(),
        name: name.into(),
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
        let resp: HistoryResponse = match session.call(kinds::HISTORY, &req).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return if e.remote_code() == Some(nexus_transport::ErrorCode::NotFound) {
                    exit::INVALID
                } else {
                    exit::ERROR
                };
            }
        };
        if args.output == "json" {
            println!(
                "{}",
                serde_json::to_string_pretty(&resp.versions).unwrap_or_default()
            );
            return exit::OK;
        }
        for v in &resp.versions {
            println!(
                "generation {}  {}  height {}  {}  {}  {}",
                v.generation,
                v.action,
                v.height,
                crate::fmt_time(v.timestamp_ms),
                v.actor,
                source_text(&v.source)
            );
            if let Some(subject) = git_subject(&v.source) {
                println!(
                    "    commit {subject:?} from git source {}",
                    v.source["git_source"].as_str().unwrap_or_default()
                );
            }
            for c in &v.changes {
                let show = |x: &Option<serde_json::Value>| {
                    x.as_ref()
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(unset)".into())
                };
                println!("    {}: {} -> {}", c.path, show(&c.old), show(&c.new));
            }
        }
        exit::OK
    })
}

/// The first line of a git-sourced change's commit message.
pub fn git_subject(v: &serde_json::Value) -> Option<String> {
    if v.get("type").and_then(|t| t.as_str()) != Some("gitops") {
        return None;
    }
    v.get("message")
        .and_then(|m| m.as_str())
        .map(|m| m.lines().next().unwrap_or("").to_string())
}

/// `cli`, `gitops repo@commit by author (force-push over commit)`, `controller NAME`.
pub fn source_text(v: &serde_json::Value) -> String {
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let ty = v
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .or_else(|| v.as_str().map(str::to_string))
        .or_else(|| v.as_object().and_then(|m| m.keys().next().cloned()))
        .unwrap_or_default();
    match ty.to_ascii_lowercase().as_str() {
        "gitops" => {
            let inner = v.get("Gitops").unwrap_or(v);
            let g = |k: &str| {
                inner
                    .get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let commit: String = g("commit").chars().take(12).collect();
            let forced: String = g("forced_over").chars().take(12).collect();
            let forced = if forced.is_empty() {
                String::new()
            } else {
                format!(" (force-push over {forced})")
            };
            format!("gitops {}@{commit} by {}{forced}", g("repo"), g("author"))
        }
        "controller" => format!("controller {}", s("name")),
        other => other.to_string(),
    }
}
