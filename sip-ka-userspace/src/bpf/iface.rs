//! What CONFIG must know about the interface the program answers on: its
//! own MAC address (frames for any other address are not ours to answer)
//! and its IPv4 directed broadcasts (a ping to one must not make every
//! host of the subnet answer).

use std::{ffi::CStr, net::Ipv4Addr};

use anyhow::Result;
use sip_ka_common::{config::MAX_BROADCAST_V4, Config};

/// The interface as `getifaddrs` shows it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `None` when the interface has no Ethernet address (or is not there).
    pub mac: Option<[u8; 6]>,
    /// Each IPv4 address: (address, netmask, broadcast address if set).
    pub v4: Vec<(Ipv4Addr, Ipv4Addr, Option<Ipv4Addr>)>,
}

impl Identity {
    /// Reads `iface`'s addresses.
    pub fn read(iface: &str) -> Result<Identity> {
        let mut id = Identity::default();
        for_each_ifaddr(|name, ifa| {
            if name != iface {
                return;
            }
            match unsafe { (*ifa.ifa_addr).sa_family } as i32 {
                libc::AF_PACKET => {
                    let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                    if ll.sll_halen == 6 {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&ll.sll_addr[..6]);
                        id.mac = Some(mac);
                    }
                }
                libc::AF_INET => {
                    let v4 = |sa: *mut libc::sockaddr| match sockaddr_ip(sa) {
                        Some(std::net::IpAddr::V4(a)) => Some(a),
                        _ => None,
                    };
                    let brd = if ifa.ifa_flags & libc::IFF_BROADCAST as u32 != 0 {
                        v4(ifa.ifa_ifu)
                    } else {
                        None
                    };
                    if let (Some(a), Some(m)) = (v4(ifa.ifa_addr), v4(ifa.ifa_netmask)) {
                        id.v4.push((a, m, brd));
                    }
                }
                _ => {}
            }
        })?;
        Ok(id)
    }

    /// The interface holding `addr` (the first, when several do).
    pub fn holder_of(addr: std::net::IpAddr) -> Result<Option<String>> {
        let mut found = None;
        for_each_ifaddr(|name, ifa| {
            if found.is_none() && sockaddr_ip(ifa.ifa_addr) == Some(addr) {
                found = Some(name.to_string());
            }
        })?;
        Ok(found)
    }

    /// The directed broadcasts the kernel treats as such on this
    /// interface: each subnet's all-ones host part (for prefixes up to
    /// /30; the kernel adds that broadcast route whatever `brd` says) and
    /// each configured `brd`; never one of the interface's own addresses
    /// (a /32 may name itself as its broadcast), 0.0.0.0, or
    /// 255.255.255.255 (refused by the program anyway).
    pub fn broadcasts(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for (addr, mask, brd) in &self.v4 {
            let m = u32::from(*mask);
            let subnet = (m.count_ones() < 31).then(|| Ipv4Addr::from(u32::from(*addr) | !m));
            for b in [subnet, *brd].into_iter().flatten() {
                let own = self.v4.iter().any(|(a, _, _)| *a == b);
                if !own && !b.is_unspecified() && !b.is_broadcast() && !out.contains(&b) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Writes the MAC and the broadcasts into `cfg` (the MAC zero, so
    /// nothing is answered, when the interface has none); returns the
    /// broadcasts that did not fit.
    pub fn apply(&self, cfg: &mut Config) -> Vec<Ipv4Addr> {
        cfg.own_mac = self.mac.unwrap_or([0; 6]);
        cfg.broadcast_v4 = [[0; 4]; MAX_BROADCAST_V4];
        let all = self.broadcasts();
        for (slot, b) in cfg.broadcast_v4.iter_mut().zip(&all) {
            *slot = b.octets();
        }
        all.into_iter().skip(MAX_BROADCAST_V4).collect()
    }
}

/// Calls `f` with every entry `getifaddrs` lists that has a name and an
/// address, with its interface's name.
/// Every IP address of every interface of this host (its network
/// namespace): sources the shield never bans.
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let _ = for_each_ifaddr(|_, ifa| {
        if let Some(ip) = sockaddr_ip(ifa.ifa_addr) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    });
    out
}

fn for_each_ifaddr(mut f: impl FnMut(&str, &libc::ifaddrs)) -> Result<()> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, freed below.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        f(&name, ifa);
    }
    unsafe { libc::freeifaddrs(head) };
    Ok(())
}

/// The IP address of an AF_INET or AF_INET6 sockaddr (`None` for a null
/// pointer or another family).
fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<std::net::IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` is non-null and its family tells its layout.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn broadcasts_of_every_subnet_but_never_an_own_address() {
        let id = Identity {
            mac: Some([2, 0, 0, 0, 0, 1]),
            v4: vec![
                // No `brd` given: the kernel still treats .255 as broadcast.
                (ip("10.201.1.5"), ip("255.255.255.0"), None),
                (
                    ip("192.0.2.9"),
                    ip("255.255.255.240"),
                    Some(ip("192.0.2.15")),
                ),
                // A /32 naming itself as broadcast, and a /31.
                (
                    ip("203.0.113.1"),
                    ip("255.255.255.255"),
                    Some(ip("203.0.113.1")),
                ),
                (ip("198.51.100.0"), ip("255.255.255.254"), None),
                (
                    ip("172.16.0.1"),
                    ip("255.255.0.0"),
                    Some(ip("255.255.255.255")),
                ),
            ],
        };
        assert_eq!(
            id.broadcasts(),
            vec![ip("10.201.1.255"), ip("192.0.2.15"), ip("172.16.255.255")]
        );
        let mut cfg = Config::DEFAULT;
        assert!(id.apply(&mut cfg).is_empty());
        assert_eq!(cfg.own_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(cfg.broadcast_v4[0], [10, 201, 1, 255]);
        assert_eq!(cfg.broadcast_v4[3], [0; 4]);
    }

    #[test]
    fn no_mac_means_zero() {
        let mut cfg = Config {
            own_mac: [1; 6],
            ..Config::DEFAULT
        };
        Identity::default().apply(&mut cfg);
        assert_eq!(cfg.own_mac, [0; 6]);
    }

    #[test]
    fn loopback_is_read() {
        let id = Identity::read("lo").unwrap();
        assert!(id.v4.iter().any(|(a, _, _)| a.is_loopback()));
    }
}
