//! nexus-ebpf: C eBPF programs (`bpf/*.bpf.c`), their aya loader, and the pure policy compiler
//! that turns NetworkPolicy objects and endpoints into map entries.
