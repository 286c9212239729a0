//! The per-source answer limit of the userspace responder: the fast
//! path's token bucket (`rate_limit_pps` answers per second per source
//! address, `rate_limit_burst` deep, from the same CONFIG), taken only for
//! a datagram about to be answered, so that what gets no answer costs its
//! source nothing.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    net::IpAddr,
    sync::Mutex,
};

use sip_ka_common::{config::RATE_LIMIT_MAX, maps::RATE_MAX, Config};

const NS: u64 = 1_000_000_000;
/// Locks the sources are spread over, so the responder's threads seldom
/// wait for one another.
const SHARDS: usize = 16;
/// Sources tracked per shard: in all, as many as the fast path's RATE map.
const SHARD_MAX: usize = RATE_MAX as usize / SHARDS;

#[derive(Clone, Copy)]
struct Bucket {
    /// Tokens scaled by 1e9 (one answer = 1e9), as in the RATE map.
    tokens: u64,
    last_ns: u64,
}

/// Token buckets by source address.
pub struct Limiter {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Limiter {
    /// Takes a token for an answer to `src` at `now_ns` (a monotonic
    /// clock); false when the source is over its rate. The arithmetic is
    /// the fast path's (`sip-ka-ebpf/src/guard.rs` `over_rate`).
    pub fn allow(&self, cfg: &Config, src: IpAddr, now_ns: u64) -> bool {
        let max = u64::from(RATE_LIMIT_MAX);
        let pps = u64::from(cfg.rate_limit_pps).min(max);
        if pps == 0 {
            return true;
        }
        let cap = u64::from(cfg.rate_limit_burst).clamp(1, max) * NS;
        // A v4 source on a dual-stack socket is the same source as on a v4
        // one (and as the fast path's v4-mapped key).
        let src = src.to_canonical();
        let shard = &self.shards[self.hasher.hash_one(src) as usize % SHARDS];
        let mut map = crate::util::lock::lock(shard);
        if let Some(b) = map.get_mut(&src) {
            let elapsed = now_ns.saturating_sub(b.last_ns).min(100 * NS);
            let tokens = (b.tokens.min(cap) + elapsed * pps).min(cap);
            b.last_ns = now_ns;
            if tokens < NS {
                b.tokens = tokens;
                return false;
            }
            b.tokens = tokens - NS;
            return true;
        }
        if map.len() >= SHARD_MAX {
            make_room(&mut map, cap, pps, now_ns);
        }
        map.insert(
            src,
            Bucket {
                tokens: cap - NS,
                last_ns: now_ns,
            },
        );
        true
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::util::lock::lock(s).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A full shard first forgets the sources whose bucket has refilled (a
/// fresh one would be the same); then, under a flood of new sources, all
/// but those held at their limit, whose state is the point. A source
/// forgotten starts again with a full bucket, as one the fast path's LRU
/// map evicts does.
fn make_room(map: &mut HashMap<IpAddr, Bucket>, cap: u64, pps: u64, now_ns: u64) {
    let refilled = |b: &Bucket| {
        let elapsed = now_ns.saturating_sub(b.last_ns).min(100 * NS);
        b.tokens.min(cap) + elapsed * pps >= cap
    };
    map.retain(|_, b| !refilled(b));
    if map.len() >= SHARD_MAX * 3 / 4 {
        map.retain(|_, b| b.tokens < NS);
    }
    if map.len() >= SHARD_MAX {
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pps: u32, burst: u32) -> Config {
        Config {
            rate_limit_pps: pps,
            rate_limit_burst: burst,
            ..Config::DEFAULT
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let l = Limiter::default();
        let c = cfg(10, 4);
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let t0 = 5 * NS;
        let first: Vec<bool> = (0..6).map(|_| l.allow(&c, a, t0)).collect();
        assert_eq!(first, [true, true, true, true, false, false]);
        // 10 per second: one more token every 100 ms.
        assert!(!l.allow(&c, a, t0 + 99_000_000));
        assert!(l.allow(&c, a, t0 + 200_000_000));
        // Another source has its own bucket; the same one over IPv6-mapped
        // is the same source.
        assert!(l.allow(&c, "198.18.0.3".parse().unwrap(), t0));
        let t1 = t0 + 200_000_000;
        assert!(l.allow(&c, "::ffff:198.18.0.2".parse().unwrap(), t1));
        assert!(
            !l.allow(&c, a, t1),
            "the v4-mapped form took the last token"
        );
    }

    #[test]
    fn zero_pps_is_no_limit_and_huge_values_do_not_wrap() {
        let l = Limiter::default();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        assert!((0..10_000).all(|_| l.allow(&cfg(0, 1), a, 1)));
        assert!(l.is_empty(), "no limit tracks nobody");
        let huge = cfg(u32::MAX, u32::MAX);
        assert!(l.allow(&huge, a, 0));
        assert!(l.allow(&huge, a, u64::MAX));
    }

    #[test]
    fn a_flood_of_sources_stays_bounded_and_keeps_limited_ones() {
        let l = Limiter::default();
        let c = cfg(1, 4);
        let heavy: IpAddr = "203.0.113.9".parse().unwrap();
        assert!((0..4).all(|_| l.allow(&c, heavy, NS)));
        assert!(!l.allow(&c, heavy, NS));
        for i in 0..(RATE_MAX * 3) {
            let ip = IpAddr::from(0x0a00_0000u32.wrapping_add(i).to_be_bytes());
            l.allow(&c, ip, NS);
        }
        assert!(l.len() <= RATE_MAX as usize, "{} sources", l.len());
        assert!(
            !l.allow(&c, heavy, NS),
            "a source at its limit is not forgotten by a flood of others"
        );
    }
}
