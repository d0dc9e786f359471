//! The per-replica state directory of the process runtime:
//! `<state>/replicas/<dir name>/{state.json, exit, logs/, work/}`. `state.json` is written
//! atomically (temp file + rename) before a replica is released and on every transition, so an
//! agent that restarts can tell its replicas from strangers.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use crate::spec::ReplicaSpec;
use crate::status::ExitOutcome;

/// Bumped when the format changes incompatibly.
pub(crate) const STATE_VERSION: u32 = 1;

/// How the last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub at_ms: u64,
    pub outcome: ExitOutcome,
}

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplicaState {
    pub version: u32,
    pub spec: ReplicaSpec,
    /// Host pid of the init while running.
    pub pid: Option<i32>,
    /// The init's start time in clock ticks since boot (pid-reuse guard).
    pub pid_start_ticks: u64,
    /// Boot the pid belongs to.
    pub boot_id: String,
    pub started_at_ms: u64,
    pub restart_count: u32,
    pub backoff_step: u32,
    pub exit: Option<ExitRecord>,
    /// The replica's address in its own network namespace (network mode only); kept across
    /// restarts of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

/// Paths of one replica's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaDir {
    pub root: PathBuf,
}

impl ReplicaDir {
    pub fn new(state_dir: &Path, name: &str) -> Self {
        ReplicaDir {
            root: state_dir.join("replicas").join(name),
        }
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn exit(&self) -> PathBuf {
        self.root.join("exit")
    }
    pub fn exit_tmp(&self) -> PathBuf {
        self.root.join("exit.tmp")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, stream: super::LogStream) -> (PathBuf, PathBuf) {
        let name = match stream {
            super::LogStream::Stdout => "stdout.log",
            super::LogStream::Stderr => "stderr.log",
        };
        (
            self.logs().join(name),
            self.logs().join(format!("{name}.1")),
        )
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Creates the directory tree.
    pub fn create(&self) -> Result<(), RuntimeError> {
        for d in [self.logs(), self.work()] {
            fs::create_dir_all(&d).map_err(|e| RuntimeError::io("create", &d, e))?;
        }
        Ok(())
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, state: &ReplicaState) -> Result<(), RuntimeError> {
        let path = self.state();
        let tmp = self.root.join("state.json.tmp");
        let text = serde_json::to_vec_pretty(state).map_err(|e| RuntimeError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, text).map_err(|e| RuntimeError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| RuntimeError::io("rename", &path, e))
    }

    /// Reads `state.json`; any problem (missing, corrupt, other version) is an error.
    pub fn load(&self) -> Result<ReplicaState, RuntimeError> {
        let path = self.state();
        let bytes = fs::read(&path).map_err(|e| RuntimeError::io("read", &path, e))?;
        let state: ReplicaState =
            serde_json::from_slice(&bytes).map_err(|e| RuntimeError::State {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if state.version != STATE_VERSION {
            return Err(RuntimeError::State {
                path,
                message: format!("unknown version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Removes the whole directory (idempotent).
    pub fn remove(&self) -> Result<(), RuntimeError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io("remove", &self.root, e)),
        }
    }
}

/// Names of the replica directories under `<state>/replicas`.
pub(crate) fn list(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(state_dir.join("replicas"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The last `max` bytes of `old` followed by `current`.
pub(crate) fn tail(old: &Path, current: &Path, max: u64) -> Result<Vec<u8>, RuntimeError> {
    let read = |p: &Path| match fs::read(p) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RuntimeError::io("read", p, e)),
    };
    let mut all = read(old)?;
    all.extend(read(current)?);
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if all.len() > max {
        all.drain(..all.len() - max);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceId, ReplicaId, WorkloadKey};

    #[test]
    fn save_load_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("default", "w"), 0),
            nexus_schemas::ContentHash([7; 32]),
        );
        let rd = ReplicaDir::new(dir.path(), &id.dir_name());
        rd.create().unwrap();
        let spec = ReplicaSpec {
            id,
            generation: 1,
            runtime: Default::default(),
            command: vec!["sleep".into()],
            env: Default::default(),
            working_dir: None,
            limits: Default::default(),
            health: None,
            restart_policy: Default::default(),
            grace_ms: 1000,
        };
        let st = ReplicaState {
            version: STATE_VERSION,
            spec,
            pid: Some(42),
            pid_start_ticks: 7,
            boot_id: "b".into(),
            started_at_ms: 1,
            restart_count: 2,
            backoff_step: 1,
            exit: Some(ExitRecord {
                at_ms: 3,
                outcome: ExitOutcome::OomKilled,
            }),
            address: Some(std::net::Ipv4Addr::new(10, 77, 1, 2)),
        };
        rd.save(&st).unwrap();
        assert_eq!(rd.load().unwrap(), st);
        fs::write(rd.state(), b"{not json").unwrap();
        assert!(matches!(rd.load(), Err(RuntimeError::State { .. })));
        fs::write(
            rd.state(),
            serde_json::to_vec(&ReplicaState { version: 99, ..st }).unwrap(),
        )
        .unwrap();
        assert!(matches!(rd.load(), Err(RuntimeError::State { .. })));
        assert_eq!(
            list(dir.path()),
            vec![rd.root.file_name().unwrap().to_string_lossy().into_owned()]
        );
        rd.remove().unwrap();
        rd.remove().unwrap();
    }

    #[test]
    fn tail_joins_rotated_and_current() {
        let dir = tempfile::tempdir().unwrap();
        let (old, cur) = (dir.path().join("a.1"), dir.path().join("a"));
        fs::write(&old, b"0123456789").unwrap();
        fs::write(&cur, b"abc").unwrap();
        assert_eq!(tail(&old, &cur, 5).unwrap(), b"789abc"[1..].to_vec());
        assert_eq!(tail(&old, &cur, 100).unwrap(), b"0123456789abc".to_vec());
        assert_eq!(
            tail(&dir.path().join("x"), &dir.path().join("y"), 10).unwrap(),
            Vec::<u8>::new()
        );
    }
}
