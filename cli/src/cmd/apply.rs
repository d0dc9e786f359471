//! `nexus apply -f` and `nexus delete`: validate locally, sign, submit; report created /
//! configured / unchanged / deleted per object, as kubectl does. Invalid manifests are never
//! sent; a multi-object request is committed all or nothing.

use std::path::PathBuf;

use nexus_api::client::{
    DryRunResponse, GetRequest, GetResponse, Outcome, Selector, SubmitRequest, SubmitResponse,
};
use nexus_api::kinds;
use nexus_ledger::{Op, Source};
use nexus_schemas::{Kind, ObjectKey, SourceFile, canonical_value};

use crate::client::{Session, explain};
use crate::exit;
use crate::load::load_sources;
use crate::render::render_diagnostics;

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// Files or directories of manifests; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Show what would change against the live state, without committing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete objects created by `apply` that match --selector and are not in the files.
    #[arg(long, requires = "selector")]
    pub prune: bool,
    /// Label selector for --prune (`app=web,tier=frontend`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Only apply if the object's current resource version is this (optimistic concurrency;
    /// `nexus get -o json` shows it). A version N > 0 names one object's version, so it needs
    /// exactly one object in the files. 0 means "must not exist yet" and works with any
    /// number of objects: the apply then only creates, all or nothing.
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
    /// After committing, wait until the applied workloads are rolled out and ready, showing
    /// what is pending (exit 1 on timeout).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", requires = "wait")]
    pub timeout: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Delete the objects named in these manifests.
    #[arg(short = 'f', long = "filename", value_name = "PATH", conflicts_with_all = ["kind", "name"])]
    pub files: Vec<PathBuf>,
    /// Kind of the object to delete.
    pub kind: Option<String>,
    /// Name of the object to delete.
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only delete if the object's current resource version is this (needs exactly one
    /// object).
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<u64>,
}

/// Why `--if-version` cannot be used with these objects: a resource version is one object's
/// (objects changed at different heights have different versions), so a version N > 0 needs
/// exactly one object; 0 ("must not exist") is meaningful for any number.
pub fn if_version_problem(if_version: Option<u64>, objects: usize, verb: &str) -> Option<String> {
    match if_version {
        Some(v) if v > 0 && objects != 1 => Some(format!(
            "--if-version {v} is one object's resource version, but this {verb} has {objects} objects; {verb} them one at a time{}",
            if verb == "apply" {
                ", or use --if-version 0 to require that none of them exists yet"
            } else {
                ""
            }
        )),
        _ => None,
    }
}

/// Parses `a=b,c=d`.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("bad selector {p:?}: expected key=value"))
        })
        .collect()
}

pub fn print_outcomes(outcomes: &[Outcome], suffix: &str) {
    for o in outcomes {
        let ns = if o.namespace == "default" {
            String::new()
        } else {
            format!(" -n {}", o.namespace)
        };
        println!(
            "{}/{}{ns} {}{suffix}",
            o.kind.to_ascii_lowercase(),
            o.name,
            o.action
        );
    }
}

pub fn apply(args: ApplyArgs, context: Option<&str>) -> u8 {
    let files = match load_sources(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    let v = nexus_schemas::validate_sources(&files);
    if !v.diagnostics.is_empty() {
        eprint!(
            "{}",
            render_diagnostics(&v.diagnostics, &files, crate::stderr_is_tty())
        );
    }
    if v.has_errors() {
        let (e, _) = v.counts();
        eprintln!("error: {e} error(s) in the manifests; nothing was applied");
        return exit::INVALID;
    }
    if let Some(problem) = if_version_problem(args.if_version, v.objects.len(), "apply") {
        eprintln!("error: {problem}");
        return exit::ERROR;
    }
    let mut ops: Vec<Op> = v
        .objects
        .iter()
        .map(|o| Op::Apply {
            object: canonical_value(&o.object),
            if_version: args.if_version,
        })
        .collect();
    let applied_keys: Vec<ObjectKey> = v.objects.iter().map(|o| o.object.key()).collect();
    let wait = match args
        .wait
        .then(|| humantime::parse_duration(&args.timeout))
        .transpose()
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: --timeout {:?}: {e}", args.timeout);
            return exit::ERROR;
        }
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        if args.prune {
            let labels = match parse_labels(args.selector.as_deref().unwrap_or("")) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::ERROR;
                }
            };
            let live: GetResponse = match session
                .call(
                    kinds::GET,
                    &GetRequest {
                        selector: Selector {
                            labels,
                            ..Default::default()
                        },
                        consistent: false,
                    },
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}", explain(&e));
                    return exit::ERROR;
                }
            };
            for obj in live.objects.iter().filter(|o| o.owner == "apply") {
                let (kind, namespace, name) = obj.key();
                let Some(kind) = Kind::parse(&kind) else {
                    continue;
                };
                let key = ObjectKey::new(kind, namespace, name);
                if !applied_keys.contains(&key) {
                    ops.push(Op::Delete {
                        key,
                        if_version: None,
                    });
                }
            }
        }
        let signed = session.sign(ops, Source::Cli);
        let req = SubmitRequest {
            signed: signed.to_bytes(),
        };
        if args.dry_run {
            return match session
                .call::<_, DryRunResponse>(kinds::DRY_RUN, &req)
                .await
            {
                Ok(r) => {
                    print_outcomes(&r.outcomes, " (dry run)");
                    print!("\n{}", nexus_schemas::diff::render_text(&r.changes));
                    if r.changes.is_empty() {
                        exit::OK
                    } else {
                        exit::INVALID
                    }
                }
                Err(e) => {
                    eprintln!("error: {}", explain(&e));
                    exit::ERROR
                }
            };
        }
        match submit(&session, &req).await {
            Ok(r) => {
                print_outcomes(&r.outcomes, "");
                eprintln!("{}", commit_note(&r));
                let Some(timeout) = wait else {
                    return exit::OK;
                };
                let workloads: Vec<(String, String)> = applied_keys
                    .iter()
                    .filter(|k| k.kind == Kind::Workload)
                    .map(|k| (k.namespace.clone(), k.name.clone()))
                    .collect();
                if workloads.is_empty() {
                    return exit::OK;
                }
                match super::wait::until_ready(&session, &workloads, timeout).await {
                    Ok(done) => {
                        for p in done {
                            eprintln!(
                                "workload/{} ready: {}/{} replicas",
                                p.name, p.ready, p.desired
                            );
                        }
                        exit::OK
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        exit::INVALID
                    }
                }
            }
            Err(code) => code,
        }
    })
}

/// The line after the outcomes: where the request was committed, or that nothing was (every
/// object unchanged: the server writes no entry, and `height` is where it was evaluated).
pub fn commit_note(r: &SubmitResponse) -> String {
    let changed = r.outcomes.iter().any(|o| o.action != "unchanged");
    if !changed && !r.duplicate {
        return format!(
            "no changes; nothing was committed (live state at height {})",
            r.height
        );
    }
    format!(
        "committed at height {}{}",
        r.height,
        if r.duplicate {
            " (retry of an earlier request)"
        } else {
            ""
        }
    )
}

/// Submits with retries on transient failures; the same signed request (same id) is sent again,
/// so it is applied at most once.
pub async fn submit(session: &Session, req: &SubmitRequest) -> Result<SubmitResponse, u8> {
    let mut attempt = 0;
    loop {
        match session.call::<_, SubmitResponse>(kinds::SUBMIT, req).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_retryable() && attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                eprintln!("error: {}", explain(&e));
                return Err(
                    if e.remote_code().is_some_and(|c| {
                        matches!(
                            c,
                            nexus_transport::ErrorCode::Conflict
                                | nexus_transport::ErrorCode::NotFound
                                | nexus_transport::ErrorCode::InvalidArgument
                                | nexus_transport::ErrorCode::PermissionDenied
                        )
                    }) {
                        exit::INVALID
                    } else {
                        exit::ERROR
                    },
                );
            }
        }
    }
}

pub fn delete(args: DeleteArgs, context: Option<&str>) -> u8 {
    let keys: Vec<ObjectKey> = if !args.files.is_empty() {
        let files = match load_sources(&args.files) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let v = nexus_schemas::validate_sources(&files);
        if v.has_errors() {
            eprint!(
                "{}",
                render_diagnostics(&v.diagnostics, &files, crate::stderr_is_tty())
            );
            return exit::INVALID;
        }
        v.objects.iter().map(|o| o.object.key()).collect()
    } else {
        let (Some(kind), Some(name)) = (&args.kind, &args.name) else {
            eprintln!("error: give KIND NAME, or -f FILE");
            return exit::ERROR;
        };
        let Some(kind) = Kind::parse(kind) else {
            eprintln!(
                "error: unknown kind {kind:?}; kinds are Workload, Service, NetworkPolicy, GitSource"
            );
            return exit::ERROR;
        };
        vec![ObjectKey::new(kind, args.namespace.clone(), name.clone())]
    };
    if let Some(problem) = if_version_problem(args.if_version, keys.len(), "delete") {
        eprintln!("error: {problem}");
        return exit::ERROR;
    }
    let ops = keys
        .into_iter()
        .map(|key| Op::Delete {
            key,
            if_version: args.if_version,
        })
        .collect();
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let signed = session.sign(ops, Source::Cli);
        match submit(
            &session,
            &SubmitRequest {
                signed: signed.to_bytes(),
            },
        )
        .await
        {
            Ok(r) => {
                print_outcomes(&r.outcomes, "");
                eprintln!("{}", commit_note(&r));
                exit::OK
            }
            Err(code) => code,
        }
    })
}

/// Validates manifests a command generated from its flags (diagnostics point into `file`), then
/// returns their apply ops; the exit code on invalid input.
pub fn generated_ops(file: &SourceFile) -> Result<Vec<Op>, u8> {
    let v = nexus_schemas::validate_sources(std::slice::from_ref(file));
    if v.has_errors() {
        eprint!(
            "{}",
            render_diagnostics(
                &v.diagnostics,
                std::slice::from_ref(file),
                crate::stderr_is_tty()
            )
        );
        return Err(exit::INVALID);
    }
    Ok(v.objects
        .iter()
        .map(|o| Op::Apply {
            object: nexus_schemas::canonical_value(&o.object),
            if_version: None,
        })
        .collect())
}

/// Signs `ops` as the session's user and commits them, printing created / configured /
/// unchanged per object.
pub async fn submit_ops(session: &Session, ops: Vec<Op>) -> Result<SubmitResponse, u8> {
    let signed = session.sign(ops, Source::Cli);
    let req = SubmitRequest {
        signed: signed.to_bytes(),
    };
    let r = submit(session, &req).await?;
    print_outcomes(&r.outcomes, "");
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_version_needs_one_object_unless_it_is_zero() {
        assert_eq!(if_version_problem(None, 5, "apply"), None);
        assert_eq!(if_version_problem(Some(0), 5, "apply"), None);
        assert_eq!(if_version_problem(Some(7), 1, "apply"), None);
        assert_eq!(
            if_version_problem(Some(7), 3, "apply").as_deref(),
            Some(
                "--if-version 7 is one object's resource version, but this apply has 3 objects; apply them one at a time, or use --if-version 0 to require that none of them exists yet"
            )
        );
        assert!(if_version_problem(Some(7), 2, "delete").is_some());
    }
}
