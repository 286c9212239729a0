//! SIP classification: method or status class from the start line, then
//! one pass over the header lines for To (tag?), Call-ID and
//! Content-Length. Positions found are written to the scratch area, not
//! kept in registers, so the verifier sees the same state at every
//! iteration and the scan verifies in linear time.

use sip_ka_common::{
    callid::{fnv1a_step, is_lws, FNV_OFFSET},
    sip::Method,
};

use aya_ebpf::helpers::generated::bpf_loop;
use core::ffi::c_void;

use crate::structs::{Scratch, BUF_LEN, BUF_MASK};

const _: () = assert!(crate::structs::BUF_SLACK >= 8);

/// Bytes of a SIP message the scan reads (headers past this are not seen).
pub const SCAN_LEN: usize = 1504;
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

/// The number of payload bytes in the buffer, read from map memory each
/// time: a loop that exits early refines the verifier's idea of a length
/// it compared against, and a refined length carried into the next loop
/// would make the verifier walk that loop once per exit point.
#[inline(always)]
pub fn len(s: &Scratch) -> usize {
    // SAFETY: a plain read of a field of the scratch value.
    (unsafe { core::ptr::read_volatile(&s.len) } as usize) & (BUF_LEN * 2 - 1)
}

/// A position the scan recorded, read back from map memory for the same
/// reason as `len`: the compiler would otherwise hand the verifier the
/// exact value the scan stored, one per scan iteration.
#[inline(always)]
fn recorded(field: &u32) -> usize {
    // SAFETY: a plain read of a field of the scratch value.
    (unsafe { core::ptr::read_volatile(field) } as usize) & BUF_MASK
}

/// Records a position in map memory (volatile, so the compiler cannot keep
/// it in a register across iterations, where the verifier would see it).
#[inline(always)]
fn record(field: &mut u32, value: usize) {
    // SAFETY: a plain write to a field of the scratch value.
    unsafe { core::ptr::write_volatile(field, value as u32) }
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
pub fn start_line(s: &Scratch) -> Start {
    if len(s) < 12 {
        return Start::NotSip;
    }
    if token_is(s, b"SIP/2.0") {
        let d = at(s, 8);
        if (b'1'..=b'6').contains(&d) && at(s, 9).is_ascii_digit() && at(s, 10).is_ascii_digit() {
            return Start::Response(d - b'0');
        }
        return Start::NotSip;
    }
    // Literal names, tested most frequent keep-alive first: a table of
    // `&str` would put pointers in .rodata, which the verifier cannot follow.
    macro_rules! methods {
        ($($name:literal => $m:expr),* $(,)?) => {
            $(if token_is(s, $name) {
                return Start::Request($m);
            })*
        };
    }
    methods! {
        b"OPTIONS" => Method::Options,
        b"INFO" => Method::Info,
        b"UPDATE" => Method::Update,
        b"MESSAGE" => Method::Message,
        b"REGISTER" => Method::Register,
        b"INVITE" => Method::Invite,
        b"ACK" => Method::Ack,
        b"BYE" => Method::Bye,
        b"CANCEL" => Method::Cancel,
        b"PRACK" => Method::Prack,
        b"SUBSCRIBE" => Method::Subscribe,
        b"NOTIFY" => Method::Notify,
        b"PUBLISH" => Method::Publish,
        b"REFER" => Method::Refer,
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

/// Eight bytes at `p` as a little-endian word, letters folded to lower
/// case (OR 0x20 leaves ':', '-' and ' ' as they are). One load and a few
/// compares per line keep the scan loop cheap for the verifier.
#[inline(always)]
fn word_at(s: &Scratch, p: usize) -> u64 {
    let off = p & BUF_MASK;
    // SAFETY: off + 8 <= BUF_LEN + BUF_SLACK by the mask.
    let w = unsafe { (s.buf.as_ptr().add(off) as *const u64).read_unaligned() };
    w | 0x2020_2020_2020_2020
}

/// A header name (lower case, with its colon) as the low bytes of a word.
const fn name_word(name: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < name.len() {
        w |= (name[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const fn low_mask(len: usize) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

macro_rules! is_name {
    ($w:expr, $name:literal) => {
        $w & low_mask($name.len()) == name_word($name)
    };
}

/// One pass over the message: first line end, header positions, body.
#[inline(always)]
pub fn scan(s: &mut Scratch) {
    let n = len(s);
    record(&mut s.first_eol, 0);
    record(&mut s.to_value, 0);
    record(&mut s.callid_value, 0);
    record(&mut s.clen_value, 0);
    record(&mut s.body_start, 0);
    let mut ctx = ScanCtx {
        s: s as *mut Scratch,
        n: n as u64,
    };
    // bpf_loop: the verifier checks the step once, whatever the number of
    // words, where an open-coded loop would be walked word by word.
    unsafe {
        bpf_loop(
            SCAN_LEN.div_ceil(8 * WORDS_PER_STEP) as u32,
            scan_step as *mut c_void,
            &mut ctx as *mut ScanCtx as *mut c_void,
            0,
        );
    }
}

#[repr(C)]
struct ScanCtx {
    s: *mut Scratch,
    n: u64,
}

/// Words looked at per callback: fewer calls, same verification cost.
const WORDS_PER_STEP: usize = 4;

/// Four 8-byte words of the scan. Returns 1 to stop (end of data or of
/// the headers).
extern "C" fn scan_step(index: u64, ctx: *mut c_void) -> i64 {
    let ctx = unsafe { &mut *(ctx as *mut ScanCtx) };
    let s = unsafe { &mut *ctx.s };
    let n = ctx.n as usize & (BUF_LEN * 2 - 1);
    for k in 0..WORDS_PER_STEP {
        let base = ((index as usize * WORDS_PER_STEP + k) * 8) & (BUF_MASK - 7);
        if scan_word(s, n, base) {
            return 1;
        }
    }
    0
}

/// One 8-byte word: only a word holding a '\n' is looked at byte by
/// byte. True to stop.
#[inline(always)]
fn scan_word(s: &mut Scratch, n: usize, base: usize) -> bool {
    if base >= n {
        return true;
    }
    // SAFETY: base + 8 <= BUF_LEN by the caller's mask; `buf` sits at an
    // 8-aligned offset of the map value, so the read is aligned.
    let w = unsafe { (s.buf.as_ptr().add(base) as *const u64).read() };
    let x = w ^ 0x0a0a_0a0a_0a0a_0a0a;
    if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 == 0 {
        return false;
    }
    for k in 0..8 {
        let i = base + k;
        if i + 1 >= n {
            return true;
        }
        if s.buf[i & BUF_MASK] == b'\n' && header_line(s, i + 1) {
            return true;
        }
    }
    false
}

/// Looks at the line starting at `p` (just after a '\n'); returns true at
/// the empty line that ends the headers.
#[inline(always)]
fn header_line(s: &mut Scratch, p: usize) -> bool {
    if recorded(&s.first_eol) == 0 {
        record(&mut s.first_eol, p - 1);
    }
    let c = at(s, p);
    if c == b'\r' || c == b'\n' {
        // The empty line: the body follows it.
        record(&mut s.body_start, p + if c == b'\r' { 2 } else { 1 });
        return true;
    }
    let w = word_at(s, p);
    // Compact forms (t i l) and the long names; "To :" with a space
    // before the colon is allowed by HCOLON and seen in the wild.
    let (slot, value) = if is_name!(w, b"t:") {
        (&mut s.to_value, p + 2)
    } else if is_name!(w, b"to:") {
        (&mut s.to_value, p + 3)
    } else if is_name!(w, b"to :") {
        (&mut s.to_value, p + 4)
    } else if is_name!(w, b"i:") {
        (&mut s.callid_value, p + 2)
    } else if is_name!(w, b"call-id:") {
        (&mut s.callid_value, p + 8)
    } else if is_name!(w, b"l:") {
        (&mut s.clen_value, p + 2)
    } else if is_name!(w, b"content-") && is_name!(word_at(s, p + 8), b"length:") {
        (&mut s.clen_value, p + 15)
    } else {
        return false;
    };
    // The first occurrence of a header counts.
    if recorded(slot) == 0 {
        record(slot, value);
    }
    false
}

/// The request line ends in "SIP/2.0" (before an optional CR).
#[inline(always)]
pub fn request_line_ok(s: &Scratch) -> bool {
    let eol = recorded(&s.first_eol);
    if eol < 9 || eol >= BUF_LEN {
        return false;
    }
    let end = if at(s, eol - 1) == b'\r' {
        eol - 1
    } else {
        eol
    };
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
pub fn to_has_tag(s: &Scratch) -> bool {
    let n = len(s);
    let start = recorded(&s.to_value);
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
pub fn has_body(s: &Scratch) -> bool {
    let n = len(s);
    let start = recorded(&s.clen_value);
    if start == 0 {
        // Not `recorded`: the body may start just past the buffer
        // (2048 + 1), which must stay out of range, not wrap to 1.
        // SAFETY: a plain read of a field of the scratch value.
        let b = (unsafe { core::ptr::read_volatile(&s.body_start) } as usize) & (BUF_LEN * 2 - 1);
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
pub fn callid_hash(s: &Scratch) -> Option<u64> {
    let n = len(s);
    let start = recorded(&s.callid_value);
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
