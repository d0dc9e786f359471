//! Validating one object that arrives as JSON, not as a file: a replica checking an object a
//! client submitted, or one a proposed batch carries. It runs exactly the checks the manifest
//! pipeline runs on each document (map, `apiVersion`, `kind`, the kind's JSON Schema, the
//! semantic checks) and reports every problem at its field path, since there are no bytes to
//! point at. Pure and deterministic: every replica reaches the same verdict on the same object.

use std::fmt;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::kinds::{Kind, Object, ObjectKey};
use crate::path::Path;
use crate::validate::{document_findings, header_findings};

/// One problem with an object, at a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The same stable code the manifest diagnostics use (`nexus::invalid-quantity`).
    pub code: &'static str,
    /// Where in the object: `spec.resources.cpu`, `spec.ports[0].port`, or the root.
    pub path: Path,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    /// `path: message`, without repeating the path when the message starts with it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.to_string();
        if self.message.starts_with(&path) {
            f.write_str(&self.message)
        } else {
            write!(f, "{path}: {}", self.message)
        }
    }
}

/// Checks an object given as JSON with the manifest validator. Returns the typed object, or
/// every problem found (in the order the checks found them).
pub fn validate_value(value: &Json) -> Result<Object, Vec<Problem>> {
    let (header, kind) = header_findings(value);
    let findings = match kind {
        Some(kind) if header.is_empty() => document_findings(kind, value),
        _ => header,
    };
    if !findings.is_empty() {
        return Err(findings
            .into_iter()
            .map(|f| Problem {
                code: f.code,
                path: f.path,
                message: f.message,
                help: f.help,
            })
            .collect());
    }
    // The checks passed, so this is expected to succeed; report it as a problem if not.
    Object::deserialize(value).map_err(|e| {
        vec![Problem {
            code: "nexus::invalid-value",
            path: Path::root(),
            message: format!("not a valid object: {e}"),
            help: Some("check the field types against `nexus schema`".into()),
        }]
    })
}

/// The identity an object claims, read leniently so an invalid object can still be named in an
/// error: a known `kind`, a string `metadata.name`, and `metadata.namespace` (default
/// "default").
pub fn claimed_key(value: &Json) -> Option<ObjectKey> {
    let kind = value.get("kind").and_then(Json::as_str)?;
    let kind = Kind::ALL.iter().find(|k| k.as_str() == kind).copied()?;
    let meta = value.get("metadata")?;
    let name = meta.get("name").and_then(Json::as_str)?;
    let namespace = match meta.get("namespace") {
        None => "default",
        Some(ns) => ns.as_str()?,
    };
    Some(ObjectKey::new(kind, namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;
    use crate::validate::validate_sources;
    use crate::{canonical_value, canonicalize};
    use serde_json::json;

    fn problems(v: Json) -> Vec<String> {
        validate_value(&v)
            .expect_err("must be invalid")
            .iter()
            .map(|p| format!("{} {p}", p.code))
            .collect()
    }

    fn workload(spec: Json) -> Json {
        json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "web"}, "spec": spec})
    }

    #[test]
    fn semantic_and_schema_problems_are_reported_with_their_paths() {
        let p = problems(workload(json!({
            "command": ["x"],
            "resources": {"cpu": "12X", "memory": "0"},
            "ports": [{"port": 0}, {"port": 70000}],
        })));
        assert_eq!(
            p,
            [
                "nexus::out-of-range spec.ports[0].port must be between 1 and 65535, found 0",
                "nexus::out-of-range spec.ports[1].port must be between 1 and 65535, found 70000",
                "nexus::invalid-quantity spec.resources.cpu: invalid CPU quantity \"12X\": unknown suffix \"X\" in \"12X\"",
                "nexus::out-of-range spec.resources.memory must be greater than zero, found \"0\"",
            ]
        );
        let p = problems(json!({
            "apiVersion": "nexus/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "labels": {"-bad": "x"}},
            "spec": {"selector": {"app": "web"}, "ingress": [{"from": [{"selector": {"app": "a"}, "cidr": "10.0.0.0/8"}, {"cidr": "10.0.0.0/33"}]}]},
        }));
        assert_eq!(
            p,
            [
                "nexus::invalid-label metadata.labels.-bad: invalid label key \"-bad\"",
                "nexus::invalid-peer spec.ingress[0].from[0]: a policy peer needs exactly one of selector or cidr; found both",
                "nexus::invalid-cidr spec.ingress[0].from[1].cidr: invalid CIDR \"10.0.0.0/33\"",
            ]
        );
    }

    #[test]
    fn header_problems_stop_before_the_schema() {
        assert_eq!(
            problems(json!(["a"])),
            ["nexus::not-a-manifest (root): a manifest must be a map, found a list"]
        );
        assert_eq!(
            problems(
                json!({"apiVersion": "nexus/v2", "kind": "Deployment", "metadata": {"name": "a"}})
            ),
            [
                "nexus::unknown-api-version apiVersion: unknown apiVersion \"nexus/v2\"",
                "nexus::unknown-kind kind: unknown kind \"Deployment\"",
            ]
        );
        let p = validate_value(&json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "a"}, "spec": {"command": ["x"], "replicass": 2}})).unwrap_err();
        assert_eq!(p[0].path.to_string(), "spec.replicass");
        assert_eq!(p[0].help.as_deref(), Some("did you mean \"replicas\"?"));
    }

    #[test]
    fn every_valid_example_and_its_canonical_form_pass() {
        let inline = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a, labels: {app: a}}\nspec:\n  command: [x]\n  resources: {cpu: 0.5, memory: 1Gi}\n  ports: [{name: http, port: 8080}]\n  health: {http: {path: /, port: 8080}}\n---\napiVersion: nexus/v1\nkind: Service\nmetadata: {name: a}\nspec: {selector: {app: a}, ports: [{port: 80, targetPort: 8080}]}\n---\napiVersion: nexus/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {selector: {app: a}, ingress: [{from: [{cidr: 10.0.0.0/8}]}], egress: [{to: [{selector: {app: b}}]}]}\n---\napiVersion: nexus/v1\nkind: GitSource\nmetadata: {name: a}\nspec: {url: /srv/git/a.git, interval: 90s}\n";
        let files: Vec<SourceFile> = [
            ("inline.yaml", inline),
            (
                "api.yaml",
                include_str!("../../manifests/examples/api.yaml"),
            ),
            ("db.yaml", include_str!("../../manifests/examples/db.yaml")),
            (
                "gitsource.yaml",
                include_str!("../../manifests/examples/gitsource.yaml"),
            ),
            (
                "network-policy.yaml",
                include_str!("../../manifests/examples/network-policy.yaml"),
            ),
            (
                "web.yaml",
                include_str!("../../manifests/examples/web.yaml"),
            ),
        ]
        .into_iter()
        .map(|(name, text)| SourceFile::from_text(name, text))
        .collect();
        let v = validate_sources(&files);
        assert!(!v.has_errors(), "{:?}", v.diagnostics);
        assert!(v.objects.len() >= 9, "{}", v.objects.len());
        for o in &v.objects {
            let canonical = canonical_value(&o.object);
            let back = validate_value(&canonical).unwrap_or_else(|p| panic!("{p:?}"));
            assert_eq!(back, canonicalize(&o.object), "{canonical}");
        }
    }

    #[test]
    fn claimed_keys_name_invalid_objects() {
        assert_eq!(
            claimed_key(&workload(json!({"replicas": "x"}))),
            Some(ObjectKey::new(Kind::Workload, "default", "web"))
        );
        assert_eq!(
            claimed_key(&json!({"kind": "Pod", "metadata": {"name": "a"}})),
            None
        );
        assert_eq!(claimed_key(&json!(3)), None);
    }
}
