//! Simulation tests: many seeds with faults and a Byzantine replica, a replay entry point for
//! one seed, determinism, membership change, and the mutation check (no WAL replay must be
//! caught as equivocation).

use std::time::Instant;

use super::byzantine::ByzMode;
use super::{SimOptions, SimReport, run};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn add(total: &mut SimReport, r: &SimReport) {
    total.events += r.events;
    total.virtual_ms += r.virtual_ms;
    total.min_height += r.min_height;
    total.crashes += r.crashes;
    total.replayed_entries += r.replayed_entries;
    total.decided_by_sync += r.decided_by_sync;
    total.rejected_proposals += r.rejected_proposals;
    total.undecodable_messages += r.undecodable_messages;
    total.byzantine_equivocations_seen += r.byzantine_equivocations_seen;
    total.misbehaviour_heights += r.misbehaviour_heights;
    total.undone_commits += r.undone_commits;
    total.sync_records_rejected += r.sync_records_rejected;
}

/// Run seeds `start..start + count` on two threads; returns failures and summed reports.
fn run_many(count: u64, start: u64) -> (Vec<String>, SimReport) {
    let threads = 2;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut total = SimReport::default();
                let mut seed = start + t;
                while seed < start + count {
                    match run(&SimOptions::for_seed(seed)) {
                        Ok(r) => add(&mut total, &r),
                        Err(f) => failures.push(f.to_string()),
                    }
                    seed += threads;
                }
                (failures, total)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut total = SimReport::default();
    for h in handles {
        let (f, t) = h.join().expect("simulation thread panicked");
        failures.extend(f);
        add(&mut total, &t);
    }
    (failures, total)
}

#[test]
fn sim_seeds() {
    let count = env_u64("NEXUS_SIM_SEEDS").unwrap_or(300);
    let start = env_u64("NEXUS_SIM_START").unwrap_or(0);
    let t0 = Instant::now();
    let (failures, t) = run_many(count, start);
    eprintln!(
        "sim: {count} seeds (from {start}) in {:.1}s: {} events, {:.0} virtual s, {} heights \
         (min per run, summed), {} crashes ({} before a commit), {} WAL entries replayed, {} \
         heights decided by sync, {} forged sync records rejected, {} proposals rejected, {} \
         undecodable messages, {} Byzantine equivocations seen, {} heights with evidence",
        t0.elapsed().as_secs_f64(),
        t.events,
        t.virtual_ms as f64 / 1000.0,
        t.min_height,
        t.crashes,
        t.undone_commits,
        t.replayed_entries,
        t.decided_by_sync,
        t.sync_records_rejected,
        t.rejected_proposals,
        t.undecodable_messages,
        t.byzantine_equivocations_seen,
        t.misbehaviour_heights,
    );
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The faults were really exercised.
    assert!(t.crashes > 0 && t.replayed_entries > 0 && t.decided_by_sync > 0);
    assert!(t.rejected_proposals > 0 && t.undecodable_messages > 0);
    assert!(t.byzantine_equivocations_seen > 0 && t.misbehaviour_heights > 0);
    assert!(t.sync_records_rejected > 0);
}

#[test]
fn sim_replay() {
    let seed = env_u64("NEXUS_SIM_SEED").unwrap_or(1);
    let opts = SimOptions::for_seed(seed);
    eprintln!("{opts:?}");
    match run(&opts) {
        Ok(r) => eprintln!("{r:#?}"),
        Err(f) => panic!("{f}"),
    }
}

#[test]
fn sim_is_deterministic() {
    for seed in [3, 10] {
        let a = run(&SimOptions::for_seed(seed)).unwrap();
        let b = run(&SimOptions::for_seed(seed)).unwrap();
        assert_eq!(
            (a.events, a.virtual_ms, a.min_height, a.replayed_entries),
            (b.events, b.virtual_ms, b.min_height, b.replayed_entries)
        );
    }
}

#[test]
fn sim_every_byzantine_mode_without_other_faults() {
    for (i, mode) in ByzMode::ALL.into_iter().enumerate() {
        let mut o = SimOptions::for_seed(1000 + i as u64);
        o.byzantine = Some(mode);
        o.crashes = false;
        o.partitions = false;
        o.loss = 0.0;
        o.progress = 10;
        let r = run(&o).unwrap_or_else(|f| panic!("{f}"));
        assert!(r.min_height >= 10, "{mode:?}: {r:?}");
        match mode {
            ByzMode::Equivocate => assert!(r.byzantine_equivocations_seen > 0),
            ByzMode::InvalidValue => assert!(r.rejected_proposals > 0),
            ByzMode::Garbage => assert!(r.undecodable_messages > 0),
            _ => {}
        }
    }
}

#[test]
fn sim_membership_change_takes_effect_at_the_chosen_height() {
    let mut o = SimOptions::for_seed(77);
    o.byzantine = None;
    o.crashes = false;
    o.membership_change_at = Some(6);
    o.progress = 8;
    let r = run(&o).unwrap_or_else(|f| panic!("{f}"));
    assert!(r.min_height >= 8, "{r:?}");
}

#[test]
fn sim_mutation_without_wal_replay_is_caught_as_equivocation() {
    let mut caught = 0;
    for seed in 0..40 {
        let mut o = SimOptions::for_seed(seed);
        o.byzantine = None;
        o.crashes = true;
        o.replay_wal = false;
        o.liveness_ms = 10_000;
        if let Err(f) = run(&o)
            && f.violations.iter().any(|v| v.contains("equivocation"))
        {
            caught += 1;
        }
    }
    assert!(
        caught > 0,
        "disabling WAL replay went unnoticed in 40 seeds"
    );
    eprintln!("mutation: equivocation caught in {caught}/40 seeds");
}

#[test]
fn sim_mutation_without_flush_before_send_is_caught() {
    let mut o = SimOptions::for_seed(5);
    o.flush_before_publish = false;
    let f = run(&o).expect_err("sending before the WAL flush went unnoticed");
    assert!(
        f.violations
            .iter()
            .any(|v| v.contains("before it was durable")),
        "{f}"
    );
}
