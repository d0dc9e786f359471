//! JSON Schema (draft-07) for each kind and one combined schema that dispatches on `kind`, in the
//! form yaml-language-server understands; plus the compiled validators used by validation.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::kinds::{Kind, documents};

/// The `$id` prefix of the published schemas.
pub const SCHEMA_ID_BASE: &str = "https://nexus.dev/schemas/v1";

/// The JSON Schema of one kind's documents.
pub fn kind_schema(kind: Kind) -> Value {
    let generator = SchemaSettings::draft07().into_generator();
    let schema = match kind {
        Kind::Workload => generator.into_root_schema_for::<documents::WorkloadDocument>(),
        Kind::Service => generator.into_root_schema_for::<documents::ServiceDocument>(),
        Kind::NetworkPolicy => generator.into_root_schema_for::<documents::NetworkPolicyDocument>(),
        Kind::GitSource => generator.into_root_schema_for::<documents::GitSourceDocument>(),
    };
    let mut value = schema.to_value();
    strip_null(&mut value);
    if let Value::Object(m) = &mut value {
        m.insert(
            "$id".into(),
            json!(format!(
                "{SCHEMA_ID_BASE}/{}.json",
                kind.as_str().to_ascii_lowercase()
            )),
        );
    }
    value
}

/// One schema for any nexus manifest: dispatches on `kind` with draft-07 `if`/`then`, with every
/// kind's definitions inlined under `definitions`.
pub fn combined_schema() -> Value {
    let mut definitions = serde_json::Map::new();
    let mut branches = Vec::new();
    for kind in Kind::ALL {
        let mut s = kind_schema(kind);
        let Value::Object(obj) = &mut s else { continue };
        // Move this kind's definitions up, prefixed to keep names unique.
        let prefix = kind.as_str();
        let defs = obj.remove("definitions");
        obj.remove("$schema");
        obj.remove("$id");
        let mut body = Value::Object(obj.clone());
        rewrite_refs(&mut body, prefix);
        if let Some(Value::Object(defs)) = defs {
            for (name, mut def) in defs {
                rewrite_refs(&mut def, prefix);
                definitions.insert(format!("{prefix}.{name}"), def);
            }
        }
        definitions.insert(prefix.to_string(), body);
        branches.push(json!({
            "if": { "properties": { "kind": { "const": prefix } }, "required": ["kind"] },
            "then": { "$ref": format!("#/definitions/{prefix}") }
        }));
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": format!("{SCHEMA_ID_BASE}/all.json"),
        "title": "nexus manifest",
        "description": "Any nexus/v1 manifest; the `kind` field selects the schema.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": { "enum": ["nexus/v1"], "description": "API version; must be \"nexus/v1\"." },
            "kind": { "enum": Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "description": "The object kind." }
        },
        "allOf": branches,
        "definitions": definitions,
    })
}

fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/definitions/")
            {
                *r = format!("#/definitions/{prefix}.{name}");
            }
            for (_, child) in m.iter_mut() {
                rewrite_refs(child, prefix);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, prefix)),
        _ => {}
    }
}

/// Removes the `null` alternatives schemars adds for `Option` fields: an absent field is how a
/// manifest says "unset", and an explicit `null` is rejected with a type error.
fn strip_null(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    m.insert("type".into(), only);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = m.get(key) {
                    let non_null: Vec<Value> = alts
                        .iter()
                        .filter(|a| a.get("type") != Some(&json!("null")))
                        .cloned()
                        .collect();
                    if non_null.len() == 1 && non_null.len() != alts.len() {
                        m.remove(key);
                        m.insert("allOf".into(), Value::Array(non_null));
                    }
                }
            }
            for (_, child) in m.iter_mut() {
                strip_null(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// A compiled kind schema and the raw schema it came from.
pub(crate) struct Compiled {
    pub schema: Value,
    pub validator: jsonschema::Validator,
}

/// The compiled validator for `kind`, built once per process.
pub(crate) fn compiled(kind: Kind) -> &'static Compiled {
    static CACHE: OnceLock<Vec<Compiled>> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|k| {
                let schema = kind_schema(*k);
                let validator =
                    jsonschema::draft7::new(&schema).expect("generated schemas are valid draft-07");
                Compiled { schema, validator }
            })
            .collect()
    });
    let idx = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    &all[idx]
}

/// Follows a path of property names and indexes through `schema` (resolving local `$ref`s and
/// `allOf` wrappers) and returns the sub-schema that describes that location.
pub(crate) fn subschema_at<'a>(root: &'a Value, path: &[crate::path::Seg]) -> Option<&'a Value> {
    let mut cur = resolve(root, root)?;
    for seg in path {
        cur = match seg {
            crate::path::Seg::Key(k) => {
                if let Some(p) = cur.get("properties").and_then(|p| p.get(k.as_str())) {
                    resolve(root, p)?
                } else if let Some(ap) = cur.get("additionalProperties").filter(|a| a.is_object()) {
                    resolve(root, ap)?
                } else {
                    return None;
                }
            }
            crate::path::Seg::Index(_) => resolve(root, cur.get("items")?)?,
        };
    }
    Some(cur)
}

fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> Option<&'a Value> {
    for _ in 0..16 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/definitions/")?;
            s = root.get("definitions")?.get(name)?;
        } else if let Some(Value::Array(all)) = s.get("allOf") {
            if all.len() == 1 && s.get("properties").is_none() {
                s = &all[0];
            } else {
                return Some(s);
            }
        } else {
            return Some(s);
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_schemas_are_draft07_and_closed() {
        for kind in Kind::ALL {
            let s = kind_schema(kind);
            assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
            assert_eq!(s["additionalProperties"], false, "{kind}");
            assert!(s["properties"]["metadata"].is_object());
            assert!(
                !s.to_string().contains("\"null\""),
                "{kind} still allows null"
            );
            jsonschema::draft7::new(&s).unwrap();
        }
    }

    #[test]
    fn combined_schema_dispatches_on_kind() {
        let s = combined_schema();
        let v = jsonschema::draft7::new(&s).unwrap();
        let good = json!({"apiVersion": "nexus/v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
        assert!(v.is_valid(&good));
        let bad = json!({"apiVersion": "nexus/v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"selector": {}, "ports": [{"port": 0}]}});
        assert!(!v.is_valid(&bad));
        let wrong_kind_fields = json!({"apiVersion": "nexus/v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"replicas": 3}});
        assert!(!v.is_valid(&wrong_kind_fields));
    }

    #[test]
    fn every_field_has_a_description() {
        fn walk(v: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(Value::Object(props)) = v.get("properties") {
                for (k, p) in props {
                    if p.get("description").is_none() {
                        missing.push(format!("{path}.{k}"));
                    }
                }
            }
            if let Value::Object(m) = v {
                for (k, c) in m {
                    walk(c, &format!("{path}/{k}"), missing);
                }
            }
        }
        let mut missing = Vec::new();
        for kind in Kind::ALL {
            walk(&kind_schema(kind), kind.as_str(), &mut missing);
        }
        assert!(
            missing.is_empty(),
            "fields without doc comments: {missing:?}"
        );
    }
}

/// A Markdown field reference for every kind, generated from the schemas (docs/manifests.md).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Manifest reference (`apiVersion: nexus/v1`)\n\nGenerated from the JSON Schemas by `cargo test -p nexus-schemas` (see `schemas/src/kinds.rs`).\nEvery object has `apiVersion`, `kind`, `metadata` and `spec`. Quantities are Kubernetes-style\nstrings or numbers: CPU `500m`, `1.5`, `2`; memory `128Mi`, `1Gi`, `500M`.\n",
    );
    for kind in Kind::ALL {
        let schema = kind_schema(kind);
        out.push_str(&format!("\n## {}\n\n", kind.as_str()));
        if let Some(d) = schema.get("description").and_then(Value::as_str) {
            out.push_str(d);
            out.push_str("\n\n");
        }
        out.push_str("| field | type | description |\n|---|---|---|\n");
        let mut rows = Vec::new();
        fields(&schema, &schema, "", &mut rows, 0);
        for (path, ty, desc) in rows {
            out.push_str(&format!(
                "| `{path}` | {ty} | {} |\n",
                desc.replace('|', "\\|").replace('\n', " ")
            ));
        }
    }
    out
}

fn fields(
    root: &Value,
    schema: &Value,
    prefix: &str,
    rows: &mut Vec<(String, String, String)>,
    depth: usize,
) {
    let Some(s) = resolve(root, schema) else {
        return;
    };
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, p) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let desc = p
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some(target) = resolve(root, p) else {
            continue;
        };
        let ty = type_name(root, target);
        let req = if required.contains(&name.as_str()) {
            " (required)"
        } else {
            ""
        };
        rows.push((path.clone(), format!("{ty}{req}"), desc));
        if depth < 6 {
            if target.get("properties").is_some() {
                fields(root, target, &path, rows, depth + 1);
            } else if let Some(items) = target.get("items") {
                fields(root, items, &format!("{path}[]"), rows, depth + 1);
            }
        }
    }
}

fn type_name(root: &Value, s: &Value) -> String {
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|x| format!("`{x}`"))
                    .unwrap_or_else(|| v.to_string())
            })
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = s
                .get("items")
                .and_then(|i| resolve(root, i))
                .map(|i| type_name(root, i))
                .unwrap_or_default();
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" && s.get("properties").is_none() => {
            "map of string".into()
        }
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "object".into(),
    }
}

#[cfg(test)]
mod reference_tests {
    #[test]
    fn docs_manifest_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/manifests.md");
        expect_test::expect_file![path].assert_eq(&super::reference_markdown());
    }
}
