//! nexus-transport: QUIC endpoints (quinn), PKI (cluster CA, node and user certificates, join
//! tokens) and framed typed RPC over QUIC streams. No business logic lives here.

pub mod error;
pub mod join;
pub mod pki;
pub mod quic;
pub mod rpc;

pub use error::{CERT_REQUIRED_MESSAGE, ErrorCode, RpcError, TransportError};
pub use pki::{Identity, Role};

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// Installs aws-lc-rs as the process-wide rustls provider. Idempotent; call it at start-up.
/// (All configs built by this crate also name the provider explicitly.)
pub fn init_crypto() {
    // An error only means some provider is already installed, which is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The aws-lc-rs provider every config in this crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}
