//! `cargo bench -p nexus-gitops`: the sync path on a generated repository of 5,000 manifests
//! (override with NEXUS_BENCH_MANIFESTS).

fn main() {
    let n = std::env::var("NEXUS_BENCH_MANIFESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().expect("temporary directory");
    match nexus_gitops::bench::run(n, dir.path()) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
