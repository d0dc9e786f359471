//! The pending pool: submitted items waiting to be proposed, deduplicated by blake3, removed
//! once decided. A bounded memory of recently decided items stops late gossip re-adding them.
//! Each item remembers the status tick it arrived at, so items that wait long are gossiped
//! again (a peer that was unreachable when they first went out still gets them). Items the
//! application refused to propose are remembered for [`REFUSED_TICKS`] status ticks, so a peer
//! gossiping them again (a Byzantine replica, or honest ones that still hold them) does not
//! wake a height for them every tick; a local submit may bring them back at once.

use std::collections::{HashMap, HashSet, VecDeque};

/// Pending items in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    order: VecDeque<[u8; 32]>,
    items: HashMap<[u8; 32], (Vec<u8>, u64)>,
    tick: u64,
    bytes: usize,
    decided: HashSet<[u8; 32]>,
    decided_order: VecDeque<[u8; 32]>,
    /// Refused items and the tick they were refused at.
    refused: HashMap<[u8; 32], u64>,
    max_items: usize,
}

const DECIDED_MEMORY: usize = 65_536;
/// Status ticks (about a second each) a refused item is not taken from gossip again.
pub(crate) const REFUSED_TICKS: u64 = 30;
const REFUSED_MEMORY: usize = 65_536;

fn key(item: &[u8]) -> [u8; 32] {
    *blake3::hash(item).as_bytes()
}

impl Pool {
    pub fn new(max_items: usize) -> Self {
        Pool {
            max_items,
            ..Default::default()
        }
    }

    /// Add an item gossiped by a peer: like [`Pool::add`], but an item refused within the last
    /// [`REFUSED_TICKS`] ticks is not taken again.
    pub fn add_gossiped(&mut self, item: Vec<u8>) -> bool {
        let k = key(&item);
        if self
            .refused
            .get(&k)
            .is_some_and(|t| self.tick.saturating_sub(*t) < REFUSED_TICKS)
        {
            return false;
        }
        self.add(item)
    }

    /// Add an item; false if it is known, recently decided, or the pool is full.
    pub fn add(&mut self, item: Vec<u8>) -> bool {
        let k = key(&item);
        self.refused.remove(&k);
        if self.items.len() >= self.max_items
            || self.items.contains_key(&k)
            || self.decided.contains(&k)
        {
            return false;
        }
        self.bytes += item.len();
        self.items.insert(k, (item, self.tick));
        self.order.push_back(k);
        true
    }

    /// The oldest items, within the limits (always at least one item if any is pending).
    pub fn peek_batch(&self, max_items: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for k in &self.order {
            let Some((item, _)) = self.items.get(k) else {
                continue;
            };
            if out.len() >= max_items || (!out.is_empty() && bytes + item.len() > max_bytes) {
                break;
            }
            bytes += item.len();
            out.push(item.clone());
        }
        out
    }

    /// Advance the pool's clock (one status tick).
    pub fn tick(&mut self) {
        self.tick += 1;
        let now = self.tick;
        self.refused
            .retain(|_, t| now.saturating_sub(*t) < REFUSED_TICKS);
    }

    /// Items that have waited at least `ticks` ticks, oldest first, at most `max` of them.
    pub fn waiting(&self, ticks: u64, max: usize) -> Vec<Vec<u8>> {
        self.order
            .iter()
            .filter_map(|k| self.items.get(k))
            .take_while(|(_, t)| self.tick.saturating_sub(*t) >= ticks)
            .take(max)
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// Forget items without remembering them as decided (they became invalid): gossip does not
    /// bring them back for a while.
    pub fn remove(&mut self, items: &[Vec<u8>]) {
        for item in items {
            let k = key(item);
            if let Some((old, _)) = self.items.remove(&k) {
                self.bytes -= old.len();
            }
            if self.refused.len() < REFUSED_MEMORY {
                self.refused.insert(k, self.tick);
            }
        }
        self.compact();
    }

    fn compact(&mut self) {
        while let Some(front) = self.order.front() {
            if self.items.contains_key(front) {
                break;
            }
            self.order.pop_front();
        }
        if self.order.len() > 2 * self.items.len() + 64 {
            let items = &self.items;
            self.order.retain(|k| items.contains_key(k));
        }
    }

    /// Forget decided items and remember them as decided.
    pub fn remove_decided(&mut self, items: &[Vec<u8>]) {
        for item in items {
            let k = key(item);
            if let Some((old, _)) = self.items.remove(&k) {
                self.bytes -= old.len();
            }
            if self.decided.insert(k) {
                self.decided_order.push_back(k);
                if self.decided_order.len() > DECIDED_MEMORY
                    && let Some(old) = self.decided_order.pop_front()
                {
                    self.decided.remove(&old);
                }
            }
        }
        self.compact();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_dedups_orders_and_forgets_decided() {
        let mut p = Pool::new(10);
        assert!(p.add(b"a".to_vec()));
        assert!(!p.add(b"a".to_vec()));
        assert!(p.add(b"bb".to_vec()));
        assert!(p.add(b"c".to_vec()));
        assert_eq!(p.peek_batch(2, 100), vec![b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(p.peek_batch(10, 2), vec![b"a".to_vec()]);
        p.remove_decided(&[b"a".to_vec(), b"zz".to_vec()]);
        assert_eq!(p.len(), 2);
        assert!(!p.add(b"a".to_vec()), "recently decided");
        assert!(!p.add(b"zz".to_vec()));
        assert_eq!(p.peek_batch(10, 100).len(), 2);
        assert!(p.waiting(1, 10).is_empty(), "nothing waited a tick yet");
        p.tick();
        assert!(p.add(b"d".to_vec()));
        assert_eq!(p.waiting(1, 10), vec![b"bb".to_vec(), b"c".to_vec()]);
        assert_eq!(p.waiting(1, 1).len(), 1);
        p.remove(&[b"bb".to_vec()]);
        assert_eq!(p.len(), 2);
        assert!(
            !p.add_gossiped(b"bb".to_vec()),
            "refused: gossip does not bring it back"
        );
        for _ in 0..REFUSED_TICKS - 1 {
            p.tick();
        }
        assert!(!p.add_gossiped(b"bb".to_vec()), "not yet");
        p.tick();
        assert!(
            p.add_gossiped(b"bb".to_vec()),
            "refused long ago: may come back"
        );
        p.remove(&[b"bb".to_vec()]);
        assert!(
            p.add(b"bb".to_vec()),
            "a local submit brings it back at once"
        );
    }
}
