//! The hierarchical timing wheel itself, without a store for its nodes:
//! the nodes are links ([`Link`]) kept wherever their owner keeps the rest
//! of what a timer belongs to, reached by number through [`Links`]. The
//! dialog table keeps a dialog, its session and its wheel node in one slot
//! this way (no second map from dialog to node); [`super::timer_wheel`]
//! keeps nodes in a slab of its own, found by id.
//!
//! 11 levels of 64 slots (6 bits each, 66 bits: the whole `u64` tick
//! range, so nothing overflows). Each slot is a circular list whose head is
//! a sentinel of the wheel's own, so unlinking never needs to know the
//! slot; a slot's occupancy bit is cleared lazily when the wheel reaches it
//! empty. An entry is moved down (cascaded) at most once per level, and
//! [`Wheel::expire`] jumps from one occupied slot to the next with
//! per-level occupancy bitmaps, so idle ticks cost nothing.

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
const LEVELS: usize = 11;
/// Node numbers below this are the wheel's sentinels; a store's node `i`
/// is number `SENTINELS + i`.
const SENTINELS: u32 = (LEVELS * SLOTS) as u32;
/// No node (the `prev` of a link that is not on the wheel).
pub const NIL: u32 = u32::MAX;

/// One node's place on the wheel: expiry (ticks) and its neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub when: u64,
    pub prev: u32,
    pub next: u32,
}

impl Link {
    /// Not on the wheel.
    pub const OFF: Link = Link {
        when: 0,
        prev: NIL,
        next: NIL,
    };

    pub fn is_on(&self) -> bool {
        self.prev != NIL
    }
}

/// Where the nodes of a wheel live: node `i` of the store (a number the
/// store chose; stays the same while the node is on the wheel).
pub trait Links {
    fn link(&self, i: u32) -> Link;
    fn set_link(&mut self, i: u32, l: Link);
}

/// The wheel: its clock, occupancy and sentinels. Every call that touches
/// nodes takes their store.
#[derive(Debug)]
pub struct Wheel {
    tick_ms: u64,
    /// The wheel's current tick: everything before it has been expired.
    elapsed: u64,
    /// Per level, which slots may hold entries (bits are cleared lazily).
    occupied: [u64; LEVELS],
    heads: Vec<Link>,
}

fn level_for(elapsed: u64, when: u64) -> usize {
    let masked = (elapsed ^ when) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

fn slot_for(level: usize, when: u64) -> usize {
    ((when >> (level as u32 * SLOT_BITS)) & SLOT_MASK) as usize
}

impl Wheel {
    /// Ticks of `tick_ms` milliseconds (at least 1), the clock at `now_ms`.
    pub fn new(tick_ms: u64, now_ms: u64) -> Wheel {
        let tick_ms = tick_ms.max(1);
        Wheel {
            tick_ms,
            elapsed: now_ms / tick_ms,
            occupied: [0; LEVELS],
            heads: (0..SENTINELS)
                .map(|i| Link {
                    when: 0,
                    prev: i,
                    next: i,
                })
                .collect(),
        }
    }

    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// The wheel's clock, in ms (the last expiry or its start).
    pub fn now_ms(&self) -> u64 {
        self.elapsed.saturating_mul(self.tick_ms)
    }

    fn get(&self, s: &impl Links, n: u32) -> Link {
        match self.heads.get(n as usize) {
            Some(h) => *h,
            None => s.link(n - SENTINELS),
        }
    }

    fn put(&mut self, s: &mut impl Links, n: u32, l: Link) {
        match self.heads.get_mut(n as usize) {
            Some(h) => *h = l,
            None => s.set_link(n - SENTINELS, l),
        }
    }

    /// The expiry (ms, rounded up to a tick) of store node `i`, if on.
    pub fn expires_at(&self, s: &impl Links, i: u32) -> Option<u64> {
        let l = s.link(i);
        l.is_on().then(|| l.when.saturating_mul(self.tick_ms))
    }

    /// Puts store node `i` on the wheel at `at_ms` (absolute), moving it if
    /// it is on already. A time at or before the clock expires at the next
    /// [`Wheel::expire`].
    pub fn set(&mut self, s: &mut impl Links, i: u32, at_ms: u64) {
        let when = at_ms.div_ceil(self.tick_ms).max(self.elapsed);
        self.remove(s, i);
        self.link(s, i + SENTINELS, when);
    }

    /// Takes store node `i` off the wheel; its expiry (ms) if it was on.
    pub fn remove(&mut self, s: &mut impl Links, i: u32) -> Option<u64> {
        let l = s.link(i);
        if !l.is_on() {
            return None;
        }
        self.unlink(s, l);
        s.set_link(i, Link::OFF);
        Some(l.when.saturating_mul(self.tick_ms))
    }

    /// A time (ms) at or before the next expiry; `None` when nothing is
    /// on. It may be early (a slot that must be cascaded, or emptied),
    /// never late.
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_slot()
            .map(|(_, _, d)| d.saturating_mul(self.tick_ms))
    }

    /// Advances the clock to `now_ms`; the store nodes that are due are
    /// taken off and appended to `due`, in order of expiry tick.
    pub fn expire(&mut self, s: &mut impl Links, now_ms: u64, due: &mut Vec<u32>) {
        let now = now_ms / self.tick_ms;
        while let Some((level, slot, deadline)) = self.next_slot() {
            if deadline > now {
                break;
            }
            self.elapsed = self.elapsed.max(deadline);
            self.take_slot(s, level, slot, due);
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// The next occupied slot: (level, slot, deadline in ticks).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for (level, &bits) in self.occupied.iter().enumerate() {
            if bits == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) & SLOT_MASK) as u32;
            // First occupied slot at or after the current one, circularly.
            let zeros = bits.rotate_right(now_slot).trailing_zeros();
            let slot = (zeros + now_slot) as u64 & SLOT_MASK;
            let span = shift + SLOT_BITS;
            let level_start = if span >= 64 {
                0
            } else {
                self.elapsed & !((1u64 << span) - 1)
            };
            let mut deadline = level_start + (slot << shift);
            if deadline < self.elapsed && span < 64 {
                deadline = deadline.saturating_add(1u64 << span);
            }
            return Some((level, slot as usize, deadline.max(self.elapsed)));
        }
        None
    }

    /// Empties one slot: what is due goes to `due`, the rest cascades.
    fn take_slot(&mut self, s: &mut impl Links, level: usize, slot: usize, due: &mut Vec<u32>) {
        if let Some(bits) = self.occupied.get_mut(level) {
            *bits &= !(1u64 << slot);
        }
        let head = (level * SLOTS + slot) as u32;
        let mut n = self.get(s, head).next;
        self.put(
            s,
            head,
            Link {
                when: 0,
                prev: head,
                next: head,
            },
        );
        while n != head && n >= SENTINELS {
            let e = self.get(s, n);
            if e.when <= self.elapsed {
                self.put(s, n, Link::OFF);
                due.push(n - SENTINELS);
            } else {
                self.link(s, n, e.when);
            }
            n = e.next;
        }
    }

    fn link(&mut self, s: &mut impl Links, n: u32, when: u64) {
        let level = level_for(self.elapsed, when);
        let slot = slot_for(level, when);
        let head = (level * SLOTS + slot) as u32;
        let tail = self.get(s, head).prev;
        self.put(
            s,
            n,
            Link {
                when,
                prev: tail,
                next: head,
            },
        );
        let mut t = self.get(s, tail);
        t.next = n;
        self.put(s, tail, t);
        let mut h = self.get(s, head);
        h.prev = n;
        self.put(s, head, h);
        if let Some(bits) = self.occupied.get_mut(level) {
            *bits |= 1u64 << slot;
        }
    }

    fn unlink(&mut self, s: &mut impl Links, l: Link) {
        let mut p = self.get(s, l.prev);
        p.next = l.next;
        self.put(s, l.prev, p);
        let mut n = self.get(s, l.next);
        n.prev = l.prev;
        self.put(s, l.next, n);
    }
}
