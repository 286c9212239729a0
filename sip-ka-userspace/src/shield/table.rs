//! The bans in force, as the daemon's own paths check them: the userspace
//! responder (`--xdp off`), the edge's sockets and its TCP/TLS accepts.
//! The BANS map holds the same entries for the XDP program; the writer
//! (`shield/writer.rs`) keeps the two in step.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        RwLock,
    },
};

use sip_ka_common::maps::{BanReason, BANS_MAX};

use super::prefix::Prefix;
use crate::util::lock::{read, write};

/// `until_ms` of a ban that never lifts by itself.
pub const FOREVER: u64 = u64::MAX;

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub prefix: Prefix,
    pub reason: BanReason,
    pub evidence: u32,
    pub strikes: u32,
    /// When it was decided (unix seconds).
    pub since_unix: u64,
    /// When it lifts, on the edge's ms clock ([`FOREVER`]: never).
    pub until_ms: u64,
    /// The operator's words for a ban by hand.
    pub note: String,
}

impl Ban {
    pub fn in_force(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

#[derive(Default)]
struct Inner {
    bans: HashMap<Prefix, Entry>,
    /// Prefix lengths in use and how many bans have each: a lookup tries
    /// each length once, longest first.
    lens: BTreeMap<u8, usize>,
}

struct Entry {
    ban: Ban,
    /// Not yet in the BANS map: the writer must not take its absence
    /// there for a removal by hand.
    unwritten: bool,
}

/// Bans by prefix, at most [`BANS_MAX`] (the map's size).
#[derive(Default)]
pub struct BanTable {
    inner: RwLock<Inner>,
    /// Entries held: read without the lock, so the common case (no ban at
    /// all) costs one atomic load per packet.
    count: AtomicUsize,
}

/// Why a ban was not taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`BANS_MAX`] bans are in force.
    Full,
}

impl BanTable {
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ban in force on `ip` at `now_ms`, if one is.
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<Ban> {
        if self.is_empty() {
            return None;
        }
        let host = Prefix::host(ip);
        let inner = read(&self.inner);
        inner.lens.keys().rev().find_map(|len| {
            let e = inner.bans.get(&Prefix::new(host.addr(), *len))?;
            e.ban.in_force(now_ms).then(|| e.ban.clone())
        })
    }

    /// Whether a ban is in force on `ip`.
    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        let host = Prefix::host(ip);
        let inner = read(&self.inner);
        inner.lens.keys().rev().any(|len| {
            inner
                .bans
                .get(&Prefix::new(host.addr(), *len))
                .is_some_and(|e| e.ban.in_force(now_ms))
        })
    }

    /// Puts `ban` in (replacing one on the same prefix). `written` says
    /// whether the BANS map already holds it.
    pub fn insert(&self, ban: Ban, written: bool) -> Result<(), Refused> {
        let mut inner = write(&self.inner);
        let key = ban.prefix;
        if !inner.bans.contains_key(&key) {
            if inner.bans.len() >= BANS_MAX as usize {
                return Err(Refused::Full);
            }
            *inner.lens.entry(key.len()).or_default() += 1;
        }
        inner.bans.insert(
            key,
            Entry {
                ban,
                unwritten: !written,
            },
        );
        self.count.store(inner.bans.len(), Ordering::Relaxed);
        Ok(())
    }

    pub fn remove(&self, prefix: &Prefix) -> Option<Ban> {
        let mut inner = write(&self.inner);
        let e = inner.bans.remove(prefix)?;
        if let Some(n) = inner.lens.get_mut(&prefix.len()) {
            *n -= 1;
            if *n == 0 {
                inner.lens.remove(&prefix.len());
            }
        }
        self.count.store(inner.bans.len(), Ordering::Relaxed);
        Some(e.ban)
    }

    pub fn get(&self, prefix: &Prefix) -> Option<Ban> {
        read(&self.inner).bans.get(prefix).map(|e| e.ban.clone())
    }

    /// Marks the ban on `prefix` as written to the BANS map.
    pub fn written(&self, prefix: &Prefix) {
        if let Some(e) = write(&self.inner).bans.get_mut(prefix) {
            e.unwritten = false;
        }
    }

    /// Every ban, with whether it is in the BANS map yet.
    pub fn snapshot(&self) -> Vec<(Ban, bool)> {
        read(&self.inner)
            .bans
            .values()
            .map(|e| (e.ban.clone(), !e.unwritten))
            .collect()
    }

    /// Bans that have lifted by `now_ms`, taken out.
    pub fn take_expired(&self, now_ms: u64) -> Vec<Ban> {
        let expired: Vec<Prefix> = read(&self.inner)
            .bans
            .values()
            .filter(|e| !e.ban.in_force(now_ms))
            .map(|e| e.ban.prefix)
            .collect();
        expired.iter().filter_map(|p| self.remove(p)).collect()
    }

    /// Bans in force of each reason.
    pub fn by_reason(&self, now_ms: u64) -> [u64; sip_ka_common::maps::BAN_REASONS] {
        let mut n = [0; sip_ka_common::maps::BAN_REASONS];
        for e in read(&self.inner).bans.values() {
            if e.ban.in_force(now_ms) {
                n[e.ban.reason as usize] += 1;
            }
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ban(p: &str, until_ms: u64) -> Ban {
        Ban {
            prefix: Prefix::parse(p).unwrap(),
            reason: BanReason::Manual,
            evidence: 0,
            strikes: 0,
            since_unix: 0,
            until_ms,
            note: String::new(),
        }
    }

    #[test]
    fn lookups_match_any_prefix_and_respect_expiry() {
        let t = BanTable::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(!t.is_banned(ip("203.0.113.9"), 0));
        t.insert(ban("203.0.113.0/24", FOREVER), true).unwrap();
        t.insert(ban("203.0.113.9", 1000), true).unwrap();
        t.insert(ban("2001:db8:1:2::/64", 1000), false).unwrap();
        assert!(t.is_banned(ip("203.0.113.200"), 5000));
        // The host ban lifted; the /24 still holds it.
        assert_eq!(
            t.lookup(ip("203.0.113.9"), 5000)
                .unwrap()
                .prefix
                .to_string(),
            "203.0.113.0/24"
        );
        assert!(t.is_banned(ip("2001:db8:1:2::99"), 999));
        assert!(!t.is_banned(ip("2001:db8:1:2::99"), 1000));
        assert!(!t.is_banned(ip("2001:db8:1:3::1"), 0));
        let gone = t.take_expired(1000);
        assert_eq!(gone.len(), 2);
        assert_eq!(t.len(), 1);
        t.remove(&Prefix::parse("203.0.113.0/24").unwrap()).unwrap();
        assert!(t.is_empty());
        assert!(!t.is_banned(ip("203.0.113.9"), 0));
    }
}
