//! rustls certificate verifiers: the server's check of client certificates (chain to the cluster
//! CA, then a valid nexus identity) and the client's check of servers (CA or pinned CA hash, then
//! an allowed role).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::pki::{Identity, PkiError, Role, sha256};

fn refuse(reason: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        PkiError::NotNexus(reason),
    ))))
}

fn identity_or_refuse(end_entity: &CertificateDer<'_>) -> Result<Identity, Error> {
    Identity::from_cert_der(end_entity).map_err(|e| refuse(e.to_string()))
}

/// Server side: chain check by webpki, then the certificate must carry a nexus identity.
#[derive(Debug)]
pub(crate) struct NexusClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for NexusClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        identity_or_refuse(end_entity)?;
        Ok(ok)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How a client decides to trust the server's chain.
#[derive(Debug)]
pub(crate) enum Anchor {
    /// A known cluster CA.
    Ca(Arc<rustls::client::WebPkiServerVerifier>),
    /// Only the SHA-256 of the CA certificate (join): the server must present that CA in its
    /// chain; the leaf is then verified against it as a normal root.
    Pinned([u8; 32]),
}

/// Client side: chain check (CA or pinned CA), then the server must hold an allowed role.
#[derive(Debug)]
pub(crate) struct NexusServerVerifier {
    pub(crate) anchor: Anchor,
    pub(crate) roles: Vec<Role>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NexusServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.anchor {
            Anchor::Ca(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
            }
            Anchor::Pinned(pin) => {
                let ca = intermediates
                    .iter()
                    .find(|c| sha256(c) == *pin)
                    .ok_or_else(|| {
                        refuse(format!(
                            "the server's CA does not match the pinned sha256 {}",
                            hex::encode(pin)
                        ))
                    })?;
                let mut roots = RootCertStore::empty();
                roots
                    .add(ca.clone().into_owned())
                    .map_err(|e| refuse(format!("pinned CA unusable: {e}")))?;
                let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| refuse(format!("pinned CA unusable: {e}")))?;
                v.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
            }
        }
        let id = identity_or_refuse(end_entity)?;
        if !self.roles.contains(&id.role) {
            return Err(refuse(format!(
                "the server is {id}, expected one of the roles {:?}",
                self.roles
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
