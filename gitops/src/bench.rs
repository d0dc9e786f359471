//! Benchmark of the sync path on a generated repository (default 5,000 manifests): fetch into a
//! fresh mirror, read the tree, validate, plan against live objects, verify as a replica, and an
//! incremental sync after a one-file commit. Reports wall time and peak RSS per phase
//! (`VmHWM` from /proc/self/status, reset between phases through /proc/self/clear_refs).

use std::fmt;
use std::path::Path;
use std::time::Instant;

use git2::{Repository, Signature};

use crate::repo::{FetchOptions, GitError, Mirrors};
use crate::snapshot::ManifestSet;
use crate::source::{Owner, SourceId};
use crate::sync::{LiveObject, LiveObjects, SyncInput, SyncPolicy, plan_sync};
use crate::verify::{Proposal, verify_against_snapshot};

/// One measured phase.
#[derive(Debug, Clone)]
pub struct Row {
    pub phase: &'static str,
    pub millis: f64,
    /// Peak resident memory during the phase (KiB), if the kernel reports it.
    pub peak_kib: Option<u64>,
    pub note: String,
}

/// The whole benchmark.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub manifests: usize,
    pub repo_bytes: usize,
    /// Whether peaks are per phase (clear_refs worked) or cumulative.
    pub per_phase_peaks: bool,
    pub rows: Vec<Row>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gitops sync benchmark: {} manifests, {:.1} MiB of YAML ({} peaks)",
            self.manifests,
            self.repo_bytes as f64 / 1_048_576.0,
            if self.per_phase_peaks {
                "per-phase"
            } else {
                "cumulative"
            }
        )?;
        writeln!(f, "{:<34} {:>10} {:>12}  note", "phase", "ms", "peak RSS")?;
        for r in &self.rows {
            let peak = r
                .peak_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<34} {:>10.1} {:>12}  {}",
                r.phase, r.millis, peak, r.note
            )?;
        }
        Ok(())
    }
}

fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux >= 4.0).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn manifest(i: usize) -> String {
    let ns = format!("team-{:02}", i / 100);
    let app = i - i % 10; // the workload the service/policy of this group selects
    match i % 10 {
        0..=5 => format!(
            "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: app-{i}\n  namespace: {ns}\n  labels: {{app: app-{i}, tier: backend}}\nspec:\n  replicas: {}\n  command: [/usr/bin/app, --port, \"8080\"]\n  env: {{RUST_LOG: info, APP_ID: \"{i}\"}}\n  ports: [{{name: http, port: 8080}}]\n  resources: {{cpu: 250m, memory: 256Mi}}\n  health:\n    http: {{path: /healthz, port: 8080}}\n",
            1 + i % 3
        ),
        6..=8 => format!(
            "apiVersion: nexus/v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  selector: {{app: app-{app}}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ),
        _ => format!(
            "apiVersion: nexus/v1\nkind: NetworkPolicy\nmetadata:\n  name: np-{i}\n  namespace: {ns}\nspec:\n  selector: {{app: app-{app}}}\n  ingress:\n    - from: [{{selector: {{tier: backend}}}}]\n      ports: [{{port: 8080}}]\n"
        ),
    }
}

/// Writes `n` manifests under `deploy/team-XX/` as one commit on `main` of a new bare repository.
fn generate(origin: &Path, n: usize, edit: Option<usize>) -> Result<(usize, String), git2::Error> {
    let repo = match Repository::open_bare(origin) {
        Ok(r) => r,
        Err(_) => Repository::init_bare(origin)?,
    };
    let mut bytes = 0;
    let mut deploy = repo.treebuilder(None)?;
    for team in 0..n.div_ceil(100) {
        let mut dir = repo.treebuilder(None)?;
        for i in team * 100..((team + 1) * 100).min(n) {
            let mut text = manifest(i);
            if edit == Some(i) {
                text = text.replace("RUST_LOG: info", "RUST_LOG: debug");
            }
            bytes += text.len();
            let blob = repo.blob(text.as_bytes())?;
            dir.insert(format!("{i:05}.yaml"), blob, 0o100644)?;
        }
        deploy.insert(format!("team-{team:02}"), dir.write()?, 0o040000)?;
    }
    let mut root = repo.treebuilder(None)?;
    root.insert("deploy", deploy.write()?, 0o040000)?;
    let tree = repo.find_tree(root.write()?)?;
    let sig = Signature::new(
        "Bench",
        "bench@example.com",
        &git2::Time::new(1_700_000_000, 0),
    )?;
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        "generated manifests",
        &tree,
        &parents,
    )?;
    Ok((bytes, id.to_string()))
}

struct Timer {
    rows: Vec<Row>,
    per_phase: bool,
}

impl Timer {
    fn phase<T>(&mut self, phase: &'static str, f: impl FnOnce() -> (T, String)) -> T {
        self.per_phase &= reset_peak();
        let start = Instant::now();
        let (out, note) = f();
        let millis = start.elapsed().as_secs_f64() * 1000.0;
        self.rows.push(Row {
            phase,
            millis,
            peak_kib: status_kib("VmHWM:"),
            note,
        });
        out
    }
}

/// Runs the benchmark with `n` manifests in `work_dir` (created if missing).
pub fn run(n: usize, work_dir: &Path) -> Result<BenchReport, GitError> {
    let origin = work_dir.join("origin.git");
    let url = origin.display().to_string();
    let gen_err = |e: git2::Error| GitError::Read {
        what: "the generated repository".into(),
        message: e.message().to_string(),
    };
    let mut t = Timer {
        rows: Vec::new(),
        per_phase: true,
    };
    let (bytes, _) = t
        .phase("generate repository (git2)", || {
            let r = generate(&origin, n, None);
            (r, String::new())
        })
        .map_err(gen_err)?;
    let mirror = Mirrors::new(work_dir.join("state")).open(&url)?;
    let fetch = FetchOptions::default();
    let head = t.phase("fetch into a new mirror", || {
        let r = mirror.fetch_branch("main", &fetch);
        (r, "local transport".into())
    })?;
    let snap = t.phase("read tree + blobs", || {
        let r = mirror.read_commit(&head, "deploy", &url);
        let note = r
            .as_ref()
            .map(|s| format!("{} files", s.files.len()))
            .unwrap_or_default();
        (r, note)
    })?;
    let desired = t.phase("validate", || {
        let m = ManifestSet::of_snapshot(&snap);
        let note = format!(
            "{} objects, {} diagnostics",
            m.objects.len(),
            m.diagnostics.len()
        );
        (m, note)
    });
    // Live: the same objects, owned by the source, with every 10th one drifted and 50 extra owned
    // objects that left git.
    let src = SourceId::new("default", "bench");
    let mut live: LiveObjects = desired
        .objects
        .iter()
        .enumerate()
        .map(|(i, (k, o))| {
            let mut value = o.value.clone();
            if i % 10 == 0 {
                value["metadata"]["labels"]["drifted"] = "yes".into();
            }
            (
                k.clone(),
                LiveObject {
                    value,
                    owner: Owner::GitSource(src.clone()),
                    resource_version: Some(i as u64),
                },
            )
        })
        .collect();
    for i in 0..50 {
        let mut extra = desired
            .objects
            .values()
            .next()
            .map(|o| o.value.clone())
            .unwrap_or_default();
        extra["metadata"]["name"] = format!("gone-{i}").into();
        if let Ok(obj) = serde_json::from_value::<nexus_schemas::Object>(extra.clone()) {
            live.insert(
                obj.key(),
                LiveObject {
                    value: extra,
                    owner: Owner::GitSource(src.clone()),
                    resource_version: Some(1),
                },
            );
        }
    }
    let policy = SyncPolicy {
        prune: true,
        self_heal: true,
    };
    let plan = t.phase("plan against live", || {
        let p = plan_sync(&SyncInput {
            source: &src,
            policy,
            provenance: &snap.provenance,
            desired: &desired,
            live: &live,
            last_synced: Some(&desired),
        });
        let note = p.summary();
        (p, note)
    });
    let proposal = Proposal::from_plan(&plan);
    t.phase("replica verify (recompute)", || {
        let r = verify_against_snapshot(&proposal, &snap, policy);
        (
            (),
            if r.is_ok() {
                "accepted".into()
            } else {
                format!("REJECTED: {:?}", r.err())
            },
        )
    });
    drop(plan);
    // Incremental: one file changes; everything is read and validated again.
    let (_, _) = generate(&origin, n, Some(n / 2)).map_err(gen_err)?;
    let total = Instant::now();
    t.phase("incremental: fetch one commit", || {
        let r = mirror.fetch_branch("main", &fetch);
        (r, String::new())
    })?;
    let head2 = mirror.branch_head("main")?;
    let snap2 = t.phase("incremental: read tree + blobs", || {
        let r = mirror.read_commit(&head2, "deploy", &url);
        (r, String::new())
    })?;
    let desired2 = t.phase("incremental: validate", || {
        (ManifestSet::of_snapshot(&snap2), String::new())
    });
    t.phase("incremental: plan", || {
        let p = plan_sync(&SyncInput {
            source: &src,
            policy: SyncPolicy::default(),
            provenance: &snap2.provenance,
            desired: &desired2,
            live: &live,
            last_synced: Some(&desired),
        });
        ((), p.summary())
    });
    let total_ms = total.elapsed().as_secs_f64() * 1000.0;
    t.rows.push(Row {
        phase: "incremental sync total",
        millis: total_ms,
        peak_kib: status_kib("VmHWM:"),
        note: "fetch + read + validate + plan".into(),
    });
    Ok(BenchReport {
        manifests: n,
        repo_bytes: bytes,
        per_phase_peaks: t.per_phase,
        rows: t.rows,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_run_plans_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let report = super::run(120, dir.path()).unwrap();
        let text = report.to_string();
        assert!(text.contains("120 objects, 0 diagnostics"), "{text}");
        assert!(text.contains("accepted"), "{text}");
        // 12 drifted (every 10th) are healed, 50 owned objects that left git are pruned.
        assert!(
            text.contains("0 to create, 12 to update, 50 to delete, 108 unchanged; 12 drifted"),
            "{text}"
        );
    }
}
