//! Typed reads over one redb read transaction (a consistent snapshot of the store).

use redb::{ReadTransaction, ReadableTable};

use super::tables::*;
use super::{StoreError, dberr};
use crate::entry::{Entry, EntryHeader};

/// The raw rows of one entry: header bytes, request records, event records.
pub type RawEntry = (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// An entry and the certificate stored beside it.
pub type CertifiedEntry = (Entry, Option<Vec<u8>>);

/// A consistent, read-only view of the store.
pub struct ReadView {
    txn: ReadTransaction,
}

impl std::fmt::Debug for ReadView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadView")
    }
}

impl ReadView {
    pub(crate) fn new(txn: ReadTransaction) -> Self {
        ReadView { txn }
    }

    pub(crate) fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    /// The last entry's height, hash and time.
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        let meta = self.txn.open_table(META).map_err(dberr)?;
        let v = meta.get("head").map_err(dberr)?;
        v.map(|v| {
            Head::from_bytes(v.value()).map_err(|source| StoreError::Corrupt {
                height: 0,
                what: "head",
                source,
            })
        })
        .transpose()
    }

    /// An entry's header row.
    pub fn header(&self, height: u64) -> Result<Option<EntryHeader>, StoreError> {
        let t = self.txn.open_table(HEADERS).map_err(dberr)?;
        let v = t.get(height).map_err(dberr)?;
        v.map(|v| {
            EntryHeader::from_bytes(v.value()).map_err(|source| StoreError::Corrupt {
                height,
                what: "header",
                source,
            })
        })
        .transpose()
    }

    /// The raw rows of an entry: (header bytes, request records, event records).
    pub fn raw_entry(&self, height: u64) -> Result<Option<RawEntry>, StoreError> {
        let headers = self.txn.open_table(HEADERS).map_err(dberr)?;
        let Some(header) = headers.get(height).map_err(dberr)? else {
            return Ok(None);
        };
        let rows =
            |def: redb::TableDefinition<(u64, u32), &[u8]>| -> Result<Vec<Vec<u8>>, StoreError> {
                let t = self.txn.open_table(def).map_err(dberr)?;
                let range = t
                    .range((height, 0u32)..=(height, u32::MAX))
                    .map_err(dberr)?;
                range
                    .map(|r| r.map(|(_, v)| v.value().to_vec()).map_err(dberr))
                    .collect()
            };
        Ok(Some((
            header.value().to_vec(),
            rows(REQUESTS)?,
            rows(EVENTS)?,
        )))
    }

    /// One decoded entry.
    pub fn entry(&self, height: u64) -> Result<Option<Entry>, StoreError> {
        let Some((header, requests, events)) = self.raw_entry(height)? else {
            return Ok(None);
        };
        let header = EntryHeader::from_bytes(&header).map_err(|source| StoreError::Corrupt {
            height,
            what: "header",
            source,
        })?;
        let entry =
            Entry::decode(&header, &requests, &events).map_err(|source| StoreError::Corrupt {
                height,
                what: "entry",
                source,
            })?;
        Ok(Some(entry))
    }

    /// Entries `from..=to` with their certificates (for catch-up and replay).
    pub fn entries(&self, from: u64, to: u64) -> Result<Vec<CertifiedEntry>, StoreError> {
        let mut out = Vec::new();
        for height in from..=to {
            let Some(e) = self.entry(height)? else { break };
            out.push((e, self.certificate(height)?));
        }
        Ok(out)
    }

    /// The certificate stored beside an entry.
    pub fn certificate(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.txn.open_table(CERTIFICATES).map_err(dberr)?;
        Ok(t.get(height).map_err(dberr)?.map(|v| v.value().to_vec()))
    }

    /// Where `(actor, id)` was committed and what it did.
    pub fn request_record(
        &self,
        actor: &str,
        id: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let t = self.txn.open_table(REQUEST_IDS).map_err(dberr)?;
        let v = t.get((actor, id)).map_err(dberr)?;
        match v {
            None => Ok(None),
            Some(v) => {
                let rec =
                    RequestRecord::from_bytes(v.value()).map_err(|source| StoreError::Corrupt {
                        height: 0,
                        what: "request id index",
                        source,
                    })?;
                Ok(Some(rec))
            }
        }
    }

    /// Stored snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let t = self.txn.open_table(SNAPSHOTS).map_err(dberr)?;
        t.iter()
            .map_err(dberr)?
            .map(|r| {
                r.map(|(k, v)| (k.value(), v.value().to_vec()))
                    .map_err(dberr)
            })
            .collect()
    }
}
