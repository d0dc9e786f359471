//! Object history: every version of one object, who made it, when and from where, with the
//! field-level diff from the version before.

use nexus_schemas::diff::diff_values;
use nexus_schemas::{ContentHash, FieldChange, ObjectKey};
use serde_json::Value;

use super::query::{AuditQuery, AuditRecord, EventId, query};
use crate::event::EventBody;
use crate::plan::Action;
use crate::request::Source;
use crate::store::{ReadView, StoreError};

/// One version of an object (or its deletion).
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub id: EventId,
    pub timestamp_ms: u64,
    pub actor: String,
    pub source: Source,
    pub request_id: String,
    /// `Created`, `Configured` or `Deleted`.
    pub action: Action,
    pub generation: u64,
    /// The canonical object (`None` for a deletion).
    pub object: Option<Value>,
    pub content_hash: Option<ContentHash>,
    /// Changes from the previous version (for `Configured`).
    pub changes: Vec<FieldChange>,
}

/// The versions of `key`, oldest first; with a limit, the most recent `limit` versions (still
/// diffed against the version before them).
pub fn history(
    view: &ReadView,
    key: &ObjectKey,
    limit: Option<usize>,
) -> Result<Vec<Version>, StoreError> {
    let q = AuditQuery {
        kind: Some(key.kind),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        limit: limit.map(|l| l.saturating_add(1)),
        ..AuditQuery::default()
    };
    let records = query(view, &q)?;
    let skip = match limit {
        Some(l) if records.len() > l => records.len() - l,
        _ => 0,
    };
    let mut out = Vec::with_capacity(records.len());
    let mut prev: Option<&Value> = None;
    for (i, r) in records.iter().enumerate() {
        let v = version(r, prev);
        prev = match &r.event {
            EventBody::ObjectApplied { object, .. } => Some(object),
            _ => None,
        };
        if i >= skip {
            out.push(v);
        }
    }
    Ok(out)
}

fn version(r: &AuditRecord, prev: Option<&Value>) -> Version {
    let (action, generation, object, content_hash, changes) = match (&r.event, prev) {
        (
            EventBody::ObjectApplied {
                object,
                content_hash,
                generation,
                ..
            },
            Some(p),
        ) if *generation > 1 => (
            Action::Configured,
            *generation,
            Some(object.clone()),
            Some(*content_hash),
            diff_values(p, object),
        ),
        (
            EventBody::ObjectApplied {
                object,
                content_hash,
                generation,
                ..
            },
            _,
        ) => {
            let action = if *generation > 1 {
                Action::Configured
            } else {
                Action::Created
            };
            (
                action,
                *generation,
                Some(object.clone()),
                Some(*content_hash),
                Vec::new(),
            )
        }
        (EventBody::ObjectDeleted { generation, .. }, _) => {
            (Action::Deleted, *generation, None, None, Vec::new())
        }
        (_, _) => (Action::Unchanged, 0, None, None, Vec::new()),
    };
    Version {
        id: r.id,
        timestamp_ms: r.timestamp_ms,
        actor: r.actor.clone(),
        source: r.source.clone(),
        request_id: r.request_id.clone(),
        action,
        generation,
        object,
        content_hash,
        changes,
    }
}
