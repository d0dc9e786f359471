//! nexus-ebpf: C eBPF programs (`bpf/*.bpf.c`), their aya loader, and the pure policy compiler
//! that turns NetworkPolicy objects and endpoints into map entries (docs/network-policy.md).

pub mod bench;
pub mod compile;
pub mod error;
pub mod explain;
pub mod inspect;
pub mod loader;
pub mod maps;
pub mod node;
pub mod support;
pub mod sys;
pub mod testbed;

pub use compile::{
    CompileOptions, CompiledPolicy, Direction, Isolation, PolicyObject, Prefix, RuleId, RuleKey,
    RuleOrigin, SetEntry, SetId, WorkloadEndpoints, WorkloadId, compile,
};
pub use error::EbpfError;
pub use explain::{Explanation, explain, sum_counters};
pub use inspect::{Inspector, Stats};
pub use loader::{
    ApplyStats, Attached, DEFAULT_PIN_ROOT, Hook, LinkStatus, LoaderOptions, PolicyLoader,
    ReconcileReport, Replica,
};
pub use maps::Counter;
pub use node::{NodeEnforcer, PolicyInput};
pub use support::Environment;

/// Where the embedded object came from: "clang" (built now) or "committed" (`bpf/*.bpf.o`).
pub const OBJECT_SOURCE: &str = env!("NEXUS_EBPF_OBJECT_SOURCE");
