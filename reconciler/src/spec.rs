//! What a node needs to run one instance: [`ReplicaSpec`], derived from a workload spec and an
//! assignment, and its enforced limits.

use std::collections::BTreeMap;

use nexus_schemas::quantity::{Bytes, Millicores};
use nexus_schemas::{HealthProbe, RestartPolicy, Runtime as RuntimeKind, WorkloadSpec};
use serde::{Deserialize, Serialize};

use crate::model::InstanceId;

/// Limits enforced on one replica (cgroup values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// CPU in millicores (CFS quota); `None` = unlimited.
    pub cpu_millis: Option<u64>,
    /// Hard memory limit in bytes; `None` = unlimited.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes and threads; `None` = the runtime's default.
    pub pids: Option<u64>,
}

/// Everything a runtime needs to start one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSpec {
    pub id: InstanceId,
    /// Workload generation the instance was assigned at (informational).
    pub generation: u64,
    pub runtime: RuntimeKind,
    /// Program and arguments; the program is looked up in `PATH` when it has no '/'.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory; `None` = the replica's scratch directory.
    pub working_dir: Option<String>,
    pub limits: Limits,
    pub health: Option<HealthProbe>,
    pub restart_policy: RestartPolicy,
    /// Time between SIGTERM and SIGKILL on stop.
    pub grace_ms: u64,
}

/// Why a workload spec cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("command is empty")]
    EmptyCommand,
    #[error("invalid cpu quantity {0:?}")]
    Cpu(String),
    #[error("invalid memory quantity {0:?}")]
    Memory(String),
    #[error("{0} contains a NUL byte")]
    Nul(&'static str),
    #[error("environment variable name {0:?} is empty or contains '='")]
    EnvName(String),
}

impl ReplicaSpec {
    /// Builds the spec of instance `id` of a workload.
    pub fn from_workload(
        id: InstanceId,
        generation: u64,
        spec: &WorkloadSpec,
    ) -> Result<Self, SpecError> {
        let cpu = Millicores::parse(&spec.resources.cpu.0)
            .map_err(|_| SpecError::Cpu(spec.resources.cpu.0.clone()))?;
        let mem = Bytes::parse(&spec.resources.memory.0)
            .map_err(|_| SpecError::Memory(spec.resources.memory.0.clone()))?;
        let r = ReplicaSpec {
            id,
            generation,
            runtime: spec.runtime,
            command: spec.command.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            limits: Limits {
                cpu_millis: (cpu.0 > 0).then_some(cpu.0),
                memory_bytes: (mem.0 > 0).then_some(mem.0),
                pids: None,
            },
            health: spec.health.clone(),
            restart_policy: spec.restart_policy,
            grace_ms: u64::from(spec.termination_grace_period_seconds) * 1000,
        };
        r.validate()?;
        Ok(r)
    }

    /// Checks what the kernel would reject (NUL bytes, bad env names, empty command).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SpecError::EmptyCommand);
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::Nul("command"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') {
                return Err(SpecError::EnvName(k.clone()));
            }
            if k.contains('\0') || v.contains('\0') {
                return Err(SpecError::Nul("env"));
            }
        }
        if self
            .working_dir
            .as_deref()
            .is_some_and(|w| w.contains('\0'))
        {
            return Err(SpecError::Nul("workingDir"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReplicaId, WorkloadKey, template_hash};

    #[test]
    fn from_workload_maps_limits_and_rejects_bad_input() {
        let mut w: WorkloadSpec = serde_json::from_value(serde_json::json!({
            "command": ["sleep", "1"], "resources": {"cpu": "250m", "memory": "64Mi"},
            "terminationGracePeriodSeconds": 3
        }))
        .unwrap();
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("default", "w"), 0),
            template_hash(&w),
        );
        let r = ReplicaSpec::from_workload(id.clone(), 4, &w).unwrap();
        assert_eq!(
            r.limits,
            Limits {
                cpu_millis: Some(250),
                memory_bytes: Some(64 << 20),
                pids: None
            }
        );
        assert_eq!(r.grace_ms, 3000);
        w.command = vec!["a\0b".into()];
        assert_eq!(
            ReplicaSpec::from_workload(id.clone(), 4, &w),
            Err(SpecError::Nul("command"))
        );
        w.command = vec![];
        assert_eq!(
            ReplicaSpec::from_workload(id.clone(), 4, &w),
            Err(SpecError::EmptyCommand)
        );
        w.command = vec!["x".into()];
        w.env.insert("A=B".into(), "1".into());
        assert_eq!(
            ReplicaSpec::from_workload(id, 4, &w),
            Err(SpecError::EnvName("A=B".into()))
        );
    }
}
