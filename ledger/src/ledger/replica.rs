//! The replicated ledger's front: opening it (genesis, the node thread), submitting through
//! consensus, read barriers, peer bytes in, status out.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{
    Applied, Clock, Job, Ledger, LedgerConfig, OpenError, Reply, SubmitError, Subscribers,
};
use crate::admission::{Admission, AdmitAll};
use crate::consensus::ValidatorKey;
use crate::plan::RequestError;
use crate::prepared::Prepared;
use crate::replicated::app::AppParts;
use crate::replicated::runner::{Handle, Parts};
use crate::replicated::{Network, ReplicaConfig, ReplicationStatus};
use crate::store::Store;

#[cfg(test)]
thread_local! {
    /// Tests only: runs once on this thread just before the next submission reads the state
    /// (a height decided right then).
    pub(crate) static BEFORE_STATE_READ: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::RefCell::new(None) };
}

impl Ledger {
    /// Opens one replica of a replicated ledger: records (or checks) the genesis validator set,
    /// rebuilds the state, and starts the consensus node on its own thread. Peer bytes go out
    /// through `network` and come in through [`Ledger::deliver`].
    pub fn open_replicated(
        path: impl AsRef<Path>,
        config: LedgerConfig,
        replica: ReplicaConfig,
        network: Arc<dyn Network>,
        clock: Clock,
    ) -> Result<Ledger, OpenError> {
        let store = Arc::new(Store::open(path, config.store.clone())?);
        store.init_genesis(&replica.cluster, &replica.genesis)?;
        let (state, load_report) = store.load_state()?;
        let state = Arc::new(RwLock::new(state));
        let subscribers: Subscribers = Arc::default();
        let admission: Arc<RwLock<Arc<dyn Admission>>> = Arc::new(RwLock::new(Arc::new(AdmitAll)));
        let app = AppParts {
            store: store.clone(),
            state: state.clone(),
            subscribers: subscribers.clone(),
            admission: admission.clone(),
            clock,
        };
        let handle = Handle::spawn(Parts {
            name: replica.name.clone(),
            node_config: replica.node_config(config.max_batch),
            signer_seed: replica.seed,
            store: store.clone(),
            app,
            network,
            submit_timeout: replica.submit_timeout,
            sync_gap: replica.ledger_sync_gap,
        })
        .map_err(OpenError::Thread)?;
        Ok(Ledger {
            store,
            state,
            jobs: Mutex::new(None),
            writer: Mutex::new(None),
            subscribers,
            load_report,
            admission,
            replica: Some(handle),
        })
    }

    /// Whether this ledger is one replica of a replicated one.
    pub fn is_replicated(&self) -> bool {
        self.replica.is_some()
    }

    /// Bytes replica `from` sent (its key as the transport authenticated it).
    pub fn deliver(&self, from: ValidatorKey, bytes: Vec<u8>) {
        if let Some(r) = &self.replica {
            r.deliver(from, bytes);
        }
    }

    /// Where consensus is (`None` for a single-writer ledger, or if the node does not answer).
    pub fn replication_status(&self) -> Option<ReplicationStatus> {
        self.replica.as_ref().and_then(|r| r.status())
    }

    /// A linearizable read point: orders a barrier through consensus and returns once the local
    /// state holds the height that decided it (so it includes every write acknowledged before
    /// this call, by any replica). A single-writer ledger is always current.
    pub fn read_barrier(&self, timeout: Duration) -> Result<u64, SubmitError> {
        match &self.replica {
            Some(r) => r.barrier(timeout),
            None => Ok(self.height()),
        }
    }

    /// Queues a verified, admitted request for consensus. A retry of a decided request gets its
    /// original answer; a request that would change nothing or fail against the current state
    /// is answered at once, without ordering (it leaves no trace).
    pub(super) fn queue_replicated(
        &self,
        replica: &Handle,
        prepared: Arc<Prepared>,
        reply: Reply,
    ) -> Result<(), (Reply, SubmitError)> {
        let (actor, id) = (&prepared.signed.request.actor, &prepared.signed.request.id);
        // The record is looked up while the state cannot move: a decided height is handed to
        // the ledger writer before the state is folded, so a request the state already holds
        // is found here and answered as the duplicate it is (looked up before the state was
        // read, a request decided in between was answered as a no-op). The replica's ledger
        // writer may not have appended the newest heights yet: their requests are in its
        // queue.
        #[cfg(test)]
        if let Some(hook) = BEFORE_STATE_READ.with(|h| h.borrow_mut().take()) {
            hook();
        }
        let state = self.state();
        let answered = match replica.request_record(&self.store, actor, id) {
            Err(e) => Some(Err(SubmitError::Storage(e.to_string()))),
            Ok(Some(rec)) if rec.digest == prepared.digest => Some(match rec.error {
                Some(e) => Err(e.into()),
                None => Ok(Applied {
                    height: rec.height,
                    request_id: id.clone(),
                    outcomes: rec.outcomes,
                    duplicate: true,
                }),
            }),
            Ok(Some(_)) => Some(Err(RequestError::RequestIdReused {
                id: id.clone(),
                actor: actor.clone(),
            }
            .into())),
            Ok(None) => match prepared.plan(&*state) {
                Err(e) => Some(Err(e.into())),
                Ok(plan) if plan.events.is_empty() => Some(Ok(Applied {
                    height: state.height,
                    request_id: id.clone(),
                    outcomes: plan.outcomes,
                    duplicate: false,
                })),
                Ok(_) => None,
            },
        };
        drop(state);
        if let Some(r) = answered {
            reply.send(r);
            return Ok(());
        }
        replica.submit(Job { prepared, reply })
    }
}
