//! nexus-gitops: git sources (git2), tree reading, commit to change set, `plan` rendering and
//! watchers (notify for local paths, polling and webhooks for remotes).
//!
//! Seams for the server: [`repo`] does the git IO (a bare mirror per URL), [`sync::plan_sync`]
//! turns a commit plus the live objects into a [`SyncPlan`] (pure), [`sync::prepare`] wires
//! fetch + signature check + read + plan together, [`verify`] is the replica-side check of a
//! proposed sync, [`signature`] checks SSH-signed commits, [`watch`] emits "source may have
//! changed" events, and [`plan`] renders `nexus plan`. Nothing here writes to the ledger.

pub mod bench;
pub mod plan;
pub mod repo;
pub mod signature;
pub mod snapshot;
pub mod source;
pub mod sync;
pub mod verify;
pub mod watch;

pub use repo::{FetchOptions, GitAuth, GitError, GitRepo, HeadMove, Mirror, Mirrors, RepoUrl};
pub use snapshot::{
    ClaimedObject, CommitSnapshot, DesiredObject, GitProvenance, ManifestSet, claim_digest,
};
pub use source::{Owner, SourceConfig, SourceId};
pub use sync::prepare::{LastSync, PreparedSync, SyncError, prepare_sync};
pub use sync::{LiveObject, LiveObjects, SyncInput, SyncOp, SyncPlan, SyncPolicy, plan_sync};
pub use verify::{Claim, Proposal, VerifyRejection, verify_proposal};
pub use watch::{ChangeEvent, Trigger};
