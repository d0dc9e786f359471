//! Audit queries: filter events by object, actor, source type, git commit and time, newest
//! first through the best index, returned oldest first.

use std::collections::HashMap;

use nexus_schemas::Kind;
use redb::ReadOnlyTable;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::entry::EntryHeader;
use crate::event::{Event, EventBody, EventHead};
use crate::request::{RequestHead, Source};
use crate::store::{
    BY_ACTOR, BY_COMMIT, BY_OBJECT, BY_SOURCE, BY_TIME, EVENTS, HEADERS, REQUEST_HEADS, REQUESTS,
    ReadView, StoreError, dberr,
};

/// What to look for. Every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub kind: Option<Kind>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub actor: Option<String>,
    /// `cli`, `gitops` or `controller`.
    pub source_type: Option<String>,
    /// A git commit id or a prefix of one.
    pub commit: Option<String>,
    /// Entry time at or after (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Entry time at or before.
    pub until_ms: Option<u64>,
    /// Only events strictly before this one (paging backwards).
    pub before: Option<EventId>,
    /// At most this many events: the most recent matches. `None` = all.
    pub limit: Option<usize>,
}

/// Position of an event in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    pub height: u64,
    pub index: u32,
}

/// One event with its context.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: EventId,
    pub timestamp_ms: u64,
    pub request_id: String,
    /// Index of the signed request in its entry.
    pub request_index: u32,
    pub actor: String,
    pub source: Source,
    pub event: EventBody,
}

impl AuditRecord {
    /// One JSON object per event (for `nexus audit -o json`, one per line).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "height": self.id.height,
            "index": self.id.index,
            "timestamp_ms": self.timestamp_ms,
            "actor": self.actor,
            "request_id": self.request_id,
            "source": self.source,
            "type": self.event.type_name(),
        });
        match &self.event {
            EventBody::ObjectApplied {
                key,
                object,
                content_hash,
                generation,
            } => {
                v["kind"] = json!(key.kind);
                v["namespace"] = json!(key.namespace);
                v["name"] = json!(key.name);
                v["generation"] = json!(generation);
                v["content_hash"] = json!(content_hash.to_hex());
                v["object"] = object.clone();
            }
            EventBody::ObjectDeleted { key, generation } => {
                v["kind"] = json!(key.kind);
                v["namespace"] = json!(key.namespace);
                v["name"] = json!(key.name);
                v["generation"] = json!(generation);
            }
            other => v["event"] = serde_json::to_value(other).unwrap_or_default(),
        }
        v
    }
}

/// Runs a query against a read view of the store.
pub fn query(view: &ReadView, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let txn = view.txn();
    let Some((lo, hi)) = window(view, q)? else {
        return Ok(Vec::new());
    };
    let mut c = Collector {
        q,
        events: txn.open_table(EVENTS).map_err(dberr)?,
        requests: txn.open_table(REQUESTS).map_err(dberr)?,
        request_heads: txn.open_table(REQUEST_HEADS).map_err(dberr)?,
        headers: txn.open_table(HEADERS).map_err(dberr)?,
        heads: HashMap::new(),
        times: HashMap::new(),
        limit: q.limit.unwrap_or(usize::MAX),
        out: Vec::new(),
    };
    if c.limit == 0 {
        return Ok(Vec::new());
    }
    let in_window = |id: EventId| id.height >= lo && id <= hi;
    if let (Some(kind), Some(ns), Some(name)) = (q.kind, &q.namespace, &q.name) {
        let t = txn.open_table(BY_OBJECT).map_err(dberr)?;
        let k = kind.as_str();
        for row in t
            .range(
                (k, ns.as_str(), name.as_str(), lo, 0)
                    ..=(k, ns.as_str(), name.as_str(), hi.height, hi.index),
            )
            .map_err(dberr)?
            .rev()
        {
            let (key, _) = row.map_err(dberr)?;
            let (_, _, _, height, index) = key.value();
            if !c.offer(EventId { height, index }, None)? {
                break;
            }
        }
    } else if let Some(commit) = &q.commit {
        // Commits may be abbreviated: gather every matching request, newest first.
        let t = txn.open_table(BY_COMMIT).map_err(dberr)?;
        let mut found = Vec::new();
        for row in t.range((commit.as_str(), 0, 0)..).map_err(dberr)? {
            let (key, range) = row.map_err(dberr)?;
            let (c, h, r) = key.value();
            if !c.starts_with(commit.as_str()) {
                break;
            }
            found.push((h, r, range.value()));
        }
        found.sort_unstable_by_key(|&(h, r, _)| std::cmp::Reverse((h, r)));
        'outer: for (height, _, (first, count)) in found {
            for index in (first..first + count).rev() {
                let id = EventId { height, index };
                if in_window(id) && !c.offer(id, None)? {
                    break 'outer;
                }
            }
        }
    } else if let Some((table, value)) = q
        .actor
        .as_ref()
        .map(|a| (BY_ACTOR, a))
        .or(q.source_type.as_ref().map(|s| (BY_SOURCE, s)))
    {
        let t = txn.open_table(table).map_err(dberr)?;
        'outer: for row in t
            .range((value.as_str(), lo, 0)..=(value.as_str(), hi.height, u32::MAX))
            .map_err(dberr)?
            .rev()
        {
            let (key, range) = row.map_err(dberr)?;
            let (_, height, _) = key.value();
            let (first, count) = range.value();
            for index in (first..first + count).rev() {
                let id = EventId { height, index };
                if in_window(id) && !c.offer(id, None)? {
                    break 'outer;
                }
            }
        }
    } else {
        let t = txn.open_table(EVENTS).map_err(dberr)?;
        for row in t
            .range((lo, 0)..=(hi.height, hi.index))
            .map_err(dberr)?
            .rev()
        {
            let (key, bytes) = row.map_err(dberr)?;
            let (height, index) = key.value();
            if !c.offer(EventId { height, index }, Some(bytes.value()))? {
                break;
            }
        }
    }
    c.out.reverse();
    Ok(c.out)
}

/// The (lowest height, highest event id) the time range and cursor allow; `None` = nothing.
fn window(view: &ReadView, q: &AuditQuery) -> Result<Option<(u64, EventId)>, StoreError> {
    let times = view.txn().open_table(BY_TIME).map_err(dberr)?;
    let mut lo = 1;
    let mut hi = EventId {
        height: u64::MAX,
        index: u32::MAX,
    };
    if let Some(since) = q.since_ms {
        match times.range((since, 0)..).map_err(dberr)?.next() {
            Some(row) => lo = row.map_err(dberr)?.0.value().1,
            None => return Ok(None),
        }
    }
    if let Some(until) = q.until_ms {
        match times
            .range(..=(until, u64::MAX))
            .map_err(dberr)?
            .next_back()
        {
            Some(row) => hi.height = row.map_err(dberr)?.0.value().1,
            None => return Ok(None),
        }
    }
    if let Some(b) = q.before {
        let prev = match (b.height, b.index) {
            (0, 0) => return Ok(None),
            (h, 0) => EventId {
                height: h - 1,
                index: u32::MAX,
            },
            (h, i) => EventId {
                height: h,
                index: i - 1,
            },
        };
        hi = hi.min(prev);
    }
    Ok((lo <= hi.height).then_some((lo, hi)))
}

struct Collector<'q> {
    q: &'q AuditQuery,
    events: ReadOnlyTable<(u64, u32), &'static [u8]>,
    requests: ReadOnlyTable<(u64, u32), &'static [u8]>,
    request_heads: ReadOnlyTable<(u64, u32), &'static [u8]>,
    headers: ReadOnlyTable<u64, &'static [u8]>,
    heads: HashMap<(u64, u32), RequestHead>,
    times: HashMap<u64, u64>,
    limit: usize,
    out: Vec<AuditRecord>,
}

fn corrupt(height: u64, what: &'static str) -> impl FnOnce(crate::codec::CodecError) -> StoreError {
    move |source| StoreError::Corrupt {
        height,
        what,
        source,
    }
}

impl Collector<'_> {
    /// Considers one candidate; false once the limit is reached.
    fn offer(&mut self, id: EventId, bytes: Option<&[u8]>) -> Result<bool, StoreError> {
        let owned;
        let bytes = match bytes {
            Some(b) => b,
            None => match self.events.get((id.height, id.index)).map_err(dberr)? {
                Some(v) => {
                    owned = v.value().to_vec();
                    &owned
                }
                None => return Err(StoreError::Missing { height: id.height }),
            },
        };
        let head = EventHead::decode(bytes).map_err(corrupt(id.height, "event"))?;
        let q = self.q;
        if q.kind.is_some() || q.namespace.is_some() || q.name.is_some() {
            let Some((k, ns, n)) = head.key else {
                return Ok(true);
            };
            if q.kind.is_some_and(|kind| kind.as_str() != k)
                || q.namespace.as_deref().is_some_and(|x| x != ns)
                || q.name.as_deref().is_some_and(|x| x != n)
            {
                return Ok(true);
            }
        }
        let req = self.request_head(id.height, head.request)?;
        if q.actor.as_deref().is_some_and(|a| a != req.actor)
            || q.source_type
                .as_deref()
                .is_some_and(|s| s != req.source.type_name())
            || q.commit
                .as_deref()
                .is_some_and(|c| !req.source.commit().is_some_and(|rc| rc.starts_with(c)))
        {
            return Ok(true);
        }
        let (request_id, actor, source) = (req.id.clone(), req.actor.clone(), req.source.clone());
        let timestamp_ms = self.timestamp(id.height)?;
        let event = Event::from_bytes(bytes).map_err(corrupt(id.height, "event"))?;
        self.out.push(AuditRecord {
            id,
            timestamp_ms,
            request_id,
            request_index: head.request,
            actor,
            source,
            event: event.body,
        });
        Ok(self.out.len() < self.limit)
    }

    fn request_head(&mut self, height: u64, index: u32) -> Result<&RequestHead, StoreError> {
        if !self.heads.contains_key(&(height, index)) {
            // The small head row; the whole signed record only if the row is missing.
            let head = match self.request_heads.get((height, index)).map_err(dberr)? {
                Some(v) => {
                    RequestHead::from_bytes(v.value()).map_err(corrupt(height, "request head"))?
                }
                None => {
                    let v = self
                        .requests
                        .get((height, index))
                        .map_err(dberr)?
                        .ok_or(StoreError::Missing { height })?;
                    RequestHead::from_record(v.value()).map_err(corrupt(height, "request"))?
                }
            };
            self.heads.insert((height, index), head);
        }
        self.heads
            .get(&(height, index))
            .ok_or(StoreError::Missing { height })
    }

    fn timestamp(&mut self, height: u64) -> Result<u64, StoreError> {
        if let Some(t) = self.times.get(&height) {
            return Ok(*t);
        }
        let v = self
            .headers
            .get(height)
            .map_err(dberr)?
            .ok_or(StoreError::Missing { height })?;
        let t = EntryHeader::from_bytes(v.value())
            .map_err(corrupt(height, "header"))?
            .timestamp_ms;
        self.times.insert(height, t);
        Ok(t)
    }
}
