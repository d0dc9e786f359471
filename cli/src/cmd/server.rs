//! `nexus server --config server.yaml`: runs one control-plane replica until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use nexus_server::{Replica, ReplicaOptions};

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
    let opts = match options(&path, args.listen) {
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
        let replica = match Replica::start(opts).await {
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
    })
}
