//! RPC handlers of the agent protocol (`nexus.agent.*`), the node join (`nexus.join`) and log
//! streaming for the CLI (`nexus.logs`), and the network policy view for
//! `nexus debug troubleshoot --network` (`nexus.debug.network`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use nexus_api::agent::{
    FeedItem, FeedRequest, Heartbeat, HeartbeatResponse, InstanceReport, LogChunk, LogChunkAck,
    LogsRequest, Phase, RegisterRequest, RegisterResponse, kinds,
};
use nexus_api::network::{DebugNetworkRequest, DebugNetworkResponse};
use nexus_ledger::{NodeInfo, Op};
use nexus_transport::join::{JOIN_KIND, JoinRequest, JoinResponse, verify_join};
use nexus_transport::pki::{Role, Validity, validate_name};
use nexus_transport::rpc::{Access, Context, Router, channel_stream};
use nexus_transport::{ErrorCode, Identity, RpcError};

use super::Nodes;

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

fn node_identity(ctx: &Context) -> Result<&Identity, RpcError> {
    let id = ctx.identity()?;
    if id.role != Role::Node {
        return Err(RpcError::new(
            ErrorCode::PermissionDenied,
            "only node certificates speak the agent protocol",
        ));
    }
    Ok(id)
}

/// The readiness-relevant part of a report: a change triggers a scheduling round.
fn signature(instances: &[InstanceReport]) -> Vec<(String, bool, bool, Option<std::net::IpAddr>)> {
    let mut v: Vec<_> = instances
        .iter()
        .map(|i| {
            (
                i.id.dir_name(),
                i.ready,
                i.phase == Phase::Exited,
                i.address,
            )
        })
        .collect();
    v.sort();
    v
}

pub(super) fn routes(nodes: &Arc<Nodes>, r: &mut Router) {
    let n = nodes.clone();
    r.unary(
        kinds::REGISTER,
        Access::Roles(vec![Role::Node]),
        move |ctx: Context, req: RegisterRequest| {
            let n = n.clone();
            async move {
                let id = node_identity(&ctx)?.clone();
                let info = NodeInfo {
                    name: id.name.clone(),
                    address: req.address.clone(),
                    public_key: id.public_key,
                    labels: req.labels.clone(),
                    cpu_millis: req.capacity.cpu_millis,
                    memory_bytes: req.capacity.memory_bytes,
                    gpus: req.capacity.gpus,
                };
                {
                    let mut inner = n.lock();
                    let a = inner.agents.entry(id.name.clone()).or_default();
                    a.registration = Some(req);
                    a.last_seen = Some(Instant::now());
                }
                let height = n
                    .submit(vec![Op::NodeJoin { node: info }])
                    .await
                    .map_err(|e| RpcError::new(ErrorCode::Unavailable, e))?;
                n.wake.notify_one();
                Ok(RegisterResponse {
                    replica: n.replica.clone(),
                    height,
                    heartbeat_ms: n.opts.heartbeat.as_millis() as u64,
                    node_timeout_ms: n.opts.node_timeout.as_millis() as u64,
                })
            }
        },
    );
    let n = nodes.clone();
    r.unary(
        kinds::HEARTBEAT,
        Access::Roles(vec![Role::Node]),
        move |ctx: Context, hb: Heartbeat| {
            let n = n.clone();
            async move {
                let name = node_identity(&ctx)?.name.clone();
                let live = {
                    let state = n.ledger.state();
                    state
                        .nodes
                        .get(&name)
                        .is_some_and(|s| s.lost_height.is_none())
                };
                let height = n.ledger.height();
                let changed = {
                    let mut inner = n.lock();
                    let a = inner.agents.entry(name).or_default();
                    let before: Vec<InstanceReport> = a.instances.values().cloned().collect();
                    let changed = !a.reported || signature(&before) != signature(&hb.instances);
                    a.instances = hb
                        .instances
                        .into_iter()
                        .map(|i| (i.id.clone(), i))
                        .collect();
                    a.last_seen = Some(Instant::now());
                    a.reported = true;
                    a.acting_on = hb.acting_on;
                    a.policy = hb.policy;
                    if let Some(c) = hb.counters {
                        a.counters = c;
                    }
                    if let Some(r) = a.registration.as_mut() {
                        r.conditions = hb.conditions;
                    }
                    let registered = a.registration.is_some() && live;
                    (changed, registered)
                };
                if changed.0 {
                    n.wake.notify_one();
                }
                Ok(HeartbeatResponse {
                    height,
                    registered: changed.1,
                })
            }
        },
    );
    let n = nodes.clone();
    r.streaming(
        kinds::FEED,
        Access::Roles(vec![Role::Node]),
        move |ctx: Context, _req: FeedRequest| {
            let n = n.clone();
            async move {
                let name = node_identity(&ctx)?.name.clone();
                let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<FeedItem, RpcError>>(64);
                let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<FeedItem>(64);
                let mut sets = n.subscribe_set(&name);
                let mut policy = n.policy.subscribe();
                n.lock()
                    .agents
                    .entry(name.clone())
                    .or_default()
                    .feeds
                    .push((conn, cmd_tx));
                tokio::spawn(async move {
                    sets.mark_changed();
                    policy.mark_changed();
                    loop {
                        let item = tokio::select! {
                            changed = sets.changed() => {
                                if changed.is_err() {
                                    break;
                                }
                                let set = sets.borrow_and_update().clone();
                                match set {
                                    Some(set) => FeedItem::Assignments((*set).clone()),
                                    None => continue,
                                }
                            }
                            changed = policy.changed() => {
                                if changed.is_err() {
                                    break;
                                }
                                let feed = policy.borrow_and_update().clone();
                                match feed {
                                    Some(f) => FeedItem::Policy((*f).clone()),
                                    None => continue,
                                }
                            }
                            cmd = cmd_rx.recv() => match cmd {
                                Some(c) => c,
                                None => break,
                            },
                            _ = tx.closed() => break,
                        };
                        if tx.send(Ok(item)).await.is_err() {
                            break;
                        }
                    }
                    if let Some(a) = n.lock().agents.get_mut(&name) {
                        a.feeds.retain(|(c, _)| *c != conn);
                    }
                });
                Ok(channel_stream(rx))
            }
        },
    );
    let n = nodes.clone();
    r.unary(
        kinds::LOG_CHUNK,
        Access::Roles(vec![Role::Node]),
        move |ctx: Context, chunk: LogChunk| {
            let n = n.clone();
            async move {
                let name = node_identity(&ctx)?.name.clone();
                let keep_going = n.logs.deliver(&n, &name, chunk).await;
                Ok(LogChunkAck { keep_going })
            }
        },
    );
    let n = nodes.clone();
    r.streaming(
        kinds::LOGS,
        Access::Authenticated,
        move |_ctx: Context, req: LogsRequest| {
            let n = n.clone();
            async move { n.logs.open(&n, req).map(channel_stream) }
        },
    );
    let n = nodes.clone();
    r.unary(
        nexus_api::kinds::DEBUG_NETWORK,
        Access::Authenticated,
        move |_ctx: Context, _req: DebugNetworkRequest| {
            let n = n.clone();
            async move {
                let (feed, nodes) = n.network_debug();
                Ok(DebugNetworkResponse {
                    replica: n.replica.clone(),
                    feed: feed.map(|f| (*f).clone()).unwrap_or_default(),
                    nodes,
                })
            }
        },
    );
    let n = nodes.clone();
    r.unary(
        JOIN_KIND,
        Access::Public,
        move |_ctx: Context, req: JoinRequest| {
            let n = n.clone();
            async move { join(&n, &req) }
        },
    );
}

fn join(n: &Nodes, req: &JoinRequest) -> Result<JoinResponse, RpcError> {
    let ca = n.ca.as_ref().ok_or_else(|| {
        RpcError::new(
            ErrorCode::FailedPrecondition,
            "this replica has no CA key and cannot admit nodes; join through another replica",
        )
    })?;
    let tokens = (n.opts.join_tokens)();
    let now = SystemTime::now();
    let approval = verify_join(
        ca,
        |id| tokens.iter().find(|t| t.id == id).cloned(),
        req,
        now,
    )?;
    validate_name(&approval.node_name)
        .map_err(|e| RpcError::invalid_argument(format!("node name: {e}")))?;
    let name = approval.node_name.clone();
    let (resp, identity) = approval.issue(ca, Validity::leaf_default(now), Vec::new())?;
    tracing::info!(node = %name, identity = %identity, "node joined: certificate issued");
    Ok(resp)
}
