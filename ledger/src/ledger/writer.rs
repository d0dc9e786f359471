//! The writer thread: batches queued submissions, orders them through the [`Sequencer`], plans,
//! builds and durably appends one entry per round, folds it, and answers the callers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, RwLock};

use super::{Applied, Clock, Job, SubmitError, Subscribers};
use crate::execute::execute;
use crate::plan::RequestError;
use crate::request::SignedRequest;
use crate::sequencer::{Proposal, Sequencer};
use crate::state::State;
use crate::store::Store;

pub(crate) struct Writer {
    pub store: Arc<Store>,
    pub state: Arc<RwLock<State>>,
    pub sequencer: Box<dyn Sequencer>,
    pub clock: Clock,
    pub subscribers: Subscribers,
    pub max_batch: usize,
}

/// (actor, request id): the idempotency key.
type IdKey = (String, String);

fn id_key(r: &SignedRequest) -> IdKey {
    (r.request.actor.clone(), r.request.id.clone())
}

/// A request of this round that came through this replica, and the callers waiting for it
/// (more than one when a retry arrived while the original was still queued).
struct Waiting {
    key: IdKey,
    request: SignedRequest,
    digest: [u8; 32],
    jobs: Vec<Job>,
}

impl Waiting {
    fn answer(self, result: Result<Applied, SubmitError>) {
        let mut first = true;
        for job in self.jobs {
            let r = match &result {
                Ok(a) if !first => Ok(Applied {
                    duplicate: true,
                    ..a.clone()
                }),
                other => other.clone(),
            };
            first = false;
            job.reply.send(r);
        }
    }
}

impl Writer {
    pub fn run(mut self, rx: Receiver<Job>) {
        let mut pending: VecDeque<Job> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match rx.recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => return,
                }
            }
            while pending.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let n = pending.len().min(self.max_batch);
            let batch: Vec<Job> = pending.drain(..n).collect();
            let requeue = self.round(batch);
            for job in requeue.into_iter().rev() {
                pending.push_front(job);
            }
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// One height: returns the jobs whose requests were not part of the decided value.
    fn round(&mut self, batch: Vec<Job>) -> Vec<Job> {
        let mut waiting = match self.collect(batch) {
            Ok(w) if !w.is_empty() => w,
            _ => return Vec::new(),
        };
        let (height, prev_hash, prev_ts) = {
            let s = self.read_state();
            (s.height + 1, s.head_hash, s.timestamp_ms)
        };
        let proposal = Proposal {
            requests: waiting.iter().map(|w| w.request.clone()).collect(),
            timestamp_ms: (self.clock)().max(prev_ts),
        };
        let decision = match self.sequencer.decide(height, proposal) {
            Ok(d) => d,
            Err(e) => {
                for w in waiting {
                    w.answer(Err(SubmitError::Ordering(e.to_string())));
                }
                return Vec::new();
            }
        };

        // Keep each decided request once; foreign ones must verify and be new.
        let mut seen: HashSet<IdKey> = HashSet::new();
        let mut decided: Vec<SignedRequest> = Vec::new();
        let mut locals: Vec<Option<Waiting>> = Vec::new();
        for req in decision.requests {
            let key = id_key(&req);
            if !seen.insert(key.clone()) {
                continue;
            }
            let local = waiting
                .iter()
                .position(|w| w.key == key && w.digest == req.request.digest())
                .map(|i| waiting.swap_remove(i));
            if local.is_none() && !self.foreign_ok(&req) {
                continue;
            }
            decided.push(req);
            locals.push(local);
        }
        // Whatever was not decided at this height stays pending.
        let requeue: Vec<Job> = waiting.into_iter().flat_map(|w| w.jobs).collect();
        let mut execution = execute(&self.read_state(), &decided);
        let changed = !execution.is_empty();
        let results = std::mem::take(&mut execution.results);
        let mut answers: Vec<(Waiting, Applied)> = Vec::new();
        for ((req, local), result) in decided.iter().zip(locals).zip(results) {
            let Some(w) = local else { continue };
            match result {
                // Answered after the commit: the plan may rest on earlier requests of the entry.
                Ok(outcomes) => {
                    let at = if changed { height } else { height - 1 };
                    answers.push((
                        w,
                        Applied {
                            height: at,
                            request_id: req.request.id.clone(),
                            outcomes,
                            duplicate: false,
                        },
                    ));
                }
                Err(e) => w.answer(Err(e.into())),
            }
        }
        if !changed && decision.certificate.is_none() {
            for (w, applied) in answers {
                w.answer(Ok(applied));
            }
            return requeue;
        }
        let commit = match execution.into_commit(
            prev_hash,
            height,
            decision.timestamp_ms.max(prev_ts),
            decision.certificate,
        ) {
            Ok(c) => c,
            Err(e) => {
                for (w, _) in answers {
                    w.answer(Err(SubmitError::Storage(format!(
                        "building entry {height}: {e}"
                    ))));
                }
                return requeue;
            }
        };
        if let Err(e) = self.store.append(std::slice::from_ref(&commit)) {
            for (w, _) in answers {
                w.answer(Err(SubmitError::Storage(e.to_string())));
            }
            return requeue;
        }
        let entry = commit.entry.clone();
        self.fold(&entry);
        // Subscribers get the entry before its callers are answered: a caller that then looks
        // at a subscription finds it there (a test saw the last entry missing).
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.send(entry.clone()).is_ok());
        for (w, applied) in answers {
            w.answer(Ok(applied));
        }
        requeue
    }

    /// Answers retries of committed requests and groups the rest by idempotency key.
    /// `Err(())` when the store could not be read (every caller has been answered).
    fn collect(&self, batch: Vec<Job>) -> Result<Vec<Waiting>, ()> {
        let view = match self.store.read() {
            Ok(v) => v,
            Err(e) => {
                for job in batch {
                    job.reply.send(Err(SubmitError::Storage(e.to_string())));
                }
                return Err(());
            }
        };
        let mut out: Vec<Waiting> = Vec::new();
        let mut index: HashMap<IdKey, usize> = HashMap::new();
        for job in batch {
            let key = id_key(&job.prepared.signed);
            let digest = job.prepared.digest;
            if let Some(&i) = index.get(&key) {
                let w = &mut out[i];
                if w.digest == digest {
                    w.jobs.push(job);
                } else {
                    job.reply.send(Err(RequestError::RequestIdReused {
                        id: key.1,
                        actor: key.0,
                    }
                    .into()));
                }
                continue;
            }
            match view.request_record(&key.0, &key.1) {
                Ok(Some(rec)) if rec.digest == digest => {
                    job.reply.send(Ok(Applied {
                        height: rec.height,
                        request_id: key.1,
                        outcomes: rec.outcomes,
                        duplicate: true,
                    }));
                }
                Ok(Some(_)) => {
                    job.reply.send(Err(RequestError::RequestIdReused {
                        id: key.1,
                        actor: key.0,
                    }
                    .into()));
                }
                Ok(None) => {
                    index.insert(key.clone(), out.len());
                    let request = job.prepared.signed.clone();
                    out.push(Waiting {
                        key,
                        request,
                        digest,
                        jobs: vec![job],
                    });
                }
                Err(e) => {
                    job.reply.send(Err(SubmitError::Storage(e.to_string())));
                }
            }
        }
        Ok(out)
    }

    /// A decided request that did not come through this replica: its signature must hold and it
    /// must not have been committed before.
    fn foreign_ok(&self, req: &SignedRequest) -> bool {
        if req.verify().is_err() {
            return false;
        }
        matches!(
            self.store
                .request_record(&req.request.actor, &req.request.id),
            Ok(None)
        )
    }

    fn fold(&self, entry: &crate::entry::Entry) {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.apply_entry(entry).is_err() {
                // The store holds the entry but the fold refused it: rebuild from the store.
                if let Ok((s, _)) = self.store.load_state() {
                    *state = s;
                }
            }
        }
        let every = self.store.config().snapshot_every;
        if every > 0 && entry.height.is_multiple_of(every) {
            // Readers may hold the state meanwhile; a lost snapshot only costs replay time.
            let state = self.read_state();
            let _ = self.store.write_snapshot(&state);
        }
    }
}
