//! The process runtime against the real kernel: cgroup limits, namespaces, logs, probes, stop
//! escalation and adoption. Needs root and cgroups; skips with a printed reason otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nexus_reconciler::agent::reconcile;
use nexus_reconciler::controller::BackoffPolicy;
use nexus_reconciler::model::{InstanceId, ReplicaId, WorkloadKey, template_hash};
use nexus_reconciler::runtime::{
    CgroupLayout, CgroupMode, LogStream, ProcessConfig, ProcessRuntime, Runtime, RuntimeError,
    StopOutcome,
};
use nexus_reconciler::spec::ReplicaSpec;
use nexus_reconciler::status::{ExitOutcome, Health, ObservedReplica, ObservedState};
use nexus_schemas::WorkloadSpec;

/// A runtime on its own node name and state dir; removes everything it made when dropped.
struct Harness {
    rt: Option<ProcessRuntime>,
    config: ProcessConfig,
    _dir: tempfile::TempDir,
}

fn harness(test: &str, tweak: impl FnOnce(&mut ProcessConfig)) -> Option<Harness> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: the process runtime needs root");
        return None;
    }
    if let Err(e) = CgroupLayout::detect() {
        eprintln!("skipping {test}: {e}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProcessConfig::new(format!("test-{}-{test}", std::process::id()), dir.path());
    tweak(&mut config);
    let rt = ProcessRuntime::new(config.clone()).unwrap();
    Some(Harness {
        rt: Some(rt),
        config,
        _dir: dir,
    })
}

impl Harness {
    fn rt(&self) -> &ProcessRuntime {
        self.rt.as_ref().unwrap()
    }

    /// Drops the driver and makes a new one on the same node and state dir (an agent restart).
    fn restart(&mut self) {
        self.rt = None;
        self.rt = Some(ProcessRuntime::new(self.config.clone()).unwrap());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(rt) = &self.rt {
            let _ = rt.adopt_existing();
            for o in rt.status().unwrap_or_default() {
                let _ = rt.remove(&o.id, Duration::ZERO);
            }
            let layout = rt.layout().clone();
            for h in [&layout.memory, &layout.cpu, &layout.pids, &layout.unified]
                .into_iter()
                .flatten()
            {
                let _ = fs::remove_dir(h.join(&self.config.cgroup_root).join(&self.config.node));
            }
        }
    }
}

fn spec(name: &str, script: &str, extra: serde_json::Value) -> ReplicaSpec {
    let mut w = serde_json::json!({"command": ["sh", "-c", script], "resources": {"cpu": "250m", "memory": "64Mi"}});
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    let w: WorkloadSpec = serde_json::from_value(w).unwrap();
    let id = InstanceId::new(
        ReplicaId::new(WorkloadKey::new("default", name), 0),
        template_hash(&w),
    );
    ReplicaSpec::from_workload(id, 1, &w).unwrap()
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn observed(rt: &ProcessRuntime, id: &InstanceId) -> Option<ObservedReplica> {
    rt.status().unwrap().into_iter().find(|o| &o.id == id)
}

fn wait_exit(rt: &ProcessRuntime, id: &InstanceId, timeout: Duration) -> ExitOutcome {
    wait_for(timeout, || match observed(rt, id)?.state {
        ObservedState::Exited { outcome, .. } => Some(outcome),
        _ => None,
    })
    .unwrap_or_else(|| panic!("{id} did not exit: {:?}", observed(rt, id)))
}

fn stdout(rt: &ProcessRuntime, id: &InstanceId) -> String {
    String::from_utf8_lossy(&rt.logs(id, LogStream::Stdout, 1 << 20).unwrap()).into_owned()
}

fn wait_log(rt: &ProcessRuntime, id: &InstanceId, needle: &str) -> String {
    wait_for(Duration::from_secs(5), || {
        Some(stdout(rt, id)).filter(|s| s.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "{needle:?} never appeared in the log of {id}: {:?}",
            stdout(rt, id)
        )
    })
}

fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn isolation_limits_logs_and_graceful_stop() {
    let Some(h) = harness("isolation", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let s = spec(
        "web",
        "echo pid=$$; echo host=$(cat /proc/sys/kernel/hostname); echo procs=$(ls /proc | grep -c '^[0-9]'); \
         echo cwd=$(pwd); echo wl=$NEXUS_WORKLOAD color=$COLOR; echo oops >&2; echo ready; exec sleep 30",
        serde_json::json!({"env": {"COLOR": "blue"}}),
    );
    let started = rt.start(&s).unwrap();
    let log = wait_log(rt, &s.id, "ready");
    assert!(
        log.contains("pid=2\n"),
        "the command is the init's first child: {log}"
    );
    assert!(log.contains("host=web-0\n"), "{log}");
    let procs: u32 = log
        .split("procs=")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        procs <= 5,
        "init, sh, the substitution subshell, ls, grep: a fresh /proc shows only the replica's processes: {log}"
    );
    assert!(
        log.contains(&format!("cwd={}\n", rt.scratch_dir(&s.id).display())),
        "{log}"
    );
    assert!(log.contains("wl=web color=blue\n"), "{log}");
    assert_eq!(
        String::from_utf8_lossy(&rt.logs(&s.id, LogStream::Stderr, 100).unwrap()),
        "oops\n"
    );

    let cg = rt.cgroup(&s.id);
    assert!(
        cg.procs().contains(&started.pid),
        "init joined the cgroups before exec"
    );
    let unified = started
        .unified_cgroup
        .clone()
        .expect("a unified cgroup for eBPF");
    assert!(
        read(&unified.join("cgroup.procs"))
            .lines()
            .any(|l| l == started.pid.to_string())
    );
    match rt.layout().mode {
        CgroupMode::Unified => {
            assert_eq!(read(&unified.join("memory.max")), (64u64 << 20).to_string());
            assert_eq!(read(&unified.join("cpu.max")), "25000 100000");
            assert_eq!(read(&unified.join("pids.max")), "4096");
        }
        _ => {
            let mem = cg.memory.clone().unwrap();
            assert_eq!(
                read(&mem.join("memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            let cpu = cg.cpu.clone().unwrap();
            assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
            assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(&cg.pids.clone().unwrap().join("pids.max")), "4096");
        }
    }
    // The init holds nothing of the agent's: only /dev/null, its pipes, its signalfd, the logs.
    for fd in fs::read_dir(format!("/proc/{}/fd", started.pid)).unwrap() {
        let target = fs::read_link(fd.unwrap().path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ok = target == "/dev/null"
            || target.starts_with("pipe:")
            || target.contains("signalfd")
            || target.ends_with("stdout.log")
            || target.ends_with("stderr.log");
        assert!(ok, "init leaked {target}");
    }
    let adj = |who: &str| {
        let out = rt
            .exec(
                &s.id,
                &["cat".into(), format!("/proc/{who}/oom_score_adj")],
                Duration::from_secs(5),
            )
            .unwrap();
        String::from_utf8_lossy(&out.output).trim().to_string()
    };
    let cap_eff = read(Path::new("/proc/self/status"))
        .lines()
        .find_map(|l| {
            l.strip_prefix("CapEff:")
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0))
        })
        .unwrap_or(0);
    if cap_eff & (1 << 24) != 0 {
        // bit 24: CAP_SYS_RESOURCE, needed to lower oom_score_adj
        assert_eq!(adj("1"), "-1000", "the init is never the OOM victim");
    } else {
        eprintln!("no CAP_SYS_RESOURCE: the init keeps the agent's oom_score_adj");
        assert_eq!(adj("1"), read(Path::new("/proc/self/oom_score_adj")));
    }
    assert_eq!(
        adj("2"),
        read(Path::new("/proc/self/oom_score_adj")),
        "the workload is a normal candidate"
    );

    let o = observed(rt, &s.id).unwrap();
    assert_eq!(
        o.state,
        ObservedState::Running {
            health: Health::NoProbe
        }
    );
    assert!(o.ready());
    assert_eq!(o.unified_cgroup.as_deref(), Some(unified.as_path()));

    let t = Instant::now();
    assert_eq!(
        rt.stop(&s.id, Duration::from_secs(5)).unwrap(),
        StopOutcome::Graceful
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(
        wait_exit(rt, &s.id, Duration::from_secs(1)),
        ExitOutcome::Killed
    );
    assert!(!cg.exists(), "cgroups removed after the stop");
    assert!(!pid_alive(started.pid));
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let Some(h) = harness("oom", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let s = spec(
        "hog",
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
        serde_json::json!({"resources": {"memory": "32Mi"}, "restartPolicy": "Never"}),
    );
    rt.start(&s).unwrap();
    assert_eq!(
        wait_exit(rt, &s.id, Duration::from_secs(20)),
        ExitOutcome::OomKilled
    );
    assert!(!stdout(rt, &s.id).contains("survived"));
}

#[test]
fn pids_limit_stops_fork_bombs() {
    let Some(h) = harness("pids", |c| c.default_pids_max = 8) else {
        return;
    };
    let rt = h.rt();
    let s = spec(
        "forky",
        "for i in 1 2 3 4 5; do sleep 5 & done; echo spawned; sleep 1; for i in 1 2 3 4 5 6; do sleep 5 & done; echo unreachable",
        serde_json::json!({"restartPolicy": "Never"}),
    );
    rt.start(&s).unwrap();
    wait_log(rt, &s.id, "spawned");
    let cg = rt.cgroup(&s.id);
    let pids_dir = match rt.layout().mode {
        CgroupMode::Unified => cg.unified.clone().unwrap(),
        _ => cg.pids.clone().unwrap(),
    };
    assert_eq!(read(&pids_dir.join("pids.max")), "8");
    let current: u64 = read(&pids_dir.join("pids.current")).parse().unwrap();
    assert!(
        (7..=8).contains(&current),
        "init + sh + 5 sleeps (+ a forking child): {current}"
    );
    // The second loop needs more than 8: the shell's fork fails and it gives up.
    let outcome = wait_exit(rt, &s.id, Duration::from_secs(10));
    assert!(
        matches!(outcome, ExitOutcome::Exited { code } if code != 0),
        "{outcome:?}"
    );
    let stderr =
        String::from_utf8_lossy(&rt.logs(&s.id, LogStream::Stderr, 4096).unwrap()).into_owned();
    assert!(
        stderr.to_lowercase().contains("fork"),
        "forks beyond the limit fail: {stderr:?}"
    );
    assert!(!stdout(rt, &s.id).contains("unreachable"));
    rt.remove(&s.id, Duration::ZERO).unwrap();
    assert!(!cg.exists());
}

#[test]
fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let Some(h) = harness("sigkill", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let s = spec(
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        serde_json::json!({}),
    );
    let pid = rt.start(&s).unwrap().pid;
    wait_log(rt, &s.id, "ready");
    let t = Instant::now();
    assert_eq!(
        rt.stop(&s.id, Duration::from_millis(300)).unwrap(),
        StopOutcome::Killed
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(!pid_alive(pid));
    assert!(!rt.cgroup(&s.id).exists());
    assert_eq!(
        rt.stop(&s.id, Duration::ZERO).unwrap(),
        StopOutcome::NotRunning
    );
}

#[test]
fn logs_are_capped_and_rotated() {
    let Some(h) = harness("logs", |c| c.log_cap_bytes = 4096) else {
        return;
    };
    let rt = h.rt();
    let s = spec(
        "chatty",
        "head -c 20000 /dev/zero | tr '\\0' x; echo; echo done",
        serde_json::json!({}),
    );
    rt.start(&s).unwrap();
    assert_eq!(
        wait_exit(rt, &s.id, Duration::from_secs(5)),
        ExitOutcome::Exited { code: 0 }
    );
    let (current, old) = rt.log_paths(&s.id, LogStream::Stdout);
    let (cur_len, old_len) = (
        fs::metadata(&current).unwrap().len(),
        fs::metadata(&old).unwrap().len(),
    );
    assert!(
        cur_len <= 4096 && old_len == 4096,
        "current {cur_len}, rotated {old_len}"
    );
    let tail = rt.logs(&s.id, LogStream::Stdout, 1 << 20).unwrap();
    assert!(tail.len() <= 8192);
    assert!(tail.ends_with(b"x\ndone\n"));
    assert_eq!(rt.logs(&s.id, LogStream::Stdout, 5).unwrap(), b"done\n");
}

#[test]
fn adoption_after_agent_restart_no_orphans_no_duplicates() {
    let Some(mut h) = harness("adopt", |_| {}) else {
        return;
    };
    let a = spec("alpha", "echo ready; exec sleep 60", serde_json::json!({}));
    let b = spec(
        "beta",
        "echo ready; sleep 0.3; exit 4",
        serde_json::json!({}),
    );
    let a_pid = h.rt().start(&a).unwrap().pid;
    h.rt().start(&b).unwrap();
    wait_log(h.rt(), &a.id, "ready");
    let a_procs = h.rt().cgroup(&a.id).procs();

    // Strangers under our cgroup root: a process in a cgroup nobody recorded, and a state
    // directory with a corrupt state file.
    let layout = h.rt().layout().clone();
    let ghost_dirs: Vec<PathBuf> = [&layout.memory, &layout.unified]
        .into_iter()
        .flatten()
        .map(|m| {
            m.join(&h.config.cgroup_root)
                .join(&h.config.node)
                .join("default.ghost-0-deadbeef")
        })
        .collect();
    let mut ghost = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    for d in &ghost_dirs {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("cgroup.procs"), ghost.id().to_string()).unwrap();
    }
    let junk = h
        .config
        .state_dir
        .join("replicas")
        .join("default.junk-0-00000000");
    fs::create_dir_all(&junk).unwrap();
    fs::write(junk.join("state.json"), "{ definitely not json").unwrap();

    assert!(
        matches!(
            ProcessRuntime::new(h.config.clone()),
            Err(RuntimeError::StateDirBusy(_))
        ),
        "one driver per state directory"
    );
    h.restart(); // the old driver is gone; its replicas keep running
    std::thread::sleep(Duration::from_millis(600)); // beta exits while nobody watches
    let rt = h.rt();
    assert!(
        rt.status().unwrap().is_empty(),
        "a new driver knows nothing before adoption"
    );
    let report = rt.adopt_existing().unwrap();
    assert_eq!(report.adopted, vec![a.id.clone()]);
    assert_eq!(report.exited, vec![b.id.clone()]);
    assert_eq!(
        report.removed,
        vec![
            "default.ghost-0-deadbeef".to_string(),
            "default.junk-0-00000000".to_string()
        ]
    );
    assert!(report.killed_processes >= 1);
    let status = ghost.wait().unwrap();
    assert!(!status.success(), "the orphan was killed");
    assert!(ghost_dirs.iter().all(|d| !d.exists()) && !junk.exists());

    let oa = observed(rt, &a.id).unwrap();
    assert_eq!(oa.pid, Some(a_pid));
    assert!(matches!(oa.state, ObservedState::Running { .. }));
    assert!(
        matches!(rt.start(&a), Err(RuntimeError::AlreadyRunning(_))),
        "no duplicate start"
    );
    assert_eq!(
        rt.cgroup(&a.id).procs(),
        a_procs,
        "same processes, nothing added"
    );
    assert_eq!(
        wait_exit(rt, &b.id, Duration::ZERO),
        ExitOutcome::Exited { code: 4 }
    );
    assert_eq!(
        rt.adopt_existing().unwrap(),
        Default::default(),
        "adoption is idempotent"
    );

    assert_eq!(
        rt.stop(&a.id, Duration::from_secs(5)).unwrap(),
        StopOutcome::Graceful
    );
    assert!(!pid_alive(a_pid));
}

#[test]
fn exec_and_health_probes_run_inside_the_replica() {
    let Some(h) = harness("probes", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in listener.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
        }
    });
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = |p: serde_json::Value| serde_json::json!({"health": p});
    let cases = [
        (
            spec(
                "execok",
                "exec sleep 30",
                probe(
                    serde_json::json!({"exec": {"command": ["sh", "-c", "test \"$(cat /proc/sys/kernel/hostname)\" = execok-0"]}, "periodSeconds": 1}),
                ),
            ),
            Health::Healthy,
        ),
        (
            spec(
                "execbad",
                "exec sleep 30",
                probe(
                    serde_json::json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}),
                ),
            ),
            Health::Unhealthy,
        ),
        (
            spec(
                "httpok",
                "exec sleep 30",
                probe(
                    serde_json::json!({"http": {"port": http_port, "path": "/healthz"}, "periodSeconds": 1}),
                ),
            ),
            Health::Healthy,
        ),
        (
            spec(
                "tcpbad",
                "exec sleep 30",
                probe(
                    serde_json::json!({"tcp": {"port": closed_port}, "periodSeconds": 1, "failureThreshold": 2}),
                ),
            ),
            Health::Unhealthy,
        ),
    ];
    for (s, _) in &cases {
        rt.start(s).unwrap();
    }
    for (s, want) in &cases {
        let got = wait_for(Duration::from_secs(5), || {
            match observed(rt, &s.id)?.state {
                ObservedState::Running { health } if health == *want => Some(health),
                _ => None,
            }
        });
        assert_eq!(got, Some(*want), "{}: {:?}", s.id, observed(rt, &s.id));
    }

    let out = rt
        .exec(
            &cases[0].0.id,
            &[
                "sh".into(),
                "-c".into(),
                "cat /proc/sys/kernel/hostname; echo $$; exit 3".into(),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.output).into_owned();
    assert_eq!(out.code, 3);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("execok-0"));
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!(
        pid > 1 && pid < 100,
        "a pid of the replica's namespace: {text}"
    );
    let t = Instant::now();
    let slow = rt.exec(
        &cases[0].0.id,
        &["sleep".into(), "10".into()],
        Duration::from_millis(200),
    );
    assert!(slow.is_err() && t.elapsed() < Duration::from_secs(2));
}

#[test]
fn start_errors_are_typed_and_recorded() {
    let Some(h) = harness("starterr", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let mut missing = spec("missing", "true", serde_json::json!({}));
    missing.command = vec!["no-such-command-xyz".into()];
    match rt.start(&missing) {
        Err(RuntimeError::StartFailed { message, .. }) => {
            assert!(message.contains("command not found"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wait_exit(rt, &missing.id, Duration::ZERO),
        ExitOutcome::StartFailed { .. }
    ));
    let bad_dir = spec(
        "baddir",
        "true",
        serde_json::json!({"workingDir": "/no/such/dir"}),
    );
    match rt.start(&bad_dir) {
        Err(RuntimeError::StartFailed { message, .. }) => {
            assert!(message.contains("working directory"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!rt.cgroup(&bad_dir.id).exists(), "no cgroup left behind");
    let s = spec("twice", "exec sleep 30", serde_json::json!({}));
    rt.start(&s).unwrap();
    assert!(matches!(rt.start(&s), Err(RuntimeError::AlreadyRunning(_))));
    rt.remove(&s.id, Duration::ZERO).unwrap();
    rt.remove(&s.id, Duration::ZERO).unwrap();
    assert!(observed(rt, &s.id).is_none());
}

#[test]
fn agent_restarts_a_crashed_replica_with_backoff() {
    let Some(h) = harness("selfheal", |_| {}) else {
        return;
    };
    let rt = h.rt();
    let s = spec("crashy", "echo run; exit 3", serde_json::json!({}));
    let bo = BackoffPolicy {
        initial_ms: 200,
        max_ms: 1000,
    };
    let desired = vec![s.clone()];
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let r = reconcile(rt, &desired, now(), &bo);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        wait_exit(rt, &s.id, Duration::from_secs(5)),
        ExitOutcome::Exited { code: 3 }
    );
    let restarted = wait_for(Duration::from_secs(5), || {
        let r = reconcile(rt, &desired, now(), &bo);
        r.observed
            .iter()
            .find(|o| o.id == s.id && o.restart_count >= 2)
            .cloned()
    });
    assert!(restarted.is_some(), "restarted twice with back-off");
    assert!(stdout(rt, &s.id).matches("run\n").count() >= 2);
    reconcile(rt, &[], now(), &bo);
    assert!(rt.status().unwrap().is_empty());
}
