//! Internet checksums (RFC 1071, RFC 1624), summed in the program itself:
//! the data involved is small (a header, a keep-alive), and a helper call
//! per piece cost more than the arithmetic.

/// Folds a ones' complement sum accumulated in 64 bits into 16.
#[inline(always)]
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[inline(always)]
pub fn word(hi: u8, lo: u8) -> u64 {
    ((hi as u64) << 8) | lo as u64
}

/// RFC 1624 incremental update of `check` when a 16-bit word changes from
/// `old` to `new` (all three as read from memory).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check) as u64 + (!old) as u64 + new as u64;
    !fold(sum)
}

/// An address's share of the UDP pseudo-header sum (the 16-byte form,
/// IPv4 mapped).
#[inline(always)]
pub fn addr_sum(is_v4: bool, a: &[u8; 16]) -> u64 {
    if is_v4 {
        word(a[12], a[13]) + word(a[14], a[15])
    } else {
        let mut s = 0;
        let mut i = 0;
        while i < 16 {
            s += word(a[i], a[i + 1]);
            i += 2;
        }
        s
    }
}

/// The UDP pseudo-header sum (RFC 768, RFC 8200 8.1) for a datagram of
/// `udp_len` bytes between `src` and `dst`.
#[inline(always)]
pub fn pseudo_sum(is_v4: bool, src: &[u8; 16], dst: &[u8; 16], udp_len: u16) -> u64 {
    addr_sum(is_v4, src) + addr_sum(is_v4, dst) + 17 + udp_len as u64
}
