//! nexus-gitops: git sources (git2), tree reading, commit to change set, `plan` rendering and
//! watchers (notify for local paths, polling and webhooks for remotes).
//!
//! Seams for the server: [`repo`] does the git IO, [`sync::plan_sync`] turns a commit plus the
//! live objects into a [`sync::SyncPlan`] (pure), [`verify`] is the replica-side check of a
//! proposed sync, [`signature`] checks SSH-signed commits, [`watch`] emits "source may have
//! changed" events, and [`plan`] renders `nexus plan`. Nothing here writes to the ledger.

pub mod repo;
pub mod signature;
pub mod snapshot;
pub mod source;
pub mod sync;
pub mod verify;
pub mod watch;

pub use repo::{FetchOptions, GitAuth, GitError, GitRepo, HeadMove, Mirror, Mirrors, RepoUrl};
pub use snapshot::{ClaimedObject, CommitSnapshot, DesiredObject, GitProvenance, ManifestSet};
pub use source::{Owner, SourceConfig, SourceId};
pub use sync::{LiveObject, LiveObjects, SyncInput, SyncOp, SyncPlan, SyncPolicy, plan_sync};
