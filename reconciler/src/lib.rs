//! nexus-reconciler: the control-plane loops (deterministic scheduler, per-kind controllers as pure
//! `plan(desired, observed) -> actions`) and the node agent (runtime drivers, probes, status).
//!
//! - [`scheduler`]: committed state -> assignments (pure, deterministic).
//! - [`controller`]: per-node `plan(desired, observed, now) -> actions` (pure).
//! - [`runtime`]: the `Runtime` trait, the `process` driver (cgroups + namespaces) and a fake.
//! - [`agent`]: one reconcile step tying controller and runtime together; capacity detection.
//! - [`probe`]: health-probe tracking (pure) and HTTP/TCP probes.
//! - [`services`]: Service endpoints from ready replicas (pure).

pub mod agent;
pub mod controller;
pub mod model;
pub mod probe;
pub mod runtime;
pub mod scheduler;
pub mod services;
pub mod spec;
pub mod status;
