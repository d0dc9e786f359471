//! Who is who: a GitSource's identity (`namespace/name`), the owner string the ledger records on
//! every object (`apply`, `gitops:<ns>/<name>`, `controller:<name>`), and a source's settings
//! (URL, branch, path, interval, prune, selfHeal, signers) taken from its `GitSource` object.

use std::fmt;
use std::time::Duration;

use nexus_schemas::quantity::parse_duration_ms;
use nexus_schemas::{GitSourceSpec, Object, Spec};
use serde::{Deserialize, Serialize};

/// Poll interval used when a source's interval does not parse (validation rejects that earlier).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Identity of a GitSource object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceId {
    pub namespace: String,
    pub name: String,
}

impl SourceId {
    /// Builds an id.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        SourceId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The owner the ledger records on objects this source creates.
    pub fn owner(&self) -> Owner {
        Owner::GitSource(self.clone())
    }
}

impl fmt::Display for SourceId {
    /// `namespace/name`, as the ledger's `Source::Gitops { git_source }` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Who owns a live object: set when the object is created and kept across updates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// Created by `nexus apply`.
    Apply,
    /// Created by a git source.
    GitSource(SourceId),
    /// Created by a control-plane loop.
    Controller(String),
    /// Anything else the ledger may record, kept verbatim.
    Other(String),
}

impl Owner {
    /// Parses the ledger's owner string (`apply`, `gitops:ns/name`, `controller:name`).
    pub fn parse(text: &str) -> Owner {
        if text == "apply" {
            return Owner::Apply;
        }
        if let Some(rest) = text.strip_prefix("gitops:")
            && let Some((ns, name)) = rest.split_once('/')
            && !ns.is_empty()
            && !name.is_empty()
        {
            return Owner::GitSource(SourceId::new(ns, name));
        }
        if let Some(name) = text.strip_prefix("controller:") {
            return Owner::Controller(name.to_string());
        }
        Owner::Other(text.to_string())
    }
}

impl fmt::Display for Owner {
    /// The ledger's spelling; [`Owner::parse`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Apply => f.write_str("apply"),
            Owner::GitSource(id) => write!(f, "gitops:{id}"),
            Owner::Controller(n) => write!(f, "controller:{n}"),
            Owner::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A git source: its identity and spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub id: SourceId,
    pub spec: GitSourceSpec,
}

impl SourceConfig {
    /// Builds a config.
    pub fn new(id: SourceId, spec: GitSourceSpec) -> Self {
        SourceConfig { id, spec }
    }

    /// The config of a `GitSource` object; `None` for other kinds.
    pub fn from_object(obj: &Object) -> Option<Self> {
        match &obj.spec {
            Spec::GitSource(g) => Some(SourceConfig {
                id: SourceId::new(&obj.metadata.namespace, &obj.metadata.name),
                spec: g.clone(),
            }),
            _ => None,
        }
    }

    /// The poll interval (default 10 s; at least 1 s).
    pub fn interval(&self) -> Duration {
        parse_duration_ms(&self.spec.interval)
            .map(|ms| Duration::from_millis(ms.max(1000)))
            .unwrap_or(DEFAULT_INTERVAL)
    }

    /// The manifests directory inside the repository, normalized: no leading `./` or `/`, no
    /// trailing `/`, empty for the whole tree.
    pub fn path(&self) -> String {
        normalize_path(&self.spec.path)
    }

    /// SSH allowed-signers entries, if the source requires signed commits.
    pub fn ssh_signers(&self) -> Option<&[String]> {
        self.spec
            .verify
            .as_ref()
            .map(|v| v.ssh.as_slice())
            .filter(|s| !s.is_empty())
    }
}

/// Normalizes a path inside a repository: `"."`, `"./"`, `""` and `"/"` are the root (`""`);
/// `"./deploy/prod/"` is `"deploy/prod"`; empty and `.` segments are dropped.
pub fn normalize_path(path: &str) -> String {
    path.split('/')
        .filter(|seg| !seg.is_empty() && *seg != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_the_ledger_spelling() {
        for s in [
            "apply",
            "gitops:default/apps",
            "controller:scheduler",
            "weird",
        ] {
            assert_eq!(Owner::parse(s).to_string(), s);
        }
        assert_eq!(
            Owner::parse("gitops:ops/platform"),
            Owner::GitSource(SourceId::new("ops", "platform"))
        );
        assert_eq!(
            Owner::parse("gitops:nodash"),
            Owner::Other("gitops:nodash".into())
        );
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize_path("."), "");
        assert_eq!(normalize_path("./"), "");
        assert_eq!(normalize_path(""), "");
        assert_eq!(normalize_path("./deploy//prod/"), "deploy/prod");
        assert_eq!(normalize_path("deploy"), "deploy");
    }
}
