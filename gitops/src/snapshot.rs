//! Plain data read from git: the provenance a synced commit carries into the ledger, a commit's
//! manifests (`CommitSnapshot`), and the validated desired objects (`ManifestSet`) that sync,
//! verification and `nexus plan` compare against live objects.

use std::collections::BTreeMap;

use nexus_schemas::canonical::write_sorted;
use nexus_schemas::{
    ContentHash, Diagnostic, ObjectKey, SourceFile, canonical_value, validate_sources,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// What a git-sourced ledger entry records about its commit (DESIGN.md BFT rule 3). Field names
/// match the ledger's `Source::Gitops`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitProvenance {
    /// The repository URL as the GitSource spells it.
    pub repo: String,
    /// Full commit id (hex).
    pub commit: String,
    /// Id of the tree at the source's `path` in that commit (the root tree when the path is the
    /// whole repository).
    pub tree: String,
    /// `Name <email>`.
    pub author: String,
    /// `Name <email>`.
    pub committer: String,
    /// The full commit message.
    pub message: String,
}

/// The manifests of one commit under a source's path.
#[derive(Debug, Clone)]
pub struct CommitSnapshot {
    pub provenance: GitProvenance,
    /// The normalized path inside the repository (`""` = whole tree).
    pub path: String,
    /// Id of the commit's root tree.
    pub root_tree: String,
    /// Committer time, seconds since the epoch.
    pub commit_time: i64,
    /// Every `*.yaml` / `*.yml` blob under `path`, sorted by path, named by their path in the
    /// repository (`deploy/apps/api.yaml`) so diagnostics point into the repo.
    pub files: Vec<SourceFile>,
}

/// One desired object from git, in canonical form, with where it was defined.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// Canonical JSON (defaults explicit, keys sorted when rendered).
    pub value: Json,
    /// blake3 of the canonical JSON; equals `nexus_schemas::content_hash` of the object.
    pub hash: ContentHash,
    /// File inside the repository (empty when not from git).
    pub file: String,
    /// 1-based line of `metadata.name` (0 when unknown).
    pub line: usize,
}

/// A (key, content hash) pair: what a proposer claims git holds, and what a replica recomputes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimedObject {
    pub key: ObjectKey,
    /// Lower-case hex of the content hash.
    pub hash: String,
}

/// The validated objects of a commit. An invalid commit still yields the objects that parsed,
/// but [`ManifestSet::has_errors`] is true and sync rejects the commit whole.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    pub objects: BTreeMap<ObjectKey, DesiredObject>,
    /// Errors and warnings, ordered by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl ManifestSet {
    /// Parses and validates `files` with the schemas validator.
    pub fn validate(files: &[SourceFile]) -> ManifestSet {
        let v = validate_sources(files);
        let objects = v
            .objects
            .into_iter()
            .map(|p| {
                let value = canonical_value(&p.object);
                let hash = hash_json(&value);
                (
                    p.object.key(),
                    DesiredObject {
                        value,
                        hash,
                        file: p.origin.file_name,
                        line: p.origin.line,
                    },
                )
            })
            .collect();
        ManifestSet {
            objects,
            diagnostics: v.diagnostics,
        }
    }

    /// The manifests of a commit snapshot.
    pub fn of_snapshot(snapshot: &CommitSnapshot) -> ManifestSet {
        ManifestSet::validate(&snapshot.files)
    }

    /// Wraps canonical objects kept elsewhere (for example the content a source wrote at its last
    /// synced commit, as recorded in the ledger).
    pub fn from_canonical(objects: BTreeMap<ObjectKey, Json>) -> ManifestSet {
        let objects = objects
            .into_iter()
            .map(|(k, value)| {
                let hash = hash_json(&value);
                (
                    k,
                    DesiredObject {
                        value,
                        hash,
                        file: String::new(),
                        line: 0,
                    },
                )
            })
            .collect();
        ManifestSet {
            objects,
            diagnostics: Vec::new(),
        }
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// Every object as (key, content hash), sorted by key.
    pub fn claim(&self) -> Vec<ClaimedObject> {
        self.objects
            .iter()
            .map(|(key, o)| ClaimedObject {
                key: key.clone(),
                hash: o.hash.to_hex(),
            })
            .collect()
    }
}

/// The digest of a claim, as a git-sourced ledger entry records it: blake3 (hex) of one
/// `Kind/namespace/name <hash>` line per object, in key order. Equal sets give equal digests
/// whatever order the claim lists them in; a duplicated key changes the digest.
pub fn claim_digest(claim: &[ClaimedObject]) -> String {
    let mut sorted: Vec<&ClaimedObject> = claim.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    for c in sorted {
        let line = format!(
            "{}/{}/{} {}\n",
            c.key.kind, c.key.namespace, c.key.name, c.hash
        );
        h.update(line.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// blake3 of canonical JSON with sorted keys: the same value `nexus_schemas::content_hash` gives
/// for the object `value` is the canonical form of.
pub fn hash_json(value: &Json) -> ContentHash {
    let mut text = String::new();
    write_sorted(value, &mut text);
    ContentHash(*blake3::hash(text.as_bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_schemas::content_hash;

    #[test]
    fn hash_json_matches_schemas_content_hash() {
        let text = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x], resources: {cpu: 0.5}}\n";
        let set = ManifestSet::validate(&[SourceFile::from_text("a.yaml", text)]);
        let v = validate_sources(&[SourceFile::from_text("a.yaml", text)]);
        let obj = &v.objects[0].object;
        let d = &set.objects[&obj.key()];
        assert_eq!(d.hash, content_hash(obj));
        assert_eq!((d.file.as_str(), d.line), ("a.yaml", 3));
        let again = ManifestSet::from_canonical(
            set.objects
                .iter()
                .map(|(k, o)| (k.clone(), o.value.clone()))
                .collect(),
        );
        assert_eq!(again.claim(), set.claim());
    }

    #[test]
    fn claim_digest_ignores_order_and_sees_every_object() {
        let text = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n---\napiVersion: nexus/v1\nkind: Workload\nmetadata: {name: b}\nspec: {command: [x]}\n";
        let set = ManifestSet::validate(&[SourceFile::from_text("a.yaml", text)]);
        let claim = set.claim();
        let d = claim_digest(&claim);
        assert_eq!(d.len(), 64);
        let mut reversed = claim.clone();
        reversed.reverse();
        assert_eq!(claim_digest(&reversed), d);
        assert_ne!(claim_digest(&claim[..1]), d);
        let mut dup = claim.clone();
        dup.push(claim[0].clone());
        assert_ne!(claim_digest(&dup), d);
        let mut changed = claim.clone();
        changed[0].hash = "0".repeat(64);
        assert_ne!(claim_digest(&changed), d);
        assert_ne!(claim_digest(&[]), d);
    }
}
