//! The Call-ID hash: FNV-1a 64 over the Call-ID value with surrounding
//! whitespace removed. The XDP program feeds the same bytes through
//! [`fnv1a_step`] one at a time; the daemon calls [`callid_hash`].

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One FNV-1a round.
#[inline(always)]
pub fn fnv1a_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Whitespace that may surround a header value (RFC 3261 LWS without the
/// line folding, which the XDP program does not unfold).
#[inline(always)]
pub fn is_lws(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Hash of a Call-ID header value. Leading and trailing spaces and tabs are
/// ignored, so `Call-ID:  abc@h ` and `i:abc@h` name the same dialog.
pub fn callid_hash(value: &[u8]) -> u64 {
    let mut start = 0;
    let mut end = value.len();
    while start < end && is_lws(value[start]) {
        start += 1;
    }
    while end > start && (is_lws(value[end - 1]) || value[end - 1] == b'\r') {
        end -= 1;
    }
    let mut hash = FNV_OFFSET;
    for &byte in &value[start..end] {
        hash = fnv1a_step(hash, byte);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fnv1a_vectors() {
        // Reference values of FNV-1a 64 (draft-eastlake-fnv test suite).
        assert_eq!(callid_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(callid_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(callid_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert_eq!(callid_hash(b"  abc@host \t"), callid_hash(b"abc@host"));
        assert_ne!(callid_hash(b"abc@host"), callid_hash(b"abc@hosT"));
    }
}
