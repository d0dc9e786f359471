//! Audit: who changed what, when, and from where — queries over the log through its indexes,
//! object history with field diffs ([`history`]), and offline verification of the chain and of
//! every signature ([`verify`]) and of the commit certificates ([`verify_certificates`]).
//!
//! Queries pick the most selective index (object, git commit, actor, source type, else a scan of
//! the events), turn a time range into a height range (entry times never decrease), and read
//! only the rows they return, so their cost follows the result size, not the log size.

mod certs;
mod history;
mod query;
mod verify;

pub use certs::{CertReport, verify_certificates};
pub use history::{Version, history};
pub use query::{AuditQuery, AuditRecord, EventId, query};
pub use verify::{Problem, VerifyOptions, VerifyReport, verify, verify_with};

#[cfg(test)]
mod tests;
