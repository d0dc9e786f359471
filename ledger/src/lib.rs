//! nexus-ledger: events, entries, the blake3 hash chain, the redb store, the event-sourced state
//! projection, audit queries and the consensus integration.
//!
//! Flow: a [`SignedRequest`] is verified, ordered (the [`ledger::Sequencer`] seam), planned against
//! the state ([`plan_request`]), built into an [`Entry`] ([`build_entry`]), appended durably by the
//! [`Store`], and folded into the [`State`]. [`audit`] reads the log back and verifies it.

pub mod codec;
pub mod entry;
pub mod event;
pub mod plan;
pub mod request;
pub mod state;

#[cfg(test)]
mod testutil;

pub use entry::{Entry, EntryHash, build_entry};
pub use event::{Event, EventBody, NodeInfo, Validator};
pub use plan::{Action, ObjectOutcome, Plan, RequestError, Staged, plan_request};
pub use request::{Op, Request, SignatureError, SignedRequest, Source};
pub use state::{ObjectState, ObjectView, State};
