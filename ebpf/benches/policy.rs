//! `cargo bench -p nexus-ebpf`: policy change -> enforced latency, incremental apply cost, and
//! TCP throughput with/without the programs (root; skipped with a reason otherwise).

fn main() {
    if let Some(reason) = nexus_ebpf::testbed::skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let samples = std::env::var("NEXUS_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let opts = nexus_ebpf::bench::BenchOptions {
        probe_bin: env!("CARGO_BIN_EXE_nx-probe").into(),
        samples,
        seconds: 2,
        rounds: 4,
    };
    match nexus_ebpf::bench::run(&opts) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
