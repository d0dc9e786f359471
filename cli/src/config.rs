//! Client configuration with contexts (like a kubeconfig) and replica server configuration,
//! stored as YAML under `$NEXUS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/nexus`, else `~/.config/nexus`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why configuration could not be read or written (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid nexus config: {message}")]
    Parse { path: String, message: String },
    #[error("no context named {name:?} in {path}; {}", known_contexts(.known))]
    NoSuchContext {
        name: String,
        path: String,
        /// The contexts the config has.
        known: Vec<String>,
    },
    #[error("no nexus config at {0}; run `nexus init` (or `nexus up`) first, or pass --config")]
    Missing(String),
    #[error("{0}")]
    Other(String),
}

/// The directory holding `config.yaml` and cluster material.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("NEXUS_CONFIG_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("nexus");
    }
    home().join(".config/nexus")
}

/// Where servers keep state by default: `$XDG_DATA_HOME/nexus`, else `~/.local/share/nexus`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("nexus");
    }
    home().join(".local/share/nexus")
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// One way to reach a cluster as one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub name: String,
    pub cluster: String,
    /// Replica addresses (host:port); a client may talk to any of them.
    pub servers: Vec<String>,
    /// The TLS server name to expect (replica certificates always carry `localhost`).
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Cluster CA certificate (PEM file).
    pub ca: PathBuf,
    /// Client certificate and key (PEM files).
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_server_name() -> String {
    "localhost".into()
}

/// `config.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

impl ClientConfig {
    /// The path of `config.yaml`.
    pub fn path() -> PathBuf {
        config_dir().join("config.yaml")
    }

    /// Loads `config.yaml` (an absent file is an empty config).
    pub fn load() -> Result<ClientConfig, ConfigError> {
        Self::load_from(&Self::path())
    }

    /// Loads a config file (absent = empty).
    pub fn load_from(path: &Path) -> Result<ClientConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes `config.yaml` (0600).
    pub fn save(&self) -> Result<(), ConfigError> {
        let text = serde_saphyr::to_string(self).map_err(|e| ConfigError::Other(e.to_string()))?;
        write_private(&Self::path(), text.as_bytes())
    }

    /// Adds or replaces a context and makes it current.
    pub fn upsert(&mut self, ctx: Context) {
        self.current_context = Some(ctx.name.clone());
        self.contexts.retain(|c| c.name != ctx.name);
        self.contexts.push(ctx);
    }

    /// The context to use: `--context`, else `$NEXUS_CONTEXT`, else the current one.
    pub fn resolve(&self, flag: Option<&str>) -> Result<&Context, ConfigError> {
        let env = std::env::var("NEXUS_CONTEXT")
            .ok()
            .filter(|s| !s.is_empty());
        let wanted = flag
            .map(str::to_string)
            .or(env)
            .or_else(|| self.current_context.clone());
        let path = Self::path().display().to_string();
        match wanted {
            Some(name) => self
                .contexts
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::NoSuchContext {
                    known: self.contexts.iter().map(|c| c.name.clone()).collect(),
                    name,
                    path,
                }),
            None => self.contexts.first().ok_or(ConfigError::Missing(path)),
        }
    }
}

fn known_contexts(known: &[String]) -> String {
    if known.is_empty() {
        "it has none; `nexus init` or `nexus user create NAME --add-context` adds one".into()
    } else {
        format!("contexts: {}", known.join(", "))
    }
}

/// Writes a file readable only by its owner, creating parent directories.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |source| ConfigError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// Reads a file to a string with a located error.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A replica's configuration (`server.yaml`), written by `nexus init` / `nexus up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    pub cluster: String,
    /// This replica's name (its certificate is `replica:<name>`).
    pub name: String,
    /// Address to listen on (QUIC/UDP).
    pub listen: String,
    /// Where the ledger and other state live.
    pub data_dir: PathBuf,
    /// Cluster CA certificate, and its key (used to sign node certificates when agents join).
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    /// This replica's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The other replicas, for replication.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// The validators of height 1, when they are not this replica and its peers (a replica
    /// added later lists the cluster's original members here; see docs/membership.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub genesis: Vec<Peer>,
    /// Join tokens accepted from node agents: id, SHA-256 of the secret, CA hash, expiry (never
    /// the secret itself). `nexus token create` appends here; the replica re-reads this file on
    /// every join, so new tokens work without a restart.
    #[serde(default)]
    pub join_tokens: Vec<nexus_transport::pki::JoinTokenRecord>,
    /// Silence after which this replica attests a node lost (`10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_timeout: Option<String>,
    /// How often agents heartbeat (`2s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    /// The /16 replica subnets come from (`10.77.0.0/16`: node i gets `10.77.i.0/24`), or
    /// `host` for replicas sharing their node's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_pool: Option<String>,
    /// Git sources: the push webhook endpoint, watchers, fetch credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitopsConfig>,
}

/// The `gitops:` section of `server.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitopsConfig {
    /// Where the push webhook endpoint listens (plain HTTP, e.g. `127.0.0.1:7480`; put a TLS
    /// proxy in front for the internet). Unset: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_listen: Option<String>,
    /// Watch local and file:// repositories for pushes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_local: Option<bool>,
    /// Private key for ssh:// repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<PathBuf>,
    /// Ask the ssh agent (`SSH_AUTH_SOCK`) for keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_agent: Option<bool>,
    /// User name for https:// repositories, with the password or token in `httpsTokenFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_token_file: Option<PathBuf>,
    /// Fetch deadline (`2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_timeout: Option<String>,
}

/// Another replica: its name (certificate `replica:<name>`), address, and validator key (the
/// ed25519 key of its certificate, hex). Without `genesis`, this replica and its peers are the
/// validators of height 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub addr: String,
    #[serde(default, rename = "publicKey", skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl ServerConfig {
    /// Loads `server.yaml`.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(path.display().to_string()));
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Writes `server.yaml` (0600).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = serde_saphyr::to_string(self).map_err(|e| ConfigError::Other(e.to_string()))?;
        write_private(path, text.as_bytes())
    }
}
