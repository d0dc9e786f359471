//! nexus-ledger: events, entries, the blake3 hash chain, the redb store, the event-sourced state
//! projection, audit queries and the consensus integration.
//!
//! Flow: a [`SignedRequest`] is verified by [`Ledger::submit`], ordered through the [`Sequencer`]
//! seam (one replica: [`SingleNode`]; replicated: the consensus engine), executed against the
//! [`State`] ([`execute`] / [`plan_request`]), built into an [`Entry`] ([`build_entry`]), appended
//! durably by the [`Store`], and folded into the state. [`audit`] reads the log back and verifies
//! it; [`bench`] measures all of it.

pub mod admission;
pub mod audit;
pub mod bench;
pub mod codec;
pub mod consensus;
pub mod entry;
pub mod event;
pub mod execute;
pub mod ledger;
pub mod membership;
pub mod nodes;
pub mod plan;
pub mod prepared;
pub mod replicated;
pub mod request;
pub mod sequencer;
pub mod snapshot;
pub mod state;
pub mod store;

#[cfg(test)]
mod testutil;

pub use entry::{Entry, EntryHash, build_entry};
pub use event::{Event, EventBody, NodeInfo, Validator};
pub use execute::{Execution, execute};
pub use ledger::{Applied, Caller, Ledger, LedgerConfig, SubmitError};
pub use plan::{
    Action, FieldProblem, ObjectOutcome, ParsedObject, Plan, RequestError, Staged, check_objects,
    plan_request,
};
pub use prepared::Prepared;
pub use request::{Op, Request, SignatureError, SignedRequest, Source};
pub use sequencer::{Decision, Proposal, Sequencer, SingleNode};
pub use state::{GitSync, ObjectState, ObjectView, State};
pub use store::{Commit, Store, StoreConfig, StoreError};
