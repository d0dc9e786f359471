//! Table tests for the scheduler: each case is a cluster, workloads and current instances, and
//! the expected assignments rendered one per line.

use super::*;
use nexus_schemas::quantity::RawQuantity;
use nexus_schemas::{WorkloadPort, WorkloadSpec};

fn h(v: u8) -> ContentHash {
    ContentHash([v; 32])
}

fn node(name: &str, cpu: &str, mem: &str) -> NodeInput {
    NodeInput {
        name: name.into(),
        capacity: Capacity {
            cpu: Millicores::parse(cpu).unwrap(),
            memory: Bytes::parse(mem).unwrap(),
            gpus: 0,
        },
        labels: Labels::new(),
        condition: NodeCondition::Ready,
        host_ports: true,
    }
}

fn labelled(mut n: NodeInput, k: &str, v: &str) -> NodeInput {
    n.labels.insert(k.into(), v.into());
    n
}

fn cond(mut n: NodeInput, c: NodeCondition) -> NodeInput {
    n.condition = c;
    n
}

fn isolated(mut n: NodeInput) -> NodeInput {
    n.host_ports = false;
    n
}

fn gpus(mut n: NodeInput, g: u32) -> NodeInput {
    n.capacity.gpus = g;
    n
}

fn wl(name: &str, replicas: u32, version: u8) -> WorkloadInput {
    let mut spec: WorkloadSpec =
        serde_json::from_value(serde_json::json!({"command": ["x"]})).unwrap();
    spec.replicas = replicas;
    spec.resources.cpu = RawQuantity("1".into());
    spec.resources.memory = RawQuantity("1Gi".into());
    WorkloadInput {
        key: WorkloadKey::new("default", name),
        spec,
        generation: u64::from(version),
        hash: h(version),
    }
}

fn with(mut w: WorkloadInput, f: impl FnOnce(&mut WorkloadSpec)) -> WorkloadInput {
    f(&mut w.spec);
    w
}

fn cur(w: &WorkloadInput, index: u32, version: u8, node: &str, ready: bool) -> CurrentInstance {
    CurrentInstance {
        id: InstanceId::new(ReplicaId::new(w.key.clone(), index), h(version)),
        node: node.into(),
        generation: u64::from(version),
        footprint: Footprint::of(&w.spec).unwrap(),
        ready,
    }
}

/// `web#0 v1 n1 start` per assignment, then `! web#2 v1: reason` per unschedulable slot.
fn render(s: &Schedule) -> String {
    let mut out = Vec::new();
    for a in &s.assignments {
        let kind = match a.kind {
            AssignmentKind::Keep => "keep",
            AssignmentKind::Start => "start",
            AssignmentKind::KeepOld => "keep-old",
        };
        out.push(format!(
            "{}#{} v{} {} {kind}",
            a.id.replica.workload.name, a.id.replica.index, a.id.hash.0[0], a.node
        ));
    }
    for u in &s.unschedulable {
        out.push(format!(
            "! {}#{} v{}: {}",
            u.id.replica.workload.name, u.id.replica.index, u.id.hash.0[0], u.reason
        ));
    }
    out.join("\n")
}

struct Case {
    name: &'static str,
    nodes: Vec<NodeInput>,
    workloads: Vec<WorkloadInput>,
    current: Vec<CurrentInstance>,
    want: &'static str,
}

fn run(c: &Case) -> Schedule {
    schedule(&Input {
        workloads: &c.workloads,
        nodes: &c.nodes,
        current: &c.current,
    })
}

fn three() -> Vec<NodeInput> {
    vec![
        node("n1", "4", "8Gi"),
        node("n2", "4", "8Gi"),
        node("n3", "4", "8Gi"),
    ]
}

#[test]
fn table() {
    let web = wl("web", 3, 1);
    let web2 = wl("web", 3, 2);
    let cases = vec![
        Case {
            name: "spread over equal nodes",
            nodes: three(),
            workloads: vec![web.clone()],
            current: vec![],
            want: "\
web#0 v1 n1 start
web#1 v1 n2 start
web#2 v1 n3 start",
        },
        Case {
            name: "fewest replicas of the workload first, then most free capacity",
            nodes: vec![node("a", "4", "8Gi"), node("b", "4", "8Gi")],
            workloads: vec![wl("big", 1, 1), wl("web", 2, 1)],
            current: vec![],
            want: "\
big#0 v1 a start
web#0 v1 b start
web#1 v1 a start",
        },
        Case {
            name: "more replicas than nodes wrap around",
            nodes: vec![node("a", "8", "8Gi"), node("b", "8", "8Gi")],
            workloads: vec![wl("web", 5, 1)],
            current: vec![],
            want: "\
web#0 v1 a start
web#1 v1 b start
web#2 v1 a start
web#3 v1 b start
web#4 v1 a start",
        },
        Case {
            name: "cpu request larger than any node",
            nodes: vec![node("a", "2", "8Gi"), node("b", "2", "8Gi")],
            workloads: vec![with(wl("fat", 1, 1), |s| {
                s.resources.cpu = RawQuantity("4".into())
            })],
            current: vec![],
            want: "! fat#0 v1: no node has 4 CPU free",
        },
        Case {
            name: "memory runs out after two replicas",
            nodes: vec![node("a", "16", "2Gi"), node("b", "16", "2Gi")],
            workloads: vec![with(wl("mem", 3, 1), |s| {
                s.resources.memory = RawQuantity("1500Mi".into())
            })],
            current: vec![],
            want: "\
mem#0 v1 a start
mem#1 v1 b start
! mem#2 v1: no node has 1500Mi memory free",
        },
        Case {
            name: "selector matches nothing",
            nodes: three(),
            workloads: vec![with(wl("ml", 1, 1), |s| {
                s.placement
                    .node_selector
                    .insert("gpu".into(), "true".into());
            })],
            current: vec![],
            want: "! ml#0 v1: no node matches selector gpu=true",
        },
        Case {
            name: "selector picks labelled nodes only",
            nodes: vec![
                labelled(node("n1", "4", "8Gi"), "zone", "b"),
                node("n2", "4", "8Gi"),
                labelled(node("n3", "4", "8Gi"), "zone", "b"),
            ],
            workloads: vec![with(wl("web", 3, 1), |s| {
                s.placement.node_selector.insert("zone".into(), "b".into());
            })],
            current: vec![],
            want: "\
web#0 v1 n1 start
web#1 v1 n3 start
web#2 v1 n1 start",
        },
        Case {
            name: "selector matches only a lost node",
            nodes: vec![
                cond(
                    labelled(node("n1", "4", "8Gi"), "gpu", "true"),
                    NodeCondition::Lost,
                ),
                node("n2", "4", "8Gi"),
            ],
            workloads: vec![with(wl("ml", 1, 1), |s| {
                s.placement
                    .node_selector
                    .insert("gpu".into(), "true".into());
            })],
            current: vec![],
            want: "! ml#0 v1: no ready node matches selector gpu=true",
        },
        Case {
            name: "gpus only on gpu nodes",
            nodes: vec![node("cpu1", "8", "8Gi"), gpus(node("gpu1", "8", "8Gi"), 2)],
            workloads: vec![with(wl("train", 3, 1), |s| s.resources.gpu = 1)],
            current: vec![],
            want: "\
train#0 v1 gpu1 start
train#1 v1 gpu1 start
! train#2 v1: no node has 1 GPU free",
        },
        Case {
            name: "maxPerNode",
            nodes: vec![node("a", "8", "8Gi"), node("b", "8", "8Gi")],
            workloads: vec![with(wl("db", 3, 1), |s| s.placement.max_per_node = 1)],
            current: vec![],
            want: "\
db#0 v1 a start
db#1 v1 b start
! db#2 v1: every matching node already runs 1 replica (maxPerNode)",
        },
        Case {
            name: "host port conflicts",
            nodes: vec![node("a", "8", "8Gi")],
            workloads: vec![
                with(wl("api", 1, 1), |s| {
                    s.ports.push(WorkloadPort {
                        name: None,
                        port: 8080,
                        protocol: Protocol::Tcp,
                    })
                }),
                with(wl("web", 1, 1), |s| {
                    s.ports.push(WorkloadPort {
                        name: None,
                        port: 8080,
                        protocol: Protocol::Tcp,
                    })
                }),
                with(wl("dns", 1, 1), |s| {
                    s.ports.push(WorkloadPort {
                        name: None,
                        port: 8080,
                        protocol: Protocol::Udp,
                    })
                }),
            ],
            current: vec![],
            want: "\
api#0 v1 a start
dns#0 v1 a start
! web#0 v1: no node has port 8080/TCP free",
        },
        Case {
            name: "ports do not conflict on nodes with a network namespace per replica",
            nodes: vec![isolated(node("a", "8", "8Gi"))],
            workloads: vec![
                with(wl("api", 1, 1), |s| {
                    s.ports.push(WorkloadPort {
                        name: None,
                        port: 8080,
                        protocol: Protocol::Tcp,
                    })
                }),
                with(wl("web", 2, 1), |s| {
                    s.ports.push(WorkloadPort {
                        name: None,
                        port: 8080,
                        protocol: Protocol::Tcp,
                    })
                }),
            ],
            current: vec![],
            want: "\
api#0 v1 a start
web#0 v1 a start
web#1 v1 a start",
        },
        Case {
            name: "mixed reasons",
            nodes: vec![node("a", "1", "8Gi"), node("b", "8", "1Gi")],
            workloads: vec![with(wl("x", 1, 1), |s| {
                s.resources.cpu = RawQuantity("2".into());
                s.resources.memory = RawQuantity("2Gi".into());
            })],
            current: vec![],
            want: "! x#0 v1: no node fits: 1 node without 2 CPU free, 1 node without 2Gi memory free",
        },
        Case {
            name: "no ready nodes",
            nodes: vec![cond(node("a", "8", "8Gi"), NodeCondition::NotReady)],
            workloads: vec![wl("x", 1, 1)],
            current: vec![],
            want: "! x#0 v1: no ready node",
        },
        Case {
            name: "stable placement: running replicas stay even where spread would not put them",
            nodes: three(),
            workloads: vec![web.clone()],
            current: vec![cur(&web, 0, 1, "n3", true), cur(&web, 1, 1, "n3", true)],
            want: "\
web#0 v1 n3 keep
web#1 v1 n3 keep
web#2 v1 n1 start",
        },
        Case {
            name: "lost node: its replicas move, a not-ready node keeps its own",
            nodes: vec![
                cond(node("n1", "4", "8Gi"), NodeCondition::Lost),
                cond(node("n2", "4", "8Gi"), NodeCondition::NotReady),
                node("n3", "4", "8Gi"),
                node("n4", "4", "8Gi"),
            ],
            workloads: vec![web.clone()],
            current: vec![
                cur(&web, 0, 1, "n1", true),
                cur(&web, 1, 1, "n2", false),
                cur(&web, 2, 1, "n3", true),
            ],
            want: "\
web#0 v1 n4 start
web#1 v1 n2 keep
web#2 v1 n3 keep",
        },
        Case {
            name: "unknown node counts as lost",
            nodes: three(),
            workloads: vec![wl("web", 1, 1)],
            current: vec![cur(&web, 0, 1, "gone", true)],
            want: "web#0 v1 n1 start",
        },
        Case {
            name: "scale down drops the highest indices; deleted workloads vanish",
            nodes: three(),
            workloads: vec![wl("web", 1, 1)],
            current: vec![
                cur(&web, 0, 1, "n1", true),
                cur(&web, 1, 1, "n2", true),
                cur(&web, 2, 1, "n3", true),
                cur(&wl("old", 1, 1), 0, 1, "n1", true),
            ],
            want: "web#0 v1 n1 keep",
        },
        Case {
            name: "kept replicas reserve capacity before new ones are placed",
            nodes: vec![node("a", "2", "8Gi"), node("b", "2", "8Gi")],
            workloads: vec![wl("aaa", 2, 1), wl("zzz", 2, 1)],
            current: vec![
                cur(&wl("zzz", 2, 1), 0, 1, "a", true),
                cur(&wl("zzz", 2, 1), 1, 1, "a", true),
            ],
            want: "\
aaa#0 v1 b start
aaa#1 v1 b start
zzz#0 v1 a keep
zzz#1 v1 a keep",
        },
        Case {
            name: "rolling update, surge 1: the first slot surges, the others wait",
            nodes: three(),
            workloads: vec![web2.clone()],
            current: vec![
                cur(&web, 0, 1, "n1", true),
                cur(&web, 1, 1, "n2", true),
                cur(&web, 2, 1, "n3", true),
            ],
            want: "\
web#0 v1 n1 keep-old
web#0 v2 n1 start
web#1 v1 n2 keep-old
web#2 v1 n3 keep-old",
        },
        Case {
            name: "rolling update: new not ready yet, nothing else moves",
            nodes: three(),
            workloads: vec![web2.clone()],
            current: vec![
                cur(&web, 0, 1, "n1", true),
                cur(&web2, 0, 2, "n2", false),
                cur(&web, 1, 1, "n2", true),
                cur(&web, 2, 1, "n3", true),
            ],
            want: "\
web#0 v1 n1 keep-old
web#0 v2 n2 keep
web#1 v1 n2 keep-old
web#2 v1 n3 keep-old",
        },
        Case {
            name: "rolling update: new ready, old of that slot stops, next slot surges",
            nodes: three(),
            workloads: vec![web2.clone()],
            current: vec![
                cur(&web, 0, 1, "n1", true),
                cur(&web2, 0, 2, "n2", true),
                cur(&web, 1, 1, "n2", true),
                cur(&web, 2, 1, "n3", true),
            ],
            want: "\
web#0 v2 n2 keep
web#1 v1 n2 keep-old
web#1 v2 n1 start
web#2 v1 n3 keep-old",
        },
        Case {
            name: "rolling update, maxUnavailable 1 and no surge: replace in place",
            nodes: vec![node("n1", "1", "8Gi"), node("n2", "1", "8Gi")],
            workloads: vec![with(wl("web", 2, 2), |s| {
                s.rolling_update.max_surge = 0;
                s.rolling_update.max_unavailable = 1;
            })],
            current: vec![
                cur(&wl("web", 2, 1), 0, 1, "n1", true),
                cur(&wl("web", 2, 1), 1, 1, "n2", true),
            ],
            want: "\
web#0 v2 n1 start
web#1 v1 n2 keep-old",
        },
        Case {
            name: "rolling update: an unready old replica is replaced without waiting",
            nodes: vec![node("n1", "1", "8Gi"), node("n2", "1", "8Gi")],
            workloads: vec![with(wl("web", 2, 2), |s| s.rolling_update.max_surge = 0)],
            current: vec![
                cur(&wl("web", 2, 1), 0, 1, "n1", true),
                cur(&wl("web", 2, 1), 1, 1, "n2", false),
            ],
            want: "\
web#0 v1 n1 keep-old
web#1 v2 n2 start
! web#0 v2: no node has 1 CPU free",
        },
        Case {
            name: "rolling update blocked: no room to surge and maxUnavailable 0",
            nodes: vec![node("n1", "1", "8Gi"), node("n2", "1", "8Gi")],
            workloads: vec![wl("web", 2, 2)],
            current: vec![
                cur(&wl("web", 2, 1), 0, 1, "n1", true),
                cur(&wl("web", 2, 1), 1, 1, "n2", true),
            ],
            want: "\
web#0 v1 n1 keep-old
web#1 v1 n2 keep-old
! web#0 v2: no node has 1 CPU free
! web#1 v2: no node has 1 CPU free",
        },
        Case {
            name: "two old templates in one slot: the ready one stays",
            nodes: three(),
            workloads: vec![wl("web", 1, 3)],
            current: vec![
                cur(&wl("web", 1, 1), 0, 1, "n1", false),
                cur(&wl("web", 1, 2), 0, 2, "n2", true),
                cur(&wl("web", 1, 3), 0, 3, "n3", false),
            ],
            want: "\
web#0 v2 n2 keep-old
web#0 v3 n3 keep",
        },
        Case {
            name: "invalid resources are reported, not placed",
            nodes: three(),
            workloads: vec![with(wl("bad", 1, 1), |s| {
                s.resources.cpu = RawQuantity("lots".into())
            })],
            current: vec![],
            want: "! bad#0 v1: invalid workload: invalid cpu quantity \"lots\"",
        },
        Case {
            name: "zero replicas",
            nodes: three(),
            workloads: vec![wl("web", 0, 1)],
            current: vec![cur(&web, 0, 1, "n1", true)],
            want: "",
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let got = render(&run(c));
        if got != c.want {
            failures.push(format!("--- {}\nwant:\n{}\ngot:\n{}", c.name, c.want, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rollout_status() {
    let web = wl("web", 2, 1);
    let web2 = wl("web", 2, 2);
    let nodes = three();
    let current = vec![
        cur(&web2, 0, 2, "n1", true),
        cur(&web, 1, 1, "n2", true),
        cur(&web2, 1, 2, "n3", false),
    ];
    let s = schedule(&Input {
        workloads: std::slice::from_ref(&web2),
        nodes: &nodes,
        current: &current,
    });
    let r = &s.rollouts[0];
    assert_eq!((r.desired, r.updated, r.updated_ready, r.old), (2, 2, 1, 1));
    assert!(!r.complete());
    let current = s.as_current(|_| true);
    let s = schedule(&Input {
        workloads: std::slice::from_ref(&web2),
        nodes: &nodes,
        current: &current,
    });
    assert!(s.rollouts[0].complete(), "{:?}", s.rollouts);
    assert_eq!(s.for_node("n2").count(), 0);
}

/// Drives a rolling update to the end, feeding each schedule back as the next input with every
/// started instance reported ready, and checks the surge/unavailability bounds at every step.
fn simulate_update(replicas: u32, surge: u32, unavailable: u32, nodes: usize) -> usize {
    let nodes: Vec<NodeInput> = (0..nodes)
        .map(|i| node(&format!("n{i:02}"), "64", "64Gi"))
        .collect();
    let mut w = with(wl("web", replicas, 1), |s| {
        s.rolling_update.max_surge = surge;
        s.rolling_update.max_unavailable = unavailable;
    });
    let first = schedule(&Input {
        workloads: std::slice::from_ref(&w),
        nodes: &nodes,
        current: &[],
    });
    let mut current = first.as_current(|_| true);
    w.hash = h(2);
    w.generation = 2;
    let effective_surge = if surge == 0 && unavailable == 0 {
        1
    } else {
        surge
    };
    for step in 1..=100 {
        let s = schedule(&Input {
            workloads: std::slice::from_ref(&w),
            nodes: &nodes,
            current: &current,
        });
        assert!(s.unschedulable.is_empty());
        let total = s.assignments.len() as u32;
        assert!(
            total <= replicas + effective_surge,
            "step {step}: {total} instances"
        );
        // Readiness of what keeps running (started ones are not ready yet).
        let ready_slots: BTreeSet<u32> = s
            .assignments
            .iter()
            .filter(|a| a.kind != AssignmentKind::Start)
            .filter(|a| current.iter().any(|c| c.id == a.id && c.ready))
            .map(|a| a.id.replica.index)
            .collect();
        assert!(
            ready_slots.len() as u32 + unavailable >= replicas,
            "step {step}: only {} ready",
            ready_slots.len()
        );
        if s.rollouts[0].complete() {
            return step;
        }
        current = s.as_current(|_| true);
    }
    panic!("rolling update did not finish");
}

#[test]
fn rolling_updates_finish_within_bounds() {
    // (replicas, surge, unavailable, nodes, steps)
    let cases = [
        (3, 1, 0, 3, 4),
        (3, 0, 1, 3, 4),
        (6, 2, 0, 4, 4),
        (6, 0, 0, 6, 7),
        (5, 5, 0, 5, 2),
        (4, 1, 1, 4, 3),
        (1, 1, 0, 1, 2),
    ];
    for (replicas, surge, unavailable, nodes, steps) in cases {
        let got = simulate_update(replicas, surge, unavailable, nodes);
        assert_eq!(
            got, steps,
            "replicas={replicas} surge={surge} unavailable={unavailable}"
        );
    }
}

/// Tiny deterministic generator for the randomized invariants test.
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

fn random_cluster(seed: u64) -> (Vec<NodeInput>, Vec<WorkloadInput>) {
    let mut r = Lcg(seed);
    let nodes: Vec<NodeInput> = (0..(3 + r.next(10)))
        .map(|i| {
            let mut n = node(
                &format!("n{i}"),
                &format!("{}", 1 + r.next(8)),
                &format!("{}Gi", 1 + r.next(16)),
            );
            if r.next(3) == 0 {
                n.labels.insert("disk".into(), "ssd".into());
            }
            n.capacity.gpus = if r.next(4) == 0 { 2 } else { 0 };
            if r.next(8) == 0 {
                n.condition = NodeCondition::NotReady;
            }
            n
        })
        .collect();
    let workloads = (0..(1 + r.next(12)))
        .map(|i| {
            with(wl(&format!("w{i}"), r.next(6) as u32, 1), |s| {
                s.resources.cpu = RawQuantity(format!("{}m", 100 + r.next(2000)));
                s.resources.memory = RawQuantity(format!("{}Mi", 64 + r.next(4096)));
                s.resources.gpu = u32::from(r.next(6) == 0);
                s.placement.max_per_node = r.next(3) as u32;
                if r.next(4) == 0 {
                    s.placement
                        .node_selector
                        .insert("disk".into(), "ssd".into());
                }
            })
        })
        .collect();
    (nodes, workloads)
}

#[test]
fn randomized_invariants_and_order_independence() {
    for seed in 0..300 {
        let (nodes, workloads) = random_cluster(seed);
        let s = schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &[],
        });
        // Every slot is either assigned or reported.
        let slots: usize = workloads.iter().map(|w| w.spec.replicas as usize).sum();
        assert_eq!(
            s.assignments.len() + s.unschedulable.len(),
            slots,
            "seed {seed}"
        );
        // Capacity, selector, maxPerNode and readiness hold on every node.
        for n in &nodes {
            let on: Vec<&Assignment> = s.for_node(&n.name).collect();
            assert!(
                on.is_empty() || n.condition == NodeCondition::Ready,
                "seed {seed}"
            );
            let cpu: u64 = on.iter().map(|a| a.footprint.cpu.0).sum();
            let mem: u64 = on.iter().map(|a| a.footprint.memory.0).sum();
            let g: u32 = on.iter().map(|a| a.footprint.gpus).sum();
            assert!(
                cpu <= n.capacity.cpu.0 && mem <= n.capacity.memory.0 && g <= n.capacity.gpus,
                "seed {seed} node {}",
                n.name
            );
            for w in &workloads {
                let mine = on.iter().filter(|a| a.id.replica.workload == w.key).count() as u32;
                if w.spec.placement.max_per_node > 0 {
                    assert!(mine <= w.spec.placement.max_per_node, "seed {seed}");
                }
                if mine > 0 {
                    assert!(
                        selector_matches(&w.spec.placement.node_selector, &n.labels),
                        "seed {seed}"
                    );
                }
            }
        }
        // Same input in another order: same output. Feeding it back: nothing moves.
        let mut rn = nodes.clone();
        rn.reverse();
        let mut rw = workloads.clone();
        rw.reverse();
        assert_eq!(
            schedule(&Input {
                workloads: &rw,
                nodes: &rn,
                current: &[]
            }),
            s,
            "seed {seed}"
        );
        let mut current = s.as_current(|_| true);
        current.reverse();
        let again = schedule(&Input {
            workloads: &workloads,
            nodes: &nodes,
            current: &current,
        });
        let moved: Vec<_> = again
            .assignments
            .iter()
            .filter(|a| a.kind == AssignmentKind::Start)
            .collect();
        let placed_before = s.assignments.len();
        assert!(again.assignments.len() >= placed_before, "seed {seed}");
        assert!(
            moved.len() == again.assignments.len() - placed_before,
            "seed {seed}: kept replicas moved"
        );
    }
}

/// The memo never changes a result: over rounds in which workloads are added, changed, scaled
/// and deleted, nodes come and go, and instances become ready, the memoized schedule equals a
/// fresh computation every round, and unchanged workloads are taken from the memo.
#[test]
fn memoized_rounds_equal_fresh_rounds() {
    for seed in 0..150 {
        let mut r = Lcg(seed * 7919 + 1);
        let (mut nodes, mut workloads) = random_cluster(seed);
        // A version names one workload's content: unique across workloads.
        let mut versions: Vec<u64> = (1..=workloads.len() as u64).collect();
        let mut memo = Memo::default();
        let mut current: Vec<CurrentInstance> = Vec::new();
        for (next_version, round) in (1000..).zip(0..12) {
            let versioned: Vec<(&WorkloadInput, u64)> =
                workloads.iter().zip(versions.iter().copied()).collect();
            schedule_memo(versioned, &nodes, &current, &mut memo);
            let fresh = schedule(&Input {
                workloads: &workloads,
                nodes: &nodes,
                current: &current,
            });
            let mut flat = Schedule::default();
            for o in memo.outcomes() {
                flat.assignments.extend(o.assignments.iter().cloned());
                flat.unschedulable.extend(o.unschedulable.iter().cloned());
                flat.rollouts.push(o.rollout.clone());
            }
            assert_eq!(flat, fresh, "seed {seed} round {round}");
            if round > 0 && r.next(3) == 0 {
                // Nothing changes: every workload comes from the memo.
                let again: Vec<(&WorkloadInput, u64)> =
                    workloads.iter().zip(versions.iter().copied()).collect();
                schedule_memo(again, &nodes, &current, &mut memo);
                assert_eq!(memo.computed, 0, "seed {seed} round {round}");
            }
            // Instances run where they were assigned; some become ready.
            let salt = r.next(1000);
            current =
                fresh.as_current(|id| !(u64::from(id.replica.index) + salt).is_multiple_of(3));
            match r.next(6) {
                0 if !workloads.is_empty() => {
                    let i = r.next(workloads.len() as u64) as usize;
                    workloads.remove(i);
                    versions.remove(i);
                }
                1 if !workloads.is_empty() => {
                    let i = r.next(workloads.len() as u64) as usize;
                    workloads[i].spec.replicas = r.next(5) as u32;
                    versions[i] = next_version;
                }
                2 if !workloads.is_empty() => {
                    // A new template: a rolling update.
                    let i = r.next(workloads.len() as u64) as usize;
                    workloads[i].hash = h(2 + r.next(100) as u8);
                    workloads[i].generation += 1;
                    versions[i] = next_version;
                }
                3 => {
                    let name = format!("x{round}");
                    workloads.push(with(wl(&name, 1 + r.next(3) as u32, 1), |s| {
                        s.resources.cpu = RawQuantity(format!("{}m", 100 + r.next(1500)));
                    }));
                    versions.push(next_version);
                }
                4 if !nodes.is_empty() => {
                    let i = r.next(nodes.len() as u64) as usize;
                    nodes[i].condition = match r.next(3) {
                        0 => NodeCondition::Ready,
                        1 => NodeCondition::NotReady,
                        _ => NodeCondition::Lost,
                    };
                }
                _ => nodes.push(node(&format!("m{round}"), "4", "8Gi")),
            }
        }
    }
}
