//! Executing a decided batch: the pure, deterministic step every replica runs after a height is
//! decided. Plans each request in order against the state plus the requests before it, keeps the
//! ones that change something, and yields the entry's contents and every request's answer.

use std::sync::Arc;

use crate::entry::{EntryError, EntryHash, build_entry, build_entry_encoded};
use crate::event::Event;
use crate::plan::{ObjectOutcome, RequestError, Staged, plan_request};
use crate::prepared::Prepared;
use crate::request::SignedRequest;
use crate::state::State;
use crate::store::Commit;

/// The result of executing a batch.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    /// Requests that change something, in order: the entry's requests.
    pub requests: Vec<SignedRequest>,
    /// Their events, grouped by request.
    pub events: Vec<Event>,
    /// Outcomes per entry request (same order as `requests`).
    pub outcomes: Vec<Vec<ObjectOutcome>>,
    /// One per input request, in input order: the outcomes, or why it was refused.
    /// Requests that changed nothing are `Ok` but not in the entry.
    pub results: Vec<Result<Vec<ObjectOutcome>, RequestError>>,
    /// The stored record of each request of `requests`, when known (else empty).
    pub request_records: Vec<Vec<u8>>,
}

impl Execution {
    /// Whether the batch changes anything.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The entry (with what the store keeps beside it) at `height` on top of `prev_hash`.
    pub fn into_commit(
        self,
        prev_hash: EntryHash,
        height: u64,
        timestamp_ms: u64,
        certificate: Option<Vec<u8>>,
    ) -> Result<Commit, EntryError> {
        let (entry, encoded) = if self.request_records.len() == self.requests.len() {
            let (entry, enc) = build_entry_encoded(
                prev_hash,
                height,
                timestamp_ms,
                self.requests,
                self.request_records,
                self.events,
            )?;
            (entry, Some(enc))
        } else {
            let entry = build_entry(prev_hash, height, timestamp_ms, self.requests, self.events)?;
            (entry, None)
        };
        // Refused requests are in the entry only after `execute_all`; name them by index.
        let errors = if self.results.len() == self.outcomes.len() {
            self.results
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.as_ref().err().map(|e| (i as u32, e.clone())))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Commit {
            entry: Arc::new(entry),
            certificate,
            outcomes: self.outcomes,
            errors,
            encoded,
        })
    }
}

/// Executes a decided batch of the replicated ledger: like [`execute`], but every request enters
/// the entry, in order, including those that fail or change nothing (they have no events). The
/// entry then holds exactly the decided requests, so its commit certificate can be checked
/// against it, and a request id is used once whatever became of it.
///
/// The requests come prepared ([`Prepared`]): planning uses the objects validated then, and the
/// entry keeps their records as they are. A request no one else holds is taken apart, not
/// copied.
pub fn execute_all(state: &State, requests: Vec<Arc<Prepared>>) -> Execution {
    let mut staged = Staged::new(state);
    let mut out = Execution::default();
    for (index, p) in requests.into_iter().enumerate() {
        let mut p = Arc::try_unwrap(p).unwrap_or_else(|shared| (*shared).clone());
        let result = p.plan_owned(&staged).map(|plan| {
            let req = &p.signed.request;
            staged.stage(&req.actor, &req.source, &plan.events);
            out.events.extend(plan.events.into_iter().map(|body| Event {
                request: index as u32,
                body,
            }));
            plan.outcomes
        });
        out.outcomes.push(result.clone().unwrap_or_default());
        out.requests.push(p.signed);
        out.request_records.push(p.bytes);
        out.results.push(result);
    }
    out
}

/// Plans `requests` in order on top of `state` (which is not modified).
pub fn execute(state: &State, requests: &[SignedRequest]) -> Execution {
    let mut staged = Staged::new(state);
    let mut out = Execution::default();
    for req in requests {
        match plan_request(&staged, &req.request) {
            Ok(plan) => {
                if !plan.events.is_empty() {
                    staged.stage(&req.request.actor, &req.request.source, &plan.events);
                    let index = out.requests.len() as u32;
                    out.events.extend(plan.events.into_iter().map(|body| Event {
                        request: index,
                        body,
                    }));
                    out.outcomes.push(plan.outcomes.clone());
                    out.requests.push(req.clone());
                }
                out.results.push(Ok(plan.outcomes));
            }
            Err(e) => out.results.push(Err(e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;
    use crate::request::Op;
    use crate::testutil::*;

    #[test]
    fn batch_execution_is_sequential_and_atomic_per_request() {
        let mut state = State::new();
        let reqs = vec![
            signed("1", "user:a", vec![apply(workload("a", 1))]),
            signed("2", "user:a", vec![apply(workload("a", 1))]),
            signed(
                "3",
                "user:a",
                vec![
                    apply(workload("b", 1)),
                    Op::Delete {
                        key: wkey("zz"),
                        if_version: None,
                    },
                ],
            ),
            signed(
                "4",
                "user:a",
                vec![apply(workload("a", 2)), apply(workload("c", 1))],
            ),
        ];
        let ex = execute(&state, &reqs);
        assert_eq!(
            ex.requests.len(),
            2,
            "unchanged and failed requests are not in the entry"
        );
        assert_eq!(ex.results[1].as_ref().unwrap()[0].action, Action::Unchanged);
        assert!(matches!(ex.results[2], Err(RequestError::NotFound { .. })));
        assert_eq!(
            ex.results[3]
                .as_ref()
                .unwrap()
                .iter()
                .map(|o| o.action)
                .collect::<Vec<_>>(),
            [Action::Configured, Action::Created]
        );
        assert_eq!(
            ex.events.iter().map(|e| e.request).collect::<Vec<_>>(),
            [0, 1, 1]
        );
        let commit = ex.into_commit(EntryHash::ZERO, 1, 5, None).unwrap();
        state.apply_entry(&commit.entry).unwrap();
        assert_eq!(state.get(&wkey("a")).unwrap().generation, 2);
        assert!(state.get(&wkey("b")).is_none());
        assert_eq!(state.objects.len(), 2);

        // The replicated form keeps every request; events name them by their batch position.
        let prepared: Vec<Arc<Prepared>> = reqs
            .iter()
            .map(|r| Arc::new(Prepared::new(r.clone())))
            .collect();
        let all = execute_all(&State::new(), prepared);
        assert_eq!(all.requests.len(), 4);
        assert_eq!(
            all.events.iter().map(|e| e.request).collect::<Vec<_>>(),
            [0, 3, 3]
        );
        assert!(all.outcomes[2].is_empty());
        let commit = all.into_commit(EntryHash::ZERO, 1, 5, None).unwrap();
        assert_eq!(commit.errors.len(), 1);
        assert_eq!(commit.errors[0].0, 2);
        let mut s2 = State::new();
        s2.apply_entry(&commit.entry).unwrap();
        assert_eq!(s2.objects, state.objects);
    }
}
