//! Commit certificates of a replicated ledger, verified offline: for every entry, the record
//! beside it must certify exactly this entry's batch (header, stored request rows, barriers)
//! at this height, with 2f+1 valid signatures of the validator set of that height. The sets
//! start at the genesis validators and follow the `MembershipChanged` events of the chain.

use crate::consensus::{ChainId, Verifier, verify_commit_cert};
use crate::event::{Event, EventBody, Validator};
use crate::replicated::batch::{CertRecord, Header, batch_id};
use crate::replicated::consensus_set;
use crate::store::{Store, StoreError};

use super::Problem;

/// What the certificate pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertReport {
    /// Entries whose certificate verified.
    pub certified: u64,
    /// Entries written before the ledger was replicated (they precede the first certificate).
    pub uncertified: u64,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

/// Verifies the certificate of every entry `1..=up_to` (the whole log when `None`), signed
/// for the cluster recorded with the genesis validators (or `chain`, when given). A ledger
/// without genesis validators (a single writer) has none to check.
pub fn verify_certificates(
    store: &Store,
    chain: Option<&str>,
    up_to: Option<u64>,
) -> Result<CertReport, StoreError> {
    let mut report = CertReport::default();
    let mut validators = store.genesis()?;
    if validators.is_empty() {
        return Ok(report);
    }
    let recorded = store.chain_name()?.unwrap_or_default();
    let verifier = Verifier::new(ChainId::from_name(chain.unwrap_or(&recorded)));
    let view = store.read()?;
    let head = view.head()?.map_or(0, |h| h.height);
    let last = up_to.map_or(head, |u| u.min(head));
    let mut pending: Option<(u64, Vec<Validator>)> = None;
    let mut seen_cert = false;
    for height in 1..=last {
        let fail = |message: String| Problem::Inconsistent { height, message };
        let Some((header, requests, events)) = view.raw_entry(height)? else {
            report.problem = Some(Problem::Missing { height });
            return Ok(report);
        };
        match view.certificate(height)? {
            None if !seen_cert => report.uncertified += 1,
            None => {
                report.problem = Some(fail("the commit certificate is missing".into()));
                return Ok(report);
            }
            Some(bytes) => {
                seen_cert = true;
                let rec = match CertRecord::from_bytes(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        report.problem = Some(Problem::Undecodable {
                            height,
                            what: "commit certificate",
                            message: e.to_string(),
                        });
                        return Ok(report);
                    }
                };
                let entry_ts = crate::entry::EntryHeader::from_bytes(&header)
                    .map(|h| h.timestamp_ms)
                    .ok();
                let batch_ts = Header::from_bytes(&rec.header).map(|h| h.timestamp_ms).ok();
                let problem = if rec.cert.height != height {
                    Some(format!("the certificate is for height {}", rec.cert.height))
                } else if batch_ts.is_none() || batch_ts != entry_ts {
                    Some("the certified batch has another timestamp than the entry".into())
                } else if batch_id(&rec.header, &requests, &rec.barriers) != rec.cert.batch_id {
                    Some("the certificate does not certify this entry's requests".into())
                } else {
                    match consensus_set(&validators) {
                        None => Some("no valid validator set for this height".into()),
                        Some(vs) => verify_commit_cert(&verifier, &rec.cert, &vs)
                            .err()
                            .map(|e| format!("invalid commit certificate: {e}")),
                    }
                };
                if let Some(m) = problem {
                    report.problem = Some(fail(m));
                    return Ok(report);
                }
                report.certified += 1;
            }
        }
        // Follow validator-set changes exactly as the state fold does.
        for bytes in &events {
            if let Ok(Event {
                body:
                    EventBody::MembershipChanged {
                        validators: next,
                        effective_height,
                    },
                ..
            }) = membership_event(bytes)
            {
                pending = Some((effective_height, next));
            }
        }
        if let Some((at, _)) = &pending
            && *at <= height + 1
            && let Some((_, set)) = pending.take()
        {
            validators = set;
        }
    }
    Ok(report)
}

/// Decodes an event only if it is a membership change (the tag is read first, cheaply).
fn membership_event(bytes: &[u8]) -> Result<Event, ()> {
    // Event record: `u8 version | u32 request index | u8 tag | ...` (see crate::event).
    if bytes.get(5) != Some(&6) {
        return Err(());
    }
    Event::from_bytes(bytes).map_err(|_| ())
}
