//! The rules of design.md an answer must keep, checked with a frame
//! parser and checksum code of this file's own (nothing from the XDP
//! program or the packet builder), so a mistake shared by the program and
//! the builder cannot hide.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most an answer's UDP payload may exceed its request's.
pub const MAX_AMPLIFICATION: usize = 24;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// One UDP datagram in an Ethernet frame, as design.md section 3 reads
/// it: up to two VLAN tags, IPv4 (any IHL, not a fragment) or IPv6 (no
/// extension header), lengths that fit the frame.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The IPv4 header (with options) or the IPv6 header.
    ip_header: &'a [u8],
    /// The UDP header and payload, `udp length` bytes.
    udp: &'a [u8],
    /// IPv4 total length or IPv6 payload length: bytes after the frame's
    /// IP datagram are Ethernet padding.
    pub ip_len: usize,
    pub l3_off: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// Parses a frame; None when design.md says it is not a UDP datagram the
/// program may answer (the program must pass or drop it).
pub fn parse(frame: &[u8]) -> Option<Datagram<'_>> {
    let dst_mac = array::<6>(frame, 0)?;
    let src_mac = array::<6>(frame, 6)?;
    let mut proto = be16(frame, 12)?;
    let mut off = 14;
    let mut vlans = Vec::new();
    while proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        if vlans.len() == 2 {
            return None;
        }
        vlans.push(be16(frame, off)? & 0x0fff);
        proto = be16(frame, off + 2)?;
        off += 4;
    }
    let l3_off = off;
    let (src, dst, ip_header, ip_len, ip_payload) = match proto {
        ETH_P_IP => {
            let ver_ihl = *frame.get(off)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            if ver_ihl >> 4 != 4 || ihl < 20 || *frame.get(off + 9)? != IPPROTO_UDP {
                return None;
            }
            if be16(frame, off + 6)? & 0x3fff != 0 {
                return None;
            }
            let tot = usize::from(be16(frame, off + 2)?);
            if tot < ihl + 8 || off + tot > frame.len() {
                return None;
            }
            (
                IpAddr::V4(Ipv4Addr::from(array::<4>(frame, off + 12)?)),
                IpAddr::V4(Ipv4Addr::from(array::<4>(frame, off + 16)?)),
                frame.get(off..off + ihl)?,
                tot,
                frame.get(off + ihl..off + tot)?,
            )
        }
        ETH_P_IPV6 => {
            if *frame.get(off)? >> 4 != 6 || *frame.get(off + 6)? != IPPROTO_UDP {
                return None;
            }
            let plen = usize::from(be16(frame, off + 4)?);
            if off + 40 + plen > frame.len() {
                return None;
            }
            (
                IpAddr::V6(Ipv6Addr::from(array::<16>(frame, off + 8)?)),
                IpAddr::V6(Ipv6Addr::from(array::<16>(frame, off + 24)?)),
                frame.get(off..off + 40)?,
                plen,
                frame.get(off + 40..off + 40 + plen)?,
            )
        }
        _ => return None,
    };
    let udp_len = usize::from(be16(ip_payload, 4)?);
    if udp_len < 8 || udp_len > ip_payload.len() {
        return None;
    }
    Some(Datagram {
        dst_mac,
        src_mac,
        vlans,
        src,
        dst,
        sport: be16(ip_payload, 0)?,
        dport: be16(ip_payload, 2)?,
        ip_header,
        udp: ip_payload.get(..udp_len)?,
        ip_len,
        l3_off,
    })
}

impl Datagram<'_> {
    pub fn payload(&self) -> &[u8] {
        self.udp.get(8..).unwrap_or(&[])
    }

    /// The IPv4 header checksum is right (always true for IPv6, which has
    /// none).
    pub fn ip_checksum_ok(&self) -> bool {
        !self.src.is_ipv4() || fold(sum(self.ip_header)) == 0xffff
    }

    /// The UDP checksum is right: over the pseudo-header and the `udp
    /// length` bytes; zero means none, allowed over IPv4 only (RFC 8200).
    pub fn udp_checksum_ok(&self) -> bool {
        let check = be16(self.udp, 6).unwrap_or(0);
        if check == 0 {
            return self.src.is_ipv4();
        }
        let mut s = sum(self.udp);
        s += match (self.src, self.dst) {
            (IpAddr::V4(a), IpAddr::V4(b)) => sum(&a.octets()) + sum(&b.octets()),
            (IpAddr::V6(a), IpAddr::V6(b)) => sum(&a.octets()) + sum(&b.octets()),
            _ => return false,
        };
        s += u64::from(IPPROTO_UDP) + self.udp.len() as u64;
        fold(s) == 0xffff
    }
}

/// Big-endian 16-bit words summed, an odd last byte padded with zero.
pub fn sum(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum()
}

pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A source design.md says is never answered, by address class: what
/// class it is.
pub fn bad_source(src: IpAddr, sport: u16) -> Option<&'static str> {
    if sport == 0 {
        return Some("source port 0");
    }
    let v4 = match src {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4,
            None if a.is_unspecified() => return Some("unspecified"),
            None if a.is_loopback() => return Some("loopback"),
            None if a.is_multicast() => return Some("multicast"),
            None => return None,
        },
    };
    if v4.octets()[0] == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if v4.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

/// An IP prefix of the deny list, matched here, not by the kernel's trie.
#[derive(Clone, Copy, Debug)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(a)) << 96,
                self.len,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), self.len),
            (IpAddr::V4(n), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a) => (
                    u128::from(u32::from(n)) << 96,
                    u128::from(u32::from(a)) << 96,
                    self.len,
                ),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(bits.min(128)))
        };
        net & mask == ip & mask
    }
}

/// Checks one run of the program; the rules broken, empty when none.
pub fn check(request: &[u8], action: u32, answer: &[u8], deny: &[Prefix]) -> Vec<String> {
    const XDP_ABORTED: u32 = 0;
    const XDP_TX: u32 = 3;
    let mut broken = Vec::new();
    if action == XDP_ABORTED {
        broken.push("XDP_ABORTED".to_string());
    }
    if action > 4 {
        broken.push(format!("unknown action {action}"));
    }
    if action != XDP_TX {
        return broken;
    }
    let Some(req) = parse(request) else {
        broken.push("answered a frame that is not a UDP datagram design.md answers".into());
        return broken;
    };
    if let Some(class) = bad_source(req.src, req.sport) {
        broken.push(format!(
            "answered a {class} source {}:{}",
            req.src, req.sport
        ));
    }
    if req.src_mac[0] & 1 == 1 {
        broken.push(format!(
            "answered a group (multicast/broadcast) source MAC {:02x?}",
            req.src_mac
        ));
    }
    if let Some(p) = deny.iter().find(|p| p.contains(req.src)) {
        broken.push(format!(
            "answered {} although the ACL denies {}/{}",
            req.src, p.addr, p.len
        ));
    }
    if !req.ip_checksum_ok() {
        broken.push("answered a request whose IPv4 header checksum is wrong".into());
    }
    if !req.udp_checksum_ok() {
        broken.push("answered a request whose UDP checksum is wrong".into());
    }
    let Some(ans) = parse(answer) else {
        broken.push("the answer is not a well-formed UDP datagram".into());
        return broken;
    };
    if ans.payload().len() > req.payload().len() + MAX_AMPLIFICATION {
        broken.push(format!(
            "amplification: request payload {} bytes, answer {}",
            req.payload().len(),
            ans.payload().len()
        ));
    }
    if !ans.ip_checksum_ok() {
        broken.push("the answer's IPv4 header checksum is wrong".into());
    }
    if !ans.udp_checksum_ok() {
        broken.push("the answer's UDP checksum is wrong".into());
    }
    if ans.l3_off + ans.ip_len + if ans.src.is_ipv4() { 0 } else { 40 } != answer.len() {
        broken.push(format!(
            "the answer's IP length {} does not end the {}-byte frame",
            ans.ip_len,
            answer.len()
        ));
    }
    if (ans.src, ans.dst, ans.sport, ans.dport) != (req.dst, req.src, req.dport, req.sport) {
        broken.push(format!(
            "the answer goes {}:{} -> {}:{}, not back from {}:{} to {}:{}",
            ans.src, ans.sport, ans.dst, ans.dport, req.dst, req.dport, req.src, req.sport
        ));
    }
    if (ans.src_mac, ans.dst_mac) != (req.dst_mac, req.src_mac) {
        broken.push("the answer's MAC addresses are not the request's swapped".into());
    }
    if ans.vlans != req.vlans {
        broken.push("the answer's VLAN tags differ from the request's".into());
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_by_their_bits() {
        let p = Prefix {
            addr: "198.51.100.0".parse().unwrap(),
            len: 24,
        };
        assert!(p.contains("198.51.100.77".parse().unwrap()));
        assert!(p.contains("::ffff:198.51.100.1".parse().unwrap()));
        assert!(!p.contains("198.51.101.1".parse().unwrap()));
        let p6 = Prefix {
            addr: "2001:db8:bad::".parse().unwrap(),
            len: 48,
        };
        assert!(p6.contains("2001:db8:bad:1::9".parse().unwrap()));
        assert!(!p6.contains("2001:db8:bae::9".parse().unwrap()));
    }

    #[test]
    fn address_classes() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(bad_source(bad.parse().unwrap(), 5060).is_some(), "{bad}");
        }
        assert!(bad_source("198.18.0.2".parse().unwrap(), 0).is_some());
        assert!(bad_source("198.18.0.2".parse().unwrap(), 5060).is_none());
        assert!(bad_source("2001:db8::2".parse().unwrap(), 5060).is_none());
    }
}
