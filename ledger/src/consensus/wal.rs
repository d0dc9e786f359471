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
/// `append` may buffer; `flush` makes every appended entry durable before it returns; `reset`
/// durably discards all entries and moves the log to a new height.
pub trait Wal {
    /// The height the log holds entries for, if it was ever reset.
    fn height(&self) -> Option<u64>;
    /// Append an entry (possibly buffered).
    fn append(&mut self, entry: Vec<u8>);
    /// Make every appended entry durable.
    fn flush(&mut self) -> Result<(), WalError>;
    /// Durably drop all entries and set the height.
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
    flushes: u64,
}

impl MemWal {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lose every append since the last flush.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// Number of flushes that wrote something (each would be one fsync).
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    /// The durable entries only.
    pub fn durable_entries(&self) -> &[Vec<u8>] {
        &self.durable
    }
}

impl Wal for MemWal {
    fn height(&self) -> Option<u64> {
        self.height
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if !self.pending.is_empty() {
            self.flushes += 1;
            self.durable.append(&mut self.pending);
        }
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        self.durable.clear();
        self.pending.clear();
        self.height = Some(height);
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        Ok(self.durable.iter().chain(&self.pending).cloned().collect())
    }
}

/// A WAL in a redb file. Each non-empty `flush` and each `reset` is one write transaction,
/// which redb commits with fsync before returning.
pub struct RedbWal {
    db: Database,
    height: Option<u64>,
    next_seq: u64,
    pending: Vec<Vec<u8>>,
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
        })
    }
}

impl Wal for RedbWal {
    fn height(&self) -> Option<u64> {
        self.height
    }

    fn append(&mut self, entry: Vec<u8>) {
        self.pending.push(entry);
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        let mut seq = self.next_seq;
        {
            let mut t = tx.open_table(ENTRIES).map_err(err)?;
            for e in &self.pending {
                t.insert(seq, e.as_slice()).map_err(err)?;
                seq += 1;
            }
        }
        tx.commit().map_err(err)?;
        self.next_seq = seq;
        self.pending.clear();
        Ok(())
    }

    fn reset(&mut self, height: u64) -> Result<(), WalError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(err)?;
            t.retain(|_, _| false).map_err(err)?;
            let mut m = tx.open_table(META).map_err(err)?;
            m.insert("height", height).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.height = Some(height);
        self.next_seq = 0;
        self.pending.clear();
        Ok(())
    }

    fn entries(&self) -> Result<Vec<Vec<u8>>, WalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(v.value().to_vec());
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
        drop(w);
        let w = RedbWal::open(&path).unwrap();
        assert_eq!(w.height(), Some(8));
        assert!(w.entries().unwrap().is_empty());
    }
}
