//! The manifest kinds of `apiVersion: nexus/v1`. Every field's doc comment becomes its JSON Schema
//! description, so editors show it on hover.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::RawQuantity;

/// The only API version this release understands.
pub const API_VERSION: &str = "nexus/v1";

/// Label set used by selectors and metadata.
pub type Labels = BTreeMap<String, String>;

/// The kinds of object nexus manages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Kind {
    Workload,
    Service,
    NetworkPolicy,
    GitSource,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 4] = [
        Kind::Workload,
        Kind::Service,
        Kind::NetworkPolicy,
        Kind::GitSource,
    ];

    /// The name as written in manifests (`Workload`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workload => "Workload",
            Kind::Service => "Service",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::GitSource => "GitSource",
        }
    }

    /// Parses a kind from manifest spelling or a CLI alias (`workloads`, `wl`, `svc`, `netpol`, ...).
    pub fn parse(text: &str) -> Option<Kind> {
        match text.to_ascii_lowercase().as_str() {
            "workload" | "workloads" | "wl" => Some(Kind::Workload),
            "service" | "services" | "svc" => Some(Kind::Service),
            "networkpolicy" | "networkpolicies" | "netpol" | "np" => Some(Kind::NetworkPolicy),
            "gitsource" | "gitsources" | "gs" => Some(Kind::GitSource),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity and labels shared by every object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Object name: a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters).
    pub name: String,
    /// Namespace the object lives in (a DNS-1123 label). Defaults to "default".
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels: key/value pairs that selectors match on.
    #[serde(default)]
    pub labels: Labels,
    /// Annotations: free-form key/value notes that nexus does not interpret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

/// How a workload's replicas are run on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Process,
    Oci,
}

/// What happens when a replica exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Transport protocol of a port.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A port a workload listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadPort {
    /// Port name (at most 15 characters, lower-case letters, digits and '-'), used by Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number the process listens on (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// Protocol: TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Compute resources reserved for, and enforced on, each replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPU per replica, e.g. "500m" or 2. Reserved by the scheduler and enforced as a CFS quota. Default "100m".
    #[serde(default = "default_cpu")]
    pub cpu: RawQuantity,
    /// Memory per replica, e.g. "128Mi" or "1Gi". Reserved by the scheduler and enforced as a hard limit. Default "128Mi".
    #[serde(default = "default_memory")]
    pub memory: RawQuantity,
    /// Whole GPUs per replica. Default 0.
    #[serde(default)]
    #[schemars(range(max = 64))]
    pub gpu: u32,
}

fn default_cpu() -> RawQuantity {
    RawQuantity("100m".into())
}
fn default_memory() -> RawQuantity {
    RawQuantity("128Mi".into())
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            gpu: 0,
        }
    }
}

/// An HTTP GET health check; any 2xx or 3xx status is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// Request path, e.g. "/healthz". Default "/".
    #[serde(default = "default_path")]
    pub path: String,
    /// Port to connect to (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
}

fn default_path() -> String {
    "/".into()
}

/// A TCP health check: healthy when a connection opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    /// Port to connect to (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
}

/// A command health check: healthy when it exits 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    /// The command and its arguments, run inside the replica's namespaces.
    pub command: Vec<String>,
}

/// A health probe; exactly one of `http`, `tcp` or `exec` must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthProbe {
    /// Check with an HTTP GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Check by opening a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Check by running a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// Seconds to wait after start before the first probe. Default 0.
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub initial_delay_seconds: u32,
    /// Seconds between probes (1-3600). Default 5.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: u32,
    /// Seconds before one probe attempt counts as failed (1-3600). Default 2.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
    /// Consecutive failures before the replica is restarted (1-100). Default 3.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

fn default_period() -> u32 {
    5
}
fn default_probe_timeout() -> u32 {
    2
}
fn default_failure_threshold() -> u32 {
    3
}

/// Where replicas may be placed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    /// Only nodes whose labels include all of these are eligible.
    #[serde(default)]
    pub node_selector: Labels,
    /// At most this many replicas of the workload per node (0 = no limit). Default 0.
    #[serde(default)]
    pub max_per_node: u32,
}

/// How a changed workload replaces its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// Replicas that may be unavailable during an update. Default 0.
    #[serde(default)]
    pub max_unavailable: u32,
    /// Extra replicas that may run above `replicas` during an update. Default 1.
    #[serde(default = "default_one")]
    pub max_surge: u32,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_unavailable: 0,
            max_surge: 1,
        }
    }
}

fn default_one() -> u32 {
    1
}
fn default_grace() -> u32 {
    10
}

/// Desired state of a Workload: a replicated process or container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Number of replicas to run (0 stops them all). Default 1.
    #[serde(default = "default_one")]
    #[schemars(range(max = 100000))]
    pub replicas: u32,
    /// How replicas run: "process" (default) runs `command` on the node; "oci" runs `image` with runc.
    #[serde(default)]
    pub runtime: Runtime,
    /// Program and arguments to run (required for the process runtime).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Container image (required for the oci runtime), e.g. "registry.local/api:1.4".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Working directory of the process. Default: the replica's own scratch directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment variables given to each replica.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Ports the replicas listen on.
    #[serde(default)]
    pub ports: Vec<WorkloadPort>,
    /// CPU, memory and GPUs per replica.
    #[serde(default)]
    pub resources: Resources,
    /// Health probe; an unhealthy replica is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthProbe>,
    /// Always (default), OnFailure or Never.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Node selection and spreading.
    #[serde(default)]
    pub placement: Placement,
    /// Rolling-update limits.
    #[serde(default)]
    pub rolling_update: RollingUpdate,
    /// Seconds between SIGTERM and SIGKILL when a replica stops (0-3600). Default 10.
    #[serde(default = "default_grace")]
    #[schemars(range(max = 3600))]
    pub termination_grace_period_seconds: u32,
}

/// A port a Service exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port name (at most 15 characters, lower-case letters, digits and '-').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port clients connect to (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// Port on the selected replicas (1-65535). Default: the same as `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u32>,
    /// Protocol: TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// How a Service spreads connections over its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    Random,
}

/// Desired state of a Service: a stable name for the replicas its selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Workloads whose labels include all of these back the service.
    pub selector: Labels,
    /// Ports the service exposes.
    pub ports: Vec<ServicePort>,
    /// roundRobin (default) or random.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
}

/// The direction a network policy isolates.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// One side of a connection: workloads chosen by labels, or an address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPeer {
    /// Workloads whose labels include all of these (exactly one of `selector` and `cidr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    /// Namespace of the selected workloads. Default: the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// An IPv4 or IPv6 range such as "10.0.0.0/8" (exactly one of `selector` and `cidr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// A port a policy rule allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPort {
    /// Port number (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// Protocol: TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// An ingress rule: traffic from any of `from` to any of `ports` is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRule {
    /// Allowed sources; empty means any source.
    #[serde(default)]
    pub from: Vec<PolicyPeer>,
    /// Allowed destination ports on the selected workloads; empty means every port.
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

/// An egress rule: traffic to any of `to` on any of `ports` is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// Allowed destinations; empty means any destination.
    #[serde(default)]
    pub to: Vec<PolicyPeer>,
    /// Allowed destination ports; empty means every port.
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

/// Desired state of a NetworkPolicy, with Kubernetes semantics: a workload selected by any policy
/// is isolated in that policy's directions and may only do what some policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Workloads (in this namespace) the policy applies to; empty selects every workload.
    pub selector: Labels,
    /// Directions this policy isolates. Default: Ingress, plus Egress when `egress` rules are given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<PolicyType>,
    /// Allowed incoming traffic. No rules with Ingress isolation means deny all ingress.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
    /// Allowed outgoing traffic. No rules with Egress isolation means deny all egress.
    #[serde(default)]
    pub egress: Vec<EgressRule>,
}

/// Commit signature verification for a git source.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitVerify {
    /// Allowed SSH signers, one per entry in `allowed_signers` format ("email ssh-ed25519 AAAA...").
    #[serde(default)]
    pub ssh: Vec<String>,
}

/// Desired state of a GitSource: a branch and path whose manifests nexus keeps applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// Repository URL: a local path, file://, https:// or ssh://.
    pub url: String,
    /// Branch to follow. Default "main".
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Directory inside the repository holding the manifests. Default "." (the whole tree).
    #[serde(default = "default_git_path")]
    pub path: String,
    /// Poll interval such as "10s" or "1m". Default "10s".
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Delete objects this source created once they leave git. Default false.
    #[serde(default)]
    pub prune: bool,
    /// Revert changes made outside git to objects this source owns. Default false.
    #[serde(default)]
    pub self_heal: bool,
    /// Require signed commits from these signers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<GitVerify>,
    /// File on each replica holding the shared secret of the push webhook
    /// (`POST /hooks/git/NAMESPACE/NAME`, HMAC-SHA256). A relative path is resolved against the
    /// replica's data directory. Without it the source has no webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<String>,
}

fn default_branch() -> String {
    "main".into()
}
fn default_git_path() -> String {
    ".".into()
}
fn default_interval() -> String {
    "10s".into()
}

/// The spec of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Workload(WorkloadSpec),
    Service(ServiceSpec),
    NetworkPolicy(NetworkPolicySpec),
    GitSource(GitSourceSpec),
}

impl Spec {
    /// The kind this spec belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Workload(_) => Kind::Workload,
            Spec::Service(_) => Kind::Service,
            Spec::NetworkPolicy(_) => Kind::NetworkPolicy,
            Spec::GitSource(_) => Kind::GitSource,
        }
    }
}

/// A manifest object of any kind: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// Always `nexus/v1`.
    pub api_version: String,
    /// The object's kind; always matches `spec`.
    pub kind: Kind,
    /// Name, namespace and labels.
    pub metadata: Metadata,
    /// Kind-specific desired state.
    pub spec: Spec,
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Raw {
            api_version: String,
            kind: Kind,
            metadata: Metadata,
            spec: serde_json::Value,
        }
        let raw = Raw::deserialize(d)?;
        let spec = match raw.kind {
            Kind::Workload => serde_json::from_value(raw.spec).map(Spec::Workload),
            Kind::Service => serde_json::from_value(raw.spec).map(Spec::Service),
            Kind::NetworkPolicy => serde_json::from_value(raw.spec).map(Spec::NetworkPolicy),
            Kind::GitSource => serde_json::from_value(raw.spec).map(Spec::GitSource),
        }
        .map_err(D::Error::custom)?;
        Ok(Object {
            api_version: raw.api_version,
            kind: raw.kind,
            metadata: raw.metadata,
            spec,
        })
    }
}

/// Identity of an object: (kind, namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl Object {
    /// This object's identity.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(
            self.kind,
            self.metadata.namespace.clone(),
            self.metadata.name.clone(),
        )
    }

    /// The workload spec, if this is a Workload.
    pub fn as_workload(&self) -> Option<&WorkloadSpec> {
        match &self.spec {
            Spec::Workload(w) => Some(w),
            _ => None,
        }
    }
}

/// Whether every (key, value) of `selector` is in `labels`. An empty selector matches everything.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Per-kind document types: only used to generate each kind's JSON Schema.
pub(crate) mod documents {
    use super::*;

    macro_rules! document {
        ($name:ident, $spec:ty, $kind:literal, $doc:literal) => {
            #[doc = $doc]
            #[derive(Deserialize, JsonSchema)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            #[allow(dead_code)]
            pub struct $name {
                /// API version; must be "nexus/v1".
                #[schemars(extend("enum" = ["nexus/v1"]))]
                pub api_version: String,
                /// The object kind.
                #[schemars(extend("enum" = [$kind]))]
                pub kind: String,
                /// Name, namespace, labels and annotations.
                pub metadata: Metadata,
                /// Desired state.
                pub spec: $spec,
            }
        };
    }

    document!(
        WorkloadDocument,
        WorkloadSpec,
        "Workload",
        "A Workload: replicated processes or containers."
    );
    document!(
        ServiceDocument,
        ServiceSpec,
        "Service",
        "A Service: a stable name and ports for a set of workloads."
    );
    document!(
        NetworkPolicyDocument,
        NetworkPolicySpec,
        "NetworkPolicy",
        "A NetworkPolicy: which traffic selected workloads may send and receive."
    );
    document!(
        GitSourceDocument,
        GitSourceSpec,
        "GitSource",
        "A GitSource: a git branch and path nexus keeps applied."
    );
}
