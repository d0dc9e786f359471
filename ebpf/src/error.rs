//! The loader's typed errors. `Unsupported` is the one a node reports as
//! "network policy NOT enforced on node X: reason".

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading, attaching or updating the policy programs.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// eBPF cannot be used on this node at all (not root, no cgroup2, no BPF filesystem, the
    /// kernel refuses the programs). Policy is NOT enforced here; report `reason`.
    #[error("network policy cannot be enforced on this node: {reason}")]
    Unsupported { reason: String },
    /// Pins from another layout version exist; `PolicyLoader::uninstall` removes them.
    #[error(
        "pinned eBPF state in {dir} has layout version {found}, this build uses {expected}; uninstall it first"
    )]
    Incompatible {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The node name cannot be used as a pin directory name.
    #[error("invalid node name {0:?}: use 1-64 characters from [A-Za-z0-9._-]")]
    InvalidNode(String),
    /// A file-system or bpf(2) operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Reading or writing a map failed (for example a full map).
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching to, or detaching from, a replica's cgroup failed.
    #[error("cgroup {cgroup}: {what}: {source}")]
    Cgroup {
        cgroup: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl EbpfError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        EbpfError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| EbpfError::Map { map, source }
    }

    /// The reason to report if this error means policy cannot be enforced on the node.
    pub fn unsupported_reason(&self) -> Option<&str> {
        match self {
            EbpfError::Unsupported { reason } => Some(reason),
            _ => None,
        }
    }
}
