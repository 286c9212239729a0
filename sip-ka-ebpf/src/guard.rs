//! Who may be answered: address sanity, the ACL, per-source rate limits,
//! and the PEERS table of sources that sent keep-alives.

use aya_ebpf::maps::lpm_trie::Key;
use sip_ka_common::{
    config::{ACL_ALLOW_ONLY, ACL_OFF},
    maps::{PeerKey, PeerValue, RateValue, KIND_CRLF, KIND_SIP, KIND_STUN},
    Config, Counter,
};

use crate::{
    maps::{atomic_add, ACL_ALLOW, ACL_DENY as ACL_DENY_MAP, PEERS, RATE},
    structs::{Scratch, Udp},
};

const V4_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// A source that must never get an answer: multicast, broadcast, loopback,
/// unspecified (and, for IPv6, IPv4-mapped on the wire), or port 0; or a
/// destination that is multicast or broadcast.
#[inline(always)]
pub fn unanswerable(p: &Udp, s: &Scratch) -> bool {
    if p.sport == 0 {
        return true;
    }
    if p.is_v4 {
        let src0 = s.src[12];
        src0 == 0                      // 0.0.0.0/8
            || src0 == 127             // loopback
            || src0 >= 224             // multicast, class E, broadcast
            || s.dst[12] >= 224
    } else {
        let src = &s.src;
        let zero_head = src[..15].iter().all(|b| *b == 0);
        src[0] == 0xff
            || s.dst[0] == 0xff
            || (zero_head && (src[15] == 0 || src[15] == 1))
            || src[..12] == V4_PREFIX
    }
}

/// Whether the ACL refuses the source (deny list, or not on the allow list
/// in allow-only mode).
#[inline(always)]
pub fn acl_refuses(cfg: &Config, s: &Scratch) -> bool {
    if cfg.acl == ACL_OFF {
        return false;
    }
    let key = Key::new(128, s.src);
    if ACL_DENY_MAP.get(&key).is_some() {
        return true;
    }
    cfg.acl == ACL_ALLOW_ONLY && ACL_ALLOW.get(&key).is_none()
}

const NS: u64 = 1_000_000_000;

/// Token bucket per source address; `true` when over the rate.
#[inline(always)]
pub fn over_rate(cfg: &Config, s: &Scratch, now: u64) -> bool {
    let pps = cfg.rate_limit_pps as u64;
    if pps == 0 {
        return false;
    }
    let cap = (cfg.rate_limit_burst as u64).max(1) * NS;
    match RATE.get_ptr_mut(&s.src) {
        Some(b) => {
            let b = unsafe { &mut *b };
            // Cap the elapsed time so the refill cannot overflow.
            let elapsed = now.saturating_sub(b.last_ns).min(100 * NS);
            let tokens = (b.tokens + elapsed * pps).min(cap);
            b.last_ns = now;
            if tokens < NS {
                b.tokens = tokens;
                return true;
            }
            b.tokens = tokens - NS;
            false
        }
        None => {
            let fresh = RateValue {
                tokens: cap - NS,
                last_ns: now,
            };
            let _ = RATE.insert(&s.src, &fresh, 0);
            false
        }
    }
}

/// Every reason not to answer, checked in order; the counter to bump when
/// one applies.
#[inline(always)]
pub fn refuse(cfg: &Config, p: &Udp, s: &Scratch, now: u64) -> Option<Counter> {
    if unanswerable(p, s) {
        return Some(Counter::PassBadAddress);
    }
    if over_rate(cfg, s, now) {
        return Some(Counter::DropRateLimit);
    }
    None
}

/// Records a keep-alive of `kind` from the packet's source in PEERS.
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
    let key = &s.peer;
    match PEERS.get_ptr_mut(key) {
        Some(v) => unsafe {
            let counter = match kind {
                KIND_CRLF => &raw mut (*v).crlf,
                KIND_STUN => &raw mut (*v).stun,
                _ => &raw mut (*v).sip,
            };
            // Shared across CPUs: atomic add, plain stores for the times.
            atomic_add(counter, 1);
            (*v).last_seen_ns = now;
            (*v).last_kind = kind;
        },
        None => {
            let mut v = PeerValue {
                first_seen_ns: now,
                last_seen_ns: now,
                last_kind: kind,
                ..PeerValue::default()
            };
            match kind {
                KIND_CRLF => v.crlf = 1,
                KIND_STUN => v.stun = 1,
                KIND_SIP => v.sip = 1,
                _ => {}
            }
            let _ = PEERS.insert(key, &v, 0);
        }
    }
}
