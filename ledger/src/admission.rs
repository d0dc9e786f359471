//! The admission seam: checks a request must pass on every replica before it may enter a batch,
//! beyond its signature (checked by [`crate::Ledger::submit`] and on decided foreign requests)
//! and its plan (checked when executed). The GitOps implementation lives in the server: for a
//! request whose source is [`crate::Source::Gitops`] the replica fetches the named commit with its
//! own mirror and accepts only content git really holds (DESIGN.md BFT rule 3). The ledger knows
//! only this trait, never git.
//!
//! Before any admission check, every object a request applies must pass the manifest validator
//! ([`crate::plan::check_objects`], built in, not pluggable): `Ledger::submit`, `App::build` and
//! `App::validate` run it, so an invalid object never reaches a batch.
//!
//! Callers: the single-replica path runs [`Admission::admit_current`] inside
//! [`crate::Ledger::submit`], before the request is queued; the consensus `App::validate` must run
//! [`Admission::admit`] for every request of a proposed batch against the state the batch would
//! be executed on, and refuse the whole batch if any request is refused.

use std::sync::RwLock;

use crate::request::SignedRequest;
use crate::state::State;

/// A check every replica runs on every request before accepting it.
///
/// The answer must depend only on the committed `state`, the request and things every honest
/// replica can check for itself (git content), never on this replica's clock or on what one other
/// replica said. `Err` carries the reason, shown to the submitter; nothing is written.
pub trait Admission: Send + Sync {
    /// Checks `req` against `state`. May block on IO (a git fetch).
    fn admit(&self, state: &State, req: &SignedRequest) -> Result<(), String>;

    /// [`Admission::admit`] against the current state behind `state`. The default holds the read
    /// lock for the whole check; implementations that do IO override it to copy what they need
    /// and release the lock first, so a slow fetch never blocks the ledger writer.
    fn admit_current(&self, state: &RwLock<State>, req: &SignedRequest) -> Result<(), String> {
        let guard = state.read().unwrap_or_else(|e| e.into_inner());
        self.admit(&guard, req)
    }
}

/// Admits every request (the ledger's default; signatures and plans are still checked).
#[derive(Debug, Default, Clone, Copy)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _state: &State, _req: &SignedRequest) -> Result<(), String> {
        Ok(())
    }
}
