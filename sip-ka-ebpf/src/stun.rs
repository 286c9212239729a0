//! STUN Binding requests over the scratch copy of the payload. The rules
//! are those of `sip_ka_common::stun::classify`; indices are masked so
//! every read is provably inside the buffer.

use sip_ka_common::stun::{
    crc32_step, Generation, ATTR_CHANGE_REQUEST, ATTR_FINGERPRINT, BINDING_REQUEST,
    FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE_BYTES, XDP_MAX_REQUEST,
};

use crate::structs::{Scratch, BUF_MASK};

/// Attributes read before giving up (a keep-alive has at most a SOFTWARE
/// and a FINGERPRINT; a classic one a CHANGE-REQUEST).
const MAX_ATTRS: usize = 6;
const REQ_MASK: usize = XDP_MAX_REQUEST - 1;

pub enum Verdict {
    NotStun,
    Answer(Generation),
    BadFingerprint,
    Pass,
    TooLong,
}

#[inline(always)]
fn at(s: &Scratch, i: usize) -> u8 {
    s.buf[i & BUF_MASK]
}

#[inline(always)]
fn be16_at(s: &Scratch, i: usize) -> usize {
    ((at(s, i) as usize) << 8) | at(s, i + 1) as usize
}

/// CRC-32 of `buf[..crc_end]`. The end is read back from map memory so
/// the loop's exit test does not refine the caller's offset (which would
/// make the verifier walk the rest of the attribute loop once per exit).
#[inline(always)]
fn crc_until(s: &mut Scratch, end: usize) -> u32 {
    s.crc_end = end as u32;
    // SAFETY: a plain read of the field just written.
    let end = unsafe { core::ptr::read_volatile(&s.crc_end) } as usize & REQ_MASK;
    let mut crc = 0xFFFF_FFFFu32;
    for j in 0..XDP_MAX_REQUEST {
        if j >= end {
            break;
        }
        crc = crc32_step(crc, s.buf[j & REQ_MASK]);
    }
    !crc
}

/// Classifies a payload of `plen` bytes whose first `min(plen, buffer)`
/// bytes are in `s.buf`.
#[inline(always)]
pub fn classify(s: &mut Scratch, plen: usize) -> Verdict {
    if plen < HEADER_LEN || at(s, 0) & 0xC0 != 0 {
        return Verdict::NotStun;
    }
    let msg_len = be16_at(s, 2);
    if msg_len % 4 != 0 || msg_len + HEADER_LEN != plen {
        return Verdict::NotStun;
    }
    if be16_at(s, 0) != BINDING_REQUEST as usize {
        return Verdict::Pass;
    }
    if plen > XDP_MAX_REQUEST {
        return Verdict::TooLong;
    }
    let modern = at(s, 4) == MAGIC_COOKIE_BYTES[0]
        && at(s, 5) == MAGIC_COOKIE_BYTES[1]
        && at(s, 6) == MAGIC_COOKIE_BYTES[2]
        && at(s, 7) == MAGIC_COOKIE_BYTES[3];
    let mut off = HEADER_LEN;
    let mut fingerprint = false;
    for _ in 0..MAX_ATTRS {
        if off >= plen {
            break;
        }
        if off + 4 > plen || fingerprint {
            // A truncated attribute, or anything after FINGERPRINT.
            return Verdict::Pass;
        }
        let attr = be16_at(s, off) as u16;
        let alen = be16_at(s, off + 2);
        let padded = (alen + 3) & !3;
        if off + 4 + padded > plen {
            return Verdict::Pass;
        }
        if attr == ATTR_FINGERPRINT && modern {
            if alen != 4 {
                return Verdict::Pass;
            }
            let want = ((at(s, off + 4) as u32) << 24)
                | ((at(s, off + 5) as u32) << 16)
                | ((at(s, off + 6) as u32) << 8)
                | at(s, off + 7) as u32;
            if crc_until(s, off) ^ FINGERPRINT_XOR != want {
                return Verdict::BadFingerprint;
            }
            fingerprint = true;
        } else if attr == ATTR_CHANGE_REQUEST && !modern {
            if alen != 4 || at(s, off + 4) | at(s, off + 5) | at(s, off + 6) | at(s, off + 7) != 0 {
                return Verdict::Pass;
            }
        } else if attr < 0x8000 {
            // USERNAME, MESSAGE-INTEGRITY, RESPONSE-ADDRESS and every
            // other comprehension-required attribute: the daemon's job.
            return Verdict::Pass;
        }
        off += 4 + padded;
    }
    if off < plen {
        return Verdict::Pass;
    }
    if modern {
        Verdict::Answer(Generation::Modern { fingerprint })
    } else {
        Verdict::Answer(Generation::Classic)
    }
}
