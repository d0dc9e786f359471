//! This replica's git mirrors, one per repository URL, shared by the sync controller and the
//! admission check. git2 repositories are `Send` but not `Sync`, so each mirror sits behind its
//! own mutex: a fetch of one repository never waits for another. Blocking: call from blocking
//! threads only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use nexus_gitops::{GitError, Mirror, Mirrors};

/// A mirror and its lock.
pub(crate) type SharedMirror = Arc<Mutex<Mirror>>;

/// Opened mirrors by URL.
pub(crate) struct MirrorPool {
    mirrors: Mirrors,
    open: Mutex<HashMap<String, SharedMirror>>,
}

impl MirrorPool {
    /// Mirrors under `<state_dir>/git`.
    pub fn new(state_dir: &Path) -> MirrorPool {
        MirrorPool {
            mirrors: Mirrors::new(state_dir),
            open: Mutex::default(),
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
}

/// Locks a mirror (a panic while holding it leaves a usable cache, so poisoning is ignored).
pub(crate) fn lock(m: &SharedMirror) -> MutexGuard<'_, Mirror> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
