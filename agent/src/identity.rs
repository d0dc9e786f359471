//! The node's identity: on first start the agent trades a join token for a node certificate
//! (CSR signed by the cluster CA) and keeps it under its state directory
//! (`node.crt`, `node.key`, `ca.crt`, mode 0600); later starts reuse it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use nexus_transport::join::join_cluster;
use nexus_transport::pki::{JoinToken, LeafCert};
use nexus_transport::quic::{ClientOptions, Endpoint};
use nexus_transport::rpc::RpcConfig;

use crate::AgentError;

/// The node certificate and the cluster CA.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    pub cert: LeafCert,
    pub ca_pem: String,
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("node.crt"),
        dir.join("node.key"),
        dir.join("ca.crt"),
    )
}

/// Resolves `host:port`.
pub fn resolve(server: &str) -> Result<SocketAddr, AgentError> {
    server
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            AgentError::Config(format!("cannot resolve {server:?} (expected host:port)"))
        })
}

fn write_private(path: &Path, text: &str) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| AgentError::Io(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Loads the identity from `state_dir`, or joins through the first server that accepts
/// `token` and stores what it got.
pub async fn load_or_join(
    state_dir: &Path,
    name: &str,
    servers: &[String],
    server_name: &str,
    token: Option<&str>,
    endpoint: &Endpoint,
) -> Result<NodeIdentity, AgentError> {
    let (crt, key, ca) = paths(state_dir);
    if crt.exists() && key.exists() && ca.exists() {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| AgentError::Io(format!("{}: {e}", p.display())))
        };
        let cert = LeafCert::from_pem(&read(&crt)?, &read(&key)?)
            .map_err(|e| AgentError::Identity(format!("{}: {e}", crt.display())))?;
        if cert.identity().name != name {
            return Err(AgentError::Identity(format!(
                "{} holds the certificate of node {:?}, not {name:?}: use --name {0:?} or another --state-dir",
                state_dir.display(),
                cert.identity().name
            )));
        }
        return Ok(NodeIdentity {
            cert,
            ca_pem: read(&ca)?,
        });
    }
    let token = token.ok_or_else(|| {
        AgentError::Identity(format!(
            "{} has no node certificate yet: pass --token (from `nexus token create`) to join",
            state_dir.display()
        ))
    })?;
    let token: JoinToken = token
        .parse()
        .map_err(|e| AgentError::Identity(format!("{e}")))?;
    let mut last = String::from("no servers given");
    for server in servers {
        let addr = resolve(server)?;
        match join_cluster(
            endpoint,
            addr,
            server_name,
            &token,
            name,
            &ClientOptions::default(),
            RpcConfig::default(),
        )
        .await
        {
            Ok(joined) => {
                std::fs::create_dir_all(state_dir)
                    .map_err(|e| AgentError::Io(format!("{}: {e}", state_dir.display())))?;
                write_private(&crt, joined.cert.cert_pem())?;
                write_private(&key, joined.cert.key_pem())?;
                write_private(&ca, &joined.ca_pem)?;
                tracing::info!(node = %name, via = %server, "joined the cluster");
                return Ok(NodeIdentity {
                    cert: joined.cert,
                    ca_pem: joined.ca_pem,
                });
            }
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(AgentError::Identity(format!("cannot join: {last}")))
}
