//! `nexus up` and git sources: a GitSource whose URL is a relative local path (`./repos/x.git`)
//! is resolved against the cluster directory, and a repository missing there is created (bare,
//! with a first commit holding the source's path: a README and a small workload), so the example
//! source syncs out of the box and `git clone` + `git push` is all it takes to deploy.

use std::path::{Component, Path, PathBuf};

use git2::{Repository, Signature};
use serde_json::{Value, json};

/// A relative local URL (`./x`, `../x`), which replicas would resolve against their own working
/// directory.
fn relative_local(url: &str) -> bool {
    url.starts_with("./") || url.starts_with("../")
}

/// `base/rel` without `.` and `..` components.
fn join_clean(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(rel).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Resolves relative GitSource URLs in `objects` (canonical JSON) against `dir` and creates the
/// repositories that do not exist yet. Returns one line per repository created.
pub fn provision(dir: &Path, objects: &mut [Value]) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    for obj in objects.iter_mut() {
        if obj["kind"] != "GitSource" {
            continue;
        }
        let Some(url) = obj["spec"]["url"].as_str().map(str::to_string) else {
            continue;
        };
        if !relative_local(&url) {
            continue;
        }
        let path = join_clean(dir, &url);
        obj["spec"]["url"] = json!(format!("file://{}", path.display()));
        if path.exists() {
            continue;
        }
        let branch = obj["spec"]["branch"].as_str().unwrap_or("main").to_string();
        let sub = obj["spec"]["path"].as_str().unwrap_or(".").to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or("source")
            .to_string();
        seed(&path, &branch, &sub)
            .map_err(|e| format!("cannot create the repository {}: {e}", path.display()))?;
        notes.push(format!(
            "created git repository {} for source {name}: `git clone {}`, edit {}/, push; the cluster follows",
            path.display(),
            path.display(),
            nexus_gitops::source::normalize_path(&sub)
        ));
    }
    Ok(notes)
}

const README: &str = "# Cluster configuration\n\nManifests in this directory are applied by the \
GitSource that follows this repository: push a change and the cluster converges within a \
second (`nexus gitops status` shows the synced commit, errors with file:line:col, and drift). \
Files deleted here are deleted from the cluster when the source has `prune: true`.\n";

const HELLO: &str = r#"# Deployed from git: edit, commit and push to change it.
apiVersion: nexus/v1
kind: Workload
metadata:
  name: hello
  labels:
    app: hello
spec:
  replicas: 1
  command: ["python3", "-m", "http.server", "9090", "--bind", "0.0.0.0"]
  ports:
    - name: http
      port: 9090
  resources:
    cpu: 50m
    memory: 32Mi
"#;

/// A bare repository at `path` whose `branch` has one commit with `sub/README.md` and
/// `sub/hello.yaml`.
fn seed(path: &Path, branch: &str, sub: &str) -> Result<(), git2::Error> {
    std::fs::create_dir_all(path).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    let repo = Repository::init_bare(path)?;
    let files = [("README.md", README), ("hello.yaml", HELLO)];
    let mut leaf = repo.treebuilder(None)?;
    for (name, text) in files {
        leaf.insert(name, repo.blob(text.as_bytes())?, 0o100644)?;
    }
    let mut tree = leaf.write()?;
    let dirs: Vec<&str> = sub
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    for d in dirs.iter().rev() {
        let mut parent = repo.treebuilder(None)?;
        parent.insert(d, tree, 0o040000)?;
        tree = parent.write()?;
    }
    let tree = repo.find_tree(tree)?;
    let sig = Signature::now("nexus up", "nexus@localhost")?;
    let refname = format!("refs/heads/{branch}");
    repo.commit(
        Some(&refname),
        &sig,
        &sig,
        "Initial cluster configuration",
        &tree,
        &[],
    )?;
    repo.set_head(&refname)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_sources_get_a_seeded_repository() {
        let dir = tempfile::tempdir().unwrap();
        let mut objs = vec![
            json!({"kind": "GitSource", "metadata": {"name": "platform-config"},
                   "spec": {"url": "./repos/platform-config.git", "branch": "main", "path": "deploy"}}),
            json!({"kind": "GitSource", "metadata": {"name": "remote"},
                   "spec": {"url": "https://git.example.com/x.git"}}),
            json!({"kind": "Workload", "metadata": {"name": "w"}, "spec": {}}),
        ];
        let notes = provision(dir.path(), &mut objs).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        let path = dir.path().join("repos/platform-config.git");
        assert_eq!(objs[0]["spec"]["url"], format!("file://{}", path.display()));
        assert_eq!(objs[1]["spec"]["url"], "https://git.example.com/x.git");
        // The seeded commit holds valid manifests under the source's path.
        let repo = nexus_gitops::GitRepo::open(&path).unwrap();
        let head = repo.branch_head("main").unwrap();
        let snap = repo.read_commit(&head, "deploy", "x").unwrap();
        let set = nexus_gitops::ManifestSet::of_snapshot(&snap);
        assert!(!set.has_errors(), "{:?}", set.diagnostics);
        assert_eq!(set.objects.len(), 1);
        // A second run leaves the repository alone.
        let mut again = objs[..1].to_vec();
        again[0]["spec"]["url"] = json!("./repos/platform-config.git");
        assert!(provision(dir.path(), &mut again).unwrap().is_empty());
    }
}
