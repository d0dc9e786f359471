//! The replica's side of BFT replication: which replicas it talks to (the validator set in the
//! ledger, current and pending, with addresses from `server.yaml` overriding the recorded
//! ones), the consensus links to them ([`links`]), the inbound consensus kind (accepted only
//! from a `replica:<name>` certificate whose key is that validator's key), and what
//! `cluster status` shows about every replica.

pub mod links;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nexus_api::client::ReplicaStatus;
use nexus_ledger::consensus::ValidatorKey;
use nexus_ledger::{Ledger, Validator};
use nexus_transport::Role;
use nexus_transport::rpc::{Access, Context, Router};

pub use links::{CONSENSUS_KIND, Links, Target, client_tls};

/// How often the link set is reconciled with the validator set in the ledger.
const RECONCILE: Duration = Duration::from_secs(1);
/// A peer whose status beacon is older than this is shown as unreachable.
const STALE_MS: u64 = 3_000;

/// Replication settings of a replica.
#[derive(Debug, Clone, Default)]
pub struct ReplicationOptions {
    /// The validator set of height 1. Empty: this replica and `peers`.
    pub genesis: Vec<Validator>,
    /// The other replicas this one knows from its configuration. Their addresses are used to
    /// reach them (over the ones recorded in the ledger's validator set).
    pub peers: Vec<Validator>,
    /// Consensus timing; `None`: the defaults.
    pub timeouts: Option<nexus_ledger::consensus::Timeouts>,
}

impl ReplicationOptions {
    /// The genesis validators: the explicit ones, else `me` and the peers.
    pub fn genesis_with(&self, me: Validator) -> Vec<Validator> {
        if !self.genesis.is_empty() {
            return self.genesis.clone();
        }
        let mut g = vec![me];
        g.extend(self.peers.iter().cloned());
        g
    }

    /// Configured addresses by replica name.
    pub fn addresses(&self) -> BTreeMap<String, String> {
        self.peers
            .iter()
            .map(|p| (p.name.clone(), p.address.clone()))
            .collect()
    }
}

/// The running replication side.
pub struct Replication {
    name: String,
    me: ValidatorKey,
    ledger: Arc<Ledger>,
    links: Arc<Links>,
    addresses: BTreeMap<String, String>,
    /// The members as of a height, for checking who sends consensus messages (see
    /// [`Replication::is_member`]).
    known: std::sync::Mutex<(u64, Arc<Vec<Validator>>)>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("name", &self.name)
            .finish()
    }
}

/// Members of the current and the pending validator set.
fn members(ledger: &Ledger) -> Vec<Validator> {
    members_of(&ledger.state())
}

fn members_of(state: &nexus_ledger::State) -> Vec<Validator> {
    let mut out = state.validators.clone();
    if let Some((_, pending)) = &state.pending_validators {
        for v in pending {
            if !out
                .iter()
                .any(|o| o.name == v.name && o.public_key == v.public_key)
            {
                out.push(v.clone());
            }
        }
    }
    out
}

impl Replication {
    /// Starts reconciling the links with the ledger's validator set (inside a tokio runtime).
    pub fn start(
        name: String,
        me: ValidatorKey,
        ledger: Arc<Ledger>,
        links: Arc<Links>,
        addresses: BTreeMap<String, String>,
    ) -> Arc<Replication> {
        let known = {
            let state = ledger.state();
            (state.height, Arc::new(members_of(&state)))
        };
        let r = Arc::new(Replication {
            name,
            me,
            ledger,
            links,
            addresses,
            known: std::sync::Mutex::new(known),
            task: Default::default(),
        });
        r.reconcile();
        let weak = Arc::downgrade(&r);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE).await;
                match weak.upgrade() {
                    Some(r) => r.reconcile(),
                    None => return,
                }
            }
        });
        *r.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        r
    }

    /// Dials every member (but this replica) at its configured or recorded address.
    fn reconcile(&self) {
        let targets: Vec<Target> = members(&self.ledger)
            .into_iter()
            .map(|v| Target {
                addr: self
                    .addresses
                    .get(&v.name)
                    .cloned()
                    .unwrap_or_else(|| v.address.clone()),
                name: v.name,
                key: ValidatorKey(v.public_key),
            })
            .collect();
        self.links.set_targets(&targets);
    }

    /// The inbound consensus kind.
    pub fn routes(self: &Arc<Self>, router: &mut Router) {
        let r = self.clone();
        router.oneway_bytes(
            CONSENSUS_KIND,
            Access::Roles(vec![Role::Replica]),
            move |ctx: Context, bytes: Vec<u8>| {
                let r = r.clone();
                async move {
                    let Some(peer) = ctx.peer else { return };
                    if r.is_member(&peer.name, &peer.public_key) && peer.public_key != r.me.0 {
                        r.ledger.deliver(ValidatorKey(peer.public_key), bytes);
                    } else {
                        tracing::debug!(
                            %peer,
                            "dropping consensus bytes from a replica that is not a validator \
                             with that key"
                        );
                    }
                }
            },
        );
    }

    /// Whether `name` with `key` is a member of the current or the pending validator set. Runs
    /// for every consensus message, on the runtime's threads: the list is rebuilt only when the
    /// state moved to another height, and never waits for the state while the node thread
    /// folds an entry (the list of the height before stands meanwhile; a member added is
    /// listed from the height that records it, before it takes effect, and the consensus core
    /// checks each message against its height's set anyway).
    fn is_member(&self, name: &str, key: &[u8; 32]) -> bool {
        let members = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = self.ledger.try_state()
                && state.height != known.0
            {
                *known = (state.height, Arc::new(members_of(&state)));
            }
            known.1.clone()
        };
        members
            .iter()
            .any(|v| v.name == name && v.public_key == *key)
    }

    /// Every member as this replica sees it: itself from its node, the others from their
    /// status beacons. `height` is the last decided height; `lag` is how far behind the best
    /// height anyone reported.
    pub fn replicas(&self, own_addr: &str) -> Vec<ReplicaStatus> {
        let Some(st) = self.ledger.replication_status() else {
            return Vec::new();
        };
        let best = st
            .peers
            .iter()
            .map(|p| p.tip)
            .chain([st.tip])
            .max()
            .unwrap_or(0);
        let now = st
            .peers
            .iter()
            .map(|p| p.seen_ms)
            .max()
            .unwrap_or(0)
            .max(st.now_ms);
        members(&self.ledger)
            .into_iter()
            .map(|v| {
                let key = ValidatorKey(v.public_key);
                let addr = self.addresses.get(&v.name).cloned().unwrap_or(v.address);
                if key == self.me {
                    return ReplicaStatus {
                        name: v.name,
                        addr: own_addr.to_string(),
                        height: st.tip,
                        round: st.round,
                        health: match (&st.halted, st.tip < best) {
                            (Some(_), _) => "halted".into(),
                            (None, true) => "lagging".into(),
                            (None, false) => "healthy".into(),
                        },
                        lag: best - st.tip,
                    };
                }
                match st.peers.iter().find(|p| p.key == key) {
                    Some(p) => ReplicaStatus {
                        name: v.name,
                        addr,
                        height: p.tip,
                        round: p.round,
                        health: if now.saturating_sub(p.seen_ms) > STALE_MS {
                            "unreachable".into()
                        } else if p.tip < best {
                            "lagging".into()
                        } else {
                            "healthy".into()
                        },
                        lag: best.saturating_sub(p.tip),
                    },
                    None => ReplicaStatus {
                        name: v.name,
                        addr,
                        height: 0,
                        round: None,
                        health: "unreachable".into(),
                        lag: best,
                    },
                }
            })
            .collect()
    }

    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        self.links.close();
    }
}
