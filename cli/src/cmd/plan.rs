//! `nexus plan --repo PATH --base REF --head REF`: what merging head would change in the live
//! cluster, for pull-request review. Live objects and their owners come from the cluster of the
//! context (and the GitSource that follows the repository gives the path and policy); without a
//! reachable cluster the plan is made offline, assuming base is fully synced, and says so.
//! Exit 0 no changes, 1 changes, 2 invalid head commit or error (as `nexus diff`).

use std::path::{Path, PathBuf};

use nexus_api::client::{GetRequest, GetResponse, Selector};
use nexus_api::kinds;
use nexus_gitops::plan::{RepoPlan, plan_repo, render_json, render_markdown, render_text};
use nexus_gitops::sync::{LiveObject, LiveObjects, SyncPolicy};
use nexus_gitops::{GitRepo, Owner, RepoUrl, SourceConfig, SourceId};
use nexus_schemas::{Kind, Object, ObjectKey};

use crate::client::Session;
use crate::cmd::Format;
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The clone to read (any repository holding both revisions).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// What the cluster follows now (`origin/main`).
    #[arg(long)]
    pub base: String,
    /// What would be merged (`HEAD`).
    #[arg(long)]
    pub head: String,
    /// The GitSource (NAME or NAMESPACE/NAME) whose path and policy apply; default: the source
    /// whose URL matches the repository's remote, or the only one.
    #[arg(long)]
    pub source: Option<String>,
    /// Manifests path inside the repository (default: the source's, else the whole tree).
    #[arg(long)]
    pub path: Option<String>,
    /// Plan without a cluster even if one is configured.
    #[arg(long)]
    pub offline: bool,
    /// Offline only: plan as a source with `prune: true`.
    #[arg(long)]
    pub prune: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// What the cluster says about the repository.
struct Live {
    context: String,
    objects: LiveObjects,
    source: Option<SourceConfig>,
    note: Option<String>,
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    let live = if args.offline {
        None
    } else {
        match crate::block_on_result(read_cluster(&args, context)) {
            Ok(l) => Some(l),
            Err(e) if e.starts_with("usage: ") => {
                eprintln!("error: {}", &e[7..]);
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!(
                    "note: no cluster read ({e}); planning offline: the live state is assumed to be {} fully synced",
                    args.base
                );
                None
            }
        }
    };
    if let Some(note) = live.as_ref().and_then(|l| l.note.as_ref()) {
        eprintln!("note: {note}");
    }
    let cfg = live.as_ref().and_then(|l| l.source.clone());
    let source = cfg
        .as_ref()
        .map(|c| c.id.clone())
        .unwrap_or_else(|| offline_source(&args));
    let path = args
        .path
        .clone()
        .or_else(|| cfg.as_ref().map(|c| c.spec.path.clone()))
        .unwrap_or_else(|| ".".into());
    let policy = match &cfg {
        Some(c) => SyncPolicy {
            prune: c.spec.prune,
            self_heal: c.spec.self_heal,
        },
        None => SyncPolicy {
            prune: args.prune,
            self_heal: false,
        },
    };
    let repo_url = cfg
        .as_ref()
        .map(|c| c.spec.url.clone())
        .unwrap_or_else(|| args.repo.display().to_string());
    let req = RepoPlan {
        repo: &args.repo,
        base_rev: &args.base,
        head_rev: &args.head,
        path: &path,
        repo_url: &repo_url,
        source: &source,
        policy,
    };
    let report = match plan_repo(
        &req,
        live.as_ref().map(|l| (l.context.as_str(), &l.objects)),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let text = match args.output {
        Format::Text => render_text(&report),
        Format::Markdown => render_markdown(&report),
        Format::Json => render_json(&report),
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    report.exit_code() as u8
}

/// The source an offline plan is made for: `--source`, else `default/<repo directory>`.
fn offline_source(args: &Args) -> SourceId {
    if let Some(s) = &args.source {
        let (ns, name) = split(s);
        return SourceId::new(ns, name);
    }
    let name = std::path::absolute(&args.repo)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".into());
    SourceId::new("default", name.trim_end_matches(".git"))
}

fn split(s: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, n)) => (ns.into(), n.into()),
        None => ("default".into(), s.into()),
    }
}

/// The URLs the clone's remotes point at (and the clone itself), to find its GitSource.
fn repo_urls(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(abs) = std::path::absolute(repo) {
        out.push(abs.display().to_string());
    }
    if let Ok(r) = GitRepo::open(repo) {
        let raw = r.raw();
        if let Ok(names) = raw.remotes() {
            for name in names.iter().flatten().flatten() {
                if let Ok(remote) = raw.find_remote(name)
                    && let Ok(url) = remote.url()
                {
                    out.push(url.to_string());
                }
            }
        }
    }
    out
}

/// Whether two repository URLs name the same repository (same local path, or equal ignoring a
/// trailing `.git` and `/`).
fn same_repo(a: &str, b: &str) -> bool {
    let norm = |u: &str| -> String {
        match RepoUrl::parse(u) {
            Ok(p) if p.local_path.is_some() => p
                .local_path
                .and_then(|l| std::fs::canonicalize(&l).ok().or(Some(l)))
                .map(|l| l.display().to_string())
                .unwrap_or_default(),
            _ => u
                .trim_end_matches('/')
                .trim_end_matches(".git")
                .to_ascii_lowercase(),
        }
    };
    norm(a) == norm(b)
}

async fn read_cluster(args: &Args, context: Option<&str>) -> Result<Live, String> {
    let session = Session::connect(context).await.map_err(|e| e.to_string())?;
    let resp: GetResponse = session
        .call(
            kinds::GET,
            &GetRequest {
                selector: Selector::default(),
                consistent: false,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut objects = LiveObjects::new();
    let mut sources = Vec::new();
    for info in &resp.objects {
        let Ok(obj) = serde_json::from_value::<Object>(info.object.clone()) else {
            continue;
        };
        let key: ObjectKey = obj.key();
        if key.kind == Kind::GitSource
            && let Some(cfg) = SourceConfig::from_object(&obj)
        {
            sources.push(cfg);
        }
        objects.insert(
            key,
            LiveObject {
                value: info.object.clone(),
                owner: Owner::parse(&info.owner),
                resource_version: Some(info.resource_version),
            },
        );
    }
    let mut note = None;
    let source = match &args.source {
        Some(s) => {
            let (ns, name) = split(s);
            let id = SourceId::new(ns, name);
            let found = sources.iter().find(|c| c.id == id).cloned();
            if found.is_none() {
                return Err(format!(
                    "usage: the cluster has no GitSource {id}{}",
                    if sources.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (it has {})",
                            sources
                                .iter()
                                .map(|c| c.id.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ));
            }
            found
        }
        None => {
            let urls = repo_urls(&args.repo);
            let matching: Vec<&SourceConfig> = sources
                .iter()
                .filter(|c| urls.iter().any(|u| same_repo(u, &c.spec.url)))
                .collect();
            match (matching.as_slice(), sources.as_slice()) {
                ([one], _) => Some((*one).clone()),
                ([], [only]) => Some(only.clone()),
                ([], []) => {
                    note = Some(
                        "the cluster has no GitSource: planning as a new source against the live objects"
                            .into(),
                    );
                    None
                }
                _ => {
                    return Err(format!(
                        "usage: several GitSources could follow this repository ({}); pick one with --source",
                        sources
                            .iter()
                            .map(|c| c.id.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    };
    Ok(Live {
        context: session.context.name.clone(),
        objects,
        source,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_compare_by_location() {
        assert!(same_repo(
            "https://git.example.com/org/app.git",
            "https://git.example.com/org/app/"
        ));
        assert!(!same_repo(
            "https://git.example.com/org/app.git",
            "https://git.example.com/org/other.git"
        ));
        assert!(same_repo("/srv/git/app.git", "file:///srv/git/app.git"));
        assert_eq!(split("ops/apps"), ("ops".into(), "apps".into()));
    }
}
