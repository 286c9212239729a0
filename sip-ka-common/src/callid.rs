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

/// How many bytes of a Call-ID value (leading whitespace included) are
/// hashed; the XDP program reads no further.
pub const CALLID_SCAN: usize = 256;

/// Hash of a Call-ID header value: the first word of it, so leading and
/// trailing whitespace do not matter (`Call-ID:  abc@h ` and `i:abc@h`
/// name the same dialog). A Call-ID has no inner whitespace (RFC 3261
/// 25.1), so the first word is the whole value.
pub fn callid_hash(value: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut seen = false;
    for &c in value.iter().take(CALLID_SCAN) {
        if c == b'\r' || c == b'\n' {
            break;
        }
        if is_lws(c) {
            if seen {
                break;
            }
            continue;
        }
        seen = true;
        hash = fnv1a_step(hash, c);
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
