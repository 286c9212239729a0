//! A table capped by entry count and by bytes, that makes room by dropping
//! its oldest entries: what any table a stranger can fill is built on.
//! Insertion order is kept in a queue beside the map; an entry removed
//! out of order leaves its queue slot behind, skipped when it reaches the
//! front and swept out once stale slots outnumber live ones, so every
//! operation is amortised O(1) (never a scan per insertion).

use std::{
    borrow::Borrow,
    collections::{HashMap, VecDeque},
    hash::Hash,
};

struct Slot<V> {
    seq: u64,
    cost: usize,
    value: V,
}

/// Entries by key, at most `max_count` of them and `max_bytes` of cost.
pub struct Capped<K, V> {
    live: HashMap<K, Slot<V>>,
    order: VecDeque<(K, u64)>,
    next_seq: u64,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Capped<K, V> {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Capped {
            live: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            bytes: 0,
            max_count: max_count.max(1),
            max_bytes,
            evicted: 0,
        }
    }

    /// New caps; a table above them shrinks, oldest first, as entries
    /// come in.
    pub fn set_limits(&mut self, max_count: usize, max_bytes: usize) {
        self.max_count = max_count.max(1);
        self.max_bytes = max_bytes;
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The cost of the entries held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries dropped to make room, or refused because they alone
    /// exceed the byte cap, since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.live.get(key).map(|s| &s.value)
    }

    pub fn contains<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.live.contains_key(key)
    }

    /// Adds (or replaces) `key`, dropping the oldest entries until it fits.
    /// Returns what was dropped, oldest first; an entry that could never
    /// fit is not added and comes back itself.
    pub fn insert(&mut self, key: K, value: V, cost: usize) -> Vec<(K, V)> {
        self.remove(&key);
        let mut out = Vec::new();
        if cost > self.max_bytes {
            self.evicted += 1;
            out.push((key, value));
            return out;
        }
        while self.live.len() >= self.max_count || self.bytes + cost > self.max_bytes {
            match self.pop_oldest() {
                Some(e) => {
                    self.evicted += 1;
                    out.push(e);
                }
                None => break,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += cost;
        self.order.push_back((key.clone(), seq));
        self.live.insert(key, Slot { seq, cost, value });
        out
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let slot = self.live.remove(key)?;
        self.bytes -= slot.cost;
        // Stale queue slots must not outgrow the table.
        if self.order.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.order
                .retain(|(k, seq)| live.get::<K>(k).is_some_and(|s| s.seq == *seq));
        }
        Some(slot.value)
    }

    /// The oldest entry, if `stale` says it may go: removed and returned.
    pub fn pop_oldest_if(&mut self, stale: impl Fn(&V) -> bool) -> Option<(K, V)> {
        self.skip_dead();
        let (k, _) = self.order.front()?;
        if !self.live.get(k).is_some_and(|s| stale(&s.value)) {
            return None;
        }
        self.pop_oldest()
    }

    fn skip_dead(&mut self) {
        while let Some((k, seq)) = self.order.front() {
            if self.live.get::<K>(k).is_some_and(|s| s.seq == *seq) {
                return;
            }
            self.order.pop_front();
        }
    }

    fn pop_oldest(&mut self) -> Option<(K, V)> {
        self.skip_dead();
        let (k, _) = self.order.pop_front()?;
        let slot = self.live.remove(&k)?;
        self.bytes -= slot.cost;
        Some((k, slot.value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn count_cap_drops_the_oldest() {
        let mut c = Capped::new(3, usize::MAX);
        for i in 0..3u32 {
            assert!(c.insert(i, i, 1).is_empty());
        }
        assert_eq!(c.insert(3, 3, 1), vec![(0, 0)]);
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 1);
        // Removed out of order: its queue slot is skipped later.
        assert_eq!(c.remove(&1), Some(1));
        assert!(c.insert(4, 4, 1).is_empty());
        assert_eq!(c.insert(5, 5, 1), vec![(2, 2)]);
        assert!(c.get(&5).is_some() && c.get(&2).is_none());
    }

    #[test]
    fn byte_cap_drops_until_it_fits_and_refuses_the_oversized() {
        let mut c = Capped::new(100, 10);
        c.insert("a", (), 4);
        c.insert("b", (), 4);
        let dropped = c.insert("c", (), 6);
        assert_eq!(dropped.len(), 1);
        assert_eq!(c.bytes(), 10);
        let refused = c.insert("d", (), 11);
        assert_eq!(refused, vec![("d", ())]);
        assert_eq!(c.bytes(), 10);
        assert_eq!(c.evicted(), 2);
    }

    #[test]
    fn reinserting_a_key_replaces_it_and_its_cost() {
        let mut c = Capped::new(10, 100);
        c.insert(1, 'a', 50);
        c.insert(1, 'b', 20);
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 20);
        assert_eq!(c.get(&1), Some(&'b'));
        // The old queue slot of key 1 does not evict the new entry.
        assert_eq!(c.pop_oldest_if(|_| true), Some((1, 'b')));
        assert!(c.is_empty());
    }

    #[test]
    fn churn_keeps_the_queue_bounded() {
        let mut c = Capped::new(1_000, usize::MAX);
        for i in 0..100_000u64 {
            c.insert(i, (), 1);
            c.remove(&i);
        }
        assert!(c.order.len() <= 64 + 2, "{}", c.order.len());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn pop_oldest_if_stops_at_a_fresh_entry() {
        let mut c = Capped::new(10, 100);
        c.insert(1, 10u64, 1);
        c.insert(2, 20u64, 1);
        assert_eq!(c.pop_oldest_if(|at| *at < 15), Some((1, 10)));
        assert_eq!(c.pop_oldest_if(|at| *at < 15), None);
        assert_eq!(c.len(), 1);
    }
}
