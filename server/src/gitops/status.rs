//! A source's status as the API shows it, built from its config and from what its last sync
//! found (pure conversions).

use nexus_api::gitops::{CommitInfo, ConflictInfo, DriftInfo, SourceStatus, SyncDiagnostic};
use nexus_gitops::sync::{Conflict, Drift};
use nexus_gitops::{GitProvenance, SourceConfig};
use nexus_schemas::diagnostic::Severity;
use nexus_schemas::{Diagnostic, ObjectKey};

/// Most diagnostics kept per source.
const MAX_DIAGNOSTICS: usize = 50;

/// The status of a source with `cfg`, keeping what `prev` learned from earlier syncs.
pub fn initial(cfg: &SourceConfig, prev: &SourceStatus, triggers: Vec<String>) -> SourceStatus {
    SourceStatus {
        namespace: cfg.id.namespace.clone(),
        name: cfg.id.name.clone(),
        url: cfg.spec.url.clone(),
        branch: cfg.spec.branch.clone(),
        path: cfg.path(),
        prune: cfg.spec.prune,
        self_heal: cfg.spec.self_heal,
        triggers,
        ..prev.clone()
    }
}

/// The commit of a provenance.
pub fn commit_info(p: &GitProvenance) -> CommitInfo {
    CommitInfo {
        commit: p.commit.clone(),
        subject: p.message.lines().next().unwrap_or("").to_string(),
        author: p.author.clone(),
    }
}

/// `Kind/namespace/name`.
pub fn object_name(k: &ObjectKey) -> String {
    format!("{}/{}/{}", k.kind, k.namespace, k.name)
}

/// A serde enum's kebab-case spelling.
pub fn spelled<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn drift(d: &Drift) -> DriftInfo {
    DriftInfo {
        object: object_name(&d.key),
        kind: spelled(&d.kind),
        action: spelled(&d.action),
        fields: d.fields.iter().map(|f| f.path.clone()).collect(),
    }
}

pub fn conflict(c: &Conflict) -> ConflictInfo {
    ConflictInfo {
        object: object_name(&c.key),
        owner: c.owner.to_string(),
        file: c.file.clone(),
        line: c.line,
        same_content: c.same_content,
    }
}

/// Errors first, at most [`MAX_DIAGNOSTICS`].
pub fn diagnostics(ds: &[Diagnostic]) -> Vec<SyncDiagnostic> {
    let mut v: Vec<&Diagnostic> = ds.iter().collect();
    v.sort_by_key(|d| d.severity != Severity::Error);
    v.into_iter()
        .take(MAX_DIAGNOSTICS)
        .map(|d| SyncDiagnostic {
            severity: match d.severity {
                Severity::Error => "error".into(),
                Severity::Warning => "warning".into(),
            },
            code: d.code.to_string(),
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            message: d.message.clone(),
        })
        .collect()
}

/// The first 12 hex digits of a commit.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_gitops::sync::{DriftAction, DriftKind};
    use nexus_schemas::{FieldChange, Kind, SourceFile};

    #[test]
    fn conversions() {
        let key = ObjectKey::new(Kind::Workload, "default", "a");
        let d = drift(&Drift {
            key: key.clone(),
            kind: DriftKind::Modified,
            fields: vec![FieldChange {
                path: "spec.replicas".into(),
                old: None,
                new: None,
            }],
            action: DriftAction::Revert,
        });
        assert_eq!(
            (d.object.as_str(), d.kind.as_str(), d.action.as_str()),
            ("Workload/default/a", "modified", "revert")
        );
        assert_eq!(d.fields, ["spec.replicas"]);
        let f = SourceFile::from_text("deploy/a.yaml", "x: [\n");
        let e = Diagnostic::error("nexus::syntax", &f, None, "bad");
        let w = Diagnostic::warning("nexus::w", &f, None, "meh");
        let out = diagnostics(&[w, e]);
        assert_eq!(out[0].severity, "error");
        assert_eq!(out[0].one_line(), "deploy/a.yaml:0:0: error: bad");
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
    }
}
