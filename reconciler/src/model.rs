//! Identities shared by the scheduler, the controllers and the runtime: workload keys, replica and
//! instance ids, the template hash that decides when a rolling update is needed, and resource
//! footprints.

use std::fmt;

use nexus_schemas::quantity::{Bytes, Millicores};
use nexus_schemas::{
    ContentHash, Kind, Metadata, Object, ObjectKey, Protocol, RollingUpdate, Spec, WorkloadSpec,
    content_hash,
};
use serde::{Deserialize, Serialize};

/// A workload's identity: namespace and name (the kind is always `Workload`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        WorkloadKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl From<&ObjectKey> for WorkloadKey {
    fn from(k: &ObjectKey) -> Self {
        WorkloadKey::new(k.namespace.clone(), k.name.clone())
    }
}

impl From<&WorkloadKey> for ObjectKey {
    fn from(k: &WorkloadKey) -> Self {
        ObjectKey::new(Kind::Workload, k.namespace.clone(), k.name.clone())
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One replica slot of a workload: `index` runs from 0 to `replicas - 1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId {
    pub workload: WorkloadKey,
    pub index: u32,
}

impl ReplicaId {
    /// Builds an id.
    pub fn new(workload: WorkloadKey, index: u32) -> Self {
        ReplicaId { workload, index }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.workload, self.index)
    }
}

/// A replica slot running one version of the workload's template. During a rolling update the old
/// and the new instance of the same slot may run side by side, so the hash is part of the identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId {
    pub replica: ReplicaId,
    pub hash: ContentHash,
}

impl InstanceId {
    /// Builds an id.
    pub fn new(replica: ReplicaId, hash: ContentHash) -> Self {
        InstanceId { replica, hash }
    }

    /// The first 8 hex digits of the hash.
    pub fn hash8(&self) -> String {
        let mut s = self.hash.to_hex();
        s.truncate(8);
        s
    }

    /// The on-node name: `<namespace>.<name>-<index>-<hash8>`, used for cgroup and state
    /// directories. Namespaces and names are DNS labels, so the '.' and the last two '-' separate
    /// the parts unambiguously.
    pub fn dir_name(&self) -> String {
        format!(
            "{}.{}-{}-{}",
            self.replica.workload.namespace,
            self.replica.workload.name,
            self.replica.index,
            self.hash8()
        )
    }

    /// The host name given to the replica: `<name>-<index>`, at most 63 bytes.
    pub fn hostname(&self) -> String {
        let mut h = format!("{}-{}", self.replica.workload.name, self.replica.index);
        h.truncate(63);
        h
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.replica, self.hash8())
    }
}

/// Parses a [`InstanceId::dir_name`] back into (workload, index, hash8). Returns `None` for
/// anything that is not such a name (a directory nexus did not create).
pub fn parse_dir_name(name: &str) -> Option<(WorkloadKey, u32, String)> {
    let (namespace, rest) = name.split_once('.')?;
    let (rest, hash8) = rest.rsplit_once('-')?;
    let (wl, index) = rest.rsplit_once('-')?;
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !dns(namespace)
        || !dns(wl)
        || hash8.len() != 8
        || !hash8.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let index: u32 = index.parse().ok()?;
    Some((WorkloadKey::new(namespace, wl), index, hash8.to_string()))
}

/// The hash of what a replica runs: the workload spec with `replicas` and `rollingUpdate` cleared,
/// in canonical form. Scaling a workload or changing its update limits does not restart replicas;
/// any other change (command, env, resources, probe, placement, ...) starts a rolling update.
pub fn template_hash(spec: &WorkloadSpec) -> ContentHash {
    let mut template = spec.clone();
    template.replicas = 0;
    template.rolling_update = RollingUpdate::default();
    content_hash(&template_object(template))
}

fn template_object(spec: WorkloadSpec) -> Object {
    Object {
        api_version: nexus_schemas::API_VERSION.to_string(),
        kind: Kind::Workload,
        metadata: Metadata {
            name: "template".into(),
            namespace: "template".into(),
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec: Spec::Workload(spec),
    }
}

/// [`template_hash`] of the Workload whose canonical JSON is `object` (as the ledger stores it),
/// computed on the JSON: the same hash without the typed spec, a copy of it and a second
/// canonicalization (a scheduling round does this for every changed workload). `None` when
/// `object` is not an object with a `spec` object.
pub fn template_hash_of_canonical(object: &serde_json::Value) -> Option<ContentHash> {
    use serde_json::Value;
    static SHAPE: std::sync::OnceLock<Option<(Value, Value)>> = std::sync::OnceLock::new();
    // What the template object has in place of the workload's metadata, and in the spec fields
    // the template resets (each present or absent as its serialization has it).
    let shape = SHAPE.get_or_init(|| {
        let mut spec: WorkloadSpec =
            serde_json::from_value(serde_json::json!({"command": ["x"]})).ok()?;
        spec.replicas = 0;
        spec.rolling_update = RollingUpdate::default();
        let v = nexus_schemas::canonical_value(&template_object(spec));
        Some((v.get("metadata")?.clone(), v.get("spec")?.clone()))
    });
    let (metadata, reset) = shape.as_ref()?;
    let mut template = object.clone();
    let top = template.as_object_mut()?;
    top.insert("metadata".into(), metadata.clone());
    let spec = top.get_mut("spec")?.as_object_mut()?;
    for field in ["replicas", "rollingUpdate"] {
        match reset.get(field) {
            Some(v) => {
                spec.insert(field.into(), v.clone());
            }
            None => {
                spec.remove(field);
            }
        }
    }
    let mut text = String::new();
    nexus_schemas::canonical::write_sorted(&template, &mut text);
    Some(ContentHash(*blake3::hash(text.as_bytes()).as_bytes()))
}

/// What one replica reserves on a node: CPU, memory, GPUs and host ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Footprint {
    pub cpu: Millicores,
    pub memory: Bytes,
    pub gpus: u32,
    /// Host ports (the process runtime shares the node's network).
    pub ports: Vec<(u16, Protocol)>,
}

/// Why a workload spec's resources could not be turned into a [`Footprint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FootprintError {
    #[error("invalid cpu quantity {0:?}")]
    Cpu(String),
    #[error("invalid memory quantity {0:?}")]
    Memory(String),
    #[error("invalid port {0}")]
    Port(u32),
}

impl Footprint {
    /// The footprint of one replica of `spec`.
    pub fn of(spec: &WorkloadSpec) -> Result<Footprint, FootprintError> {
        let cpu = Millicores::parse(&spec.resources.cpu.0)
            .map_err(|_| FootprintError::Cpu(spec.resources.cpu.0.clone()))?;
        let memory = Bytes::parse(&spec.resources.memory.0)
            .map_err(|_| FootprintError::Memory(spec.resources.memory.0.clone()))?;
        let mut ports = Vec::with_capacity(spec.ports.len());
        for p in &spec.ports {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(FootprintError::Port(p.port))?;
            ports.push((port, p.protocol));
        }
        ports.sort();
        ports.dedup();
        Ok(Footprint {
            cpu,
            memory,
            gpus: spec.resources.gpu,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkloadSpec {
        serde_json::from_value(serde_json::json!({"command": ["sleep", "1"]})).unwrap()
    }

    /// The hash computed on the canonical JSON equals the typed one for workloads using every
    /// field the template keeps or resets.
    #[test]
    fn template_hash_of_canonical_json_equals_the_typed_one() {
        let manifests = [
            "spec: {command: [sleep, '1']}",
            "spec: {replicas: 5, command: [srv], rollingUpdate: {maxSurge: 2, maxUnavailable: 1}}",
            "spec:\n  replicas: 0\n  image: nginx:1.27\n  runtime: oci\n  env: {A: '1', B: x}\n  ports: [{name: http, port: 8080}, {port: 53, protocol: UDP}]\n  resources: {cpu: 1.5, memory: 1Gi, gpu: 1}\n  health: {http: {path: /healthz, port: 8080}}\n  placement: {nodeSelector: {disk: ssd}, maxPerNode: 1}\n  restartPolicy: OnFailure",
            "spec: {command: [python3, -m, http.server], health: {tcp: {port: 9000}}, resources: {cpu: 250m, memory: 128Mi}}",
        ];
        for (i, m) in manifests.iter().enumerate() {
            let text = format!(
                "apiVersion: nexus/v1\nkind: Workload\nmetadata: {{name: w{i}, namespace: ns, labels: {{app: x}}}}\n{m}\n"
            );
            let v = nexus_schemas::validate_sources(&[nexus_schemas::SourceFile::from_text(
                "w.yaml", text,
            )]);
            assert!(!v.has_errors(), "{m}: {:?}", v.diagnostics);
            let obj = &v.objects[0].object;
            let Spec::Workload(spec) = &obj.spec else {
                panic!("not a workload")
            };
            let canonical = nexus_schemas::canonical_value(obj);
            assert_eq!(
                template_hash_of_canonical(&canonical),
                Some(template_hash(spec)),
                "{m}"
            );
        }
        assert_eq!(template_hash_of_canonical(&serde_json::json!([1])), None);
    }

    #[test]
    fn dir_name_round_trips() {
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("prod", "api-server"), 12),
            template_hash(&spec()),
        );
        let name = id.dir_name();
        let (wl, index, hash8) = parse_dir_name(&name).unwrap();
        assert_eq!(wl, id.replica.workload);
        assert_eq!(index, 12);
        assert_eq!(hash8, id.hash8());
        for bad in [
            "",
            "x",
            "a.b-c-d",
            "a.b-1-zzzzzzzz",
            "A.b-1-0123abcd",
            "a.-1-0123abcd",
            "a.b-x-0123abcd",
            "a.b-1-0123abc",
        ] {
            assert_eq!(parse_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn template_hash_ignores_scale_and_update_limits() {
        let a = spec();
        let mut b = a.clone();
        b.replicas = 7;
        b.rolling_update.max_surge = 3;
        assert_eq!(template_hash(&a), template_hash(&b));
        let mut c = a.clone();
        c.env.insert("X".into(), "1".into());
        assert_ne!(template_hash(&a), template_hash(&c));
        let mut d = a.clone();
        d.resources.cpu = nexus_schemas::quantity::RawQuantity("0.1".into());
        assert_eq!(template_hash(&a), template_hash(&d), "canonical quantities");
    }

    #[test]
    fn footprint_parses_or_reports() {
        let mut s = spec();
        s.resources.cpu = nexus_schemas::quantity::RawQuantity("1.5".into());
        s.resources.memory = nexus_schemas::quantity::RawQuantity("1Gi".into());
        let f = Footprint::of(&s).unwrap();
        assert_eq!((f.cpu, f.memory), (Millicores(1500), Bytes(1 << 30)));
        s.resources.cpu = nexus_schemas::quantity::RawQuantity("lots".into());
        assert_eq!(Footprint::of(&s), Err(FootprintError::Cpu("lots".into())));
    }
}
