//! The durable log on redb: entries (header, request and event rows), commit certificates beside
//! them, the audit indexes, retry answers by request id, and state snapshots.
//!
//! [`Store::append`] writes any number of entries in ONE write transaction and returns only after
//! redb committed it with `Durability::Immediate` (fsync), so one fsync covers a whole batch.
//! Reading never panics on bad bytes: an undecodable row is [`StoreError::Corrupt`] naming its
//! height. (redb itself may still fail on a damaged page structure; see `audit::verify`.)

mod consensus;
mod read;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use thiserror::Error;

use crate::codec::CodecError;
use crate::entry::{EncodedEntry, Entry, EntryHash};
use crate::plan::{ObjectOutcome, RequestError};
use crate::request::{RawSignedRequest, RequestHead, digest_of_json};
use crate::snapshot;
use crate::state::{FoldError, State};

pub use read::ReadView;
pub(crate) use tables::*;
pub use tables::{Head, RequestRecord};

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Snapshot the state every this many entries (0 = never).
    pub snapshot_every: u64,
    /// Snapshots to keep.
    pub snapshots_kept: usize,
    /// redb page cache (an upper bound, filled as pages are read).
    pub cache_bytes: usize,
    /// redb quick-repair: near-instant reopening after a crash, but every commit pays a second
    /// fsync (two-phase commit). Off by default: a crash then costs one full scan on reopen.
    pub quick_repair: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            snapshot_every: 1000,
            snapshots_kept: 2,
            cache_bytes: 1 << 30,
            quick_repair: false,
        }
    }
}

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("entry {height} is corrupt ({what}): {source}")]
    Corrupt {
        height: u64,
        what: &'static str,
        source: CodecError,
    },
    #[error("entry {height} is missing")]
    Missing { height: u64 },
    #[error("entry {height} does not extend the log: {reason}")]
    NotNext { height: u64, reason: String },
    #[error("entry {height}: the stored hash does not match the entry's content")]
    HashMismatch { height: u64 },
    #[error("entry {height}: {outcomes} outcome lists for {requests} requests")]
    Outcomes {
        height: u64,
        outcomes: usize,
        requests: usize,
    },
    #[error("entry {height}: request {id:?} of {actor} was already committed")]
    DuplicateRequest {
        height: u64,
        actor: String,
        id: String,
    },
    #[error("replaying the log: {0}")]
    Fold(#[from] FoldError),
    #[error("{path}: unsupported store format {found}")]
    Format { path: PathBuf, found: u8 },
}

pub(crate) fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// An entry ready to be appended, with what the store keeps beside it.
#[derive(Debug, Clone)]
pub struct Commit {
    /// Shared, so that the entry can be handed on (to the state, subscribers, the ledger
    /// writer) while it is being stored.
    pub entry: Arc<Entry>,
    /// The commit certificate (consensus), stored beside the entry, outside its hash.
    pub certificate: Option<Vec<u8>>,
    /// Per request of the entry (same order): the outcomes to answer a retry with.
    pub outcomes: Vec<Vec<ObjectOutcome>>,
    /// Requests of the entry that were refused when it was executed (by index), and why: their
    /// answer to a retry. (Only the replicated ledger keeps refused requests in entries.)
    pub errors: Vec<(u32, RequestError)>,
    /// The entry's stored rows, when the caller encoded them already (they must be
    /// `entry.encode()`; the store checks the hash). `None`: the store encodes the entry.
    pub encoded: Option<EncodedEntry>,
}

impl Commit {
    /// The retry record of request `index`, as the store keeps it (`enc`: the entry's stored
    /// rows).
    pub(crate) fn request_record(
        &self,
        enc: &EncodedEntry,
        index: u32,
    ) -> Result<RequestRecord, StoreError> {
        let h = self.entry.height;
        let corrupt = |source| StoreError::Corrupt {
            height: h,
            what: "request",
            source,
        };
        let bytes = enc.requests.get(index as usize).ok_or_else(|| {
            corrupt(CodecError::Invalid(format!(
                "the entry has no request {index}"
            )))
        })?;
        let raw = RawSignedRequest::decode(bytes).map_err(corrupt)?;
        Ok(RequestRecord {
            height: h,
            index,
            digest: digest_of_json(raw.json),
            outcomes: self
                .outcomes
                .get(index as usize)
                .cloned()
                .unwrap_or_default(),
            error: self
                .errors
                .iter()
                .find(|(at, _)| *at == index)
                .map(|(_, e)| e.clone()),
        })
    }
}

/// How the state was rebuilt on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Height of the snapshot used, if any.
    pub snapshot_height: Option<u64>,
    /// Entries replayed on top of it.
    pub replayed: u64,
    /// Snapshots that could not be used, with the reason.
    pub skipped_snapshots: Vec<(u64, String)>,
}

/// The redb-backed log.
pub struct Store {
    db: Database,
    config: StoreConfig,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. After an unclean shutdown redb repairs the file
    /// first; every commit that returned is there.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(&path)
            .map_err(dberr)?;
        let txn = db.begin_write().map_err(dberr)?;
        {
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let found = meta
                .get("format")
                .map_err(dberr)?
                .map(|v| v.value().first().copied().unwrap_or(0));
            match found {
                None => {
                    meta.insert("format", [FORMAT].as_slice()).map_err(dberr)?;
                }
                Some(FORMAT) => {}
                Some(found) => return Err(StoreError::Format { path, found }),
            }
            // Create every table so readers never meet a missing one.
            txn.open_table(HEADERS).map_err(dberr)?;
            txn.open_table(REQUESTS).map_err(dberr)?;
            txn.open_table(EVENTS).map_err(dberr)?;
            txn.open_table(CERTIFICATES).map_err(dberr)?;
            txn.open_table(BY_OBJECT).map_err(dberr)?;
            txn.open_table(BY_ACTOR).map_err(dberr)?;
            txn.open_table(BY_SOURCE).map_err(dberr)?;
            txn.open_table(BY_COMMIT).map_err(dberr)?;
            txn.open_table(BY_TIME).map_err(dberr)?;
            txn.open_table(REQUEST_IDS).map_err(dberr)?;
            txn.open_table(SNAPSHOTS).map_err(dberr)?;
            backfill_request_heads(&txn)?;
            txn.open_table(consensus::WAL).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        Ok(Store { db, config, path })
    }

    /// The redb database (tests tamper with rows through it).
    #[cfg(test)]
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent read snapshot of the whole store.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        Ok(ReadView::new(self.db.begin_read().map_err(dberr)?))
    }

    /// The last entry's height, hash and time (`None` for an empty log).
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        self.read()?.head()
    }

    /// One entry.
    pub fn entry(&self, height: u64) -> Result<Option<Entry>, StoreError> {
        self.read()?.entry(height)
    }

    /// The certificate stored beside an entry.
    pub fn certificate(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read()?.certificate(height)
    }

    /// Where `(actor, id)` was committed and what it did.
    pub fn request_record(
        &self,
        actor: &str,
        id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.read()?.request_record(actor, id)
    }

    /// Stores (or replaces) the certificate of an existing entry, e.g. when it arrives later.
    pub fn set_certificate(&self, height: u64, certificate: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(dberr)?;
        {
            if txn
                .open_table(HEADERS)
                .map_err(dberr)?
                .get(height)
                .map_err(dberr)?
                .is_none()
            {
                return Err(StoreError::Missing { height });
            }
            txn.open_table(CERTIFICATES)
                .map_err(dberr)?
                .insert(height, certificate)
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Appends entries in one durable transaction. Each must extend the log (next height,
    /// previous hash, timestamp not before the previous one) and carry its correct hash; nothing
    /// is written unless all are accepted.
    pub fn append(&self, commits: &[Commit]) -> Result<(), StoreError> {
        self.append_with(commits, true)
    }

    /// [`Store::append`], with `durable: false` committing without fsync: the entries are
    /// visible at once and become durable with the next durable commit of this store (a crash
    /// before it loses them, never a part of them). The replicated ledger uses this when the
    /// decision is already durable elsewhere (2f+1 replicas logged their precommits).
    pub fn append_with<C: std::borrow::Borrow<Commit>>(
        &self,
        commits: &[C],
        durable: bool,
    ) -> Result<(), StoreError> {
        if commits.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(dberr)?;
        txn.set_quick_repair(self.config.quick_repair);
        {
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let mut head = match meta.get("head").map_err(dberr)? {
                Some(v) => Head::from_bytes(v.value()).map_err(|source| StoreError::Corrupt {
                    height: 0,
                    what: "head",
                    source,
                })?,
                None => Head {
                    height: 0,
                    hash: EntryHash::ZERO,
                    timestamp_ms: 0,
                },
            };
            let mut w = Writers {
                headers: txn.open_table(HEADERS).map_err(dberr)?,
                requests: txn.open_table(REQUESTS).map_err(dberr)?,
                events: txn.open_table(EVENTS).map_err(dberr)?,
                certificates: txn.open_table(CERTIFICATES).map_err(dberr)?,
                by_object: txn.open_table(BY_OBJECT).map_err(dberr)?,
                by_actor: txn.open_table(BY_ACTOR).map_err(dberr)?,
                by_source: txn.open_table(BY_SOURCE).map_err(dberr)?,
                by_commit: txn.open_table(BY_COMMIT).map_err(dberr)?,
                by_time: txn.open_table(BY_TIME).map_err(dberr)?,
                request_ids: txn.open_table(REQUEST_IDS).map_err(dberr)?,
                request_heads: txn.open_table(REQUEST_HEADS).map_err(dberr)?,
            };
            for c in commits {
                let c = c.borrow();
                w.write(&head, c)?;
                head = Head {
                    height: c.entry.height,
                    hash: c.entry.hash,
                    timestamp_ms: c.entry.timestamp_ms,
                };
            }
            meta.insert("head", head.to_bytes().as_slice())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Writes a snapshot of `state` (non-durable: the next append's fsync persists it; losing
    /// it in a crash only means a longer replay) and drops the oldest beyond `snapshots_kept`.
    pub fn write_snapshot(&self, state: &State) -> Result<(), StoreError> {
        let (height, bytes) = (state.height, snapshot::encode(state));
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(Durability::None).map_err(dberr)?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(dberr)?;
            t.insert(height, bytes.as_slice()).map_err(dberr)?;
            let heights: Vec<u64> = t
                .iter()
                .map_err(dberr)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(dberr)?;
            let keep = self.config.snapshots_kept.max(1);
            for h in heights.iter().take(heights.len().saturating_sub(keep)) {
                t.remove(*h).map_err(dberr)?;
            }
        }
        txn.commit().map_err(dberr)
    }

    /// Rebuilds the state: the newest usable snapshot plus a replay of the entries after it.
    pub fn load_state(&self) -> Result<(State, LoadReport), StoreError> {
        let view = self.read()?;
        let head = view.head()?.map_or(0, |h| h.height);
        let mut report = LoadReport::default();
        let mut state = State::new();
        state.validators = self.genesis()?;
        for (height, bytes) in view.snapshots()?.into_iter().rev() {
            let usable = snapshot::decode(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    let header = view.header(height).map_err(|e| e.to_string())?;
                    match header {
                        Some(h)
                            if s.height == height && h.hash == s.head_hash && height <= head =>
                        {
                            Ok(s)
                        }
                        _ => Err("does not match the log".to_string()),
                    }
                });
            match usable {
                Ok(s) => {
                    report.snapshot_height = Some(height);
                    state = s;
                    break;
                }
                Err(reason) => report.skipped_snapshots.push((height, reason)),
            }
        }
        for height in state.height + 1..=head {
            let entry = view.entry(height)?.ok_or(StoreError::Missing { height })?;
            state.apply_entry(&entry)?;
            report.replayed += 1;
        }
        Ok((state, report))
    }
}

/// The tables `append` writes, opened once per transaction.
struct Writers<'t> {
    headers: redb::Table<'t, u64, &'static [u8]>,
    requests: redb::Table<'t, (u64, u32), &'static [u8]>,
    events: redb::Table<'t, (u64, u32), &'static [u8]>,
    certificates: redb::Table<'t, u64, &'static [u8]>,
    by_object: redb::Table<'t, (&'static str, &'static str, &'static str, u64, u32), ()>,
    by_actor: redb::Table<'t, (&'static str, u64, u32), (u32, u32)>,
    by_source: redb::Table<'t, (&'static str, u64, u32), (u32, u32)>,
    by_commit: redb::Table<'t, (&'static str, u64, u32), (u32, u32)>,
    by_time: redb::Table<'t, (u64, u64), ()>,
    request_ids: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    request_heads: redb::Table<'t, (u64, u32), &'static [u8]>,
}

/// Stores written before the `request_heads` index get it on open, from the signed records
/// (once: about a second per 100,000 requests).
fn backfill_request_heads(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    use redb::ReadableTableMetadata;
    let mut heads = txn.open_table(REQUEST_HEADS).map_err(dberr)?;
    let requests = txn.open_table(REQUESTS).map_err(dberr)?;
    if !heads.is_empty().map_err(dberr)? || requests.is_empty().map_err(dberr)? {
        return Ok(());
    }
    for row in requests.iter().map_err(dberr)? {
        // A damaged page or an undecodable record gets no head, and the store still opens:
        // `audit verify` names the height.
        let Ok((k, v)) = row else { break };
        let Ok(head) = RequestHead::from_record(v.value()) else {
            continue;
        };
        heads
            .insert(k.value(), head.to_bytes().as_slice())
            .map_err(dberr)?;
    }
    Ok(())
}

impl Writers<'_> {
    fn write(&mut self, prev: &Head, c: &Commit) -> Result<(), StoreError> {
        let e = &c.entry;
        let h = e.height;
        let not_next = |reason: String| Err(StoreError::NotNext { height: h, reason });
        if h != prev.height + 1 {
            return not_next(format!("the log ends at height {}", prev.height));
        }
        if e.prev_hash != prev.hash {
            return not_next(format!(
                "it links to {} but entry {} is {}",
                e.prev_hash.short(),
                prev.height,
                prev.hash.short()
            ));
        }
        if e.timestamp_ms < prev.timestamp_ms {
            return not_next(format!(
                "its time {} is before the previous entry's {}",
                e.timestamp_ms, prev.timestamp_ms
            ));
        }
        if c.outcomes.len() != e.requests.len() {
            return Err(StoreError::Outcomes {
                height: h,
                outcomes: c.outcomes.len(),
                requests: e.requests.len(),
            });
        }
        let encoded;
        let enc = match &c.encoded {
            Some(enc) => enc,
            None => {
                encoded = e.encode();
                &encoded
            }
        };
        if enc.header.hash != e.hash {
            return Err(StoreError::HashMismatch { height: h });
        }
        self.headers
            .insert(h, enc.header.to_bytes().as_slice())
            .map_err(dberr)?;
        for (i, bytes) in enc.requests.iter().enumerate() {
            self.requests
                .insert((h, i as u32), bytes.as_slice())
                .map_err(dberr)?;
        }
        for (i, bytes) in enc.events.iter().enumerate() {
            self.events
                .insert((h, i as u32), bytes.as_slice())
                .map_err(dberr)?;
            if let Some(k) = e.events[i].body.object_key() {
                self.by_object
                    .insert(
                        (
                            k.kind.as_str(),
                            k.namespace.as_str(),
                            k.name.as_str(),
                            h,
                            i as u32,
                        ),
                        (),
                    )
                    .map_err(dberr)?;
            }
        }
        if let Some(cert) = &c.certificate {
            self.certificates
                .insert(h, cert.as_slice())
                .map_err(dberr)?;
        }
        self.by_time
            .insert((e.timestamp_ms, h), ())
            .map_err(dberr)?;
        let mut first = 0u32;
        for (i, sr) in e.requests.iter().enumerate() {
            let i = i as u32;
            let count = e.events[first as usize..]
                .iter()
                .take_while(|ev| ev.request == i)
                .count() as u32;
            let range = (first, count);
            first += count;
            let r = &sr.request;
            self.request_heads
                .insert((h, i), RequestHead::from(r).to_bytes().as_slice())
                .map_err(dberr)?;
            self.by_actor
                .insert((r.actor.as_str(), h, i), range)
                .map_err(dberr)?;
            self.by_source
                .insert((r.source.type_name(), h, i), range)
                .map_err(dberr)?;
            if let Some(commit) = r.source.commit() {
                self.by_commit
                    .insert((commit, h, i), range)
                    .map_err(dberr)?;
            }
            if self
                .request_ids
                .get((r.actor.as_str(), r.id.as_str()))
                .map_err(dberr)?
                .is_some()
            {
                return Err(StoreError::DuplicateRequest {
                    height: h,
                    actor: r.actor.clone(),
                    id: r.id.clone(),
                });
            }
            let record = c.request_record(enc, i)?;
            self.request_ids
                .insert(
                    (r.actor.as_str(), r.id.as_str()),
                    record.to_bytes().as_slice(),
                )
                .map_err(dberr)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
