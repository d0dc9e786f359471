//! Watch fan-out: one thread follows the ledger's committed entries and broadcasts them; each
//! watch stream filters them by its selector after sending the initial list, and remembers which
//! objects it has shown so objects entering or leaving a label selector are ADDED or DELETED.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nexus_api::client::{ObjectInfo, Selector, WatchEvent};
use nexus_ledger::{Entry, EventBody, Ledger, State};
use nexus_schemas::{Kind, ObjectKey};
use nexus_transport::RpcError;
use tokio::sync::broadcast;

use crate::convert::object_info;

/// Broadcasts committed entries to watchers.
pub struct Hub {
    tx: broadcast::Sender<Arc<Entry>>,
    stop: Arc<AtomicBool>,
}

impl Hub {
    /// Starts following `ledger`.
    pub fn start(ledger: Arc<Ledger>) -> Hub {
        let (tx, _) = broadcast::channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let rx = ledger.subscribe();
        let (tx2, stop2) = (tx.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("nexus-watch-hub".into())
            .spawn(move || {
                while let Ok(entry) = rx.recv() {
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = tx2.send(entry);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the watch thread: {e}; watches will only show the initial list"
            );
        }
        Hub { tx, stop }
    }

    /// A receiver of entries committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Entry>> {
        self.tx.subscribe()
    }

    /// Stops forwarding (the thread ends with the ledger's next entry or its shutdown).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Parses the selector's kind (`None` = every kind).
pub fn selector_kind(sel: &Selector) -> Result<Option<Kind>, RpcError> {
    match &sel.kind {
        None => Ok(None),
        Some(k) => Kind::parse(k).map(Some).ok_or_else(|| {
            RpcError::invalid_argument(format!(
                "unknown kind {k:?}; kinds are Workload, Service, NetworkPolicy, GitSource"
            ))
        }),
    }
}

/// Whether an object key (and its labels) is selected.
pub fn selected(
    sel: &Selector,
    kind: Option<Kind>,
    key: &ObjectKey,
    object: Option<&serde_json::Value>,
) -> bool {
    if kind.is_some_and(|k| k != key.kind) {
        return false;
    }
    if sel
        .namespace
        .as_ref()
        .is_some_and(|ns| *ns != key.namespace)
        || sel.name.as_ref().is_some_and(|n| *n != key.name)
    {
        return false;
    }
    sel.labels.iter().all(|(k, v)| {
        object
            .and_then(|o| o.pointer("/metadata/labels"))
            .and_then(|l| l.get(k))
            .and_then(|x| x.as_str())
            == Some(v.as_str())
    })
}

/// The keys a watch stream has shown as present (its last event for them was ADDED or
/// MODIFIED): an object entering the selector is ADDED, one leaving it (its labels changed, or it
/// was deleted) is DELETED, and objects the stream never showed make no events.
pub type Visible = HashSet<ObjectKey>;

/// The initial list for a watch: every selected object, as ADDED, then SYNCED. Records what it
/// listed in `visible`.
pub fn initial(
    state: &State,
    sel: &Selector,
    kind: Option<Kind>,
    visible: &mut Visible,
) -> Vec<WatchEvent> {
    let mut out: Vec<WatchEvent> = state
        .objects
        .iter()
        .filter(|(k, s)| selected(sel, kind, k, Some(&s.object)))
        .map(|(k, s)| {
            visible.insert(k.clone());
            WatchEvent {
                height: state.height,
                event_type: "ADDED".into(),
                object: Some(object_info(s)),
            }
        })
        .collect();
    out.push(WatchEvent {
        height: state.height,
        event_type: "SYNCED".into(),
        object: None,
    });
    out
}

/// A removed object as a DELETED event shows it: kind, namespace and name.
fn gone(key: &ObjectKey, generation: u64, height: u64) -> WatchEvent {
    let object = serde_json::json!({"kind": key.kind.as_str(), "metadata": {"namespace": key.namespace, "name": key.name}});
    WatchEvent {
        height,
        event_type: "DELETED".into(),
        object: Some(ObjectInfo {
            object,
            content_hash: String::new(),
            generation,
            resource_version: height,
            created_height: 0,
            updated_height: height,
            last_actor: String::new(),
            owner: String::new(),
            status: None,
        }),
    }
}

/// The watch events an entry produces for a selector, updating `visible`. The object's content,
/// generation and version come from the event itself; creation height and owner from `state`
/// (which may be ahead of the entry) while it still holds that object, else from the entry.
pub fn events_of(
    entry: &Entry,
    state: &State,
    sel: &Selector,
    kind: Option<Kind>,
    visible: &mut Visible,
) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for ev in &entry.events {
        match &ev.body {
            EventBody::ObjectApplied {
                key,
                object,
                content_hash,
                generation,
            } => {
                if !selected(sel, kind, key, Some(object)) {
                    // Left the selector (its labels changed): gone for this watch.
                    if visible.remove(key) {
                        out.push(gone(key, *generation, entry.height));
                    }
                    continue;
                }
                let request = entry.requests.get(ev.request as usize).map(|r| &r.request);
                let actor = request.map(|r| r.actor.clone()).unwrap_or_default();
                let (created_height, owner) = match state.get(key) {
                    Some(s) if s.created_height <= entry.height => {
                        (s.created_height, s.owner.clone())
                    }
                    // Deleted (or re-created) since: what the entry itself says.
                    _ => (
                        if *generation == 1 { entry.height } else { 0 },
                        request.map(|r| r.source.owner()).unwrap_or_default(),
                    ),
                };
                let event_type = if visible.insert(key.clone()) {
                    "ADDED"
                } else {
                    "MODIFIED"
                };
                out.push(WatchEvent {
                    height: entry.height,
                    event_type: event_type.into(),
                    object: Some(ObjectInfo {
                        object: object.clone(),
                        content_hash: content_hash.to_hex(),
                        generation: *generation,
                        resource_version: entry.height,
                        created_height,
                        updated_height: entry.height,
                        last_actor: actor,
                        owner,
                        status: None,
                    }),
                });
            }
            EventBody::ObjectDeleted { key, generation } if visible.remove(key) => {
                out.push(gone(key, *generation, entry.height));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
