//! STUN constants and the Binding success builder.
//!
//! [`build_binding_success`] writes into a fixed 64-byte buffer with
//! constant offsets so that the XDP program and the daemon's userspace
//! responder produce the same answer from the same code.

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const MAGIC_COOKIE_BYTES: [u8; 4] = MAGIC_COOKIE.to_be_bytes();
pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_SUCCESS: u16 = 0x0101;
pub const BINDING_ERROR: u16 = 0x0111;

pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub const ATTR_CHANGE_REQUEST: u16 = 0x0003;
pub const ATTR_USERNAME: u16 = 0x0006;
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_ERROR_CODE: u16 = 0x0009;
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const ATTR_SOFTWARE: u16 = 0x8022;
pub const ATTR_FINGERPRINT: u16 = 0x8028;
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Largest STUN request the fast path reads; longer ones are passed.
pub const XDP_MAX_REQUEST: usize = 256;
/// Largest answer the builder writes.
pub const MAX_ANSWER: usize = 64;
/// An answer is never more than this many bytes longer than its request.
pub const MAX_AMPLIFICATION: usize = 24;

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), as FINGERPRINT uses.
pub static CRC32_TABLE: [u32; 256] = crc32_table();

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// One CRC-32 byte step on the running (pre-inverted) value.
#[inline(always)]
pub fn crc32_step(crc: u32, byte: u8) -> u32 {
    CRC32_TABLE[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8)
}

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF;
    for &b in data {
        crc = crc32_step(crc, b);
    }
    !crc
}

/// Which Binding request generation is being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// RFC 5389/8489: XOR-MAPPED-ADDRESS, optional FINGERPRINT.
    Modern { fingerprint: bool },
    /// RFC 3489: MAPPED-ADDRESS, 16-byte transaction id.
    Classic,
}

/// The transport source being reflected back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflexive {
    /// IPv4 in the first 4 bytes when `is_v4`, otherwise all 16.
    pub addr: [u8; 16],
    pub is_v4: bool,
    pub port: u16,
}

/// Writes a Binding success answering the request whose 16 bytes after the
/// type and length (cookie + transaction id, or the classic 16-byte id)
/// are `id`. Returns the answer's length.
#[inline(always)]
pub fn build_binding_success(
    out: &mut [u8; MAX_ANSWER],
    id: &[u8; 16],
    gen: Generation,
    src: &Reflexive,
) -> usize {
    let (attr_type, xor) = match gen {
        Generation::Modern { .. } => (ATTR_XOR_MAPPED_ADDRESS, true),
        Generation::Classic => (ATTR_MAPPED_ADDRESS, false),
    };
    let addr_len: usize = if src.is_v4 { 4 } else { 16 };
    let attr_len = 4 + addr_len;
    let fingerprint = matches!(gen, Generation::Modern { fingerprint: true });
    let body_len = 4 + attr_len + if fingerprint { 8 } else { 0 };

    out[0..2].copy_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
    out[4..20].copy_from_slice(id);
    out[20..22].copy_from_slice(&attr_type.to_be_bytes());
    out[22..24].copy_from_slice(&(attr_len as u16).to_be_bytes());
    out[24] = 0;
    out[25] = if src.is_v4 { 0x01 } else { 0x02 };
    let port = if xor {
        src.port ^ (MAGIC_COOKIE >> 16) as u16
    } else {
        src.port
    };
    out[26..28].copy_from_slice(&port.to_be_bytes());
    // The XOR key is the cookie followed by the transaction id, which is
    // exactly `id` for a modern request.
    let mut i = 0;
    while i < 16 {
        if i < addr_len {
            out[28 + i] = if xor {
                src.addr[i] ^ id[i]
            } else {
                src.addr[i]
            };
        }
        i += 1;
    }
    let len = 24 + attr_len;
    if !fingerprint {
        return len;
    }
    // Constant offsets for each family keep every index provable in BPF.
    if src.is_v4 {
        write_fingerprint::<32>(out)
    } else {
        write_fingerprint::<44>(out)
    }
}

/// Appends FINGERPRINT at `AT` over the `AT` bytes before it; returns the
/// new length.
#[inline(always)]
fn write_fingerprint<const AT: usize>(out: &mut [u8; MAX_ANSWER]) -> usize {
    let mut crc = 0xFFFF_FFFFu32;
    let mut j = 0;
    while j < AT {
        crc = crc32_step(crc, out[j]);
        j += 1;
    }
    let fp = !crc ^ FINGERPRINT_XOR;
    out[AT..AT + 2].copy_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    out[AT + 2..AT + 4].copy_from_slice(&4u16.to_be_bytes());
    out[AT + 4..AT + 8].copy_from_slice(&fp.to_be_bytes());
    AT + 8
}

/// What the fast path decides about a datagram that may be a Binding
/// request (the daemon applies the same rules; see `classify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not STUN at all.
    NotStun,
    /// A Binding request the fast path answers.
    Answer(Generation),
    /// A Binding request whose FINGERPRINT is wrong: dropped.
    BadFingerprint,
    /// STUN, but not something the fast path serves (MESSAGE-INTEGRITY,
    /// USERNAME, unknown comprehension-required attribute, CHANGE-REQUEST
    /// flags, other methods or classes, too long): passed.
    Pass,
}

/// The reference classifier, over a whole UDP payload. The XDP program
/// implements the same rules over its scratch buffer; the fixtures check
/// that the two agree.
pub fn classify(msg: &[u8]) -> Verdict {
    if msg.len() < HEADER_LEN || msg[0] & 0xC0 != 0 {
        return Verdict::NotStun;
    }
    let msg_type = u16::from_be_bytes([msg[0], msg[1]]);
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    if !len.is_multiple_of(4) || len + HEADER_LEN != msg.len() {
        return Verdict::NotStun;
    }
    let modern = msg[4..8] == MAGIC_COOKIE_BYTES;
    if msg_type != BINDING_REQUEST || msg.len() > XDP_MAX_REQUEST {
        return Verdict::Pass;
    }
    let mut off = HEADER_LEN;
    let mut fingerprint = false;
    while off < msg.len() {
        if off + 4 > msg.len() {
            return Verdict::Pass;
        }
        let at = u16::from_be_bytes([msg[off], msg[off + 1]]);
        let alen = u16::from_be_bytes([msg[off + 2], msg[off + 3]]) as usize;
        let padded = (alen + 3) & !3;
        if off + 4 + padded > msg.len() {
            return Verdict::Pass;
        }
        if fingerprint {
            // Nothing may follow FINGERPRINT.
            return Verdict::Pass;
        }
        match at {
            ATTR_FINGERPRINT if modern => {
                if alen != 4 {
                    return Verdict::Pass;
                }
                let want =
                    u32::from_be_bytes([msg[off + 4], msg[off + 5], msg[off + 6], msg[off + 7]]);
                if crc32(&msg[..off]) ^ FINGERPRINT_XOR != want {
                    return Verdict::BadFingerprint;
                }
                fingerprint = true;
            }
            ATTR_CHANGE_REQUEST if !modern && (alen != 4 || msg[off + 4..off + 8] != [0; 4]) => {
                return Verdict::Pass;
            }
            ATTR_CHANGE_REQUEST if !modern => {}
            // USERNAME, MESSAGE-INTEGRITY and every other
            // comprehension-required attribute go to the daemon.
            t if t < 0x8000 => return Verdict::Pass,
            _ => {}
        }
        off += 4 + padded;
    }
    if modern {
        Verdict::Answer(Generation::Modern { fingerprint })
    } else {
        Verdict::Answer(Generation::Classic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// RFC 5769 2.2: sample IPv4 response. Its XOR-MAPPED-ADDRESS is
    /// 192.0.2.1:32853 with transaction id b7e7a701bc34d686fa87dfae.
    #[test]
    fn xor_mapped_address_matches_rfc5769() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&MAGIC_COOKIE_BYTES);
        id[4..].copy_from_slice(&[
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[192, 0, 2, 1]);
        let src = Reflexive {
            addr,
            is_v4: true,
            port: 32853,
        };
        let mut out = [0u8; MAX_ANSWER];
        let n = build_binding_success(
            &mut out,
            &id,
            Generation::Modern { fingerprint: true },
            &src,
        );
        assert_eq!(n, 40);
        assert_eq!(
            &out[20..32],
            &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        // The answer's own FINGERPRINT verifies.
        let fp = u32::from_be_bytes([out[36], out[37], out[38], out[39]]);
        assert_eq!(crc32(&out[..32]) ^ FINGERPRINT_XOR, fp);
    }

    #[test]
    fn classify_rules() {
        let mut req = [0u8; 20];
        req[1] = 1;
        req[4..8].copy_from_slice(&MAGIC_COOKIE_BYTES);
        assert_eq!(
            classify(&req),
            Verdict::Answer(Generation::Modern { fingerprint: false })
        );
        // Wrong length field.
        let mut bad = req;
        bad[3] = 4;
        assert_eq!(classify(&bad), Verdict::NotStun);
        // Classic: no cookie.
        let mut classic = req;
        classic[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(classify(&classic), Verdict::Answer(Generation::Classic));
        // USERNAME -> pass.
        let mut with_user = [0u8; 28];
        with_user[..20].copy_from_slice(&req);
        with_user[3] = 8;
        with_user[20..24].copy_from_slice(&[0x00, 0x06, 0x00, 0x04]);
        assert_eq!(classify(&with_user), Verdict::Pass);
    }
}
