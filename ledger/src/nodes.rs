//! Nodes in the log: planning the node operations replicas submit (a node joined or changed,
//! its labels changed, a replica attests that it is lost or withdraws that) and the fold step for
//! node events, shared by [`State`](crate::state::State) and the staged view used while planning.
//!
//! BFT rule 5: a node is declared lost only when f+1 distinct replicas attested it, where
//! f = (n-1)/3 for the n voting replicas (one replica without a validator set: f = 0, so one
//! attestation suffices). Each attestation is an event of its own
//! ([`EventBody::NodeLostAttestation`]); the one that reaches f+1 also makes the
//! [`EventBody::NodeLost`] event, in the same entry. A replica that hears from the node again
//! withdraws its attestation; a node that joins again after being lost starts with none.
//!
//! Only replicas (actors `replica:<name>`) may submit node operations: agents never write to
//! the log, and neither do users.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::{EventBody, NodeInfo};
use crate::plan::RequestError;
use crate::request::{Op, Request};
use crate::state::{NodeState, ObjectView};

/// Longest node name (a certificate name).
pub const MAX_NODE_NAME: usize = 253;

/// How many distinct attestations declare a node lost among `voters` replicas: f+1.
pub fn lost_threshold(voters: usize) -> usize {
    (voters.max(1) - 1) / 3 + 1
}

fn check_name(name: &str) -> Result<(), RequestError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RequestError::Invalid(format!(
            "node name {name:?} must be 1 to {MAX_NODE_NAME} characters of [A-Za-z0-9._@-]"
        )))
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), RequestError> {
    for (k, v) in labels {
        if k.is_empty() || k.len() > 253 || v.len() > 63 {
            return Err(RequestError::Invalid(format!(
                "node label {k:?}={v:?}: keys are 1 to 253 bytes, values at most 63"
            )));
        }
    }
    Ok(())
}

/// The events a node operation makes against `view` (empty: nothing changes). `None` when `op`
/// is not a node operation.
pub fn plan_node_op<V: ObjectView + ?Sized>(
    view: &V,
    req: &Request,
    op: &Op,
) -> Option<Result<Vec<EventBody>, RequestError>> {
    let result = match op {
        Op::NodeJoin { node } => only_replicas(req).and_then(|()| join(view, node)),
        Op::NodeLabels { name, labels } => {
            only_replicas(req).and_then(|()| relabel(view, name, labels))
        }
        Op::NodeLostAttest { name, lost } => {
            only_replicas(req).and_then(|()| attest(view, &req.actor, name, *lost))
        }
        Op::Apply { .. }
        | Op::Delete { .. }
        | Op::AddValidator { .. }
        | Op::RemoveValidator { .. } => return None,
    };
    Some(result)
}

/// The node a node operation is about.
pub fn op_node(op: &Op) -> Option<&str> {
    match op {
        Op::NodeJoin { node } => Some(&node.name),
        Op::NodeLabels { name, .. } | Op::NodeLostAttest { name, .. } => Some(name),
        Op::Apply { .. }
        | Op::Delete { .. }
        | Op::AddValidator { .. }
        | Op::RemoveValidator { .. } => None,
    }
}

fn only_replicas(req: &Request) -> Result<(), RequestError> {
    if req.actor.starts_with("replica:") {
        Ok(())
    } else {
        Err(RequestError::NotAllowed(format!(
            "node operations are made by replicas; {} is not one",
            req.actor
        )))
    }
}

fn join<V: ObjectView + ?Sized>(view: &V, node: &NodeInfo) -> Result<Vec<EventBody>, RequestError> {
    check_name(&node.name)?;
    check_labels(&node.labels)?;
    let Some(current) = view.node(&node.name) else {
        return Ok(vec![EventBody::NodeJoined { node: node.clone() }]);
    };
    if current.lost_height.is_some() {
        return Ok(vec![EventBody::NodeJoined { node: node.clone() }]);
    }
    let same_but_labels = NodeInfo {
        labels: current.info.labels.clone(),
        ..node.clone()
    };
    if same_but_labels != current.info {
        return Ok(vec![EventBody::NodeJoined { node: node.clone() }]);
    }
    relabel(view, &node.name, &node.labels)
}

fn relabel<V: ObjectView + ?Sized>(
    view: &V,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<EventBody>, RequestError> {
    check_labels(labels)?;
    let current = view.node(name).ok_or_else(|| RequestError::UnknownNode {
        name: name.to_string(),
    })?;
    if &current.info.labels == labels {
        return Ok(Vec::new());
    }
    Ok(vec![EventBody::NodeLabelsChanged {
        name: name.to_string(),
        labels: labels.clone(),
    }])
}

fn attest<V: ObjectView + ?Sized>(
    view: &V,
    replica: &str,
    name: &str,
    lost: bool,
) -> Result<Vec<EventBody>, RequestError> {
    let current = view.node(name).ok_or_else(|| RequestError::UnknownNode {
        name: name.to_string(),
    })?;
    let attested = current.lost_attesters.contains(replica);
    if current.lost_height.is_some() || attested == lost {
        return Ok(Vec::new()); // already lost, or this replica already said so
    }
    let mut events = vec![EventBody::NodeLostAttestation {
        name: name.to_string(),
        replica: replica.to_string(),
        lost,
    }];
    if lost {
        let mut by: BTreeSet<String> = current.lost_attesters.clone();
        by.insert(replica.to_string());
        if by.len() >= lost_threshold(view.voters()) {
            events.push(EventBody::NodeLost {
                name: name.to_string(),
                attested_by: by.into_iter().collect(),
            });
        }
    }
    Ok(events)
}

/// The node after a node event at `height`; `None` when `body` is not about a node (or names one
/// that does not exist). Shared by the fold and the planner so both agree.
pub(crate) fn next_node(
    prev: Option<&NodeState>,
    body: &EventBody,
    height: u64,
) -> Option<NodeState> {
    match body {
        EventBody::NodeJoined { node } => Some(NodeState {
            info: node.clone(),
            joined_height: prev.map_or(height, |p| p.joined_height),
            lost_height: None,
            lost_attesters: BTreeSet::new(),
        }),
        EventBody::NodeLabelsChanged { labels, .. } => prev.map(|p| {
            let mut n = p.clone();
            n.info.labels = labels.clone();
            n
        }),
        EventBody::NodeLostAttestation { replica, lost, .. } => prev.map(|p| {
            let mut n = p.clone();
            if *lost {
                n.lost_attesters.insert(replica.clone());
            } else {
                n.lost_attesters.remove(replica);
            }
            n
        }),
        EventBody::NodeLost { .. } => prev.map(|p| NodeState {
            lost_height: Some(height),
            ..p.clone()
        }),
        _ => None,
    }
}

/// The node an event is about, if it is a node event.
pub(crate) fn node_name(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::NodeJoined { node } => Some(&node.name),
        EventBody::NodeLabelsChanged { name, .. }
        | EventBody::NodeLostAttestation { name, .. }
        | EventBody::NodeLost { name, .. } => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Validator;
    use crate::execute::execute;
    use crate::request::{SignedRequest, Source};
    use crate::state::State;
    use ed25519_dalek::SigningKey;

    fn info(name: &str, cpu: u64, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            address: "127.0.0.1".into(),
            public_key: [9; 32],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cpu_millis: cpu,
            memory_bytes: 1 << 30,
            gpus: 0,
        }
    }

    fn req(actor: &str, id: &str, ops: Vec<Op>) -> SignedRequest {
        let r = Request {
            id: id.into(),
            actor: actor.into(),
            source: Source::Controller {
                name: "nodes".into(),
            },
            ops,
            created_at_ms: 0,
        };
        SignedRequest::sign(r, &SigningKey::from_bytes(&[1; 32]))
    }

    /// Executes requests as one entry and folds it; returns the event type names.
    fn run(state: &mut State, reqs: Vec<SignedRequest>) -> Vec<String> {
        let ex = execute(state, &reqs);
        for r in &ex.results {
            if let Err(e) = r {
                return vec![format!("error: {e}")];
            }
        }
        let names = ex
            .events
            .iter()
            .map(|e| e.body.type_name().to_string())
            .collect();
        if !ex.is_empty() {
            let c = ex
                .into_commit(state.head_hash, state.height + 1, 1, None)
                .unwrap();
            state.apply_entry(&c.entry).unwrap();
        }
        names
    }

    fn validators(n: usize) -> Vec<Validator> {
        (0..n)
            .map(|i| Validator {
                name: format!("r{i}"),
                public_key: [i as u8; 32],
                address: format!("r{i}"),
                power: 1,
            })
            .collect()
    }

    #[test]
    fn thresholds() {
        assert_eq!([0, 1, 3, 4, 7, 10].map(lost_threshold), [1, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn join_relabel_rejoin_are_idempotent() {
        let mut s = State::new();
        let join = |n: NodeInfo| Op::NodeJoin { node: n };
        assert_eq!(
            run(
                &mut s,
                vec![req("replica:r0", "1", vec![join(info("n1", 2000, &[]))])]
            ),
            ["node_joined"]
        );
        assert_eq!(s.nodes["n1"].joined_height, 1);
        assert!(
            run(
                &mut s,
                vec![req("replica:r1", "2", vec![join(info("n1", 2000, &[]))])]
            )
            .is_empty(),
            "a second replica reporting the same node changes nothing"
        );
        assert_eq!(
            run(
                &mut s,
                vec![req(
                    "replica:r0",
                    "3",
                    vec![join(info("n1", 2000, &[("zone", "a")]))]
                )]
            ),
            ["node_labels_changed"]
        );
        assert_eq!(s.nodes["n1"].info.labels["zone"], "a");
        assert_eq!(
            run(
                &mut s,
                vec![req(
                    "replica:r0",
                    "4",
                    vec![join(info("n1", 4000, &[("zone", "a")]))]
                )]
            ),
            ["node_joined"],
            "new capacity"
        );
        assert_eq!(s.nodes["n1"].joined_height, 1, "first join height is kept");
        assert_eq!(
            run(
                &mut s,
                vec![req(
                    "replica:r0",
                    "5",
                    vec![Op::NodeLabels {
                        name: "n2".into(),
                        labels: Default::default()
                    }]
                )]
            ),
            ["error: node \"n2\" is not known"]
        );
        assert!(
            run(
                &mut s,
                vec![req("user:admin", "6", vec![join(info("n3", 1, &[]))])]
            )[0]
            .contains("made by replicas"),
            "users cannot write node facts"
        );
        assert!(
            run(
                &mut s,
                vec![req("replica:r0", "7", vec![join(info("bad name", 1, &[]))])]
            )[0]
            .contains("node name")
        );
    }

    #[test]
    fn lost_takes_f_plus_1_attestations_and_rejoin_clears_them() {
        let mut s = State::new();
        s.validators = validators(4); // f = 1: two attestations
        run(
            &mut s,
            vec![req(
                "replica:r0",
                "j",
                vec![Op::NodeJoin {
                    node: info("n1", 1000, &[]),
                }],
            )],
        );
        let attest = |who: &str, id: &str, lost: bool| {
            req(
                who,
                id,
                vec![Op::NodeLostAttest {
                    name: "n1".into(),
                    lost,
                }],
            )
        };
        assert_eq!(
            run(&mut s, vec![attest("replica:r0", "a1", true)]),
            ["node_lost_attestation"]
        );
        assert!(s.nodes["n1"].lost_height.is_none(), "one of f+1 = 2");
        assert!(run(&mut s, vec![attest("replica:r0", "a2", true)]).is_empty());
        // r0 hears from the node again and withdraws; r1's attestation alone is not enough.
        assert_eq!(
            run(&mut s, vec![attest("replica:r0", "w", false)]),
            ["node_lost_attestation"]
        );
        run(&mut s, vec![attest("replica:r1", "b1", true)]);
        assert!(s.nodes["n1"].lost_height.is_none());
        // Two distinct replicas in the same entry: lost.
        assert_eq!(
            run(
                &mut s,
                vec![
                    attest("replica:r2", "c1", true),
                    attest("replica:r3", "d1", true)
                ]
            ),
            ["node_lost_attestation", "node_lost"]
        );
        let lost_at = s.height;
        assert_eq!(s.nodes["n1"].lost_height, Some(lost_at));
        assert!(run(&mut s, vec![attest("replica:r3", "d2", true)]).is_empty());
        // Joining again clears the fact and the attestations.
        assert_eq!(
            run(
                &mut s,
                vec![req(
                    "replica:r1",
                    "j2",
                    vec![Op::NodeJoin {
                        node: info("n1", 1000, &[])
                    }]
                )]
            ),
            ["node_joined"]
        );
        assert!(s.nodes["n1"].lost_height.is_none() && s.nodes["n1"].lost_attesters.is_empty());
    }

    #[test]
    fn one_replica_attests_alone() {
        let mut s = State::new();
        run(
            &mut s,
            vec![req(
                "replica:r0",
                "j",
                vec![Op::NodeJoin {
                    node: info("n1", 1000, &[]),
                }],
            )],
        );
        assert_eq!(
            run(
                &mut s,
                vec![req(
                    "replica:r0",
                    "a",
                    vec![Op::NodeLostAttest {
                        name: "n1".into(),
                        lost: true
                    }]
                )]
            ),
            ["node_lost_attestation", "node_lost"]
        );
    }
}
