//! Reading a commit: its metadata (the provenance), the tree id at the source's path, and every
//! `*.yaml` / `*.yml` blob under that path, recursively and sorted, as `SourceFile`s named by their
//! path in the repository. Directories and files whose name starts with `.` (`.github/`,
//! `.gitea/`, `.nexus.yaml`) are skipped so CI configuration is never read as a manifest.

use git2::{ObjectType, Oid, TreeWalkMode, TreeWalkResult};
use nexus_schemas::SourceFile;
use nexus_schemas::validate::MAX_FILE_BYTES;

use super::{GitError, GitRepo};
use crate::snapshot::{CommitSnapshot, GitProvenance};
use crate::source::normalize_path;

/// Commit metadata, without the manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub commit: String,
    pub root_tree: String,
    pub author: String,
    pub committer: String,
    pub message: String,
    /// Committer time, seconds since the epoch.
    pub time: i64,
}

/// Whether a file name is a manifest by its extension.
pub fn is_manifest_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

impl GitRepo {
    fn find_commit(&self, commit: &str) -> Result<git2::Commit<'_>, GitError> {
        let missing = || GitError::CommitNotFound {
            url: self.label.clone(),
            commit: commit.to_string(),
        };
        let oid = Oid::from_str(commit).map_err(|_| missing())?;
        self.repo.find_commit(oid).map_err(|_| missing())
    }

    /// Metadata of a commit.
    pub fn commit_info(&self, commit: &str) -> Result<CommitInfo, GitError> {
        let c = self.find_commit(commit)?;
        let person = |s: git2::Signature<'_>| {
            format!(
                "{} <{}>",
                String::from_utf8_lossy(s.name_bytes()),
                String::from_utf8_lossy(s.email_bytes())
            )
        };
        Ok(CommitInfo {
            commit: c.id().to_string(),
            root_tree: c.tree_id().to_string(),
            author: person(c.author()),
            committer: person(c.committer()),
            message: String::from_utf8_lossy(c.message_bytes()).into_owned(),
            time: c.time().seconds(),
        })
    }

    /// What a ledger entry records about `commit` for a source reading `path` of `repo_url`,
    /// without reading the manifests (the `tree` is the one at `path`).
    pub fn provenance(
        &self,
        commit: &str,
        path: &str,
        repo_url: &str,
    ) -> Result<GitProvenance, GitError> {
        let info = self.commit_info(commit)?;
        Ok(GitProvenance {
            repo: repo_url.to_string(),
            commit: info.commit,
            tree: self.tree_id_at(commit, path)?,
            author: info.author,
            committer: info.committer,
            message: info.message,
        })
    }

    /// The id of the tree at `path` (normalized; `""` = root) in `commit`.
    pub fn tree_id_at(&self, commit: &str, path: &str) -> Result<String, GitError> {
        Ok(self.subtree(commit, path)?.id().to_string())
    }

    fn subtree(&self, commit: &str, path: &str) -> Result<git2::Tree<'_>, GitError> {
        let c = self.find_commit(commit)?;
        let read_err = |e: git2::Error| GitError::Read {
            what: format!("the tree of {commit}"),
            message: e.message().to_string(),
        };
        let root = c.tree().map_err(read_err)?;
        let path = normalize_path(path);
        if path.is_empty() {
            return Ok(root);
        }
        let entry =
            root.get_path(std::path::Path::new(&path))
                .map_err(|_| GitError::PathNotFound {
                    path: path.clone(),
                    commit: commit.to_string(),
                })?;
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(GitError::PathNotDirectory {
                path,
                commit: commit.to_string(),
            });
        }
        self.repo.find_tree(entry.id()).map_err(read_err)
    }

    /// Reads the manifests under `path` at `commit`. `repo_url` is what the provenance records.
    pub fn read_commit(
        &self,
        commit: &str,
        path: &str,
        repo_url: &str,
    ) -> Result<CommitSnapshot, GitError> {
        let info = self.commit_info(commit)?;
        let path = normalize_path(path);
        let tree = self.subtree(commit, &path)?;
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        // Collect (path, blob id) first; the walk callback cannot return errors.
        let mut blobs: Vec<(String, Oid)> = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
            let name = String::from_utf8_lossy(entry.name_bytes());
            if name.starts_with('.') {
                return TreeWalkResult::Skip;
            }
            // Regular files only: symlinks (0o120000) and submodules are not manifests.
            let regular = matches!(entry.filemode(), 0o100644 | 0o100755);
            if entry.kind() == Some(ObjectType::Blob) && regular && is_manifest_name(&name) {
                blobs.push((format!("{prefix}{dir}{name}"), entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| GitError::Read {
            what: format!("the tree at {path:?} in {commit}"),
            message: e.message().to_string(),
        })?;
        blobs.sort();
        let odb = self.repo.odb().map_err(|e| GitError::Read {
            what: "the object database".into(),
            message: e.message().to_string(),
        })?;
        let mut files = Vec::with_capacity(blobs.len());
        for (name, oid) in blobs {
            let read_err = |e: git2::Error| GitError::Read {
                what: name.clone(),
                message: e.message().to_string(),
            };
            let (size, _) = odb.read_header(oid).map_err(read_err)?;
            if size > MAX_FILE_BYTES {
                // The validator reports the size; do not load the blob.
                files.push(SourceFile {
                    name,
                    text: String::new(),
                    invalid_utf8_at: None,
                    size,
                });
                continue;
            }
            let blob = self.repo.find_blob(oid).map_err(read_err)?;
            files.push(SourceFile::from_bytes(name, blob.content().to_vec()));
        }
        Ok(CommitSnapshot {
            provenance: GitProvenance {
                repo: repo_url.to_string(),
                commit: info.commit,
                tree: tree.id().to_string(),
                author: info.author,
                committer: info.committer,
                message: info.message,
            },
            path,
            root_tree: info.root_tree,
            commit_time: info.time,
            files,
        })
    }
}
