//! Repository access with git2: a bare mirror per source URL under a state directory, fetching a
//! branch (local paths, file://, https://, ssh://) with credentials and a deadline, resolving
//! revisions, and telling a fast-forward from a force-push. Reading trees is in [`tree`].

pub mod tree;
pub mod url;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use git2::{AutotagOption, FetchPrune, Oid, RemoteCallbacks, Repository};
use thiserror::Error;

pub use self::url::{BadUrl, RepoUrl, Transport};

/// Fetch deadline used when none is given.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// What can go wrong talking to git.
#[derive(Debug, Error)]
pub enum GitError {
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error("cannot prepare the mirror at {path}: {message}")]
    Mirror { path: PathBuf, message: String },
    #[error("cannot open repository {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("fetching {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("fetching {url} did not finish within {}s", timeout.as_secs())]
    Timeout { url: String, timeout: Duration },
    #[error("branch {branch:?} does not exist in {url}")]
    BranchNotFound { url: String, branch: String },
    #[error("revision {rev:?} does not name a commit: {message}")]
    RevNotFound { rev: String, message: String },
    #[error("commit {commit} is not in the repository {url}")]
    CommitNotFound { url: String, commit: String },
    #[error("path {path:?} does not exist at commit {commit}")]
    PathNotFound { path: String, commit: String },
    #[error("path {path:?} at commit {commit} is not a directory")]
    PathNotDirectory { path: String, commit: String },
    #[error("reading {what} failed: {message}")]
    Read { what: String, message: String },
}

/// Credentials for remote repositories.
#[derive(Debug, Clone, Default)]
pub struct GitAuth {
    /// Private key file for ssh:// (the public key is expected next to it as `<file>.pub` if the
    /// key is encrypted; unencrypted keys need only the private file).
    pub ssh_key: Option<PathBuf>,
    /// Try the ssh agent (`SSH_AUTH_SOCK`) for ssh://.
    pub ssh_agent: bool,
    /// User name and password or token for https://.
    pub https: Option<(String, String)>,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub auth: GitAuth,
    /// The whole fetch is abandoned after this long.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            auth: GitAuth::default(),
            timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }
}

/// How a branch head moved since the last synced commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadMove {
    /// Nothing was synced before.
    Initial,
    /// Same commit as last time.
    Unchanged,
    /// The new head descends from the last synced commit.
    FastForward,
    /// History was rewritten: the last synced commit is not an ancestor of the new head.
    ForcePush,
    /// The last synced commit is not in the mirror any more, so the relation is unknown.
    Unknown,
}

/// A repository opened with git2: a mirror, or a user's clone for `nexus plan`.
pub struct GitRepo {
    repo: Repository,
    /// Label used in errors and provenance.
    label: String,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("path", &self.repo.path())
            .finish()
    }
}

impl GitRepo {
    /// Opens an existing repository (bare or with a work tree) at `path`.
    pub fn open(path: &Path) -> Result<GitRepo, GitError> {
        let repo = Repository::open(path).map_err(|e| GitError::Open {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        Ok(GitRepo {
            repo,
            label: path.display().to_string(),
        })
    }

    /// The underlying git2 repository.
    pub fn raw(&self) -> &Repository {
        &self.repo
    }

    /// The git directory (`.git` of a clone, the repository itself when bare).
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// The commit a revision names (`main`, `origin/main`, `HEAD~1`, a hash), as full hex.
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        let not_found = |e: git2::Error| GitError::RevNotFound {
            rev: rev.to_string(),
            message: e.message().to_string(),
        };
        let obj = self.repo.revparse_single(rev).map_err(not_found)?;
        let commit = obj.peel_to_commit().map_err(not_found)?;
        Ok(commit.id().to_string())
    }

    /// The commit at `refs/heads/<branch>`.
    pub fn branch_head(&self, branch: &str) -> Result<String, GitError> {
        let r = self
            .repo
            .find_reference(&format!("refs/heads/{branch}"))
            .map_err(|_| GitError::BranchNotFound {
                url: self.label.clone(),
                branch: branch.to_string(),
            })?;
        let commit = r.peel_to_commit().map_err(|e| GitError::Read {
            what: format!("branch {branch}"),
            message: e.message().to_string(),
        })?;
        Ok(commit.id().to_string())
    }

    /// Whether the commit exists here.
    pub fn has_commit(&self, commit: &str) -> bool {
        Oid::from_str(commit)
            .ok()
            .and_then(|oid| self.repo.find_commit(oid).ok())
            .is_some()
    }

    /// How the head moved from `previous` (the last synced commit) to `new`.
    pub fn head_move(&self, previous: Option<&str>, new: &str) -> HeadMove {
        let Some(prev) = previous else {
            return HeadMove::Initial;
        };
        if prev == new {
            return HeadMove::Unchanged;
        }
        let (Ok(p), Ok(n)) = (Oid::from_str(prev), Oid::from_str(new)) else {
            return HeadMove::Unknown;
        };
        if self.repo.find_commit(p).is_err() {
            return HeadMove::Unknown;
        }
        match self.repo.graph_descendant_of(n, p) {
            Ok(true) => HeadMove::FastForward,
            Ok(false) => HeadMove::ForcePush,
            Err(_) => HeadMove::Unknown,
        }
    }

    /// Whether `commit` is `head` or one of its ancestors.
    pub fn is_reachable_from(&self, commit: &str, head: &str) -> bool {
        match (Oid::from_str(commit), Oid::from_str(head)) {
            (Ok(c), Ok(h)) => c == h || self.repo.graph_descendant_of(h, c).unwrap_or(false),
            _ => false,
        }
    }
}

/// The state directory that holds one bare mirror per repository URL (`<state>/git/<name>.git`).
#[derive(Debug, Clone)]
pub struct Mirrors {
    root: PathBuf,
}

impl Mirrors {
    /// Mirrors under `<state_dir>/git`.
    pub fn new(state_dir: impl AsRef<Path>) -> Self {
        Mirrors {
            root: state_dir.as_ref().join("git"),
        }
    }

    /// Opens the mirror of `url`, creating an empty bare repository the first time. A mirror
    /// that does not open (a crash while creating it) is recreated: it is only a cache.
    pub fn open(&self, url: &str) -> Result<Mirror, GitError> {
        let url = RepoUrl::parse(url)?;
        let dir = self.root.join(url.mirror_dir_name());
        let mirror_err = |message: String| GitError::Mirror {
            path: dir.clone(),
            message,
        };
        let repo = match Repository::open_bare(&dir) {
            Ok(r) => r,
            Err(_) => {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| mirror_err(e.to_string()))?;
                }
                std::fs::create_dir_all(&dir).map_err(|e| mirror_err(e.to_string()))?;
                Repository::init_bare(&dir).map_err(|e| mirror_err(e.message().to_string()))?
            }
        };
        Ok(Mirror {
            repo: GitRepo {
                repo,
                label: url.original.clone(),
            },
            url,
            dir,
        })
    }
}

/// A bare mirror of one repository URL.
#[derive(Debug)]
pub struct Mirror {
    repo: GitRepo,
    url: RepoUrl,
    dir: PathBuf,
}

impl std::ops::Deref for Mirror {
    type Target = GitRepo;
    fn deref(&self) -> &GitRepo {
        &self.repo
    }
}

impl Mirror {
    /// The parsed URL.
    pub fn url(&self) -> &RepoUrl {
        &self.url
    }

    /// The mirror's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fetches `branch` from the remote (force-updating `refs/heads/<branch>`, so a rewritten
    /// history replaces the old one) and returns its head commit. A branch that disappeared
    /// upstream is an error and its stale local ref is removed.
    pub fn fetch_branch(&self, branch: &str, opts: &FetchOptions) -> Result<String, GitError> {
        set_global_timeouts();
        let url = &self.url;
        let fetch_err = |e: git2::Error| GitError::Fetch {
            url: url.original.clone(),
            message: e.message().to_string(),
        };
        let mut remote = self
            .repo
            .repo
            .remote_anonymous(&url.fetch_url)
            .map_err(fetch_err)?;
        let deadline = Instant::now() + opts.timeout;
        let timed_out = Cell::new(false);
        let mut callbacks = RemoteCallbacks::new();
        let attempts = Cell::new(0u32);
        let auth = opts.auth.clone();
        callbacks.credentials(move |_url, user, allowed| {
            attempts.set(attempts.get() + 1);
            credentials(&auth, user, allowed, attempts.get())
        });
        callbacks.transfer_progress(|_| {
            let ok = Instant::now() < deadline;
            if !ok {
                timed_out.set(true);
            }
            ok
        });
        callbacks.sideband_progress(|_| Instant::now() < deadline);
        let mut fo = git2::FetchOptions::new();
        fo.remote_callbacks(callbacks)
            .download_tags(AutotagOption::None)
            .prune(FetchPrune::Off)
            .update_fetchhead(false);
        let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        let result = remote.fetch(&[refspec.as_str()], Some(&mut fo), None);
        if timed_out.get() {
            return Err(GitError::Timeout {
                url: url.original.clone(),
                timeout: opts.timeout,
            });
        }
        let wanted = format!("refs/heads/{branch}");
        let upstream_has_branch = remote
            .list()
            .map(|heads| heads.iter().any(|h| h.name() == wanted))
            .unwrap_or(true);
        if !upstream_has_branch {
            if let Ok(mut stale) = self.repo.repo.find_reference(&wanted) {
                let _ = stale.delete();
            }
            return Err(GitError::BranchNotFound {
                url: url.original.clone(),
                branch: branch.to_string(),
            });
        }
        result.map_err(fetch_err)?;
        self.repo
            .branch_head(branch)
            .map_err(|_| GitError::BranchNotFound {
                url: url.original.clone(),
                branch: branch.to_string(),
            })
    }
}

fn credentials(
    auth: &GitAuth,
    user: Option<&str>,
    allowed: git2::CredentialType,
    attempt: u32,
) -> Result<git2::Cred, git2::Error> {
    if attempt > 3 {
        return Err(git2::Error::from_str(
            "authentication failed (credentials were rejected)",
        ));
    }
    let user = user.unwrap_or("git");
    if allowed.contains(git2::CredentialType::SSH_KEY) {
        if let Some(key) = &auth.ssh_key {
            return git2::Cred::ssh_key(user, None, key, None);
        }
        if auth.ssh_agent {
            return git2::Cred::ssh_key_from_agent(user);
        }
    }
    if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
        && let Some((u, p)) = &auth.https
    {
        return git2::Cred::userpass_plaintext(u, p);
    }
    if allowed.contains(git2::CredentialType::USERNAME) {
        return git2::Cred::username(user);
    }
    Err(git2::Error::from_str(
        "the server asks for credentials and none are configured",
    ))
}

/// Connect and read timeouts for network transports (libgit2 waits forever by default).
fn set_global_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: these set process-wide libgit2 options; `Once` makes them run once, before any
        // fetch in this crate, and no other code in nexus changes them.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(15_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        }
    });
}
