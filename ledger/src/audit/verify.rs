//! `audit verify`: recompute every entry hash from the stored rows, check every link to the
//! previous entry, every request signature and every audit head row (optionally also that the
//! query indexes hold every row the log implies), and name the first bad height with what is
//! wrong.
//! Heights are split into ranges verified in parallel, each on its own read transaction.

use std::panic::{AssertUnwindSafe, catch_unwind};

use redb::{ReadableTable, ReadableTableMetadata};
use thiserror::Error;

use crate::entry::{EntryHash, EntryHeader};
use crate::event::EventHead;
use crate::request::{RawSignedRequest, RequestHead};
use crate::store::{
    BY_ACTOR, BY_COMMIT, BY_OBJECT, BY_SOURCE, BY_TIME, EVENTS, HEADERS, Head, REQUEST_HEADS,
    REQUESTS, ReadView, Store, StoreError, dberr,
};

/// What is wrong at a height.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    #[error("entry {height}: hash mismatch: stored {stored}, content hashes to {computed}")]
    HashMismatch {
        height: u64,
        stored: EntryHash,
        computed: EntryHash,
    },
    #[error("entry {height}: broken link: it names {found} as previous entry, but entry {prev} is {expected}", prev = .height - 1)]
    BrokenLink {
        height: u64,
        expected: EntryHash,
        found: EntryHash,
    },
    #[error("entry {height}: request {request} ({id}): the signature does not match")]
    BadSignature {
        height: u64,
        request: u32,
        id: String,
    },
    #[error("entry {height}: request {request}: {actor} is not allowed to sign with key {key}")]
    UntrustedKey {
        height: u64,
        request: u32,
        actor: String,
        key: String,
    },
    #[error("entry {height}: cannot be decoded ({what}): {message}")]
    Undecodable {
        height: u64,
        what: &'static str,
        message: String,
    },
    #[error("entry {height} is missing")]
    Missing { height: u64 },
    #[error("entry {height}: {message}")]
    Inconsistent { height: u64, message: String },
    #[error("entries {from}..={to}: the storage engine failed while reading them: {message}")]
    Storage { from: u64, to: u64, message: String },
}

impl Problem {
    /// The (first) height the problem is at.
    pub fn height(&self) -> u64 {
        match self {
            Problem::HashMismatch { height, .. }
            | Problem::BrokenLink { height, .. }
            | Problem::BadSignature { height, .. }
            | Problem::UntrustedKey { height, .. }
            | Problem::Undecodable { height, .. }
            | Problem::Missing { height }
            | Problem::Inconsistent { height, .. } => *height,
            Problem::Storage { from, .. } => *from,
        }
    }
}

/// Decides whether `actor` may sign with `key` (e.g. the key of the actor's certificate).
pub type KeyPolicy<'a> = &'a (dyn Fn(&str, &[u8; 32]) -> bool + Sync);

/// How to verify.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Check request signatures (the expensive part).
    pub signatures: bool,
    /// Also check each request's key against the actor it names.
    pub trusted_key: Option<KeyPolicy<'a>>,
    /// Verify only entries `1..=up_to` and report the entry at `up_to` as the head (to compare
    /// replicas at one height while they keep deciding).
    pub up_to: Option<u64>,
    /// Also check that the query indexes (object, actor, source, commit, time) hold every row
    /// the log implies: about 40 % more time, mostly one object-index lookup per event.
    pub indexes: bool,
}

impl Default for VerifyOptions<'_> {
    fn default() -> Self {
        VerifyOptions {
            threads: 0,
            signatures: true,
            trusted_key: None,
            up_to: None,
            indexes: false,
        }
    }
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("threads", &self.threads)
            .field("signatures", &self.signatures)
            .field("trusted_key", &self.trusted_key.is_some())
            .field("up_to", &self.up_to)
            .field("indexes", &self.indexes)
            .finish()
    }
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub head: Option<Head>,
    /// Counted up to the first problem of each range.
    pub entries: u64,
    pub requests: u64,
    pub events: u64,
    /// The first problem, by height. `None` = the whole chain verifies.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Verifies the whole log with default options.
pub fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    verify_with(store, &VerifyOptions::default())
}

/// Verifies the whole log.
pub fn verify_with(store: &Store, opts: &VerifyOptions<'_>) -> Result<VerifyReport, StoreError> {
    let view = store.read()?;
    let mut report = VerifyReport::default();
    let stored_last = {
        let t = view.txn().open_table(HEADERS).map_err(dberr)?;
        if t.is_empty().map_err(dberr)? {
            0
        } else {
            t.last().map_err(dberr)?.map_or(0, |(k, _)| k.value())
        }
    };
    let last = opts.up_to.map_or(stored_last, |u| u.min(stored_last));
    let head = match (opts.up_to, view.header(last)) {
        (Some(_), Ok(Some(h))) => Ok(Some(Head {
            height: h.height,
            hash: h.hash,
            timestamp_ms: h.timestamp_ms,
        })),
        (Some(_), Ok(None)) => Ok(None),
        _ => view.head(),
    };
    match head {
        Ok(h) => report.head = h,
        Err(e) => {
            report.problem = Some(Problem::Inconsistent {
                height: last,
                message: format!("the stored head is unreadable: {e}"),
            })
        }
    }
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    } as u64;
    let chunk = last.div_ceil(threads).max(1);
    let ranges: Vec<(u64, u64)> = (0..threads)
        .map(|i| (1 + i * chunk, ((i + 1) * chunk).min(last)))
        .filter(|(a, b)| a <= b)
        .collect();
    let results: Vec<Result<Part, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(from, to)| {
                s.spawn(move || {
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        store.read().and_then(|v| verify_range(&v, from, to, opts))
                    }));
                    run.unwrap_or_else(|p| {
                        let message = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "panic".into());
                        Ok(Part {
                            problem: Some(Problem::Storage { from, to, message }),
                            ..Part::default()
                        })
                    })
                })
            })
            .collect();
        // The panic of a range is caught inside its thread; should the thread fail anyway,
        // its range is reported, not passed over.
        handles
            .into_iter()
            .zip(&ranges)
            .map(|(h, &(from, to))| {
                h.join().unwrap_or_else(|_| {
                    Ok(Part {
                        problem: Some(Problem::Storage {
                            from,
                            to,
                            message: "the thread verifying this range failed".into(),
                        }),
                        ..Part::default()
                    })
                })
            })
            .collect()
    });
    let mut first: Option<Problem> = None;
    for part in results {
        let part = part?;
        report.entries += part.entries;
        report.requests += part.requests;
        report.events += part.events;
        if let Some(p) = part.problem
            && first.as_ref().is_none_or(|f| p.height() < f.height())
        {
            first = Some(p);
        }
    }
    if first.is_none()
        && report.problem.is_none()
        && let Some(head) = report.head
        && (head.height != last
            || view.header(last).ok().flatten().map(|h| h.hash) != Some(head.hash))
    {
        first = Some(Problem::Inconsistent {
            height: last,
            message: format!(
                "the stored head (height {}) does not match the last entry",
                head.height
            ),
        });
    }
    if report.problem.is_none() {
        report.problem = first;
    }
    Ok(report)
}

#[derive(Debug, Default)]
struct Part {
    entries: u64,
    requests: u64,
    events: u64,
    problem: Option<Problem>,
}

fn undecodable(
    height: u64,
    what: &'static str,
) -> impl FnOnce(crate::codec::CodecError) -> Problem {
    move |e| Problem::Undecodable {
        height,
        what,
        message: e.to_string(),
    }
}

/// Verifies heights `from..=to` in order; stops at the first problem.
fn verify_range(
    view: &ReadView,
    from: u64,
    to: u64,
    opts: &VerifyOptions<'_>,
) -> Result<Part, StoreError> {
    let mut part = Part::default();
    let txn = view.txn();
    let headers = txn.open_table(HEADERS).map_err(dberr)?;
    let requests = txn.open_table(REQUESTS).map_err(dberr)?;
    let events = txn.open_table(EVENTS).map_err(dberr)?;
    let index = Indexes {
        heads: txn.open_table(REQUEST_HEADS).map_err(dberr)?,
        by_object: txn.open_table(BY_OBJECT).map_err(dberr)?,
        by_actor: txn.open_table(BY_ACTOR).map_err(dberr)?,
        by_source: txn.open_table(BY_SOURCE).map_err(dberr)?,
        by_commit: txn.open_table(BY_COMMIT).map_err(dberr)?,
        by_time: txn.open_table(BY_TIME).map_err(dberr)?,
    };
    // The previous entry's hash, if it is readable (if not, the range before reports it).
    let mut prev: Option<EntryHash> = if from == 1 {
        Some(EntryHash::ZERO)
    } else {
        headers
            .get(from - 1)
            .map_err(dberr)?
            .and_then(|v| EntryHeader::from_bytes(v.value()).ok())
            .map(|h| h.hash)
    };
    let mut req_rows = requests
        .range((from, 0u32)..=(to, u32::MAX))
        .map_err(dberr)?;
    let mut ev_rows = events.range((from, 0u32)..=(to, u32::MAX)).map_err(dberr)?;
    let mut expected = from;
    for row in headers.range(from..=to).map_err(dberr)? {
        let (k, v) = row.map_err(dberr)?;
        let height = k.value();
        if height != expected {
            part.problem = Some(Problem::Missing { height: expected });
            return Ok(part);
        }
        let rows = Rows {
            requests: &mut req_rows,
            events: &mut ev_rows,
            index: &index,
        };
        match check_entry(height, v.value(), prev, rows, opts)? {
            Ok((hash, n_req, n_ev)) => {
                part.entries += 1;
                part.requests += n_req;
                part.events += n_ev;
                prev = Some(hash);
            }
            Err(p) => {
                part.problem = Some(p);
                return Ok(part);
            }
        }
        expected += 1;
    }
    if expected <= to {
        part.problem = Some(Problem::Missing { height: expected });
    } else if let Some(row) = req_rows.next().or_else(|| ev_rows.next()) {
        let (k, _) = row.map_err(dberr)?;
        let (height, index) = k.value();
        part.problem = Some(Problem::Inconsistent {
            height,
            message: format!("row {index} is beyond the entry's count"),
        });
    }
    Ok(part)
}

type RowRange = redb::Range<'static, (u64, u32), &'static [u8]>;

type ByRequest = redb::ReadOnlyTable<(&'static str, u64, u32), (u32, u32)>;

/// The derived tables audit queries go through: each must hold every row the log implies, or
/// a query would silently miss events (a wrong extra row cannot show a wrong event: queries
/// re-check every event they return against the filter).
struct Indexes {
    heads: redb::ReadOnlyTable<(u64, u32), &'static [u8]>,
    by_object: redb::ReadOnlyTable<(&'static str, &'static str, &'static str, u64, u32), ()>,
    by_actor: ByRequest,
    by_source: ByRequest,
    by_commit: ByRequest,
    by_time: redb::ReadOnlyTable<(u64, u64), ()>,
}

/// Where an entry's rows are read from.
struct Rows<'a> {
    requests: &'a mut RowRange,
    events: &'a mut RowRange,
    index: &'a Indexes,
}

fn index_problem(height: u64, message: String) -> Option<Problem> {
    Some(Problem::Inconsistent {
        height,
        message: format!("{message}: queries through that index would miss it"),
    })
}

/// Checks the entry's rows in the request indexes and the time index, given each request's
/// head and (first event, event count).
fn check_request_indexes(
    height: u64,
    timestamp_ms: u64,
    requests: &[(Option<RequestHead>, (u32, u32))],
    index: &Indexes,
) -> Result<Option<Problem>, StoreError> {
    if index
        .by_time
        .get((timestamp_ms, height))
        .map_err(dberr)?
        .is_none()
    {
        return Ok(index_problem(
            height,
            "the entry is missing from the time index".into(),
        ));
    }
    for (i, (head, range)) in requests.iter().enumerate() {
        let Some(head) = head else { continue };
        let i = i as u32;
        let mut wanted = vec![
            ("actor", &index.by_actor, head.actor.as_str()),
            ("source", &index.by_source, head.source.type_name()),
        ];
        if let Some(commit) = head.source.commit() {
            wanted.push(("commit", &index.by_commit, commit));
        }
        for (what, table, value) in wanted {
            let found = table
                .get((value, height, i))
                .map_err(dberr)?
                .map(|g| g.value());
            if found != Some(*range) {
                return Ok(index_problem(
                    height,
                    format!(
                        "request {i} is missing from the {what} index or has a wrong event range there"
                    ),
                ));
            }
        }
    }
    Ok(None)
}

/// Checks one entry. The outer error is a storage failure; the inner one a problem found.
fn check_entry(
    height: u64,
    header: &[u8],
    prev: Option<EntryHash>,
    rows: Rows<'_>,
    opts: &VerifyOptions<'_>,
) -> Result<Result<(EntryHash, u64, u64), Problem>, StoreError> {
    let h = match EntryHeader::from_bytes(header) {
        Ok(h) => h,
        Err(e) => return Ok(Err(undecodable(height, "header")(e))),
    };
    if h.height != height {
        return Ok(Err(Problem::Inconsistent {
            height,
            message: format!("the header says height {}", h.height),
        }));
    }
    if let Some(p) = prev
        && p != h.prev_hash
    {
        return Ok(Err(Problem::BrokenLink {
            height,
            expected: p,
            found: h.prev_hash,
        }));
    }
    let mut hasher = h.hasher();
    // A row problem is reported only if the hash holds: altered content is a hash mismatch.
    let mut row_problem: Option<Problem> = None;
    let mut jobs: Vec<SigJob> = Vec::with_capacity(h.n_requests as usize);
    // Each request's head and (first event, event count), for the index checks.
    let mut req_index: Vec<(Option<RequestHead>, (u32, u32))> =
        Vec::with_capacity(h.n_requests as usize);
    for i in 0..h.n_requests {
        let Some(row) = rows.requests.next() else {
            return Ok(Err(missing_row(height, "request", i)));
        };
        let (k, v) = row.map_err(dberr)?;
        if k.value() != (height, i) {
            return Ok(Err(misplaced(height, "request", i, k.value())));
        }
        hasher.record(v.value());
        if row_problem.is_none() {
            match check_request(height, i, v.value(), opts) {
                Ok(job) => jobs.extend(job),
                Err(p) => row_problem = Some(p),
            }
        }
        let head = RequestHead::from_record(v.value()).ok();
        if row_problem.is_none() {
            let stored = rows.index.heads.get((height, i)).map_err(dberr)?;
            row_problem = check_head(height, i, head.as_ref(), stored.as_ref().map(|g| g.value()));
        }
        req_index.push((head, (0, 0)));
    }
    let mut last_request = 0;
    for i in 0..h.n_events {
        let Some(row) = rows.events.next() else {
            return Ok(Err(missing_row(height, "event", i)));
        };
        let (k, v) = row.map_err(dberr)?;
        if k.value() != (height, i) {
            return Ok(Err(misplaced(height, "event", i, k.value())));
        }
        hasher.record(v.value());
        if row_problem.is_none() {
            row_problem = match EventHead::decode(v.value()) {
                Err(e) => Some(undecodable(height, "event")(e)),
                Ok(e) if e.request >= h.n_requests || e.request < last_request => {
                    Some(Problem::Inconsistent {
                        height,
                        message: format!(
                            "event {i} names request {} out of order or out of range",
                            e.request
                        ),
                    })
                }
                Ok(e) => {
                    last_request = e.request;
                    let range = &mut req_index[e.request as usize].1;
                    if range.1 == 0 {
                        range.0 = i;
                    }
                    range.1 += 1;
                    match e.key {
                        Some((kind, ns, name))
                            if opts.indexes
                                && rows
                                    .index
                                    .by_object
                                    .get((kind, ns, name, height, i))
                                    .map_err(dberr)?
                                    .is_none() =>
                        {
                            index_problem(
                                height,
                                format!(
                                    "event {i} ({kind} {ns}/{name}) is missing from the object index"
                                ),
                            )
                        }
                        _ => None,
                    }
                }
            };
        }
    }
    // A request without events has the range (events before it, 0).
    let mut next = 0;
    for (_, range) in &mut req_index {
        if range.1 == 0 {
            range.0 = next;
        }
        next = range.0 + range.1;
    }
    if row_problem.is_none() && opts.indexes {
        row_problem = check_request_indexes(height, h.timestamp_ms, &req_index, rows.index)?;
    }
    let computed = hasher.finish();
    if computed != h.hash {
        return Ok(Err(Problem::HashMismatch {
            height,
            stored: h.hash,
            computed,
        }));
    }
    // Signatures of the requests before a row problem come first (rows are in order).
    if let Some(bad) = first_bad_signature(&jobs) {
        let id = RequestHead::from_json(&bad.json)
            .map(|h| h.id)
            .unwrap_or_else(|_| "?".into());
        return Ok(Err(Problem::BadSignature {
            height,
            request: bad.index,
            id,
        }));
    }
    Ok(match row_problem {
        Some(p) => Err(p),
        None => Ok((h.hash, u64::from(h.n_requests), u64::from(h.n_events))),
    })
}

/// A signature to check once the entry's hash holds.
struct SigJob {
    index: u32,
    key: [u8; 32],
    signature: [u8; 64],
    json: String,
}

/// Decodes a request row and applies the key policy; returns its signature to check.
fn check_request(
    height: u64,
    i: u32,
    bytes: &[u8],
    opts: &VerifyOptions<'_>,
) -> Result<Option<SigJob>, Problem> {
    let raw = RawSignedRequest::decode(bytes).map_err(undecodable(height, "request"))?;
    if let Some(policy) = opts.trusted_key {
        let head = raw.head().map_err(undecodable(height, "request"))?;
        if !policy(&head.actor, &raw.public_key) {
            return Err(Problem::UntrustedKey {
                height,
                request: i,
                actor: head.actor,
                key: hex::encode(raw.public_key),
            });
        }
    }
    Ok(opts.signatures.then(|| SigJob {
        index: i,
        key: raw.public_key,
        signature: raw.signature,
        json: raw.json.to_owned(),
    }))
}

/// The audit head row of request `i` must be what its signed record says (audit output shows
/// the row: a row altered beside the chain would otherwise name another actor).
fn check_head(
    height: u64,
    i: u32,
    head: Option<&RequestHead>,
    stored: Option<&[u8]>,
) -> Option<Problem> {
    let expected = head?.to_bytes();
    match stored {
        Some(row) if row == expected.as_slice() => None,
        Some(_) => Some(Problem::Inconsistent {
            height,
            message: format!("the audit index row of request {i} does not match its signed record"),
        }),
        None => Some(Problem::Inconsistent {
            height,
            message: format!("the audit index row of request {i} is missing"),
        }),
    }
}

/// The first job whose signature is bad, by the rule a replica admits requests with: strict
/// ed25519 verification, one signature at a time. (A batch check is about twice as fast but is
/// not the same rule: it accepts signatures that strict verification refuses, such as one with a
/// small-order `R`, so an audit would pass a request no replica could have admitted. The ranges
/// of heights are verified in parallel instead.)
fn first_bad_signature(jobs: &[SigJob]) -> Option<&SigJob> {
    jobs.iter().find(|j| {
        RawSignedRequest {
            json: &j.json,
            public_key: j.key,
            signature: j.signature,
        }
        .verify()
        .is_err()
    })
}

fn missing_row(height: u64, what: &str, i: u32) -> Problem {
    Problem::Inconsistent {
        height,
        message: format!("{what} row {i} is missing"),
    }
}

fn misplaced(height: u64, what: &str, i: u32, found: (u64, u32)) -> Problem {
    if found.0 < height {
        Problem::Inconsistent {
            height: found.0,
            message: format!("{what} row {} is beyond the entry's count", found.1),
        }
    } else {
        missing_row(height, what, i)
    }
}
