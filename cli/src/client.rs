//! Connecting to a replica as the context's user, and signing requests with the key of the
//! client certificate (DESIGN.md BFT rule 2).

use std::net::{SocketAddr, ToSocketAddrs};

use nexus_ledger::{Request, SignedRequest, Source};
use nexus_transport::TransportError;
use nexus_transport::pki::{LeafCert, cert_der_from_pem};
use nexus_transport::quic::{ClientOptions, ClientTls, Endpoint, ServerTrust};
use nexus_transport::rpc::{RpcClient, RpcConfig};

use crate::config::{ClientConfig, Context, read_text};

/// Why the CLI could not talk to the cluster (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Pki(String),
    #[error("cannot reach any replica of cluster {cluster:?} ({tried}): {last}")]
    Unreachable {
        cluster: String,
        tried: String,
        last: String,
    },
    #[error("{0}")]
    Call(String),
}

/// A connection to one replica, with the identity used to sign requests.
pub struct Session {
    pub client: RpcClient,
    pub context: Context,
    pub cert: LeafCert,
    _endpoint: Endpoint,
}

impl Session {
    /// Connects to the first reachable replica of the context (`--context`, `$NEXUS_CONTEXT`,
    /// or the current one).
    pub async fn connect(context: Option<&str>) -> Result<Session, ClientError> {
        let cfg = ClientConfig::load()?;
        let ctx = cfg.resolve(context)?.clone();
        Self::connect_to(ctx).await
    }

    /// Connects with an explicit context.
    pub async fn connect_to(ctx: Context) -> Result<Session, ClientError> {
        nexus_transport::init_crypto();
        let ca_der = cert_der_from_pem(&read_text(&ctx.ca)?)
            .map_err(|e| ClientError::Pki(format!("{}: {e}", ctx.ca.display())))?;
        let cert = LeafCert::from_pem(&read_text(&ctx.cert)?, &read_text(&ctx.key)?)
            .map_err(|e| ClientError::Pki(format!("{}: {e}", ctx.cert.display())))?;
        let tls = ClientTls::new(
            ServerTrust::Ca(ca_der),
            Some(&cert),
            &ClientOptions::default(),
        )
        .map_err(|e| ClientError::Pki(e.to_string()))?;
        let bind: SocketAddr = "0.0.0.0:0"
            .parse()
            .map_err(|_| ClientError::Pki("bad bind address".into()))?;
        let endpoint = Endpoint::client(bind).map_err(|e| ClientError::Pki(e.to_string()))?;
        let mut last = String::from("no servers configured in the context");
        for server in &ctx.servers {
            let addr = match server.to_socket_addrs().ok().and_then(|mut a| a.next()) {
                Some(a) => a,
                None => {
                    last = format!("cannot resolve {server}");
                    continue;
                }
            };
            match RpcClient::connect(
                &endpoint,
                addr,
                &ctx.server_name,
                &tls,
                RpcConfig::default(),
            )
            .await
            {
                Ok(client) => {
                    return Ok(Session {
                        client,
                        context: ctx,
                        cert,
                        _endpoint: endpoint,
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClientError::Unreachable {
            cluster: ctx.cluster.clone(),
            tried: ctx.servers.join(", "),
            last,
        })
    }

    /// The actor string of this session's certificate (`user:alice`).
    pub fn actor(&self) -> String {
        self.cert.identity().to_string()
    }

    /// Builds and signs a request from `ops`.
    pub fn sign(&self, ops: Vec<nexus_ledger::Op>, source: Source) -> SignedRequest {
        SignedRequest::sign(self.request(ops, source), self.cert.signing_key())
    }

    /// A new request of this session's actor (fresh id, current time).
    fn request(&self, ops: Vec<nexus_ledger::Op>, source: Source) -> Request {
        Request {
            id: new_request_id(),
            actor: self.actor(),
            source,
            ops,
            created_at_ms: now_ms(),
        }
    }

    /// [`Session::sign`] and the request's wire bytes, from one canonical serialization.
    pub fn sign_to_bytes(
        &self,
        ops: Vec<nexus_ledger::Op>,
        source: Source,
    ) -> (SignedRequest, Vec<u8>) {
        SignedRequest::sign_to_bytes(self.request(ops, source), self.cert.signing_key())
    }

    /// A unary call; transport errors become readable messages.
    pub async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        req: &Req,
    ) -> Result<Resp, TransportError> {
        self.client.call(kind, req).await
    }
}

/// 16 random bytes as hex.
pub fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A one-line description of a failed call, with what to do for common cases.
pub fn explain(e: &TransportError) -> String {
    use nexus_transport::ErrorCode;
    match e.remote_code() {
        Some(ErrorCode::Conflict) => format!(
            "{e}\n  hint: someone changed the object; `nexus get` shows the current resource version"
        ),
        Some(ErrorCode::PermissionDenied) => format!(
            "{e}\n  hint: the request must be signed by the key of the certificate it is sent with"
        ),
        _ => e.to_string(),
    }
}
