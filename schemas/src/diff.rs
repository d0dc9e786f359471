//! The change set between two sets of objects: created, updated (with field-level changes) and
//! deleted objects in a stable order, rendered as text, markdown or JSON. Pure; it powers
//! `nexus diff`, `apply --dry-run`, `nexus plan` and GitOps sync.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::canonical::canonical_value;
use crate::kinds::{Object, ObjectKey};
use crate::path::Path;

/// What happens to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// One changed field: its path and its value before and after (absent = not set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Json>,
}

/// A change to one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectChange {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub op: Op,
    /// Field changes (updates only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// The whole canonical object: the new one for creates, the old one for deletes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<Json>,
    #[serde(skip)]
    pub key: Option<ObjectKey>,
}

/// Every change between two object sets, ordered by kind, namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeSet {
    pub changes: Vec<ObjectChange>,
    /// Objects present on both sides with identical canonical forms.
    pub unchanged: usize,
}

impl ChangeSet {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Number of (creates, updates, deletes).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |op| self.changes.iter().filter(|c| c.op == op).count();
        (n(Op::Create), n(Op::Update), n(Op::Delete))
    }

    /// "2 to create, 1 to update, 0 to delete, 5 unchanged".
    pub fn summary(&self) -> String {
        let (c, u, d) = self.counts();
        format!(
            "{c} to create, {u} to update, {d} to delete, {} unchanged",
            self.unchanged
        )
    }
}

/// Diffs two object sets. Objects are matched by (kind, namespace, name) and compared in
/// canonical form, so formatting and default values never show up as changes.
pub fn diff(old: &[Object], new: &[Object]) -> ChangeSet {
    let old_map: BTreeMap<ObjectKey, Json> =
        old.iter().map(|o| (o.key(), canonical_value(o))).collect();
    let new_map: BTreeMap<ObjectKey, Json> =
        new.iter().map(|o| (o.key(), canonical_value(o))).collect();
    diff_canonical(&old_map, &new_map)
}

/// Diffs two maps of canonical objects (as stored in the ledger).
pub fn diff_canonical(
    old: &BTreeMap<ObjectKey, Json>,
    new: &BTreeMap<ObjectKey, Json>,
) -> ChangeSet {
    let mut out = ChangeSet::default();
    let mut keys: Vec<&ObjectKey> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let change = |op, fields, object| ObjectChange {
            kind: key.kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            op,
            fields,
            object,
            key: Some(key.clone()),
        };
        match (old.get(key), new.get(key)) {
            (None, Some(n)) => out
                .changes
                .push(change(Op::Create, Vec::new(), Some(n.clone()))),
            (Some(o), None) => out
                .changes
                .push(change(Op::Delete, Vec::new(), Some(o.clone()))),
            (Some(o), Some(n)) if o == n => out.unchanged += 1,
            (Some(o), Some(n)) => out
                .changes
                .push(change(Op::Update, diff_values(o, n), None)),
            (None, None) => {}
        }
    }
    out
}

/// Field-level differences between two JSON values, in document order.
pub fn diff_values(old: &Json, new: &Json) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(&Path::root(), Some(old), Some(new), &mut out);
    out
}

fn walk(path: &Path, old: Option<&Json>, new: Option<&Json>, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Some(Json::Object(a)), Some(Json::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(&path.key(k), a.get(k), b.get(k), out);
            }
        }
        (Some(Json::Array(a)), Some(Json::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                walk(&path.index(i), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: path.to_string(),
            old: a.cloned(),
            new: b.cloned(),
        }),
    }
}

fn show(v: &Option<Json>) -> String {
    match v {
        None => "(unset)".into(),
        Some(Json::String(s)) => format!("{s:?}"),
        Some(other) => other.to_string(),
    }
}

/// Plain-text rendering, one line per object and one indented line per field.
pub fn render_text(cs: &ChangeSet) -> String {
    let mut s = String::new();
    for c in &cs.changes {
        let sign = match c.op {
            Op::Create => '+',
            Op::Update => '~',
            Op::Delete => '-',
        };
        let _ = writeln!(
            s,
            "{sign} {} {}/{} ({})",
            c.kind,
            c.namespace,
            c.name,
            op_word(c.op)
        );
        for f in &c.fields {
            let _ = writeln!(s, "    {}: {} -> {}", f.path, show(&f.old), show(&f.new));
        }
    }
    if cs.changes.is_empty() {
        let _ = writeln!(s, "No changes ({} unchanged).", cs.unchanged);
    } else {
        let _ = writeln!(s, "\n{}", cs.summary());
    }
    s
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Delete => "delete",
    }
}

/// Markdown for pull-request comments: a summary table and one section per object.
pub fn render_markdown(cs: &ChangeSet) -> String {
    let mut s = String::new();
    let (c, u, d) = cs.counts();
    let _ = writeln!(
        s,
        "### nexus: {c} to create, {u} to update, {d} to delete\n"
    );
    if cs.changes.is_empty() {
        let _ = writeln!(s, "No changes ({} objects unchanged).", cs.unchanged);
        return s;
    }
    let _ = writeln!(s, "| | Kind | Namespace | Name | Fields changed |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for ch in &cs.changes {
        let icon = match ch.op {
            Op::Create => "➕ create",
            Op::Update => "✏️ update",
            Op::Delete => "🗑️ delete",
        };
        let fields = if ch.op == Op::Update {
            ch.fields.len().to_string()
        } else {
            "—".into()
        };
        let _ = writeln!(
            s,
            "| {icon} | {} | {} | `{}` | {fields} |",
            ch.kind, ch.namespace, ch.name
        );
    }
    for ch in &cs.changes {
        let _ = writeln!(
            s,
            "\n#### {} {} `{}/{}`\n",
            op_word(ch.op),
            ch.kind,
            ch.namespace,
            ch.name
        );
        match ch.op {
            Op::Update => {
                let _ = writeln!(s, "| Field | Old | New |");
                let _ = writeln!(s, "|---|---|---|");
                for f in &ch.fields {
                    let _ = writeln!(
                        s,
                        "| `{}` | {} | {} |",
                        f.path,
                        md_cell(&f.old),
                        md_cell(&f.new)
                    );
                }
            }
            Op::Create | Op::Delete => {
                if let Some(obj) = &ch.object {
                    let pretty = serde_json::to_string_pretty(obj).unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "<details><summary>{}</summary>\n\n```json\n{pretty}\n```\n</details>",
                        if ch.op == Op::Create {
                            "new object"
                        } else {
                            "deleted object"
                        }
                    );
                }
            }
        }
    }
    let _ = writeln!(s, "\n{} unchanged.", cs.unchanged);
    s
}

fn md_cell(v: &Option<Json>) -> String {
    match v {
        None => "_(unset)_".into(),
        Some(v) => format!("`{}`", v.to_string().replace('|', "\\|").replace('`', "'")),
    }
}

/// JSON rendering (pretty, stable key order).
pub fn render_json(cs: &ChangeSet) -> String {
    serde_json::to_string_pretty(cs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;
    use crate::validate::validate_sources;
    use expect_test::expect;

    fn objs(text: &str) -> Vec<Object> {
        let v = validate_sources(&[SourceFile::from_text("t.yaml", text)]);
        assert!(!v.has_errors(), "{:?}", v.diagnostics);
        v.objects.into_iter().map(|o| o.object).collect()
    }

    const OLD: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: api, labels: {app: api}}\nspec: {command: [api], replicas: 2, ports: [{port: 8080}]}\n---\napiVersion: nexus/v1\nkind: Service\nmetadata: {name: old}\nspec: {selector: {app: api}, ports: [{port: 80}]}\n---\napiVersion: nexus/v1\nkind: Workload\nmetadata: {name: same}\nspec: {command: [x]}\n";
    const NEW: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: api, labels: {app: api}}\nspec: {command: [api, --fast], replicas: 3, ports: [{port: 8080}], resources: {memory: 256Mi}}\n---\napiVersion: nexus/v1\nkind: Workload\nmetadata: {name: same}\nspec: {command: [x], replicas: 1}\n---\napiVersion: nexus/v1\nkind: Service\nmetadata: {name: new}\nspec: {selector: {app: api}, ports: [{port: 81}]}\n";

    #[test]
    fn text_diff() {
        let cs = diff(&objs(OLD), &objs(NEW));
        expect![[r#"
            ~ Workload default/api (update)
                spec.command[1]: (unset) -> "--fast"
                spec.replicas: 2 -> 3
                spec.resources.memory: "128Mi" -> "256Mi"
            + Service default/new (create)
            - Service default/old (delete)

            1 to create, 1 to update, 1 to delete, 1 unchanged
        "#]]
        .assert_eq(&render_text(&cs));
    }

    #[test]
    fn no_changes_and_stable_order() {
        let cs = diff(&objs(OLD), &objs(OLD));
        assert!(cs.is_empty());
        assert_eq!(cs.unchanged, 3);
        let a = diff(&objs(OLD), &objs(NEW));
        let mut rev = objs(NEW);
        rev.reverse();
        assert_eq!(a, diff(&objs(OLD), &rev));
    }

    #[test]
    fn json_is_machine_readable() {
        let cs = diff(&objs(OLD), &objs(NEW));
        let v: Json = serde_json::from_str(&render_json(&cs)).unwrap();
        assert_eq!(v["changes"][0]["op"], "update");
        assert_eq!(v["changes"][0]["fields"][1]["path"], "spec.replicas");
        assert_eq!(v["changes"][0]["fields"][1]["new"], 3);
        assert_eq!(v["changes"][1]["op"], "create");
        assert!(v["changes"][1]["object"]["spec"].is_object());
    }
}
