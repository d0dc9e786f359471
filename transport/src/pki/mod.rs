//! Cluster PKI: roles, identities read from certificates, validity windows, the cluster CA and
//! leaf certificates (`ca`), and bootstrap join tokens (`token`).
//!
//! Identity encoding (authoritative, see README.md): a leaf certificate's subject is
//! `CN=<name>, O=nexus:<role>` and its key is ed25519. Nothing else in the certificate names the
//! principal.

mod ca;
mod token;

pub use ca::{
    CertificateAuthority, CsrInfo, LeafCert, LeafRequest, NodeCsr, SignedCsr, cert_der_from_pem,
    inspect_csr,
};
pub use token::{JoinToken, JoinTokenRecord, TokenError};

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Prefix of the subject organization attribute that carries the role.
pub const ROLE_PREFIX: &str = "nexus:";
/// Longest accepted principal name.
pub const MAX_NAME_LEN: usize = 253;

/// Errors from certificate and key handling.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("could not parse {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("invalid principal name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("not a nexus certificate: {0}")]
    NotNexus(String),
    #[error("key must be ed25519, found {0}")]
    WrongKeyType(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the system random generator failed")]
    Random,
    #[error("certificate signing request refused: {0}")]
    CsrRefused(String),
}

/// What a principal is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A control-plane server (consensus participant).
    Replica,
    /// A human or automation using the CLI/API.
    User,
    /// A node agent.
    Node,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Replica, Role::User, Role::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Replica => "replica",
            Role::User => "user",
            Role::Node => "node",
        }
    }

    /// Whether certificates of this role may serve (get localhost/loopback SANs).
    pub fn is_server_capable(self) -> bool {
        matches!(self, Role::Replica | Role::Node)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PkiError::NotNexus(format!("unknown role {s:?}")))
    }
}

/// The authenticated principal behind a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    /// The certificate's ed25519 public key; verifies request signatures and binds validator keys.
    #[serde(with = "hex_32")]
    pub public_key: [u8; 32],
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

impl Identity {
    /// Reads the identity from a DER certificate. Checks the encoding only, not the chain:
    /// call it on certificates the TLS layer already verified.
    pub fn from_cert_der(der: &[u8]) -> Result<Identity, PkiError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Parse {
            what: "certificate",
            reason: e.to_string(),
        })?;
        identity_of(&cert)
    }

    /// Verifies an ed25519 signature made with this identity's certificate key.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        use ed25519_dalek::Verifier;
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.public_key) else {
            return false;
        };
        key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    }
}

pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, PkiError> {
    let subject = cert.subject();
    let name = single_attr(subject.iter_common_name(), "CN")?;
    let org = single_attr(subject.iter_organization(), "O")?;
    let role_str = org
        .strip_prefix(ROLE_PREFIX)
        .ok_or_else(|| PkiError::NotNexus(format!("subject O={org:?} lacks {ROLE_PREFIX:?}")))?;
    let role = Role::from_str(role_str)?;
    validate_name(&name)?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(PkiError::WrongKeyType(
            spki.algorithm.algorithm.to_id_string(),
        ));
    }
    let public_key: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| PkiError::WrongKeyType("ed25519 with a malformed key".into()))?;
    Ok(Identity {
        role,
        name,
        public_key,
    })
}

fn single_attr<'a, 'b: 'a>(
    mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
    label: &str,
) -> Result<String, PkiError> {
    let first = it
        .next()
        .ok_or_else(|| PkiError::NotNexus(format!("subject has no {label}")))?;
    if it.next().is_some() {
        return Err(PkiError::NotNexus(format!("subject has several {label}")));
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|_| PkiError::NotNexus(format!("subject {label} is not a string")))
}

/// Checks a principal name: 1..=253 chars of `[A-Za-z0-9._@-]`, starting with a letter or digit.
/// `:` and `/` are excluded so `role:name` stays unambiguous.
pub fn validate_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 253 characters");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
    {
        return bad("allowed characters are letters, digits, '.', '-', '_' and '@'");
    }
    Ok(())
}

/// A certificate validity window. Always explicit (rcgen's default is 1975..4096).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Clock skew tolerance applied by [`Validity::starting_at`].
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

impl Validity {
    /// `now - 5 min` .. `now + lifetime` (the back-dating tolerates small clock skew).
    pub fn starting_at(now: SystemTime, lifetime: Duration) -> Validity {
        Validity {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + lifetime,
        }
    }
    /// Ten years from `now`: the default for a cluster CA.
    pub fn ca_default(now: SystemTime) -> Validity {
        Validity::starting_at(now, Duration::from_secs(10 * 365 * 86_400))
    }
    /// One year from `now`: the default for leaf certificates.
    pub fn leaf_default(now: SystemTime) -> Validity {
        Validity::starting_at(now, Duration::from_secs(365 * 86_400))
    }
}

/// SHA-256 of bytes (CA pinning, token hashes).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Constant-time equality of two byte strings of equal length (length itself is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut buf = [0u8; N];
    crate::provider()
        .secure_random
        .fill(&mut buf)
        .map_err(|_| PkiError::Random)?;
    Ok(buf)
}

mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["alice", "n1", "r0", "alice@example.com", "node-1.rack_2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a:b", "a/b", "a b", "é", &"x".repeat(254)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}

#[cfg(test)]
mod pki_tests;
