//! The daemon's STUN Binding server: what the XDP program answers, the
//! daemon answers with the same bytes (same builder); what XDP passes, the
//! daemon answers with a proper error (RFC 8489 6.3).

use std::net::SocketAddr;

use sip_ka_common::stun::{
    build_binding_success, classify, crc32, Generation, Reflexive, Verdict, ATTR_CHANGE_REQUEST,
    ATTR_ERROR_CODE, ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_USERNAME, BINDING_ERROR, BINDING_REQUEST, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE_BYTES,
    MAX_AMPLIFICATION, MAX_ANSWER,
};

const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
const ATTR_USERHASH: u16 = 0x001E;

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A Binding success response.
    Success(Vec<u8>),
    /// A Binding error response with this code.
    Error(Vec<u8>, u16),
    /// A request whose FINGERPRINT is wrong: dropped.
    BadFingerprint,
    /// Not a STUN request this server answers (or a classic request asking
    /// for a change of address, which a single-address server leaves
    /// unanswered, as RFC 3489 clients expect).
    Ignore,
}

pub fn reflexive(src: SocketAddr) -> Reflexive {
    let mut addr = [0u8; 16];
    let is_v4 = match src {
        SocketAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.ip().octets());
            true
        }
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => {
                addr[..4].copy_from_slice(&v4.octets());
                true
            }
            None => {
                addr = a.ip().octets();
                false
            }
        },
    };
    Reflexive {
        addr,
        is_v4,
        port: src.port(),
    }
}

fn id_of(msg: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&msg[4..20]);
    id
}

fn success(msg: &[u8], generation: Generation, src: SocketAddr) -> Reply {
    let mut out = [0u8; MAX_ANSWER];
    let n = build_binding_success(&mut out, &id_of(msg), generation, &reflexive(src));
    Reply::Success(out[..n].to_vec())
}

/// What the request holds beyond the header, as far as answering goes.
struct Walk {
    fingerprint: Option<Result<(), ()>>,
    credentials: bool,
    change_flags: bool,
    unknown: Vec<u16>,
}

fn walk(msg: &[u8], modern: bool) -> Result<Walk, &'static str> {
    let mut w = Walk {
        fingerprint: None,
        credentials: false,
        change_flags: false,
        unknown: Vec::new(),
    };
    let mut off = HEADER_LEN;
    while off < msg.len() {
        if w.fingerprint.is_some() {
            return Err("attribute after FINGERPRINT");
        }
        let Some(hdr) = msg.get(off..off + 4) else {
            return Err("truncated attribute header");
        };
        let at = u16::from_be_bytes([hdr[0], hdr[1]]);
        let alen = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
        let padded = (alen + 3) & !3;
        let Some(value) = msg.get(off + 4..off + 4 + alen) else {
            return Err("attribute longer than the message");
        };
        if off + 4 + padded > msg.len() {
            return Err("attribute padding missing");
        }
        match at {
            ATTR_FINGERPRINT if modern => {
                if alen != 4 {
                    return Err("FINGERPRINT is not 4 bytes");
                }
                let want = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                w.fingerprint = Some(if crc32(&msg[..off]) ^ FINGERPRINT_XOR == want {
                    Ok(())
                } else {
                    Err(())
                });
            }
            ATTR_USERNAME
            | ATTR_MESSAGE_INTEGRITY
            | ATTR_MESSAGE_INTEGRITY_SHA256
            | ATTR_USERHASH => w.credentials = true,
            ATTR_CHANGE_REQUEST => w.change_flags |= value.iter().any(|b| *b != 0),
            t if t < 0x8000 => w.unknown.push(t),
            _ => {}
        }
        off += 4 + padded;
    }
    Ok(w)
}

/// An error response (RFC 8489 14.8 ERROR-CODE, 14.13 UNKNOWN-ATTRIBUTES),
/// with a FINGERPRINT when the request had one.
pub fn error_response(
    id: &[u8; 16],
    code: u16,
    reason: &str,
    unknown: &[u16],
    fingerprint: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut ec = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
    ec.extend_from_slice(reason.as_bytes());
    push_attr(&mut body, ATTR_ERROR_CODE, &ec);
    if !unknown.is_empty() {
        let list: Vec<u8> = unknown.iter().flat_map(|a| a.to_be_bytes()).collect();
        push_attr(&mut body, ATTR_UNKNOWN_ATTRIBUTES, &list);
    }
    let mut msg = Vec::with_capacity(HEADER_LEN + body.len() + 8);
    msg.extend_from_slice(&BINDING_ERROR.to_be_bytes());
    let len = body.len() + if fingerprint { 8 } else { 0 };
    msg.extend_from_slice(&(len as u16).to_be_bytes());
    msg.extend_from_slice(id);
    msg.extend_from_slice(&body);
    if fingerprint {
        let fp = crc32(&msg) ^ FINGERPRINT_XOR;
        push_attr(&mut msg, ATTR_FINGERPRINT, &fp.to_be_bytes());
    }
    msg
}

fn push_attr(out: &mut Vec<u8>, at: u16, value: &[u8]) {
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// What [`respond_into`] wrote.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error(u16),
    BadFingerprint,
    Ignore,
}

/// [`respond`] into `out` (emptied first): a request the fast path would
/// answer, the common case, is built in place without an allocation.
pub fn respond_into(msg: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let verdict = classify(msg);
    if let Verdict::Answer(g) = verdict {
        let mut buf = [0u8; MAX_ANSWER];
        let n = build_binding_success(&mut buf, &id_of(msg), g, &reflexive(src));
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
        return Outcome::Success;
    }
    match respond_classified(msg, src, verdict) {
        Reply::Success(bytes) => {
            out.extend_from_slice(&bytes);
            Outcome::Success
        }
        Reply::Error(bytes, code) => {
            out.extend_from_slice(&bytes);
            Outcome::Error(code)
        }
        Reply::BadFingerprint => Outcome::BadFingerprint,
        Reply::Ignore => Outcome::Ignore,
    }
}

/// The answer to one datagram from `src`; never more than
/// `MAX_AMPLIFICATION` bytes longer than the request.
pub fn respond(msg: &[u8], src: SocketAddr) -> Reply {
    respond_classified(msg, src, classify(msg))
}

/// [`respond`] with the fast path's verdict on `msg` already at hand:
/// walking the attributes and checking the FINGERPRINT again would double
/// the cost of every request the fast path passed.
fn respond_classified(msg: &[u8], src: SocketAddr, verdict: Verdict) -> Reply {
    match respond_unbounded(msg, src, verdict) {
        Reply::Error(bytes, code) if bytes.len() > msg.len() + MAX_AMPLIFICATION => {
            // Retry without the reason phrase; if that is still too big,
            // stay silent rather than amplify.
            let id = id_of(msg);
            let fp = bytes.len() >= 8
                && bytes[bytes.len() - 8..bytes.len() - 6] == ATTR_FINGERPRINT.to_be_bytes();
            let unknown = unknown_list(&bytes);
            let short = error_response(&id, code, "", &unknown, fp);
            if short.len() > msg.len() + MAX_AMPLIFICATION {
                Reply::Ignore
            } else {
                Reply::Error(short, code)
            }
        }
        other => other,
    }
}

/// The UNKNOWN-ATTRIBUTES list of an error response this module built.
fn unknown_list(resp: &[u8]) -> Vec<u16> {
    let mut off = HEADER_LEN;
    while off + 4 <= resp.len() {
        let at = u16::from_be_bytes([resp[off], resp[off + 1]]);
        let alen = u16::from_be_bytes([resp[off + 2], resp[off + 3]]) as usize;
        if at == ATTR_UNKNOWN_ATTRIBUTES {
            return resp[off + 4..off + 4 + alen]
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
        }
        off += 4 + ((alen + 3) & !3);
    }
    Vec::new()
}

fn respond_unbounded(msg: &[u8], src: SocketAddr, verdict: Verdict) -> Reply {
    match verdict {
        Verdict::NotStun => return Reply::Ignore,
        Verdict::BadFingerprint => return Reply::BadFingerprint,
        Verdict::Answer(g) => return success(msg, g, src),
        Verdict::Pass => {}
    }
    let msg_type = u16::from_be_bytes([msg[0], msg[1]]);
    let modern = msg[4..8] == MAGIC_COOKIE_BYTES;
    // Only requests (class bits 00) get answers; indications and
    // responses never do.
    if msg_type & 0x0110 != 0 {
        return Reply::Ignore;
    }
    let id = id_of(msg);
    let walked = walk(msg, modern);
    if !modern {
        // RFC 3489: answer a plain Binding request of any length; stay
        // silent otherwise (a change request, a malformed one).
        return match walked {
            Ok(w) if msg_type == BINDING_REQUEST && !w.change_flags && w.unknown.is_empty() => {
                success(msg, Generation::Classic, src)
            }
            _ => Reply::Ignore,
        };
    }
    let w = match walked {
        Ok(w) => w,
        Err(reason) => {
            log::debug!("STUN request from {src}: {reason}");
            return Reply::Error(error_response(&id, 400, "Bad Request", &[], false), 400);
        }
    };
    if w.fingerprint == Some(Err(())) {
        return Reply::BadFingerprint;
    }
    let fp = w.fingerprint.is_some();
    if msg_type != BINDING_REQUEST {
        return Reply::Error(error_response(&id, 400, "Bad Request", &[], fp), 400);
    }
    if !w.unknown.is_empty() {
        return Reply::Error(
            error_response(&id, 420, "Unknown Attribute", &w.unknown, fp),
            420,
        );
    }
    if w.credentials {
        return Reply::Error(error_response(&id, 401, "Unauthorized", &[], fp), 401);
    }
    if w.change_flags {
        return Reply::Error(
            error_response(&id, 420, "Unknown Attribute", &[ATTR_CHANGE_REQUEST], fp),
            420,
        );
    }
    // A request the fast path found too long to read: nothing wrong with it.
    success(msg, Generation::Modern { fingerprint: fp }, src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[(u16, &[u8])], fingerprint: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            push_attr(&mut body, *t, v);
        }
        let mut msg = vec![0x00, 0x01, 0, 0];
        msg.extend_from_slice(&MAGIC_COOKIE_BYTES);
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&body);
        let len = body.len() + if fingerprint { 8 } else { 0 };
        msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        if fingerprint {
            let fp = crc32(&msg) ^ FINGERPRINT_XOR;
            push_attr(&mut msg, ATTR_FINGERPRINT, &fp.to_be_bytes());
        }
        msg
    }

    fn src() -> SocketAddr {
        "192.0.2.1:32853".parse().unwrap()
    }

    #[test]
    fn plain_request_gets_success() {
        let r = respond(&request(&[(0x8022, b"client")], true), src());
        let Reply::Success(bytes) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&bytes[..2], &[0x01, 0x01]);
        assert_eq!(bytes.len(), 40);
    }

    #[test]
    fn unknown_required_attribute_gets_420_listing_it() {
        let r = respond(&request(&[(0x0042, b"abcd")], true), src());
        let Reply::Error(bytes, 420) = r else {
            panic!("{r:?}")
        };
        assert_eq!(&bytes[..2], &[0x01, 0x11]);
        let pos = bytes.windows(2).position(|w| w == [0x00, 0x0A]).unwrap();
        assert_eq!(&bytes[pos + 4..pos + 6], &[0x00, 0x42]);
        // Ends with a valid FINGERPRINT.
        let n = bytes.len();
        let fp = u32::from_be_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
        assert_eq!(crc32(&bytes[..n - 8]) ^ FINGERPRINT_XOR, fp);
    }

    #[test]
    fn credentials_get_401_and_garbage_gets_400() {
        let r = respond(&request(&[(ATTR_USERNAME, b"user")], false), src());
        assert!(matches!(r, Reply::Error(_, 401)), "{r:?}");
        let mut truncated = request(&[(0x8022, b"abcdefgh")], false);
        truncated[23] = 200; // attribute length past the end
        let r = respond(&truncated, src());
        assert!(matches!(r, Reply::Error(_, 400)), "{r:?}");
    }

    #[test]
    fn errors_never_amplify_beyond_the_bound() {
        // A minimal request with one unknown attribute: the 420 with its
        // reason phrase would be too long, so the phrase is dropped.
        let req = request(&[(0x0042, b"")], false);
        let r = respond(&req, src());
        let Reply::Error(bytes, 420) = r else {
            panic!("{r:?}")
        };
        assert!(
            bytes.len() <= req.len() + MAX_AMPLIFICATION,
            "{} vs {}",
            bytes.len(),
            req.len()
        );
    }

    #[test]
    fn bad_fingerprint_is_dropped() {
        let mut msg = request(&[], true);
        let n = msg.len();
        msg[n - 1] ^= 1;
        assert_eq!(respond(&msg, src()), Reply::BadFingerprint);
    }

    #[test]
    fn long_request_is_answered() {
        let long = vec![b'x'; 400];
        let r = respond(&request(&[(0x8022, &long)], true), src());
        assert!(matches!(r, Reply::Success(_)), "{r:?}");
    }

    #[test]
    fn in_place_answers_are_the_same_bytes() {
        let mut out = vec![0xAA; 7];
        for req in [
            request(&[], true),
            request(&[], false),
            request(&[(0x0042, b"abcd")], true),
            request(&[(ATTR_USERNAME, b"user")], false),
        ] {
            let outcome = respond_into(&req, src(), &mut out);
            match respond(&req, src()) {
                Reply::Success(b) => assert_eq!((outcome, &out), (Outcome::Success, &b)),
                Reply::Error(b, c) => assert_eq!((outcome, &out), (Outcome::Error(c), &b)),
                other => panic!("{other:?}"),
            }
        }
        let mut bad = request(&[], true);
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(respond_into(&bad, src(), &mut out), Outcome::BadFingerprint);
        assert!(out.is_empty());
    }

    #[test]
    fn responses_and_indications_are_ignored() {
        let mut msg = request(&[], false);
        msg[0] = 0x01;
        msg[1] = 0x01;
        assert_eq!(respond(&msg, src()), Reply::Ignore);
        msg[0] = 0x00;
        msg[1] = 0x11;
        assert_eq!(respond(&msg, src()), Reply::Ignore);
    }
}
