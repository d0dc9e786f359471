//! nexus-tests: end-to-end scenarios that run real `nexus` processes (clusters on loopback,
//! network namespaces). Shared helpers live here; the scenarios are in `tests/`.
