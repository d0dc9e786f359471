//! Decided heights with their commit certificates: the `DecidedStore` trait, an in-memory store
//! and a redb store (one fsync per commit). Serves catch-up ranges to lagging peers.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{Decided, decode_decided, encode_decided};

const DECIDED: TableDefinition<u64, &[u8]> = TableDefinition::new("consensus_decided");

/// A decided-store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decided store: {0}")]
pub struct StoreError(pub String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Durable decided batches and certificates, by height. Heights are committed in order,
/// without gaps, starting at 1; a committed height is never changed.
pub trait DecidedStore {
    /// The highest committed height.
    fn last_height(&self) -> Result<Option<u64>, StoreError>;
    /// The record at `height`.
    fn get(&self, height: u64) -> Result<Option<Decided>, StoreError>;
    /// Durably commit a record (durable when this returns).
    fn commit(&mut self, decided: &Decided) -> Result<(), StoreError>;

    /// Records `from..=to`, stopping early past `max_bytes` of batch payload (at least one
    /// record is returned when `from` exists).
    fn range(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<Decided>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut h = from;
        while h <= to {
            let Some(d) = self.get(h)? else { break };
            bytes = bytes.saturating_add(d.batch.items().iter().map(Vec::len).sum::<usize>());
            out.push(d);
            if bytes >= max_bytes {
                break;
            }
            h += 1;
        }
        Ok(out)
    }
}

/// Decided records in memory (tests, simulator). Commits are immediately "durable".
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    records: BTreeMap<u64, Decided>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// All records, by height.
    pub fn records(&self) -> &BTreeMap<u64, Decided> {
        &self.records
    }

    /// Drop records above `height`: a commit that a crash prevented (simulation only).
    pub fn truncate_above(&mut self, height: u64) {
        self.records.split_off(&(height + 1));
    }
}

impl DecidedStore for MemStore {
    fn last_height(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.records.keys().next_back().copied())
    }

    fn get(&self, height: u64) -> Result<Option<Decided>, StoreError> {
        Ok(self.records.get(&height).cloned())
    }

    fn commit(&mut self, decided: &Decided) -> Result<(), StoreError> {
        self.records.insert(decided.height, decided.clone());
        Ok(())
    }
}

/// Decided records in a redb file, encoded with `codec::encode_decided`.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Open (or create) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(DECIDED).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbStore { db })
    }
}

impl DecidedStore for RedbStore {
    fn last_height(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(DECIDED).map_err(err)?;
        Ok(t.last().map_err(err)?.map(|(k, _)| k.value()))
    }

    fn get(&self, height: u64) -> Result<Option<Decided>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(DECIDED).map_err(err)?;
        match t.get(height).map_err(err)? {
            None => Ok(None),
            Some(v) => decode_decided(v.value()).map(Some).map_err(err),
        }
    }

    fn commit(&mut self, decided: &Decided) -> Result<(), StoreError> {
        let bytes = encode_decided(decided);
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(DECIDED).map_err(err)?;
            t.insert(decided.height, bytes.as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::signing::CommitCert;
    use crate::consensus::types::Batch;

    fn rec(h: u64) -> Decided {
        let batch = Batch::new(vec![vec![h as u8; 10]]);
        Decided {
            height: h,
            cert: CommitCert {
                height: h,
                round: 0,
                batch_id: batch.id(),
                signatures: vec![],
            },
            batch,
        }
    }

    #[test]
    fn redb_store_round_trips_and_serves_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decided.redb");
        {
            let mut s = RedbStore::open(&path).unwrap();
            assert_eq!(s.last_height().unwrap(), None);
            for h in 1..=5 {
                s.commit(&rec(h)).unwrap();
            }
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.last_height().unwrap(), Some(5));
        assert_eq!(s.get(3).unwrap(), Some(rec(3)));
        assert_eq!(s.range(2, 9, usize::MAX).unwrap().len(), 4);
        assert_eq!(s.range(2, 9, 15).unwrap().len(), 2);
        let mut m = MemStore::new();
        m.commit(&rec(1)).unwrap();
        assert_eq!(m.range(1, 1, 0).unwrap(), vec![rec(1)]);
    }
}
