//! Deterministic simulation (filled in below).
