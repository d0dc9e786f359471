//! End-to-end tests over real QUIC on 127.0.0.1: mTLS, streaming, one-way messages, join,
//! and every refusal path (foreign CA, no certificate, oversized/garbage frames, versions).

mod calls;
mod fixture;
mod refusals;
mod restart;
