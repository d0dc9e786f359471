//! Framed, typed RPC over QUIC streams: one bidirectional stream per call (unary or
//! server-streaming), one unidirectional stream per one-way message.
//!
//! Wire format (see README.md): request stream = header frame `{"v":1,"kind":"..."}` + body
//! frame, then FIN. Replies: `{"item":...}` (once for unary, many for streams), `"end"` (end of a
//! stream), `{"error":{"code":...,"message":...}}` (terminal). One-way stream = header + body.

mod client;
pub mod frame;
mod server;

pub use client::{OneWayStream, ResponseStream, RpcClient};
pub use frame::{DEFAULT_MAX_FRAME, FrameError, encode_frame, read_frame};
pub use server::{Access, Context, Router, RpcServer, ServerHandle, ServerStats, channel_stream};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RpcError;
use crate::pki::Identity;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Versions a server accepts.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];
/// Built-in public kind every server answers: version check and "who am I to you".
pub const HELLO_KIND: &str = "nexus.hello";
/// Longest request kind accepted.
pub const MAX_KIND_LEN: usize = 128;

/// First frame of every request stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    pub v: u16,
    pub kind: String,
}

/// A frame the server sends back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ServerFrame<T> {
    Item(T),
    End,
    Error(RpcError),
}

/// Request of the built-in hello call.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HelloRequest {}

/// Reply of the built-in hello call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions the server speaks.
    pub versions: Vec<u16>,
    /// Who the server thinks the client is (`None`: anonymous).
    pub peer: Option<Identity>,
}

/// Limits and timeouts of the RPC layer (both sides).
#[derive(Clone, Debug)]
pub struct RpcConfig {
    /// Largest frame payload sent or accepted.
    pub max_frame: usize,
    /// Client: deadline for a unary call, and for opening/sending any request.
    pub call_timeout: Duration,
    /// Server: deadline for receiving each request frame (header, body).
    pub request_read_timeout: Duration,
    /// Server: requests being read or handled at once across all connections (unary calls,
    /// one-way messages, stream set-up; established response streams do not count). When
    /// reached, further streams wait in QUIC flow control.
    pub max_concurrent_requests: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            max_frame: DEFAULT_MAX_FRAME,
            call_timeout: Duration::from_secs(30),
            request_read_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
        }
    }
}

/// QUIC application error code used when we stop reading a stream after an error frame.
pub(crate) const STOP_AFTER_ERROR: u32 = 1;
