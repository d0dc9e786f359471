//! Rendering a [`PlanReport`]: plain text for terminals, markdown for pull-request comments, and
//! JSON for scripts. Deterministic: the same report renders to the same bytes.

use std::fmt::Write as _;

use nexus_schemas::{Diagnostic, FieldChange, Op};
use serde::Serialize;
use serde_json::Value as Json;

use super::{LiveOrigin, PlanReport};
use crate::sync::{DriftAction, DriftKind};

fn show(v: &Option<Json>) -> String {
    match v {
        None => "(unset)".into(),
        Some(Json::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

fn md_cell(v: &Option<Json>) -> String {
    match v {
        None => "_(unset)_".into(),
        Some(v) => format!("`{}`", md_escape(&v.to_string())),
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'").replace('\n', " ")
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Delete => "delete",
    }
}

fn drift_words(action: DriftAction) -> &'static str {
    match action {
        DriftAction::Revert => "reverted to git (selfHeal)",
        DriftAction::Keep => "kept (selfHeal is off)",
        DriftAction::Overwrite => "overwritten by this merge",
        DriftAction::Prune => "deleted by prune",
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn live_words(r: &PlanReport) -> String {
    match &r.live {
        LiveOrigin::Cluster(c) => format!("cluster {c:?}"),
        LiveOrigin::AssumedBase => "assumed to be base, fully synced (no cluster given)".into(),
    }
}

fn path_words(r: &PlanReport) -> String {
    if r.path.is_empty() {
        "the whole repository".into()
    } else {
        format!("path {:?}", r.path)
    }
}

fn diag_line(d: &Diagnostic) -> String {
    d.one_line()
}

/// Plain text.
pub fn render_text(r: &PlanReport) -> String {
    let mut s = String::new();
    let p = &r.plan;
    let _ = writeln!(s, "nexus plan for {} ({})", r.source, path_words(r));
    let _ = writeln!(
        s,
        "  base {:<12} {} {:?}",
        r.base.rev,
        r.base.short(),
        r.base.subject
    );
    let _ = writeln!(
        s,
        "  head {:<12} {} {:?}",
        r.head.rev,
        r.head.short(),
        r.head.subject
    );
    let _ = writeln!(s, "  live: {}", live_words(r));
    let _ = writeln!(
        s,
        "  prune: {}, selfHeal: {}",
        on_off(p.policy.prune),
        on_off(p.policy.self_heal)
    );
    if p.is_rejected() {
        let _ = writeln!(
            s,
            "\nError: head would be rejected whole; nothing would change."
        );
        for d in &p.diagnostics {
            let _ = writeln!(s, "{}", diag_line(d));
            if let Some(h) = &d.help {
                let _ = writeln!(s, "    help: {h}");
            }
        }
        return s;
    }
    if p.changes.changes.is_empty() {
        let _ = writeln!(s, "\nNo changes to the cluster.");
    } else {
        let _ = writeln!(s, "\nChanges to the cluster:");
        for c in &p.changes.changes {
            let sign = match c.op {
                Op::Create => '+',
                Op::Update => '~',
                Op::Delete => '-',
            };
            let note = if c.op == Op::Delete { ", prune" } else { "" };
            let _ = writeln!(
                s,
                "{sign} {} {}/{} ({}{note})",
                c.kind,
                c.namespace,
                c.name,
                op_word(c.op)
            );
            for f in &c.fields {
                let _ = writeln!(s, "    {}: {} -> {}", f.path, show(&f.old), show(&f.new));
            }
        }
    }
    if !p.conflicts.is_empty() {
        let _ = writeln!(
            s,
            "\nConflicts (defined in git, owned by someone else; not touched):"
        );
        for c in &p.conflicts {
            let same = if c.same_content { ", same content" } else { "" };
            let _ = writeln!(
                s,
                "! {} owned by {} ({}:{}{same})",
                c.key, c.owner, c.file, c.line
            );
        }
    }
    if !p.drift.is_empty() {
        let _ = writeln!(s, "\nDrift (owned objects changed outside git):");
        for d in &p.drift {
            let what = match d.kind {
                DriftKind::Modified => "modified",
                DriftKind::Deleted => "deleted",
            };
            let _ = writeln!(s, "~ {} {what}: {}", d.key, drift_words(d.action));
            for f in &d.fields {
                let _ = writeln!(
                    s,
                    "    {}: git {} -> live {}",
                    f.path,
                    show(&f.old),
                    show(&f.new)
                );
            }
        }
    }
    if !p.policy.prune && !p.prune.is_empty() {
        let _ = writeln!(s, "\nLeft in the cluster (gone from git; prune is off):");
        for k in &p.prune {
            let _ = writeln!(s, "  {k}");
        }
    }
    let warnings: Vec<&Diagnostic> = p.diagnostics.iter().filter(|d| !d.is_error()).collect();
    if !warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for d in warnings {
            let _ = writeln!(s, "  {}", diag_line(d));
        }
    }
    let _ = writeln!(s, "\nGit, base -> head: {}", r.git_changes.summary());
    let _ = writeln!(s, "Plan: {}", p.summary());
    s
}

fn field_table(s: &mut String, fields: &[FieldChange], old: &str, new: &str) {
    let _ = writeln!(s, "| Field | {old} | {new} |\n|---|---|---|");
    for f in fields {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} |",
            md_escape(&f.path),
            md_cell(&f.old),
            md_cell(&f.new)
        );
    }
}

/// Markdown for a pull-request comment.
pub fn render_markdown(r: &PlanReport) -> String {
    let mut s = String::new();
    let p = &r.plan;
    let mark = if p.is_rejected() {
        " ❌"
    } else if p.has_changes() {
        ""
    } else {
        " ✅"
    };
    let _ = writeln!(s, "### nexus plan: `{}`{mark}\n", r.source);
    let _ = writeln!(
        s,
        "**head** `{}` {} · **base** `{}` ({}) · {} · live: {} · prune {}, selfHeal {}\n",
        r.head.short(),
        md_escape(&r.head.subject),
        r.base.short(),
        md_escape(&r.base.rev),
        md_escape(&path_words(r)),
        md_escape(&live_words(r)),
        on_off(p.policy.prune),
        on_off(p.policy.self_heal),
    );
    if p.is_rejected() {
        let _ = writeln!(
            s,
            "**This commit would be rejected whole**: nothing changes until the errors are fixed.\n"
        );
        let _ = writeln!(s, "| Location | Problem |\n|---|---|");
        for d in &p.diagnostics {
            let sev = if d.is_error() { "error" } else { "warning" };
            let help = d
                .help
                .as_deref()
                .map(|h| format!(" — {}", md_escape(h)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| `{}:{}:{}` | {sev}: {}{help} |",
                md_escape(&d.file),
                d.line,
                d.column,
                md_escape(&d.message)
            );
        }
        return s;
    }
    let (c, u, d) = p.changes.counts();
    let mut extra = String::new();
    if !p.conflicts.is_empty() {
        let _ = write!(extra, " · {} conflict(s)", p.conflicts.len());
    }
    if !p.drift.is_empty() {
        let _ = write!(extra, " · {} drifted", p.drift.len());
    }
    let _ = writeln!(
        s,
        "**{c} to create, {u} to update, {d} to delete**, {} unchanged{extra}\n",
        p.changes.unchanged
    );
    if !p.changes.changes.is_empty() {
        let _ = writeln!(
            s,
            "| | Kind | Namespace | Name | Details |\n|---|---|---|---|---|"
        );
        for ch in &p.changes.changes {
            let (icon, details) = match ch.op {
                Op::Create => ("➕ create", String::new()),
                Op::Update => ("✏️ update", format!("{} field(s)", ch.fields.len())),
                Op::Delete => ("🗑️ delete", "pruned: gone from git".to_string()),
            };
            let _ = writeln!(
                s,
                "| {icon} | {} | {} | `{}` | {details} |",
                ch.kind, ch.namespace, ch.name
            );
        }
        for ch in &p.changes.changes {
            let _ = writeln!(
                s,
                "\n<details><summary>{} {} <code>{}/{}</code></summary>\n",
                op_word(ch.op),
                ch.kind,
                ch.namespace,
                ch.name
            );
            match (ch.op, &ch.object) {
                (Op::Update, _) => field_table(&mut s, &ch.fields, "Live", "After merge"),
                (_, Some(obj)) => {
                    let pretty = serde_json::to_string_pretty(obj).unwrap_or_default();
                    let _ = writeln!(s, "```json\n{pretty}\n```");
                }
                (_, None) => {}
            }
            let _ = writeln!(s, "\n</details>");
        }
    }
    if !p.conflicts.is_empty() {
        let _ = writeln!(
            s,
            "\n#### ⚠️ Conflicts: defined in git, owned by someone else (not touched)\n"
        );
        let _ = writeln!(s, "| Object | Owner | Defined at |\n|---|---|---|");
        for c in &p.conflicts {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | `{}:{}` |",
                c.key,
                c.owner,
                md_escape(&c.file),
                c.line
            );
        }
    }
    if !p.drift.is_empty() {
        let _ = writeln!(s, "\n#### Drift: owned objects changed outside git\n");
        let _ = writeln!(s, "| Object | Change | Outcome |\n|---|---|---|");
        for d in &p.drift {
            let change = match d.kind {
                DriftKind::Deleted => "deleted".to_string(),
                DriftKind::Modified => d
                    .fields
                    .iter()
                    .map(|f| {
                        format!(
                            "`{}` {} → {}",
                            md_escape(&f.path),
                            md_cell(&f.old),
                            md_cell(&f.new)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            let _ = writeln!(s, "| `{}` | {change} | {} |", d.key, drift_words(d.action));
        }
    }
    if !p.policy.prune && !p.prune.is_empty() {
        let _ = writeln!(
            s,
            "\n#### Left in the cluster (gone from git; prune is off)\n"
        );
        for k in &p.prune {
            let _ = writeln!(s, "- `{k}`");
        }
    }
    let warnings: Vec<&Diagnostic> = p.diagnostics.iter().filter(|d| !d.is_error()).collect();
    if !warnings.is_empty() {
        let _ = writeln!(s, "\n#### Warnings\n");
        for d in warnings {
            let _ = writeln!(
                s,
                "- `{}:{}:{}` {}",
                md_escape(&d.file),
                d.line,
                d.column,
                md_escape(&d.message)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n<sub>git, base → head: {}</sub>",
        r.git_changes.summary()
    );
    s
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    exit_code: i32,
    summary: String,
    #[serde(flatten)]
    report: &'a PlanReport,
}

/// Pretty JSON: the report plus `exitCode` and `summary`.
pub fn render_json(r: &PlanReport) -> String {
    let out = JsonReport {
        exit_code: r.exit_code(),
        summary: r.plan.summary(),
        report: r,
    };
    serde_json::to_string_pretty(&out).unwrap_or_default()
}
