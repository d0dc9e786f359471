//! Canonical form (defaults applied, quantities and durations in one spelling, keys sorted) and the
//! blake3 content hash of an object. Two manifests that mean the same thing hash the same.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::{Object, PolicyType, Spec};
use crate::quantity::{Bytes, Millicores, RawQuantity, canonical_duration, parse_duration_ms};

/// blake3 hash of an object's canonical JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Returns the object with every default made explicit and every quantity and duration in its
/// canonical spelling. Values that do not parse are left as written (validation reports them).
pub fn canonicalize(obj: &Object) -> Object {
    let mut o = obj.clone();
    match &mut o.spec {
        Spec::Workload(w) => {
            if let Ok(m) = Millicores::parse(&w.resources.cpu.0) {
                w.resources.cpu = RawQuantity(m.canonical());
            }
            if let Ok(b) = Bytes::parse(&w.resources.memory.0) {
                w.resources.memory = RawQuantity(b.canonical());
            }
        }
        Spec::NetworkPolicy(p) => {
            if p.policy_types.is_empty() {
                p.policy_types.push(PolicyType::Ingress);
                if !p.egress.is_empty() {
                    p.policy_types.push(PolicyType::Egress);
                }
            }
            p.policy_types.sort();
            p.policy_types.dedup();
        }
        Spec::GitSource(g) => {
            if let Ok(ms) = parse_duration_ms(&g.interval) {
                g.interval = canonical_duration(ms);
            }
        }
        Spec::Service(_) => {}
    }
    o
}

/// The canonical object as JSON.
pub fn canonical_value(obj: &Object) -> Value {
    // Serializing our own types cannot fail: every map key is a string.
    serde_json::to_value(canonicalize(obj)).unwrap_or(Value::Null)
}

/// Canonical JSON text: compact, keys sorted at every level.
pub fn canonical_json(obj: &Object) -> String {
    let mut out = String::new();
    write_sorted(&canonical_value(obj), &mut out);
    out
}

/// Writes `v` as compact JSON with object keys sorted.
pub fn write_sorted(v: &Value, out: &mut String) {
    if keys_sorted(v) {
        // serde_json's compact form is exactly this when every object already lists its keys
        // in order (its maps are sorted unless its `preserve_order` feature is on): one pass,
        // no key copies.
        if let Ok(text) = serde_json::to_string(v) {
            out.push_str(&text);
            return;
        }
    }
    write_sorting(v, out);
}

/// Whether every object in `v` lists its keys in ascending order.
fn keys_sorted(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            let mut prev: Option<&String> = None;
            for (k, item) in m {
                if prev.is_some_and(|p| p >= k) || !keys_sorted(item) {
                    return false;
                }
                prev = Some(k);
            }
            true
        }
        Value::Array(a) => a.iter().all(keys_sorted),
        _ => true,
    }
}

/// [`write_sorted`] for values whose objects are not in key order.
fn write_sorting(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_sorting(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorting(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// blake3 of the canonical JSON.
pub fn content_hash(obj: &Object) -> ContentHash {
    ContentHash(*blake3::hash(canonical_json(obj).as_bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::SourceFile;
    use crate::validate::validate_sources;

    fn one(text: &str) -> Object {
        let v = validate_sources(&[SourceFile::from_text("t.yaml", text)]);
        assert!(!v.has_errors(), "{:?}", v.diagnostics);
        v.objects.into_iter().next().unwrap().object
    }

    /// The fast path (serde_json's own compact output) writes exactly what sorting every
    /// object's keys writes: hashes of stored objects must never change.
    #[test]
    fn sorted_output_matches_the_sorting_writer() {
        let values = [
            serde_json::json!({"b": 1, "a": [1.5, -2, 1e300, "x"], "é": {"z": null, "\u{1}": true}}),
            serde_json::json!([{"k\"q": "tab\tline\nquote\"back\\slash", "emoji": "🦀"}, [], {}]),
            serde_json::json!("plain"),
            serde_json::json!({"nested": {"deeper": {"b": [3, 2, 1], "a": {"y": 0, "x": -0.0}}}}),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
        ];
        for v in values {
            let mut fast = String::new();
            write_sorted(&v, &mut fast);
            let mut slow = String::new();
            write_sorting(&v, &mut slow);
            assert_eq!(fast, slow);
            assert!(keys_sorted(&v), "serde_json maps iterate in key order");
        }
    }

    #[test]
    fn equivalent_manifests_hash_the_same() {
        let a = one(
            "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec:\n  command: [x]\n  resources: {cpu: 0.5, memory: 1024Mi}\n",
        );
        let b = one(
            "kind: Workload\napiVersion: nexus/v1\nspec:\n  resources: {memory: 1Gi, cpu: 500m}\n  command: [x]\n  replicas: 1\nmetadata: {namespace: default, name: a}\n",
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = one(
            "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec:\n  command: [x]\n  replicas: 2\n",
        );
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn canonical_json_sorts_keys_and_applies_defaults() {
        let a = one(
            "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n",
        );
        let j = canonical_json(&a);
        assert!(j.starts_with("{\"apiVersion\":\"nexus/v1\",\"kind\":\"Workload\",\"metadata\":{\"labels\":{},\"name\":\"a\",\"namespace\":\"default\"}"), "{j}");
        assert!(j.contains("\"replicas\":1"));
        assert!(j.contains("\"cpu\":\"100m\""));
    }
}
