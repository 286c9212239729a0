//! Internet checksums (RFC 1071, RFC 1624). Sums are taken in the
//! machine's own byte order, a word at a time (a ones' complement sum does
//! not depend on the order the bytes are added in, RFC 1071 2(B)), so a
//! header is a few 32-bit loads rather than a byte loop; a payload of any
//! length is summed by the kernel (`bpf_csum_diff`).

use aya_ebpf::helpers::generated::bpf_csum_diff;

use crate::structs::{Scratch, BUF_LEN, BUF_MASK};

/// Folds a ones' complement sum accumulated in 64 bits into 16.
#[inline(always)]
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// RFC 1624 incremental update of `check` when a 16-bit word changes from
/// `old` to `new` (all three as read from memory).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// Four bytes as they lie in memory, as a native u32 widened for summing.
#[inline(always)]
pub fn word32(b: &[u8]) -> u64 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u64
}

/// A 16-bit value in network order, as the native sum sees its bytes.
#[inline(always)]
pub fn be(v: u16) -> u64 {
    v.to_be() as u64
}

/// An address's share of the UDP pseudo-header sum (the 16-byte form,
/// IPv4 mapped).
#[inline(always)]
pub fn addr_sum(is_v4: bool, a: &[u8; 16]) -> u64 {
    if is_v4 {
        word32(&a[12..16])
    } else {
        word32(&a[0..4]) + word32(&a[4..8]) + word32(&a[8..12]) + word32(&a[12..16])
    }
}

/// The UDP pseudo-header sum (RFC 768, RFC 8200 8.1) for a datagram of
/// `udp_len` bytes between `src` and `dst`.
#[inline(always)]
pub fn pseudo_sum(is_v4: bool, src: &[u8; 16], dst: &[u8; 16], udp_len: u16) -> u64 {
    addr_sum(is_v4, src) + addr_sum(is_v4, dst) + be(17) + be(udp_len)
}

/// The sum of `s.buf[FROM..N]` (multiples of 4), in
/// straight-line code: no helper call and no loop for the verifier to
/// walk once per length.
#[inline(always)]
fn fixed_sum_from<const FROM: usize, const N: usize>(s: &Scratch) -> u64 {
    const { assert!(FROM % 4 == 0 && N % 4 == 0 && N <= BUF_LEN) };
    let mut sum = 0u64;
    let mut i = FROM;
    while i < N {
        sum += word32(&s.buf[i..i + 4]);
        i += 4;
    }
    sum
}

/// The payload sum of the usual STUN keep-alives, a bare Binding request
/// (20 bytes) or one with FINGERPRINT (28), without a helper call; `None`
/// for any other length. The length is compared as read back from map
/// memory, so the verifier does not carry one state per length through
/// the rest of the answer.
#[inline(always)]
pub fn stun_keepalive_sum(s: &mut Scratch, plen: usize) -> Option<u64> {
    s.len = plen as u32;
    // SAFETY: a plain read of the field just written.
    let n = unsafe { core::ptr::read_volatile(&s.len) };
    if n != 20 && n != 28 {
        return None;
    }
    let tail = fixed_sum_from::<20, 28>(s);
    let tail = if n == 28 { tail } else { 0 };
    Some(fixed_sum_from::<0, 20>(s) + tail)
}

/// Bytes `bpf_csum_diff` sums per call (its scratch area).
const CSUM_CHUNK: usize = 512;

/// The sum of the first `len` bytes of `s.buf` (at most `BUF_LEN`), an
/// odd tail padded with zeros as RFC 768 says; `None` if the kernel
/// refused to sum. The bytes just past `len` are overwritten with zeros.
#[inline(always)]
pub fn buf_sum(s: &mut Scratch, len: usize) -> Option<u64> {
    let len = len & (BUF_LEN * 2 - 1);
    if len > BUF_LEN {
        return None;
    }
    // The kernel sums whole 32-bit words.
    let mut i = 0;
    while i < 3 {
        s.buf[(len + i) & BUF_MASK] = 0;
        i += 1;
    }
    let padded = (len + 3) & !3;
    let mut sum = 0u64;
    for c in 0..BUF_LEN / CSUM_CHUNK {
        let off = c * CSUM_CHUNK;
        if off >= padded {
            break;
        }
        let mut size = padded - off;
        if size > CSUM_CHUNK {
            size = CSUM_CHUNK;
        }
        let size = size & (2 * CSUM_CHUNK - 4);
        if size == 0 || size > CSUM_CHUNK {
            break;
        }
        // SAFETY: off + size <= BUF_LEN, inside `buf`.
        let r = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                s.buf.as_mut_ptr().add(off) as *mut u32,
                size as u32,
                0,
            )
        };
        if r < 0 {
            return None;
        }
        sum += r as u32 as u64;
    }
    Some(sum)
}
