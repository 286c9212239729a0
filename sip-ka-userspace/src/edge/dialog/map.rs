//! The table's dialogs by Call-ID hash, without a copy of the key: a
//! dialog's key is the hash of the Call-ID it holds, recomputed when the
//! table grows and when a lookup by hash alone meets a candidate. A
//! million live calls make the 8 bytes of a stored key, times the spare
//! buckets of a table that doubles, count.

use hashbrown::{hash_table::Entry, HashTable};
use sip_ka_common::callid_hash;

use super::model::Dialog;
use crate::util::timer_wheel::IdHashBuilder;
use std::hash::BuildHasher;

/// Dialogs by [`callid_hash`] of their Call-ID; at most one per hash.
pub(super) struct DialogMap {
    table: HashTable<Dialog>,
    hasher: IdHashBuilder,
}

fn key(d: &Dialog) -> u64 {
    callid_hash(d.cold.call_id_bytes())
}

impl DialogMap {
    pub(super) fn new() -> DialogMap {
        DialogMap {
            table: HashTable::new(),
            hasher: IdHashBuilder::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The dialog whose Call-ID is `call_id`, `hash` being its hash.
    pub(super) fn get_call(&self, hash: u64, call_id: &str) -> Option<&Dialog> {
        let h = self.hasher.hash_one(hash);
        self.table.find(h, |d| d.cold.call_id_is(call_id))
    }

    pub(super) fn get_call_mut(&mut self, hash: u64, call_id: &str) -> Option<&mut Dialog> {
        let h = self.hasher.hash_one(hash);
        self.table.find_mut(h, |d| d.cold.call_id_is(call_id))
    }

    pub(super) fn get(&self, hash: &u64) -> Option<&Dialog> {
        let h = self.hasher.hash_one(*hash);
        self.table.find(h, |d| key(d) == *hash)
    }

    pub(super) fn get_mut(&mut self, hash: &u64) -> Option<&mut Dialog> {
        let h = self.hasher.hash_one(*hash);
        self.table.find_mut(h, |d| key(d) == *hash)
    }

    pub(super) fn contains_key(&self, hash: &u64) -> bool {
        self.get(hash).is_some()
    }

    /// Adds `d`, whose Call-ID's hash is `hash`; returns the dialog it
    /// replaces.
    pub(super) fn insert(&mut self, hash: u64, d: Dialog) -> Option<Dialog> {
        let DialogMap { table, hasher } = self;
        let h = hasher.hash_one(hash);
        match table.entry(h, |o| key(o) == hash, |o| hasher.hash_one(key(o))) {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), d)),
            Entry::Vacant(e) => {
                e.insert(d);
                None
            }
        }
    }

    pub(super) fn remove(&mut self, hash: &u64) -> Option<Dialog> {
        let h = self.hasher.hash_one(*hash);
        match self.table.find_entry(h, |d| key(d) == *hash) {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }

    /// Every dialog with its hash, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Dialog)> + '_ {
        self.table.iter().map(|d| (key(d), d))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Dialog> + '_ {
        self.table.iter()
    }
}
