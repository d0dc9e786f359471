//! `nexus server --config server.yaml`: runs one control-plane replica until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use nexus_server::{NodesOptions, Replica, ReplicaOptions};

use crate::config::{ServerConfig, read_text};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The replica's config (written by `nexus init`): default $XDG_DATA_HOME/nexus/local/server.yaml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override the listen address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub fn run(args: Args) -> u8 {
    crate::init_logging();
    let path = args
        .config
        .unwrap_or_else(|| crate::config::data_dir().join("local/server.yaml"));
    let (opts, nodes) =
        match options(&path, args.listen).and_then(|o| Ok((o, nodes_options(&path)?))) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ERROR;
        }
    };
    rt.block_on(async move {
        let replica = match Replica::start_with(opts, nodes).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        eprintln!(
            "nexus replica listening on {} (height {})",
            replica.local_addr(),
            replica.ledger().height()
        );
        crate::wait_for_shutdown_signal().await;
        eprintln!("shutting down");
        replica.shutdown().await;
        exit::OK
    })
}

/// Builds replica options from `server.yaml`.
pub fn options(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
) -> Result<ReplicaOptions, crate::config::ConfigError> {
    let cfg = ServerConfig::load(path)?;
    let listen = match listen {
        Some(l) => l,
        None => cfg.listen.parse().map_err(|_| {
            crate::config::ConfigError::Other(format!(
                "{}: listen address {:?} is not host:port",
                path.display(),
                cfg.listen
            ))
        })?,
    };
    Ok(ReplicaOptions {
        cluster: cfg.cluster.clone(),
        name: cfg.name.clone(),
        listen,
        data_dir: cfg.data_dir.clone(),
        ca_pem: read_text(&cfg.ca)?,
        ca_key_pem: read_text(&cfg.ca_key).ok(),
        cert_pem: read_text(&cfg.cert)?,
        key_pem: read_text(&cfg.key)?,
        ledger: Default::default(),
        rpc: Default::default(),
        gitops: gitops_options(path, cfg.gitops.as_ref())?,
        replication: replication_options(path, &cfg)?,
    })
}

/// Peers (and the genesis validators, if given) from `server.yaml`.
pub fn replication_options(
    path: &std::path::Path,
    cfg: &ServerConfig,
) -> Result<nexus_server::ReplicationOptions, crate::config::ConfigError> {
    let validator = |p: &crate::config::Peer| -> Result<nexus_ledger::Validator, _> {
        let key = p.public_key.as_deref().ok_or_else(|| {
            crate::config::ConfigError::Other(format!(
                "{}: replica {:?} has no publicKey (the hex ed25519 key of its certificate;                  `nexus init --replicas N` and `nexus up --replicas N` write it)",
                path.display(),
                p.name
            ))
        })?;
        let public_key = hex::decode(key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                crate::config::ConfigError::Other(format!(
                    "{}: replica {:?}: publicKey must be 64 hex digits",
                    path.display(),
                    p.name
                ))
            })?;
        Ok(nexus_ledger::Validator {
            name: p.name.clone(),
            public_key,
            address: p.addr.clone(),
            power: 1,
        })
    };
    Ok(nexus_server::ReplicationOptions {
        genesis: cfg
            .genesis
            .iter()
            .map(validator)
            .collect::<Result<_, _>>()?,
        peers: cfg.peers.iter().map(validator).collect::<Result<_, _>>()?,
        timeouts: None,
    })
}

/// GitOps settings from the `gitops:` section of `server.yaml`.
pub fn gitops_options(
    path: &std::path::Path,
    cfg: Option<&crate::config::GitopsConfig>,
) -> Result<nexus_server::GitOpsOptions, crate::config::ConfigError> {
    let mut o = nexus_server::GitOpsOptions::default();
    let Some(cfg) = cfg else {
        return Ok(o);
    };
    let bad = |what: &str, text: &str, why: String| {
        crate::config::ConfigError::Other(format!(
            "{}: gitops.{what} {text:?}: {why}",
            path.display()
        ))
    };
    if let Some(l) = &cfg.webhook_listen {
        o.webhook_listen = Some(
            l.parse()
                .map_err(|_| bad("webhookListen", l, "not host:port".into()))?,
        );
    }
    if let Some(w) = cfg.watch_local {
        o.watch_local = w;
    }
    if let Some(t) = &cfg.fetch_timeout {
        o.fetch.timeout = duration(path, "gitops.fetchTimeout", t)?;
    }
    o.fetch.auth.ssh_key = cfg.ssh_key.clone();
    o.fetch.auth.ssh_agent = cfg.ssh_agent.unwrap_or(false);
    if let (Some(user), Some(file)) = (&cfg.https_user, &cfg.https_token_file) {
        let token = read_text(file)?.trim().to_string();
        o.fetch.auth.https = Some((user.clone(), token));
    }
    Ok(o)
}

fn duration(
    path: &std::path::Path,
    what: &str,
    text: &str,
) -> Result<std::time::Duration, crate::config::ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        crate::config::ConfigError::Other(format!("{}: {what} {text:?}: {e}", path.display()))
    })
}

/// Parses a replica network pool: `a.b.0.0/16`, or `host` (no per-replica networks).
pub fn parse_pool(text: &str) -> Result<Option<[u8; 2]>, String> {
    if text == "host" || text == "none" {
        return Ok(None);
    }
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("network pool {text:?}: expected a.b.0.0/16 or host"))?;
    let ip: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("network pool {text:?}: not an IPv4 address"))?;
    let [a, b, c, d] = ip.octets();
    if prefix != "16" || c != 0 || d != 0 {
        return Err(format!(
            "network pool {text:?}: must be a /16 like 10.77.0.0/16"
        ));
    }
    Ok(Some([a, b]))
}

/// Node settings from `server.yaml`: node timeout, heartbeat, network pool, and the join
/// tokens (re-read from the file on every join).
pub fn nodes_options(path: &std::path::Path) -> Result<NodesOptions, crate::config::ConfigError> {
    let cfg = ServerConfig::load(path)?;
    let mut o = NodesOptions::default();
    if let Some(t) = &cfg.node_timeout {
        o.node_timeout = duration(path, "nodeTimeout", t)?;
        o.warmup = o.node_timeout;
    }
    if let Some(t) = &cfg.heartbeat {
        o.heartbeat = duration(path, "heartbeat", t)?;
    }
    if let Some(p) = &cfg.network_pool {
        o.network_pool = parse_pool(p)
            .map_err(|e| crate::config::ConfigError::Other(format!("{}: {e}", path.display())))?;
    }
    let file = path.to_path_buf();
    o.join_tokens = std::sync::Arc::new(move || match ServerConfig::load(&file) {
        Ok(c) => c.join_tokens,
        Err(e) => {
            tracing::warn!("cannot read join tokens: {e}");
            Vec::new()
        }
    });
    Ok(o)
}
