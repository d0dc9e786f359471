//! A notify (inotify) watcher on a local repository's refs (`refs/` recursively, `packed-refs`,
//! `HEAD`), debounced: a burst of file events from one `git push` becomes one [`ChangeEvent`]
//! shortly after the burst ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ChangeEvent, Trigger};
use crate::source::SourceId;

/// Quiet time after the last file event before the change is reported.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Upper bound on how long a continuous stream of events can delay the report.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The watcher could not start.
#[derive(Debug, Error)]
#[error("cannot watch {path}: {message}")]
pub struct WatchError {
    pub path: PathBuf,
    pub message: String,
}

/// A running watcher; dropping it stops watching.
pub struct LocalWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LocalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWatcher").finish_non_exhaustive()
    }
}

impl Drop for LocalWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a changed path is a ref (and not an object, the index or a log).
fn is_ref_path(git_dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(git_dir) else {
        return false;
    };
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    matches!(first.as_deref(), Some("refs" | "packed-refs" | "HEAD"))
}

impl LocalWatcher {
    /// Watches the repository whose git directory is `git_dir` (a bare repository, or the `.git`
    /// of a clone; see [`crate::GitRepo::git_dir`]). Must be called inside a tokio runtime.
    pub fn spawn(
        source: SourceId,
        git_dir: &Path,
        debounce: Duration,
        tx: mpsc::Sender<ChangeEvent>,
    ) -> Result<LocalWatcher, WatchError> {
        let git_dir = git_dir.canonicalize().map_err(|e| WatchError {
            path: git_dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
        let dir = git_dir.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening and reading files (including notify's own directory walk) is not a change.
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
                && ev.paths.iter().any(|p| is_ref_path(&dir, p))
            {
                let _ = raw_tx.send(());
            }
        })
        .map_err(|e| WatchError {
            path: git_dir.clone(),
            message: e.to_string(),
        })?;
        let err = |path: &Path, e: notify::Error| WatchError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        watcher
            .watch(&git_dir, RecursiveMode::NonRecursive)
            .map_err(|e| err(&git_dir, e))?;
        let refs = git_dir.join("refs");
        watcher
            .watch(&refs, RecursiveMode::Recursive)
            .map_err(|e| err(&refs, e))?;
        let task = tokio::spawn(async move {
            while raw_rx.recv().await.is_some() {
                let deadline = tokio::time::Instant::now() + MAX_DELAY;
                // Wait for a quiet period (or the upper bound), swallowing the burst.
                loop {
                    let wait = debounce
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    match tokio::time::timeout(wait, raw_rx.recv()).await {
                        Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                        Ok(None) => return,
                        _ => break,
                    }
                }
                let event = ChangeEvent {
                    source: source.clone(),
                    trigger: Trigger::LocalRefs,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(LocalWatcher {
            _watcher: watcher,
            task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ref_paths_count() {
        let g = Path::new("/r/repo.git");
        assert!(is_ref_path(g, Path::new("/r/repo.git/refs/heads/main")));
        assert!(is_ref_path(
            g,
            Path::new("/r/repo.git/refs/heads/main.lock")
        ));
        assert!(is_ref_path(g, Path::new("/r/repo.git/packed-refs")));
        assert!(is_ref_path(g, Path::new("/r/repo.git/HEAD")));
        assert!(!is_ref_path(g, Path::new("/r/repo.git/objects/ab/cdef")));
        assert!(!is_ref_path(
            g,
            Path::new("/r/repo.git/logs/refs/heads/main")
        ));
        assert!(!is_ref_path(g, Path::new("/elsewhere/refs/heads/main")));
    }
}
