//! Outgoing consensus links: one QUIC connection per other replica, dialed from this replica's
//! own server socket with its replica certificate. A link accepts the connection only if the
//! peer's certificate is `replica:<name>` with exactly the validator key the ledger holds for
//! that name; it sends messages, in order, as raw frames on one long-lived one-way stream
//! (whatever queued meanwhile goes out in one write). Messages queue (bounded) while a peer is
//! unreachable and newer ones are dropped when the queue is full: consensus re-sends what
//! matters (rebroadcasts, status, sync).

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::RwLock;
use std::time::Duration;

use nexus_ledger::consensus::ValidatorKey;
use nexus_ledger::replicated::Network;
use nexus_transport::Role;
use nexus_transport::quic::{ClientTls, Endpoint};
use nexus_transport::rpc::{RpcClient, RpcConfig};
use tokio::sync::mpsc;

/// The one-way kind consensus bytes travel as.
pub const CONSENSUS_KIND: &str = "nexus.consensus";

/// Messages waiting per peer.
const QUEUE: usize = 4096;
/// Most messages sent in one write.
const BATCH: usize = 256;

/// Who a link dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub key: ValidatorKey,
    pub addr: String,
}

struct Link {
    target: Target,
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

/// The replica's [`Network`]: outgoing links by validator key.
pub struct Links {
    me: ValidatorKey,
    endpoint: Endpoint,
    tls: ClientTls,
    rpc: RpcConfig,
    runtime: tokio::runtime::Handle,
    links: RwLock<HashMap<ValidatorKey, Link>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("me", &self.me).finish()
    }
}

impl Links {
    /// Must be called inside a tokio runtime.
    pub fn new(me: ValidatorKey, endpoint: Endpoint, tls: ClientTls, rpc: RpcConfig) -> Self {
        Links {
            me,
            endpoint,
            tls,
            rpc,
            runtime: tokio::runtime::Handle::current(),
            links: RwLock::new(HashMap::new()),
        }
    }

    /// Makes the links match `targets` (this replica itself is skipped): new targets are
    /// dialed, changed ones redialed, gone ones closed.
    pub fn set_targets(&self, targets: &[Target]) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        let wanted: HashMap<ValidatorKey, &Target> = targets
            .iter()
            .filter(|t| t.key != self.me)
            .map(|t| (t.key, t))
            .collect();
        links.retain(|k, l| {
            let keep = wanted.get(k).is_some_and(|t| **t == l.target);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (k, t) in wanted {
            if links.contains_key(&k) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let task = self.runtime.spawn(run_link(
                t.clone(),
                rx,
                self.endpoint.clone(),
                self.tls.clone(),
                self.rpc.clone(),
            ));
            links.insert(
                k,
                Link {
                    target: t.clone(),
                    tx,
                    task,
                },
            );
        }
    }

    /// The replicas this one has links to, by name.
    pub fn targets(&self) -> Vec<Target> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        let mut t: Vec<Target> = links.values().map(|l| l.target.clone()).collect();
        t.sort_by(|a, b| a.name.cmp(&b.name));
        t
    }

    /// Closes every link.
    pub fn close(&self) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        for (_, l) in links.drain() {
            l.task.abort();
        }
    }
}

impl Network for Links {
    fn send(&self, to: ValidatorKey, msg: Vec<u8>) {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = links.get(&to) {
            let _ = l.tx.try_send(msg);
        }
    }

    fn broadcast(&self, msg: Vec<u8>) {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        for l in links.values() {
            let _ = l.tx.try_send(msg.clone());
        }
    }
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// Dials `t` (again and again, backing off), checks who answered, then sends what arrives.
async fn run_link(
    t: Target,
    mut rx: mpsc::Receiver<Vec<u8>>,
    endpoint: Endpoint,
    tls: ClientTls,
    rpc: RpcConfig,
) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let client = match resolve(&t.addr) {
            None => Err(format!("cannot resolve {}", t.addr)),
            Some(addr) => RpcClient::connect(&endpoint, addr, "localhost", &tls, rpc.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        let client = client.and_then(|c| {
            let ok = c.server().is_some_and(|id| {
                id.role == Role::Replica && id.name == t.name && id.public_key == t.key.0
            });
            if ok {
                Ok(c)
            } else {
                c.close();
                Err(format!(
                    "{} answered as {:?}, not as replica:{} with its validator key",
                    t.addr,
                    c.server().map(|i| i.to_string()),
                    t.name
                ))
            }
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                if !warned {
                    tracing::warn!(peer = %t.name, "cannot reach peer: {e}");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        tracing::info!(peer = %t.name, addr = %t.addr, "consensus link up");
        backoff = Duration::from_millis(100);
        warned = false;
        // The stream opens with the first message to send (the server reads a stream's first
        // message within its request timeout; a quiet replica must not lose its link).
        let mut stream: Option<nexus_transport::rpc::OneWayStream> = None;
        let mut batch = Vec::new();
        loop {
            let Some(msg) = rx.recv().await else {
                if let Some(s) = stream {
                    s.finish();
                }
                return;
            };
            batch.push(msg);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let open = match stream.as_mut() {
                Some(s) => s,
                None => match client.open_oneway_stream(CONSENSUS_KIND).await {
                    Ok(s) => stream.insert(s),
                    Err(e) => {
                        tracing::info!(peer = %t.name, "consensus link down: {e}");
                        break;
                    }
                },
            };
            let sent = open.send(&batch).await;
            batch.clear();
            if let Err(e) = sent {
                tracing::info!(peer = %t.name, "consensus link down: {e}");
                break;
            }
        }
        client.close();
        // A link that keeps breaking at once must not spin.
        tokio::time::sleep(backoff).await;
    }
}

/// Builds the client TLS config replicas dial each other with (trusting the cluster CA,
/// presenting this replica's certificate).
pub fn client_tls(
    ca_pem: &str,
    leaf: &nexus_transport::pki::LeafCert,
) -> Result<ClientTls, String> {
    use nexus_transport::quic::{ClientOptions, QuicOptions, ServerTrust};
    let ca = nexus_transport::pki::cert_der_from_pem(ca_pem).map_err(|e| e.to_string())?;
    ClientTls::new(
        ServerTrust::Ca(ca),
        Some(leaf),
        &ClientOptions {
            connect_timeout: Duration::from_secs(3),
            // A peer that restarted cannot reset our old connection (its stateless-reset key
            // is new): notice the silence quickly and dial again.
            quic: QuicOptions {
                idle_timeout: Duration::from_secs(2),
                keep_alive: Duration::from_millis(500),
                ..QuicOptions::default()
            },
            ..ClientOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}
