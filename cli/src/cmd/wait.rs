//! Waiting for workloads to be ready (`apply --wait`, `service deploy --wait`, `nexus up`), with
//! progress lines that say what is still pending instead of a silent pause.

use std::time::{Duration, Instant};

use nexus_api::client::{GetRequest, GetResponse, ObjectInfo, Selector};
use nexus_api::kinds;
use serde_json::Value;

use crate::client::{Session, explain};

/// A workload's readiness as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub namespace: String,
    pub name: String,
    pub desired: u64,
    pub ready: u64,
    pub complete: bool,
    pub problems: Vec<String>,
}

fn progress(o: &ObjectInfo) -> Progress {
    let (_, namespace, name) = o.key();
    let st = o.status.clone().unwrap_or(Value::Null);
    let n = |p: &str| st.get(p).and_then(Value::as_u64).unwrap_or(0);
    Progress {
        desired: st
            .get("desired")
            .and_then(Value::as_u64)
            .or_else(|| o.object.pointer("/spec/replicas").and_then(Value::as_u64))
            .unwrap_or(0),
        ready: n("ready"),
        // A status computed for an older generation says nothing about this one.
        complete: st.get("complete").and_then(Value::as_bool).unwrap_or(false)
            && st.get("generation").and_then(Value::as_u64) == Some(o.generation),
        problems: st
            .get("problems")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        namespace,
        name,
    }
}

/// The workloads' readiness now.
pub async fn workloads(session: &Session) -> Result<Vec<Progress>, String> {
    let resp: GetResponse = session
        .call(
            kinds::GET,
            &GetRequest {
                selector: Selector {
                    kind: Some("Workload".into()),
                    ..Default::default()
                },
                consistent: false,
            },
        )
        .await
        .map_err(|e| explain(&e))?;
    Ok(resp.objects.iter().map(progress).collect())
}

/// One line: `waiting for 3/5 replicas: web 1/2, api 2/2, db 0/1`.
pub fn line(pending: &[Progress]) -> String {
    let want: u64 = pending.iter().map(|p| p.desired).sum();
    let ready: u64 = pending.iter().map(|p| p.ready.min(p.desired)).sum();
    let parts: Vec<String> = pending
        .iter()
        .map(|p| format!("{} {}/{}", p.name, p.ready, p.desired))
        .collect();
    format!(
        "waiting for {ready}/{want} replicas to be ready: {}",
        parts.join(", ")
    )
}

/// Waits until every named workload (`(namespace, name)`; empty = all) is rolled out and
/// ready, printing progress to stderr whenever it changes. Fails after `timeout`, naming what
/// is still pending and why.
pub async fn until_ready(
    session: &Session,
    names: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<Progress>, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut shown_problems: Vec<String> = Vec::new();
    loop {
        let all = workloads(session).await?;
        let watched: Vec<Progress> = all
            .into_iter()
            .filter(|p| {
                names.is_empty()
                    || names
                        .iter()
                        .any(|(ns, n)| *ns == p.namespace && *n == p.name)
            })
            .collect();
        let pending: Vec<Progress> = watched.iter().filter(|p| !p.complete).cloned().collect();
        if pending.is_empty() {
            return Ok(watched);
        }
        let l = line(&watched);
        if l != last {
            eprintln!("{l}");
            last = l;
        }
        for p in &pending {
            for pr in &p.problems {
                let msg = format!("  {}: {pr}", p.name);
                if !shown_problems.contains(&msg) {
                    eprintln!("{msg}");
                    shown_problems.push(msg);
                }
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = pending.iter().map(|p| p.name.clone()).collect();
            return Err(format!(
                "timed out after {timeout:?}: {} not ready ({})",
                names.join(", "),
                line(&pending)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
