//! Checksum verification of a request and its rewrite into an answer sent
//! back with XDP_TX: swap L2/L3/L4, resize, fix the IP and UDP checksums.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use sip_ka_common::stun::MAX_ANSWER;

use crate::{
    csum,
    parse::{ptr_at, EthHdr, Ipv4Hdr, Ipv6Hdr, UdpHdr, UDP_HLEN},
    structs::{Scratch, Udp, HEADERS_MAX},
};

const TTL: u8 = 64;

/// The IPv4 header checksum and the UDP checksum are both right, given
/// the sum of the `plen` payload bytes (`payload`, in the native order of
/// `csum`).
#[inline(always)]
pub fn checksums_ok(ctx: &XdpContext, p: &Udp, s: &Scratch, plen: usize, payload: u64) -> bool {
    if p.is_v4 && !ipv4_header_ok(ctx, p) {
        return false;
    }
    let Ok(udp) = ptr_at::<[u8; 8]>(ctx, p.l4_off) else {
        return false;
    };
    let udp = unsafe { &*udp };
    if udp[6] == 0 && udp[7] == 0 {
        // No checksum: allowed over IPv4, forbidden over IPv6 (RFC 8200).
        return p.is_v4;
    }
    let udp_len = (UDP_HLEN + plen) as u16;
    // The header as it is (ports, length and the checksum itself).
    let sum = csum::pseudo_sum(p.is_v4, &s.src, &s.dst, udp_len)
        + csum::word32(&udp[0..4])
        + csum::word32(&udp[4..8])
        + payload;
    csum::fold(sum) == 0xffff
}

/// Sums the IPv4 header (20 bytes, then any options) straight from the
/// packet.
#[inline(always)]
fn ipv4_header_ok(ctx: &XdpContext, p: &Udp) -> bool {
    let ihl = (p.l4_off - p.l3_off) & 0x3c;
    let Ok(h) = ptr_at::<[u8; 20]>(ctx, p.l3_off) else {
        return false;
    };
    let h = unsafe { &*h };
    let mut sum = csum::word32(&h[0..4])
        + csum::word32(&h[4..8])
        + csum::word32(&h[8..12])
        + csum::word32(&h[12..16])
        + csum::word32(&h[16..20]);
    for j in 0..10 {
        let off = 20 + 4 * j;
        if off >= ihl {
            break;
        }
        let Ok(w) = ptr_at::<[u8; 4]>(ctx, p.l3_off + off) else {
            return false;
        };
        sum += csum::word32(unsafe { &*w });
    }
    csum::fold(sum) == 0xffff
}

/// Makes the frame exactly headers + `out_len` bytes long. Shrinking
/// trims the tail (Ethernet padding included). Growing takes tailroom
/// when the frame has it, else the headroom, which XDP guarantees (256
/// bytes) where a veth or generic-mode frame built from a small skb may
/// have no tailroom: the headers are copied to the new front. Either
/// way the caller writes the payload after the headers.
#[inline(always)]
fn resize(ctx: &XdpContext, p: &Udp, s: &mut Scratch, out_len: usize) -> Option<()> {
    let old_frame = ctx.data_end() - ctx.data();
    let new_frame = p.payload_off + out_len;
    if new_frame < old_frame {
        let delta = old_frame - new_frame;
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(delta as i32)) } != 0 {
            return None;
        }
    } else if new_frame > old_frame {
        let grow = (new_frame - old_frame) & (MAX_ANSWER - 1);
        // Tailroom, where the driver left some (a NIC's page-sized
        // buffers do): one helper call instead of three.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, grow as i32) } == 0 {
            return Some(());
        }
        let hlen = p.payload_off & (HEADERS_MAX - 1);
        if hlen == 0 {
            return None;
        }
        let h = s.headers.as_mut_ptr() as *mut _;
        unsafe {
            if bpf_xdp_load_bytes(ctx.ctx, 0, h, hlen as u32) != 0
                || bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) != 0
                || bpf_xdp_store_bytes(ctx.ctx, 0, h, hlen as u32) != 0
            {
                return None;
            }
        }
    }
    Some(())
}

#[inline(always)]
fn read16(b: &[u8; 2]) -> u16 {
    u16::from_ne_bytes(*b)
}

/// What an answer carries.
#[derive(Clone, Copy)]
pub enum Payload {
    /// The CRLF pong, written straight into the frame.
    Pong,
    /// The first `len` bytes of `s.out`.
    Out(usize),
}

/// `\r\n` as the native checksum sum sees it.
const PONG_SUM: u64 = u16::from_ne_bytes(*b"\r\n") as u64;

/// The sum of `s.out[..len]`, 8 bytes a load, the bytes past `len` in
/// the last word masked off (so `s.out` needs no clearing first).
#[inline(always)]
fn out_sum(s: &Scratch, len: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < MAX_ANSWER {
        if i >= len {
            break;
        }
        // SAFETY: `out` is 8-aligned (first in the scratch value) and
        // i + 8 <= MAX_ANSWER.
        let mut w = unsafe { (s.out.as_ptr().add(i) as *const u64).read() };
        let rest = len - i;
        if rest < 8 {
            // Little-endian: the first `rest` bytes are the low ones.
            w &= (1u64 << (rest * 8)) - 1;
        }
        sum += (w & 0xffff_ffff) + (w >> 32);
        i += 8;
    }
    sum
}

/// Writes `s.out[..N]` at the payload with plain stores (a helper call
/// costs more than a few words).
#[inline(always)]
fn put_out<const N: usize>(ctx: &XdpContext, p: &Udp, s: &Scratch) -> Option<()> {
    let dst: *mut [u8; N] = ptr_at(ctx, p.payload_off).ok()?;
    // SAFETY: N <= MAX_ANSWER (every caller), and `dst` was bounds-checked.
    unsafe { *dst = *(s.out.as_ptr() as *const [u8; N]) };
    Some(())
}

/// Turns the request into the answer carrying `payload` and returns
/// XDP_TX, or `None` if the frame could not be resized (the caller passes
/// it on).
#[inline(always)]
pub fn transmit(ctx: &XdpContext, p: &Udp, s: &mut Scratch, payload: Payload) -> Option<u32> {
    let out_len = match payload {
        Payload::Pong => 2,
        Payload::Out(len) => len & (MAX_ANSWER - 1),
    };
    if out_len == 0 {
        return None;
    }
    resize(ctx, p, s, out_len)?;

    let eth: *mut EthHdr = ptr_at(ctx, 0).ok()?;
    unsafe {
        let src = (*eth).src;
        (*eth).src = (*eth).dst;
        (*eth).dst = src;
    }

    let udp_len = (UDP_HLEN + out_len) as u16;
    if p.is_v4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, p.l3_off).ok()?;
        unsafe {
            let ihl = p.l4_off - p.l3_off;
            let new_tot = ((ihl + udp_len as usize) as u16).to_be_bytes();
            let mut check = read16(&(*ip).check);
            check = csum::replace16(check, read16(&(*ip).tot_len), read16(&new_tot));
            (*ip).tot_len = new_tot;
            let old_ttl_proto = [(*ip).ttl, (*ip).proto];
            let new_ttl_proto = [TTL, (*ip).proto];
            check = csum::replace16(check, read16(&old_ttl_proto), read16(&new_ttl_proto));
            (*ip).ttl = TTL;
            (*ip).check = check.to_ne_bytes();
            // Swapping the addresses leaves the header sum unchanged.
            let src = (*ip).src;
            (*ip).src = (*ip).dst;
            (*ip).dst = src;
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, p.l3_off).ok()?;
        unsafe {
            (*ip).payload_len = udp_len.to_be_bytes();
            (*ip).hop_limit = TTL;
            let src = (*ip).src;
            (*ip).src = (*ip).dst;
            (*ip).dst = src;
        }
    }

    // The answer goes from the request's destination to its source; the
    // pseudo-header sum does not care which address is which.
    let payload_sum = match payload {
        Payload::Pong => PONG_SUM,
        Payload::Out(_) => out_sum(s, out_len),
    };
    let sum = csum::pseudo_sum(p.is_v4, &s.src, &s.dst, udp_len)
        + csum::be(p.sport)
        + csum::be(p.dport)
        + csum::be(udp_len)
        + payload_sum;
    let mut check = !csum::fold(sum);
    if check == 0 {
        check = 0xffff;
    }
    let udp: *mut UdpHdr = ptr_at(ctx, p.l4_off).ok()?;
    unsafe {
        (*udp).source = p.dport.to_be_bytes();
        (*udp).dest = p.sport.to_be_bytes();
        (*udp).len = udp_len.to_be_bytes();
        (*udp).check = check.to_ne_bytes();
    }
    match payload {
        Payload::Pong => {
            let b: *mut [u8; 2] = ptr_at(ctx, p.payload_off).ok()?;
            unsafe { *b = *b"\r\n" };
        }
        // The Binding success sizes: IPv4 or IPv6, with or without
        // FINGERPRINT.
        Payload::Out(32) => put_out::<32>(ctx, p, s)?,
        Payload::Out(40) => put_out::<40>(ctx, p, s)?,
        Payload::Out(44) => put_out::<44>(ctx, p, s)?,
        Payload::Out(52) => put_out::<52>(ctx, p, s)?,
        Payload::Out(_) => {
            let r = unsafe {
                bpf_xdp_store_bytes(
                    ctx.ctx,
                    p.payload_off as u32,
                    s.out.as_mut_ptr() as *mut _,
                    out_len as u32,
                )
            };
            if r != 0 {
                return None;
            }
        }
    }
    Some(xdp_action::XDP_TX)
}
