//! BFT rule 4 on the agent: act on an assignment set only when f+1 replicas sent the same one.
//! With n replicas in the agent's config, f = (n-1)/3; one replica: f+1 = 1. A set whose hash
//! does not match its content is ignored, so a Byzantine replica cannot pair a popular hash with
//! different replicas.

use std::collections::BTreeMap;

use nexus_api::agent::AssignmentSet;

/// f+1 for `n` replicas.
pub fn quorum(n: usize) -> usize {
    (n.max(1) - 1) / 3 + 1
}

/// The set at least `need` of the latest `feeds` (one per replica) agree on. When several
/// hashes reach `need` (replicas at different heights), the one most replicas sent wins, then
/// the highest height.
pub fn agreed<'a>(
    node: &str,
    feeds: impl IntoIterator<Item = &'a AssignmentSet>,
    need: usize,
) -> Option<&'a AssignmentSet> {
    let mut by_hash: BTreeMap<&str, (usize, &'a AssignmentSet)> = BTreeMap::new();
    for set in feeds {
        if set.node != node || !set.verify() {
            continue;
        }
        let e = by_hash.entry(set.hash.as_str()).or_insert((0, set));
        e.0 += 1;
        if set.height > e.1.height {
            e.1 = set;
        }
    }
    by_hash
        .into_values()
        .filter(|(n, _)| *n >= need.max(1))
        .max_by_key(|(n, s)| (*n, s.height))
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_reconciler::model::{InstanceId, ReplicaId, WorkloadKey, template_hash};
    use nexus_reconciler::spec::ReplicaSpec;
    use nexus_schemas::WorkloadSpec;

    fn set(height: u64, cmd: &str) -> AssignmentSet {
        let w: WorkloadSpec =
            serde_json::from_value(serde_json::json!({"command": [cmd]})).unwrap();
        let id = InstanceId::new(
            ReplicaId::new(WorkloadKey::new("default", "w"), 0),
            template_hash(&w),
        );
        let spec = ReplicaSpec::from_workload(id, 1, &w).unwrap();
        AssignmentSet::new("n1".into(), height, None, vec![spec])
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!([1, 2, 3, 4, 7].map(quorum), [1, 1, 1, 2, 3]);
    }

    #[test]
    fn one_byzantine_replica_of_four_cannot_start_anything() {
        let good = set(5, "app");
        let bogus = set(5, "evil");
        // Alone, the bogus set is not enough (f+1 = 2 of 4).
        assert_eq!(agreed("n1", [&bogus], quorum(4)), None);
        // A forged set claiming the honest hash is ignored.
        let mut forged = bogus.clone();
        forged.hash = good.hash.clone();
        assert_eq!(agreed("n1", [&forged, &good], quorum(4)), None);
        // Two honest replicas (at different heights) agree.
        let later = set(7, "app");
        assert_eq!(
            agreed("n1", [&good, &bogus, &later], quorum(4)).map(|s| s.height),
            Some(7)
        );
        // A set for another node never counts.
        let mut other = good.clone();
        other.node = "n2".into();
        other.hash = AssignmentSet::compute_hash("n2", None, &other.replicas);
        assert_eq!(agreed("n1", [&other, &other], quorum(4)), None);
        // One replica: its set is enough.
        assert_eq!(agreed("n1", [&good], quorum(1)), Some(&good));
    }
}
