//! Header parsing: a bounds-checked `ptr_at` and a walk from Ethernet to
//! the UDP payload (xdp-tools' parsing_helpers style: one header at a
//! time, VLAN tags in a capped loop).

use aya_ebpf::programs::XdpContext;
use sip_ka_common::Counter;

use crate::structs::{Scratch, Udp};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_TCP: u8 = 6;
/// VLAN tags the parser walks through (QinQ).
pub const MAX_VLAN_DEPTH: usize = 2;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

#[repr(C)]
pub struct UdpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// A pointer to a `T` at `offset`, or `Err` when the packet is too short.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

#[inline(always)]
pub fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// A TCP segment: where its headers are. Only the ban table looks at it.
#[derive(Clone, Copy)]
pub struct Tcp {
    pub l3_off: usize,
    pub l4_off: usize,
    pub is_v4: bool,
}

/// Why the walk stopped before a UDP payload to look at.
pub enum Stop {
    /// A TCP segment (not a fragment): checked against the bans when it
    /// goes to a SIP port, passed otherwise.
    Tcp(Tcp),
    /// Not IP/UDP, or an IPv6 extension header: pass without counting.
    NotUdp,
    /// An IP fragment.
    Fragment,
    /// Headers that do not hold together.
    Malformed,
}

impl Stop {
    pub fn counter(&self) -> Option<Counter> {
        match self {
            Stop::NotUdp | Stop::Tcp(_) => None,
            Stop::Fragment => Some(Counter::PassFragment),
            Stop::Malformed => Some(Counter::PassMalformed),
        }
    }
}

/// Copies an IPv4 address into the 16-byte mapped form.
#[inline(always)]
fn put_v4(out: &mut [u8; 16], a: &[u8; 4]) {
    out[..10].fill(0);
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(a);
}

/// Walks Ethernet, up to two VLAN tags, IPv4 or IPv6, and UDP. Only
/// offsets and ports are taken: most traffic is not for a SIP port, and
/// the addresses are copied (`copy_addrs`) only for what is.
#[inline(always)]
pub fn parse_udp(ctx: &XdpContext) -> Result<Udp, Stop> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| Stop::NotUdp)?;
    let mut proto = be16(unsafe { (*eth).proto });
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_DEPTH {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let vlan: *mut VlanHdr = ptr_at(ctx, off).map_err(|_| Stop::Malformed)?;
        proto = be16(unsafe { (*vlan).proto });
        off += VLAN_HLEN;
    }
    let frame_len = ctx.data_end() - ctx.data();
    let l3_off = off;
    let (l4_off, ip_payload_len, is_v4) = match proto {
        ETH_P_IP => {
            let ip: *mut Ipv4Hdr = ptr_at(ctx, l3_off).map_err(|_| Stop::Malformed)?;
            let ver_ihl = unsafe { (*ip).ver_ihl };
            let ihl = ((ver_ihl & 0x0f) as usize) * 4;
            if ver_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
                return Err(Stop::Malformed);
            }
            let l4 = unsafe { (*ip).proto };
            // MF set or a non-zero offset: only the kernel can reassemble.
            let fragment = be16(unsafe { (*ip).frag }) & 0x3fff != 0;
            if l4 == IPPROTO_TCP && !fragment {
                return Err(Stop::Tcp(Tcp {
                    l3_off,
                    l4_off: l3_off + ihl,
                    is_v4: true,
                }));
            }
            if l4 != IPPROTO_UDP {
                return Err(Stop::NotUdp);
            }
            if fragment {
                return Err(Stop::Fragment);
            }
            let tot_len = be16(unsafe { (*ip).tot_len }) as usize;
            if tot_len < ihl + UDP_HLEN || l3_off + tot_len > frame_len {
                return Err(Stop::Malformed);
            }
            (l3_off + ihl, tot_len - ihl, true)
        }
        ETH_P_IPV6 => {
            let ip: *mut Ipv6Hdr = ptr_at(ctx, l3_off).map_err(|_| Stop::Malformed)?;
            if unsafe { (*ip).ver_tc_flow[0] } >> 4 != 6 {
                return Err(Stop::Malformed);
            }
            // Extension headers (a fragment header among them) are left to
            // the kernel.
            let next = unsafe { (*ip).next_header };
            if next == IPPROTO_TCP {
                return Err(Stop::Tcp(Tcp {
                    l3_off,
                    l4_off: l3_off + IPV6_HLEN,
                    is_v4: false,
                }));
            }
            if next != IPPROTO_UDP {
                return Err(Stop::NotUdp);
            }
            let plen = be16(unsafe { (*ip).payload_len }) as usize;
            if plen < UDP_HLEN || l3_off + IPV6_HLEN + plen > frame_len {
                return Err(Stop::Malformed);
            }
            (l3_off + IPV6_HLEN, plen, false)
        }
        _ => return Err(Stop::NotUdp),
    };
    let udp: *mut UdpHdr = ptr_at(ctx, l4_off).map_err(|_| Stop::Malformed)?;
    let udp_len = be16(unsafe { (*udp).len }) as usize;
    if udp_len < UDP_HLEN || udp_len > ip_payload_len {
        return Err(Stop::Malformed);
    }
    Ok(Udp {
        l3_off,
        l4_off,
        payload_off: l4_off + UDP_HLEN,
        payload_len: udp_len - UDP_HLEN,
        is_v4,
        sport: be16(unsafe { (*udp).source }),
        dport: be16(unsafe { (*udp).dest }),
    })
}

/// Copies a packet's source address into `s.src`, IPv4 mapped.
#[inline(always)]
pub fn copy_src(ctx: &XdpContext, l3_off: usize, is_v4: bool, s: &mut Scratch) -> Result<(), ()> {
    if is_v4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, l3_off)?;
        unsafe { put_v4(&mut s.src, &(*ip).src) };
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, l3_off)?;
        unsafe { s.src = (*ip).src };
    }
    Ok(())
}

/// Copies the packet's addresses into `s.src` / `s.dst` (map memory, not
/// stack), IPv4 mapped into 16 bytes.
#[inline(always)]
pub fn copy_addrs(ctx: &XdpContext, p: &Udp, s: &mut Scratch) -> Result<(), ()> {
    if p.is_v4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, p.l3_off)?;
        unsafe {
            put_v4(&mut s.src, &(*ip).src);
            put_v4(&mut s.dst, &(*ip).dst);
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, p.l3_off)?;
        unsafe {
            s.src = (*ip).src;
            s.dst = (*ip).dst;
        }
    }
    Ok(())
}
