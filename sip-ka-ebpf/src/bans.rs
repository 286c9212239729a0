//! The ban check, with a per-CPU cache of recent verdicts in front of the
//! BANS trie.
//!
//! A trie lookup is a call into the kernel on every datagram to a SIP
//! port; the cache is an array slot found by a hash of the source address
//! (pointer arithmetic once verified, no call) holding the source, the
//! trie's answer for it and the ban generation it was read at. Every
//! writer of BANS (the daemon's shield, `sip-ka bans`) bumps `BANS_GEN`
//! after its change, which makes every cached verdict stale at once; the
//! daemon bumps it once a second as well, so a lost bump from two
//! writers racing is made good within a second. A cached ban still ends
//! on time: its end is compared with the clock, unless it has none.

use aya_ebpf::maps::lpm_trie::Key;
use sip_ka_common::{
    maps::{BAN_FOREVER, BAN_REASONS},
    Counter,
};

use crate::{
    clock,
    maps::{BANS, BANS_GEN, BAN_CACHE},
    structs::{BanSlot, Scratch, BAN_CACHE_BITS},
};

#[inline(always)]
fn slot_index(a: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let h = w(0) ^ w(4) ^ w(8) ^ w(12);
    h.wrapping_mul(0x9E37_79B1) >> (32 - BAN_CACHE_BITS)
}

/// The trie's answer for `s.src`: the drop counter of the longest
/// matching prefix's ban and its end, or 0 (no entry).
#[inline(always)]
fn lookup(s: &Scratch) -> (u32, u64) {
    let key = Key::new(128, s.src);
    match BANS.get(&key) {
        Some(ban) => {
            let reason = if (ban.reason as usize) < BAN_REASONS {
                ban.reason
            } else {
                BAN_REASONS as u32 - 1
            };
            (Counter::DropBanScanner as u32 + reason, ban.expires_ns)
        }
        None => (0, 0),
    }
}

#[inline(always)]
fn in_force(counter: u32, expires_ns: u64) -> Option<u32> {
    if counter == 0 {
        return None;
    }
    // The tick-grained CLOCK_MONOTONIC (the ban's end is on it), read only
    // for a banned source whose ban has an end.
    if expires_ns != BAN_FOREVER && expires_ns <= clock::monotonic() {
        return None;
    }
    Some(counter)
}

/// The drop counter of the ban in force on the source, if one is: the
/// longest matching prefix in BANS, compared with the clock (a ban lifts
/// on time whether or not a daemon is there to remove it).
#[inline(always)]
pub fn banned(s: &Scratch) -> Option<u32> {
    // Stamped one above the generation, so a zeroed slot is never fresh.
    let stamp = match BANS_GEN.get(0) {
        Some(g) => g.wrapping_add(1),
        None => 0,
    };
    let Some(slot) = BAN_CACHE.get_ptr_mut(slot_index(&s.src)) else {
        let (counter, expires_ns) = lookup(s);
        return in_force(counter, expires_ns);
    };
    let slot: &mut BanSlot = unsafe { &mut *slot };
    if stamp != 0 && slot.stamp == stamp && slot.addr == s.src {
        return in_force(slot.counter, slot.expires_ns);
    }
    let (counter, expires_ns) = lookup(s);
    slot.addr = s.src;
    slot.counter = counter;
    slot.expires_ns = expires_ns;
    slot.stamp = stamp;
    in_force(counter, expires_ns)
}
