//! Node join over QUIC: message types, the agent side (pin the CA by hash, send a CSR, check
//! what comes back) and the server-side check (token record + CSR → node certificate).

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{ErrorCode, RpcError, TransportError};
use crate::pki::{
    CertificateAuthority, Identity, JoinToken, JoinTokenRecord, LeafCert, LeafRequest, NodeCsr,
    PkiError, Role, TokenError, Validity, inspect_csr, sha256,
};
use crate::quic::{ClientOptions, ClientTls, Endpoint, ServerTrust};
use crate::rpc::{RpcClient, RpcConfig};

/// The public request kind of the join call.
pub const JOIN_KIND: &str = "nexus.join";

/// Agent → server.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The full token text (`nxjoin1.…`).
    pub token: String,
    /// PEM CSR whose CN is the node name.
    pub csr_pem: String,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Server → agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cert_pem: String,
    pub ca_pem: String,
}

/// Why joining failed on the agent side.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("the server's answer is not acceptable: {0}")]
    BadResponse(String),
}

/// What a node holds after joining.
#[derive(Clone, Debug)]
pub struct Joined {
    pub ca_pem: String,
    pub cert: LeafCert,
}

/// Agent side: connects without a certificate, trusting only the CA hash in `token`, and
/// trades a fresh key's CSR for a node certificate.
pub async fn join_cluster(
    endpoint: &Endpoint,
    addr: SocketAddr,
    server_name: &str,
    token: &JoinToken,
    node_name: &str,
    opts: &ClientOptions,
    cfg: RpcConfig,
) -> Result<Joined, JoinError> {
    let csr = NodeCsr::generate(node_name)?;
    let tls = ClientTls::new(ServerTrust::PinnedCaSha256(token.ca_sha256()), None, opts)?;
    let client = RpcClient::connect(endpoint, addr, server_name, &tls, cfg).await?;
    let req = JoinRequest {
        token: token.to_string(),
        csr_pem: csr.csr_pem().to_owned(),
    };
    let resp: JoinResponse = client.call(JOIN_KIND, &req).await?;
    client.close();
    let ca_der = rustls_pki_types::pem::PemObject::from_pem_slice(resp.ca_pem.as_bytes())
        .map_err(|e| JoinError::BadResponse(format!("CA PEM: {e}")))
        .map(|d: rustls_pki_types::CertificateDer<'static>| d)?;
    if sha256(&ca_der) != token.ca_sha256() {
        return Err(JoinError::BadResponse(
            "the returned CA does not match the token's CA hash".into(),
        ));
    }
    let cert = csr.into_leaf(&resp.cert_pem)?;
    let expected = format!("node:{node_name}");
    if cert.identity().to_string() != expected || cert.identity().role != Role::Node {
        return Err(JoinError::BadResponse(format!(
            "got a certificate for {}, expected {expected}",
            cert.identity()
        )));
    }
    verify_issued_by(&cert, &ca_der)?;
    Ok(Joined {
        ca_pem: resp.ca_pem,
        cert,
    })
}

fn verify_issued_by(cert: &LeafCert, ca_der: &[u8]) -> Result<(), JoinError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| JoinError::BadResponse(format!("CA certificate: {e}")))?;
    let (_, leaf) = X509Certificate::from_der(cert.cert_der())
        .map_err(|e| JoinError::BadResponse(format!("node certificate: {e}")))?;
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|_| JoinError::BadResponse("the node certificate is not signed by the CA".into()))
}

/// A join request whose token and CSR passed the checks; nothing is signed yet, so the server
/// can apply its own policy to `node_name` (uniqueness, naming rules) before `issue`.
#[derive(Clone, Debug)]
pub struct JoinApproval {
    pub node_name: String,
    pub public_key: [u8; 32],
    /// Id of the token used (e.g. to delete a single-use token).
    pub token_id: String,
    csr_pem: String,
}

/// Server side of `nexus.join`, step 1: finds the token record with `lookup(token_id)`,
/// verifies the token at `now` and checks the CSR. Errors are ready to send back; the precise
/// token failure is logged, not revealed.
pub fn verify_join(
    ca: &CertificateAuthority,
    lookup: impl FnOnce(&str) -> Option<JoinTokenRecord>,
    req: &JoinRequest,
    now: SystemTime,
) -> Result<JoinApproval, RpcError> {
    let denied = |why: &TokenError| {
        info!("join refused: {why}");
        let msg = match why {
            TokenError::Expired => "the join token has expired: ask an admin for a new one",
            TokenError::Malformed(_) => "malformed join token",
            _ => "join token not recognised",
        };
        RpcError::new(ErrorCode::PermissionDenied, msg)
    };
    let token: JoinToken = req.token.parse().map_err(|e| denied(&e))?;
    let record = lookup(&token.id()).ok_or_else(|| denied(&TokenError::IdMismatch))?;
    record.verify(&token, now).map_err(|e| denied(&e))?;
    if token.ca_sha256() != ca.fingerprint() {
        return Err(denied(&TokenError::CaMismatch));
    }
    let info = inspect_csr(&req.csr_pem)
        .map_err(|e| RpcError::invalid_argument(format!("bad CSR: {e}")))?;
    Ok(JoinApproval {
        node_name: info.name,
        public_key: info.public_key,
        token_id: token.id(),
        csr_pem: req.csr_pem.clone(),
    })
}

impl JoinApproval {
    /// Step 2: signs the CSR as `node:<node_name>` with `validity`, adding `extra_ips` as SANs
    /// (e.g. the address the node connected from).
    pub fn issue(
        self,
        ca: &CertificateAuthority,
        validity: Validity,
        extra_ips: Vec<IpAddr>,
    ) -> Result<(JoinResponse, Identity), RpcError> {
        let mut leaf = LeafRequest::new(Role::Node, self.node_name, validity);
        leaf.ip_addrs = extra_ips;
        let signed = ca
            .sign_csr(&self.csr_pem, &leaf)
            .map_err(|e| RpcError::invalid_argument(format!("bad CSR: {e}")))?;
        Ok((
            JoinResponse {
                cert_pem: signed.cert_pem,
                ca_pem: ca.cert_pem().to_owned(),
            },
            signed.identity,
        ))
    }
}

/// `verify_join` then `issue`, for servers without a naming policy.
pub fn sign_join(
    ca: &CertificateAuthority,
    lookup: impl FnOnce(&str) -> Option<JoinTokenRecord>,
    req: &JoinRequest,
    now: SystemTime,
    validity: Validity,
    extra_ips: Vec<IpAddr>,
) -> Result<(JoinResponse, Identity), RpcError> {
    verify_join(ca, lookup, req, now)?.issue(ca, validity, extra_ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn server_side_join_checks() {
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate("t", Validity::ca_default(now)).unwrap();
        let token = JoinToken::generate(ca.fingerprint()).unwrap();
        let record = token.record(Some(now + Duration::from_secs(60)));
        let csr = NodeCsr::generate("n1").unwrap();
        let req = JoinRequest {
            token: token.to_string(),
            csr_pem: csr.csr_pem().to_owned(),
        };
        let lookup = |id: &str| (id == record.id).then(|| record.clone());
        let approval = verify_join(&ca, lookup, &req, now).unwrap();
        assert_eq!(approval.node_name, "n1");
        assert_eq!(approval.token_id, token.id());
        let (resp, id) = approval
            .issue(
                &ca,
                Validity::leaf_default(now),
                vec!["10.1.2.3".parse().unwrap()],
            )
            .unwrap();
        assert_eq!(id.to_string(), "node:n1");
        assert_eq!(csr.into_leaf(&resp.cert_pem).unwrap().identity(), &id);

        let expired = verify_join(&ca, lookup, &req, now + Duration::from_secs(61)).unwrap_err();
        assert!(expired.message.contains("expired"), "{expired:?}");
        let unknown = verify_join(&ca, |_| None, &req, now).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::PermissionDenied);
        // A token for another cluster's CA, even with a matching record, is refused.
        let other = CertificateAuthority::generate("o", Validity::ca_default(now)).unwrap();
        let err = verify_join(&other, lookup, &req, now).unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        let bad_csr = JoinRequest {
            csr_pem: "garbage".into(),
            ..req.clone()
        };
        let err = verify_join(&ca, lookup, &bad_csr, now).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }
}
