//! Which side of the host an address is on: the edge recognises the PBX
//! by its source address alone, which is only safe when nobody on the
//! phones' side can send with that address and have the kernel take it.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::{bail, Context as _, Result};

use super::iface::Identity;

/// Where the kernel sends packets for an address.
#[derive(Debug, PartialEq, Eq)]
pub enum Side {
    /// One of the host's own addresses, or loopback: the kernel drops a
    /// packet with such a source that arrives on any other interface
    /// (a martian) unless `accept_local` is set.
    Local,
    /// Reached through this interface.
    Iface(String),
    /// Reached from a local address no interface holds (policy routing,
    /// an address gone since): nothing to compare.
    Unknown,
}

/// The side of `dst`, from the kernel's own route lookup (a connected
/// UDP socket sends nothing) and the interface holding the source
/// address it picks.
pub fn side_of(dst: IpAddr) -> Result<Side> {
    if dst.is_loopback() {
        return Ok(Side::Local);
    }
    let any: IpAddr = match dst {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(any, 0)).context("a socket for a route lookup")?;
    sock.connect(SocketAddr::new(dst, 9))
        .with_context(|| format!("no route to {dst}"))?;
    let src = sock.local_addr()?.ip();
    if src == dst {
        return Ok(Side::Local);
    }
    Ok(match Identity::holder_of(src)? {
        Some(iface) => Side::Iface(iface),
        None => Side::Unknown,
    })
}

/// A sysctl of `net.ipv4.conf.<iface>` (`None` when unreadable).
fn conf(iface: &str, key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Refuses a PBX on the phones' side (`phones_iface`): anyone there
/// could send as the PBX, answer for it, and route calls. Returns the
/// warnings for setups that are only as safe as the host's filters.
pub fn check_upstream(upstream: SocketAddr, phones_iface: &str) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    match side_of(upstream.ip())? {
        Side::Iface(i) if i == phones_iface => bail!(
            "--upstream {upstream} is reached through {i}, the interface the phones come from: \
             anyone there could send as the PBX (the edge trusts the PBX by its source address). \
             Put the PBX behind another interface, or, with a firewall that drops packets from \
             {} arriving on {i}, pass --trust-upstream-source",
            upstream.ip()
        ),
        Side::Iface(i) => {
            // The kernel's reverse-path filter drops a packet from the
            // PBX's address on the phones' interface only in strict mode.
            let rp = conf("all", "rp_filter").max(conf(phones_iface, "rp_filter"));
            if rp != Some(1) && upstream.is_ipv4() {
                warnings.push(format!(
                    "the PBX is behind {i}, but rp_filter on {phones_iface} is {}: a packet \
                     from the phones' side with the PBX's source address is not dropped by the \
                     kernel; set net.ipv4.conf.{phones_iface}.rp_filter=1 and \
                     net.ipv4.conf.all.rp_filter=1, or drop it with a firewall rule",
                    rp.map_or("unknown".to_string(), |v| v.to_string())
                ));
            }
        }
        Side::Local => {
            if conf("all", "accept_local").max(conf(phones_iface, "accept_local")) == Some(1) {
                warnings.push(format!(
                    "the PBX is on this host, but accept_local is set on {phones_iface}: the \
                     kernel takes packets with this host's addresses as source from the phones"
                ));
            }
        }
        Side::Unknown => warnings.push(format!(
            "cannot tell which interface reaches the PBX at {upstream}: make sure packets with \
             its address as source cannot arrive from the phones' side"
        )),
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_own_addresses_are_local() {
        assert_eq!(side_of("127.0.0.1".parse().unwrap()).unwrap(), Side::Local);
        assert_eq!(side_of("127.3.0.1".parse().unwrap()).unwrap(), Side::Local);
        assert_eq!(side_of("::1".parse().unwrap()).unwrap(), Side::Local);
        // A PBX on the host passes whatever the phones' interface is.
        let local: SocketAddr = "127.0.0.1:5080".parse().unwrap();
        assert!(check_upstream(local, "lo").is_ok());
    }
}
