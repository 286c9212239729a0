//! Internet checksums (RFC 1071, RFC 1624) on top of `bpf_csum_diff`.
//!
//! Sums are taken over memory as the CPU reads it; a ones' complement sum
//! is byte-order independent, so a checksum folded from such a sum is
//! written back with the same native read/write and comes out right.

use aya_ebpf::helpers::generated::bpf_csum_diff;

/// Folds a 32-bit partial sum into 16 bits.
#[inline(always)]
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) as u32 as u64;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Adds `len` bytes at `ptr` (a multiple of 4, at most 512) to `seed`.
/// Returns `None` if the helper refused.
#[inline(always)]
pub fn add(ptr: *const u8, len: u32, seed: u32) -> Option<u32> {
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, ptr as *mut u32, len, seed) };
    if r < 0 {
        None
    } else {
        Some(r as u32)
    }
}

/// RFC 1624 incremental update of `check` when a 16-bit word changes from
/// `old` to `new` (all three as read from memory).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// Writes the pseudo-header for the UDP checksum into `out` (network
/// order); returns its length (12 or 40).
#[inline(always)]
pub fn pseudo_header(
    out: &mut [u8; 40],
    is_v4: bool,
    src: &[u8; 16],
    dst: &[u8; 16],
    udp_len: u16,
) -> u32 {
    *out = [0; 40];
    let len = udp_len.to_be_bytes();
    if is_v4 {
        out[0..4].copy_from_slice(&src[12..16]);
        out[4..8].copy_from_slice(&dst[12..16]);
        out[9] = 17;
        out[10] = len[0];
        out[11] = len[1];
        12
    } else {
        out[0..16].copy_from_slice(src);
        out[16..32].copy_from_slice(dst);
        out[34] = len[0];
        out[35] = len[1];
        out[39] = 17;
        40
    }
}
