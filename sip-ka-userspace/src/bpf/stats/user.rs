//! The userspace responder's counters, published into STATS.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use sip_ka_common::Counter;

use super::{publish_block, StatsMaps};

/// Counters of the userspace responder, published into STATS.
#[derive(Default)]
pub struct UserCounters {
    slots: [AtomicU64; USER_SLOTS.len()],
}

const USER_SLOTS: [Counter; 9] = [
    Counter::UserCrlfPing,
    Counter::UserCrlfPongSent,
    Counter::UserStunReq,
    Counter::UserStunResp,
    Counter::UserStunError,
    Counter::UserStunBadFp,
    Counter::UserIgnored,
    Counter::UserDropRateLimit,
    Counter::UserDropBanned,
];

impl UserCounters {
    /// The slot of `c` (the user counters are one block of indices);
    /// `None` for a counter the daemon does not own.
    fn slot(&self, c: Counter) -> Option<&AtomicU64> {
        let i = (c as u32).checked_sub(USER_SLOTS[0] as u32)?;
        self.slots.get(i as usize)
    }

    pub fn bump(&self, c: Counter) {
        if let Some(slot) = self.slot(c) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add(&self, c: Counter, n: u64) {
        if let Some(slot) = self.slot(c) {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn add_rate_limited(&self, n: u64) {
        self.add(Counter::UserDropRateLimit, n);
    }

    pub fn rate_limited(&self) -> u64 {
        self.get(Counter::UserDropRateLimit)
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.slot(c).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// `(STATS index, value)` of each counter, read now.
    pub fn values(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        USER_SLOTS
            .iter()
            .zip(&self.slots)
            .map(|(c, v)| (*c as u32, v.load(Ordering::Relaxed)))
    }

    /// Writes the totals into DAEMON_STATS, so `sip-ka stats` sums them
    /// like any counter.
    pub fn publish(&self, stats: &mut StatsMaps) -> Result<()> {
        let values: Vec<u64> = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        publish_block(stats, USER_SLOTS[0] as u32, &values)
    }
}

// The user slots are one block of consecutive indices.
const _: () = {
    let mut i = 1;
    while i < USER_SLOTS.len() {
        assert!(USER_SLOTS[i] as u32 == USER_SLOTS[0] as u32 + i as u32);
        i += 1;
    }
};
