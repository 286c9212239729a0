//! The PEERS table, written through a per-CPU cache of recent peers.
//!
//! A keep-alive from a peer this CPU wrote to PEERS less than a second ago
//! is only counted in the peer's slot of PEER_CACHE: an array slot found
//! by a hash of the source, so no helper call and no cache line another
//! CPU writes. The counts reach PEERS with the peer's first keep-alive a
//! second or more after the last write, or when another peer takes the
//! slot. Readers (`sip-ka peers`, the test harness) add what the slots
//! hold, so counts read are exact; `last_seen_ns` and `last_kind` in
//! PEERS lag the last keep-alive by under a second.

use sip_ka_common::{
    maps::{PeerKey, PeerSlot, PeerValue, KIND_CRLF, KIND_STUN, PEER_CACHE_BITS},
    Config,
};

use crate::{
    clock,
    maps::{atomic_add, PEERS, PEER_CACHE},
    structs::{Scratch, Udp},
};

const NS: u64 = 1_000_000_000;

/// The slot of `k`: its words folded, then Fibonacci hashing (the top
/// bits of a multiply).
#[inline(always)]
fn slot_index(k: &PeerKey) -> u32 {
    let a = &k.addr;
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    let h = w(0) ^ w(4) ^ w(8) ^ w(12).rotate_left(16) ^ k.port as u32;
    h.wrapping_mul(0x9E37_79B1) >> (32 - PEER_CACHE_BITS)
}

#[inline(always)]
fn pend(slot: &mut PeerSlot, kind: u32) {
    match kind {
        KIND_CRLF => slot.crlf = slot.crlf.wrapping_add(1),
        KIND_STUN => slot.stun = slot.stun.wrapping_add(1),
        _ => slot.sip = slot.sip.wrapping_add(1),
    }
    slot.last_kind = kind;
}

/// Adds the slot's counts to its peer's PEERS entry (created if missing)
/// and empties them. `seen` is the time to record as last seen: `None`
/// for a peer losing its slot, whose last write already holds a time
/// under a second before its counts.
#[inline(always)]
fn flush(slot: &mut PeerSlot, seen: Option<u64>) {
    match PEERS.get_ptr_mut(&slot.key) {
        Some(v) => unsafe {
            // Shared across CPUs: atomic adds for the counts; the time and
            // kind are stored only when they change (the time to the
            // second), so a peer's entry is written as little as it can be.
            if slot.crlf != 0 {
                atomic_add(&raw mut (*v).crlf, slot.crlf as u64);
            }
            if slot.stun != 0 {
                atomic_add(&raw mut (*v).stun, slot.stun as u64);
            }
            if slot.sip != 0 {
                atomic_add(&raw mut (*v).sip, slot.sip as u64);
            }
            if let Some(now) = seen {
                if (*v).last_seen_ns / NS != now / NS {
                    (*v).last_seen_ns = now;
                }
            }
            if (*v).last_kind != slot.last_kind {
                (*v).last_kind = slot.last_kind;
            }
        },
        None => {
            let now = match seen {
                Some(now) => now,
                None => clock::monotonic(),
            };
            let v = PeerValue {
                first_seen_ns: now,
                last_seen_ns: now,
                crlf: slot.crlf as u64,
                stun: slot.stun as u64,
                sip: slot.sip as u64,
                last_kind: slot.last_kind,
                _pad: 0,
            };
            let _ = PEERS.insert(&slot.key, &v, 0);
        }
    }
    slot.crlf = 0;
    slot.stun = 0;
    slot.sip = 0;
}

/// Records a keep-alive of `kind` from the packet's source; `now` is the
/// program's interval clock (`clock::now`).
#[inline(always)]
pub fn note_peer(cfg: &Config, p: &Udp, s: &mut Scratch, kind: u32, now: u64) {
    if cfg.track_peers == 0 {
        return;
    }
    s.peer = PeerKey {
        addr: s.src,
        port: p.sport,
        _pad: 0,
    };
    let Some(slot) = PEER_CACHE.get_ptr_mut(slot_index(&s.peer)) else {
        return;
    };
    let slot = unsafe { &mut *slot };
    // A zeroed slot never matches: port 0 is never answered.
    let mine = slot.key.addr == s.peer.addr && slot.key.port == s.peer.port;
    if mine && now.wrapping_sub(slot.flushed) < NS {
        pend(slot, kind);
        return;
    }
    if !mine {
        if slot.crlf | slot.stun | slot.sip != 0 {
            flush(slot, None);
        }
        slot.key = s.peer;
    }
    pend(slot, kind);
    flush(slot, Some(clock::monotonic()));
    slot.flushed = now;
}
