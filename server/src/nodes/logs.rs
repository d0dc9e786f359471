//! Log streaming through the control plane: `nexus logs` asks a replica, the replica asks the
//! agents running the workload's replicas over their feeds ([`FeedItem::Logs`]), the agents
//! send [`LogChunk`]s back, and the replica forwards them to the CLI's stream. A session ends
//! when every instance sent its last chunk (not following) or the CLI goes away (the agents are
//! told to stop).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nexus_api::agent::{FeedItem, LogChunk, LogItem, LogRequest, LogsRequest, Stream};
use nexus_reconciler::model::InstanceId;
use nexus_transport::{ErrorCode, RpcError};
use tokio::sync::mpsc;

use super::Nodes;

type Tx = mpsc::Sender<Result<LogItem, RpcError>>;

/// How long a session that does not follow waits for its next chunk before it gives up on the
/// instances still open: an agent that lost its connection mid-answer (or a chunk that was never
/// sent) must not leave `nexus logs` waiting for ever.
const SILENCE: Duration = Duration::from_secs(15);

struct Session {
    tx: Tx,
    /// Instance → (replica index, node).
    placement: HashMap<InstanceId, (u32, String)>,
    /// Instances that have not sent their last chunk.
    open: BTreeSet<InstanceId>,
    follow: bool,
    /// When the session opened or last received a chunk.
    heard: Instant,
}

/// Open log sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    sessions: Mutex<HashMap<u64, Session>>,
    next: AtomicU64,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `req`; the receiver yields the CLI's items.
    pub fn open(
        &self,
        nodes: &Nodes,
        req: LogsRequest,
    ) -> Result<mpsc::Receiver<Result<LogItem, RpcError>>, RpcError> {
        let inner = nodes.lock();
        let schedule = inner.schedule.clone().ok_or_else(|| {
            RpcError::new(
                ErrorCode::Unavailable,
                "the control plane is still starting (waiting for the nodes to report); try again in a few seconds",
            )
        })?;
        let mut by_node: BTreeMap<String, Vec<InstanceId>> = BTreeMap::new();
        let mut placement = HashMap::new();
        for a in &schedule.assignments {
            let w = &a.id.replica.workload;
            if w.namespace != req.namespace
                || w.name != req.name
                || req.replica.is_some_and(|r| r != a.id.replica.index)
            {
                continue;
            }
            by_node
                .entry(a.node.clone())
                .or_default()
                .push(a.id.clone());
            placement.insert(a.id.clone(), (a.id.replica.index, a.node.clone()));
        }
        if placement.is_empty() {
            return Err(RpcError::not_found(match req.replica {
                Some(i) => format!(
                    "workload {}/{} has no replica {i} assigned",
                    req.namespace, req.name
                ),
                None => format!(
                    "workload {}/{} has no replicas assigned (does it exist?)",
                    req.namespace, req.name
                ),
            }));
        }
        let session = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(256);
        let mut open = BTreeSet::new();
        for (node, instances) in by_node {
            let feed = inner
                .agents
                .get(&node)
                .and_then(|a| a.feeds.last())
                .map(|(_, f)| f.clone());
            let asked = feed.is_some_and(|f| {
                f.try_send(FeedItem::Logs(LogRequest {
                    session,
                    instances: instances.clone(),
                    follow: req.follow,
                    tail_bytes: req.tail_bytes,
                }))
                .is_ok()
            });
            if asked {
                open.extend(instances);
            } else {
                for id in instances {
                    let _ = tx.try_send(Ok(LogItem {
                        replica: id.replica.index,
                        instance: id.to_string(),
                        node: node.clone(),
                        stream: Stream::Stderr,
                        data: Vec::new(),
                        eof: true,
                        error: Some(format!(
                            "node {node} is not connected to replica {}",
                            nodes.replica
                        )),
                    }));
                }
            }
        }
        drop(inner);
        if !open.is_empty() {
            self.lock().insert(
                session,
                Session {
                    tx,
                    placement,
                    open,
                    follow: req.follow,
                    heard: Instant::now(),
                },
            );
        }
        Ok(rx)
    }

    /// Forwards a chunk from `node`; false when nobody listens any more.
    pub async fn deliver(&self, nodes: &Nodes, node: &str, chunk: LogChunk) -> bool {
        let (tx, item, done) = {
            let mut sessions = self.lock();
            let Some(s) = sessions.get_mut(&chunk.session) else {
                return false;
            };
            let Some((index, placed)) = s.placement.get(&chunk.instance).cloned() else {
                return false;
            };
            if placed != node {
                return false; // only the node that runs an instance speaks for it
            }
            s.heard = Instant::now();
            if chunk.eof {
                s.open.remove(&chunk.instance);
            }
            let item = LogItem {
                replica: index,
                instance: chunk.instance.to_string(),
                node: node.to_string(),
                stream: chunk.stream,
                data: chunk.data,
                eof: chunk.eof,
                error: chunk.error,
            };
            let done = s.open.is_empty();
            let tx = s.tx.clone();
            if done {
                sessions.remove(&chunk.session);
            }
            (tx, item, done)
        };
        if tx.send(Ok(item)).await.is_err() {
            self.cancel(nodes, chunk.session);
            return false;
        }
        !done
    }

    /// Ends a session and tells its nodes to stop sending.
    fn cancel(&self, nodes: &Nodes, session: u64) {
        let Some(s) = self.lock().remove(&session) else {
            return;
        };
        let node_names: BTreeSet<String> = s.placement.values().map(|(_, n)| n.clone()).collect();
        let inner = nodes.lock();
        for name in node_names {
            if let Some(a) = inner.agents.get(&name) {
                for (_, f) in &a.feeds {
                    let _ = f.try_send(FeedItem::CancelLogs { session });
                }
            }
        }
    }

    /// Cancels sessions whose CLI went away, and ends the instances of a session that no agent
    /// can answer for any more: the node's agent is no longer connected to this replica, or (not
    /// following) nothing arrived for [`SILENCE`]. Each such instance gets an error item that
    /// says so, and the CLI's stream ends when no instance is left open.
    pub fn sweep(&self, nodes: &Nodes) {
        let gone: Vec<u64> = self
            .lock()
            .iter()
            .filter(|(_, s)| s.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.cancel(nodes, id);
        }
        let connected: BTreeSet<String> = nodes
            .lock()
            .agents
            .iter()
            .filter(|(_, a)| !a.feeds.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        let now = Instant::now();
        let mut ended = Vec::new();
        {
            let mut sessions = self.lock();
            for (id, s) in sessions.iter_mut() {
                let silent = !s.follow && now.duration_since(s.heard) > SILENCE;
                let stuck: Vec<InstanceId> = s
                    .open
                    .iter()
                    .filter(|i| {
                        silent
                            || s.placement
                                .get(*i)
                                .is_none_or(|(_, n)| !connected.contains(n))
                    })
                    .cloned()
                    .collect();
                for i in stuck {
                    s.open.remove(&i);
                    let (replica, node) = s.placement.get(&i).cloned().unwrap_or_default();
                    let why = if connected.contains(&node) {
                        format!(
                            "no log data from node {node} for {} s; try again",
                            SILENCE.as_secs()
                        )
                    } else {
                        format!(
                            "node {node} disconnected from replica {}; try again",
                            nodes.replica
                        )
                    };
                    let _ = s.tx.try_send(Ok(LogItem {
                        replica,
                        instance: i.to_string(),
                        node,
                        stream: Stream::Stderr,
                        data: Vec::new(),
                        eof: true,
                        error: Some(why),
                    }));
                }
                if s.open.is_empty() {
                    ended.push(*id);
                }
            }
        }
        for id in ended {
            self.cancel(nodes, id);
        }
    }
}
