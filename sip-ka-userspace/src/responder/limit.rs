//! The per-source answer limit of the userspace responder: the fast
//! path's token buckets (`rate_limit_pps` answers per second per source
//! address and port, `rate_limit_burst` deep, under a ceiling per address
//! of `rate_limit_addr_pps` / `rate_limit_addr_burst`, from the same
//! CONFIG), taken only for a datagram about to be answered, so that what
//! gets no answer costs its source nothing.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hash, RandomState},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
};

use sip_ka_common::{config::RATE_LIMIT_MAX, maps::RATE_MAX, Config};

const NS: u64 = 1_000_000_000;
/// Locks the sources are spread over, so the responder's threads seldom
/// wait for one another.
const SHARDS: usize = 16;
/// Sources tracked per shard: in all, as many as the fast path's maps.
const SHARD_MAX: usize = RATE_MAX as usize / SHARDS;

#[derive(Clone, Copy)]
struct Bucket {
    /// Tokens scaled by 1e9 (one answer = 1e9), as in the RATE maps.
    tokens: u64,
    last_ns: u64,
}

/// Token buckets by key, sharded.
struct Buckets<K> {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
}

impl<K: Hash + Eq + Copy> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    /// Takes a token for `key` at `now_ns`; false when its bucket is
    /// empty. The arithmetic is the fast path's (`sip-ka-ebpf/src/guard.rs`
    /// `take`).
    fn take(&self, key: K, pps: u32, burst: u32, now_ns: u64) -> bool {
        let max = u64::from(RATE_LIMIT_MAX);
        let pps = u64::from(pps).min(max);
        if pps == 0 {
            return true;
        }
        let cap = u64::from(burst).clamp(1, max) * NS;
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = crate::util::lock::lock(shard);
        if let Some(b) = map.get_mut(&key) {
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
            key,
            Bucket {
                tokens: cap - NS,
                last_ns: now_ns,
            },
        );
        true
    }

    /// Gives back a token `take` took.
    fn give_back(&self, key: K) {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        if let Some(b) = crate::util::lock::lock(shard).get_mut(&key) {
            b.tokens += NS;
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::util::lock::lock(s).len())
            .sum()
    }
}

/// Token buckets by source (address and port) and by address.
#[derive(Default)]
pub struct Limiter {
    flows: Buckets<SocketAddr>,
    addrs: Buckets<IpAddr>,
}

impl Limiter {
    /// Takes a token for an answer to `src` at `now_ns` (a monotonic
    /// clock) from its own bucket and its address's; false when either is
    /// empty (and then neither is charged).
    pub fn allow(&self, cfg: &Config, src: SocketAddr, now_ns: u64) -> bool {
        // A v4 source on a dual-stack socket is the same source as on a v4
        // one (and as the fast path's v4-mapped key).
        let ip = src.ip().to_canonical();
        let flow = SocketAddr::new(ip, src.port());
        if !self
            .flows
            .take(flow, cfg.rate_limit_pps, cfg.rate_limit_burst, now_ns)
        {
            return false;
        }
        if !self.addrs.take(
            ip,
            cfg.rate_limit_addr_pps,
            cfg.rate_limit_addr_burst,
            now_ns,
        ) {
            if cfg.rate_limit_pps != 0 {
                self.flows.give_back(flow);
            }
            return false;
        }
        true
    }

    /// Buckets held now (sources and addresses).
    pub fn len(&self) -> usize {
        self.flows.len() + self.addrs.len()
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
fn make_room<K: Hash + Eq>(map: &mut HashMap<K, Bucket>, cap: u64, pps: u64, now_ns: u64) {
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(pps: u32, burst: u32) -> Config {
        Config {
            rate_limit_pps: pps,
            rate_limit_burst: burst,
            ..Config::DEFAULT
        }
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let l = Limiter::default();
        let c = cfg(10, 4);
        let a = at("198.18.0.2:5060");
        let t0 = 5 * NS;
        let first: Vec<bool> = (0..6).map(|_| l.allow(&c, a, t0)).collect();
        assert_eq!(first, [true, true, true, true, false, false]);
        // 10 per second: one more token every 100 ms.
        assert!(!l.allow(&c, a, t0 + 99_000_000));
        assert!(l.allow(&c, a, t0 + 200_000_000));
        // Another source has its own bucket; the same one over IPv6-mapped
        // is the same source.
        assert!(l.allow(&c, at("198.18.0.3:5060"), t0));
        let t1 = t0 + 200_000_000;
        assert!(l.allow(&c, at("[::ffff:198.18.0.2]:5060"), t1));
        assert!(
            !l.allow(&c, a, t1),
            "the v4-mapped form took the last token"
        );
    }

    #[test]
    fn phones_behind_one_address_each_get_their_own_budget_under_its_ceiling() {
        let l = Limiter::default();
        let c = Config {
            rate_limit_addr_pps: 1000,
            rate_limit_addr_burst: 3000,
            ..cfg(10, 4)
        };
        let t0 = 5 * NS;
        // 2,500 phones of one NAT, one keep-alive each at once: all pass.
        for port in 10_000..12_500u16 {
            let src = SocketAddr::new("203.0.113.1".parse().unwrap(), port);
            assert!(l.allow(&c, src, t0), "phone {port}");
        }
        // One of them flooding is held to its own burst.
        let one = at("203.0.113.1:10000");
        assert_eq!((0..10).filter(|_| l.allow(&c, one, t0)).count(), 3);
        // Past the address's ceiling nobody more gets an answer, and a
        // refused one costs its own bucket nothing.
        let mut ok = 0;
        for port in 20_000..21_000u16 {
            let src = SocketAddr::new("203.0.113.1".parse().unwrap(), port);
            ok += usize::from(l.allow(&c, src, t0));
        }
        assert_eq!(ok, 3000 - 2500 - 3);
        let fresh = at("203.0.113.1:30000");
        assert!(!l.allow(&c, fresh, t0));
        assert!(l.allow(&c, fresh, t0 + NS), "the ceiling refills");
    }

    #[test]
    fn zero_pps_is_no_limit_and_huge_values_do_not_wrap() {
        let l = Limiter::default();
        let a = at("198.18.0.2:5060");
        let off = Config {
            rate_limit_addr_pps: 0,
            ..cfg(0, 1)
        };
        assert!((0..10_000).all(|_| l.allow(&off, a, 1)));
        assert!(l.is_empty(), "no limit tracks nobody");
        let huge = Config {
            rate_limit_addr_pps: u32::MAX,
            rate_limit_addr_burst: u32::MAX,
            ..cfg(u32::MAX, u32::MAX)
        };
        assert!(l.allow(&huge, a, 0));
        assert!(l.allow(&huge, a, u64::MAX));
    }

    #[test]
    fn a_flood_of_sources_stays_bounded_and_keeps_limited_ones() {
        let l = Limiter::default();
        let c = cfg(1, 4);
        let heavy = at("203.0.113.9:5060");
        assert!((0..4).all(|_| l.allow(&c, heavy, NS)));
        assert!(!l.allow(&c, heavy, NS));
        for i in 0..(RATE_MAX * 3) {
            let ip = IpAddr::from(0x0a00_0000u32.wrapping_add(i).to_be_bytes());
            l.allow(&c, SocketAddr::new(ip, 5060), NS);
        }
        assert!(l.len() <= 2 * RATE_MAX as usize, "{} buckets", l.len());
        assert!(
            !l.allow(&c, heavy, NS),
            "a source at its limit is not forgotten by a flood of others"
        );
    }
}
