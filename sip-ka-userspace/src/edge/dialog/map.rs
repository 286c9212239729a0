//! The table's dialogs by Call-ID hash, each in one slot with its session
//! timer entry and its node on the session timers' wheel: a million live
//! calls made three half-empty hash tables (dialogs, sessions, wheel
//! index) and a doubling node vector cost more than a dialog's strings'
//! overhead, and a refresh touched all of them.
//!
//! * Slots live in fixed-size chunks (no doubling: a full chunk stays as
//!   it is, a new one is added); a freed slot is reused.
//! * One index, a slot number per dialog, found by the Call-ID's hash;
//!   the hash is not stored but recomputed from the Call-ID in the
//!   dialog's block (when the index grows, and to check a candidate met
//!   by hash alone). The last slot found by hash is remembered: the
//!   session timers ask for the same dialog several times per message.
//! * Session entries and timers of ids with no dialog (the offer of an
//!   INVITE before its dialog exists, the tombstone of an expired one)
//!   are kept aside, in a map and a wheel of their own, and move into the
//!   slot when the dialog comes (and out of it when it goes).

use std::{cell::Cell, collections::HashMap, hash::BuildHasher};

use hashbrown::HashTable;
use sip_ka_common::callid_hash;

use super::model::Dialog;
use crate::{
    edge::session_timer::{Counts, Session, SessionStore, Track},
    util::{
        timer_wheel::{IdHashBuilder, TimerWheel},
        wheel::{Link, Links, Wheel},
    },
};

/// Slots per chunk (4096 x 64 bytes: 256 KiB, its own mmap).
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const NO_SLOT: u32 = u32::MAX;

/// A dialog, its session entry and its wheel node.
struct Slot {
    dialog: Option<Dialog>,
    track: Track,
    link: Link,
}

#[derive(Default)]
struct Slots {
    chunks: Vec<Vec<Slot>>,
    /// Freed slot numbers.
    free: Vec<u32>,
}

impl Slots {
    fn get(&self, i: u32) -> Option<&Slot> {
        let c = self.chunks.get((i >> CHUNK_BITS) as usize)?;
        c.get(i as usize & (CHUNK - 1))
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut Slot> {
        let c = self.chunks.get_mut((i >> CHUNK_BITS) as usize)?;
        c.get_mut(i as usize & (CHUNK - 1))
    }

    fn dialog(&self, i: u32) -> Option<&Dialog> {
        self.get(i).and_then(|s| s.dialog.as_ref())
    }

    /// The Call-ID hash of slot `i`'s dialog.
    fn key(&self, i: u32) -> Option<u64> {
        self.dialog(i).map(|d| callid_hash(d.cold.call_id_bytes()))
    }

    fn alloc(&mut self, d: Dialog) -> u32 {
        let slot = Slot {
            dialog: Some(d),
            track: Track::EMPTY,
            link: Link::OFF,
        };
        if let Some(i) = self.free.pop() {
            if let Some(s) = self.get_mut(i) {
                *s = slot;
                return i;
            }
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let n = self.chunks.len() - 1;
        match self.chunks.last_mut() {
            Some(c) => {
                c.push(slot);
                ((n << CHUNK_BITS) + c.len() - 1) as u32
            }
            None => NO_SLOT,
        }
    }
}

impl Links for Slots {
    fn link(&self, i: u32) -> Link {
        self.get(i).map_or(Link::OFF, |s| s.link)
    }

    fn set_link(&mut self, i: u32, l: Link) {
        if let Some(s) = self.get_mut(i) {
            s.link = l;
        }
    }
}

/// Dialogs by [`callid_hash`] of their Call-ID; at most one per hash.
/// Also the session timers' store ([`SessionStore`]).
pub struct DialogMap {
    index: HashTable<u32>,
    hasher: IdHashBuilder,
    slots: Slots,
    /// (hash, slot) of the last lookup by hash that found a dialog.
    last: Cell<(u64, u32)>,
    wheel: Wheel,
    /// Session entries and timers of ids with no dialog.
    orphans: HashMap<u64, Track, IdHashBuilder>,
    aside: TimerWheel,
    counts: Counts,
}

impl std::fmt::Debug for DialogMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogMap")
            .field("dialogs", &self.index.len())
            .field("orphans", &self.orphans.len())
            .field("aside", &self.aside.len())
            .finish()
    }
}

impl DialogMap {
    /// An empty map, its wheel's clock at `now_ms` (1 ms ticks).
    pub(super) fn new(now_ms: u64) -> DialogMap {
        DialogMap {
            index: HashTable::new(),
            hasher: IdHashBuilder::default(),
            slots: Slots::default(),
            last: Cell::new((0, NO_SLOT)),
            wheel: Wheel::new(1, now_ms),
            orphans: HashMap::with_hasher(IdHashBuilder::default()),
            aside: TimerWheel::new(1, now_ms),
            counts: Counts::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of the dialog whose Call-ID is `call_id`, `hash` its hash.
    fn find_call(&self, hash: u64, call_id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(hash);
        let slots = &self.slots;
        let i = *self.index.find(h, |&i| {
            slots.dialog(i).is_some_and(|d| d.cold.call_id_is(call_id))
        })?;
        self.last.set((hash, i));
        Some(i)
    }

    /// The slot of the dialog whose Call-ID hashes to `hash`.
    fn find(&self, hash: u64) -> Option<u32> {
        let (h, i) = self.last.get();
        if h == hash && i != NO_SLOT {
            return Some(i);
        }
        let slots = &self.slots;
        let i = *self
            .index
            .find(self.hasher.hash_one(hash), |&i| slots.key(i) == Some(hash))?;
        self.last.set((hash, i));
        Some(i)
    }

    pub(super) fn get_call(&self, hash: u64, call_id: &str) -> Option<&Dialog> {
        let i = self.find_call(hash, call_id)?;
        self.slots.dialog(i)
    }

    pub(super) fn get_call_mut(&mut self, hash: u64, call_id: &str) -> Option<&mut Dialog> {
        let i = self.find_call(hash, call_id)?;
        self.slots.get_mut(i)?.dialog.as_mut()
    }

    pub(super) fn get(&self, hash: &u64) -> Option<&Dialog> {
        self.slots.dialog(self.find(*hash)?)
    }

    pub(super) fn get_mut(&mut self, hash: &u64) -> Option<&mut Dialog> {
        let i = self.find(*hash)?;
        self.slots.get_mut(i)?.dialog.as_mut()
    }

    pub(super) fn contains_key(&self, hash: &u64) -> bool {
        self.find(*hash).is_some()
    }

    /// Adds `d`, whose Call-ID's hash is `hash`; returns the dialog it
    /// replaces (whose session entry and timer stay). A session entry or
    /// timer kept aside for `hash` moves into the slot.
    pub(super) fn insert(&mut self, hash: u64, d: Dialog) -> Option<Dialog> {
        if let Some(i) = self.find(hash) {
            let s = self.slots.get_mut(i)?;
            return s.dialog.replace(d);
        }
        let i = self.slots.alloc(d);
        let DialogMap {
            index,
            hasher,
            slots,
            ..
        } = self;
        index.insert_unique(hasher.hash_one(hash), i, |&j| {
            hasher.hash_one(slots.key(j).unwrap_or(0))
        });
        self.last.set((hash, i));
        if let Some(t) = self.orphans.remove(&hash) {
            if let Some(s) = self.slots.get_mut(i) {
                s.track = t;
            }
        }
        if let Some(at) = self.aside.cancel(hash) {
            self.wheel.set(&mut self.slots, i, at);
        }
        None
    }

    /// Removes the dialog of `hash`; its session entry and timer, if any,
    /// are kept aside.
    pub(super) fn remove(&mut self, hash: &u64) -> Option<Dialog> {
        let i = self.find(*hash)?;
        let h = self.hasher.hash_one(*hash);
        if let Ok(e) = self.index.find_entry(h, |&j| j == i) {
            e.remove();
        }
        self.last.set((0, NO_SLOT));
        if let Some(at) = self.wheel.remove(&mut self.slots, i) {
            self.aside.set(*hash, at);
        }
        let s = self.slots.get_mut(i)?;
        let track = std::mem::replace(&mut s.track, Track::EMPTY);
        let d = s.dialog.take();
        self.slots.free.push(i);
        if track != Track::EMPTY {
            self.orphans.insert(*hash, track);
        }
        d
    }

    /// Every dialog with its hash, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Dialog)> + '_ {
        self.values()
            .map(|d| (callid_hash(d.cold.call_id_bytes()), d))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Dialog> + '_ {
        self.index.iter().filter_map(|&i| self.slots.dialog(i))
    }
}

impl SessionStore for DialogMap {
    fn track(&self, dialog: u64) -> Track {
        match self.find(dialog).and_then(|i| self.slots.get(i)) {
            Some(s) => s.track,
            None => self.orphans.get(&dialog).copied().unwrap_or(Track::EMPTY),
        }
    }

    fn set_track(&mut self, dialog: u64, t: Track) {
        let before = match self.find(dialog).and_then(|i| self.slots.get_mut(i)) {
            Some(s) => std::mem::replace(&mut s.track, t),
            None if t == Track::EMPTY => self.orphans.remove(&dialog).unwrap_or(Track::EMPTY),
            None => self.orphans.insert(dialog, t).unwrap_or(Track::EMPTY),
        };
        self.counts.change(&before, &t);
    }

    fn arm(&mut self, dialog: u64, at_ms: u64) {
        match self.find(dialog) {
            Some(i) => self.wheel.set(&mut self.slots, i, at_ms),
            None => {
                self.aside.set(dialog, at_ms);
            }
        }
    }

    fn disarm(&mut self, dialog: u64) {
        match self.find(dialog) {
            Some(i) => {
                self.wheel.remove(&mut self.slots, i);
            }
            None => {
                self.aside.cancel(dialog);
            }
        }
    }

    fn armed_at(&self, dialog: u64) -> Option<u64> {
        match self.find(dialog) {
            Some(i) => self.wheel.expires_at(&self.slots, i),
            None => self.aside.expires_at(dialog),
        }
    }

    fn expire(&mut self, now_ms: u64, due: &mut Vec<u64>) {
        let mut slots = Vec::new();
        self.wheel.expire(&mut self.slots, now_ms, &mut slots);
        due.extend(slots.into_iter().filter_map(|i| self.slots.key(i)));
        due.extend(self.aside.expire(now_ms));
    }

    fn next_deadline(&self) -> Option<u64> {
        match (self.wheel.next_deadline(), self.aside.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn counts(&self) -> (usize, usize) {
        self.counts.get()
    }

    fn sessions(&self) -> Vec<(u64, Session)> {
        let slotted = self.index.iter().filter_map(|&i| {
            let s = self.slots.get(i)?;
            Some((self.slots.key(i)?, s.track.session()?))
        });
        let aside = self
            .orphans
            .iter()
            .filter_map(|(&d, t)| t.session().map(|s| (d, s)));
        slotted.chain(aside).collect()
    }
}
