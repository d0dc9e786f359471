//! One replica connection: connect with the node certificate, register, follow the feed,
//! heartbeat (every interval and whenever the instance reports change), re-register when the
//! replica forgot us or our labels changed. On any failure: reconnect after an exponential
//! back-off with jitter (100 ms doubling to `max_backoff`), forever.

use std::sync::Arc;
use std::time::Duration;

use nexus_api::agent::{
    FeedItem, FeedRequest, Heartbeat, HeartbeatResponse, RegisterRequest, RegisterResponse, kinds,
};
use nexus_transport::pki::cert_der_from_pem;
use nexus_transport::quic::{ClientOptions, ClientTls, QuicOptions, ServerTrust};
use nexus_transport::rpc::{RpcClient, RpcConfig};

use crate::identity::resolve;
use crate::{Agent, lock};

pub(crate) async fn run(agent: Arc<Agent>, index: usize) {
    let mut delay = Duration::from_millis(100);
    loop {
        let server = agent.cfg.servers[index].clone();
        match once(&agent, index, &mut delay).await {
            Ok(()) => tracing::info!(node = %agent.cfg.name, %server, "replica closed the feed"),
            Err(e) => tracing::debug!(node = %agent.cfg.name, %server, "replica session: {e}"),
        }
        lock(&agent.feeds).remove(&index);
        lock(&agent.policy_feeds).remove(&index);
        let jitter = rand::random::<u64>() % (delay.as_millis() as u64 / 4 + 1);
        tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
        delay = (delay * 2).min(agent.cfg.max_backoff);
    }
}

async fn register(agent: &Agent, client: &RpcClient) -> Result<RegisterResponse, String> {
    let (labels, conditions) = agent.registration.borrow().clone();
    let req = RegisterRequest {
        address: agent.cfg.address.clone(),
        capacity: agent.capacity,
        labels,
        conditions,
        agent_version: env!("CARGO_PKG_VERSION").into(),
    };
    client
        .call(kinds::REGISTER, &req)
        .await
        .map_err(|e| format!("register: {e}"))
}

/// A session notices a replica that went away within a few seconds: keep-alives every second,
/// and the connection is given up after 5 s without a packet. (A replica killed and restarted
/// on the same address does not know the old connection and cannot reset it; with QUIC's
/// default 30 s the agent would reconnect only after the replica's grace for silent nodes,
/// twice the node timeout, had run out, and lose its node.)
fn session_options() -> ClientOptions {
    ClientOptions {
        quic: QuicOptions {
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            ..QuicOptions::default()
        },
        ..ClientOptions::default()
    }
}

async fn once(agent: &Arc<Agent>, index: usize, delay: &mut Duration) -> Result<(), String> {
    let addr = resolve(&agent.cfg.servers[index]).map_err(|e| e.to_string())?;
    let ca = cert_der_from_pem(&agent.identity.ca_pem).map_err(|e| e.to_string())?;
    let tls = ClientTls::new(
        ServerTrust::Ca(ca),
        Some(&agent.identity.cert),
        &session_options(),
    )
    .map_err(|e| e.to_string())?;
    let client = RpcClient::connect(
        &agent.endpoint,
        addr,
        &agent.cfg.server_name,
        &tls,
        RpcConfig::default(),
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    let reg = register(agent, &client).await?;
    *delay = Duration::from_millis(100);
    tracing::info!(node = %agent.cfg.name, replica = %reg.replica, height = reg.height, "registered");
    let mut feed = client
        .call_stream::<_, FeedItem>(kinds::FEED, &FeedRequest {})
        .await
        .map_err(|e| format!("feed: {e}"))?;
    let hb_every = Duration::from_millis(reg.heartbeat_ms.clamp(100, 60_000));
    let heartbeats = tokio::spawn(heartbeat_loop(agent.clone(), client.clone(), hb_every));
    let result = loop {
        match feed.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(format!("feed: {e}")),
            Some(Ok(FeedItem::Assignments(set))) => {
                if set.node != agent.cfg.name || !set.verify() {
                    tracing::warn!(
                        node = %agent.cfg.name,
                        server = %agent.cfg.servers[index],
                        "ignoring an assignment set that is not ours or does not match its hash"
                    );
                    continue;
                }
                lock(&agent.feeds).insert(index, set);
                agent.evaluate();
            }
            Some(Ok(FeedItem::Policy(feed))) => {
                if !feed.verify() {
                    tracing::warn!(
                        node = %agent.cfg.name,
                        server = %agent.cfg.servers[index],
                        "ignoring a network policy feed that does not match its hash"
                    );
                    continue;
                }
                lock(&agent.policy_feeds).insert(index, feed);
                agent.evaluate_policy();
            }
            Some(Ok(FeedItem::Logs(req))) => {
                crate::logs::serve(agent, client.clone(), req);
            }
            Some(Ok(FeedItem::CancelLogs { session })) => {
                if let Some(tasks) = lock(&agent.log_tasks).remove(&session) {
                    for t in tasks {
                        t.abort();
                    }
                }
            }
        }
    };
    heartbeats.abort();
    client.close();
    result
}

async fn heartbeat_loop(agent: Arc<Agent>, client: RpcClient, every: Duration) {
    let mut status = agent.status.subscribe();
    let mut registration = agent.registration.subscribe();
    registration.borrow_and_update();
    let mut seq = 0u64;
    let mut counters_sent = 0u64;
    loop {
        seq += 1;
        let (policy, counters) = match &agent.enforcement {
            Some(e) => {
                let (version, counters) = e.counters();
                let fresh = version != counters_sent;
                counters_sent = version;
                (e.enforcing(), fresh.then(|| counters.as_ref().clone()))
            }
            None => (None, None),
        };
        let hb = Heartbeat {
            seq,
            acting_on: lock(&agent.current).hash.clone(),
            instances: status.borrow_and_update().as_ref().clone(),
            conditions: agent.registration.borrow().1.clone(),
            policy,
            counters,
        };
        match client
            .call::<_, HeartbeatResponse>(kinds::HEARTBEAT, &hb)
            .await
        {
            Ok(r) if !r.registered => {
                if let Err(e) = register(&agent, &client).await {
                    tracing::debug!("{e}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(node = %agent.cfg.name, "heartbeat: {e}");
                client.close(); // the feed loop sees the connection end and reconnects
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = status.changed() => if r.is_err() { return },
            r = registration.changed() => {
                if r.is_err() {
                    return;
                }
                registration.borrow_and_update();
                if let Err(e) = register(&agent, &client).await {
                    tracing::debug!("{e}");
                }
            }
        }
    }
}
