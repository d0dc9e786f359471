//! Typed errors: `TransportError` (what callers of endpoints and RPC see) and `RpcError` (what a
//! server sends back in an error frame), plus the mapping from quinn/rustls failures.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Message a client without a certificate gets for anything but the join RPC.
pub const CERT_REQUIRED_MESSAGE: &str =
    "client certificate required: run `nexus init` or ask an admin for a certificate";

/// Error category carried in error frames. Unknown codes from newer peers decode as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadFrame,
    FrameTooLarge,
    UnsupportedVersion,
    UnknownKind,
    Unauthenticated,
    PermissionDenied,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    Unavailable,
    Overloaded,
    Timeout,
    Internal,
    Unknown,
}

impl ErrorCode {
    const ALL: [ErrorCode; 16] = [
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownKind,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Whether the code reports a malformed exchange rather than an application outcome.
    pub fn is_protocol(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::UnsupportedVersion
                | ErrorCode::UnknownKind
                | ErrorCode::Unauthenticated
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or(ErrorCode::Unknown))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or(ErrorCode::Unknown))
    }
}

/// An error a handler returns or the server reports in an error frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: ErrorCode,
    pub message: String,
    /// Structured extra data (e.g. validation diagnostics, size limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl RpcError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            details: None,
        }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        RpcError::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        RpcError::new(ErrorCode::NotFound, message)
    }
    pub fn permission_denied(message: impl Into<String>) -> Self {
        RpcError::new(ErrorCode::PermissionDenied, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        RpcError::new(ErrorCode::Internal, message)
    }
    pub fn unauthenticated() -> Self {
        RpcError::new(ErrorCode::Unauthenticated, CERT_REQUIRED_MESSAGE)
    }
}

/// Everything that can go wrong for a user of endpoints and RPC clients.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid transport configuration: {0}")]
    Config(String),
    #[error("cannot bind UDP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("TLS handshake refused: {reason}")]
    HandshakeRefused { reason: String },
    #[error("connection lost: {reason}")]
    ConnectionLost { reason: String },
    #[error("the server answered with an error: {0}")]
    Remote(RpcError),
    #[error("{}", frame_too_large_msg(*size, *limit, *remote))]
    FrameTooLarge { size: u64, limit: u64, remote: bool },
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs:?}")]
    VersionMismatch { ours: u16, theirs: Vec<u16> },
    #[error("timed out after {after:?} while {what}")]
    Timeout { what: String, after: Duration },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },
}

fn frame_too_large_msg(size: u64, limit: u64, remote: bool) -> String {
    let side = if remote {
        "the peer refused a frame"
    } else {
        "frame refused"
    };
    format!("{side}: {size} bytes exceeds the limit of {limit} bytes")
}

impl TransportError {
    /// The remote error code, when the server answered with an error frame.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Remote(e) => Some(e.code),
            TransportError::FrameTooLarge { remote: true, .. } => Some(ErrorCode::FrameTooLarge),
            TransportError::VersionMismatch { .. } => Some(ErrorCode::UnsupportedVersion),
            _ => None,
        }
    }

    /// Whether retrying on a new connection may help (lost connection, timeout, connect).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::ConnectionLost { .. }
                | TransportError::Timeout { .. }
        ) || matches!(
            self.remote_code(),
            Some(ErrorCode::Unavailable | ErrorCode::Overloaded)
        )
    }
}

const CRYPTO_ERROR_BASE: u64 = 0x100;

fn alert_name(code: u64) -> Option<String> {
    if (CRYPTO_ERROR_BASE..CRYPTO_ERROR_BASE + 0x100).contains(&code) {
        let alert = rustls::AlertDescription::from((code - CRYPTO_ERROR_BASE) as u8);
        Some(format!("{alert:?}"))
    } else {
        None
    }
}

/// Maps a quinn connection error; TLS alerts become `HandshakeRefused` with the reason.
pub(crate) fn connection_error(e: quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as C;
    match e {
        C::TransportError(te) => match alert_name(u64::from(te.code)) {
            Some(alert) => TransportError::HandshakeRefused {
                reason: format!("we refused the peer (TLS alert {alert}): {}", te.reason),
            },
            None => TransportError::ConnectionLost {
                reason: te.to_string(),
            },
        },
        C::ConnectionClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            match alert_name(u64::from(close.error_code)) {
                Some(alert) => {
                    let hint = match alert.as_str() {
                        "UnknownCA" => {
                            " (our certificate was issued by a CA the peer does not trust: \
                             another cluster's certificate?)"
                        }
                        "CertificateRequired" => " (the peer requires a client certificate)",
                        "CertificateExpired" => " (our certificate has expired)",
                        _ => "",
                    };
                    let detail = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    };
                    TransportError::HandshakeRefused {
                        reason: format!("the peer refused us (TLS alert {alert}){detail}{hint}"),
                    }
                }
                None => TransportError::ConnectionLost {
                    reason: format!("closed by peer: {close}"),
                },
            }
        }
        C::ApplicationClosed(close) => TransportError::ConnectionLost {
            reason: format!("closed by peer: {}", String::from_utf8_lossy(&close.reason)),
        },
        C::TimedOut => TransportError::ConnectionLost {
            reason: "idle timeout: the peer stopped answering".into(),
        },
        C::Reset => TransportError::ConnectionLost {
            reason: "reset by peer: it restarted and no longer knows this connection".into(),
        },
        other => TransportError::ConnectionLost {
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_survive() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), c);
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").unwrap(),
            ErrorCode::Unknown
        );
        let e = RpcError::unauthenticated();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"code": "unauthenticated", "message": CERT_REQUIRED_MESSAGE})
        );
    }

    #[test]
    fn tls_alert_codes_are_named() {
        assert_eq!(alert_name(0x100 + 48).as_deref(), Some("UnknownCA"));
        assert_eq!(
            alert_name(0x100 + 116).as_deref(),
            Some("CertificateRequired")
        );
        assert_eq!(alert_name(0x0a), None);
    }
}
