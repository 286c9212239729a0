//! The BANS trie and its generation, BANS_GEN: every change to the trie
//! is followed by a bump of the generation, which sends the XDP program's
//! per-CPU cache of ban verdicts back to the trie (see the program's
//! `bans.rs`). Both writers (the daemon's shield, `sip-ka bans`) go
//! through [`BansMap`], so neither can change a ban without the bump.

use std::borrow::BorrowMut;

use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData, MapError};
use sip_ka_common::maps::{AclAddr, BanValue};

pub struct BansMap {
    trie: LpmTrie<MapData, AclAddr, BanValue>,
    gen: Array<MapData, u64>,
}

impl BansMap {
    pub fn new(trie: LpmTrie<MapData, AclAddr, BanValue>, gen: Array<MapData, u64>) -> BansMap {
        BansMap { trie, gen }
    }

    pub fn insert(
        &mut self,
        key: &Key<AclAddr>,
        value: BanValue,
        flags: u64,
    ) -> Result<(), MapError> {
        self.trie.insert(key, value, flags)?;
        bump(&mut self.gen);
        Ok(())
    }

    pub fn remove(&mut self, key: &Key<AclAddr>) -> Result<(), MapError> {
        self.trie.remove(key)?;
        bump(&mut self.gen);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<(Key<AclAddr>, BanValue), MapError>> + '_ {
        self.trie.iter()
    }

    /// Makes every cached verdict stale without a change: the daemon's
    /// writer does it once a second, which makes good a bump lost to two
    /// writers racing (the bump is a read and a write, not atomic).
    pub fn refresh(&mut self) {
        bump(&mut self.gen);
    }
}

/// Adds one to the generation (a failure leaves the cache as it was: the
/// next bump, within a second, catches up).
pub fn bump<T: BorrowMut<MapData>>(gen: &mut Array<T, u64>) {
    let g = gen.get(&0, 0).unwrap_or(0);
    if let Err(e) = gen.set(0, g.wrapping_add(1), 0) {
        log::warn!("BANS_GEN: {e}");
    }
}
