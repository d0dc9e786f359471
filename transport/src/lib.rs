//! nexus-transport: QUIC endpoints (quinn), PKI (cluster CA, node and user certificates, join
//! tokens) and framed typed RPC over QUIC streams. No business logic lives here.
