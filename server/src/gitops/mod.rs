//! GitOps on the replica: the sync controller for every `GitSource` in the committed state, the
//! admission check that verifies git-sourced requests against git (DESIGN.md BFT rule 3), the
//! push webhook endpoint, and the per-source status served as `nexus.gitops.status`.
//!
//! - Triggers, per source: a poller at the source's interval (the first poll fires at once), a
//!   notify watcher on local and file:// repositories (debounced; a push lands within a second),
//!   the webhook (`POST /hooks/git/[NAMESPACE/]NAME`, HMAC-SHA256 with the secret in the source's
//!   `webhookSecretFile`), a committed change to an object the source owns made by anyone else
//!   (drift), a spec change, and `nexus gitops sync`. Triggers only wake the source's worker;
//!   a burst of them becomes one sync. Every replica plans every source; routine syncs are
//!   written by one chosen replica per source (`worker::syncer`), a webhook or `nexus gitops
//!   sync` by the replica that received it, at once.
//! - A sync ([`worker`]): fetch into this replica's mirror, check the signature policy, read and
//!   validate the manifests, plan against the live objects and their owners, and write ONE
//!   request signed by this replica (`replica:<name>`, source `Gitops { commit, tree, author, ..
//!   claim, forced_over }`). A rejected commit writes nothing; its error (file:line:col) stays in
//!   the status until a later commit syncs.
//! - Status (drift, conflicts, errors, heads) is soft state in this replica's memory (rule 6).

mod admission;
mod handlers;
mod mirrors;
#[cfg(test)]
mod replicated_tests;
pub mod request;
mod status;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use nexus_api::gitops::SourceStatus;
use nexus_gitops::repo::RepoUrl;
use nexus_gitops::watch::{ChangeEvent, LocalWatcher, Trigger, WebhookConfig, spawn_poller};
use nexus_gitops::{FetchOptions, LastSync, SourceConfig, SourceId};
use nexus_ledger::{Entry, Ledger, Source};
use nexus_schemas::{Kind, Object, ObjectKey};
use nexus_transport::rpc::Router;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub use admission::GitAdmission;

/// GitOps settings of a replica (`gitops:` in server.yaml).
#[derive(Debug, Clone)]
pub struct GitOpsOptions {
    /// Watch local and file:// repositories for ref changes (default on).
    pub watch_local: bool,
    /// Where the push webhook listens (HTTP); `None` = no webhook endpoint (the default).
    pub webhook_listen: Option<SocketAddr>,
    /// Credentials and deadline for sync fetches.
    pub fetch: FetchOptions,
    /// Deadline for a fetch made while checking a proposed request (admission).
    pub verify_timeout: Duration,
    /// Quiet time after a ref change before the sync starts.
    pub debounce: Duration,
}

impl Default for GitOpsOptions {
    fn default() -> Self {
        GitOpsOptions {
            watch_local: true,
            webhook_listen: None,
            fetch: FetchOptions::default(),
            verify_timeout: Duration::from_secs(30),
            debounce: nexus_gitops::watch::DEFAULT_DEBOUNCE,
        }
    }
}

/// Why a sync ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Poll,
    Watch,
    Webhook,
    Manual,
    Drift,
    Config,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Poll => "poll",
            Why::Watch => "watch",
            Why::Webhook => "webhook",
            Why::Manual => "manual",
            Why::Drift => "drift",
            Why::Config => "config",
        }
    }
}

/// One source's runtime state.
pub(crate) struct SourceEntry {
    pub cfg: SourceConfig,
    pub status: SourceStatus,
    /// Wakes the worker; permits coalesce.
    pub wake: Arc<Notify>,
    pub why: Option<Why>,
    /// Syncs started, and the number of the last one finished.
    pub started: u64,
    pub done: watch::Sender<u64>,
    /// Objects this source owns (from its last sync): a change to one of them by anyone else
    /// wakes the source (drift).
    pub owned: BTreeSet<ObjectKey>,
    /// The manifests of the last recorded commit, kept as the drift baseline.
    pub last: Option<LastSync>,
    /// A head whose changes are left to the replica chosen to write them, and since when.
    pub waiting: Option<(String, std::time::Instant)>,
    pub poller: JoinHandle<()>,
    pub worker: JoinHandle<()>,
    pub watcher: Option<LocalWatcher>,
}

impl Drop for SourceEntry {
    fn drop(&mut self) {
        self.poller.abort();
        self.worker.abort();
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    pub sources: BTreeMap<SourceId, SourceEntry>,
}

/// The GitOps side of one replica.
pub struct GitOps {
    pub(crate) replica: String,
    pub(crate) actor: String,
    pub(crate) key: SigningKey,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) pool: Arc<mirrors::MirrorPool>,
    pub(crate) opts: GitOpsOptions,
    pub(crate) data_dir: PathBuf,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) seq: AtomicU64,
    events: mpsc::Sender<ChangeEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<ChangeEvent>>>,
    webhook_addr: Mutex<Option<SocketAddr>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
    stopped: AtomicBool,
}

impl GitOps {
    /// Sets up GitOps for a replica and installs the admission check on `ledger`. `key` is this
    /// replica's certificate key (its actor is `replica:<replica>`); mirrors live in
    /// `<data_dir>/gitops`. Must be called inside a tokio runtime; [`GitOps::start`] starts it.
    pub fn new(
        replica: String,
        key: SigningKey,
        ledger: Arc<Ledger>,
        data_dir: PathBuf,
        opts: GitOpsOptions,
    ) -> Arc<GitOps> {
        let pool = Arc::new(mirrors::MirrorPool::new(&data_dir.join("gitops")));
        let verify_fetch = FetchOptions {
            timeout: opts.verify_timeout,
            ..opts.fetch.clone()
        };
        ledger.set_admission(Arc::new(GitAdmission::new(pool.clone(), verify_fetch)));
        let (events, events_rx) = mpsc::channel(256);
        Arc::new(GitOps {
            actor: format!("replica:{replica}"),
            replica,
            key,
            ledger,
            pool,
            opts,
            data_dir,
            inner: Mutex::default(),
            seq: AtomicU64::new(0),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            webhook_addr: Mutex::new(None),
            tasks: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            stopped: AtomicBool::new(false),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the controller: sources from the committed state, then every committed entry;
    /// the webhook endpoint when configured. Returns the webhook's bound address.
    pub async fn start(
        self: &Arc<Self>,
        entries: broadcast::Receiver<Arc<Entry>>,
    ) -> std::io::Result<Option<SocketAddr>> {
        let mut tasks = Vec::new();
        if let Some(rx) = self
            .events_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tasks.push(tokio::spawn(self.clone().route_events(rx)));
        }
        let mut bound = None;
        if let Some(addr) = self.opts.webhook_listen {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            bound = listener.local_addr().ok();
            *self.webhook_addr.lock().unwrap_or_else(|e| e.into_inner()) = bound;
            let me = Arc::downgrade(self);
            let secrets: nexus_gitops::watch::webhook::SecretLookup =
                Arc::new(move |id: &SourceId| me.upgrade().and_then(|g| g.webhook_secret(id)));
            let tx = self.events.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = nexus_gitops::watch::serve_webhooks(
                    listener,
                    secrets,
                    tx,
                    WebhookConfig::default(),
                )
                .await
                {
                    tracing::error!("the git webhook endpoint stopped: {e}");
                }
            }));
            tracing::info!(addr = ?bound, "git webhook endpoint listening");
        }
        self.reconcile();
        tasks.push(tokio::spawn(self.clone().follow(entries)));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(bound)
    }

    /// Stops every task and watcher.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.lock().sources.clear();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The webhook endpoint's address, when it runs.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        *self.webhook_addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the `nexus.gitops.*` kinds to `router`.
    pub fn routes(self: &Arc<Self>, router: &mut Router) {
        handlers::routes(self, router);
    }

    /// The status of every source (sorted by namespace and name).
    pub fn statuses(&self) -> Vec<SourceStatus> {
        self.lock()
            .sources
            .values()
            .map(|e| e.status.clone())
            .collect()
    }

    /// Syncs `id` now and returns its status once a sync that started after this call
    /// finished. `Err` says why not (no such source, removed meanwhile, or `timeout`).
    pub async fn sync_now(
        self: &Arc<Self>,
        id: &SourceId,
        timeout: Duration,
    ) -> Result<SourceStatus, String> {
        // A source committed a moment ago may not have been picked up from the entry stream.
        if !self.lock().sources.contains_key(id) {
            self.reconcile();
        }
        let (mut done, target) = {
            let inner = self.lock();
            let e = inner
                .sources
                .get(id)
                .ok_or_else(|| format!("no git source {id}"))?;
            (e.done.subscribe(), e.started + 1)
        };
        self.wake(id, Why::Manual);
        match tokio::time::timeout(timeout, done.wait_for(|n| *n >= target)).await {
            Err(_) => {
                return Err(format!(
                    "the sync of {id} did not finish within {timeout:?}"
                ));
            }
            Ok(Err(_)) => return Err(format!("git source {id} was removed")),
            Ok(Ok(_)) => {}
        }
        self.lock()
            .sources
            .get(id)
            .map(|e| e.status.clone())
            .ok_or_else(|| format!("git source {id} was removed"))
    }

    /// Wakes a source's worker. False when there is no such source.
    pub(crate) fn wake(&self, id: &SourceId, why: Why) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.sources.get_mut(id) else {
            return false;
        };
        // A manual or webhook request is reported over a routine poll.
        if e.why.is_none() || matches!(why, Why::Manual | Why::Webhook) {
            e.why = Some(why);
        }
        e.wake.notify_one();
        true
    }

    /// Forwards poller, watcher and webhook events to the sources' workers.
    async fn route_events(self: Arc<Self>, mut rx: mpsc::Receiver<ChangeEvent>) {
        while let Some(ev) = rx.recv().await {
            let why = match ev.trigger {
                Trigger::Poll => Why::Poll,
                Trigger::LocalRefs => Why::Watch,
                Trigger::Webhook => Why::Webhook,
            };
            self.wake(&ev.source, why);
        }
    }

    /// Follows committed entries: GitSource changes reconcile the set of sources; a change to
    /// an object a source owns, made by anything but that source, wakes it (drift).
    async fn follow(self: Arc<Self>, mut entries: broadcast::Receiver<Arc<Entry>>) {
        loop {
            let entry = match entries.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed entries: look at everything again.
                    self.reconcile();
                    let ids: Vec<SourceId> = self.lock().sources.keys().cloned().collect();
                    for id in ids {
                        self.wake(&id, Why::Drift);
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if self.is_stopped() {
                return;
            }
            let mut sources_changed = false;
            let mut drifted: BTreeSet<SourceId> = BTreeSet::new();
            {
                let inner = self.lock();
                for e in &entry.events {
                    let Some(key) = e.body.object_key() else {
                        continue;
                    };
                    if key.kind == Kind::GitSource {
                        sources_changed = true;
                    }
                    let writer = entry.requests.get(e.request as usize).and_then(|r| {
                        match &r.request.source {
                            Source::Gitops { git_source, .. } => Some(git_source.clone()),
                            _ => None,
                        }
                    });
                    for (id, s) in &inner.sources {
                        if s.owned.contains(key) && writer.as_deref() != Some(&id.to_string()) {
                            drifted.insert(id.clone());
                        }
                    }
                }
            }
            if sources_changed {
                self.reconcile();
            }
            for id in drifted {
                self.wake(&id, Why::Drift);
            }
        }
    }

    /// Makes the running sources match the GitSource objects of the committed state.
    pub(crate) fn reconcile(self: &Arc<Self>) {
        if self.is_stopped() {
            return;
        }
        let desired: BTreeMap<SourceId, SourceConfig> = {
            let state = self.ledger.state();
            state
                .list(Kind::GitSource, None)
                .filter_map(|(_, o)| {
                    let obj: Object = serde_json::from_value(o.object.clone()).ok()?;
                    SourceConfig::from_object(&obj)
                })
                .map(|c| (c.id.clone(), c))
                .collect()
        };
        let _guard = self.runtime.enter();
        let mut inner = self.lock();
        inner.sources.retain(|id, _| desired.contains_key(id));
        for (id, cfg) in desired {
            match inner.sources.get_mut(&id) {
                Some(e) if e.cfg == cfg => {}
                Some(e) => {
                    let restart = e.cfg.spec.url != cfg.spec.url
                        || e.cfg.interval() != cfg.interval()
                        || e.cfg.spec.branch != cfg.spec.branch;
                    if restart {
                        e.poller.abort();
                        e.poller = spawn_poller(id.clone(), cfg.interval(), self.events.clone());
                        e.watcher = None;
                        e.last = None;
                    }
                    e.status = status::initial(&cfg, &e.status, self.triggers(&cfg));
                    e.cfg = cfg;
                    e.why = Some(Why::Config);
                    e.wake.notify_one();
                }
                None => {
                    let wake = Arc::new(Notify::new());
                    let worker = tokio::spawn(self.clone().worker(id.clone(), wake.clone()));
                    let poller = spawn_poller(id.clone(), cfg.interval(), self.events.clone());
                    let status =
                        status::initial(&cfg, &SourceStatus::default(), self.triggers(&cfg));
                    inner.sources.insert(
                        id,
                        SourceEntry {
                            cfg,
                            status,
                            wake,
                            why: Some(Why::Config),
                            started: 0,
                            done: watch::channel(0).0,
                            owned: BTreeSet::new(),
                            last: None,
                            waiting: None,
                            poller,
                            worker,
                            watcher: None,
                        },
                    );
                }
            }
        }
    }

    /// What wakes a source, for its status.
    fn triggers(&self, cfg: &SourceConfig) -> Vec<String> {
        let mut t = vec![format!(
            "poll {}",
            nexus_schemas::quantity::canonical_duration(cfg.interval().as_millis() as u64)
        )];
        if self.opts.watch_local && is_local(&cfg.spec.url) {
            t.push("watch".into());
        }
        if cfg.spec.webhook_secret_file.is_some() && self.opts.webhook_listen.is_some() {
            t.push("webhook".into());
        }
        t
    }

    /// The webhook secret of a source, read from its file on every request (so it can be
    /// rotated without a restart); `None` when there is no such source or secret.
    fn webhook_secret(&self, id: &SourceId) -> Option<Vec<u8>> {
        let file = self
            .lock()
            .sources
            .get(id)?
            .cfg
            .spec
            .webhook_secret_file
            .clone()?;
        let path = self.data_dir.join(&file); // an absolute `file` replaces the base
        match std::fs::read(&path) {
            Ok(mut bytes) => {
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                (!bytes.is_empty()).then_some(bytes)
            }
            Err(e) => {
                tracing::warn!(source = %id, path = %path.display(), "cannot read the webhook secret: {e}");
                None
            }
        }
    }

    /// Starts the notify watcher of a local repository once its git directory exists.
    pub(crate) fn ensure_watcher(&self, id: &SourceId, git_dir: &std::path::Path) {
        if !self.opts.watch_local {
            return;
        }
        let _guard = self.runtime.enter();
        let mut inner = self.lock();
        let Some(e) = inner.sources.get_mut(id) else {
            return;
        };
        if e.watcher.is_some() {
            return;
        }
        match LocalWatcher::spawn(id.clone(), git_dir, self.opts.debounce, self.events.clone()) {
            Ok(w) => e.watcher = Some(w),
            Err(err) => tracing::warn!(source = %id, "cannot watch the repository: {err}"),
        }
    }
}

/// Whether a URL names a repository on this machine (watched with notify).
pub(crate) fn is_local(url: &str) -> bool {
    RepoUrl::parse(url).is_ok_and(|u| u.local_path.is_some())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
