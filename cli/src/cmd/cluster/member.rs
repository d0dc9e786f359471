//! `nexus cluster member prepare NAME --listen HOST:PORT --like SERVER_YAML`: a new replica's
//! certificate (issued by the cluster CA) and `server.yaml` (the cluster's genesis validators,
//! the existing replicas as peers), so it can start empty and catch up;
//! `nexus cluster member add NAME --addr HOST:PORT --cert FILE` / `remove NAME`: validator-set
//! changes, written to the ledger like any other change (signed by the user) and taking effect
//! two heights after the entry that holds them (docs/membership.md).

use std::path::{Path, PathBuf};

use nexus_api::client::SubmitRequest;
use nexus_ledger::{Op, Source, Validator};

use crate::client::Session;
use crate::config::{ConfigError, Peer, ServerConfig, read_text, write_private};
use crate::exit;

#[derive(Debug, clap::Subcommand)]
pub enum Member {
    /// Prepare a new replica: issue its certificate with the cluster CA and write its
    /// server.yaml (genesis validators and peers taken from an existing replica's config).
    /// Nothing changes in the cluster until `member add`.
    Prepare {
        /// The new replica's name (its certificate becomes `replica:NAME`).
        name: String,
        /// Where it listens (and where the others will reach it).
        #[arg(long)]
        listen: String,
        /// The server.yaml of an existing replica of the cluster (it names the CA, the CA key,
        /// the genesis validators and the peers).
        #[arg(long, value_name = "SERVER_YAML")]
        like: PathBuf,
        /// The new replica's directory (default: next to the existing one, `<parent>/NAME`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Add a replica to the validator set. Start it first (with the cluster's genesis in its
    /// server.yaml) so it can catch up; it votes from the height the change takes effect.
    Add {
        /// The replica's name (its certificate must be `replica:NAME`).
        name: String,
        /// Where the other replicas reach it (host:port).
        #[arg(long)]
        addr: String,
        /// Its certificate (PEM), issued by the cluster CA: the validator key is its key.
        #[arg(long, value_name = "FILE")]
        cert: std::path::PathBuf,
        /// Voting power.
        #[arg(long, default_value_t = 1)]
        power: u64,
    },
    /// Remove a replica from the validator set (stop it once the change took effect).
    Remove { name: String },
}

fn validator(
    name: &str,
    addr: &str,
    cert: &std::path::Path,
    power: u64,
) -> Result<Validator, String> {
    let pem = std::fs::read_to_string(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let der = nexus_transport::pki::cert_der_from_pem(&pem)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let id = nexus_transport::Identity::from_cert_der(&der)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if id.role != nexus_transport::Role::Replica || id.name != name {
        return Err(format!(
            "{} is the certificate of {id}, not of replica:{name}",
            cert.display()
        ));
    }
    Ok(Validator {
        name: name.to_string(),
        public_key: id.public_key,
        address: addr.to_string(),
        power,
    })
}

pub fn run(m: Member, context: Option<&str>) -> u8 {
    if let Member::Prepare {
        name,
        listen,
        like,
        data_dir,
    } = &m
    {
        return match prepare(name, listen, like, data_dir.as_deref()) {
            Ok((yaml, cert)) => {
                println!("replica {name} prepared: {}", yaml.display());
                println!();
                println!(
                    "Start it (it syncs the ledger from the others):  nexus server --config {}",
                    yaml.display()
                );
                println!(
                    "Then make it a validator:  nexus cluster member add {name} --addr {listen} --cert {}",
                    cert.display()
                );
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::ERROR
            }
        };
    }
    let op = match &m {
        Member::Prepare { .. } => return exit::ERROR,
        Member::Add {
            name,
            addr,
            cert,
            power,
        } => match validator(name, addr, cert, *power) {
            Ok(validator) => Op::AddValidator { validator },
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        },
        Member::Remove { name } => Op::RemoveValidator { name: name.clone() },
    };
    crate::block_on(async move {
        let session = match Session::connect(context).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::ERROR;
            }
        };
        let signed = session.sign(vec![op], Source::Cli);
        let req = SubmitRequest {
            signed: signed.to_bytes(),
        };
        match crate::cmd::apply::submit(&session, &req).await {
            Ok(r) => {
                let what = match &m {
                    Member::Add { name, .. } => format!("replica {name} joins"),
                    Member::Remove { name } => format!("replica {name} leaves"),
                    Member::Prepare { name, .. } => format!("replica {name}"),
                };
                println!(
                    "validator-set change committed at height {}: {what} the validator set from height {}",
                    r.height,
                    r.height + nexus_ledger::replicated::MEMBERSHIP_DELAY
                );
                exit::OK
            }
            Err(code) => code,
        }
    })
}

/// The hex validator key of the certificate in `path`.
fn key_of(path: &Path) -> Result<String, ConfigError> {
    let pem = read_text(path)?;
    let bad =
        |e: nexus_transport::pki::PkiError| ConfigError::Other(format!("{}: {e}", path.display()));
    let der = nexus_transport::pki::cert_der_from_pem(&pem).map_err(bad)?;
    let id = nexus_transport::Identity::from_cert_der(&der).map_err(bad)?;
    Ok(hex::encode(id.public_key))
}

/// Writes the new replica's certificate, key and server.yaml; returns (server.yaml, cert).
fn prepare(
    name: &str,
    listen: &str,
    like: &Path,
    data_dir: Option<&Path>,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    nexus_transport::init_crypto();
    if listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(ConfigError::Other(format!(
            "--listen {listen:?} is not host:port"
        )));
    }
    let template = ServerConfig::load(like)?;
    if template.name == name || template.peers.iter().any(|p| p.name == name) {
        return Err(ConfigError::Other(format!(
            "{} already names a replica {name:?}",
            like.display()
        )));
    }
    let this = Peer {
        name: template.name.clone(),
        addr: template.listen.clone(),
        public_key: Some(key_of(&template.cert)?),
    };
    // The validators of height 1 never change: the template's explicit genesis, else the
    // template and its peers (what `nexus init` wrote).
    let genesis = if template.genesis.is_empty() {
        let mut g = vec![this.clone()];
        g.extend(template.peers.iter().cloned());
        g
    } else {
        template.genesis.clone()
    };
    let mut peers = vec![this];
    peers.extend(template.peers.iter().cloned());
    let dir = match data_dir {
        Some(d) => d.to_path_buf(),
        None => template
            .data_dir
            .parent()
            .map(|p| p.join(name))
            .ok_or_else(|| ConfigError::Other("the template has no data directory".into()))?,
    };
    let yaml = dir.join("server.yaml");
    if yaml.exists() {
        return Err(ConfigError::Other(format!(
            "{} exists already",
            yaml.display()
        )));
    }
    let ca_key = read_text(&template.ca_key)?;
    let ca =
        nexus_transport::pki::CertificateAuthority::from_pem(&read_text(&template.ca)?, &ca_key)
            .map_err(|e| ConfigError::Other(format!("cluster CA: {e}")))?;
    let now = std::time::SystemTime::now();
    let leaf = ca
        .issue(&nexus_transport::pki::LeafRequest::new(
            nexus_transport::pki::Role::Replica,
            name,
            nexus_transport::pki::Validity::leaf_default(now),
        ))
        .map_err(|e| ConfigError::Other(e.to_string()))?;
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    write_private(&cert, leaf.cert_pem().as_bytes())?;
    write_private(&key, leaf.key_pem().as_bytes())?;
    let cfg = ServerConfig {
        cluster: template.cluster.clone(),
        name: name.to_string(),
        listen: listen.to_string(),
        data_dir: dir.clone(),
        ca: template.ca.clone(),
        ca_key: template.ca_key.clone(),
        cert: cert.clone(),
        key,
        peers,
        genesis,
        join_tokens: template.join_tokens.clone(),
        node_timeout: template.node_timeout.clone(),
        heartbeat: template.heartbeat.clone(),
        network_pool: template.network_pool.clone(),
        gitops: None,
    };
    cfg.save(&yaml)?;
    Ok((yaml, cert))
}
