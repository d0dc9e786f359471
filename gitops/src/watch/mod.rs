//! Noticing that a source may have changed: a poller per source at its interval, a notify
//! watcher on the refs of local repositories (debounced), and an HMAC-checked webhook endpoint.
//! All of them only emit [`ChangeEvent`]s to a channel; the server decides whether to sync.

pub mod local;
pub mod poll;
pub mod webhook;

use serde::Serialize;

use crate::source::SourceId;

pub use local::{DEFAULT_DEBOUNCE, LocalWatcher};
pub use poll::spawn_poller;
pub use webhook::{WebhookConfig, WebhookError, serve_webhooks, sign_body, verify_signature};

/// What noticed the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The poll interval elapsed.
    Poll,
    /// A ref of a local repository changed on disk.
    LocalRefs,
    /// A signed webhook arrived.
    Webhook,
}

/// "Source NAME may have changed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeEvent {
    pub source: SourceId,
    pub trigger: Trigger,
}
