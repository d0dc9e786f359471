//! A consensus WAL in a plain append-only file: a flush is one `pwrite` and one `fdatasync` of a
//! few hundred bytes (about 0.1 ms here), where a redb transaction rewrites B-tree pages and the
//! allocator state (1 to 3 ms under load). Three flushes sit on every height's critical path
//! (proposal, prevote, precommit), so this is most of a height's latency at low load.
//!
//! # Format
//! The file is a sequence of records, written one after the other and never overwritten:
//! ```text
//! u32le len | [8] check | u64le seq | payload (len bytes: u8 kind | body)
//! check = blake3(seq | payload)[..8]      kind 1 = reset (body: u64le height), 2 = entry (bytes),
//!                                          3 = decided (body: u64le height | record)
//! ```
//! Sequence numbers follow each other; reading stops at the first record that is zero, torn,
//! fails its check or breaks the sequence (everything after it was never acknowledged by a
//! flush). The log's height is the last reset's, its entries are the entry records after it.
//!
//! Decided records hold a decided height (batch and certificate) whose ledger entry may not be
//! durable yet: the ledger is synced in the background every so often, not at every height, and
//! until then the WAL is where a decision this replica acknowledged survives a crash. They are
//! written ahead of the next height's reset and are not entries of any height; a fresh file
//! (rotation) starts with those the owner has not declared durable
//! ([`FileWal::forget_decided_through`]).
//!
//! The file is extended in large steps with `set_len`, so a flush rarely changes its size. When it
//! has grown past [`ROTATE_AT`], the next reset starts a fresh file instead (written, synced, then
//! renamed over the old one and the directory synced): a crash before the rename leaves the old
//! file, whose last height the decided store is already past.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::wal::{Wal, WalError};

const RESET: u8 = 1;
const ENTRY: u8 = 2;
const DECIDED: u8 = 3;
/// Bytes before the payload: length, check, sequence number.
const HEAD: usize = 4 + 8 + 8;
/// Largest payload accepted when reading (a proposal holds at most a few MiB).
const MAX_RECORD: usize = 256 << 20;
/// The file grows in steps of this size (its tail is zeros until written).
const GROW: u64 = 16 << 20;
/// A reset at or past this offset starts a new file.
pub const ROTATE_AT: u64 = 64 << 20;

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> WalError {
    WalError(format!("{what} {}: {e}", path.display()))
}

fn check(seq: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

fn put_record(buf: &mut Vec<u8>, seq: u64, kind: u8, body: &[u8]) {
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(kind);
    payload.extend_from_slice(body);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&check(seq, &payload));
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&payload);
}

/// What reading a log file found.
#[derive(Debug, Default)]
struct Scan {
    /// Where the next record goes.
    end: u64,
    /// The sequence number of the next record.
    next_seq: u64,
    /// The last reset's height and the offset just after it.
    height: Option<u64>,
    section: u64,
    /// Decided records, in file order.
    decided: Vec<(u64, Vec<u8>)>,
}

/// Reads records from the start of `bytes` up to the first one that is not intact.
fn scan(bytes: &[u8]) -> Scan {
    let mut s = Scan::default();
    let mut at = 0usize;
    let mut expect: Option<u64> = None;
    while let Some(head) = bytes.get(at..at + HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || len > MAX_RECORD {
            break;
        }
        let Some(payload) = bytes.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&head[12..20]);
        let seq = u64::from_le_bytes(seq_bytes);
        if head[4..12] != check(seq, payload) || expect.is_some_and(|e| e != seq) {
            break;
        }
        at += HEAD + len;
        expect = Some(seq.wrapping_add(1));
        if payload[0] == RESET
            && let Some(h) = payload.get(1..9)
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(h);
            s.height = Some(u64::from_le_bytes(b));
            s.section = at as u64;
        } else if payload[0] == DECIDED
            && let Some(h) = payload.get(1..9)
        {
            let mut b = [0u8; 8];
            b.copy_from_slice(h);
            s.decided
                .push((u64::from_le_bytes(b), payload[9..].to_vec()));
        }
    }
    s.end = at as u64;
    s.next_seq = expect.unwrap_or(0);
    s
}

/// Entries (kind 2) in `bytes`, which hold whole, checked records.
fn entries_in(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(head) = bytes.get(at..at + HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = bytes.get(at + HEAD..at + HEAD + len) else {
            break;
        };
        if payload.first() == Some(&ENTRY) {
            out.push(payload[1..].to_vec());
        }
        at += HEAD + len;
    }
    out
}

/// The consensus WAL in a file of its own (see the module doc).
pub struct FileWal {
    path: PathBuf,
    file: File,
    /// Allocated length of the file (its size).
    capacity: u64,
    end: u64,
    next_seq: u64,
    height: Option<u64>,
    /// Offset of the current height's first entry.
    section: u64,
    pending: Vec<Vec<u8>>,
    pending_reset: Option<u64>,
    /// Decided records in the current file that the owner has not declared durable elsewhere.
    decided: Vec<(u64, Vec<u8>)>,
    /// Decided records for the next flush.
    pending_decided: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for FileWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWal")
            .field("path", &self.path)
            .field("height", &self.height)
            .field("end", &self.end)
            .field("pending", &self.pending.len())
            .finish()
    }
}

fn sync_dir(path: &Path) -> Result<(), WalError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("cannot sync the directory of", path, e))
}

impl FileWal {
    /// Opens the log at `path`, creating an empty one if there is none.
    pub fn open(path: impl AsRef<Path>) -> Result<FileWal, WalError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            Self::install(&path, &[])?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| err("cannot open", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| err("cannot read", &path, e))?;
        let s = scan(&bytes);
        if bytes[s.end as usize..].iter().any(|b| *b != 0) {
            // What follows the intact records was never acknowledged (a torn flush). Clear it:
            // records written from `end` on could otherwise line up with a stale one that
            // survived the tear, and a later crash would bring it back.
            file.set_len(s.end)
                .and_then(|_| file.set_len(bytes.len() as u64))
                .and_then(|_| file.sync_all())
                .map_err(|e| err("cannot clear the torn tail of", &path, e))?;
        }
        Ok(FileWal {
            capacity: bytes.len() as u64,
            end: s.end,
            next_seq: s.next_seq,
            height: s.height,
            section: s.section,
            pending: Vec::new(),
            pending_reset: None,
            decided: s.decided,
            pending_decided: Vec::new(),
            path,
            file,
        })
    }

    /// Writes a new log file holding `records` (already encoded) and puts it in place of `path`.
    fn install(path: &Path, records: &[u8]) -> Result<File, WalError> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| err("cannot create", &tmp, e))?;
        f.write_all(records)
            .and_then(|_| f.set_len((records.len() as u64).max(GROW)))
            .and_then(|_| f.sync_all())
            .map_err(|e| err("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| err("cannot rename", &tmp, e))?;
        sync_dir(path)?;
        Ok(f)
    }

    /// Where the log file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written to the current file.
    pub fn len(&self) -> u64 {
        self.end
    }

    /// Whether nothing was ever written to the current file.
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// A reset is waiting for the next flush (which moves the log to a new height).
    pub fn reset_pending(&self) -> bool {
        self.pending_reset.is_some()
    }

    /// Logs a decided height (`record`: its batch and certificate) with the next flush, ahead
    /// of anything else that flush writes.
    pub fn decide(&mut self, height: u64, record: Vec<u8>) {
        self.pending_decided.push((height, record));
    }

    /// The ledger is durable through `height`: decided records up to it need not be carried
    /// into a fresh file.
    pub fn forget_decided_through(&mut self, height: u64) {
        self.decided.retain(|(h, _)| *h > height);
        self.pending_decided.retain(|(h, _)| *h > height);
    }

    /// Decided records (those read on open first), oldest first; a height may appear twice.
    pub fn decided(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.decided
            .iter()
            .chain(&self.pending_decided)
            .map(|(h, r)| (*h, r.as_slice()))
    }

    fn read_section(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let len = usize::try_from(self.end.saturating_sub(self.section))
            .map_err(|e| err("cannot read", &self.path, e))?;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, self.section)
            .map_err(|e| err("cannot read", &self.path, e))?;
        Ok(entries_in(&bytes))
    }
}

impl Wal for FileWal {
    fn height(&self) -> Option<u64> {
        self.pending_reset.or(self.height)
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty()
            && self.pending_reset.is_none()
            && self.pending_decided.is_empty()
        {
            return Ok(());
        }
        let rotate = self.pending_reset.is_some() && self.end >= ROTATE_AT;
        let mut buf = Vec::with_capacity(
            self.pending
                .iter()
                .map(|e| e.len() + HEAD + 1)
                .sum::<usize>()
                + HEAD
                + 9,
        );
        let mut seq = self.next_seq;
        let mut section = None;
        // A fresh file carries the decided records not yet durable elsewhere.
        let carried = if rotate { &self.decided[..] } else { &[] };
        for (h, record) in carried.iter().chain(&self.pending_decided) {
            let mut body = Vec::with_capacity(8 + record.len());
            body.extend_from_slice(&h.to_le_bytes());
            body.extend_from_slice(record);
            put_record(&mut buf, seq, DECIDED, &body);
            seq += 1;
        }
        if let Some(h) = self.pending_reset {
            put_record(&mut buf, seq, RESET, &h.to_le_bytes());
            seq += 1;
            section = Some(buf.len() as u64);
        }
        for e in &self.pending {
            put_record(&mut buf, seq, ENTRY, e);
            seq += 1;
        }
        if rotate {
            // A fresh file: the old one holds only heights the store is past.
            self.file = Self::install(&self.path, &buf)?;
            self.capacity = (buf.len() as u64).max(GROW);
            self.end = 0;
        } else {
            let needed = self.end + buf.len() as u64;
            if needed > self.capacity {
                let capacity = needed.div_ceil(GROW) * GROW;
                self.file
                    .set_len(capacity)
                    .map_err(|e| err("cannot extend", &self.path, e))?;
                self.capacity = capacity;
            }
            self.file
                .write_all_at(&buf, self.end)
                .and_then(|_| self.file.sync_data())
                .map_err(|e| err("cannot write", &self.path, e))?;
        }
        if let Some(h) = self.pending_reset.take() {
            self.height = Some(h);
            self.section = self.end + section.unwrap_or(0);
        }
        self.end += buf.len() as u64;
        self.next_seq = seq;
        self.pending.clear();
        self.decided.append(&mut self.pending_decided);
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.pending.clear();
        self.pending_reset = Some(height);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let mut out = if self.pending_reset.is_none() && self.height.is_some() {
            self.read_section()?
        } else {
            Vec::new()
        };
        out.extend(self.pending.iter().cloned());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_wal_survives_reopen_and_drops_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        {
            let mut w = FileWal::open(&path).unwrap();
            assert_eq!(w.height(), None);
            assert!(w.entries().unwrap().is_empty());
            w.reset(7).unwrap();
            w.append(b"one".to_vec());
            w.append(b"two".to_vec());
            w.flush().unwrap();
            w.append(b"lost".to_vec());
        }
        let mut w = FileWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(7));
        assert_eq!(w.entries().unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        w.append(b"three".to_vec());
        w.flush().unwrap();
        assert_eq!(w.entries().unwrap().len(), 3);
        w.reset(8).unwrap();
        assert!(w.entries().unwrap().is_empty());
        drop(w);
        let mut w = FileWal::open(&path).unwrap();
        assert_eq!(
            w.height(),
            Some(7),
            "a reset is durable with the next flush"
        );
        assert_eq!(w.entries().unwrap().len(), 3);
        w.reset(8).unwrap();
        w.append(b"four".to_vec());
        w.flush().unwrap();
        drop(w);
        let w = FileWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(8));
        assert_eq!(w.entries().unwrap(), vec![b"four".to_vec()]);
    }

    /// A torn flush can leave a later record intact after a damaged one. Writing resumes at the
    /// damage; if new records end where the stale one begins and a crash follows, the stale one
    /// must not come back: opening clears everything after the intact records.
    #[test]
    fn a_stale_record_after_a_torn_one_is_cleared_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let mut w = FileWal::open(&path).unwrap();
        w.reset(3).unwrap();
        w.flush().unwrap();
        let good = w.len() as usize;
        w.append(b"AAAA".to_vec());
        w.append(b"stale".to_vec());
        w.flush().unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[good + HEAD + 2] ^= 1; // the first of the two is damaged, the second intact
        std::fs::write(&path, &bytes).unwrap();
        let mut w = FileWal::open(&path).unwrap();
        assert!(w.entries().unwrap().is_empty());
        // The same length as the damaged record: the next record would start where "stale"
        // starts; this one is not flushed before a crash.
        w.append(b"BBBB".to_vec());
        w.flush().unwrap();
        drop(w);
        let w = FileWal::open(&path).unwrap();
        assert_eq!(
            w.entries().unwrap(),
            vec![b"BBBB".to_vec()],
            "no stale record"
        );
    }

    /// A crash can leave the last flush half written: reading stops before it, whatever the
    /// damage (a cut, a flipped byte, garbage after the end).
    #[test]
    fn a_torn_or_damaged_tail_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let mut w = FileWal::open(&path).unwrap();
        w.reset(3).unwrap();
        w.append(b"kept".to_vec());
        w.flush().unwrap();
        let good = w.len();
        w.append(b"torn entry".to_vec());
        w.flush().unwrap();
        let full = w.len();
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        for damage in 0..4 {
            let mut b = bytes.clone();
            match damage {
                0 => b.truncate(full as usize - 3),
                1 => b[full as usize - 2] ^= 1,
                2 => b[good as usize + 15] ^= 0x80, // its sequence number
                _ => b[good as usize..good as usize + 4].copy_from_slice(&[0, 0, 0, 0]),
            }
            std::fs::write(&path, &b).unwrap();
            let mut w = FileWal::open(&path).unwrap();
            assert_eq!(w.height(), Some(3), "damage {damage}");
            assert_eq!(
                w.entries().unwrap(),
                vec![b"kept".to_vec()],
                "damage {damage}"
            );
            // Writing continues where the intact part ends.
            w.append(b"next".to_vec());
            w.flush().unwrap();
            drop(w);
            let w = FileWal::open(&path).unwrap();
            assert_eq!(
                w.entries().unwrap(),
                vec![b"kept".to_vec(), b"next".to_vec()],
                "damage {damage}"
            );
        }
    }

    #[test]
    fn a_reset_past_the_rotation_size_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let mut w = FileWal::open(&path).unwrap();
        let big = vec![7u8; 1 << 20];
        let mut h = 1;
        while w.len() < ROTATE_AT {
            w.reset(h).unwrap();
            w.append(big.clone());
            w.flush().unwrap();
            h += 1;
        }
        let before = w.len();
        w.reset(h).unwrap();
        w.append(b"small".to_vec());
        w.flush().unwrap();
        assert!(w.len() < before, "rotated: {} >= {before}", w.len());
        assert!(std::fs::metadata(&path).unwrap().len() < ROTATE_AT);
        w.append(b"more".to_vec());
        w.flush().unwrap();
        drop(w);
        let w = FileWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(h));
        assert_eq!(
            w.entries().unwrap(),
            vec![b"small".to_vec(), b"more".to_vec()]
        );
    }

    fn decided(w: &FileWal) -> Vec<(u64, Vec<u8>)> {
        w.decided().map(|(h, r)| (h, r.to_vec())).collect()
    }

    /// Decided records survive a reopen, are never entries of a height, are lost like anything
    /// else when not flushed, and a fresh file carries exactly those not declared durable.
    #[test]
    fn decided_records_outlive_their_height_until_declared_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let mut w = FileWal::open(&path).unwrap();
        w.reset(1).unwrap();
        w.append(b"vote 1".to_vec());
        w.flush().unwrap();
        w.decide(1, b"decided 1".to_vec());
        w.reset(2).unwrap();
        w.flush().unwrap();
        w.append(b"vote 2".to_vec());
        w.decide(2, b"decided 2".to_vec());
        w.flush().unwrap(); // a decided record in the middle of a height's entries
        w.append(b"vote 2b".to_vec());
        w.flush().unwrap();
        w.decide(3, b"lost".to_vec()); // never flushed
        drop(w);

        let mut w = FileWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(2));
        assert_eq!(
            w.entries().unwrap(),
            vec![b"vote 2".to_vec(), b"vote 2b".to_vec()]
        );
        assert_eq!(
            decided(&w),
            vec![(1, b"decided 1".to_vec()), (2, b"decided 2".to_vec())]
        );

        // Fill the file up to the rotation size; the ledger is durable through height 1.
        let big = vec![7u8; 1 << 20];
        let mut h = 3;
        while w.len() < ROTATE_AT {
            w.reset(h).unwrap();
            w.append(big.clone());
            w.flush().unwrap();
            h += 1;
        }
        w.forget_decided_through(1);
        w.decide(h - 1, b"decided last".to_vec());
        w.reset(h).unwrap();
        w.flush().unwrap();
        assert!(w.len() < ROTATE_AT, "rotated");
        drop(w);
        let w = FileWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(h));
        assert!(w.entries().unwrap().is_empty());
        assert_eq!(
            decided(&w),
            vec![
                (2, b"decided 2".to_vec()),
                (h - 1, b"decided last".to_vec())
            ]
        );
    }
}
