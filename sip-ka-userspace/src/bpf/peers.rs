//! The PEERS table as readers see it: each entry plus the keep-alives the
//! XDP program still holds for it in the per-CPU PEER_CACHE (under a
//! second's worth per CPU, see the program's `peers.rs`), so the counts
//! read are exact. Read in this order (PEERS, then the cache), a write
//! from the cache between the two reads is missed once, never counted
//! twice.

use std::{borrow::Borrow, collections::HashMap as StdHashMap};

use anyhow::Result;
use aya::maps::{HashMap, MapData, PerCpuArray};
use sip_ka_common::maps::{PeerKey, PeerSlot, PeerValue, PEER_CACHE_SLOTS};

/// Every entry of `peers` with the cache's counts added, sorted by key.
pub fn merged<P: Borrow<MapData>, C: Borrow<MapData>>(
    peers: &HashMap<P, PeerKey, PeerValue>,
    cache: &PerCpuArray<C, PeerSlot>,
) -> Result<Vec<(PeerKey, PeerValue)>> {
    // A key evicted under the walk restarts it from the first key: bounded
    // by the map's size.
    let mut table: StdHashMap<PeerKey, (PeerValue, u64)> = peers
        .iter()
        .take(sip_ka_common::maps::PEERS_MAX as usize)
        .filter_map(|r| r.ok())
        .map(|(k, v)| (k, (v, 0)))
        .collect();
    for i in 0..PEER_CACHE_SLOTS.min(cache.len()) {
        for slot in cache.get(&i, 0)?.iter() {
            let Some((v, newest)) = table.get_mut(&slot.key) else {
                // Its entry was evicted from PEERS: the counts go with it.
                continue;
            };
            // The slot that wrote last holds the newest kind.
            if slot.add_pending(v) && slot.flushed >= *newest {
                *newest = slot.flushed;
                v.last_kind = slot.last_kind;
            }
        }
    }
    let mut all: Vec<(PeerKey, PeerValue)> = table.into_iter().map(|(k, (v, _))| (k, v)).collect();
    all.sort_by_key(|(k, _)| (k.addr, k.port));
    Ok(all)
}
