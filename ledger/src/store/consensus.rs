//! What the replicated ledger keeps in the same redb file as the log: the genesis validator set,
//! and the consensus write-ahead log as versions before the WAL file
//! (`replicated::app::LedgerWal`) kept it; that WAL is moved to the file on open.

use redb::{Durability, ReadableTable, TableDefinition};

use super::tables::META;
use super::{Store, StoreError, dberr};
use crate::codec::{Reader, Writer};
use crate::event::{Validator, get_validators, put_validators};

/// seq -> encoded consensus WAL entry (see `consensus::codec::encode_wal_entry`).
pub(crate) const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("consensus_wal");

/// The consensus WAL as stored: the height it is for and its entries, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalContents {
    pub height: Option<u64>,
    pub entries: Vec<Vec<u8>>,
}

impl Store {
    /// Reads the consensus WAL.
    pub fn wal_contents(&self) -> Result<WalContents, StoreError> {
        let view = self.read()?;
        let meta = view.txn().open_table(META).map_err(dberr)?;
        let height = match meta.get("wal_height").map_err(dberr)? {
            None => None,
            Some(v) => {
                let mut r = Reader::new(v.value());
                Some(r.u64().map_err(|source| StoreError::Corrupt {
                    height: 0,
                    what: "consensus WAL height",
                    source,
                })?)
            }
        };
        let t = view.txn().open_table(WAL).map_err(dberr)?;
        let mut entries = Vec::new();
        for row in t.iter().map_err(dberr)? {
            let (_, v) = row.map_err(dberr)?;
            entries.push(v.value().to_vec());
        }
        Ok(WalContents { height, entries })
    }

    /// Durably writes WAL changes in one transaction: when `reset` is set, every entry is
    /// dropped and the WAL moves to that height first; then `entries` are stored from
    /// sequence number `first_seq` on. Also persists every earlier non-durable commit.
    pub fn wal_write(
        &self,
        reset: Option<u64>,
        first_seq: u64,
        entries: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(Durability::Immediate).map_err(dberr)?;
        {
            let mut t = txn.open_table(WAL).map_err(dberr)?;
            if let Some(h) = reset {
                t.retain(|_, _| false).map_err(dberr)?;
                let mut w = Writer::with_capacity(8);
                w.u64(h);
                let bytes = w.finish();
                txn.open_table(META)
                    .map_err(dberr)?
                    .insert("wal_height", bytes.as_slice())
                    .map_err(dberr)?;
            }
            for (i, e) in entries.iter().enumerate() {
                t.insert(first_seq + i as u64, e.as_slice())
                    .map_err(dberr)?;
            }
        }
        txn.commit().map_err(dberr)
    }

    /// Where the replica's consensus WAL file lives: beside the ledger (`<ledger>.wal`).
    pub fn wal_path(&self) -> std::path::PathBuf {
        self.path.with_extension("wal")
    }

    /// Drops the WAL older versions kept in this file (after it moved to [`Store::wal_path`]).
    pub fn wal_clear(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(Durability::Immediate).map_err(dberr)?;
        {
            txn.open_table(WAL)
                .map_err(dberr)?
                .retain(|_, _| false)
                .map_err(dberr)?;
            txn.open_table(META)
                .map_err(dberr)?
                .remove("wal_height")
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// A durable empty commit: persists every earlier non-durable commit.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(Durability::Immediate).map_err(dberr)?;
        txn.commit().map_err(dberr)
    }

    /// The validator set of height 1 (empty for a single-replica ledger that never had one),
    /// in its canonical form ([`canonical_genesis`]).
    pub fn genesis(&self) -> Result<Vec<Validator>, StoreError> {
        let view = self.read()?;
        let meta = view.txn().open_table(META).map_err(dberr)?;
        let Some(v) = meta.get("genesis").map_err(dberr)? else {
            return Ok(Vec::new());
        };
        let mut r = Reader::new(v.value());
        let corrupt = |source| StoreError::Corrupt {
            height: 0,
            what: "genesis validators",
            source,
        };
        let set = get_validators(&mut r).map_err(corrupt)?;
        r.finish().map_err(corrupt)?;
        Ok(canonical_genesis(&set))
    }

    /// The cluster name consensus signs for (recorded with the genesis validators).
    pub fn chain_name(&self) -> Result<Option<String>, StoreError> {
        let view = self.read()?;
        let meta = view.txn().open_table(META).map_err(dberr)?;
        Ok(meta
            .get("chain")
            .map_err(dberr)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// Records the cluster name and the genesis validator set, once: refused when the log
    /// already has entries but no genesis (unless this becomes a one-replica cluster), or
    /// another genesis or cluster is recorded.
    pub fn init_genesis(&self, chain: &str, validators: &[Validator]) -> Result<(), StoreError> {
        let validators = &canonical_genesis(validators)[..];
        let current = self.genesis()?;
        let recorded = self.chain_name()?;
        if let Some(c) = &recorded
            && c != chain
        {
            return Err(StoreError::NotNext {
                height: 1,
                reason: format!("this ledger belongs to cluster {c:?}, not {chain:?}"),
            });
        }
        if current == validators && recorded.is_some() {
            return Ok(());
        }
        let refuse = |reason: String| StoreError::NotNext { height: 1, reason };
        if !current.is_empty() && current != validators {
            return Err(refuse(format!(
                "this ledger's genesis validators are [{}], not [{}]",
                names(&current),
                names(validators)
            )));
        }
        // A single-writer ledger may become a one-replica replicated one: its entries stay
        // (without certificates) and consensus continues after them.
        if self.head()?.is_some() && validators.len() != 1 {
            return Err(refuse(
                "the ledger already has entries written without a validator set".into(),
            ));
        }
        let mut w = Writer::with_capacity(64 * validators.len());
        put_validators(&mut w, validators);
        let bytes = w.finish();
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(Durability::Immediate).map_err(dberr)?;
        {
            let mut meta = txn.open_table(META).map_err(dberr)?;
            meta.insert("genesis", bytes.as_slice()).map_err(dberr)?;
            meta.insert("chain", chain.as_bytes()).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }
}

/// The genesis validator set as it is recorded and compared: in name order (then key), and
/// without addresses. Every replica builds its genesis from its own configuration (itself
/// first, its peers at the addresses it dials them on), but the set must be the same bytes on
/// every replica: a membership change copies the current set into a `MembershipChanged` event,
/// so any per-replica difference would give each replica a different chain for one decided
/// batch. Where genesis members are reached comes from each replica's configuration.
pub fn canonical_genesis(validators: &[Validator]) -> Vec<Validator> {
    let mut out: Vec<Validator> = validators
        .iter()
        .map(|v| Validator {
            address: String::new(),
            ..v.clone()
        })
        .collect();
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.public_key.cmp(&b.public_key))
    });
    out
}

fn names(vs: &[Validator]) -> String {
    vs.iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn v(name: &str, k: u8) -> Validator {
        Validator {
            name: name.into(),
            public_key: [k; 32],
            address: format!("127.0.0.1:{k}"),
            power: 1,
        }
    }

    #[test]
    fn wal_and_genesis_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        {
            let s = Store::open(&path, StoreConfig::default()).unwrap();
            assert_eq!(s.wal_contents().unwrap(), WalContents::default());
            s.wal_write(Some(3), 0, &[b"a".to_vec(), b"b".to_vec()])
                .unwrap();
            s.wal_write(None, 2, &[b"c".to_vec()]).unwrap();
            s.init_genesis("c", &[v("r0", 1), v("r1", 2)]).unwrap();
        }
        let s = Store::open(&path, StoreConfig::default()).unwrap();
        let w = s.wal_contents().unwrap();
        assert_eq!(w.height, Some(3));
        assert_eq!(w.entries, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        s.wal_write(Some(4), 0, &[b"d".to_vec()]).unwrap();
        assert_eq!(
            s.wal_contents().unwrap(),
            WalContents {
                height: Some(4),
                entries: vec![b"d".to_vec()]
            }
        );
        assert_eq!(s.genesis().unwrap().len(), 2);
        s.init_genesis("c", &[v("r0", 1), v("r1", 2)]).unwrap();
        // Another replica's view of the same set: its own order and addresses.
        let mut other = vec![v("r1", 2), v("r0", 1)];
        other[0].address = "r1.example:7443".into();
        s.init_genesis("c", &other).unwrap();
        assert!(s.init_genesis("c", &[v("r0", 1)]).is_err());
        assert!(s.init_genesis("d", &[v("r0", 1), v("r1", 2)]).is_err());
        assert_eq!(s.chain_name().unwrap().as_deref(), Some("c"));
        let (state, _) = s.load_state().unwrap();
        assert_eq!(
            state.validators,
            canonical_genesis(&[v("r1", 2), v("r0", 1)])
        );
        assert!(state.validators.iter().all(|v| v.address.is_empty()));
        assert_eq!(state.validators[0].name, "r0");
    }
}
