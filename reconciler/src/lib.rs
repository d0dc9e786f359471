//! nexus-reconciler: the control-plane loops (deterministic scheduler, per-kind controllers as pure
//! `plan(desired, observed) -> actions`) and the node agent (runtime drivers, probes, status).

pub mod controller;
pub mod model;
pub mod scheduler;
pub mod spec;
pub mod status;
