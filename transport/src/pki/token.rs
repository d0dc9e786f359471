//! Bootstrap join tokens: creation, the text form an operator copies, and verification
//! against the hash-only record the server keeps. Pure functions; randomness comes in.
//!
//! Text form: `nxjoin1.<id:16 hex>.<secret:32 hex>.<sha256 of CA cert DER:64 hex>`.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{PkiError, ct_eq, random_bytes, sha256};

const PREFIX: &str = "nxjoin1";
const HASH_DOMAIN: &[u8] = b"nexus join token v1\0";

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed join token: {0}")]
    Malformed(&'static str),
    #[error("the join token is for another token id")]
    IdMismatch,
    #[error("the join token secret is wrong")]
    WrongSecret,
    #[error("the join token has expired")]
    Expired,
    #[error("the join token pins a different cluster CA")]
    CaMismatch,
}

/// A join token as the operator copies it. `Display` prints the secret: treat it as one.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: [u8; 8],
    secret: [u8; 16],
    ca_sha256: [u8; 32],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id())
            .field("secret", &"<redacted>")
            .field("ca_sha256", &hex::encode(self.ca_sha256))
            .finish()
    }
}

impl JoinToken {
    /// Builds a token from given random parts (pure; for tests and deterministic callers).
    pub fn from_parts(id: [u8; 8], secret: [u8; 16], ca_sha256: [u8; 32]) -> Self {
        JoinToken {
            id,
            secret,
            ca_sha256,
        }
    }
    /// A fresh token for the CA with this fingerprint (see `CertificateAuthority::fingerprint`).
    pub fn generate(ca_sha256: [u8; 32]) -> Result<Self, PkiError> {
        Ok(JoinToken::from_parts(
            random_bytes()?,
            random_bytes()?,
            ca_sha256,
        ))
    }
    /// The public token id (safe to log).
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
    /// The SHA-256 of the CA certificate this token pins.
    pub fn ca_sha256(&self) -> [u8; 32] {
        self.ca_sha256
    }
    /// What the server stores: the id and a hash of the secret, never the secret.
    pub fn record(&self, expires_at: Option<SystemTime>) -> JoinTokenRecord {
        JoinTokenRecord {
            id: self.id(),
            secret_sha256: hex::encode(secret_hash(&self.id, &self.secret)),
            ca_sha256: hex::encode(self.ca_sha256),
            expires_at_unix: expires_at
                .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())),
        }
    }
}

fn secret_hash(id: &[u8; 8], secret: &[u8; 16]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(HASH_DOMAIN.len() + 24);
    buf.extend_from_slice(HASH_DOMAIN);
    buf.extend_from_slice(id);
    buf.extend_from_slice(secret);
    sha256(&buf)
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}.{}",
            hex::encode(self.id),
            hex::encode(self.secret),
            hex::encode(self.ca_sha256)
        )
    }
}

fn hex_field<const N: usize>(s: Option<&str>, what: &'static str) -> Result<[u8; N], TokenError> {
    let s = s.ok_or(TokenError::Malformed(what))?;
    let mut out = [0u8; N];
    if s.len() != 2 * N {
        return Err(TokenError::Malformed(what));
    }
    hex::decode_to_slice(s, &mut out).map_err(|_| TokenError::Malformed(what))?;
    Ok(out)
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(TokenError::Malformed("expected the prefix \"nxjoin1.\""));
        }
        let id = hex_field(parts.next(), "bad token id (16 hex digits)")?;
        let secret = hex_field(parts.next(), "bad token secret (32 hex digits)")?;
        let ca = hex_field(parts.next(), "bad CA hash (64 hex digits)")?;
        if parts.next().is_some() {
            return Err(TokenError::Malformed("too many fields"));
        }
        Ok(JoinToken::from_parts(id, secret, ca))
    }
}

/// The server-side record of a token (serializable; holds no secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub ca_sha256: String,
    pub expires_at_unix: Option<u64>,
}

impl JoinTokenRecord {
    /// Checks a presented token against this record at time `now` (constant-time compare).
    pub fn verify(&self, token: &JoinToken, now: SystemTime) -> Result<(), TokenError> {
        if token.id() != self.id {
            return Err(TokenError::IdMismatch);
        }
        let presented = secret_hash(&token.id, &token.secret);
        let mut stored = [0u8; 32];
        hex::decode_to_slice(&self.secret_sha256, &mut stored)
            .map_err(|_| TokenError::Malformed("stored secret hash is not hex"))?;
        if !ct_eq(&presented, &stored) {
            return Err(TokenError::WrongSecret);
        }
        if hex::encode(token.ca_sha256) != self.ca_sha256 {
            return Err(TokenError::CaMismatch);
        }
        if let Some(exp) = self.expires_at_unix {
            let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if now >= exp {
                return Err(TokenError::Expired);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn token() -> JoinToken {
        JoinToken::from_parts([1; 8], [2; 16], [3; 32])
    }

    #[test]
    fn text_round_trip() {
        let t = token();
        let s = t.to_string();
        assert!(s.starts_with("nxjoin1.0101010101010101.0202"));
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains("0202"),
            "Debug must redact the secret"
        );
    }

    #[test]
    fn verify_accepts_and_rejects() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let t = token();
        let rec = t.record(Some(now + Duration::from_secs(60)));
        assert!(
            !serde_json::to_string(&rec)
                .unwrap()
                .contains(&hex::encode([2u8; 16]))
        );
        assert_eq!(rec.verify(&t, now), Ok(()));
        assert_eq!(
            rec.verify(&t, now + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        let wrong = JoinToken::from_parts([1; 8], [9; 16], [3; 32]);
        assert_eq!(rec.verify(&wrong, now), Err(TokenError::WrongSecret));
        let other_id = JoinToken::from_parts([7; 8], [2; 16], [3; 32]);
        assert_eq!(rec.verify(&other_id, now), Err(TokenError::IdMismatch));
        let other_ca = JoinToken::from_parts([1; 8], [2; 16], [4; 32]);
        assert_eq!(rec.verify(&other_ca, now), Err(TokenError::CaMismatch));
    }

    #[test]
    fn tampered_text_is_refused_or_fails_verification() {
        let now = UNIX_EPOCH;
        let t = token();
        let rec = t.record(None);
        let s = t.to_string();
        for bad in [
            "",
            "nxjoin2.0101010101010101.02020202020202020202020202020202.00",
            "nxjoin1.zz01010101010101.02020202020202020202020202020202.00",
            &format!("{s}.extra"),
            &s[..s.len() - 1],
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} parsed");
        }
        // Flip one hex digit in the secret: parses, but verification fails.
        let mut flipped = s.clone().into_bytes();
        flipped[30] = if flipped[30] == b'2' { b'3' } else { b'2' };
        let flipped: JoinToken = String::from_utf8(flipped).unwrap().parse().unwrap();
        assert_eq!(rec.verify(&flipped, now), Err(TokenError::WrongSecret));
    }
}
