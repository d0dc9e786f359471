//! The RPC client: unary calls, server-streaming calls and one-way messages on one connection.
//! Cheap to clone; every call opens its own stream, so calls run concurrently.

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{FrameError, encode_frame, read_frame};
use super::{
    HELLO_KIND, Hello, HelloRequest, PROTOCOL_VERSION, RequestHeader, RpcConfig, ServerFrame,
};
use crate::error::{ErrorCode, RpcError, TransportError, connection_error};
use crate::pki::Identity;
use crate::quic::{ClientTls, Connection, Endpoint};

/// A one-way stream carrying messages of one kind, in order ([`RpcClient::open_oneway_stream`]).
#[derive(Debug)]
pub struct OneWayStream {
    send: quinn::SendStream,
    kind: String,
    cfg: Arc<RpcConfig>,
}

impl OneWayStream {
    /// Sends `msgs` (raw bodies), each as one frame, in one write. Returns when the data is
    /// handed to QUIC. After an error the stream is unusable.
    pub async fn send(&mut self, msgs: &[Vec<u8>]) -> Result<(), TransportError> {
        let mut frames = Vec::with_capacity(msgs.iter().map(|m| m.len() + 4).sum());
        for m in msgs {
            if m.len() > self.cfg.max_frame {
                return Err(TransportError::FrameTooLarge {
                    size: m.len() as u64,
                    limit: self.cfg.max_frame as u64,
                    remote: false,
                });
            }
            encode_frame(&mut frames, m).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        }
        self.write(&frames).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        let timeout = self.cfg.call_timeout;
        match tokio::time::timeout(timeout, self.send.write_all(bytes)).await {
            Err(_) => Err(TransportError::Timeout {
                what: format!("sending {:?} messages", self.kind),
                after: timeout,
            }),
            Ok(Ok(())) => Ok(()),
            Ok(Err(quinn::WriteError::ConnectionLost(e))) => Err(connection_error(e)),
            Ok(Err(other)) => Err(TransportError::ConnectionLost {
                reason: format!("cannot send the message: {other}"),
            }),
        }
    }

    /// Ends the stream (the peer reads what was sent, then the end).
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }
}

/// A client bound to one connection.
#[derive(Clone, Debug)]
pub struct RpcClient {
    conn: Connection,
    cfg: Arc<RpcConfig>,
    hello: Option<Hello>,
}

impl RpcClient {
    /// Dials `addr` and says hello: fails here (not on the first call) when the server refuses
    /// our certificate or speaks another protocol version.
    pub async fn connect(
        endpoint: &Endpoint,
        addr: SocketAddr,
        server_name: &str,
        tls: &ClientTls,
        cfg: RpcConfig,
    ) -> Result<Self, TransportError> {
        let conn = endpoint.connect(addr, server_name, tls).await?;
        let mut client = RpcClient::new(conn, cfg);
        let hello: Hello = client.call(HELLO_KIND, &HelloRequest {}).await?;
        client.hello = Some(hello);
        Ok(client)
    }

    /// Wraps an established connection without the hello round trip.
    pub fn new(conn: Connection, cfg: RpcConfig) -> Self {
        RpcClient {
            conn,
            cfg: Arc::new(cfg),
            hello: None,
        }
    }

    /// The server's verified identity.
    pub fn server(&self) -> Option<&Identity> {
        self.conn.peer()
    }
    /// How the server identified us during hello (`None`: anonymous or no hello yet).
    pub fn seen_as(&self) -> Option<&Identity> {
        self.hello.as_ref().and_then(|h| h.peer.as_ref())
    }
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
    pub fn close(&self) {
        self.conn.close("client closed");
    }

    fn encode_request<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        body: &T,
    ) -> Result<Vec<u8>, TransportError> {
        let body = serde_json::to_vec(body).map_err(|e| TransportError::Encode {
            what: format!("the {kind:?} request"),
            reason: e.to_string(),
        })?;
        if body.len() > self.cfg.max_frame {
            return Err(TransportError::FrameTooLarge {
                size: body.len() as u64,
                limit: self.cfg.max_frame as u64,
                remote: false,
            });
        }
        let header = header_bytes(kind, "the request header")?;
        let mut buf = Vec::with_capacity(header.len() + body.len() + 8);
        encode_frame(&mut buf, &header).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        encode_frame(&mut buf, &body).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        Ok(buf)
    }

    async fn with_deadline<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        tokio::time::timeout(self.cfg.call_timeout, fut)
            .await
            .map_err(|_| TransportError::Timeout {
                what: what(),
                after: self.cfg.call_timeout,
            })?
    }

    /// Opens a stream and sends header + body. A server that refuses early stops reading;
    /// its error frame is then read by the caller.
    async fn send_request(&self, frames: &[u8]) -> Result<quinn::RecvStream, TransportError> {
        let (mut send, recv) = self
            .conn
            .quinn()
            .open_bi()
            .await
            .map_err(connection_error)?;
        match send.write_all(frames).await {
            Ok(()) => {
                let _ = send.finish();
            }
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(quinn::WriteError::ConnectionLost(e)) => return Err(connection_error(e)),
            Err(e) => {
                return Err(TransportError::ConnectionLost {
                    reason: format!("cannot send the request: {e}"),
                });
            }
        }
        Ok(recv)
    }

    /// Unary call: sends `req` as `kind` and waits (at most `call_timeout`) for the reply.
    pub async fn call<Req, Resp>(&self, kind: &str, req: &Req) -> Result<Resp, TransportError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let frames = self.encode_request(kind, req)?;
        self.with_deadline(|| format!("waiting for the reply to {kind:?}"), async {
            let mut recv = self.send_request(&frames).await?;
            let frame = read_frame(&mut recv, self.cfg.max_frame)
                .await
                .map_err(|e| frame_error(e, self.cfg.max_frame))?
                .ok_or_else(|| {
                    TransportError::Protocol(format!(
                        "the server closed the {kind:?} stream without a reply"
                    ))
                })?;
            match decode_frame::<Resp>(kind, &frame)? {
                ServerFrame::Item(resp) => Ok(resp),
                ServerFrame::Error(e) => Err(remote_error(e)),
                ServerFrame::End => Err(TransportError::Protocol(format!(
                    "the {kind:?} reply ended without a value"
                ))),
            }
        })
        .await
    }

    /// Server-streaming call (watches). Returns once the request is sent; errors the server
    /// reports (including refusals) arrive as the stream's first item.
    pub async fn call_stream<Req, Item>(
        &self,
        kind: &str,
        req: &Req,
    ) -> Result<ResponseStream<Item>, TransportError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned,
    {
        let frames = self.encode_request(kind, req)?;
        let recv = self
            .with_deadline(
                || format!("sending the {kind:?} request"),
                self.send_request(&frames),
            )
            .await?;
        Ok(ResponseStream {
            recv: Some(recv),
            max_frame: self.cfg.max_frame,
            kind: kind.to_owned(),
            _item: PhantomData,
        })
    }

    /// Opens a one-way stream for many messages of `kind`, sent in order with
    /// [`OneWayStream::send`] (each message one frame after the header; see
    /// `Router::oneway_bytes`). Cheaper than a stream per message for a steady flow between two
    /// peers (consensus traffic).
    pub async fn open_oneway_stream(&self, kind: &str) -> Result<OneWayStream, TransportError> {
        let header = header_bytes(kind, "the message header")?;
        let mut frame = Vec::with_capacity(header.len() + 4);
        encode_frame(&mut frame, &header).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        let mut stream = self
            .with_deadline(|| format!("opening a {kind:?} stream"), async {
                let send = self
                    .conn
                    .quinn()
                    .open_uni()
                    .await
                    .map_err(connection_error)?;
                Ok(OneWayStream {
                    send,
                    kind: kind.to_owned(),
                    cfg: self.cfg.clone(),
                })
            })
            .await?;
        stream.write(&frame).await?;
        Ok(stream)
    }

    /// One-way message whose body is `bytes` as they are (see `Router::oneway_bytes`). Returns
    /// when the data is handed to QUIC.
    pub async fn send_oneway_bytes(&self, kind: &str, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() > self.cfg.max_frame {
            return Err(TransportError::FrameTooLarge {
                size: bytes.len() as u64,
                limit: self.cfg.max_frame as u64,
                remote: false,
            });
        }
        let header = header_bytes(kind, "the message header")?;
        let mut frames = Vec::with_capacity(header.len() + bytes.len() + 8);
        encode_frame(&mut frames, &header).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        encode_frame(&mut frames, bytes).map_err(|e| frame_error(e, self.cfg.max_frame))?;
        self.with_deadline(|| format!("sending the one-way {kind:?} message"), async {
            let mut send = self
                .conn
                .quinn()
                .open_uni()
                .await
                .map_err(connection_error)?;
            send.write_all(&frames).await.map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => connection_error(e),
                other => TransportError::ConnectionLost {
                    reason: format!("cannot send the message: {other}"),
                },
            })?;
            let _ = send.finish();
            Ok(())
        })
        .await
    }

    /// One-way message on a unidirectional stream (consensus gossip). Returns when the data is
    /// handed to QUIC, not when the peer processed it; the receiver sees our `Identity`.
    pub async fn send_oneway<Msg>(&self, kind: &str, msg: &Msg) -> Result<(), TransportError>
    where
        Msg: Serialize + ?Sized,
    {
        let frames = self.encode_request(kind, msg)?;
        self.with_deadline(|| format!("sending the one-way {kind:?} message"), async {
            let mut send = self
                .conn
                .quinn()
                .open_uni()
                .await
                .map_err(connection_error)?;
            send.write_all(&frames).await.map_err(|e| match e {
                quinn::WriteError::ConnectionLost(e) => connection_error(e),
                other => TransportError::ConnectionLost {
                    reason: format!("cannot send the message: {other}"),
                },
            })?;
            let _ = send.finish();
            Ok(())
        })
        .await
    }
}

/// Items of a server-streaming call. Dropping it cancels the call on the server.
#[derive(Debug)]
pub struct ResponseStream<T> {
    recv: Option<quinn::RecvStream>,
    max_frame: usize,
    kind: String,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> ResponseStream<T> {
    /// The next item; `None` after the server's end marker (or after an error was returned).
    pub async fn next(&mut self) -> Option<Result<T, TransportError>> {
        let recv = self.recv.as_mut()?;
        let result = match read_frame(recv, self.max_frame).await {
            Err(e) => Err(frame_error(e, self.max_frame)),
            Ok(None) => Err(TransportError::Protocol(format!(
                "the {:?} stream ended without an end marker",
                self.kind
            ))),
            Ok(Some(frame)) => match decode_frame::<T>(&self.kind, &frame) {
                Ok(ServerFrame::Item(item)) => return Some(Ok(item)),
                Ok(ServerFrame::End) => {
                    self.recv = None;
                    return None;
                }
                Ok(ServerFrame::Error(e)) => Err(remote_error(e)),
                Err(e) => Err(e),
            },
        };
        self.recv = None;
        Some(result)
    }

    /// Adapts into a `futures::Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<T, TransportError>> + Send + 'static
    where
        T: Send + 'static,
    {
        futures::stream::unfold(
            self,
            |mut s| async move { s.next().await.map(|item| (item, s)) },
        )
    }
}

fn decode_frame<T: DeserializeOwned>(
    kind: &str,
    frame: &[u8],
) -> Result<ServerFrame<T>, TransportError> {
    serde_json::from_slice(frame).map_err(|e| TransportError::Decode {
        what: format!("the reply to {kind:?}"),
        reason: e.to_string(),
    })
}

/// Maps an error frame into the typed client error.
fn remote_error(e: RpcError) -> TransportError {
    let detail_u64 = |k: &str| {
        e.details
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(serde_json::Value::as_u64)
    };
    match e.code {
        ErrorCode::FrameTooLarge => match (detail_u64("size"), detail_u64("limit")) {
            (Some(size), Some(limit)) => TransportError::FrameTooLarge {
                size,
                limit,
                remote: true,
            },
            _ => TransportError::Remote(e),
        },
        ErrorCode::UnsupportedVersion => TransportError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: e
                .details
                .as_ref()
                .and_then(|d| d.get("supported"))
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        },
        _ => TransportError::Remote(e),
    }
}

/// The encoded header that opens every request or one-way stream of `kind` (`what` names it
/// in an error).
fn header_bytes(kind: &str, what: &str) -> Result<Vec<u8>, TransportError> {
    serde_json::to_vec(&RequestHeader {
        v: PROTOCOL_VERSION,
        kind: kind.to_owned(),
    })
    .map_err(|e| TransportError::Encode {
        what: what.into(),
        reason: e.to_string(),
    })
}

fn frame_error(e: FrameError, max: usize) -> TransportError {
    match e {
        FrameError::TooLarge { size, limit } => TransportError::FrameTooLarge {
            size,
            limit,
            remote: false,
        },
        FrameError::Truncated { .. } => {
            TransportError::Protocol(format!("malformed reply: {e} (limit {max})"))
        }
        FrameError::Io(e) => io_error(e),
    }
}

fn io_error(e: io::Error) -> TransportError {
    if let Some(re) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
    {
        return match re {
            quinn::ReadError::ConnectionLost(ce) => connection_error(ce.clone()),
            quinn::ReadError::Reset(code) => {
                TransportError::Protocol(format!("the server reset the stream (code {code})"))
            }
            other => TransportError::ConnectionLost {
                reason: other.to_string(),
            },
        };
    }
    TransportError::ConnectionLost {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_map_to_typed_errors() {
        let too_large = RpcError::new(ErrorCode::FrameTooLarge, "too big")
            .with_details(serde_json::json!({"size": 10, "limit": 5}));
        assert!(matches!(
            remote_error(too_large),
            TransportError::FrameTooLarge {
                size: 10,
                limit: 5,
                remote: true
            }
        ));
        let version = RpcError::new(ErrorCode::UnsupportedVersion, "v9")
            .with_details(serde_json::json!({"supported": [2, 3]}));
        assert!(matches!(
            remote_error(version),
            TransportError::VersionMismatch { ours: 1, theirs } if theirs == vec![2, 3]
        ));
        let other = RpcError::not_found("x");
        assert!(matches!(remote_error(other.clone()), TransportError::Remote(e) if e == other));
    }

    #[test]
    fn reply_frames_decode() {
        let item: ServerFrame<u32> = decode_frame("k", br#"{"item":7}"#).unwrap();
        assert!(matches!(item, ServerFrame::Item(7)));
        let end: ServerFrame<u32> = decode_frame("k", br#""end""#).unwrap();
        assert!(matches!(end, ServerFrame::End));
        let err: ServerFrame<u32> =
            decode_frame("k", br#"{"error":{"code":"brand_new_code","message":"m"}}"#).unwrap();
        assert!(matches!(err, ServerFrame::Error(e) if e.code == ErrorCode::Unknown));
        assert!(matches!(
            decode_frame::<u32>("k", b"{\"item\":\"x\"}"),
            Err(TransportError::Decode { .. })
        ));
    }
}
