//! SIP classification: method or status class from the start line, then
//! one pass over the header lines for To (tag?), Call-ID and
//! Content-Length. Positions found are written to the scratch area, not
//! kept in registers, so the verifier sees the same state at every
//! iteration and the scan verifies in linear time.

use sip_ka_common::{
    callid::{fnv1a_step, is_lws, FNV_OFFSET},
    sip::Method,
};

use crate::scratch::{Scratch, BUF_LEN, BUF_MASK};

/// Bytes of a SIP message the scan reads (headers past this are not seen).
pub const SCAN_LEN: usize = 1500;
/// Longest To / Call-ID / Content-Length value read.
const VALUE_SCAN: usize = sip_ka_common::callid::CALLID_SCAN;

pub enum Start {
    Request(Method),
    Response(u8),
    NotSip,
}

#[inline(always)]
fn at(s: &Scratch, i: usize) -> u8 {
    s.buf[i & BUF_MASK]
}

#[inline(always)]
fn lower(c: u8) -> u8 {
    c | 0x20
}

#[inline(always)]
fn token_is(s: &Scratch, name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if at(s, i) != name[i] {
            return false;
        }
        i += 1;
    }
    at(s, name.len()) == b' '
}

/// The start line's kind. A request line must also end in `SIP/2.0`,
/// which the caller checks once the first line end is known.
#[inline(always)]
pub fn start_line(s: &Scratch, n: usize) -> Start {
    if n < 12 {
        return Start::NotSip;
    }
    if token_is(s, b"SIP/2.0") {
        let d = at(s, 8);
        if (b'1'..=b'6').contains(&d) && at(s, 9).is_ascii_digit() && at(s, 10).is_ascii_digit()
        {
            return Start::Response(d - b'0');
        }
        return Start::NotSip;
    }
    // Most frequent keep-alive methods first.
    const ORDER: [Method; 14] = [
        Method::Options,
        Method::Info,
        Method::Update,
        Method::Message,
        Method::Register,
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Prack,
        Method::Subscribe,
        Method::Notify,
        Method::Publish,
        Method::Refer,
    ];
    for m in ORDER {
        if token_is(s, m.name().as_bytes()) {
            return Start::Request(m);
        }
    }
    // An extension method: a token of upper-case letters, then a space.
    let mut i = 0;
    while i < 16 {
        let c = at(s, i);
        if c == b' ' && i > 0 {
            return Start::Request(Method::Other);
        }
        if !c.is_ascii_uppercase() {
            return Start::NotSip;
        }
        i += 1;
    }
    Start::NotSip
}

/// Matches a header name at `p` (case-insensitive, compact forms too)
/// followed by optional whitespace and a colon; returns the offset of the
/// colon's next byte, or 0.
#[inline(always)]
fn header_value_at(s: &Scratch, p: usize, long: &[u8], compact: u8) -> usize {
    let c = lower(at(s, p));
    let name_len = if c == compact && (at(s, p + 1) == b':' || is_lws(at(s, p + 1))) {
        1
    } else {
        let mut i = 0;
        while i < long.len() {
            if lower(at(s, p + i)) != long[i] {
                return 0;
            }
            i += 1;
        }
        long.len()
    };
    // HCOLON = *( SP / HTAB ) ":" SWS
    let mut q = p + name_len;
    let mut k = 0;
    while k < 4 && is_lws(at(s, q)) {
        q += 1;
        k += 1;
    }
    if at(s, q) == b':' {
        q + 1
    } else {
        0
    }
}

/// One pass over the message: first line end, header positions, body.
#[inline(always)]
pub fn scan(s: &mut Scratch, n: usize) {
    s.first_eol = 0;
    s.to_value = 0;
    s.callid_value = 0;
    s.clen_value = 0;
    s.body_start = 0;
    for i in 0..SCAN_LEN {
        if i + 1 >= n {
            break;
        }
        if s.buf[i & BUF_MASK] != b'\n' {
            continue;
        }
        if s.first_eol == 0 {
            s.first_eol = i as u32;
        }
        let p = i + 1;
        let c = at(s, p);
        if c == b'\r' || c == b'\n' {
            // The empty line: the body follows it.
            s.body_start = (p + if c == b'\r' { 2 } else { 1 }) as u32;
            break;
        }
        match lower(c) {
            b't' => {
                let v = header_value_at(s, p, b"to", b't');
                if v != 0 && s.to_value == 0 {
                    s.to_value = v as u32;
                }
            }
            b'i' => {
                let v = header_value_at(s, p, b"", b'i');
                if v != 0 && s.callid_value == 0 {
                    s.callid_value = v as u32;
                }
            }
            b'l' => {
                let v = header_value_at(s, p, b"", b'l');
                if v != 0 && s.clen_value == 0 {
                    s.clen_value = v as u32;
                }
            }
            b'c' => {
                let v = header_value_at(s, p, b"call-id", 0);
                if v != 0 {
                    if s.callid_value == 0 {
                        s.callid_value = v as u32;
                    }
                } else {
                    let v = header_value_at(s, p, b"content-length", 0);
                    if v != 0 && s.clen_value == 0 {
                        s.clen_value = v as u32;
                    }
                }
            }
            _ => {}
        }
    }
}

/// The request line ends in "SIP/2.0" (before an optional CR).
#[inline(always)]
pub fn request_line_ok(s: &Scratch) -> bool {
    let eol = s.first_eol as usize;
    if eol < 9 || eol >= BUF_LEN {
        return false;
    }
    let end = if at(s, eol - 1) == b'\r' { eol - 1 } else { eol };
    let v = b"SIP/2.0";
    let mut i = 0;
    while i < 7 {
        if at(s, end - 7 + i) != v[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the To header carries a tag parameter.
#[inline(always)]
pub fn to_has_tag(s: &Scratch, n: usize) -> bool {
    let start = s.to_value as usize;
    if start == 0 {
        return false;
    }
    for j in 0..VALUE_SCAN {
        let p = start + j;
        if p + 4 >= n {
            return false;
        }
        let c = at(s, p);
        if c == b'\r' || c == b'\n' {
            return false;
        }
        if c == b';'
            && lower(at(s, p + 1)) == b't'
            && lower(at(s, p + 2)) == b'a'
            && lower(at(s, p + 3)) == b'g'
            && (at(s, p + 4) == b'=' || is_lws(at(s, p + 4)))
        {
            return true;
        }
    }
    false
}

/// Whether the message has a body: Content-Length > 0, or, without that
/// header, bytes after the empty line.
#[inline(always)]
pub fn has_body(s: &Scratch, n: usize) -> bool {
    let start = s.clen_value as usize;
    if start == 0 {
        let b = s.body_start as usize;
        return b != 0 && b < n;
    }
    for j in 0..16 {
        let p = start + j;
        if p >= n {
            return false;
        }
        let c = at(s, p);
        if is_lws(c) {
            continue;
        }
        // Any digit other than leading zeros means a body.
        return c.is_ascii_digit() && c != b'0' || (c == b'0' && nonzero_after(s, p + 1, n));
    }
    false
}

#[inline(always)]
fn nonzero_after(s: &Scratch, from: usize, n: usize) -> bool {
    for j in 0..12 {
        let p = from + j;
        if p >= n {
            return false;
        }
        let c = at(s, p);
        if !c.is_ascii_digit() {
            return false;
        }
        if c != b'0' {
            return true;
        }
    }
    false
}

/// The Call-ID hash (`sip_ka_common::callid_hash` of the value), or
/// `None` without a Call-ID.
#[inline(always)]
pub fn callid_hash(s: &Scratch, n: usize) -> Option<u64> {
    let start = s.callid_value as usize;
    if start == 0 {
        return None;
    }
    let mut hash = FNV_OFFSET;
    let mut seen = false;
    for j in 0..VALUE_SCAN {
        let p = start + j;
        if p >= n {
            break;
        }
        let c = at(s, p);
        if c == b'\r' || c == b'\n' {
            break;
        }
        if is_lws(c) {
            // Call-ID has no inner whitespace: leading is skipped,
            // trailing ends the value.
            if seen {
                break;
            }
            continue;
        }
        seen = true;
        hash = fnv1a_step(hash, c);
    }
    if seen {
        Some(hash)
    } else {
        None
    }
}
