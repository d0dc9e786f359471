//! `nexus token create`: a join token for node agents. The token text (which holds the secret)
//! is printed once; `server.yaml` keeps only its record (id, SHA-256 of the secret, CA hash,
//! expiry), and the replica re-reads it on every join.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nexus_transport::pki::{JoinToken, cert_der_from_pem, sha256};

use crate::config::{ConfigError, ServerConfig, read_text};
use crate::exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Create a join token and record it in the replica's server.yaml.
    Create {
        /// The replica's config (default $XDG_DATA_HOME/nexus/local/server.yaml). Repeat for
        /// every replica that should accept the token.
        #[arg(long, value_name = "FILE")]
        config: Vec<PathBuf>,
        /// How long the token is valid (`24h`, `30m`; `0` = no expiry).
        #[arg(long, default_value = "24h")]
        ttl: String,
    },
}

/// Creates a token valid for `ttl` (`None`: no expiry), records it in every `server.yaml` and
/// returns its text.
pub fn create(configs: &[PathBuf], ttl: Option<Duration>) -> Result<String, ConfigError> {
    let first = configs
        .first()
        .ok_or_else(|| ConfigError::Other("no server.yaml given".into()))?;
    let cfg = ServerConfig::load(first)?;
    let ca = cert_der_from_pem(&read_text(&cfg.ca)?)
        .map_err(|e| ConfigError::Other(format!("{}: {e}", cfg.ca.display())))?;
    let token = JoinToken::generate(sha256(&ca)).map_err(|e| ConfigError::Other(e.to_string()))?;
    let record = token.record(ttl.map(|t| SystemTime::now() + t));
    for path in configs {
        add_record(path, &record)?;
    }
    Ok(token.to_string())
}

fn add_record(
    path: &Path,
    record: &nexus_transport::pki::JoinTokenRecord,
) -> Result<(), ConfigError> {
    let mut cfg = ServerConfig::load(path)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cfg.join_tokens
        .retain(|t| t.expires_at_unix.is_none_or(|e| e > now)); // drop expired ones
    cfg.join_tokens.push(record.clone());
    cfg.save(path)
}

pub fn run(args: Args) -> u8 {
    match args.what {
        What::Create { config, ttl } => {
            let ttl = match ttl.as_str() {
                "0" | "never" => None,
                t => match humantime::parse_duration(t) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        eprintln!("error: --ttl {t:?}: {e}");
                        return exit::ERROR;
                    }
                },
            };
            let configs = if config.is_empty() {
                vec![crate::config::data_dir().join("local/server.yaml")]
            } else {
                config
            };
            match create(&configs, ttl) {
                Ok(t) => {
                    println!("{t}");
                    eprintln!(
                        "Join a node with:  nexus agent --join <replica host:port> --token {t}"
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::ERROR
                }
            }
        }
    }
}
