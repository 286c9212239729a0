//! The unit a ban and its evidence are kept by: an address prefix, IPv4
//! mapped into 16 bytes as in every map key (an IPv4 /32 is a /128).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{anyhow, bail, Context as _, Result};
use sip_ka_common::maps::{as_v4, v4_mapped};

/// An address and a prefix length over the 16-byte form; the bits past
/// the length are always zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    len: u8,
    addr: [u8; 16],
}

/// Length of the mapped form's IPv4 part.
const V4_OFFSET: u8 = 96;

impl Prefix {
    /// `addr` cut to its first `len` bits (`len` at most 128).
    pub fn new(addr: [u8; 16], len: u8) -> Prefix {
        let len = len.min(128);
        Prefix {
            len,
            addr: mask(addr, len),
        }
    }

    /// The source a packet from `ip` counts as: the address for IPv4, its
    /// first `v6_len` bits for IPv6 (a /64 is one subscriber: a scanner
    /// picking new addresses inside it stays one source).
    pub fn of_source(ip: IpAddr, v6_len: u8) -> Prefix {
        match canonical(ip) {
            IpAddr::V4(v4) => Prefix::new(v4_mapped(v4.octets()), 128),
            IpAddr::V6(v6) => Prefix::new(v6.octets(), v6_len.clamp(1, 128)),
        }
    }

    /// The key of a single address.
    pub fn host(ip: IpAddr) -> Prefix {
        Prefix::of_source(ip, 128)
    }

    /// `ADDR` or `ADDR/LEN` (IPv4 lengths count IPv4 bits).
    pub fn parse(s: &str) -> Result<Prefix> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a.trim(), Some(l.trim())),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .with_context(|| format!("{addr:?} is not an IP address"))?;
        let (bytes, max, offset) = match canonical(ip) {
            IpAddr::V4(v4) => (v4_mapped(v4.octets()), 32u8, V4_OFFSET),
            IpAddr::V6(v6) => (v6.octets(), 128u8, 0),
        };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| anyhow!("{l:?} is not a prefix length"))?,
            None => max,
        };
        if len > max {
            bail!("prefix length {len} is longer than {max}");
        }
        Ok(Prefix::new(bytes, len + offset))
    }

    /// The prefix length over the 16-byte form (the LPM trie's).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn addr(&self) -> [u8; 16] {
        self.addr
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.covers(&Prefix::host(ip))
    }

    /// Whether every address of `other` is inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && mask(other.addr, self.len) == self.addr
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.covers(other) || other.covers(self)
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries (a dual
/// stack socket reports IPv4 peers that way).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask(mut addr: [u8; 16], len: u8) -> [u8; 16] {
    for (i, b) in addr.iter_mut().enumerate() {
        let start = (i * 8) as u8;
        if start >= len {
            *b = 0;
        } else if len - start < 8 {
            *b &= 0xffu8 << (8 - (len - start));
        }
    }
    addr
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match as_v4(&self.addr) {
            Some(v4) if self.len >= V4_OFFSET => {
                let ip = Ipv4Addr::from(v4);
                match self.len {
                    128 => write!(f, "{ip}"),
                    l => write!(f, "{ip}/{}", l - V4_OFFSET),
                }
            }
            _ => {
                let ip = Ipv6Addr::from(self.addr);
                match self.len {
                    128 => write!(f, "{ip}"),
                    l => write!(f, "{ip}/{l}"),
                }
            }
        }
    }
}

impl std::str::FromStr for Prefix {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Prefix> {
        Prefix::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sources_are_addresses_for_ipv4_and_slash_64s_for_ipv6() {
        let a = Prefix::of_source(ip("2001:db8:1:2::7"), 64);
        let b = Prefix::of_source(ip("2001:db8:1:2:ffff::1"), 64);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a, Prefix::of_source(ip("2001:db8:1:3::7"), 64));
        let v4 = Prefix::of_source(ip("203.0.113.7"), 64);
        assert_eq!(v4.to_string(), "203.0.113.7");
        assert_eq!(v4.len(), 128);
        // A mapped address is its IPv4 source.
        assert_eq!(Prefix::of_source(ip("::ffff:203.0.113.7"), 64), v4);
    }

    #[test]
    fn parsing_round_trips_and_refuses_nonsense() {
        for s in [
            "203.0.113.0/24",
            "203.0.113.9",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8::1",
        ] {
            assert_eq!(Prefix::parse(s).unwrap().to_string(), s);
        }
        // Host bits past the length are cleared.
        assert_eq!(
            Prefix::parse("203.0.113.77/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "2001:db8::/129",
            "x/8",
            "1.2.3.4/-1",
        ] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containment() {
        let net = Prefix::parse("198.51.100.0/24").unwrap();
        assert!(net.contains(ip("198.51.100.200")));
        assert!(!net.contains(ip("198.51.101.1")));
        assert!(!net.contains(ip("2001:db8::1")));
        let host = Prefix::parse("198.51.100.5").unwrap();
        assert!(net.covers(&host) && !host.covers(&net));
        assert!(net.overlaps(&host) && host.overlaps(&net));
        let all6 = Prefix::parse("::/0").unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }
}
