//! `nexus gitops add|status|sync`: create a GitSource from flags and apply it; show every
//! source's sync status (last synced commit, head, errors with file:line:col, drift, conflicts);
//! sync a source now.

use nexus_api::gitops::{
    GitopsStatusRequest, GitopsStatusResponse, GitopsSyncRequest, GitopsSyncResponse, SourceStatus,
};
use nexus_api::kinds;
use nexus_schemas::SourceFile;
use serde_json::json;

use crate::client::{Session, explain};
use crate::exit;
use crate::table::Table;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Create (or update) a GitSource from flags and apply it.
    Add(AddArgs),
    /// Sources: last synced commit, head, errors with file:line:col, drifted objects, conflicts.
    Status(StatusArgs),
    /// Sync a source now and show the result (exit 1 when it does not sync).
    Sync(SyncArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Name of the GitSource.
    pub name: String,
    /// Repository: a local path, file://, https://, ssh:// or git@host:org/repo.git.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory of manifests inside the repository.
    #[arg(long, default_value = ".")]
    pub path: String,
    /// Poll interval.
    #[arg(long, default_value = "10s")]
    pub interval: String,
    /// Delete objects this source created once they leave git.
    #[arg(long)]
    pub prune: bool,
    /// Revert changes made outside git to objects this source owns.
    #[arg(long)]
    pub self_heal: bool,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// File on the replicas holding the push webhook's shared secret.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<String>,
    /// Require commits signed by this SSH signer ("email ssh-ed25519 AAAA..."); repeatable.
    #[arg(long = "verify-ssh", value_name = "SIGNER")]
    pub verify_ssh: Vec<String>,
    /// Print the manifest (to commit it to git, say) instead of applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// After applying, wait for the first sync and show it.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One source (NAME or NAMESPACE/NAME); all when omitted.
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// text or json.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// The source (NAME or NAMESPACE/NAME).
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// text or json.
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

pub fn run(args: Args, context: Option<&str>) -> u8 {
    match args.cmd {
        Cmd::Add(a) => add(a, context),
        Cmd::Status(a) => status(a, context),
        Cmd::Sync(a) => sync(a, context),
    }
}

/// `ns/name` or `name` (with the flag's namespace).
fn split_name(name: &str, namespace: Option<&str>) -> (String, String) {
    match name.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (namespace.unwrap_or("default").to_string(), name.to_string()),
    }
}

/// A relative local path becomes absolute: replicas resolve paths against their own directory.
fn absolute_url(url: &str) -> String {
    match nexus_gitops::RepoUrl::parse(url) {
        Ok(u) if u.transport == nexus_gitops::repo::Transport::Local => u
            .local_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| url.to_string()),
        _ => url.to_string(),
    }
}

/// The GitSource manifest the flags describe, as YAML.
pub fn manifest(a: &AddArgs) -> String {
    let mut spec = json!({
        "url": absolute_url(&a.url),
        "branch": a.branch,
        "path": a.path,
        "interval": a.interval,
        "prune": a.prune,
        "selfHeal": a.self_heal,
    });
    if let Some(f) = &a.webhook_secret_file {
        spec["webhookSecretFile"] = json!(f);
    }
    if !a.verify_ssh.is_empty() {
        spec["verify"] = json!({ "ssh": a.verify_ssh });
    }
    let doc = json!({
        "apiVersion": "nexus/v1",
        "kind": "GitSource",
        "metadata": {"name": a.name, "namespace": a.namespace},
        "spec": spec,
    });
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

fn add(a: AddArgs, context: Option<&str>) -> u8 {
    let yaml = manifest(&a);
    let file = SourceFile::from_text(format!("gitsource/{}", a.name), yaml.clone());
    let ops = match super::apply::generated_ops(&file) {
        Ok(ops) => ops,
        Err(code) => return code,
    };
    if a.dry_run {
        print!("{yaml}");
        return exit::OK;
    }
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        if let Err(code) = super::apply::submit_ops(&session, ops).await {
            return code;
        }
        if !a.wait {
            eprintln!(
                "`nexus gitops status {}` shows its sync",
                if a.namespace == "default" {
                    a.name.clone()
                } else {
                    format!("{}/{}", a.namespace, a.name)
                }
            );
            return exit::OK;
        }
        sync_and_print(&session, &a.namespace, &a.name, "text").await
    })
}

fn status(a: StatusArgs, context: Option<&str>) -> u8 {
    let req = match &a.name {
        Some(n) => {
            let (ns, name) = split_name(n, a.namespace.as_deref());
            GitopsStatusRequest {
                namespace: Some(ns),
                name: Some(name),
            }
        }
        None => GitopsStatusRequest {
            namespace: a.namespace.clone(),
            name: None,
        },
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let resp: GitopsStatusResponse = match session.call(kinds::GITOPS_STATUS, &req).await {
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
        if a.output == "json" {
            println!(
                "{}",
                serde_json::to_string_pretty(&resp).unwrap_or_default()
            );
            return exit::OK;
        }
        if resp.sources.is_empty() {
            eprintln!("No git sources. `nexus gitops add NAME --url URL` creates one.");
            return exit::OK;
        }
        if a.name.is_some() {
            for s in &resp.sources {
                print!("{}", details(s));
            }
        } else {
            print!("{}", table(&resp.sources));
        }
        exit::OK
    })
}

fn sync(a: SyncArgs, context: Option<&str>) -> u8 {
    let (ns, name) = split_name(&a.name, Some(&a.namespace));
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        sync_and_print(&session, &ns, &name, &a.output).await
    })
}

async fn sync_and_print(session: &Session, namespace: &str, name: &str, output: &str) -> u8 {
    let req = GitopsSyncRequest {
        namespace: namespace.into(),
        name: name.into(),
    };
    match session
        .call::<_, GitopsSyncResponse>(kinds::GITOPS_SYNC, &req)
        .await
    {
        Ok(r) => {
            if output == "json" {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r.status).unwrap_or_default()
                );
            } else {
                print!("{}", details(&r.status));
            }
            if r.status.error.is_some() {
                exit::INVALID
            } else {
                exit::OK
            }
        }
        Err(e) => {
            eprintln!("error: {}", explain(&e));
            if e.remote_code() == Some(nexus_transport::ErrorCode::NotFound) {
                exit::INVALID
            } else {
                exit::ERROR
            }
        }
    }
}

fn short(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

/// `Synced`, `Error`, `Pending`, with drift and conflict counts.
fn state_word(s: &SourceStatus) -> String {
    let mut w = if s.error.is_some() {
        "Error".to_string()
    } else if s.synced.is_some() {
        "Synced".to_string()
    } else {
        "Pending".to_string()
    };
    if !s.drift.is_empty() {
        w.push_str(&format!(", {} drifted", s.drift.len()));
    }
    if !s.conflicts.is_empty() {
        w.push_str(&format!(", {} conflict(s)", s.conflicts.len()));
    }
    w
}

/// The table of every source, then each source's problems.
pub fn table(sources: &[SourceStatus]) -> String {
    let mut t = Table::new(&[
        "NAME", "URL", "BRANCH", "PATH", "SYNCED", "HEAD", "OBJECTS", "STATUS",
    ]);
    for s in sources {
        t.row(vec![
            s.id(),
            s.url.clone(),
            s.branch.clone(),
            if s.path.is_empty() {
                ".".into()
            } else {
                s.path.clone()
            },
            s.synced
                .as_ref()
                .map(|c| short(&c.commit).to_string())
                .unwrap_or_else(|| "-".into()),
            s.head
                .as_ref()
                .map(|c| short(&c.commit).to_string())
                .unwrap_or_else(|| "-".into()),
            s.objects.to_string(),
            state_word(s),
        ]);
    }
    let mut out = t.render();
    for s in sources {
        let problems = problems(s);
        if !problems.is_empty() {
            out.push_str(&format!("\n{}:\n{problems}", s.id()));
        }
    }
    out
}

/// Error, diagnostics, drift, conflicts and kept prune candidates, indented.
fn problems(s: &SourceStatus) -> String {
    let mut out = String::new();
    if let Some(e) = &s.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    // The error names the first problem; list them all when there are more.
    let errors: Vec<_> = s
        .diagnostics
        .iter()
        .filter(|d| d.severity == "error")
        .collect();
    if errors.len() > 1 {
        for d in errors {
            out.push_str(&format!("    {}\n", d.one_line()));
        }
    }
    for d in &s.drift {
        let fields = if d.fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", d.fields.join(", "))
        };
        out.push_str(&format!(
            "  drifted: {} {}{fields}: {}\n",
            d.object,
            d.kind,
            match d.action.as_str() {
                "revert" => "reverted (selfHeal)",
                "keep" => "kept (selfHeal is off)",
                "overwrite" => "overwritten by git",
                "prune" => "deleted by prune",
                other => other,
            }
        ));
    }
    for c in &s.conflicts {
        out.push_str(&format!(
            "  conflict: {} is owned by {} (defined at {}:{}); left alone\n",
            c.object, c.owner, c.file, c.line
        ));
    }
    for p in &s.not_pruned {
        out.push_str(&format!("  not pruned (prune is off): {p}\n"));
    }
    out
}

/// Everything about one source.
pub fn details(s: &SourceStatus) -> String {
    let commit = |c: &nexus_api::gitops::CommitInfo| {
        format!("{} {:?} by {}", short(&c.commit), c.subject, c.author)
    };
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("Source:", s.id());
    line("URL:", s.url.clone());
    line(
        "Branch, path:",
        format!(
            "{}  {}",
            s.branch,
            if s.path.is_empty() { "." } else { &s.path }
        ),
    );
    let mut policy = Vec::new();
    if s.prune {
        policy.push("prune");
    }
    if s.self_heal {
        policy.push("selfHeal");
    }
    line(
        "Policy:",
        if policy.is_empty() {
            "-".into()
        } else {
            policy.join(", ")
        },
    );
    line("Triggers:", s.triggers.join(", "));
    if let Some(h) = &s.head {
        let mv = s
            .head_move
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        line("Head:", format!("{}{mv}", commit(h)));
    }
    match &s.synced {
        Some(c) => line(
            "Synced:",
            format!(
                "{}{}",
                commit(c),
                s.synced_height
                    .map(|h| format!(", last written at height {h}"))
                    .unwrap_or_default()
            ),
        ),
        None => line("Synced:", "not yet".into()),
    }
    if let Some(who) = &s.signed_by {
        line("Signed by:", who.clone());
    }
    line("Objects:", s.objects.to_string());
    if let Some(t) = s.last_attempt_ms {
        line(
            "Last attempt:",
            format!(
                "{} ({}){}",
                crate::fmt_time(t),
                s.last_trigger.as_deref().unwrap_or("-"),
                s.last_result
                    .as_ref()
                    .filter(|_| s.error.is_none())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        );
    }
    line("Status:", state_word(s));
    out.push_str(&problems(s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_writes_a_valid_git_source() {
        let a = AddArgs {
            name: "apps".into(),
            url: "https://git.example.com/org/apps.git".into(),
            branch: "main".into(),
            path: "deploy".into(),
            interval: "30s".into(),
            prune: true,
            self_heal: false,
            namespace: "default".into(),
            webhook_secret_file: Some("/etc/nexus/apps.secret".into()),
            verify_ssh: vec![],
            dry_run: true,
            wait: false,
        };
        let yaml = manifest(&a);
        let v = nexus_schemas::validate_sources(&[SourceFile::from_text("x", yaml.clone())]);
        assert!(!v.has_errors(), "{yaml}");
        assert!(
            yaml.contains("webhookSecretFile: /etc/nexus/apps.secret"),
            "{yaml}"
        );
        assert_eq!(split_name("ops/apps", None), ("ops".into(), "apps".into()));
        assert_eq!(split_name("apps", None), ("default".into(), "apps".into()));
        assert!(absolute_url("./repo.git").starts_with('/'));
        assert_eq!(absolute_url("git@h:o/r.git"), "git@h:o/r.git");
    }
}
