//! The policy benchmark (root): how long a policy change takes to be enforced on the node, what
//! an incremental apply costs by size, and TCP throughput with and without the programs attached
//! (iperf3 when installed, else `nx-probe blast`). Returns a printable report.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::compile::{CompileOptions, PolicyObject, WorkloadEndpoints, WorkloadId, compile};
use crate::loader::{LoaderOptions, PolicyLoader, Replica};
use crate::testbed::{Host, Testbed};
use nexus_schemas::{EgressRule, IngressRule, NetworkPolicySpec, PolicyPeer, PolicyPort, Protocol};

/// Benchmark knobs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `nx-probe` binary.
    pub probe_bin: PathBuf,
    /// Policy flips to time.
    pub samples: usize,
    /// Seconds per throughput run.
    pub seconds: u32,
    /// Throughput runs per configuration.
    pub rounds: usize,
}

/// One throughput comparison.
#[derive(Debug, Clone)]
pub struct Throughput {
    pub path: String,
    pub tool: String,
    /// One rate per round.
    pub without_bps: Vec<f64>,
    pub with_bps: Vec<f64>,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl Throughput {
    /// Mean with / mean without.
    pub fn ratio(&self) -> f64 {
        mean(&self.with_bps) / mean(&self.without_bps).max(1.0)
    }

    /// The lowest and highest ratio of one round's pair (how noisy the machine was).
    pub fn ratio_range(&self) -> (f64, f64) {
        let r: Vec<f64> = self
            .with_bps
            .iter()
            .zip(&self.without_bps)
            .map(|(w, wo)| w / wo.max(1.0))
            .collect();
        let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    }
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    /// Policy change -> a probe connect() sees the new verdict (apply call included).
    pub enforce: Vec<Duration>,
    /// The `apply` call alone, for the same flips.
    pub apply: Vec<Duration>,
    /// A probe round trip with no change, for reference.
    pub probe_rtt: Vec<Duration>,
    /// Flips whose first probe after `apply` already saw the new verdict.
    pub first_probe_hits: usize,
    /// (entries changed, apply time) for growing changes.
    pub bulk: Vec<(usize, Duration)>,
    pub throughput: Vec<Throughput>,
    /// (case, verdict, mean ns per packet) of the ingress program under BPF_PROG_TEST_RUN.
    pub per_packet: Vec<(String, u32, u32)>,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "policy change -> enforced on the node ({} flips)",
            self.enforce.len()
        )?;
        writeln!(f, "  {:<44} {:>12} {:>12} {:>12}", "", "p50", "p99", "max")?;
        for (name, v) in [
            ("apply + first probe sees new verdict", &self.enforce),
            ("  of which PolicyLoader::apply", &self.apply),
            ("probe round trip, no change (reference)", &self.probe_rtt),
        ] {
            writeln!(
                f,
                "  {:<44} {:>12} {:>12} {:>12}",
                name,
                us(pct(v, 0.5)),
                us(pct(v, 0.99)),
                us(pct(v, 1.0))
            )?;
        }
        writeln!(
            f,
            "  the first probe after apply saw the new verdict in {} of {} flips",
            self.first_probe_hits,
            self.enforce.len()
        )?;
        writeln!(f, "incremental apply by size (rules added, then removed)")?;
        for (n, d) in &self.bulk {
            writeln!(
                f,
                "  {:>6} entries {:>12}  ({:.2} µs/entry)",
                n,
                us(*d),
                d.as_secs_f64() * 1e6 / (*n).max(1) as f64
            )?;
        }
        writeln!(
            f,
            "ingress program per packet (BPF_PROG_TEST_RUN, 1,000,000 runs each)"
        )?;
        for (case, verdict, ns) in &self.per_packet {
            let v = if *verdict == 1 { "pass" } else { "drop" };
            writeln!(f, "  {case:<52} {v:>5} {ns:>6} ns")?;
        }
        writeln!(f, "TCP throughput with / without the programs attached")?;
        writeln!(
            f,
            "  {:<36} {:>8} {:>12} {:>12} {:>7} {:>15}",
            "path", "tool", "without", "with", "ratio", "per-round range"
        )?;
        for t in &self.throughput {
            let (lo, hi) = t.ratio_range();
            writeln!(
                f,
                "  {:<36} {:>8} {:>7.2} Gb/s {:>7.2} Gb/s {:>7.3} {:>7.3}-{:.3}",
                t.path,
                t.tool,
                mean(&t.without_bps) / 1e9,
                mean(&t.with_bps) / 1e9,
                t.ratio(),
                lo,
                hi
            )?;
        }
        Ok(())
    }
}

fn err(e: impl fmt::Display) -> String {
    e.to_string()
}

fn endpoints(name: &str, hosts: &[&Host]) -> WorkloadEndpoints {
    WorkloadEndpoints {
        workload: WorkloadId::new("default", name),
        labels: [("app".to_string(), name.to_string())].into(),
        addrs: hosts.iter().flat_map(|h| h.addrs()).collect(),
    }
}

fn peer(app: &str) -> PolicyPeer {
    PolicyPeer {
        selector: Some([("app".to_string(), app.to_string())].into()),
        namespace: None,
        cidr: None,
    }
}

fn allow_policy(from: &str, ports: &[u16], isolate_source: bool) -> Vec<PolicyObject> {
    let ports = ports
        .iter()
        .map(|p| PolicyPort {
            port: u32::from(*p),
            protocol: Protocol::Tcp,
        })
        .collect();
    let mut out = vec![PolicyObject {
        namespace: "default".into(),
        name: "api".into(),
        spec: NetworkPolicySpec {
            selector: [("app".to_string(), "api".to_string())].into(),
            policy_types: Vec::new(),
            ingress: vec![IngressRule {
                from: vec![peer(from)],
                ports,
            }],
            egress: Vec::new(),
        },
    }];
    if isolate_source {
        // web may only talk to api, and nobody may connect to web: both directions checked.
        out.push(PolicyObject {
            namespace: "default".into(),
            name: "web".into(),
            spec: NetworkPolicySpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                policy_types: Vec::new(),
                ingress: Vec::new(),
                egress: vec![EgressRule {
                    to: vec![peer("api")],
                    ports: Vec::new(),
                }],
            },
        });
    }
    out
}

/// Runs the benchmark. Needs root, iproute2 and cgroup2 (see [`crate::testbed::skip_reason`]).
pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    let mut tb = Testbed::new(&opts.probe_bin).map_err(err)?;
    let web = tb.add_host(1, 2, "web", true).map_err(err)?;
    let api = tb.add_host(1, 3, "api", true).map_err(err)?;
    tb.spawn(&api, &["serve", "8080"]).map_err(err)?;
    let lopts = LoaderOptions::new(format!("{}-bench", tb.id));
    let result = measure(&mut tb, &web, &api, &lopts, opts);
    let cleanup = PolicyLoader::uninstall(&lopts).map_err(err);
    let report = result?;
    cleanup?;
    Ok(report)
}

fn measure(
    tb: &mut Testbed,
    web: &Host,
    api: &Host,
    lopts: &LoaderOptions,
    opts: &BenchOptions,
) -> Result<BenchReport, String> {
    let mut report = BenchReport::default();
    let eps = vec![endpoints("web", &[web]), endpoints("api", &[api])];
    let copts = CompileOptions::default();
    let open = compile(
        &allow_policy("web", &[8080, 5201, 5202], true),
        &eps,
        &copts,
    );
    let closed = compile(
        &allow_policy("web", &[7070, 5201, 5202], true),
        &eps,
        &copts,
    );
    let replicas = [
        Replica {
            cgroup: web.cgroup.clone().ok_or("web has no cgroup")?,
            workload: WorkloadId::new("default", "web"),
            addrs: web.addrs(),
        },
        Replica {
            cgroup: api.cgroup.clone().ok_or("api has no cgroup")?,
            workload: WorkloadId::new("default", "api"),
            addrs: api.addrs(),
        },
    ];
    let mut loader = PolicyLoader::open(lopts).map_err(err)?;
    loader.reconcile(&open, &replicas).map_err(err)?;

    // 1. Policy flips: time until a connect() from web sees the new verdict.
    let mut prober = tb.prober(web).map_err(err)?;
    let target = format!("{}:8080", api.v4);
    let wait = Duration::from_millis(500);
    for _ in 0..20 {
        prober.probe("connect", &target, wait).map_err(err)?;
    }
    for i in 0..opts.samples {
        let (next, want) = if i % 2 == 0 {
            (&closed, "EPERM")
        } else {
            (&open, "ok")
        };
        let t0 = Instant::now();
        loader.apply(next).map_err(err)?;
        let applied = t0.elapsed();
        let mut tries = 0;
        loop {
            let got = prober.probe("connect", &target, wait).map_err(err)?;
            if got == want {
                break;
            }
            tries += 1;
            if tries > 100 {
                return Err(format!("verdict never became {want} (last: {got})"));
            }
        }
        report.enforce.push(t0.elapsed());
        if tries == 0 {
            report.first_probe_hits += 1;
        }
        report.apply.push(applied);
        let t1 = Instant::now();
        prober.probe("connect", &target, wait).map_err(err)?;
        report.probe_rtt.push(t1.elapsed());
    }
    drop(prober);

    // 2. Incremental apply cost by size: N extra peers of api's rule, added then removed.
    for n in [10usize, 100, 1000, 10000] {
        let mut many = eps.clone();
        many.push(WorkloadEndpoints {
            workload: WorkloadId::new("default", "many"),
            labels: [("app".to_string(), "many".to_string())].into(),
            addrs: (0..n)
                .map(|i| {
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd99,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (i >> 16) as u16,
                        i as u16,
                    ))
                })
                .collect(),
        });
        let base = compile(&allow_policy("many", &[8080], false), &many[..2], &copts);
        let big = compile(&allow_policy("many", &[8080], false), &many, &copts);
        loader.apply(&base).map_err(err)?;
        let st = loader.apply(&big).map_err(err)?;
        report.bulk.push((st.map_ops, st.elapsed));
        let st = loader.apply(&base).map_err(err)?;
        report.bulk.push((st.map_ops, st.elapsed));
    }
    loader.apply(&open).map_err(err)?;

    // 3. Throughput over the veth path (web -> api, both isolated, rules matched) and over
    // loopback inside api (programs run, loopback exemption), without and with the programs.
    let iperf = Command::new("iperf3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if iperf {
        tb.exec_background(api, &["iperf3", "-s", "-p", "5201"])
            .map_err(err)?;
        tb.exec_background(api, &["iperf3", "-s", "-p", "5202"])
            .map_err(err)?;
    } else {
        tb.spawn(api, &["sink", "5201", "5202"]).map_err(err)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let paths = [
        (
            format!("veth web -> api ({})", api.v4),
            web,
            format!("{}", api.v4),
            "5201",
        ),
        (
            "loopback inside api (127.0.0.1)".to_string(),
            api,
            "127.0.0.1".to_string(),
            "5202",
        ),
    ];
    for (name, from, addr, port) in paths {
        let mut without = Vec::new();
        let mut with = Vec::new();
        // ABBA order (without, with, with, without, ...) cancels slow drifts on a busy machine.
        for round in 0..opts.rounds.max(1) {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for attached in order {
                let list: &[Replica] = if attached { &replicas } else { &[] };
                loader.reconcile(&open, list).map_err(err)?;
                let bps = throughput(tb, from, &addr, port, opts.seconds, iperf)
                    .map_err(|e| format!("{name} round {round}: {e}"))?;
                if attached {
                    with.push(bps)
                } else {
                    without.push(bps)
                }
            }
        }
        report.throughput.push(Throughput {
            path: name,
            tool: if iperf { "iperf3" } else { "nx-probe" }.into(),
            without_bps: without,
            with_bps: with,
        });
    }
    loader.reconcile(&open, &replicas).map_err(err)?;

    // 4. The ingress program alone, per packet, from this process's own cgroup.
    let own = own_cgroup_id(&loader.environment().cgroup2)?;
    let as_workload = |name: &str| Replica {
        cgroup: PathBuf::new(),
        workload: WorkloadId::new("default", name),
        addrs: api.addrs(),
    };
    let from_web = tcp4(web.v4.octets(), api.v4.octets(), 8080);
    let from_other = tcp4([10, 231, 1, 99], api.v4.octets(), 8080);
    let many_peer = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 4321);
    let from_many = tcp6(many_peer.octets(), api.v6.octets(), 8080);
    let mut cases: Vec<(String, &str, &[u8])> = vec![
        (
            "not isolated (workload without policy)".into(),
            "other",
            &from_web,
        ),
        (
            "isolated, allowed by a /128 rule (small table)".into(),
            "api",
            &from_web,
        ),
        (
            "isolated, denied (2 lookups, deny counted)".into(),
            "api",
            &from_other,
        ),
    ];
    let run_cases = |loader: &mut PolicyLoader,
                     cases: &mut Vec<(String, &str, &[u8])>,
                     out: &mut Vec<(String, u32, u32)>|
     -> Result<(), String> {
        for (case, workload, pkt) in cases.drain(..) {
            loader
                .configure_cgroup(own, &as_workload(workload))
                .map_err(err)?;
            let (verdict, ns) = loader
                .test_run(crate::loader::Hook::Ingress, pkt, 1_000_000)
                .map_err(err)?;
            out.push((case, verdict, ns));
        }
        Ok(())
    };
    let mut per_packet = Vec::new();
    let result = run_cases(&mut loader, &mut cases, &mut per_packet).and_then(|()| {
        let mut many = eps.clone();
        many.push(WorkloadEndpoints {
            workload: WorkloadId::new("default", "many"),
            labels: [("app".to_string(), "many".to_string())].into(),
            addrs: (0..20000u32)
                .map(|i| {
                    IpAddr::V6(Ipv6Addr::new(
                        0xfd99,
                        0,
                        0,
                        0,
                        0,
                        0,
                        (i >> 16) as u16,
                        i as u16,
                    ))
                })
                .collect(),
        });
        let big = compile(&allow_policy("many", &[8080], false), &many, &copts);
        loader.apply(&big).map_err(err)?;
        let mut cases: Vec<(String, &str, &[u8])> = vec![(
            "isolated, allowed by a /128 rule (20,000 rules)".into(),
            "api",
            &from_many,
        )];
        run_cases(&mut loader, &mut cases, &mut per_packet)
    });
    loader.detach(own).map_err(err)?;
    result?;
    report.per_packet = per_packet;
    Ok(report)
}

/// The cgroup2 id of this process's cgroup.
fn own_cgroup_id(cgroup2: &std::path::Path) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(err)?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("no cgroup2 entry in /proc/self/cgroup")?;
    let dir = cgroup2.join(rel.trim_start_matches('/'));
    crate::sys::cgroup_id(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

const ETH_HEADER: [u8; 14] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];

fn tcp_header(dport: u16) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t
}

/// An Ethernet + IPv4 + TCP SYN frame.
fn tcp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = ETH_HEADER.to_vec();
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&tcp_header(dport));
    p
}

/// An Ethernet + IPv6 + TCP SYN frame.
fn tcp6(src: [u8; 16], dst: [u8; 16], dport: u16) -> Vec<u8> {
    let mut p = ETH_HEADER.to_vec();
    p[12] = 0x86;
    p[13] = 0xdd;
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&20u16.to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&dst);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&tcp_header(dport));
    p
}

fn throughput(
    tb: &Testbed,
    from: &Host,
    addr: &str,
    port: &str,
    seconds: u32,
    iperf: bool,
) -> Result<f64, String> {
    if !iperf {
        let target = format!("{addr}:{port}");
        let secs = seconds.to_string();
        let out = tb
            .run_probe(from, &["blast", &target, &secs])
            .map_err(err)?;
        return out.trim().parse::<f64>().map_err(err);
    }
    let secs = seconds.to_string();
    let json = tb
        .exec(from, &["iperf3", "-c", addr, "-p", port, "-t", &secs, "-J"])
        .map_err(err)?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(err)?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| "iperf3 reported no rate".to_string())
}
