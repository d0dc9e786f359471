//! nexus-ebpf: C eBPF programs (`bpf/*.bpf.c`), their aya loader, and the pure policy compiler
//! that turns NetworkPolicy objects and endpoints into map entries (docs/network-policy.md).

pub mod compile;

pub use compile::{
    CompileOptions, CompiledPolicy, Direction, Isolation, PolicyObject, Prefix, RuleId, RuleKey,
    RuleOrigin, SetEntry, SetId, WorkloadEndpoints, WorkloadId, compile,
};
