//! This replica's git mirrors, one per repository URL, shared by the sync controller and the
//! admission check. git2 repositories are `Send` but not `Sync`, so each mirror sits behind its
//! own mutex: a fetch of one repository never waits for another. Blocking: call from blocking
//! threads only.
//!
//! The pool also remembers the validated manifests of the last few commits this replica read
//! from its own mirrors (keyed by URL, commit and path): the sync that planned a commit and the
//! admission check of a request for that commit then validate its manifests once, not twice.
//! A commit's content never changes, and nothing from another replica enters this cache.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use nexus_gitops::{GitError, ManifestSet, Mirror, Mirrors};

/// A mirror and its lock.
pub(crate) type SharedMirror = Arc<Mutex<Mirror>>;

/// Validated commits remembered (a large repository's set is tens of MiB; the sync worker keeps
/// the last synced one anyway, so the cache mostly shares it).
const MANIFESTS_REMEMBERED: usize = 4;

/// (url, commit, normalized path).
type ManifestKey = (String, String, String);

/// Opened mirrors by URL.
pub(crate) struct MirrorPool {
    mirrors: Mirrors,
    open: Mutex<HashMap<String, SharedMirror>>,
    manifests: Mutex<VecDeque<(ManifestKey, Arc<ManifestSet>)>>,
}

impl MirrorPool {
    /// Mirrors under `<state_dir>/git`.
    pub fn new(state_dir: &Path) -> MirrorPool {
        MirrorPool {
            mirrors: Mirrors::new(state_dir),
            open: Mutex::default(),
            manifests: Mutex::default(),
        }
    }

    /// The mirror of `url`, opened (and created) on first use.
    pub fn get(&self, url: &str) -> Result<SharedMirror, GitError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = open.get(url) {
            return Ok(m.clone());
        }
        let m = Arc::new(Mutex::new(self.mirrors.open(url)?));
        open.insert(url.to_string(), m.clone());
        Ok(m)
    }

    /// Remembers the manifests this replica read and validated from its own mirror of `url` at
    /// `commit` under `path`. Only ever call it with such manifests.
    pub fn remember_manifests(&self, url: &str, commit: &str, path: &str, set: Arc<ManifestSet>) {
        let key = (url.to_string(), commit.to_string(), path.to_string());
        let mut m = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(k, _)| *k != key);
        if m.len() >= MANIFESTS_REMEMBERED {
            m.pop_front();
        }
        m.push_back((key, set));
    }

    /// Manifests remembered for (`url`, `commit`, `path`).
    pub fn known_manifests(&self, url: &str, commit: &str, path: &str) -> Option<Arc<ManifestSet>> {
        let m = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .find(|((u, c, p), _)| u == url && c == commit && p == path)
            .map(|(_, s)| s.clone())
    }
}

/// Locks a mirror (a panic while holding it leaves a usable cache, so poisoning is ignored).
pub(crate) fn lock(m: &SharedMirror) -> MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
