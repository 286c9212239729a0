//! Who may be answered: address sanity, the ACL, per-source rate limits
//! (bans: `bans`).

use aya_ebpf::{
    maps::{lpm_trie::Key, LruPerCpuHashMap},
    programs::XdpContext,
};
use sip_ka_common::{
    config::{ACL_ALLOW_ONLY, ACL_OFF, RATE_LIMIT_MAX},
    maps::{PeerKey, RateValue},
    Config, Counter,
};

use crate::{
    maps::{ACL_ALLOW, ACL_DENY as ACL_DENY_MAP, RATE, RATE_ADDR},
    parse::{ptr_at, EthHdr, IPV4_MIN_HLEN},
    structs::{Scratch, Udp},
};

const V4_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// A frame that is not this host's to answer: sent to or from an
/// Ethernet group address (the answer would go out from a broadcast or
/// multicast MAC, or to one), or to a unicast MAC other than the
/// interface's (a flooded, mirrored or misdirected frame: its owner
/// answers it). While the interface's MAC is unknown (all zero) no frame
/// is ours.
#[inline(always)]
fn frame_refused(ctx: &XdpContext, cfg: &Config) -> Option<Counter> {
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Some(Counter::PassMalformed);
    };
    let (dst, src) = unsafe { ((*eth).dst, (*eth).src) };
    // The I/G bit: the low bit of the first octet.
    if (dst[0] | src[0]) & 1 != 0 {
        return Some(Counter::PassEthGroup);
    }
    if dst != cfg.own_mac || cfg.own_mac == [0; 6] {
        return Some(Counter::PassOtherHost);
    }
    None
}

/// One of the interface's IPv4 directed broadcasts, as the daemon
/// configured them.
#[inline(always)]
fn directed_broadcast(cfg: &Config, s: &Scratch) -> bool {
    let d = [s.dst[12], s.dst[13], s.dst[14], s.dst[15]];
    let mut i = 0;
    while i < cfg.broadcast_v4.len() {
        let b = cfg.broadcast_v4[i];
        if b != [0; 4] && b == d {
            return true;
        }
        i += 1;
    }
    false
}

/// An address pair that must never get an answer: a source that is
/// multicast, broadcast, loopback, unspecified (and, for IPv6,
/// IPv4-mapped on the wire), or port 0; or a destination that is not
/// unicast (multicast, a broadcast of the interface, unspecified,
/// loopback), which the answer would take as its source.
#[inline(always)]
pub fn unanswerable(cfg: &Config, p: &Udp, s: &Scratch) -> bool {
    if p.sport == 0 {
        return true;
    }
    if p.is_v4 {
        let src0 = s.src[12];
        let dst0 = s.dst[12];
        src0 == 0                      // 0.0.0.0/8
            || src0 == 127             // loopback
            || src0 >= 224             // multicast, class E, broadcast
            || dst0 == 0
            || dst0 == 127
            || dst0 >= 224
            || directed_broadcast(cfg, s)
    } else {
        let src = &s.src;
        let dst = &s.dst;
        let zero_head = src[..15].iter().all(|b| *b == 0);
        let dst_zero_head = dst[..15].iter().all(|b| *b == 0);
        src[0] == 0xff
            || dst[0] == 0xff
            || (zero_head && (src[15] == 0 || src[15] == 1))
            || (dst_zero_head && (dst[15] == 0 || dst[15] == 1))
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

/// Takes a token from the bucket of `key` in `map` (`pps` per second,
/// `burst` deep; `pps` 0 = no limit): `false` when it is empty.
#[inline(always)]
fn take<K>(map: &LruPerCpuHashMap<K, RateValue>, key: &K, pps: u32, burst: u32, now: u64) -> bool {
    let max = RATE_LIMIT_MAX as u64;
    // Clamped as the CLI does, whatever is in the map, so the sum below
    // (at most 1e16 + 100 s x 1e7 x 1e9) cannot wrap.
    let pps = (pps as u64).min(max);
    if pps == 0 {
        return true;
    }
    let cap = (burst as u64).clamp(1, max) * NS;
    match map.get_ptr_mut(key) {
        Some(b) => {
            let b = unsafe { &mut *b };
            let elapsed = now.saturating_sub(b.last_ns).min(100 * NS);
            let tokens = (b.tokens.min(cap) + elapsed * pps).min(cap);
            b.last_ns = now;
            if tokens < NS {
                b.tokens = tokens;
                return false;
            }
            b.tokens = tokens - NS;
            true
        }
        None => {
            let fresh = RateValue {
                tokens: cap - NS,
                last_ns: now,
            };
            let _ = map.insert(key, &fresh, 0);
            true
        }
    }
}

/// Token buckets per source (address and port: each phone behind a NAT
/// has its own) and per address (a ceiling far above any NAT's keep-alive
/// rate): takes a token from both, or `true` when the source is over its
/// rate. Called for a packet that passed every other check, so a packet
/// that gets no answer costs its source nothing. Both maps are per CPU:
/// each CPU keeps its own buckets, so the CPUs answering one address's
/// flows never write the same memory (an address whose flows the NIC
/// spreads over k CPUs gets up to k times its ceiling).
#[inline(always)]
pub fn over_rate(cfg: &Config, p: &Udp, s: &mut Scratch, now: u64) -> bool {
    s.peer = PeerKey {
        addr: s.src,
        port: p.sport,
        _pad: 0,
    };
    if !take(
        &RATE,
        &s.peer,
        cfg.rate_limit_pps,
        cfg.rate_limit_burst,
        now,
    ) {
        return true;
    }
    if !take(
        &RATE_ADDR,
        &s.src,
        cfg.rate_limit_addr_pps,
        cfg.rate_limit_addr_burst,
        now,
    ) {
        give_back(&RATE, &s.peer, cfg.rate_limit_pps);
        return true;
    }
    false
}

#[inline(always)]
fn give_back<K>(map: &LruPerCpuHashMap<K, RateValue>, key: &K, pps: u32) {
    if pps == 0 {
        return;
    }
    if let Some(b) = map.get_ptr_mut(key) {
        // The next refill caps the bucket again.
        unsafe { (*b).tokens += NS };
    }
}

/// Gives back the tokens `over_rate` took for a packet that then could
/// not be answered after all.
#[inline(always)]
pub fn refund(cfg: &Config, s: &Scratch) {
    give_back(&RATE, &s.peer, cfg.rate_limit_pps);
    give_back(&RATE_ADDR, &s.src, cfg.rate_limit_addr_pps);
}

/// Every reason never to answer, checked in order (frame, addresses,
/// IPv4 options); the counter to bump when one applies. The packet is
/// passed, so the kernel handles or drops it as it would without sip-ka.
#[inline(always)]
pub fn refuse(ctx: &XdpContext, cfg: &Config, p: &Udp, s: &Scratch) -> Option<Counter> {
    if let Some(c) = frame_refused(ctx, cfg) {
        return Some(c);
    }
    if unanswerable(cfg, p, s) {
        return Some(Counter::PassBadAddress);
    }
    // Options (source routes, record route...) would be echoed back.
    if p.is_v4 && p.l4_off - p.l3_off > IPV4_MIN_HLEN {
        return Some(Counter::PassIpOptions);
    }
    None
}
