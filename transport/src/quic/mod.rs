//! QUIC endpoints with mutual TLS: server and client TLS configs built from the cluster PKI,
//! an `Endpoint` that can accept and dial, and connections that know their peer's `Identity`.

mod verify;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use crate::error::{TransportError, connection_error};
use crate::pki::{Identity, LeafCert, Role};
use verify::{Anchor, NexusClientVerifier, NexusServerVerifier};

/// ALPN protocol id of nexus over QUIC.
pub const ALPN: &[u8] = b"nexus/1";

/// Ack-eliciting packets a peer may receive before it must acknowledge (QUIC ACK frequency
/// extension; quinn's default is 1).
const ACK_THRESHOLD: u32 = 9;

/// QUIC transport tuning shared by servers and clients.
#[derive(Clone, Debug)]
pub struct QuicOptions {
    /// Close a connection after this long without any packet (keep-alives prevent it).
    pub idle_timeout: Duration,
    /// Send a keep-alive when nothing else was sent for this long (must be < idle_timeout).
    pub keep_alive: Duration,
    /// Concurrent bidirectional streams (RPC calls) the peer may open.
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams (one-way messages) the peer may open.
    pub max_uni_streams: u32,
}

impl Default for QuicOptions {
    fn default() -> Self {
        QuicOptions {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            max_bidi_streams: 256,
            max_uni_streams: 256,
        }
    }
}

impl QuicOptions {
    fn transport(&self) -> Result<Arc<quinn::TransportConfig>, TransportError> {
        if self.keep_alive >= self.idle_timeout {
            return Err(TransportError::Config(
                "keep_alive must be shorter than idle_timeout".into(),
            ));
        }
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TransportError::Config(format!("idle_timeout: {e}")))?;
        // Ask the peer to acknowledge every ACK_THRESHOLD + 1 packets (or after its max ack
        // delay) instead of every other one: consensus links carry a few small messages per
        // height in each direction, so about a quarter of the packets were bare ACKs, each a
        // send, a receive and a wake-up on both sides.
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_THRESHOLD));
        let mut t = quinn::TransportConfig::default();
        t.ack_frequency_config(Some(ack));
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_bidi_streams(self.max_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_uni_streams.into());
        Ok(Arc::new(t))
    }
}

/// Server-side options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub quic: QuicOptions,
    /// Let clients without a certificate finish the handshake (they may only call public
    /// kinds such as join). Clients with a certificate from another CA are always refused.
    pub allow_anonymous: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            quic: QuicOptions::default(),
            allow_anonymous: true,
        }
    }
}

/// Client-side options.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub quic: QuicOptions,
    /// Roles the server certificate may have (default: replicas only).
    pub server_roles: Vec<Role>,
    /// How long to wait for the handshake.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            quic: QuicOptions::default(),
            server_roles: vec![Role::Replica],
            connect_timeout: Duration::from_secs(10),
        }
    }
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Config(format!("TLS: {e}"))
}

/// A ready server TLS configuration (cluster CA + this server's leaf).
#[derive(Clone)]
pub struct ServerTls {
    config: quinn::ServerConfig,
    /// Keys of the stateless-reset tokens and of the connection-id check, derived from the
    /// server's private key.
    reset_key: [u8; 32],
    cid_key: u64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `ca` is the cluster CA certificate; `leaf` must be a replica or node certificate.
    /// The server presents `[leaf, ca]` so joining clients can pin the CA by hash.
    pub fn new(
        ca: &CertificateDer<'static>,
        leaf: &LeafCert,
        opts: &ServerOptions,
    ) -> Result<Self, TransportError> {
        if !leaf.identity().role.is_server_capable() {
            return Err(TransportError::Config(format!(
                "{} cannot serve: only replica and node certificates can",
                leaf.identity()
            )));
        }
        let provider = crate::provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).map_err(tls_err)?;
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        );
        let builder = if opts.allow_anonymous {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let inner = builder.build().map_err(tls_err)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(Arc::new(NexusClientVerifier { inner }))
            .with_single_cert(
                vec![leaf.cert_der().clone(), ca.clone()],
                leaf.private_key_der(),
            )
            .map_err(tls_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(tls_err)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(opts.quic.transport()?);
        let secret = leaf.private_key_der();
        let reset_key = blake3::derive_key(
            "nexus 2026-12 QUIC stateless reset key v1",
            secret.secret_der(),
        );
        let cid_key = blake3::derive_key(
            "nexus 2026-12 QUIC connection id key v1",
            secret.secret_der(),
        );
        let [k0, k1, k2, k3, k4, k5, k6, k7, ..] = cid_key;
        Ok(ServerTls {
            config,
            reset_key,
            cid_key: u64::from_le_bytes([k0, k1, k2, k3, k4, k5, k6, k7]),
        })
    }
}

/// How a client trusts servers.
#[derive(Clone, Debug)]
pub enum ServerTrust {
    /// The cluster CA certificate.
    Ca(CertificateDer<'static>),
    /// Only the SHA-256 of the CA certificate (from a join token).
    PinnedCaSha256([u8; 32]),
}

/// A ready client TLS configuration.
#[derive(Clone)]
pub struct ClientTls {
    config: quinn::ClientConfig,
    connect_timeout: Duration,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `cert` is this client's certificate; `None` connects anonymously (join only).
    pub fn new(
        trust: ServerTrust,
        cert: Option<&LeafCert>,
        opts: &ClientOptions,
    ) -> Result<Self, TransportError> {
        let provider = crate::provider();
        let anchor = match trust {
            ServerTrust::Ca(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca).map_err(tls_err)?;
                Anchor::Ca(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(tls_err)?,
                )
            }
            ServerTrust::PinnedCaSha256(pin) => Anchor::Pinned(pin),
        };
        let verifier = NexusServerVerifier {
            anchor,
            roles: opts.server_roles.clone(),
            provider: provider.clone(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut tls = match cert {
            Some(c) => builder
                .with_client_auth_cert(vec![c.cert_der().clone()], c.private_key_der())
                .map_err(tls_err)?,
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(tls_err)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(opts.quic.transport()?);
        Ok(ClientTls {
            config,
            connect_timeout: opts.connect_timeout,
        })
    }
}

/// Stateless-reset tokens: keyed blake3 of the connection id (32 bytes, as QUIC's HMAC).
struct ResetKey([u8; 32]);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = out.len().min(32);
        out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        // blake3::Hash compares in constant time.
        match <[u8; 32]>::try_from(signature) {
            Ok(sig) if blake3::keyed_hash(&self.0, data) == blake3::Hash::from(sig) => Ok(()),
            _ => Err(quinn::crypto::CryptoError),
        }
    }
}

/// A UDP socket speaking QUIC: accepts connections if built with `server`, dials with `connect`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: quinn::Endpoint,
}

impl Endpoint {
    /// Binds a server endpoint (it can also dial). Must run inside a tokio runtime.
    ///
    /// Its stateless-reset tokens and the check of its connection ids are keyed by the server's
    /// private key, so a server that crashed and restarted with the same certificate recognises
    /// a packet of a connection it no longer knows and answers it with a reset its peer accepts:
    /// the peer learns at once that the connection is gone instead of waiting for its idle
    /// timeout.
    pub fn server(addr: SocketAddr, tls: &ServerTls) -> Result<Self, TransportError> {
        let mut config = quinn::EndpointConfig::default();
        config.reset_key(Arc::new(ResetKey(tls.reset_key)));
        let cid_key = tls.cid_key;
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let bind = |source| TransportError::Bind { addr, source };
        let socket = std::net::UdpSocket::bind(addr).map_err(bind)?;
        let inner = quinn::Endpoint::new(
            config,
            Some(tls.config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind)?;
        Ok(Endpoint { inner })
    }

    /// Binds a client-only endpoint, e.g. on `127.0.0.1:0` or `[::]:0`.
    pub fn client(bind: SocketAddr) -> Result<Self, TransportError> {
        let inner = quinn::Endpoint::client(bind)
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        Ok(Endpoint { inner })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner
            .local_addr()
            .map_err(|e| TransportError::Config(format!("local address: {e}")))
    }

    /// Dials `addr`; `server_name` must match a SAN of the server (e.g. `localhost`, an IP).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        tls: &ClientTls,
    ) -> Result<Connection, TransportError> {
        let connecting = self
            .inner
            .connect_with(tls.config.clone(), addr, server_name)
            .map_err(|e| TransportError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn = match tokio::time::timeout(tls.connect_timeout, connecting).await {
            Err(_) => {
                return Err(TransportError::Connect {
                    addr,
                    reason: format!(
                        "no answer within {:?} (is a server listening there?)",
                        tls.connect_timeout
                    ),
                });
            }
            Ok(Err(e)) => {
                return Err(match connection_error(e) {
                    TransportError::ConnectionLost { reason } => {
                        TransportError::Connect { addr, reason }
                    }
                    other => other,
                });
            }
            Ok(Ok(c)) => c,
        };
        Connection::new(conn)
    }

    /// Waits for the next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Accepting> {
        self.inner
            .accept()
            .await
            .map(|incoming| Accepting { incoming })
    }

    /// Closes all connections immediately.
    pub fn close(&self) {
        self.inner.close(0u32.into(), b"endpoint closed");
    }

    /// Waits until all connections are closed and their final packets sent.
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }

    /// The underlying quinn endpoint, for callers needing more control.
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }
}

/// An incoming connection attempt; `establish` runs the handshake.
#[derive(Debug)]
pub struct Accepting {
    incoming: quinn::Incoming,
}

impl Accepting {
    pub fn remote_address(&self) -> SocketAddr {
        self.incoming.remote_address()
    }
    pub async fn establish(self) -> Result<Connection, TransportError> {
        let conn = self.incoming.await.map_err(connection_error)?;
        Connection::new(conn)
    }
}

/// An established connection and the authenticated identity of its peer (if it sent a cert).
#[derive(Clone, Debug)]
pub struct Connection {
    inner: quinn::Connection,
    peer: Option<Identity>,
}

impl Connection {
    fn new(inner: quinn::Connection) -> Result<Self, TransportError> {
        let peer = match inner
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        {
            Some(chain) => match chain.first() {
                Some(leaf) => Some(Identity::from_cert_der(leaf).map_err(|e| {
                    inner.close(1u32.into(), b"bad certificate");
                    TransportError::HandshakeRefused {
                        reason: e.to_string(),
                    }
                })?),
                None => None,
            },
            None => None,
        };
        Ok(Connection { inner, peer })
    }

    /// The verified peer identity; `None` for anonymous clients.
    pub fn peer(&self) -> Option<&Identity> {
        self.peer.as_ref()
    }
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }
    /// The peer's certificate chain as presented (leaf first).
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.inner
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|b| *b)
            .unwrap_or_default()
    }
    pub fn close(&self, reason: &str) {
        self.inner.close(0u32.into(), reason.as_bytes());
    }
    /// Resolves when the connection closes, with why.
    pub async fn closed(&self) -> TransportError {
        connection_error(self.inner.closed().await)
    }
    pub fn is_closed(&self) -> bool {
        self.inner.close_reason().is_some()
    }
    /// The underlying quinn connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}
