//! The cluster CA and the leaf certificates it issues (directly or from a CSR); all keys ed25519.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519,
    SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Identity, PkiError, ROLE_PREFIX, Role, Validity, identity_of, random_bytes, sha256};

fn gen_err(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

fn parse_err(what: &'static str) -> impl Fn(String) -> PkiError {
    move |reason| PkiError::Parse { what, reason }
}

fn new_ed25519_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ED25519).map_err(gen_err)
}

fn load_ed25519_key(key_pem: &str) -> Result<KeyPair, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| parse_err("private key")(e.to_string()))?;
    if key.algorithm() != &PKCS_ED25519 {
        return Err(PkiError::WrongKeyType(format!("{:?}", key.algorithm())));
    }
    Ok(key)
}

/// Decodes the first certificate of a PEM text (e.g. the cluster CA for `ServerTls::new`).
pub fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| parse_err("certificate PEM")(e.to_string()))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes: [u8; 16] = random_bytes()?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and no leading zero byte to strip
    Ok(SerialNumber::from_slice(&bytes))
}

fn apply_validity(params: &mut CertificateParams, v: Validity) {
    params.not_before = v.not_before.into();
    params.not_after = v.not_after.into();
}

/// The cluster certificate authority (self-signed, ed25519, may only sign leaves).
pub struct CertificateAuthority {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("sha256", &hex::encode(self.fingerprint()))
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new CA with subject `CN=<cluster_name>, O=nexus`.
    pub fn generate(cluster_name: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = new_ed25519_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{cluster_name} CA"));
        dn.push(DnType::OrganizationName, "nexus");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        apply_validity(&mut params, validity);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(CertificateAuthority {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate PEM and PKCS#8 key PEM; checks they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem)?;
        let key = load_ed25519_key(key_pem)?;
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| parse_err("CA certificate")(e.to_string()))?;
        if !x509.is_ca() {
            return Err(PkiError::NotNexus("the certificate is not a CA".into()));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(gen_err)?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
    /// The CA private key as PKCS#8 PEM (secret: write it with mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }
    /// SHA-256 of the CA certificate DER: what join tokens pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        sha256(&self.cert_der)
    }

    /// Issues a leaf certificate with a fresh ed25519 key.
    pub fn issue(&self, req: &LeafRequest) -> Result<LeafCert, PkiError> {
        let key = new_ed25519_key()?;
        let params = leaf_params(req)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err)?;
        LeafCert::new(cert.der().clone(), cert.pem(), key.serialize_der())
    }

    /// Signs a CSR as `req.role`. The CSR must be ed25519, correctly self-signed, and ask for
    /// `CN=req.name`; everything else in it (SANs, usages) is ignored and taken from `req`.
    pub fn sign_csr(&self, csr_pem: &str, req: &LeafRequest) -> Result<SignedCsr, PkiError> {
        let info = inspect_csr(csr_pem)?;
        if info.name != req.name {
            return Err(PkiError::CsrRefused(format!(
                "the CSR asks for {:?}, not {:?}",
                info.name, req.name
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::CsrRefused(e.to_string()))?;
        let cert = leaf_params(req)?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(gen_err)?;
        let identity = Identity::from_cert_der(cert.der())?;
        Ok(SignedCsr {
            cert_pem: cert.pem(),
            identity,
        })
    }
}

/// Reads the requested name and key of a CSR after checking its signature and key type.
pub fn inspect_csr(csr_pem: &str) -> Result<CsrInfo, PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| PkiError::CsrRefused(e.to_string()))?;
    if csr.public_key.algorithm() != &PKCS_ED25519 {
        return Err(PkiError::WrongKeyType(format!(
            "{:?}",
            csr.public_key.algorithm()
        )));
    }
    let name = match csr.params.distinguished_name.get(&DnType::CommonName) {
        Some(DnValue::Utf8String(s)) => s.clone(),
        Some(DnValue::PrintableString(s)) => s.as_str().to_owned(),
        Some(DnValue::Ia5String(s)) => s.as_str().to_owned(),
        _ => return Err(PkiError::CsrRefused("the CSR has no usable CN".into())),
    };
    super::validate_name(&name)?;
    let public_key = rcgen::PublicKeyData::der_bytes(&csr.public_key)
        .try_into()
        .map_err(|_| PkiError::WrongKeyType("ed25519 with a malformed key".into()))?;
    Ok(CsrInfo { name, public_key })
}

/// What a CSR asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrInfo {
    pub name: String,
    pub public_key: [u8; 32],
}

fn subject(role: Role, name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, format!("{ROLE_PREFIX}{role}"));
    dn
}

fn leaf_params(req: &LeafRequest) -> Result<CertificateParams, PkiError> {
    super::validate_name(&req.name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(req.role, &req.name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    apply_validity(&mut params, req.validity);
    let mut sans = Vec::new();
    let mut ips = Vec::new();
    if req.role.is_server_capable() {
        sans.push(SanType::DnsName("localhost".try_into().map_err(gen_err)?));
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
    for dns in &req.dns_names {
        let san = SanType::DnsName(dns.as_str().try_into().map_err(gen_err)?);
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    for ip in req.ip_addrs.iter().copied() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    Ok(params)
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    pub role: Role,
    pub name: String,
    /// Extra DNS SANs (server-capable roles always get `localhost`).
    pub dns_names: Vec<String>,
    /// Extra IP SANs (server-capable roles always get `127.0.0.1` and `::1`).
    pub ip_addrs: Vec<IpAddr>,
    pub validity: Validity,
}

impl LeafRequest {
    pub fn new(role: Role, name: impl Into<String>, validity: Validity) -> Self {
        LeafRequest {
            role,
            name: name.into(),
            dns_names: Vec::new(),
            ip_addrs: Vec::new(),
            validity,
        }
    }
}

/// A leaf certificate with its private key. The same key signs TLS handshakes and requests.
#[derive(Clone)]
pub struct LeafCert {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pkcs8: Vec<u8>,
    key_pem: String,
    signing_key: ed25519_dalek::SigningKey,
    identity: Identity,
    not_after: SystemTime,
}

impl std::fmt::Debug for LeafCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCert")
            .field("identity", &self.identity.to_string())
            .finish_non_exhaustive()
    }
}

impl LeafCert {
    fn new(
        cert_der: CertificateDer<'static>,
        cert_pem: String,
        key_pkcs8: Vec<u8>,
    ) -> Result<Self, PkiError> {
        let (_, x509) = X509Certificate::from_der(&cert_der)
            .map_err(|e| parse_err("certificate")(e.to_string()))?;
        let identity = identity_of(&x509)?;
        let not_after = SystemTime::from(x509.validity().not_after.to_datetime());
        let signing_key = ed25519_dalek::SigningKey::from_pkcs8_der(&key_pkcs8)
            .map_err(|e| parse_err("private key")(e.to_string()))?;
        if signing_key.verifying_key().to_bytes() != identity.public_key {
            return Err(PkiError::KeyMismatch);
        }
        let key_pem = KeyPair::try_from(key_pkcs8.as_slice())
            .map_err(|e| parse_err("private key")(e.to_string()))?
            .serialize_pem();
        Ok(LeafCert {
            cert_der,
            cert_pem,
            key_pkcs8,
            key_pem,
            signing_key,
            identity,
            not_after,
        })
    }

    /// Loads a certificate PEM and its PKCS#8 key PEM; checks the key matches.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem)?;
        let key = load_ed25519_key(key_pem)?;
        LeafCert::new(cert_der, cert_pem.to_owned(), key.serialize_der())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
    /// PKCS#8 DER of the private key (accepted by `ed25519_dalek::SigningKey::from_pkcs8_der`).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8
    }
    /// PKCS#8 PEM of the private key (secret: write it with mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
    /// The raw 32-byte ed25519 seed.
    pub fn ed25519_seed(&self) -> [u8; 32] {
        self.signing_key.to_bytes()
    }
    /// The ed25519 signing key of this certificate.
    pub fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.signing_key
    }
    /// Signs `message` with the certificate key (what request signatures use).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing_key.sign(message).to_bytes()
    }
    /// The private key in the form rustls wants.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// A fresh ed25519 key and a CSR for `name`, made by an agent (or user) before it has a cert.
#[derive(Clone)]
pub struct NodeCsr {
    csr_pem: String,
    key_pkcs8: Vec<u8>,
}

impl std::fmt::Debug for NodeCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCsr").finish_non_exhaustive()
    }
}

impl NodeCsr {
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        super::validate_name(name)?;
        let key = new_ed25519_key()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let csr = params.serialize_request(&key).map_err(gen_err)?;
        Ok(NodeCsr {
            csr_pem: csr.pem().map_err(gen_err)?,
            key_pkcs8: key.serialize_der(),
        })
    }
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }
    /// Combines the signed certificate with the key; fails if the CA signed some other key.
    pub fn into_leaf(self, cert_pem: &str) -> Result<LeafCert, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem)?;
        LeafCert::new(cert_der, cert_pem.to_owned(), self.key_pkcs8)
    }
}

/// A certificate the CA issued for a CSR (the key stays with the requester).
#[derive(Clone, Debug)]
pub struct SignedCsr {
    pub cert_pem: String,
    pub identity: Identity,
}
