//! Shared fixture: a CA, a replica server with test handlers, and client helpers.

pub use std::net::SocketAddr;
pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicBool, Ordering};
pub use std::time::{Duration, SystemTime};

pub use nexus_transport::error::{CERT_REQUIRED_MESSAGE, ErrorCode, RpcError, TransportError};
pub use nexus_transport::join::{
    JOIN_KIND, JoinError, JoinRequest, JoinResponse, join_cluster, sign_join,
};
pub use nexus_transport::pki::{
    CertificateAuthority, JoinToken, JoinTokenRecord, LeafCert, LeafRequest, Role, Validity,
};
pub use nexus_transport::quic::{
    ClientOptions, ClientTls, Endpoint, ServerOptions, ServerTls, ServerTrust,
};
pub use nexus_transport::rpc::{
    Access, Context, Router, RpcClient, RpcConfig, RpcServer, ServerHandle, encode_frame,
    read_frame,
};
pub use serde::{Deserialize, Serialize};
pub use tokio::sync::{Mutex, mpsc};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct EchoReply {
    pub text: String,
    pub from: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Gossip {
    pub round: u64,
}

pub struct Fixture {
    pub ca: Arc<CertificateAuthority>,
    pub server: ServerHandle,
    pub addr: SocketAddr,
    pub gossip: Mutex<mpsc::UnboundedReceiver<(String, SocketAddr, Gossip)>>,
    pub token: JoinToken,
    pub watch_dropped: Arc<AtomicBool>,
}

pub fn validity() -> Validity {
    Validity::leaf_default(SystemTime::now())
}

pub fn issue(ca: &CertificateAuthority, role: Role, name: &str) -> LeafCert {
    ca.issue(&LeafRequest::new(role, name, validity())).unwrap()
}

pub fn router(
    ca: Arc<CertificateAuthority>,
    record: JoinTokenRecord,
    gossip: mpsc::UnboundedSender<(String, SocketAddr, Gossip)>,
    watch_dropped: Arc<AtomicBool>,
) -> Router {
    let mut r = Router::new();
    r.unary(
        "echo",
        Access::Authenticated,
        |ctx: Context, req: Echo| async move {
            Ok(EchoReply {
                text: req.text,
                from: ctx.identity()?.to_string(),
            })
        },
    );
    r.unary(
        "missing",
        Access::Authenticated,
        |_ctx, _req: Echo| async move { Err::<EchoReply, _>(RpcError::not_found("no such thing")) },
    );
    r.unary(
        "slow",
        Access::Authenticated,
        |_ctx, _req: Echo| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Echo {
                text: "late".into(),
            })
        },
    );
    r.unary(
        "panic",
        Access::Authenticated,
        |_ctx, req: Echo| async move {
            if req.text == "boom" {
                panic!("handler bug");
            }
            Ok(req)
        },
    );
    r.unary("big", Access::Authenticated, |_ctx, n: usize| async move {
        Ok("x".repeat(n))
    });
    r.streaming("count", Access::Authenticated, |_ctx, n: u64| async move {
        Ok(futures::stream::iter((0..n).map(Ok)))
    });
    r.streaming(
        "count_then_fail",
        Access::Authenticated,
        |_ctx, n: u64| async move {
            Ok(futures::stream::iter((0..n).map(Ok).chain([Err(
                RpcError::new(ErrorCode::Unavailable, "leader lost"),
            )])))
        },
    );
    r.streaming("ticks", Access::Authenticated, move |_ctx, _req: ()| {
        let dropped = watch_dropped.clone();
        async move {
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for i in 0u64.. {
                    if tx.send(Ok(i)).await.is_err() {
                        dropped.store(true, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            Ok(nexus_transport::rpc::channel_stream(rx))
        }
    });
    let raw = gossip.clone();
    r.oneway(
        "gossip",
        Access::Roles(vec![Role::Replica]),
        move |ctx: Context, msg: Gossip| {
            let tx = gossip.clone();
            async move {
                let from = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
                let _ = tx.send((from, ctx.remote, msg));
            }
        },
    );
    r.oneway_bytes(
        "raw",
        Access::Roles(vec![Role::Replica]),
        move |ctx: Context, bytes: Vec<u8>| {
            let tx = raw.clone();
            async move {
                let from = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
                // Reported as a gossip round: the byte count.
                let _ = tx.send((
                    from,
                    ctx.remote,
                    Gossip {
                        round: bytes.len() as u64,
                    },
                ));
            }
        },
    );
    r.unary(
        JOIN_KIND,
        Access::Public,
        move |ctx: Context, req: JoinRequest| {
            let ca = ca.clone();
            let record = record.clone();
            async move {
                let lookup = |id: &str| (id == record.id).then(|| record.clone());
                let (resp, _identity) = sign_join(
                    &ca,
                    lookup,
                    &req,
                    SystemTime::now(),
                    Validity::leaf_default(SystemTime::now()),
                    vec![ctx.remote.ip()],
                )?;
                Ok::<JoinResponse, RpcError>(resp)
            }
        },
    );
    r
}

pub async fn fixture(cfg: RpcConfig) -> Fixture {
    nexus_transport::init_crypto();
    nexus_transport::init_crypto(); // idempotent
    let ca = Arc::new(
        CertificateAuthority::generate("test", Validity::ca_default(SystemTime::now())).unwrap(),
    );
    let server_cert = issue(&ca, Role::Replica, "r0");
    let tls = ServerTls::new(ca.cert_der(), &server_cert, &ServerOptions::default()).unwrap();
    let endpoint = Endpoint::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
    let token = JoinToken::generate(ca.fingerprint()).unwrap();
    let record = token.record(Some(SystemTime::now() + Duration::from_secs(600)));
    let (gtx, grx) = mpsc::unbounded_channel();
    let watch_dropped = Arc::new(AtomicBool::new(false));
    let router = router(ca.clone(), record, gtx, watch_dropped.clone());
    let server = RpcServer::new(endpoint, router, cfg).spawn();
    let addr = server.local_addr();
    Fixture {
        ca,
        server,
        addr,
        gossip: Mutex::new(grx),
        token,
        watch_dropped,
    }
}

pub fn small_server() -> RpcConfig {
    RpcConfig {
        max_frame: 64 * 1024,
        request_read_timeout: Duration::from_millis(300),
        ..RpcConfig::default()
    }
}

pub fn client_endpoint() -> Endpoint {
    Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

pub async fn connect_with(
    f: &Fixture,
    trust: ServerTrust,
    cert: Option<&LeafCert>,
    cfg: RpcConfig,
) -> Result<RpcClient, TransportError> {
    let tls = ClientTls::new(trust, cert, &ClientOptions::default())?;
    RpcClient::connect(&client_endpoint(), f.addr, "localhost", &tls, cfg).await
}

pub async fn connect(f: &Fixture, cert: Option<&LeafCert>) -> RpcClient {
    connect_with(
        f,
        ServerTrust::Ca(f.ca.cert_der().clone()),
        cert,
        RpcConfig::default(),
    )
    .await
    .unwrap()
}

pub fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}
