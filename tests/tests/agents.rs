//! Node agents end to end, with real processes: one `nexus server`, `nexus agent`s as child
//! processes running workloads with the process runtime. Self-heal: a killed workload process is
//! restarted, a restarted agent adopts its replicas, a killed agent's replicas move to other
//! nodes after the node timeout, agents keep workloads running while the control plane is down
//! and resync when it returns; logs stream through the control plane; `nexus up` brings up the
//! examples. Needs root (skips with a printed reason otherwise).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nexus_tests::fleet::{Fleet, can_run_agents, eventually, status, wait_nodes};
use nexus_tests::{Cluster, text};
use serde_json::Value;

/// A workload whose replicas print a line at start and then sleep.
fn sleeper(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: {replicas}\n  command: [\"sh\", \"-c\", \"echo started $NEXUS_REPLICA; exec sleep 3600\"]\n  resources: {{cpu: 100m, memory: 32Mi}}\n  terminationGracePeriodSeconds: 1\n"
    )
}

fn apply(cluster: &Cluster, dir: &std::path::Path, manifest: &str) {
    let f = dir.join(format!("m-{}.yaml", manifest.len()));
    std::fs::write(&f, manifest).unwrap();
    let out = cluster.nexus(&["apply", "-f", f.to_str().unwrap()]);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
}

/// The child's output once it exited, or None (and the child killed) after `within`.
fn wait_output(mut child: std::process::Child, within: Duration) -> Option<std::process::Output> {
    let t = Instant::now();
    while t.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn replicas(st: &Value) -> Vec<Value> {
    st.get("replicas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The status once `ready` replicas of the workload are ready.
fn ready(cluster: &Cluster, fleet: &Fleet, name: &str, ready: u64, timeout: Duration) -> Value {
    eventually(
        timeout,
        &format!("{ready} ready replicas of {name}"),
        || {
            format!(
                "status: {:?}\n{}",
                status(cluster, "workload", name),
                fleet.logs()
            )
        },
        || {
            status(cluster, "workload", name)
                .filter(|s| s["ready"] == ready && s["complete"] == true)
        },
    )
}

#[test]
fn killed_workload_restarts_agent_restart_adopts_logs_stream() {
    if !can_run_agents("killed_workload_restarts_agent_restart_adopts_logs_stream") {
        return;
    }
    let mut cluster = Cluster::init();
    let mut fleet = Fleet::new(&cluster, "10s");
    cluster.start();
    fleet.start("n1", "zone=a");
    apply(&cluster, cluster.dir.path(), &sleeper("w", 1));
    let st = ready(&cluster, &fleet, "w", 1, Duration::from_secs(30));
    let r0 = &replicas(&st)[0];
    assert_eq!(r0["node"], "n1");
    let address = r0["address"].as_str().unwrap_or_default().to_string();
    assert!(
        address.starts_with(&format!("10.{}.1.", fleet.pool)),
        "the replica has an address on node n1's subnet: {r0}"
    );
    let pid = r0["pid"].as_i64().unwrap();

    // Kill the replica (its init): the agent restarts it.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let st = eventually(
        Duration::from_secs(20),
        "the killed replica to be restarted",
        || fleet.logs(),
        || {
            status(&cluster, "workload", "w").filter(|s| {
                let r = &replicas(s)[0];
                r["restarts"] == 1 && r["ready"] == true && r["pid"].as_i64() != Some(pid)
            })
        },
    );
    let pid2 = replicas(&st)[0]["pid"].as_i64().unwrap();

    // Logs come from the agent through the control plane.
    let out = cluster.nexus(&["logs", "workload/w"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("started 0").count(),
        2,
        "two runs: {}",
        text(&out.stdout)
    );

    // kill -9 the agent and start it again: it adopts the running replica, no restart.
    fleet.agents[0].kill9();
    fleet.restart(0);
    std::thread::sleep(Duration::from_secs(2));
    let st = ready(&cluster, &fleet, "w", 1, Duration::from_secs(20));
    let r = &replicas(&st)[0];
    assert_eq!(r["pid"].as_i64(), Some(pid2), "adopted, not restarted: {r}");
    assert_eq!(r["restarts"], 1);
    assert_eq!(
        fleet.cgroup_pids().len(),
        2,
        "one copy (its init and sleep): {:?}",
        fleet.cgroup_pids()
    );
}

#[test]
fn killed_agent_replicas_are_rescheduled_after_node_timeout() {
    if !can_run_agents("killed_agent_replicas_are_rescheduled_after_node_timeout") {
        return;
    }
    let mut cluster = Cluster::init();
    let mut fleet = Fleet::new(&cluster, "2s");
    cluster.start();
    fleet.start("n1", "");
    fleet.start("n2", "");
    wait_nodes(&cluster, &fleet, 2);
    apply(&cluster, cluster.dir.path(), &sleeper("spread", 2));
    let st = ready(&cluster, &fleet, "spread", 2, Duration::from_secs(30));
    let mut nodes: Vec<String> = replicas(&st)
        .iter()
        .map(|r| r["node"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "spread over both nodes");
    // Follow the logs of the replica on n1: when n1's agent dies, the stream must end with an
    // error that names the node, not wait for ever.
    let on_n1 = replicas(&st)
        .iter()
        .find(|r| r["node"] == "n1")
        .and_then(|r| r["index"].as_u64())
        .expect("a replica on n1");
    let follow = cluster
        .command(&[
            "logs",
            "-f",
            "workload/spread",
            "--replica",
            &on_n1.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nexus logs -f");
    std::thread::sleep(Duration::from_millis(500));

    let t = Instant::now();
    fleet.agents[0].kill9();
    let st = eventually(
        Duration::from_secs(30),
        "both replicas on n2",
        || fleet.logs(),
        || {
            status(&cluster, "workload", "spread")
                .filter(|s| s["ready"] == 2 && replicas(s).iter().all(|r| r["node"] == "n2"))
        },
    );
    // Silence counts from the agent's last heartbeat (every 300 ms), up to 300 ms before the kill.
    assert!(
        t.elapsed() >= Duration::from_millis(1700),
        "not before the node timeout: {:?}",
        t.elapsed()
    );
    assert_eq!(st["nodes"], serde_json::json!(["n2"]));
    let out = wait_output(follow, Duration::from_secs(20)).unwrap_or_else(|| {
        panic!(
            "`nexus logs -f` still running after n1's agent died\n{}",
            fleet.logs()
        )
    });
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("node n1 disconnected"), "{err}");
    // The fact is in the log, attested by the replica.
    let audit = cluster.nexus(&["audit", "-o", "json"]);
    let audit = text(&audit.stdout);
    assert!(
        audit.contains("node_lost_attestation") && audit.contains("\"node_lost\""),
        "{audit}"
    );
    let cs = cluster.nexus(&["cluster", "status"]);
    let cs = text(&cs.stdout);
    assert!(
        cs.contains("Lost") && cs.contains("node n1 is lost"),
        "{cs}"
    );

    // n1 comes back: it rejoins, and its orphaned replica is stopped (nothing is assigned there).
    fleet.restart(0);
    eventually(
        Duration::from_secs(20),
        "n1 to rejoin and stop its stale replica",
        || format!("{}\n{:?}", fleet.logs(), fleet.cgroup_pids()),
        || {
            let cs = text(&cluster.nexus(&["cluster", "status"]).stdout);
            let n1_ready = cs
                .lines()
                .any(|l| l.starts_with("n1 ") && l.contains("Ready"));
            // Two replicas on n2 (an init and a sleep each); n1's stale copy is gone.
            (n1_ready && fleet.cgroup_pids().len() == 4).then_some(())
        },
    );
}

#[test]
fn agents_keep_workloads_running_while_the_control_plane_is_down() {
    if !can_run_agents("agents_keep_workloads_running_while_the_control_plane_is_down") {
        return;
    }
    let mut cluster = Cluster::init();
    let mut fleet = Fleet::new(&cluster, "10s");
    cluster.start();
    fleet.start("n1", "");
    apply(&cluster, cluster.dir.path(), &sleeper("steady", 1));
    let st = ready(&cluster, &fleet, "steady", 1, Duration::from_secs(30));
    let pid = replicas(&st)[0]["pid"].as_i64().unwrap();

    cluster.kill9();
    // Still healing without a control plane: kill the replica, the agent restarts it.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let state_dir = fleet.state_dir("n1").join("replicas");
    eventually(
        Duration::from_secs(20),
        "a restart while the control plane is down",
        || fleet.logs(),
        || {
            let dir = std::fs::read_dir(&state_dir).ok()?.flatten().next()?.path();
            let log = std::fs::read_to_string(dir.join("logs/stdout.log")).ok()?;
            (log.matches("started").count() == 2).then_some(())
        },
    );

    // The control plane returns: the agent reconnects and resyncs (a scale-up reaches it).
    cluster.start();
    apply(&cluster, cluster.dir.path(), &sleeper("steady", 2));
    let st = ready(&cluster, &fleet, "steady", 2, Duration::from_secs(40));
    let restarts: Vec<i64> = replicas(&st)
        .iter()
        .map(|r| r["restarts"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        restarts,
        [1, 0],
        "replica 0 kept its history: {st}\n--- server\n{}\n{}",
        cluster.server_log(),
        fleet.logs()
    );
}

#[test]
fn nexus_up_runs_the_examples() {
    if !can_run_agents("nexus_up_runs_the_examples") {
        return;
    }
    let cluster = Cluster::init(); // only for its config dir and environment
    let pool = 200 + (std::process::id() % 40) as u8;
    let dir = cluster.dir.path().join("up");
    let (mut child, summary, progress) = up(&cluster, &dir, pool);
    assert!(summary.contains("is up"), "summary: {summary}");
    let st = |name: &str| status(&cluster, "workload", name).unwrap_or_default();
    for (name, want) in [("web", 2), ("api", 2), ("db", 1)] {
        assert_eq!(st(name)["ready"], want, "{name}: {summary}");
    }
    let svc = status(&cluster, "service", "web").unwrap_or_default();
    let eps = svc["endpoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(eps.len(), 2, "{svc}");
    // The endpoint answers (a python http.server in the replica's own network namespace).
    let ep = eps[0].as_str().unwrap_or_default();
    let mut s = std::net::TcpStream::connect_timeout(&ep.parse().unwrap(), Duration::from_secs(2))
        .expect("connect to a web endpoint");
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");

    // What the summary suggests works: deploy a service and wait, wide listings, one replica's
    // logs, cluster status with every node ready.
    let out = cluster.nexus(&[
        "service",
        "deploy",
        "python3 -m http.server 9000",
        "--name",
        "files",
        "--replicas",
        "2",
        "--port",
        "9000",
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "service deploy: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("workload/files created")
            && text(&out.stdout).contains("service/files created"),
        "{}",
        text(&out.stdout)
    );
    let wide = text(&cluster.nexus(&["get", "workloads", "-o", "wide"]).stdout);
    let files = wide
        .lines()
        .find(|l| l.contains(" files "))
        .unwrap_or_default();
    assert!(
        files.contains("2/2 ready") && files.contains("nodes=node-"),
        "{wide}"
    );
    let out = cluster.nexus(&["logs", "workload/files", "--replica", "1"]);
    assert!(out.status.success(), "logs: {}", text(&out.stderr));
    let cs = text(&cluster.nexus(&["cluster", "status"]).stdout);
    assert_eq!(
        cs.lines()
            .filter(|l| l.starts_with("node-") && l.contains("Ready"))
            .count(),
        3,
        "{cs}"
    );
    // Four control-plane replicas by default, none unreachable.
    let reps: Vec<&str> = cs
        .lines()
        .filter(|l| l.starts_with('r') && l[1..].starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert!(
        reps.len() == 4 && reps.iter().all(|l| !l.contains("unreachable")),
        "{cs}"
    );

    // Ctrl-C: agents stop their replicas, then the control plane; nothing is left.
    let code = child.interrupt();
    let lines = progress.join().unwrap();
    assert!(code.success(), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("waiting for ")),
        "progress was shown: {lines:?}"
    );
    let bridges = || -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("nx{pool}b")))
            .collect()
    };
    assert!(bridges().is_empty(), "bridges left: {:?}", bridges());

    // Running it again resumes the same cluster: same log, and the service deployed above runs
    // again next to the examples.
    let (mut child, summary, progress) = up(&cluster, &dir, pool);
    assert!(summary.contains("is up"), "summary: {summary}");
    eventually(
        Duration::from_secs(40),
        "the resumed cluster to run everything again",
        || format!("{:?}", status(&cluster, "workload", "files")),
        || {
            (st("files")["ready"] == 2 && st("web")["ready"] == 2 && st("db")["ready"] == 1)
                .then_some(())
        },
    );
    // One version, written by the first run: the resumed cluster kept its log.
    let history = text(
        &cluster
            .nexus(&["history", "workload/files", "-o", "json"])
            .stdout,
    );
    let versions: Vec<Value> = serde_json::from_str(&history).unwrap_or_default();
    assert_eq!(versions.len(), 1, "{history}");
    child.interrupt();
    let _ = progress.join();
    assert!(bridges().is_empty(), "bridges left: {:?}", bridges());
}

type Progress = std::thread::JoinHandle<Vec<String>>;

/// Starts `nexus up` with the examples and reads its output until the summary is complete.
fn up(cluster: &Cluster, dir: &std::path::Path, pool: u8) -> (UpGuard, String, Progress) {
    let child = cluster
        .command(&[
            "up",
            "--dir",
            dir.to_str().unwrap(),
            "--network-pool",
            &format!("10.{pool}.0.0/16"),
            "-f",
            "manifests/examples",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = UpGuard(child);
    let stderr = child.0.stderr.take().unwrap();
    let progress = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let stdout = child.0.stdout.take().unwrap();
    let mut summary = String::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        summary.push_str(&line);
        summary.push('\n');
        if line.starts_with("Ctrl-C stops the cluster") {
            break;
        }
    }
    (child, summary, progress)
}

struct UpGuard(std::process::Child);

impl UpGuard {
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        self.0.wait().unwrap()
    }
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
        }
    }
}

/// `nexus cluster create` runs the same cluster as `nexus up` in the background (four replicas
/// by default), makes its context current, lists it, and `cluster delete` stops and removes it.
#[test]
fn cluster_create_runs_four_replicas_in_the_background_and_delete_removes_it() {
    if !can_run_agents("cluster_create_runs_four_replicas_in_the_background_and_delete_removes_it")
    {
        return;
    }
    let cluster = Cluster::init(); // only for its config dir and environment
    let out = cluster.nexus(&["cluster", "create", "bg", "--nodes", "1"]);
    assert!(
        out.status.success(),
        "cluster create: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let summary = text(&out.stdout);
    assert!(summary.contains("is up: 4 replica(s)"), "{summary}");
    let list = text(&cluster.nexus(&["cluster", "list"]).stdout);
    let row = list
        .lines()
        .find(|l| l.starts_with("bg "))
        .unwrap_or_default();
    assert!(row.contains("running") && row.contains(" 4 "), "{list}");
    // Every replica reports itself healthy at the same height once the node joined (the context
    // `bg` is current now).
    eventually(
        Duration::from_secs(30),
        "four healthy replicas and a ready node",
        || text(&cluster.nexus(&["cluster", "status"]).stdout),
        || {
            let cs = text(&cluster.nexus(&["cluster", "status"]).stdout);
            let healthy = cs
                .lines()
                .filter(|l| l.starts_with('r') && l.contains("healthy"))
                .count();
            let node = cs
                .lines()
                .any(|l| l.starts_with("node-") && l.contains("Ready"));
            (healthy == 4 && node).then_some(())
        },
    );
    let out = cluster.nexus(&["audit", "verify", "--all-replicas"]);
    assert!(
        out.status.success(),
        "audit verify --all-replicas: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );

    let out = cluster.nexus(&["cluster", "delete", "bg"]);
    assert!(
        out.status.success(),
        "cluster delete: {}",
        text(&out.stderr)
    );
    let list = text(&cluster.nexus(&["cluster", "list"]).stdout);
    assert!(!list.lines().any(|l| l.starts_with("bg ")), "{list}");
    let out = cluster.nexus(&["cluster", "delete", "bg"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "deleting twice: {}",
        text(&out.stderr)
    );
}
