//! nexus-server: one control-plane replica. It opens the ledger, serves the client API
//! (`nexus-api`) over QUIC with mutual TLS, verifies that every request was signed by the key of
//! the certificate it arrived with (DESIGN.md BFT rule 2), and streams watches from the log.

mod convert;
pub mod gitops;
pub mod nodes;
pub mod replication;
mod service;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nexus_ledger::consensus::ValidatorKey;
use nexus_ledger::replicated::ReplicaConfig;
use nexus_ledger::{Ledger, LedgerConfig, Validator};
use nexus_transport::pki::{LeafCert, cert_der_from_pem};
use nexus_transport::quic::{Endpoint, ServerOptions, ServerTls};
use nexus_transport::rpc::{RpcConfig, RpcServer, ServerHandle};

pub use convert::object_info;
pub use gitops::{GitOps, GitOpsOptions};
pub use nodes::{Nodes, NodesOptions};
pub use replication::{Replication, ReplicationOptions};

/// Everything a replica needs to start.
#[derive(Clone)]
pub struct ReplicaOptions {
    pub cluster: String,
    /// This replica's name (its certificate is `replica:<name>`).
    pub name: String,
    pub listen: SocketAddr,
    /// Holds `ledger.redb`.
    pub data_dir: PathBuf,
    pub ca_pem: String,
    /// The CA key, when this replica may sign node certificates for joining agents.
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
    pub ledger: LedgerConfig,
    pub rpc: RpcConfig,
    /// Git sources: watchers, webhook endpoint, fetch credentials.
    pub gitops: GitOpsOptions,
    /// The genesis validators and where the other replicas are (empty: a one-replica
    /// cluster). Every replica runs consensus, alone or with others.
    pub replication: ReplicationOptions,
}

impl std::fmt::Debug for ReplicaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaOptions")
            .field("cluster", &self.cluster)
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificates: {0}")]
    Pki(String),
    #[error("cannot open the ledger in {path}: {message}")]
    Ledger { path: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error("cannot start the git webhook endpoint on {addr}: {message}")]
    Webhook { addr: SocketAddr, message: String },
}

/// Shared state of a running replica, handed to every handler.
pub(crate) struct Shared {
    pub cluster: String,
    pub name: String,
    pub addr: SocketAddr,
    pub ledger: Arc<Ledger>,
    pub watch: watch::Hub,
    /// Node agents, scheduling and live status.
    pub nodes: Arc<Nodes>,
    /// Git sources: sync controller, admission, status.
    pub gitops: Arc<GitOps>,
    /// Consensus links and replica status.
    pub replication: Arc<Replication>,
}

/// A running replica.
pub struct Replica {
    shared: Arc<Shared>,
    rpc: ServerHandle,
}

impl Replica {
    /// Opens the ledger and starts serving. Must be called inside a tokio runtime.
    pub async fn start(opts: ReplicaOptions) -> Result<Replica, StartError> {
        Self::start_with(opts, NodesOptions::default()).await
    }

    /// [`Replica::start`] with settings for node agents and scheduling.
    pub async fn start_with(
        opts: ReplicaOptions,
        nodes_opts: NodesOptions,
    ) -> Result<Replica, StartError> {
        nexus_transport::init_crypto();
        let ca_der = cert_der_from_pem(&opts.ca_pem)
            .map_err(|e| StartError::Pki(format!("cluster CA: {e}")))?;
        let leaf = LeafCert::from_pem(&opts.cert_pem, &opts.key_pem)
            .map_err(|e| StartError::Pki(format!("replica certificate: {e}")))?;
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| StartError::Ledger {
            path: opts.data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let tls = ServerTls::new(&ca_der, &leaf, &ServerOptions::default())
            .map_err(|e| StartError::Pki(e.to_string()))?;
        let endpoint = Endpoint::server(opts.listen, &tls).map_err(|e| StartError::Listen {
            addr: opts.listen,
            message: e.to_string(),
        })?;
        let addr = endpoint.local_addr().unwrap_or(opts.listen);
        let me = ValidatorKey(leaf.identity().public_key);
        let links = Arc::new(replication::Links::new(
            me,
            endpoint.clone(),
            replication::client_tls(&opts.ca_pem, &leaf).map_err(StartError::Pki)?,
            opts.rpc.clone(),
        ));
        let genesis = opts.replication.genesis_with(Validator {
            name: opts.name.clone(),
            public_key: me.0,
            address: addr.to_string(),
            power: 1,
        });
        let mut replica =
            ReplicaConfig::new(&opts.cluster, &opts.name, leaf.ed25519_seed(), genesis);
        if let Some(t) = opts.replication.timeouts {
            replica.timeouts = t;
        }
        let path = opts.data_dir.join("ledger.redb");
        let ledger_cfg = opts.ledger.clone();
        let net: Arc<dyn nexus_ledger::replicated::Network> = links.clone();
        let ledger = tokio::task::spawn_blocking(move || {
            Ledger::open_replicated(
                &path,
                ledger_cfg,
                replica,
                net,
                nexus_ledger::ledger::system_clock(),
            )
        })
        .await
        .map_err(|e| StartError::Ledger {
            path: opts.data_dir.display().to_string(),
            message: e.to_string(),
        })?
        .map_err(|e| StartError::Ledger {
            path: opts.data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let ledger = Arc::new(ledger);
        let replication = Replication::start(
            opts.name.clone(),
            me,
            ledger.clone(),
            links,
            opts.replication.addresses(),
        );
        let watch = watch::Hub::start(ledger.clone());
        let ca = match &opts.ca_key_pem {
            Some(key) => Some(
                nexus_transport::pki::CertificateAuthority::from_pem(&opts.ca_pem, key)
                    .map_err(|e| StartError::Pki(format!("cluster CA key: {e}")))?,
            ),
            None => None,
        };
        let nodes = Nodes::new(
            opts.name.clone(),
            leaf.signing_key().clone(),
            ledger.clone(),
            ca,
            nodes_opts,
        );
        nodes.start(watch.subscribe());
        let gitops = GitOps::new(
            opts.name.clone(),
            leaf.signing_key().clone(),
            ledger.clone(),
            opts.data_dir.clone(),
            opts.gitops.clone(),
        );
        if let Err(e) = gitops.start(watch.subscribe()).await {
            nodes.stop();
            return Err(StartError::Webhook {
                addr: opts.gitops.webhook_listen.unwrap_or(opts.listen),
                message: e.to_string(),
            });
        }
        let shared = Arc::new(Shared {
            cluster: opts.cluster.clone(),
            name: opts.name.clone(),
            addr,
            ledger,
            watch,
            nodes,
            gitops,
            replication,
        });
        let mut router = service::router(shared.clone());
        shared.nodes.routes(&mut router);
        shared.gitops.routes(&mut router);
        shared.replication.routes(&mut router);
        let rpc = RpcServer::new(endpoint, router, opts.rpc.clone()).spawn();
        shared.nodes.serving();
        tracing::info!(replica = %opts.name, %addr, height = shared.ledger.height(), "replica serving");
        Ok(Replica { shared, rpc })
    }

    /// The address the replica listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The replica's ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.shared.ledger
    }

    /// Stops serving and closes the ledger (every acknowledged request is already durable).
    /// The node side (agents, scheduling, live status).
    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.shared.nodes
    }

    /// The GitOps side (sources, status, webhook).
    pub fn gitops(&self) -> &Arc<GitOps> {
        &self.shared.gitops
    }

    /// The replication side (consensus links, replica status).
    pub fn replication(&self) -> &Arc<Replication> {
        &self.shared.replication
    }

    pub async fn shutdown(self) {
        self.shared.gitops.stop();
        self.shared.nodes.stop();
        self.shared.replication.stop();
        self.rpc.shutdown().await;
        self.shared.watch.stop();
        let ledger = self.shared.ledger.clone();
        let _ = tokio::task::spawn_blocking(move || ledger.shutdown()).await;
    }
}
