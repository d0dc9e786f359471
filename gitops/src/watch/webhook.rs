//! Webhooks: the pure HMAC-SHA256 check of a request body against `X-Hub-Signature-256:
//! sha256=<hex>` (GitHub, Gitea, Forgejo; Gitea's bare-hex `X-Gitea-Signature` too) with a
//! constant-time compare, and a minimal HTTP/1.1 endpoint, `POST /hooks/git/NAME` (or
//! `/hooks/git/NAMESPACE/NAME`), with header and body size limits, a per-request deadline and a
//! connection cap. A verified request emits a [`ChangeEvent`]; one request per connection.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::{ChangeEvent, Trigger};
use crate::source::SourceId;

/// Header GitHub, Gitea and Forgejo put the body's HMAC in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// Gitea's older header: the same HMAC as bare hex.
pub const GITEA_SIGNATURE_HEADER: &str = "x-gitea-signature";
/// Path prefix of the endpoint.
pub const HOOK_PREFIX: &str = "/hooks/git/";

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WebhookError {
    #[error("the request has no X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("the signature header is not \"sha256=<64 hex digits>\"")]
    MalformedSignature,
    #[error("the signature does not match the body and the shared secret")]
    BadSignature,
}

/// `sha256=<hex>` of `body` under `secret`, as a git host would send it.
pub fn sign_body(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// Checks `header` (`sha256=<hex>`, or bare hex) against the HMAC-SHA256 of the raw `body`.
/// The comparison is constant-time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?.trim();
    let hex_part = header.strip_prefix("sha256=").unwrap_or(header);
    if hex_part.len() != 64 {
        return Err(WebhookError::MalformedSignature);
    }
    let expected = hex::decode(hex_part).map_err(|_| WebhookError::MalformedSignature)?;
    let mut mac = keyed(secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// Limits of the endpoint.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Largest body accepted (push payloads are a few KiB to a few hundred KiB).
    pub max_body: usize,
    /// Largest request head (request line + headers).
    pub max_head: usize,
    /// Time allowed to receive a whole request.
    pub read_timeout: Duration,
    /// Connections handled at once; more wait in the accept queue.
    pub max_connections: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_body: 1024 * 1024,
            max_head: 16 * 1024,
            read_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// Looks up a source's shared secret; `None` when the source does not exist or has no secret.
pub type SecretLookup = Arc<dyn Fn(&SourceId) -> Option<Vec<u8>> + Send + Sync>;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `METHOD TARGET HTTP/1.x` and the headers (the bytes before the blank line).
pub fn parse_head(head: &[u8]) -> Option<RequestHead> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    if first.next().is_some() || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return None;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        headers,
    })
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The source a hook path names: `/hooks/git/NAME` (namespace `default`) or
/// `/hooks/git/NAMESPACE/NAME`; a query string is ignored.
pub fn route(target: &str) -> Option<SourceId> {
    let path = target.split('?').next()?;
    let rest = path.strip_prefix(HOOK_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [name] if is_name(name) => Some(SourceId::new("default", *name)),
        [ns, name] if is_name(ns) && is_name(name) => Some(SourceId::new(*ns, *name)),
        _ => None,
    }
}

/// Serves the endpoint until the listener fails. Each verified request sends one
/// [`ChangeEvent`] with `try_send` (a full channel means a sync is already queued).
pub async fn serve_webhooks(
    listener: TcpListener,
    secrets: SecretLookup,
    tx: mpsc::Sender<ChangeEvent>,
    config: WebhookConfig,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let config = Arc::new(config);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, _) = listener.accept().await?;
        let (secrets, tx, config) = (secrets.clone(), tx.clone(), config.clone());
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, &secrets, &tx, &config).await;
        });
    }
}

/// Status code and text of a response.
type Reply = (u16, &'static str, String);

async fn handle(
    mut stream: TcpStream,
    secrets: &SecretLookup,
    tx: &mpsc::Sender<ChangeEvent>,
    config: &WebhookConfig,
) {
    let reply = match tokio::time::timeout(
        config.read_timeout,
        read_and_decide(&mut stream, secrets, tx, config),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => (
            408,
            "Request Timeout",
            "request not received in time\n".into(),
        ),
    };
    let (code, reason, body) = reply;
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn read_and_decide(
    stream: &mut TcpStream,
    secrets: &SecretLookup,
    tx: &mpsc::Sender<ChangeEvent>,
    config: &WebhookConfig,
) -> Reply {
    // Read the head.
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > config.max_head {
            return (
                431,
                "Request Header Fields Too Large",
                "request head too large\n".into(),
            );
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return (400, "Bad Request", "incomplete request\n".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let Some(head) = parse_head(&buf[..head_end]) else {
        return (400, "Bad Request", "malformed request\n".into());
    };
    let Some(source) = route(&head.target) else {
        return (404, "Not Found", "no such hook\n".into());
    };
    if head.method != "POST" {
        return (405, "Method Not Allowed", "use POST\n".into());
    }
    if head.header("transfer-encoding").is_some() {
        return (
            411,
            "Length Required",
            "send Content-Length, not chunked bodies\n".into(),
        );
    }
    let Some(len) = head
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return (
            411,
            "Length Required",
            "Content-Length is required\n".into(),
        );
    };
    if len > config.max_body {
        return (
            413,
            "Payload Too Large",
            format!("body over {} bytes\n", config.max_body),
        );
    }
    let mut body = buf.split_off(head_end + 4);
    if body.len() > len {
        return (
            400,
            "Bad Request",
            "body longer than Content-Length\n".into(),
        );
    }
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => {
                return (
                    400,
                    "Bad Request",
                    "body shorter than Content-Length\n".into(),
                );
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let Some(secret) = secrets(&source) else {
        return (404, "Not Found", "no such hook\n".into());
    };
    let sig = head
        .header(SIGNATURE_HEADER)
        .or_else(|| head.header(GITEA_SIGNATURE_HEADER));
    if let Err(e) = verify_signature(&secret, &body, sig) {
        return (401, "Unauthorized", format!("{e}\n"));
    }
    let _ = tx.try_send(ChangeEvent {
        source,
        trigger: Trigger::Webhook,
    });
    (202, "Accepted", "sync queued\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_good_and_bad() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = sign_body(b"s3cret", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 71);
        assert_eq!(verify_signature(b"s3cret", body, Some(&sig)), Ok(()));
        // Gitea's bare hex form.
        assert_eq!(verify_signature(b"s3cret", body, Some(&sig[7..])), Ok(()));
        assert_eq!(
            verify_signature(b"other", body, Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"s3cret", b"{}", Some(&sig)),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, None),
            Err(WebhookError::MissingSignature)
        );
        assert_eq!(
            verify_signature(b"s3cret", body, Some("sha256=zz")),
            Err(WebhookError::MalformedSignature)
        );
        let upper = format!("sha256={}", sig[7..].to_ascii_uppercase());
        assert_eq!(verify_signature(b"s3cret", body, Some(&upper)), Ok(()));
        // A known vector: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign_body(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn routes_and_heads() {
        assert_eq!(
            route("/hooks/git/apps"),
            Some(SourceId::new("default", "apps"))
        );
        assert_eq!(
            route("/hooks/git/ops/platform?x=1"),
            Some(SourceId::new("ops", "platform"))
        );
        for bad in [
            "/hooks/git/",
            "/hooks/git/Apps",
            "/hooks/git/a/b/c",
            "/hooks/gitx",
            "/",
            "/hooks/git/../x",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
        let h = parse_head(b"POST /hooks/git/apps HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=ab\r\nContent-Length: 2").unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.header("x-hub-signature-256"), Some("sha256=ab"));
        assert_eq!(h.header("content-length"), Some("2"));
        assert!(parse_head(b"POST /x HTTP/2\r\n").is_none());
        assert!(parse_head(b"garbage").is_none());
        assert!(parse_head(b"POST /x HTTP/1.1\r\nno colon here").is_none());
    }
}
