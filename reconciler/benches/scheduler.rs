//! Scheduler benchmark: 10,000 workloads (about 30,000 replicas) on 1,000 nodes. Prints a table of
//! wall times for a cold schedule, a steady-state pass, 10 lost nodes and a rolling update of 1,000
//! workloads. Run with `cargo bench -p nexus-reconciler --bench scheduler`.

use std::time::{Duration, Instant};

use nexus_reconciler::model::{WorkloadKey, template_hash};
use nexus_reconciler::scheduler::{
    Capacity, Input, NodeCondition, NodeInput, Schedule, WorkloadInput, schedule,
};
use nexus_schemas::quantity::{Bytes, Millicores, RawQuantity};
use nexus_schemas::{Labels, WorkloadSpec};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn cluster() -> (Vec<NodeInput>, Vec<WorkloadInput>) {
    let mut r = Lcg(42);
    let nodes = (0..1000)
        .map(|i| {
            let mut labels = Labels::new();
            labels.insert("zone".into(), ["a", "b", "c"][i % 3].into());
            if i % 10 == 0 {
                labels.insert("gpu".into(), "true".into());
            }
            NodeInput {
                name: format!("node-{i:04}"),
                capacity: Capacity {
                    cpu: Millicores(64_000),
                    memory: Bytes(256 << 30),
                    gpus: if i % 10 == 0 { 4 } else { 0 },
                },
                labels,
                condition: NodeCondition::Ready,
                host_ports: true,
            }
        })
        .collect();
    let workloads = (0..10_000)
        .map(|i| {
            let mut spec: WorkloadSpec =
                serde_json::from_value(serde_json::json!({"command": ["app"]})).unwrap();
            spec.replicas = 1 + r.next(5) as u32; // 1..=5, mean 3
            spec.resources.cpu = RawQuantity(format!("{}m", 100 + 50 * r.next(10)));
            spec.resources.memory = RawQuantity(format!("{}Mi", 128 * (1 + r.next(8))));
            if i % 10 == 0 {
                spec.placement
                    .node_selector
                    .insert("zone".into(), ["a", "b", "c"][i % 3].into());
            }
            if i % 100 == 0 {
                spec.placement
                    .node_selector
                    .insert("gpu".into(), "true".into());
                spec.resources.gpu = 1;
            }
            if i % 7 == 0 {
                spec.placement.max_per_node = 1;
            }
            let hash = template_hash(&spec);
            WorkloadInput {
                key: WorkloadKey::new(format!("ns{}", i % 20), format!("w{i:05}")),
                spec,
                generation: 1,
                hash,
            }
        })
        .collect();
    (nodes, workloads)
}

fn time(runs: u32, mut f: impl FnMut() -> Schedule) -> (Duration, Duration, Schedule) {
    let mut times = Vec::new();
    let mut last = Schedule::default();
    for _ in 0..runs {
        let t = Instant::now();
        last = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[times.len() - 1], last)
}

fn main() {
    let (mut nodes, mut workloads) = cluster();
    let replicas: u32 = workloads.iter().map(|w| w.spec.replicas).sum();
    println!(
        "scheduler benchmark: {} workloads, {replicas} replicas, {} nodes",
        workloads.len(),
        nodes.len()
    );
    println!(
        "{:<40} {:>10} {:>10} {:>8} {:>8}",
        "scenario", "median", "max", "starts", "unsched"
    );
    let row = |name: &str, (med, max, s): &(Duration, Duration, Schedule)| {
        let starts = s
            .assignments
            .iter()
            .filter(|a| a.kind == nexus_reconciler::scheduler::AssignmentKind::Start)
            .count();
        println!(
            "{name:<40} {:>8.1}ms {:>8.1}ms {starts:>8} {:>8}",
            med.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            s.unschedulable.len()
        );
    };

    let cold = time(5, || {
        schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &[],
        })
    });
    row("cold (nothing placed yet)", &cold);
    let current = cold.2.as_current(|_| true);

    let steady = time(5, || {
        schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &current,
        })
    });
    row("steady state (everything placed)", &steady);

    for n in nodes.iter_mut().take(10) {
        n.condition = NodeCondition::Lost;
    }
    let lost = time(5, || {
        schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &current,
        })
    });
    row("10 nodes lost", &lost);
    for n in nodes.iter_mut().take(10) {
        n.condition = NodeCondition::Ready;
    }

    for w in workloads.iter_mut().step_by(10) {
        w.spec.env.insert("VERSION".into(), "2".into());
        w.hash = template_hash(&w.spec);
        w.generation = 2;
    }
    let update = time(5, || {
        schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &current,
        })
    });
    row("rolling update of 1,000 workloads", &update);

    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for u in cold.2.unschedulable.iter().chain(&update.2.unschedulable) {
        *reasons.entry(u.reason.to_string()).or_default() += 1;
    }
    println!("unschedulable reasons (cold + update):");
    for (r, n) in reasons {
        println!("  {n:>5}  {r}");
    }
}
