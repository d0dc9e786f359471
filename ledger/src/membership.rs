//! Validator-set changes: `AddValidator` / `RemoveValidator` operations, planned (pure) into one
//! `MembershipChanged` event carrying the whole next set and the height it takes effect at
//! (`next height + MEMBERSHIP_DELAY`). One change may be pending at a time; only users may ask
//! for one; the next set must be a valid, non-empty validator set with unique names and keys.

use crate::event::{EventBody, Validator};
use crate::plan::RequestError;
use crate::replicated::{MEMBERSHIP_DELAY, consensus_set};
use crate::request::{Op, Request};
use crate::state::ObjectView;

/// The events of a membership operation, or `None` when `op` is not one.
pub fn plan_membership_op<V: ObjectView + ?Sized>(
    view: &V,
    req: &Request,
    op: &Op,
) -> Option<Result<Vec<EventBody>, RequestError>> {
    let change = match op {
        Op::AddValidator { validator } => Change::Add(validator),
        Op::RemoveValidator { name } => Change::Remove(name),
        _ => return None,
    };
    Some(plan(view, req, change))
}

enum Change<'a> {
    Add(&'a Validator),
    Remove(&'a str),
}

fn plan<V: ObjectView + ?Sized>(
    view: &V,
    req: &Request,
    change: Change<'_>,
) -> Result<Vec<EventBody>, RequestError> {
    if !req.actor.starts_with("user:") {
        return Err(RequestError::NotAllowed(format!(
            "validator-set changes are made by users; {} is not one",
            req.actor
        )));
    }
    let (current, pending) = view.membership();
    if let Some(at) = pending {
        return Err(RequestError::Invalid(format!(
            "a validator-set change is already pending (it takes effect at height {at}); \
             wait for it before the next one"
        )));
    }
    if current.is_empty() {
        return Err(RequestError::NotAllowed(
            "this ledger is not replicated: it has no validator set".into(),
        ));
    }
    let mut next = current.to_vec();
    match change {
        Change::Add(v) => {
            if v.name.is_empty() || v.address.is_empty() || v.power == 0 {
                return Err(RequestError::Invalid(
                    "a validator needs a name, an address and a voting power of at least 1".into(),
                ));
            }
            if let Some(dup) = next
                .iter()
                .find(|o| o.name == v.name || o.public_key == v.public_key)
            {
                return Err(RequestError::Invalid(format!(
                    "replica {} (or its key) is already a validator",
                    dup.name
                )));
            }
            next.push(v.clone());
        }
        Change::Remove(name) => {
            let before = next.len();
            next.retain(|v| v.name != name);
            if next.len() == before {
                return Err(RequestError::Invalid(format!(
                    "replica {name} is not a validator"
                )));
            }
            if next.is_empty() {
                return Err(RequestError::Invalid(
                    "the last validator cannot be removed".into(),
                ));
            }
        }
    }
    // Name order, like the genesis set (see `Store::init_genesis`): the event is the same bytes
    // on every replica whatever order a replica's own configuration listed the set in.
    next.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.public_key.cmp(&b.public_key))
    });
    if consensus_set(&next).is_none() {
        return Err(RequestError::Invalid(
            "the resulting validator set is not valid (a key is not an ed25519 key, or the \
             voting power is too large)"
                .into(),
        ));
    }
    Ok(vec![EventBody::MembershipChanged {
        validators: next,
        effective_height: view.next_height() + MEMBERSHIP_DELAY,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::build_entry;
    use crate::event::Event;
    use crate::plan::plan_request;
    use crate::state::State;
    use crate::testutil::{request, signed};

    fn v(name: &str, seed: u8) -> Validator {
        Validator {
            name: name.into(),
            public_key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
            address: format!("{name}:1"),
            power: 1,
        }
    }

    #[test]
    fn add_and_remove_take_effect_later_one_at_a_time() {
        let mut s = State::new();
        s.validators = vec![v("r0", 1), v("r1", 2), v("r2", 3), v("r3", 4)];
        let add = |name: &str, seed| Op::AddValidator {
            validator: v(name, seed),
        };
        let p = plan_request(&s, &request("1", "user:admin", vec![add("r4", 5)])).unwrap();
        let EventBody::MembershipChanged {
            validators,
            effective_height,
        } = &p.events[0]
        else {
            panic!("{p:?}");
        };
        assert_eq!(
            (validators.len(), *effective_height),
            (5, 1 + MEMBERSHIP_DELAY)
        );
        // Only users; no duplicates; not the only validator; one operation per request.
        for (actor, op, what) in [
            ("replica:r0", add("r4", 5), "users"),
            ("user:a", add("r1", 9), "already"),
            ("user:a", add("r9", 2), "already"),
            (
                "user:a",
                Op::RemoveValidator { name: "zz".into() },
                "not a validator",
            ),
        ] {
            let e = plan_request(&s, &request("x", actor, vec![op])).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let two = request("y", "user:a", vec![add("r4", 5), add("r5", 6)]);
        assert!(plan_request(&s, &two).is_err());

        // Folded: pending until its height, then the set decides.
        let req = signed("1", "user:admin", vec![add("r4", 5)]);
        let events = p
            .events
            .into_iter()
            .map(|body| Event { request: 0, body })
            .collect();
        let e1 = build_entry(s.head_hash, 1, 1, vec![req], events).unwrap();
        s.apply_entry(&e1).unwrap();
        assert_eq!(s.validators.len(), 4, "not yet");
        let again = request(
            "2",
            "user:a",
            vec![Op::RemoveValidator { name: "r0".into() }],
        );
        assert!(
            plan_request(&s, &again)
                .unwrap_err()
                .to_string()
                .contains("pending")
        );
        let e2 = build_entry(e1.hash, 2, 2, vec![], vec![]).unwrap();
        s.apply_entry(&e2).unwrap();
        assert_eq!(s.validators.len(), 5, "decides height 3 = 1 + delay");
        let p = plan_request(&s, &again).unwrap();
        assert!(
            matches!(&p.events[0], EventBody::MembershipChanged { validators, .. } if validators.len() == 4)
        );
        let mut one = State::new();
        one.validators = vec![v("r0", 1)];
        let last = request(
            "3",
            "user:a",
            vec![Op::RemoveValidator { name: "r0".into() }],
        );
        assert!(plan_request(&one, &last).is_err());
    }
}
