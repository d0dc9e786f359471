//! The validation pipeline: bytes -> YAML span tree -> kind dispatch -> JSON Schema errors mapped
//! back to file:line:col -> semantic checks -> typed objects; then checks across all files
//! (duplicates, selectors that match nothing). Every problem is reported, not only the first.

use std::collections::BTreeMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value as Json;

use crate::diagnostic::{Diagnostic, Related, SourceFile, Span};
use crate::finding::{At, Finding};
use crate::kinds::{API_VERSION, Kind, Labels, Object, ObjectKey, Spec, selector_matches};
use crate::path::{Path, Seg, locate};
use crate::schema::{compiled, subschema_at};
use crate::semantic;
use crate::yaml::{Node, empty_documents, parse_documents};

/// Largest manifest file accepted.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Index into the files given to [`validate_sources`].
    pub file: usize,
    /// The file's display name.
    pub file_name: String,
    /// 0-based index of the document in the file.
    pub document: usize,
    /// Span of `metadata.name`'s value (or the document start).
    pub name_span: Span,
    /// 1-based line of `name_span`.
    pub line: usize,
}

/// A valid object and where it was defined.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    pub object: Object,
    pub origin: Origin,
}

/// The result of validating a set of sources.
#[derive(Debug, Default)]
pub struct Validation {
    /// Objects from documents without errors (warnings allowed).
    pub objects: Vec<ParsedObject>,
    /// Every problem, errors and warnings, ordered by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validation {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of errors and warnings.
    pub fn counts(&self) -> (usize, usize) {
        let errors = self.diagnostics.iter().filter(|d| d.is_error()).count();
        (errors, self.diagnostics.len() - errors)
    }
}

/// Identity of a document that got far enough to have a kind and a name, for cross-file checks
/// (kept even when the document has other errors).
struct Ident {
    key: ObjectKey,
    file: usize,
    name_span: Span,
    labels: Labels,
    selector: Option<(Labels, Span)>,
}

/// Validates every document of every file.
pub fn validate_sources(files: &[SourceFile]) -> Validation {
    let mut out = Validation::default();
    let mut idents = Vec::new();
    for (idx, file) in files.iter().enumerate() {
        validate_file(idx, file, &mut out, &mut idents);
    }
    cross_checks(files, &idents, &mut out);
    // Stable order: by file, then position, errors before warnings at one position.
    let order: BTreeMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    out.diagnostics.sort_by_key(|d| {
        (
            order.get(d.file.as_str()).copied().unwrap_or(usize::MAX),
            d.span.map(|s| s.offset).unwrap_or(0),
            d.severity,
        )
    });
    out
}

fn validate_file(idx: usize, file: &SourceFile, out: &mut Validation, idents: &mut Vec<Ident>) {
    if file.size > MAX_FILE_BYTES {
        out.diagnostics.push(
            Diagnostic::error(
                "nexus::file-too-large",
                file,
                None,
                format!(
                    "file is {} bytes; manifest files are limited to {} bytes (8 MiB)",
                    file.size, MAX_FILE_BYTES
                ),
            )
            .with_help("split the manifests into several files in one directory"),
        );
        return;
    }
    if let Some(at) = file.invalid_utf8_at {
        out.diagnostics.push(
            Diagnostic::error(
                "nexus::not-utf8",
                file,
                Some(Span { offset: at, len: 1 }),
                "file is not valid UTF-8",
            )
            .with_label("invalid byte sequence here")
            .with_help("manifests must be UTF-8 text; re-save the file as UTF-8"),
        );
        return;
    }
    let docs = match parse_documents(&file.text) {
        Ok(d) => d,
        Err(e) => {
            let mut d = Diagnostic::error(
                "nexus::yaml-syntax",
                file,
                e.span,
                format!("invalid YAML: {}", e.message),
            )
            .with_label(short_label(&e.message));
            d.help = Some(syntax_help(&e.message, &file.text, e.span));
            out.diagnostics.push(d);
            return;
        }
    };
    for marker in empty_documents(&file.text) {
        out.diagnostics.push(
            Diagnostic::warning(
                "nexus::empty-document",
                file,
                Some(marker),
                "empty YAML document",
            )
            .with_label("this document has no content")
            .with_help("remove the extra `---` separator"),
        );
    }
    if docs.is_empty() {
        out.diagnostics.push(
            Diagnostic::error(
                "nexus::empty-file",
                file,
                Some(Span { offset: 0, len: 0 }),
                "no manifests in this file",
            )
            .with_help("add a manifest (apiVersion, kind, metadata, spec) or remove the file"),
        );
        return;
    }
    for (doc_idx, doc) in docs.iter().enumerate() {
        let mut diags = Vec::new();
        let object = validate_document(idx, file, doc_idx, doc, &mut diags, idents);
        if let Some(o) = object
            && !diags.iter().any(Diagnostic::is_error)
        {
            out.objects.push(o);
        }
        out.diagnostics.extend(diags);
    }
}

fn short_label(msg: &str) -> String {
    let m = msg.trim();
    if m.len() > 60 {
        "here".into()
    } else {
        m.to_string()
    }
}

fn syntax_help(msg: &str, text: &str, span: Option<Span>) -> String {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("duplicate") {
        return "each key may appear once in a map; remove or merge the repeated key".into();
    }
    if lower.contains("tab") {
        return "YAML indentation must use spaces; replace the tab characters with spaces".into();
    }
    if lower.contains("nesting") {
        return format!(
            "manifests may nest at most {} levels deep",
            crate::yaml::MAX_DEPTH
        );
    }
    if lower.contains("alias") || lower.contains("too large") {
        return "the document expands to too many nodes (is it an alias bomb?); write the values out or use fewer aliases".into();
    }
    if let Some(s) = span {
        let offset = s.offset.min(text.len());
        let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        if text[line_start..].starts_with('\t') {
            return "YAML indentation must use spaces; replace the tab characters with spaces"
                .into();
        }
        // An unclosed flow collection a few lines up is the usual cause of a confusing error here.
        let before: Vec<&str> = text[..line_start].lines().collect();
        for (i, line) in before.iter().enumerate().rev().take(5) {
            for (open, close) in [('[', ']'), ('{', '}')] {
                if line.matches(open).count() > line.matches(close).count() {
                    return format!("line {} opens `{open}` without a closing `{close}`", i + 1);
                }
            }
        }
    }
    "check the indentation, brackets and quotes around this position".into()
}

fn key_span_of(root: &Node, path: &Path) -> Span {
    let (loc, _) = locate(root, path);
    loc.key.map(|k| k.span).unwrap_or(loc.value.span)
}

fn validate_document(
    file_idx: usize,
    file: &SourceFile,
    doc_idx: usize,
    doc: &Node,
    diags: &mut Vec<Diagnostic>,
    idents: &mut Vec<Ident>,
) -> Option<ParsedObject> {
    let json = doc.to_json();
    let (header, kind) = header_findings(&json);
    let ok = header.is_empty();
    diags.extend(header.iter().map(|f| f.to_diagnostic(file, doc)));
    let kind = kind?;
    let doc_start = Span {
        offset: doc.span.offset,
        len: 0,
    };
    // Identity for cross-file checks.
    let name = doc
        .get("metadata")
        .and_then(|(_, m)| m.get("name"))
        .and_then(|(_, n)| n.as_str().map(|s| (s.to_string(), n.span)));
    let namespace = doc
        .get("metadata")
        .and_then(|(_, m)| m.get("namespace"))
        .and_then(|(_, n)| n.as_str())
        .unwrap_or("default")
        .to_string();
    if let Some((name, name_span)) = &name {
        let labels: Labels = json
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        let selector = match kind {
            Kind::Service | Kind::NetworkPolicy => json
                .pointer("/spec/selector")
                .and_then(|l| serde_json::from_value::<Labels>(l.clone()).ok())
                .map(|s| (s, key_span_of(doc, &Path::parse("spec.selector")))),
            _ => None,
        };
        idents.push(Ident {
            key: ObjectKey::new(kind, namespace, name.clone()),
            file: file_idx,
            name_span: *name_span,
            labels,
            selector,
        });
    }
    if !ok {
        return None;
    }
    let mut found: Vec<Diagnostic> = document_findings(kind, &json)
        .iter()
        .map(|f| f.to_diagnostic(file, doc))
        .collect();
    found.sort_by_key(|d| d.span.map(|s| s.offset).unwrap_or(0));
    diags.extend(found);
    if diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    match serde_json::from_value::<Object>(json) {
        Ok(object) => {
            let name_span = name.map(|(_, s)| s).unwrap_or(doc_start);
            let (line, _) = file.line_col(name_span.offset);
            Some(ParsedObject {
                object,
                origin: Origin {
                    file: file_idx,
                    file_name: file.name.clone(),
                    document: doc_idx,
                    name_span,
                    line,
                },
            })
        }
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    "nexus::invalid-value",
                    file,
                    Some(doc.span),
                    format!("invalid {kind}: {e}"),
                )
                .with_help("check the field types against `nexus schema`"),
            );
            None
        }
    }
}

/// The checks every document gets before its kind's schema: it is a map, `apiVersion` is
/// nexus/v1, `kind` is a nexus kind. Returns the findings and the kind, if it is one.
pub(crate) fn header_findings(json: &Json) -> (Vec<Finding>, Option<Kind>) {
    let root = Path::root();
    let mut out = Vec::new();
    if !json.is_object() {
        out.push(
            Finding::new("nexus::not-a-manifest", root, At::Value, format!("a manifest must be a map, found {}", json_type_name(json)))
                .with_label("expected `apiVersion`, `kind`, `metadata` and `spec` here")
                .with_help("start the document with `apiVersion: nexus/v1` and `kind: Workload` (or Service, NetworkPolicy, GitSource)"),
        );
        return (out, None);
    }
    let found = |v: &Json| {
        v.as_str()
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| json_type_name(v).to_string())
    };
    match json.get("apiVersion") {
        None => out.push(
            Finding::new(
                "nexus::missing-field",
                root.clone(),
                At::Start,
                "missing required field \"apiVersion\"",
            )
            .with_help("add `apiVersion: nexus/v1` at the top of the document"),
        ),
        Some(v) if v.as_str() == Some(API_VERSION) => {}
        Some(v) => out.push(
            Finding::new(
                "nexus::unknown-api-version",
                root.key("apiVersion"),
                At::Value,
                format!("unknown apiVersion {}", found(v)),
            )
            .with_label("expected \"nexus/v1\"")
            .with_help("this release understands `apiVersion: nexus/v1`"),
        ),
    }
    let kind = match json.get("kind") {
        None => {
            out.push(
                Finding::new(
                    "nexus::missing-field",
                    root.clone(),
                    At::Start,
                    "missing required field \"kind\"",
                )
                .with_help("add `kind:` with one of Workload, Service, NetworkPolicy, GitSource"),
            );
            None
        }
        Some(v) => match v
            .as_str()
            .and_then(|s| Kind::ALL.iter().find(|k| k.as_str() == s).copied())
        {
            Some(k) => Some(k),
            None => {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                let help = match v.as_str().and_then(|s| did_you_mean(s, &names)) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => match v.as_str() {
                        Some(
                            "Deployment" | "StatefulSet" | "DaemonSet" | "Pod" | "ReplicaSet"
                            | "Job",
                        ) => "a Kubernetes Deployment, StatefulSet or Pod is a nexus Workload"
                            .to_string(),
                        _ => format!("kinds are: {}", names.join(", ")),
                    },
                };
                out.push(
                    Finding::new(
                        "nexus::unknown-kind",
                        root.key("kind"),
                        At::Value,
                        format!("unknown kind {}", found(v)),
                    )
                    .with_label("not a nexus/v1 kind")
                    .with_help(help),
                );
                None
            }
        },
    };
    (out, kind)
}

/// A short name of a JSON value's type for messages, in the words YAML users know.
fn json_type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a number",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
    }
}

/// The JSON Schema and semantic findings of one document of `kind`: schema errors first, then
/// semantic ones, each in the order found.
pub(crate) fn document_findings(kind: Kind, json: &Json) -> Vec<Finding> {
    let mut out = Vec::new();
    schema_findings(kind, json, &mut out);
    let mut sem = semantic::Checker::default();
    semantic::check(kind, json, &mut sem);
    out.extend(sem.findings);
    out
}

/// Runs the kind's JSON Schema and turns each error into a finding at its field path.
fn schema_findings(kind: Kind, json: &Json, diags: &mut Vec<Finding>) {
    let compiled = compiled(kind);
    if compiled.validator.is_valid(json) {
        return;
    }
    for err in compiled.validator.iter_errors(json) {
        let path = Path(
            err.instance_path()
                .iter()
                .map(|s| match s {
                    jsonschema::paths::LocationSegment::Property(p) => Seg::Key(p.into_owned()),
                    jsonschema::paths::LocationSegment::Index(i) => Seg::Index(i),
                })
                .collect(),
        );
        if matches!(path.0.first(), Some(Seg::Key(k)) if k == "apiVersion" || k == "kind")
            && path.0.len() == 1
        {
            continue; // reported above with better wording
        }
        let field_help = || {
            subschema_at(&compiled.schema, &path.0)
                .and_then(|s| s.get("description"))
                .and_then(Json::as_str)
                .map(|d| format!("{path}: {d}"))
        };
        let instance = err.instance();
        let diag = match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed: Vec<String> = subschema_at(&compiled.schema, &path.0)
                    .and_then(|s| s.get("properties"))
                    .and_then(Json::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                for name in unexpected {
                    let field_path = path.key(name);
                    let allowed_refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
                    let help = match did_you_mean(name, &allowed_refs) {
                        Some(s) => format!("did you mean \"{s}\"?"),
                        None if allowed.is_empty() => "remove this field".to_string(),
                        None => format!(
                            "fields allowed in {}: {}",
                            describe_parent(&path),
                            allowed.join(", ")
                        ),
                    };
                    let msg = format!("unknown field \"{name}\"");
                    diags.push(
                        Finding::new("nexus::unknown-field", field_path, At::Key, msg)
                            .with_label(format!("not a field of {}", describe_parent(&path)))
                            .with_help(help),
                    );
                }
                continue;
            }
            ValidationErrorKind::Required { property } => {
                let prop = property.as_str().unwrap_or_default().to_string();
                let at = if path.0.is_empty() {
                    At::Start
                } else {
                    At::Key
                };
                let desc = subschema_at(&compiled.schema, &path.key(&prop).0)
                    .and_then(|s| s.get("description"))
                    .and_then(Json::as_str)
                    .map(|d| format!("{}: {d}", path.key(&prop)));
                Finding::new(
                    "nexus::missing-field",
                    path.clone(),
                    at,
                    format!(
                        "missing required field \"{prop}\" in {}",
                        describe_parent(&path)
                    ),
                )
                .with_label(format!("add `{prop}` to this map"))
                .with_help_opt(desc)
            }
            ValidationErrorKind::Type { kind: expected } => {
                let expected = match expected {
                    TypeKind::Single(t) => type_phrase(&t.to_string()),
                    TypeKind::Multiple(set) => set
                        .iter()
                        .map(|t| type_phrase(&t.to_string()))
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                let found = json_type_phrase(instance);
                let help = if expected.contains("string")
                    && matches!(instance.as_ref(), Json::Number(_) | Json::Bool(_))
                {
                    Some(format!(
                        "quote the value to make it a string: \"{}\"",
                        instance
                    ))
                } else if matches!(instance.as_ref(), Json::Null) {
                    Some(format!(
                        "give {path} a value, or remove the key to use the default"
                    ))
                } else {
                    field_help()
                };
                Finding::new(
                    "nexus::wrong-type",
                    path.clone(),
                    At::Value,
                    format!("{path} must be {expected}, found {found}"),
                )
                .with_label(format!("expected {expected}"))
                .with_help_opt(help)
            }
            ValidationErrorKind::Enum { options } => {
                let opts: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| {
                                o.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| o.to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let found = instance
                    .as_str()
                    .map(|s| format!("{s:?}"))
                    .unwrap_or_else(|| instance.to_string());
                let opt_refs: Vec<&str> = opts.iter().map(String::as_str).collect();
                let help = match instance.as_str().and_then(|s| did_you_mean(s, &opt_refs)) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => field_help()
                        .unwrap_or_else(|| format!("expected one of: {}", opts.join(", "))),
                };
                Finding::new(
                    "nexus::invalid-value",
                    path.clone(),
                    At::Value,
                    format!("{found} is not a valid value for {path}"),
                )
                .with_label(format!("expected one of: {}", opts.join(", ")))
                .with_help(help)
            }
            ValidationErrorKind::Minimum { limit }
            | ValidationErrorKind::ExclusiveMinimum { limit } => {
                let bound = range_phrase(&compiled.schema, &path, limit, ">=");
                Finding::new(
                    "nexus::out-of-range",
                    path.clone(),
                    At::Value,
                    format!("{path} must be {bound}, found {instance}"),
                )
                .with_label(format!("must be {bound}"))
                .with_help_opt(field_help())
            }
            ValidationErrorKind::Maximum { limit }
            | ValidationErrorKind::ExclusiveMaximum { limit } => {
                let bound = range_phrase(&compiled.schema, &path, limit, "<=");
                Finding::new(
                    "nexus::out-of-range",
                    path.clone(),
                    At::Value,
                    format!("{path} must be {bound}, found {instance}"),
                )
                .with_label(format!("must be {bound}"))
                .with_help_opt(field_help())
            }
            _ => Finding::new(
                "nexus::invalid-value",
                path.clone(),
                At::Value,
                format!("{path}: {}", err.masked()),
            )
            .with_label("invalid value")
            .with_help_opt(field_help()),
        };
        diags.push(diag);
    }
}

fn describe_parent(path: &Path) -> String {
    if path.0.is_empty() {
        "the document".to_string()
    } else {
        format!("`{path}`")
    }
}

fn range_phrase(schema: &Json, path: &Path, limit: &Json, op: &str) -> String {
    let sub = subschema_at(schema, &path.0);
    let min = sub.and_then(|s| s.get("minimum")).and_then(Json::as_f64);
    let max = sub.and_then(|s| s.get("maximum")).and_then(Json::as_f64);
    match (min, max) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
        _ => format!("{op} {limit}"),
    }
}

fn type_phrase(t: &str) -> String {
    match t {
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "boolean" => "a boolean (true or false)".into(),
        "array" => "a list".into(),
        "object" => "a map".into(),
        "null" => "null".into(),
        other => other.into(),
    }
}

fn json_type_phrase(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("a boolean ({b})"),
        Json::Number(n) if n.is_f64() => format!("a number ({n})"),
        Json::Number(n) => format!("an integer ({n})"),
        Json::String(s) if s.chars().count() > 40 => "a string".into(),
        Json::String(s) => format!("a string ({s:?})"),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a map".into(),
    }
}

/// The closest candidate to `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    if let Some(exact) = candidates.iter().find(|c| c.to_ascii_lowercase() == lower) {
        return Some(exact);
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn cross_checks(files: &[SourceFile], idents: &[Ident], out: &mut Validation) {
    // Duplicates: the second and later definitions are errors pointing at the first.
    let mut first: BTreeMap<&ObjectKey, &Ident> = BTreeMap::new();
    let mut dup_objects = std::collections::BTreeSet::new();
    for id in idents {
        match first.get(&id.key) {
            None => {
                first.insert(&id.key, id);
            }
            Some(orig) => {
                let f = &files[id.file];
                let of = &files[orig.file];
                let (line, column) = of.line_col(orig.name_span.offset);
                out.diagnostics.push(
                    Diagnostic::error("nexus::duplicate-object", f, Some(id.name_span), format!("duplicate {} \"{}\" in namespace \"{}\"", id.key.kind, id.key.name, id.key.namespace))
                        .with_label("defined again here")
                        .with_help(format!("{} is already defined at {}:{line}:{column}; rename one of them or delete the copy", id.key, of.name))
                        .with_related(Related { file: of.name.clone(), line, column, span: orig.name_span, label: "first defined here".into() }),
                );
                dup_objects.insert((id.file, id.name_span));
            }
        }
    }
    if !dup_objects.is_empty() {
        out.objects
            .retain(|o| !dup_objects.contains(&(o.origin.file, o.origin.name_span)));
    }
    // Selectors that match no Workload in their namespace. Workloads are indexed by
    // (namespace, label key, label value) so this stays linear in the number of objects.
    let mut by_label: BTreeMap<(&str, &str, &str), Vec<&Labels>> = BTreeMap::new();
    for w in idents.iter().filter(|w| w.key.kind == Kind::Workload) {
        for (k, v) in &w.labels {
            by_label
                .entry((w.key.namespace.as_str(), k.as_str(), v.as_str()))
                .or_default()
                .push(&w.labels);
        }
    }
    for id in idents {
        let Some((selector, span)) = &id.selector else {
            continue;
        };
        let Some((k0, v0)) = selector.iter().next() else {
            continue;
        };
        let matches = by_label
            .get(&(id.key.namespace.as_str(), k0.as_str(), v0.as_str()))
            .is_some_and(|cands| {
                cands
                    .iter()
                    .any(|labels| selector_matches(selector, labels))
            });
        if !matches {
            let sel = selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            out.diagnostics.push(
                Diagnostic::warning("nexus::selector-matches-nothing", &files[id.file], Some(*span), format!("{} \"{}\" selects {sel}, which matches no Workload in namespace \"{}\" in these files", id.key.kind, id.key.name, id.key.namespace))
                    .with_label("matches no Workload")
                    .with_help("check the labels in the Workload's metadata.labels, or apply the Workload from another file"),
            );
        }
    }
}

/// Objects only (no diagnostics), for callers that already know the input is valid.
pub fn objects_of(v: &Validation) -> Vec<Object> {
    v.objects.iter().map(|o| o.object.clone()).collect()
}

/// Whether a Workload with `labels` is selected by the spec of `obj` (a Service or NetworkPolicy).
pub fn selects(obj: &Object, labels: &Labels) -> bool {
    match &obj.spec {
        Spec::Service(s) => !s.selector.is_empty() && selector_matches(&s.selector, labels),
        Spec::NetworkPolicy(p) => selector_matches(&p.selector, labels),
        _ => false,
    }
}
