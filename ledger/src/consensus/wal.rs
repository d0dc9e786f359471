//! The consensus write-ahead log: the `Wal` trait, a redb-backed log (one write transaction,
//! hence one fsync, per flush) and an in-memory log that models "durable up to the last flush".

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("consensus_wal_entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("consensus_wal_meta");

/// A WAL storage failure. After one, the node stops signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("consensus WAL: {0}")]
pub struct WalError(pub String);

fn err(e: impl std::fmt::Display) -> WalError {
    WalError(e.to_string())
}

/// The log of consensus inputs for the current height, as encoded entries
/// (see `codec::encode_wal_entry`).
///
/// `append` may buffer; `flush` makes every earlier `append` and `reset` durable before it
/// returns. `reset` drops all entries and moves the log to a new height; it may itself be
/// buffered until the next flush (a crash before then leaves the old height on disk, which
/// recovery discards because the decided store is already past it).
pub trait Wal {
    /// The height the log holds entries for, if it was ever reset.
    fn height(&self) -> Option<u64>;
    /// Append an entry (possibly buffered).
    fn append(&mut self, entry: Vec<u8>);
    /// Make every earlier append and reset durable.
    fn flush(&mut self) -> Result<(), WalError>;
    /// Drop all entries and set the height (durable at the latest with the next flush).
    fn reset(&mut self, height: u64) -> Result<(), WalError>;
    /// Every entry for the current height, oldest first (durable ones, then buffered ones).
    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError>;
}

/// An in-memory WAL for tests and the simulator. [`MemWal::crash`] drops what was not flushed,
/// like a process crash does to a buffered file.
#[derive(Debug, Default, Clone)]
pub struct MemWal {
    height: Option<u64>,
    durable: Vec<Vec<u8>>,
    pending: Vec<Vec<u8>>,
    pending_reset: Option<u64>,
    flushes: u64,
}

impl MemWal {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lose every append and reset since the last flush.
    pub fn crash(&mut self) {
        self.pending.clear();
        self.pending_reset = None;
    }

    /// Number of flushes that wrote something (each would be one fsync).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// What is on "disk": the durable height and entries.
    pub fn durable(&self) -> (Option<u64>, &[Vec<u8>]) {
        (self.height, &self.durable)
    }
}

impl Wal for MemWal {
    fn height(&self) -> Option<u64> {
        self.pending_reset.or(self.height)
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() && self.pending_reset.is_none() {
            return Ok(());
        }
        self.flushes += 1;
        if let Some(h) = self.pending_reset.take() {
            self.durable.clear();
            self.height = Some(h);
        }
        self.durable.append(&mut self.pending);
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.pending.clear();
        self.pending_reset = Some(height);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let durable = if self.pending_reset.is_some() {
            &[][..]
        } else {
            &self.durable[..]
        };
        Ok(durable.iter().chain(&self.pending).cloned().collect())
    }
}

/// A WAL in a redb file. Each non-empty `flush` and each `reset` is one write transaction,
/// which redb commits with fsync before returning.
pub struct RedbWal {
    db: Database,
    height: Option<u64>,
    next_seq: u64,
    pending: Vec<Vec<u8>>,
    pending_reset: Option<u64>,
}

impl std::fmt::Debug for RedbWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbWal")
            .field("height", &self.height)
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl RedbWal {
    /// Open (or create) the log at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WalError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        let (height, next_seq) = {
            let meta = tx.open_table(META).map_err(err)?;
            let entries = tx.open_table(ENTRIES).map_err(err)?;
            let height = meta.get("height").map_err(err)?.map(|g| g.value());
            let next_seq = entries
                .last()
                .map_err(err)?
                .map_or(0, |(k, _)| k.value().saturating_add(1));
            (height, next_seq)
        };
        tx.commit().map_err(err)?;
        Ok(RedbWal {
            db,
            height,
            next_seq,
            pending: Vec::new(),
            pending_reset: None,
        })
    }
}

impl Wal for RedbWal {
    fn height(&self) -> Option<u64> {
        self.pending_reset.or(self.height)
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() && self.pending_reset.is_none() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        let mut seq = self.next_seq;
        {
            let mut t = tx.open_table(ENTRIES).map_err(err)?;
            if let Some(h) = self.pending_reset {
                t.retain(|_, _| false).map_err(err)?;
                let mut m = tx.open_table(META).map_err(err)?;
                m.insert("height", h).map_err(err)?;
                seq = 0;
            }
            for e in &self.pending {
                t.insert(seq, e.as_slice()).map_err(err)?;
                seq += 1;
            }
        }
        tx.commit().map_err(err)?;
        if let Some(h) = self.pending_reset.take() {
            self.height = Some(h);
        }
        self.next_seq = seq;
        self.pending.clear();
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.pending.clear();
        self.pending_reset = Some(height);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let mut out = Vec::new();
        if self.pending_reset.is_none() {
            let tx = self.db.begin_read().map_err(err)?;
            let t = tx.open_table(ENTRIES).map_err(err)?;
            for row in t.iter().map_err(err)? {
                let (_, v) = row.map_err(err)?;
                out.push(v.value().to_vec());
            }
        }
        out.extend(self.pending.iter().cloned());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_wal_loses_only_unflushed_entries() {
        let mut w = MemWal::new();
        w.reset(3).unwrap();
        w.append(b"a".to_vec());
        w.flush().unwrap();
        w.append(b"b".to_vec());
        assert_eq!(w.entries().unwrap().len(), 2);
        w.crash();
        assert_eq!(w.entries().unwrap(), vec![b"a".to_vec()]);
        w.reset(4).unwrap();
        assert_eq!(w.height(), Some(4));
        assert!(w.entries().unwrap().is_empty());
        w.crash();
        assert_eq!(w.height(), Some(3), "an unflushed reset is lost in a crash");
        w.reset(4).unwrap();
        w.flush().unwrap();
        w.crash();
        assert_eq!((w.height(), w.entries().unwrap().len()), (Some(4), 0));
    }

    #[test]
    fn redb_wal_survives_reopen_and_drops_unflushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.redb");
        {
            let mut w = RedbWal::open(&path).unwrap();
            assert_eq!(w.height(), None);
            w.reset(7).unwrap();
            w.append(b"one".to_vec());
            w.append(b"two".to_vec());
            w.flush().unwrap();
            w.append(b"lost".to_vec());
        }
        let mut w = RedbWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(7));
        assert_eq!(w.entries().unwrap(), vec![b"one".to_vec(), b"two".to_vec()]);
        w.append(b"three".to_vec());
        w.flush().unwrap();
        assert_eq!(w.entries().unwrap().len(), 3);
        w.reset(8).unwrap();
        assert!(w.entries().unwrap().is_empty());
        drop(w);
        let mut w = RedbWal::open(&path).unwrap();
        assert_eq!(
            w.height(),
            Some(7),
            "a reset is durable with the next flush"
        );
        w.reset(8).unwrap();
        w.append(b"four".to_vec());
        w.flush().unwrap();
        drop(w);
        let w = RedbWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(8));
        assert_eq!(w.entries().unwrap(), vec![b"four".to_vec()]);
    }
}
