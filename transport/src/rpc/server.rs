//! The RPC server: a `Router` of typed handlers (unary, server-streaming, one-way) with access
//! rules, and `RpcServer`, which accepts connections and serves each stream in its own task
//! under a global concurrency limit.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::frame::{FrameError, encode_frame, read_frame};
use super::{
    HELLO_KIND, Hello, HelloRequest, MAX_KIND_LEN, RpcConfig, STOP_AFTER_ERROR, SUPPORTED_VERSIONS,
    ServerFrame,
};
use crate::error::{ErrorCode, RpcError};
use crate::pki::{Identity, Role};
use crate::quic::{Connection, Endpoint};

/// Who may call a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who completed the handshake, even without a certificate (join, hello).
    Public,
    /// Any valid cluster certificate.
    Authenticated,
    /// Only certificates with one of these roles.
    Roles(Vec<Role>),
}

/// What a handler knows about the call.
#[derive(Clone, Debug)]
pub struct Context {
    /// The verified client identity; `None` only for `Access::Public` kinds.
    pub peer: Option<Identity>,
    pub remote: SocketAddr,
    pub kind: String,
}

impl Context {
    /// The caller's identity, or the standard "certificate required" error.
    pub fn identity(&self) -> Result<&Identity, RpcError> {
        self.peer.as_ref().ok_or_else(RpcError::unauthenticated)
    }
}

type Bytes = Vec<u8>;
type UnaryFn =
    Arc<dyn Fn(Context, Bytes) -> BoxFuture<'static, Result<Bytes, RpcError>> + Send + Sync>;
type ItemStream = BoxStream<'static, Result<Bytes, RpcError>>;
type StreamFn =
    Arc<dyn Fn(Context, Bytes) -> BoxFuture<'static, Result<ItemStream, RpcError>> + Send + Sync>;
type OneWayFn =
    Arc<dyn Fn(Context, Bytes) -> BoxFuture<'static, Result<(), RpcError>> + Send + Sync>;

#[derive(Clone)]
enum Handler {
    Unary(UnaryFn),
    Stream(StreamFn),
    OneWay(OneWayFn),
}

#[derive(Clone)]
struct Route {
    access: Access,
    handler: Handler,
}

/// Request kinds and their handlers. Registering a kind twice panics (a programming error).
#[derive(Clone)]
pub struct Router {
    routes: HashMap<String, Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<_> = self.routes.keys().collect();
        kinds.sort();
        f.debug_struct("Router").field("kinds", &kinds).finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

fn decode<T: DeserializeOwned>(kind: &str, body: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(body)
        .map_err(|e| RpcError::invalid_argument(format!("cannot decode the {kind:?} request: {e}")))
}

fn encode_item<T: Serialize>(item: &T) -> Result<Bytes, RpcError> {
    serde_json::to_vec(&ServerFrame::Item(item))
        .map_err(|e| RpcError::internal(format!("cannot encode the reply: {e}")))
}

impl Router {
    /// A router that already answers the built-in `nexus.hello`.
    pub fn new() -> Self {
        let mut r = Router {
            routes: HashMap::new(),
        };
        r.insert(
            HELLO_KIND,
            Access::Public,
            Handler::Unary(Arc::new(|ctx: Context, body: Bytes| {
                async move {
                    let _: HelloRequest = decode(HELLO_KIND, &body)?;
                    encode_item(&Hello {
                        versions: SUPPORTED_VERSIONS.to_vec(),
                        peer: ctx.peer,
                    })
                }
                .boxed()
            })),
        );
        r
    }

    fn insert(&mut self, kind: &str, access: Access, handler: Handler) {
        assert!(
            !kind.is_empty() && kind.len() <= MAX_KIND_LEN,
            "request kind {kind:?} must be 1..={MAX_KIND_LEN} bytes"
        );
        let prev = self
            .routes
            .insert(kind.to_owned(), Route { access, handler });
        assert!(prev.is_none(), "request kind {kind:?} registered twice");
    }

    /// Registers a unary kind: one request, one response.
    pub fn unary<Req, Resp, F, Fut>(&mut self, kind: &str, access: Access, f: F) -> &mut Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: UnaryFn = Arc::new(move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                let req: Req = decode(&ctx.kind, &body)?;
                let resp = f(ctx, req).await?;
                encode_item(&resp)
            }
            .boxed()
        });
        self.insert(kind, access, Handler::Unary(handler));
        self
    }

    /// Registers a server-streaming kind (watches): one request, many items, then end.
    /// The stream is dropped when the client goes away.
    pub fn streaming<Req, Item, F, Fut, S>(&mut self, kind: &str, access: Access, f: F) -> &mut Self
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, RpcError>> + Send + 'static,
        S: Stream<Item = Result<Item, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: StreamFn = Arc::new(move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                let req: Req = decode(&ctx.kind, &body)?;
                let items = f(ctx, req).await?;
                let encoded = items.map(|r| r.and_then(|item| encode_item(&item)));
                Ok(encoded.boxed())
            }
            .boxed()
        });
        self.insert(kind, access, Handler::Stream(handler));
        self
    }

    /// Registers a one-way kind (gossip): messages arrive on unidirectional streams, each
    /// handled in its own task (no ordering between messages); nothing is sent back.
    pub fn oneway<Msg, F, Fut>(&mut self, kind: &str, access: Access, f: F) -> &mut Self
    where
        Msg: DeserializeOwned + Send + 'static,
        F: Fn(Context, Msg) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: OneWayFn = Arc::new(move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                let msg: Msg = decode(&ctx.kind, &body)?;
                f(ctx, msg).await;
                Ok(())
            }
            .boxed()
        });
        self.insert(kind, access, Handler::OneWay(handler));
        self
    }
}

impl Router {
    /// Registers a one-way kind whose body is raw bytes, not JSON (consensus traffic between
    /// replicas: no encoding cost, frames checked against `max_frame` like any other).
    pub fn oneway_bytes<F, Fut>(&mut self, kind: &str, access: Access, f: F) -> &mut Self
    where
        F: Fn(Context, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: OneWayFn = Arc::new(move |ctx: Context, body: Bytes| {
            let f = f.clone();
            async move {
                f(ctx, body).await;
                Ok(())
            }
            .boxed()
        });
        self.insert(kind, access, Handler::OneWay(handler));
        self
    }
}

/// Adapts a channel receiver into the item stream a streaming handler returns.
pub fn channel_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<Result<T, RpcError>>,
) -> impl Stream<Item = Result<T, RpcError>> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Counters of what the server saw (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub connections: u64,
    pub handshake_failures: u64,
    pub calls_ok: u64,
    /// Errors returned by handlers (application outcomes).
    pub handler_errors: u64,
    /// Malformed/oversized frames, unknown versions or kinds, missing certificates, timeouts.
    pub protocol_errors: u64,
    pub oneway_messages: u64,
    /// Code and message of the most recent protocol error.
    pub last_protocol_error: Option<(ErrorCode, String)>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    calls_ok: AtomicU64,
    handler_errors: AtomicU64,
    protocol_errors: AtomicU64,
    oneway_messages: AtomicU64,
    last_protocol_error: std::sync::Mutex<Option<(ErrorCode, String)>>,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    fn record_error(&self, e: &RpcError, kind: &str, peer: &str) {
        if e.code.is_protocol() || e.code == ErrorCode::Timeout {
            Counters::bump(&self.protocol_errors);
            warn!(code = %e.code, kind, peer, "refused request: {}", e.message);
            if let Ok(mut last) = self.last_protocol_error.lock() {
                *last = Some((e.code, e.message.clone()));
            }
        } else {
            Counters::bump(&self.handler_errors);
            debug!(code = %e.code, kind, peer, "handler error: {}", e.message);
        }
    }
    fn snapshot(&self) -> ServerStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            connections: g(&self.connections),
            handshake_failures: g(&self.handshake_failures),
            calls_ok: g(&self.calls_ok),
            handler_errors: g(&self.handler_errors),
            protocol_errors: g(&self.protocol_errors),
            oneway_messages: g(&self.oneway_messages),
            last_protocol_error: self.last_protocol_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}

struct Shared {
    router: Router,
    cfg: RpcConfig,
    limit: Arc<Semaphore>,
    counters: Counters,
}

/// Serves a `Router` on an `Endpoint`.
pub struct RpcServer {
    endpoint: Endpoint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    pub fn new(endpoint: Endpoint, router: Router, cfg: RpcConfig) -> Self {
        let limit = Arc::new(Semaphore::new(cfg.max_concurrent_requests.max(1)));
        RpcServer {
            endpoint,
            shared: Arc::new(Shared {
                router,
                cfg,
                limit,
                counters: Counters::default(),
            }),
        }
    }

    /// Starts the accept loop on the current tokio runtime.
    pub fn spawn(self) -> ServerHandle {
        let shared = self.shared.clone();
        let endpoint = self.endpoint.clone();
        let task = tokio::spawn(async move {
            while let Some(accepting) = endpoint.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let remote = accepting.remote_address();
                    match accepting.establish().await {
                        Ok(conn) => {
                            Counters::bump(&shared.counters.connections);
                            serve_connection(conn, shared).await;
                        }
                        Err(e) => {
                            Counters::bump(&shared.counters.handshake_failures);
                            warn!(%remote, "handshake failed: {e}");
                        }
                    }
                });
            }
        });
        ServerHandle {
            endpoint: self.endpoint,
            shared: self.shared,
            task,
        }
    }
}

/// A running server. Dropping the handle leaves it running; call `shutdown` to stop it.
pub struct ServerHandle {
    endpoint: Endpoint,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
    /// The endpoint, e.g. for a replica to dial its peers from the same socket.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }
    /// Closes every connection (in-flight calls fail with a lost connection) and stops
    /// accepting. Waits up to 500 ms for close frames to go out, so a process exiting right
    /// after still tells its peers (draining connections can otherwise linger for 3 PTOs).
    pub async fn shutdown(self) {
        self.endpoint.close();
        let _ = self.task.await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.endpoint.wait_idle()).await;
    }
}

async fn serve_connection(conn: Connection, shared: Arc<Shared>) {
    let peer_label = conn
        .peer()
        .map_or_else(|| "anonymous".to_owned(), |p| p.to_string());
    debug!(peer = %peer_label, remote = %conn.remote_address(), "connection established");
    let base = Context {
        peer: conn.peer().cloned(),
        remote: conn.remote_address(),
        kind: String::new(),
    };
    loop {
        // Accept first, then wait for a request slot: an idle connection holds no slot, and
        // while the server is saturated this connection's new streams wait in QUIC flow control.
        tokio::select! {
            bi = conn.quinn().accept_bi() => match bi {
                Ok((send, recv)) => {
                    let Ok(permit) = shared.limit.clone().acquire_owned().await else { return };
                    let (shared, ctx) = (shared.clone(), base.clone());
                    tokio::spawn(async move { serve_bi(&shared, ctx, send, recv, permit).await });
                }
                Err(e) => {
                    debug!(peer = %peer_label, "connection ended: {e}");
                    return;
                }
            },
            uni = conn.quinn().accept_uni() => match uni {
                Ok(recv) => {
                    let Ok(permit) = shared.limit.clone().acquire_owned().await else { return };
                    let (shared, ctx) = (shared.clone(), base.clone());
                    tokio::spawn(async move { serve_uni(&shared, ctx, recv, permit).await });
                }
                Err(e) => {
                    debug!(peer = %peer_label, "connection ended: {e}");
                    return;
                }
            },
        }
    }
}

/// How serving a stream failed.
enum Fail {
    /// Tell the client, then close the stream.
    Reply(RpcError),
    /// The stream or connection is gone; nobody to tell.
    Gone,
}

impl From<RpcError> for Fail {
    fn from(e: RpcError) -> Self {
        Fail::Reply(e)
    }
}

async fn read_part(
    recv: &mut quinn::RecvStream,
    cfg: &RpcConfig,
    what: &str,
) -> Result<Bytes, Fail> {
    match tokio::time::timeout(cfg.request_read_timeout, read_frame(recv, cfg.max_frame)).await {
        Err(_) => Err(Fail::Reply(RpcError::new(
            ErrorCode::Timeout,
            format!("no complete {what} within {:?}", cfg.request_read_timeout),
        ))),
        Ok(Ok(Some(bytes))) => Ok(bytes),
        Ok(Ok(None)) => Err(Fail::Reply(RpcError::new(
            ErrorCode::BadFrame,
            format!("the stream ended before the {what}"),
        ))),
        Ok(Err(FrameError::TooLarge { size, limit })) => Err(Fail::Reply(
            RpcError::new(
                ErrorCode::FrameTooLarge,
                format!("{what} frame of {size} bytes exceeds the limit of {limit} bytes"),
            )
            .with_details(serde_json::json!({ "size": size, "limit": limit })),
        )),
        Ok(Err(e @ FrameError::Truncated { .. })) => Err(Fail::Reply(RpcError::new(
            ErrorCode::BadFrame,
            format!("malformed {what}: {e}"),
        ))),
        Ok(Err(FrameError::Io(e))) => {
            debug!("stream read failed: {e}");
            Err(Fail::Gone)
        }
    }
}

/// Parses and checks a request header; returns the route to use.
fn admit<'r>(router: &'r Router, header: &[u8], ctx: &mut Context) -> Result<&'r Route, RpcError> {
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| {
        RpcError::new(
            ErrorCode::BadFrame,
            format!("malformed request header (expected JSON {{\"v\":1,\"kind\":...}}): {e}"),
        )
    })?;
    let v = value
        .get("v")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            RpcError::new(
                ErrorCode::BadFrame,
                "malformed request header: no numeric protocol version \"v\"",
            )
        })?;
    if !SUPPORTED_VERSIONS.iter().any(|s| u64::from(*s) == v) {
        return Err(RpcError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {v} is not supported; this server speaks {SUPPORTED_VERSIONS:?}"
            ),
        )
        .with_details(serde_json::json!({ "supported": SUPPORTED_VERSIONS })));
    }
    let kind = value
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KIND_LEN)
        .ok_or_else(|| {
            RpcError::new(
                ErrorCode::BadFrame,
                format!("malformed request header: \"kind\" must be a string of 1..={MAX_KIND_LEN} bytes"),
            )
        })?;
    ctx.kind = kind.to_owned();
    let route = router.routes.get(kind);
    let Some(peer) = &ctx.peer else {
        return match route {
            Some(r) if r.access == Access::Public => Ok(r),
            _ => Err(RpcError::unauthenticated()),
        };
    };
    let route = route.ok_or_else(|| {
        RpcError::new(
            ErrorCode::UnknownKind,
            format!("unknown request kind {kind:?}"),
        )
    })?;
    match &route.access {
        Access::Roles(roles) if !roles.contains(&peer.role) => Err(RpcError::permission_denied(
            format!("{kind:?} is not allowed for {peer} (allowed roles: {roles:?})"),
        )),
        _ => Ok(route),
    }
}

async fn write_frame(send: &mut quinn::SendStream, payload: &[u8], max: usize) -> Result<(), Fail> {
    if payload.len() > max {
        return Err(Fail::Reply(RpcError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "the reply of {} bytes exceeds the frame limit of {max} bytes",
                payload.len()
            ),
        )));
    }
    let mut buf = Vec::with_capacity(payload.len() + 4);
    encode_frame(&mut buf, payload).map_err(|_| Fail::Gone)?;
    send.write_all(&buf).await.map_err(|e| {
        debug!("stream write failed: {e}");
        Fail::Gone
    })
}

async fn serve_bi(
    shared: &Shared,
    mut ctx: Context,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    permit: OwnedSemaphorePermit,
) {
    let mut permit = Some(permit);
    let result = run_bi(shared, &mut ctx, &mut send, &mut recv, &mut permit).await;
    let peer = ctx
        .peer
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |p| p.to_string());
    match result {
        Ok(()) => Counters::bump(&shared.counters.calls_ok),
        Err(Fail::Gone) => {}
        Err(Fail::Reply(e)) => {
            shared.counters.record_error(&e, &ctx.kind, &peer);
            let frame = serde_json::to_vec(&ServerFrame::<()>::Error(e)).unwrap_or_default();
            let mut buf = Vec::with_capacity(frame.len() + 4);
            if encode_frame(&mut buf, &frame).is_ok() {
                let _ = send.write_all(&buf).await;
            }
            let _ = send.finish();
            let _ = recv.stop(STOP_AFTER_ERROR.into());
        }
    }
}

async fn run_bi(
    shared: &Shared,
    ctx: &mut Context,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), Fail> {
    let cfg = &shared.cfg;
    let header = read_part(recv, cfg, "request header").await?;
    let route = admit(&shared.router, &header, ctx)?;
    let body = read_part(recv, cfg, "request body").await?;
    match &route.handler {
        Handler::OneWay(_) => Err(Fail::Reply(RpcError::new(
            ErrorCode::UnknownKind,
            format!(
                "{:?} is a one-way kind: send it on a unidirectional stream",
                ctx.kind
            ),
        ))),
        Handler::Unary(f) => {
            let reply = AssertUnwindSafe(f(ctx.clone(), body))
                .catch_unwind()
                .await
                .map_err(|_| RpcError::internal("the handler panicked"))??;
            write_frame(send, &reply, cfg.max_frame).await?;
            let _ = send.finish();
            Ok(())
        }
        Handler::Stream(f) => {
            let mut items = AssertUnwindSafe(f(ctx.clone(), body))
                .catch_unwind()
                .await
                .map_err(|_| RpcError::internal("the handler panicked"))??;
            // An established stream (a watch) is not work in progress: free the request slot.
            permit.take();
            let stopped = send.stopped();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    _ = &mut stopped => return Err(Fail::Gone),
                    item = AssertUnwindSafe(items.next()).catch_unwind() => match item {
                        Err(_) => return Err(Fail::Reply(RpcError::internal("the handler stream panicked"))),
                        Ok(Some(Ok(frame))) => write_frame(send, &frame, cfg.max_frame).await?,
                        Ok(Some(Err(e))) => return Err(Fail::Reply(e)),
                        Ok(None) => break,
                    },
                }
            }
            let end = serde_json::to_vec(&ServerFrame::<()>::End).unwrap_or_default();
            write_frame(send, &end, cfg.max_frame).await?;
            let _ = send.finish();
            Ok(())
        }
    }
}

async fn serve_uni(
    shared: &Shared,
    mut ctx: Context,
    mut recv: quinn::RecvStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    // Held while the first message is read and handled; a long-lived stream then holds none.
    let mut permit = Some(permit);
    let peer = ctx
        .peer
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |p| p.to_string());
    let result: Result<(), Fail> = async {
        let header = read_part(&mut recv, &shared.cfg, "message header").await?;
        let route = admit(&shared.router, &header, &mut ctx)?;
        let Handler::OneWay(f) = &route.handler else {
            return Err(Fail::Reply(RpcError::new(
                ErrorCode::UnknownKind,
                format!("{:?} is not a one-way kind", ctx.kind),
            )));
        };
        let mut body = read_part(&mut recv, &shared.cfg, "message body").await?;
        loop {
            Counters::bump(&shared.counters.oneway_messages);
            AssertUnwindSafe(f(ctx.clone(), body))
                .catch_unwind()
                .await
                .map_err(|_| RpcError::internal("the handler panicked"))??;
            // A stream may carry further messages of its kind, one frame each, for as long as
            // the sender keeps it open (no read timeout between messages: an idle peer is
            // noticed by the connection's idle timeout).
            drop(permit.take());
            body = match read_frame(&mut recv, shared.cfg.max_frame).await {
                Ok(Some(next)) => Bytes::from(next),
                Ok(None) => return Ok(()),
                Err(FrameError::Io(e)) => {
                    debug!("stream read failed: {e}");
                    return Err(Fail::Gone);
                }
                Err(e) => {
                    return Err(Fail::Reply(RpcError::new(
                        ErrorCode::BadFrame,
                        format!("malformed message after the first on a one-way stream: {e}"),
                    )));
                }
            };
        }
    }
    .await;
    match result {
        Ok(()) | Err(Fail::Gone) => {}
        Err(Fail::Reply(e)) => {
            // Nobody to answer on a one-way stream: count, log and stop the sender.
            shared.counters.record_error(&e, &ctx.kind, &peer);
            let _ = recv.stop(STOP_AFTER_ERROR.into());
        }
    }
}
