//! One timer structure for every dialog: a hierarchical timing wheel keyed
//! by a dialog id (`u64`), with absolute expiry times.
//!
//! * Times are absolute milliseconds on whatever clock the caller uses
//!   (wall-clock milliseconds since the epoch when the expiry times are
//!   persisted and restored after a restart; a time already in the past
//!   expires at the next [`TimerWheel::expire`]).
//! * [`TimerWheel::set`] (insert or refresh) and [`TimerWheel::cancel`] are
//!   O(1): a hash lookup plus unlinking/linking one node of an intrusive
//!   doubly linked list.
//! * [`TimerWheel::expire`] advances the wheel to `now` and yields the ids
//!   that are due. It jumps from one occupied slot to the next with
//!   per-level occupancy bitmaps, so idle ticks cost nothing; an entry is
//!   moved down (cascaded) at most once per level.
//! * An id fires no earlier than its expiry time and no later than one tick
//!   after it (the expiry is rounded up to a whole tick).
//!
//! Layout: the wheel is [`super::wheel::Wheel`]; its nodes live in a
//! slab (`Vec`) of [`ENTRY_BYTES`]-byte nodes; an id index
//! ([`MAP_ENTRY_BYTES`] bytes per entry, the node's number, plus one
//! control byte, at most 8/7 overhead before the table doubles) finds the
//! node of an id: the id itself is in the node, so the index keeps no
//! second copy of it.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

use super::wheel::{Link, Links, Wheel, NIL};

/// A node of the slab: a timer or a free node (whose `next` is the next
/// free one).
#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    link: Link,
}

/// Bytes of one timer node in the slab.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
/// Bytes of one entry of the id index (a node number).
pub const MAP_ENTRY_BYTES: usize = std::mem::size_of::<u32>();

/// Hasher for ids: dialog ids are already hashes of Call-IDs, so a seeded
/// multiply-xorshift mix is enough to spread them (the seed is random per
/// process, so ids chosen from outside cannot be aimed at one bucket
/// without knowing it).
#[derive(Clone, Copy, Debug)]
pub struct IdHashBuilder {
    seed: u64,
}

impl Default for IdHashBuilder {
    fn default() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        IdHashBuilder { seed: seed | 1 }
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            seed: self.seed,
            h: 0,
        }
    }
}

/// See [`IdHashBuilder`].
#[derive(Clone, Copy, Debug)]
pub struct IdHasher {
    seed: u64,
    h: u64,
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.h
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let mut v = (self.h ^ x ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        v ^= v >> 29;
        v = v.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        v ^= v >> 32;
        self.h = v;
    }
}

/// The timing wheel. See the module documentation.
#[derive(Debug)]
pub struct TimerWheel {
    wheel: Wheel,
    nodes: Nodes,
    /// First free node, `NIL` when none.
    free: u32,
    index: Index,
    /// Reused between expiries.
    due: Vec<u32>,
    ids: Vec<u64>,
}

#[derive(Debug)]
struct Nodes(Vec<Entry>);

impl Links for Nodes {
    fn link(&self, i: u32) -> Link {
        self.0.get(i as usize).map_or(Link::OFF, |e| e.link)
    }

    fn set_link(&mut self, i: u32, l: Link) {
        if let Some(e) = self.0.get_mut(i as usize) {
            e.link = l;
        }
    }
}

/// The id index: node numbers, each found by its node's id.
#[derive(Debug)]
struct Index {
    table: HashTable<u32>,
    hasher: IdHashBuilder,
}

fn id_of(nodes: &[Entry], i: u32) -> u64 {
    nodes.get(i as usize).map_or(u64::MAX, |e| e.id)
}

impl Index {
    fn with_capacity(capacity: usize) -> Index {
        Index {
            table: HashTable::with_capacity(capacity),
            hasher: IdHashBuilder::default(),
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn get(&self, nodes: &[Entry], id: u64) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table.find(hash, |&i| id_of(nodes, i) == id).copied()
    }

    /// Adds node `i`, whose id is set already and not in the index.
    fn insert(&mut self, nodes: &[Entry], i: u32) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id_of(nodes, i));
        self.table
            .insert_unique(hash, i, |&j| hasher.hash_one(id_of(nodes, j)));
    }

    fn remove(&mut self, nodes: &[Entry], id: u64) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        match self.table.find_entry(hash, |&i| id_of(nodes, i) == id) {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }
}

impl TimerWheel {
    /// A wheel with ticks of `tick_ms` milliseconds (at least 1), whose
    /// clock starts at `now_ms`.
    pub fn new(tick_ms: u64, now_ms: u64) -> Self {
        Self::with_capacity(tick_ms, now_ms, 0)
    }

    /// As [`TimerWheel::new`], with room for `capacity` timers.
    pub fn with_capacity(tick_ms: u64, now_ms: u64, capacity: usize) -> Self {
        TimerWheel {
            wheel: Wheel::new(tick_ms, now_ms),
            nodes: Nodes(Vec::with_capacity(capacity)),
            free: NIL,
            index: Index::with_capacity(capacity),
            due: Vec::new(),
            ids: Vec::new(),
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.wheel.tick_ms()
    }

    /// The wheel's clock, in ms.
    pub fn now_ms(&self) -> u64 {
        self.wheel.now_ms()
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        self.index.get(&self.nodes.0, id).is_some()
    }

    /// The expiry of `id` in milliseconds (rounded up to a tick).
    pub fn expires_at(&self, id: u64) -> Option<u64> {
        let i = self.index.get(&self.nodes.0, id)?;
        self.wheel.expires_at(&self.nodes, i)
    }

    /// Sets the expiry of `id` to `at_ms` (absolute), inserting it or
    /// moving it (a refresh). Returns the previous expiry, if any. A time
    /// at or before the wheel's clock expires at the next
    /// [`TimerWheel::expire`].
    pub fn set(&mut self, id: u64, at_ms: u64) -> Option<u64> {
        let (i, previous) = match self.index.get(&self.nodes.0, id) {
            Some(i) => (i, self.wheel.expires_at(&self.nodes, i)),
            None => {
                let i = self.alloc(id);
                self.index.insert(&self.nodes.0, i);
                (i, None)
            }
        };
        self.wheel.set(&mut self.nodes, i, at_ms);
        previous
    }

    /// Removes the timer of `id`; returns its expiry if there was one.
    pub fn cancel(&mut self, id: u64) -> Option<u64> {
        let i = self.index.remove(&self.nodes.0, id)?;
        let at = self.wheel.remove(&mut self.nodes, i);
        self.release(i);
        at
    }

    /// Every pending timer as (id, expiry in ms), in no particular order
    /// (for persisting absolute expiry times).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.index.table.iter().filter_map(move |&i| {
            let id = id_of(&self.nodes.0, i);
            self.wheel.expires_at(&self.nodes, i).map(|at| (id, at))
        })
    }

    /// A time (ms) at or before the next expiry, to sleep until; `None`
    /// when no timer is pending. It may be early (a slot that must be
    /// cascaded, or emptied by cancels), never late.
    pub fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    /// Advances the wheel to `now_ms` and returns the ids that are due,
    /// which are removed. Ids come out in order of expiry tick.
    pub fn expire(&mut self, now_ms: u64) -> impl Iterator<Item = u64> + '_ {
        self.due.clear();
        self.ids.clear();
        self.wheel.expire(&mut self.nodes, now_ms, &mut self.due);
        for k in 0..self.due.len() {
            let Some(&i) = self.due.get(k) else { break };
            let id = id_of(&self.nodes.0, i);
            self.index.remove(&self.nodes.0, id);
            self.release(i);
            self.ids.push(id);
        }
        self.ids.drain(..)
    }

    // ----- internals -----

    fn alloc(&mut self, id: u64) -> u32 {
        let entry = Entry {
            id,
            link: Link::OFF,
        };
        if self.free != NIL {
            let i = self.free;
            if let Some(e) = self.nodes.0.get_mut(i as usize) {
                self.free = e.link.next;
                *e = entry;
            }
            i
        } else {
            self.nodes.0.push(entry);
            (self.nodes.0.len() - 1) as u32
        }
    }

    fn release(&mut self, i: u32) {
        let free = self.free;
        if let Some(e) = self.nodes.0.get_mut(i as usize) {
            e.link = Link {
                when: 0,
                prev: NIL,
                next: free,
            };
            self.free = i;
        }
    }
}

/// Memory per timer, in bytes, by the structure sizes: one slab node plus
/// one id-map entry and its control byte, at a load factor of `load` (the
/// map holds between 7/16 and 7/8 of its buckets).
pub fn bytes_per_timer(load: f64) -> f64 {
    ENTRY_BYTES as f64 + (MAP_ENTRY_BYTES as f64 + 1.0) / load
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn drain(w: &mut TimerWheel, now: u64) -> Vec<u64> {
        let mut v: Vec<u64> = w.expire(now).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn entry_is_24_bytes() {
        assert_eq!(ENTRY_BYTES, 24);
        assert_eq!(MAP_ENTRY_BYTES, 4);
    }

    #[test]
    fn expires_at_the_right_tick() {
        let mut w = TimerWheel::new(1, 1_000);
        w.set(7, 1_000 + 90_000);
        assert!(drain(&mut w, 1_000 + 89_999).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(drain(&mut w, 1_000 + 90_000), vec![7]);
        assert!(w.is_empty());
        assert!(drain(&mut w, 1_000_000).is_empty());
    }

    #[test]
    fn expiry_rounds_up_to_a_tick_never_early() {
        let mut w = TimerWheel::new(100, 0);
        w.set(1, 1_050); // rounds up to 1_100
        assert_eq!(w.expires_at(1), Some(1_100));
        assert!(drain(&mut w, 1_050).is_empty());
        assert!(drain(&mut w, 1_099).is_empty());
        assert_eq!(drain(&mut w, 1_100), vec![1]);
    }

    #[test]
    fn expires_exactly_when_stepping_every_tick() {
        let mut w = TimerWheel::new(1, 0);
        let targets = [1u64, 63, 64, 65, 4_095, 4_096, 4_097, 262_145, 300_000];
        for (i, &t) in targets.iter().enumerate() {
            w.set(i as u64, t);
        }
        let mut fired = Vec::new();
        for now in 0..=300_000u64 {
            for id in w.expire(now) {
                fired.push((id, now));
            }
        }
        let want: Vec<(u64, u64)> = targets
            .iter()
            .enumerate()
            .map(|(i, &t)| (i as u64, t))
            .collect();
        assert_eq!(fired, want);
    }

    #[test]
    fn refresh_moves_the_expiry() {
        let mut w = TimerWheel::new(1, 0);
        assert_eq!(w.set(5, 10_000), None);
        assert_eq!(drain(&mut w, 4_000), Vec::<u64>::new());
        // Refresh later.
        assert_eq!(w.set(5, 20_000), Some(10_000));
        assert!(drain(&mut w, 10_000).is_empty());
        assert!(drain(&mut w, 19_999).is_empty());
        assert_eq!(drain(&mut w, 20_000), vec![5]);
        // Refresh earlier.
        w.set(6, 90_000);
        w.set(6, 30_000);
        assert_eq!(drain(&mut w, 30_000), vec![6]);
        assert!(drain(&mut w, 100_000).is_empty());
    }

    #[test]
    fn cancel_removes() {
        let mut w = TimerWheel::new(1, 0);
        w.set(1, 500);
        w.set(2, 500);
        w.set(3, 500);
        assert_eq!(w.cancel(2), Some(500));
        assert_eq!(w.cancel(2), None);
        assert!(!w.contains(2));
        assert_eq!(drain(&mut w, 500), vec![1, 3]);
        assert_eq!(w.cancel(1), None);
        // A slot emptied by cancels is skipped.
        w.set(9, 10_000);
        w.cancel(9);
        assert!(drain(&mut w, 20_000).is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn many_timers() {
        let mut w = TimerWheel::new(1, 0);
        let n = 100_000u64;
        for id in 0..n {
            // Spread over ~1 hour, deterministic.
            w.set(id, (id * 7_919) % 3_600_000 + 1);
        }
        // Cancel every tenth, refresh every seventh to +1 h.
        for id in (0..n).step_by(10) {
            w.cancel(id);
        }
        for id in (3..n).step_by(7) {
            if id % 10 != 0 {
                w.set(id, 3_600_000 + id);
            }
        }
        let mut seen = 0u64;
        let mut now = 0;
        while now <= 7_300_000 {
            now += 997;
            for id in w.expire(now) {
                let want = if id % 7 == 3 {
                    3_600_000 + id
                } else {
                    (id * 7_919) % 3_600_000 + 1
                };
                assert!(want <= now && want + 997 > now, "id {id} at {now}");
                assert_ne!(id % 10, 0);
                seen += 1;
            }
        }
        assert_eq!(seen, n - n / 10);
        assert!(w.is_empty());
    }

    #[test]
    fn far_future_cascades() {
        let start = 1_700_000_000_000u64; // wall-clock ms
        let mut w = TimerWheel::new(1, start);
        let far = [
            start + 86_400_000,        // a day
            start + 31_536_000_000,    // a year
            start + 3_153_600_000_000, // a century
            u64::MAX - 5,
        ];
        for (i, &t) in far.iter().enumerate() {
            w.set(i as u64, t);
        }
        for (i, &t) in far.iter().enumerate() {
            assert!(drain(&mut w, t - 1).is_empty(), "{i} early");
            assert_eq!(drain(&mut w, t), vec![i as u64], "{i}");
        }
        assert!(w.is_empty());
    }

    #[test]
    fn restored_times_in_the_past_expire_at_once() {
        let mut w = TimerWheel::new(10, 5_000_000);
        w.set(1, 4_000_000); // fell due while the daemon was down
        w.set(2, 0);
        w.set(3, 5_000_000);
        w.set(4, 5_000_001); // future
        assert_eq!(w.next_deadline(), Some(5_000_000));
        assert_eq!(drain(&mut w, 5_000_000), vec![1, 2, 3]);
        assert_eq!(drain(&mut w, 5_000_010), vec![4]);
    }

    #[test]
    fn persisted_times_round_trip() {
        let mut w = TimerWheel::new(1, 1_000);
        for id in 0..100u64 {
            w.set(id, 2_000 + id * 1_000);
        }
        let mut saved: Vec<(u64, u64)> = w.iter().collect();
        saved.sort_unstable();
        let mut restored = TimerWheel::new(1, 50_000);
        for &(id, at) in &saved {
            restored.set(id, at);
        }
        assert_eq!(drain(&mut restored, 50_000).len(), 49);
        assert_eq!(drain(&mut restored, 51_000), vec![49]);
        assert_eq!(restored.expires_at(99), Some(101_000));
    }

    #[test]
    fn next_deadline_is_never_late() {
        let mut w = TimerWheel::new(1, 0);
        w.set(1, 1_000_000);
        let mut now = 0;
        loop {
            let d = w.next_deadline().unwrap();
            assert!(d <= 1_000_000);
            now = d.max(now);
            if w.expire(now).next() == Some(1) {
                break;
            }
        }
        assert_eq!(now, 1_000_000);
    }
}
