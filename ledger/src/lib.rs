//! nexus-ledger: events, entries, the blake3 hash chain, the redb store, the event-sourced state
//! projection, audit queries and the consensus integration.

pub mod consensus;
