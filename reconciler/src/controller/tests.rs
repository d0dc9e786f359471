//! Table tests for the node controller.

use super::*;
use crate::model::{ReplicaId, WorkloadKey};
use crate::spec::Limits;
use crate::status::ExitOutcome;
use nexus_schemas::ContentHash;

fn id(name: &str, v: u8) -> InstanceId {
    InstanceId::new(
        ReplicaId::new(WorkloadKey::new("default", name), 0),
        ContentHash([v; 32]),
    )
}

fn spec(name: &str, policy: RestartPolicy) -> ReplicaSpec {
    ReplicaSpec {
        id: id(name, 1),
        generation: 1,
        runtime: Default::default(),
        command: vec!["x".into()],
        env: Default::default(),
        working_dir: None,
        limits: Limits::default(),
        health: None,
        restart_policy: policy,
        grace_ms: 5000,
    }
}

fn obs(name: &str, v: u8, state: ObservedState, restarts: u32, step: u32) -> ObservedReplica {
    ObservedReplica {
        id: id(name, v),
        state,
        pid: None,
        started_at_ms: 0,
        restart_count: restarts,
        backoff_step: step,
        restart_policy: RestartPolicy::Always,
        grace_ms: 7000,
        unified_cgroup: None,
        address: None,
    }
}

fn running(h: Health) -> ObservedState {
    ObservedState::Running { health: h }
}

fn exited(at_ms: u64, outcome: ExitOutcome) -> ObservedState {
    ObservedState::Exited { at_ms, outcome }
}

fn render(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| {
            let who = |i: &InstanceId| format!("{}/v{}", i.replica.workload.name, i.hash.0[0]);
            match a {
                Action::Start { spec } => format!("start {}", who(&spec.id)),
                Action::Restart { spec, reason } => format!("restart {} ({reason})", who(&spec.id)),
                Action::Terminate {
                    id,
                    grace_ms,
                    reason,
                } => format!("terminate {} grace={grace_ms} ({reason})", who(id)),
                Action::Stop {
                    id,
                    grace_ms,
                    reason,
                } => format!("stop {} grace={grace_ms} ({reason})", who(id)),
                Action::Wait {
                    id,
                    until_ms,
                    reason,
                } => format!("wait {} until={until_ms} ({reason})", who(id)),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn table() {
    use RestartPolicy::*;
    let bo = BackoffPolicy {
        initial_ms: 1000,
        max_ms: 8000,
    };
    let ok = ExitOutcome::Exited { code: 0 };
    let fail = ExitOutcome::Exited { code: 2 };
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Vec<ReplicaSpec>, Vec<ObservedReplica>, u64, &str)> = vec![
        ("nothing to do", vec![], vec![], 0, ""),
        (
            "missing: start",
            vec![spec("a", Always)],
            vec![],
            0,
            "start a/v1",
        ),
        (
            "running healthy: nothing",
            vec![spec("a", Always)],
            vec![obs("a", 1, running(Health::Healthy), 0, 0)],
            0,
            "",
        ),
        (
            "running, verdict pending: nothing",
            vec![spec("a", Always)],
            vec![obs("a", 1, running(Health::Unknown), 0, 0)],
            0,
            "",
        ),
        (
            "starting: nothing",
            vec![spec("a", Always)],
            vec![obs("a", 1, ObservedState::Starting, 0, 0)],
            0,
            "",
        ),
        (
            "unhealthy: terminate with the spec's grace",
            vec![spec("a", Always)],
            vec![obs("a", 1, running(Health::Unhealthy), 0, 0)],
            0,
            "terminate a/v1 grace=5000 (health check failed)",
        ),
        (
            "unhealthy with Never: terminate too (and it stays down)",
            vec![spec("a", Never)],
            vec![obs("a", 1, running(Health::Unhealthy), 0, 0)],
            0,
            "terminate a/v1 grace=5000 (health check failed)",
        ),
        (
            "not desired: stop with the observed grace",
            vec![],
            vec![obs("a", 1, running(Health::Healthy), 0, 0)],
            0,
            "stop a/v1 grace=7000 (not assigned to this node)",
        ),
        (
            "not desired, already stopping: nothing",
            vec![],
            vec![obs("a", 1, ObservedState::Stopping, 0, 0)],
            0,
            "",
        ),
        (
            "exited record not desired: stop (cleanup)",
            vec![],
            vec![obs("a", 1, exited(5, fail.clone()), 0, 0)],
            10,
            "stop a/v1 grace=7000 (not assigned to this node)",
        ),
        (
            "old template running, new desired: stop old first, then start new",
            vec![spec("a", Always)],
            vec![obs("a", 0, running(Health::Healthy), 0, 0)],
            0,
            "stop a/v0 grace=7000 (not assigned to this node)\nstart a/v1",
        ),
        (
            "Always, exited 0, back-off not over: wait",
            vec![spec("a", Always)],
            vec![obs("a", 1, exited(100, ok.clone()), 0, 0)],
            500,
            "wait a/v1 until=1100 (back-off: exited with code 0; restart 1)",
        ),
        (
            "Always, exited 0, back-off over: restart",
            vec![spec("a", Always)],
            vec![obs("a", 1, exited(100, ok.clone()), 0, 0)],
            1100,
            "restart a/v1 (exited with code 0; restart 1)",
        ),
        (
            "back-off doubles with the step",
            vec![spec("a", Always)],
            vec![obs("a", 1, exited(100, fail.clone()), 3, 2)],
            4099,
            "wait a/v1 until=4100 (back-off: exited with code 2; restart 4)",
        ),
        (
            "back-off is capped",
            vec![spec("a", Always)],
            vec![obs("a", 1, exited(100, fail.clone()), 40, 39)],
            8100,
            "restart a/v1 (exited with code 2; restart 41)",
        ),
        (
            "OnFailure, exit 0: done",
            vec![spec("a", OnFailure)],
            vec![obs("a", 1, exited(0, ok.clone()), 0, 0)],
            10_000,
            "",
        ),
        (
            "OnFailure, exit 2: restart",
            vec![spec("a", OnFailure)],
            vec![obs("a", 1, exited(0, fail.clone()), 0, 0)],
            10_000,
            "restart a/v1 (exited with code 2; restart 1)",
        ),
        (
            "OnFailure, OOM: restart",
            vec![spec("a", OnFailure)],
            vec![obs("a", 1, exited(0, ExitOutcome::OomKilled), 1, 1)],
            10_000,
            "restart a/v1 (killed: out of memory; restart 2)",
        ),
        (
            "OnFailure, killed for failing health: restart",
            vec![spec("a", OnFailure)],
            vec![obs("a", 1, exited(0, ExitOutcome::Killed), 0, 0)],
            10_000,
            "restart a/v1 (stopped by the agent; restart 1)",
        ),
        (
            "Never, failed: stays",
            vec![spec("a", Never)],
            vec![obs("a", 1, exited(0, fail.clone()), 0, 0)],
            10_000,
            "",
        ),
        (
            "start failures back off like crashes",
            vec![spec("a", Always)],
            vec![obs(
                "a",
                1,
                exited(
                    0,
                    ExitOutcome::StartFailed {
                        message: "no such file".into(),
                    },
                ),
                0,
                1,
            )],
            1000,
            "wait a/v1 until=2000 (back-off: failed to start: no such file; restart 1)",
        ),
        (
            "ordering: stops, terminations, restarts, starts, waits",
            vec![
                spec("b", Always),
                spec("c", Always),
                spec("d", Always),
                spec("e", Always),
            ],
            vec![
                obs("a", 1, running(Health::Healthy), 0, 0),
                obs("c", 1, exited(0, fail.clone()), 0, 0),
                obs("d", 1, running(Health::Unhealthy), 0, 0),
                obs("e", 1, exited(900, fail.clone()), 0, 0),
            ],
            1000,
            "stop a/v1 grace=7000 (not assigned to this node)\nterminate d/v1 grace=5000 (health check failed)\nrestart c/v1 (exited with code 2; restart 1)\nstart b/v1\nwait e/v1 until=1900 (back-off: exited with code 2; restart 1)",
        ),
        (
            "duplicates in the input are harmless",
            vec![spec("a", Always), spec("a", Always)],
            vec![
                obs("b", 1, running(Health::Healthy), 0, 0),
                obs("b", 1, running(Health::Healthy), 0, 0),
            ],
            0,
            "stop b/v1 grace=7000 (not assigned to this node)\nstart a/v1",
        ),
    ];
    let mut failures = Vec::new();
    for (name, desired, observed, now, want) in &cases {
        let got = render(&plan(desired, observed, *now, &bo));
        if got != *want {
            failures.push(format!("--- {name}\nwant:\n{want}\ngot:\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn idempotent_and_next_wake() {
    let bo = BackoffPolicy::default();
    let desired = vec![spec("a", RestartPolicy::Always)];
    let observed = vec![obs(
        "a",
        1,
        exited(1_000, ExitOutcome::Signaled { signal: 9 }),
        0,
        0,
    )];
    let first = plan(&desired, &observed, 1_500, &bo);
    assert_eq!(first, plan(&desired, &observed, 1_500, &bo));
    assert_eq!(next_wake(&first), Some(2_000));
    assert_eq!(next_wake(&plan(&desired, &observed, 2_000, &bo)), None);
}

#[test]
fn backoff_steps() {
    let bo = BackoffPolicy {
        initial_ms: 1000,
        max_ms: 300_000,
    };
    let delays: Vec<u64> = (0..12).map(|s| bo.delay_ms(s)).collect();
    assert_eq!(
        delays,
        [
            1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000
        ]
    );
    assert_eq!(bo.delay_ms(u32::MAX), 300_000);
    assert_eq!(BackoffPolicy::next_step(5, 1000), 6);
    assert_eq!(BackoffPolicy::next_step(5, BACKOFF_RESET_MS), 0);
    assert_eq!(BackoffPolicy::next_step(u32::MAX, 0), u32::MAX);
}
