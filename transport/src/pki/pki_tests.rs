//! Tests of the CA, leaf issuance, identity extraction and CSR signing.

use std::time::{Duration, SystemTime};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;

fn ca() -> CertificateAuthority {
    CertificateAuthority::generate("test", Validity::ca_default(SystemTime::now())).unwrap()
}

fn leaf(ca: &CertificateAuthority, role: Role, name: &str) -> LeafCert {
    ca.issue(&LeafRequest::new(
        role,
        name,
        Validity::leaf_default(SystemTime::now()),
    ))
    .unwrap()
}

#[test]
fn identity_round_trips_for_each_role() {
    let ca = ca();
    for (role, name, shown) in [
        (Role::Replica, "r0", "replica:r0"),
        (Role::User, "alice@example.com", "user:alice@example.com"),
        (Role::Node, "n1", "node:n1"),
    ] {
        let cert = leaf(&ca, role, name);
        let id = Identity::from_cert_der(cert.cert_der()).unwrap();
        assert_eq!(id.role, role);
        assert_eq!(id.name, name);
        assert_eq!(id.to_string(), shown);
        assert_eq!(&id, cert.identity());
        assert_eq!(id.public_key, cert.signing_key().verifying_key().to_bytes());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
    }
}

#[test]
fn one_key_serves_tls_and_request_signing() {
    let ca = ca();
    let cert = leaf(&ca, Role::User, "alice");
    // The ledger's path: ed25519-dalek straight from the PKCS#8 DER.
    let sk = ed25519_dalek::SigningKey::from_pkcs8_der(cert.key_pkcs8_der()).unwrap();
    assert_eq!(sk.to_bytes(), cert.ed25519_seed());
    let sig = cert.sign(b"apply x");
    assert!(cert.identity().verify(b"apply x", &sig));
    assert!(!cert.identity().verify(b"apply y", &sig));
    // PEM round trip of the leaf.
    let again = LeafCert::from_pem(cert.cert_pem(), cert.key_pem()).unwrap();
    assert_eq!(again.identity(), cert.identity());
    // A key from another cert does not load with this one.
    let other = leaf(&ca, Role::User, "bob");
    assert!(matches!(
        LeafCert::from_pem(cert.cert_pem(), other.key_pem()),
        Err(PkiError::KeyMismatch)
    ));
}

#[test]
fn leaf_certificate_contents() {
    let ca = ca();
    let now = SystemTime::now();
    let mut req = LeafRequest::new(
        Role::Replica,
        "r1",
        Validity::starting_at(now, Duration::from_secs(3600)),
    );
    req.dns_names.push("r1.cluster.local".into());
    req.ip_addrs.push("10.0.0.7".parse().unwrap());
    let cert = ca.issue(&req).unwrap();
    let (_, x) = X509Certificate::from_der(cert.cert_der()).unwrap();
    let sans: Vec<String> = x
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) => format!("ip:{}", hex::encode(b)),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(sans.contains(&"localhost".to_string()));
    assert!(sans.contains(&"r1.cluster.local".to_string()));
    assert!(sans.contains(&"ip:7f000001".to_string()));
    assert!(sans.contains(&"ip:0a000007".to_string()));
    assert!(sans.contains(&format!(
        "ip:{}",
        hex::encode(std::net::Ipv6Addr::LOCALHOST.octets())
    )));
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!x.is_ca());
    let nb = x.validity().not_before.timestamp();
    let na = x.validity().not_after.timestamp();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        nb <= now_s && nb >= now_s - 301,
        "not_before {nb} vs now {now_s}"
    );
    assert!((na - (now_s + 3600)).abs() <= 1, "not_after {na}");
    assert_eq!(x.issuer().to_string(), {
        let (_, c) = X509Certificate::from_der(ca.cert_der()).unwrap();
        c.subject().to_string()
    });
    // Users are not server-capable: no loopback SANs.
    let user = leaf(&ca, Role::User, "alice");
    let (_, ux) = X509Certificate::from_der(user.cert_der()).unwrap();
    assert!(ux.subject_alternative_name().unwrap().is_none());
}

#[test]
fn ca_pem_round_trip_keeps_signing_compatible_certs() {
    let ca = ca();
    let loaded = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    let cert = leaf(&loaded, Role::Node, "n1");
    let (_, x) = X509Certificate::from_der(cert.cert_der()).unwrap();
    let (_, cx) = X509Certificate::from_der(ca.cert_der()).unwrap();
    assert!(x.verify_signature(Some(cx.public_key())).is_ok());
    let other = self::ca();
    assert!(matches!(
        CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem()),
        Err(PkiError::KeyMismatch)
    ));
    // A leaf is not a CA.
    assert!(CertificateAuthority::from_pem(cert.cert_pem(), cert.key_pem()).is_err());
}

#[test]
fn csr_signing_for_node_join() {
    let ca = ca();
    let csr = NodeCsr::generate("n7").unwrap();
    let info = inspect_csr(csr.csr_pem()).unwrap();
    assert_eq!(info.name, "n7");
    let validity = Validity::leaf_default(SystemTime::now());
    let signed = ca
        .sign_csr(csr.csr_pem(), &LeafRequest::new(Role::Node, "n7", validity))
        .unwrap();
    assert_eq!(signed.identity.to_string(), "node:n7");
    assert_eq!(signed.identity.public_key, info.public_key);
    let leaf = csr.clone().into_leaf(&signed.cert_pem).unwrap();
    assert_eq!(leaf.identity(), &signed.identity);

    // The CA refuses to sign a different name than requested.
    let err = ca
        .sign_csr(csr.csr_pem(), &LeafRequest::new(Role::Node, "n8", validity))
        .unwrap_err();
    assert!(err.to_string().contains("asks for"), "{err}");
    // A cert for another key does not combine with this CSR's key.
    let other = NodeCsr::generate("n7").unwrap();
    assert!(matches!(
        other.into_leaf(&signed.cert_pem),
        Err(PkiError::KeyMismatch)
    ));
    // Garbage and non-ed25519 CSRs are refused.
    assert!(
        inspect_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
        .is_err()
    );
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "n9");
    let ec_csr = params.serialize_request(&p256).unwrap().pem().unwrap();
    assert!(matches!(
        inspect_csr(&ec_csr),
        Err(PkiError::WrongKeyType(_))
    ));
    // A tampered CSR fails its signature check.
    let mut der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.csr_pem().as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
    // Change the requested name "n7" to "n8" without re-signing.
    let pos = der.windows(2).position(|w| w == b"n7").unwrap();
    der[pos + 1] = b'8';
    let err = inspect_csr(&rcgen_pem(&der)).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}

use rustls_pki_types::pem::PemObject;

fn rcgen_pem(der: &[u8]) -> String {
    // Re-encode through rcgen's own CSR type is not possible for tampered bytes; build the PEM
    // by hand with the standard alphabet.
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in der.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            s.push(if i <= c.len() {
                B64[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{s}\n-----END CERTIFICATE REQUEST-----\n")
}

#[test]
fn foreign_subjects_are_not_identities() {
    // A cert from the same kind of CA but without the nexus role encoding.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mallory");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "nexus:admin");
    let cert = params.self_signed(&key).unwrap();
    assert!(Identity::from_cert_der(cert.der()).is_err());
    assert!(Identity::from_cert_der(b"not der").is_err());
}
