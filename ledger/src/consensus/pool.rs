//! The pending pool: submitted items waiting to be proposed, deduplicated by blake3, removed
//! once decided. A bounded memory of recently decided items stops late gossip re-adding them.

use std::collections::{HashMap, HashSet, VecDeque};

/// Pending items in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    order: VecDeque<[u8; 32]>,
    items: HashMap<[u8; 32], Vec<u8>>,
    bytes: usize,
    decided: HashSet<[u8; 32]>,
    decided_order: VecDeque<[u8; 32]>,
    max_items: usize,
}

const DECIDED_MEMORY: usize = 65_536;

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

    /// Add an item; false if it is known, recently decided, or the pool is full.
    pub fn add(&mut self, item: Vec<u8>) -> bool {
        let k = key(&item);
        if self.items.len() >= self.max_items
            || self.items.contains_key(&k)
            || self.decided.contains(&k)
        {
            return false;
        }
        self.bytes += item.len();
        self.items.insert(k, item);
        self.order.push_back(k);
        true
    }

    /// The oldest items, within the limits (always at least one item if any is pending).
    pub fn peek_batch(&self, max_items: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for k in &self.order {
            let Some(item) = self.items.get(k) else {
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

    /// Forget decided items and remember them as decided.
    pub fn remove_decided(&mut self, items: &[Vec<u8>]) {
        for item in items {
            let k = key(item);
            if let Some(old) = self.items.remove(&k) {
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
    }
}
