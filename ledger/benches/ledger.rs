//! `cargo bench -p nexus-ledger`: runs [`nexus_ledger::bench::run`] and prints the table.
//! `NEXUS_BENCH_EVENTS` overrides the size of the generated log (default 1,000,000),
//! `NEXUS_BENCH_APPLY_SECS` the time per apply level, `NEXUS_BENCH_CONCURRENCY` (e.g. `1,8,64`,
//! empty to skip) the apply levels.

fn main() {
    let mut cfg = nexus_ledger::bench::BenchConfig::default();
    if let Some(n) = std::env::var("NEXUS_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.log.events = n;
    }
    if let Some(s) = std::env::var("NEXUS_BENCH_APPLY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.apply_duration = std::time::Duration::from_secs(s);
    }
    if let Ok(list) = std::env::var("NEXUS_BENCH_CONCURRENCY") {
        cfg.concurrency = list
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
    }
    match nexus_ledger::bench::run(&cfg, &mut |step| eprintln!("== {step}")) {
        Ok(table) => print!("{table}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
