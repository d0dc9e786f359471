//! Snapshots of the [`State`], stored every N entries so opening the ledger replays only the tail
//! of the log. A snapshot is derived data: one that fails its checksum or does not decode is
//! skipped and the state is rebuilt from an older snapshot or from the log.
//!
//! Format v4: `u8 4 | height | head_hash | timestamp_ms | objects | nodes | validators | pending |
//! git syncs | blake3 of everything before [32]`; objects are `key | canonical JSON |
//! content_hash | generation | resource_version | created | updated | last_actor | last_source
//! (JSON) | owner`; nodes are `info | joined | lost? | lost attesters`; git syncs are `source |
//! repo | commit | height`; validators are `name | key | address | power`. (v1 lacked the
//! attesters, v2 the git syncs, v3 the validator names: such snapshots no longer decode and the
//! state is rebuilt from the log.)

use nexus_schemas::ContentHash;

use crate::codec::{CodecError, Reader, Writer, parse_json, sorted_json};
use crate::entry::EntryHash;
use crate::event::{get_key, get_node, get_validators, put_key, put_node, put_validators};
use crate::request::Source;
use crate::state::{GitSync, NodeState, ObjectState, State};

const SNAPSHOT_VERSION: u8 = 4;

fn put_source(w: &mut Writer, source: &Source) {
    w.str(&sorted_json(
        &serde_json::to_value(source).unwrap_or_default(),
    ));
}

fn get_source(r: &mut Reader<'_>) -> Result<Source, CodecError> {
    serde_json::from_str(r.str("source")?).map_err(|e| CodecError::Json {
        what: "source",
        message: e.to_string(),
    })
}

/// Encodes a state.
pub fn encode(state: &State) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + state.objects.len() * 600);
    w.u8(SNAPSHOT_VERSION)
        .u64(state.height)
        .array(&state.head_hash.0)
        .u64(state.timestamp_ms);
    w.u32(state.objects.len() as u32);
    for (key, o) in &state.objects {
        put_key(&mut w, key);
        w.str(&sorted_json(&o.object)).array(&o.content_hash.0);
        w.u64(o.generation)
            .u64(o.resource_version)
            .u64(o.created_height)
            .u64(o.updated_height);
        w.str(&o.last_actor);
        put_source(&mut w, &o.last_source);
        w.str(&o.owner);
    }
    w.u32(state.nodes.len() as u32);
    for n in state.nodes.values() {
        put_node(&mut w, &n.info);
        w.u64(n.joined_height);
        match n.lost_height {
            Some(h) => w.bool(true).u64(h),
            None => w.bool(false),
        };
        w.u32(n.lost_attesters.len() as u32);
        for a in &n.lost_attesters {
            w.str(a);
        }
    }
    put_validators(&mut w, &state.validators);
    match &state.pending_validators {
        Some((at, set)) => {
            w.bool(true).u64(*at);
            put_validators(&mut w, set);
        }
        None => {
            w.bool(false);
        }
    }
    w.u32(state.git_syncs.len() as u32);
    for (source, g) in &state.git_syncs {
        w.str(source).str(&g.repo).str(&g.commit).u64(g.height);
    }
    let mut bytes = w.finish();
    let sum = blake3::hash(&bytes);
    bytes.extend_from_slice(sum.as_bytes());
    bytes
}

/// Decodes a snapshot, checking its checksum first.
pub fn decode(bytes: &[u8]) -> Result<State, CodecError> {
    let Some(body_len) = bytes.len().checked_sub(32) else {
        return Err(CodecError::Truncated {
            offset: 0,
            needed: 32 - bytes.len(),
        });
    };
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum {
        return Err(CodecError::Invalid("snapshot checksum mismatch".into()));
    }
    let mut r = Reader::new(body);
    r.version("snapshot", SNAPSHOT_VERSION)?;
    let mut state = State {
        height: r.u64()?,
        head_hash: EntryHash(r.array()?),
        timestamp_ms: r.u64()?,
        ..State::default()
    };
    for _ in 0..r.u32()? {
        let key = get_key(&mut r)?;
        let o = ObjectState {
            object: parse_json("object", r.str("object")?)?,
            content_hash: ContentHash(r.array()?),
            generation: r.u64()?,
            resource_version: r.u64()?,
            created_height: r.u64()?,
            updated_height: r.u64()?,
            last_actor: r.string("actor")?,
            last_source: get_source(&mut r)?,
            owner: r.string("owner")?,
        };
        state.objects.insert(key, std::sync::Arc::new(o));
    }
    for _ in 0..r.u32()? {
        let info = get_node(&mut r)?;
        let joined_height = r.u64()?;
        let lost_height = if r.bool()? { Some(r.u64()?) } else { None };
        let mut lost_attesters = std::collections::BTreeSet::new();
        for _ in 0..r.u32()? {
            lost_attesters.insert(r.string("attester")?);
        }
        state.nodes.insert(
            info.name.clone(),
            NodeState {
                info,
                joined_height,
                lost_height,
                lost_attesters,
            },
        );
    }
    state.validators = get_validators(&mut r)?;
    if r.bool()? {
        let at = r.u64()?;
        state.pending_validators = Some((at, get_validators(&mut r)?));
    }
    for _ in 0..r.u32()? {
        let source = r.string("git source")?;
        let sync = GitSync {
            repo: r.string("repo")?,
            commit: r.string("commit")?,
            height: r.u64()?,
        };
        state.git_syncs.insert(source, sync);
    }
    r.finish()?;
    state.journal = crate::state::ChangeJournal::starting_at(state.height);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NodeInfo, Validator};
    use crate::testutil::*;

    fn sample() -> State {
        let mut s = State {
            height: 9,
            head_hash: EntryHash([4; 32]),
            timestamp_ms: 77,
            ..State::default()
        };
        let git = Source::Gitops {
            git_source: "ns/src".into(),
            repo: "r".into(),
            commit: "c".into(),
            tree: "t".into(),
            author: "a".into(),
            committer: "c".into(),
            message: "m\nx".into(),
            claim: String::new(),
            forced_over: None,
        };
        for (i, src) in [
            Source::Cli,
            git,
            Source::Controller {
                name: "sched".into(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let o = ObjectState {
                object: workload(&format!("w{i}"), 1),
                content_hash: ContentHash([i as u8; 32]),
                generation: 2,
                resource_version: 5,
                created_height: 1,
                updated_height: 5,
                last_actor: "user:alice".into(),
                owner: src.owner(),
                last_source: src,
            };
            s.objects
                .insert(wkey(&format!("w{i}")), std::sync::Arc::new(o));
        }
        let info = NodeInfo {
            name: "n1".into(),
            address: "a".into(),
            public_key: [1; 32],
            labels: [("k".into(), "v".into())].into(),
            cpu_millis: 1,
            memory_bytes: 2,
            gpus: 3,
        };
        s.nodes.insert(
            "n1".into(),
            NodeState {
                info,
                joined_height: 2,
                lost_height: Some(4),
                lost_attesters: ["replica:r1".to_string()].into(),
            },
        );
        s.validators = vec![Validator {
            name: "r2".into(),
            public_key: [2; 32],
            address: "v".into(),
            power: 1,
        }];
        s.pending_validators = Some((20, vec![]));
        s.git_syncs.insert(
            "ns/src".into(),
            GitSync {
                repo: "r".into(),
                commit: "c".into(),
                height: 7,
            },
        );
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(decode(&encode(&s)).unwrap(), s);
        assert_eq!(decode(&encode(&State::new())).unwrap(), State::new());
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = encode(&sample());
        for i in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..5]).is_err());
    }
}
