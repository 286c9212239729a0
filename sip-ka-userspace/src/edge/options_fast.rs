//! The answer to the commonest datagram an edge gets, an OPTIONS ping to
//! the edge itself outside any dialog, written straight from the
//! datagram's bytes into the send buffer: no message model, no header
//! strings; only the top Via, when stamped with the source's address
//! (RFC 3581), is built apart.
//!
//! It is a shortcut, not a second parser: it takes only requests whose
//! every line it understands (the header fields below, each checked by
//! the same functions the full parse uses) and gives the very bytes the
//! full path ([`Edge::handle_full`]) would give, counted the same.
//! Anything else (other fields, folded lines, non-ASCII, a Call-ID the
//! dialog table holds, a shared store, a request from the PBX, input
//! the full parse would refuse) goes the full path, which answers it or
//! refuses it with a 400 as before.

use std::net::SocketAddr;

use super::{
    forward::{names, stamp_via},
    keepalive::{LocalTag, ACCEPT, ALLOW, MAX_ERROR_GROWTH},
    proxy::Out,
    state::{Counters, Edge},
    transport::Flow,
};
use crate::sip::{
    canonical_name,
    headers::{check_call_id, parse_number},
    parse::parse_request_uri,
    CSeq, Contact, Method, NameAddr, Via,
};

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// The answer is in the buffer; it goes back to the source.
    Answered,
    /// An answer too large to send over UDP (an amplifier): counted,
    /// nothing to send.
    Dropped,
    /// Not for this path: the full path handles it.
    Full,
}

/// Via fields kept for the answer; a request with more goes the full way.
const MAX_VIAS: usize = 8;

/// The fields the answer copies.
#[derive(Default)]
struct Fields<'a> {
    vias: [&'a str; MAX_VIAS],
    n_vias: usize,
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<&'a str>,
    max_forwards: Option<&'a str>,
    content_length: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// Where a header field goes.
enum Role {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    Contact,
    /// Read by the shield only (a scanner's goes the full path).
    UserAgent,
    /// Read by nothing on this path (nor on the full path for an OPTIONS
    /// to the edge): capabilities, identification, extension fields.
    Ignored,
}

/// The role of a header name, or `None` for a field this path leaves to
/// the full path (routing, ms-keep-alive, Require, Timestamp, ...).
fn role(name: &str) -> Option<Role> {
    // The fields every ping carries, in their usual spelling, before the
    // table search.
    let quick = match name {
        "Via" | "v" => Some(Role::Via),
        "From" | "f" => Some(Role::From),
        "To" | "t" => Some(Role::To),
        "Call-ID" | "i" => Some(Role::CallId),
        "CSeq" => Some(Role::CSeq),
        "Max-Forwards" => Some(Role::MaxForwards),
        "Content-Length" | "l" => Some(Role::ContentLength),
        "Contact" | "m" => Some(Role::Contact),
        "User-Agent" => Some(Role::UserAgent),
        "Accept" | "Allow" | "Supported" | "k" => Some(Role::Ignored),
        _ => None,
    };
    if quick.is_some() {
        return quick;
    }
    match canonical_name(name) {
        None => Some(Role::Ignored),
        Some("Via") => Some(Role::Via),
        Some("From") => Some(Role::From),
        Some("To") => Some(Role::To),
        Some("Call-ID") => Some(Role::CallId),
        Some("CSeq") => Some(Role::CSeq),
        Some("Max-Forwards") => Some(Role::MaxForwards),
        Some("Content-Length") => Some(Role::ContentLength),
        Some("Contact") => Some(Role::Contact),
        Some("User-Agent") => Some(Role::UserAgent),
        Some(
            "Accept" | "Accept-Encoding" | "Accept-Language" | "Allow" | "Allow-Events"
            | "Supported" | "Date" | "Organization" | "Subject",
        ) => Some(Role::Ignored),
        Some(_) => None,
    }
}

/// Sets a field that must appear at most once; a second one is for the
/// full path (which refuses it).
fn once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The header name characters of RFC 3261 25.1 (`token`).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A value without the SP and HTAB around it, as the full parse keeps it.
fn trim_wsp(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    b.get(start..end).unwrap_or(&[])
}

/// The next CRLF-ended line, of printable ASCII and HTAB only (what this
/// path copies into an answer); `None` for any other byte, a bare CR or
/// LF, or no CRLF. One pass over the bytes.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let cur = *rest;
    let end = cur
        .iter()
        .position(|&c| c != b'\t' && !(0x20..0x7f).contains(&c))?;
    if cur.get(end..end + 2) != Some(b"\r\n") {
        return None;
    }
    *rest = cur.get(end + 2..)?;
    cur.get(..end)
}

/// The request line `OPTIONS <uri> SIP/2.0`, the header fields, read and
/// checked, and the length of what follows them; `None` for anything the
/// full path must see.
fn read(raw: &[u8], max_headers: usize) -> Option<(&str, Fields<'_>, usize)> {
    let mut rest = raw;
    let start = next_line(&mut rest)?;
    let uri = start.strip_prefix(b"OPTIONS ")?.strip_suffix(b" SIP/2.0")?;
    if uri.is_empty() || uri.iter().any(|&b| b == b' ' || b == b'\t') {
        return None;
    }
    let uri = std::str::from_utf8(uri).ok()?;
    let mut f = Fields::default();
    let mut count = 0usize;
    loop {
        let line = next_line(&mut rest)?;
        match line.first() {
            // The empty line: the end of the header fields.
            None => break,
            // Folding: the full parse joins the lines.
            Some(b' ' | b'\t') => return None,
            Some(_) => {}
        }
        count += 1;
        if count > max_headers {
            return None;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = line.get(..colon)?;
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let value = std::str::from_utf8(trim_wsp(line.get(colon + 1..)?)).ok()?;
        match role(name)? {
            Role::Via => {
                *f.vias.get_mut(f.n_vias)? = value;
                f.n_vias += 1;
            }
            Role::From => once(&mut f.from, value)?,
            Role::To => once(&mut f.to, value)?,
            Role::CallId => once(&mut f.call_id, value)?,
            Role::CSeq => once(&mut f.cseq, value)?,
            Role::MaxForwards => once(&mut f.max_forwards, value)?,
            Role::ContentLength => once(&mut f.content_length, value)?,
            Role::Contact => Contact::parse_list(value).ok().map(|_| ())?,
            Role::UserAgent => f.user_agent = Some(value),
            Role::Ignored => {}
        }
    }
    Some((uri, f, rest.len()))
}

impl Edge {
    /// Handles a datagram that arrived from `src` on the socket `local`
    /// at `now_ms` (the edge's clock: [`crate::util::clock::now_ms`]).
    pub fn handle(&self, raw: &[u8], src: SocketAddr, local: SocketAddr, now_ms: u64) -> Out {
        let mut out = Vec::new();
        match self.answer_options_fast(raw, src, local, &mut out) {
            Fast::Answered => Some((out, Flow::Udp(src))),
            Fast::Dropped => None,
            Fast::Full => self.handle_full(raw, src, local, now_ms),
        }
    }

    /// Writes into `out` the answer to `raw` if it is an OPTIONS to the
    /// edge itself outside any dialog that this path can take (see the
    /// module's docs); [`Fast::Full`] leaves `out` unspecified and the
    /// datagram to [`Edge::handle_full`].
    pub fn answer_options_fast(
        &self,
        raw: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Fast {
        self.options_fast(raw, src, local, out)
            .unwrap_or(Fast::Full)
    }

    fn options_fast(
        &self,
        raw: &[u8],
        src: SocketAddr,
        local: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Option<Fast> {
        if !raw.starts_with(b"OPTIONS ") || self.store.is_some() || src == self.cfg.upstream {
            return None;
        }
        let limits = self.tun().limits;
        if raw.len() > limits.max_message_size {
            return None;
        }
        let (uri, f, body_len) = read(raw, limits.max_headers)?;
        // A scanner's ping is the shield's: the full path bans it.
        if f.user_agent.is_some_and(|ua| self.is_scanner(ua)) {
            return None;
        }
        // The full parse's checks (RFC 3261 19.1.5, 20), and what decides
        // it is an OPTIONS to the edge: no user part, the edge's address.
        let uri = parse_request_uri(uri).ok()?;
        if uri.user().is_some() || !names(local, uri.host(), uri.port()) {
            return None;
        }
        if f.n_vias == 0 {
            return None;
        }
        for via in f.vias.iter().take(f.n_vias) {
            Via::parse_list(via).ok()?;
        }
        let (from, to, call_id, cseq) = (f.from?, f.to?, f.call_id?, f.cseq?);
        let from_addr = NameAddr::parse(from).ok()?;
        if NameAddr::parse(to).ok()?.tag().is_some() {
            return None;
        }
        check_call_id(call_id).ok()?;
        if CSeq::parse(cseq).ok()?.method != Method::Options {
            return None;
        }
        if let Some(mf) = f.max_forwards {
            if parse_number("Max-Forwards", mf).ok()? > 255 {
                return None;
            }
        }
        if let Some(cl) = f.content_length {
            if usize::try_from(parse_number("Content-Length", cl).ok()?).ok()? > body_len {
                return None;
            }
        }
        // A Call-ID the dialog table holds is the full path's (it touches
        // the dialog).
        if self.dialogs().phase(call_id).is_some() {
            return None;
        }
        Counters::bump(&self.counters.options_edge);
        let tag = LocalTag::of(call_id, from_addr.tag().unwrap_or_default());
        // The top Via as the full path stamps it (RFC 3581, 3261 18.2.1).
        let top = Via::edit_first_of_list(f.vias.first()?, |v| stamp_via(v, src));
        let done = write_answer(
            out,
            &f,
            top.as_deref(),
            (from, to, call_id, cseq),
            tag,
            raw.len(),
        )?;
        if done == Fast::Dropped {
            log::debug!("edge: answer to udp:{src} larger than its request: dropped");
            Counters::bump(&self.counters.answers_dropped_size);
        }
        Some(done)
    }
}

/// The 200 with the request's Via fields (the first one replaced by `top`
/// when stamped), From, To with our tag, Call-ID, CSeq, and the
/// capabilities unless they would make the answer more than
/// [`MAX_ERROR_GROWTH`] larger than the request; the stamp stays even
/// then (the answer is dropped if it is still too large).
fn write_answer(
    out: &mut Vec<u8>,
    f: &Fields<'_>,
    top: Option<&str>,
    (from, to, call_id, cseq): (&str, &str, &str, &str),
    tag: LocalTag,
    raw_len: usize,
) -> Option<Fast> {
    use std::io::Write as _;
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    for (i, via) in f.vias.iter().take(f.n_vias).enumerate() {
        put(out, "Via", if i == 0 { top.unwrap_or(via) } else { via });
    }
    put(out, "From", from);
    write!(out, "To: {to};tag={tag}\r\n").ok()?;
    put(out, "Call-ID", call_id);
    put(out, "CSeq", cseq);
    let bare = out.len();
    put(out, "Allow", ALLOW);
    put(out, "Accept", ACCEPT);
    put(out, "Supported", "");
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let bound = raw_len + MAX_ERROR_GROWTH;
    if out.len() > bound {
        out.truncate(bare);
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    }
    Some(if out.len() > bound {
        Fast::Dropped
    } else {
        Fast::Answered
    })
}

fn put(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        edge::{config::EdgeConfig, dialog::NoSink, forward::via_destination, stats_values},
        sip::{parse_message, Framing, Limits},
    };

    const EDGE: &str = "198.18.0.1:5060";
    const PBX: &str = "198.18.0.1:5080";
    const UA: &str = "198.18.0.2:5070";

    fn edge() -> Edge {
        let cfg = EdgeConfig::new(EDGE.parse().unwrap(), PBX.parse().unwrap());
        Edge::new(cfg, Box::new(NoSink), None, 1_000)
    }

    /// sipp's OPTIONS of the Kamailio comparison, with `extra` header lines
    /// before Content-Length.
    fn ping(ruri: &str, extra: &str) -> String {
        format!(
            "OPTIONS {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK-1-0-1;rport\r\n\
             From: <sip:bench@198.18.0.2:5070>;tag=1b0\r\n\
             To: <sip:198.18.0.1:5060>\r\n\
             Call-ID: 1-77@198.18.0.2\r\n\
             CSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             Accept: application/sdp\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn sipp() -> String {
        ping("sip:198.18.0.1:5060", "")
    }

    /// Requests the shortcut takes.
    fn fast_cases() -> Vec<String> {
        let long_ua = format!("User-Agent: {}\r\n", "x".repeat(200));
        vec![
            sipp(),
            ping("sip:198.18.0.1", ""),
            ping("sip:198.18.0.1:5060;transport=udp", ""),
            ping("sip:198.18.0.1:5060", &long_ua),
            ping(
                "sip:198.18.0.1:5060",
                &format!("{long_ua}Allow: INVITE, ACK\r\nk: timer\r\nX-Whatever: 1\r\n"),
            ),
            ping("sip:198.18.0.1:5060", "Contact: <sip:bench@198.18.0.2:5070>\r\n"),
            ping(
                "sip:198.18.0.1:5060",
                "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2, SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK3\r\n",
            ),
            sipp().replace("Call-ID:", "i:").replace("From:", "f:"),
            sipp().replace("To:", "t:").replace("Via:", "v:"),
            sipp().replace("Content-Length: 0", "l: 0"),
            sipp().replace("Call-ID:", "CALL-ID:").replace("CSeq", "cseq"),
            sipp().replace("Via: ", "Via:   ").replace("\r\nFrom", "  \r\nFrom"),
            sipp().replace("\r\nMax-Forwards: 70", ""),
            sipp().replace("Content-Length: 0\r\n\r\n", "Content-Length: 4\r\n\r\nabcd"),
            sipp().replace("Content-Length: 0\r\n", ""),
            sipp().replace("From: <sip:bench@198.18.0.2:5070>;tag=1b0", "From: sip:x@y"),
            sipp().replace("Max-Forwards: 70", "Max-Forwards: 0"),
        ]
    }

    /// Requests the shortcut leaves to the full path (which answers some
    /// and refuses others).
    fn full_cases() -> Vec<String> {
        vec![
            format!("\r\n{}", sipp()),
            sipp().replace("OPTIONS sip", "options sip"),
            sipp().replace(" SIP/2.0\r\n", " sip/2.0\r\n"),
            ping("sip:100@198.18.0.1:5060", ""),
            ping("sip:198.18.0.1:5080", ""),
            ping("sip:198.18.0.1:5060?x=y", ""),
            ping("sip:198.18.0.1:5060", "Route: <sip:198.18.0.1;lr>\r\n"),
            ping("sip:198.18.0.1:5060", "ms-keep-alive: UAC;hop-hop=yes\r\n"),
            ping("sip:198.18.0.1:5060", "Timestamp: 54\r\n"),
            ping("sip:198.18.0.1:5060", "Require: foo\r\n"),
            ping("sip:198.18.0.1:5060", "User-Agent: caf\u{e9}\r\n"),
            ping("sip:198.18.0.1:5060", "User-Agent: a\r\n b\r\n"),
            ping("sip:198.18.0.1:5060", "Contact: <sip:bad\r\n"),
            ping("sip:198.18.0.1:5060", "From: <sip:x@y>\r\n"),
            ping(
                "sip:198.18.0.1:5060",
                &"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK9\r\n".repeat(8),
            ),
            sipp().replace(
                "To: <sip:198.18.0.1:5060>",
                "To: <sip:198.18.0.1:5060>;tag=x",
            ),
            sipp().replace("Via: ", "Via : "),
            sipp().replace("SIP/2.0/UDP 198.18.0.2:5070", "SIP/2.0/UDP"),
            sipp().replace("Call-ID: 1-77@198.18.0.2\r\n", ""),
            sipp().replace("Call-ID: 1-77@198.18.0.2", "Call-ID: a b"),
            sipp().replace("CSeq: 1 OPTIONS", "CSeq: 1 INFO"),
            sipp().replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS"),
            sipp().replace("Max-Forwards: 70", "Max-Forwards: 300"),
            sipp().replace("Content-Length: 0", "Content-Length: 10"),
            sipp().replace("Content-Length: 0\r\n", "Content-Length: 0\r\nl: 0\r\n"),
            sipp().replace("\r\nCSeq", "\nCSeq"),
            sipp().replace("\r\n\r\n", "\r\n"),
        ]
    }

    /// sipp's ping with its Via replaced by `via`.
    fn with_via(via: &str) -> String {
        sipp().replace(
            "SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK-1-0-1;rport",
            via,
        )
    }

    /// Pings the shortcut takes whose top Via the answer stamps with the
    /// source (198.18.0.2:5070) or leaves as it came.
    fn via_cases() -> Vec<String> {
        [
            "SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK1",
            "SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=10.201.1.9;rport=7",
            "SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK1;received=10.201.1.9",
            "SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK1;RPORT=9;Received=1.2.3.4",
            "SIP/2.0/UDP 198.18.0.2:5070;rport;branch=z9hG4bK1;x=y",
            // LWS the stamp writes out in the canonical form.
            "SIP / 2.0 / UDP  10.0.0.5 : 5060 ; branch = z9hG4bK1 ; rport",
            // The first of a list stamped, the others kept.
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport ,SIP/2.0/TCP 10.0.0.2;branch=z9hG4bK3 ;received=10.1.1.1",
            "SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK3",
        ]
        .iter()
        .map(|v| with_via(v))
        .collect()
    }

    /// The same over IPv6: an edge on [2001:db8::1]:5060 and pings from
    /// [2001:db8::2]:5070.
    fn v6_cases() -> Vec<(String, Fast)> {
        let v6 = |via: &str| {
            with_via(via)
                .replace("sip:198.18.0.1:5060", "sip:[2001:db8::1]:5060")
                .replace("198.18.0.2", "[2001:db8::2]")
        };
        vec![
            (
                v6("SIP/2.0/UDP [2001:db8::2]:5070;branch=z9hG4bK1;rport"),
                Fast::Answered,
            ),
            (
                v6("SIP/2.0/UDP [2001:db8::2]:5070;branch=z9hG4bK1"),
                Fast::Answered,
            ),
            (
                v6("SIP/2.0/UDP [2001:DB8::0:2]:5070;branch=z9hG4bK1"),
                Fast::Answered,
            ),
            (v6("SIP/2.0/UDP [fd00::5];branch=z9hG4bK1"), Fast::Answered),
            (
                v6("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;received=10.9.9.9;rport"),
                Fast::Answered,
            ),
            (
                v6("SIP/2.0/UDP [2001:db8::2]:5070;branch=z9hG4bK1;rport=1"),
                Fast::Answered,
            ),
        ]
    }

    /// A ping so small that the stamped Via alone (the capabilities gone)
    /// would outgrow it by more than MAX_ERROR_GROWTH: dropped by both.
    fn tiny() -> String {
        "OPTIONS sip:198.18.0.1 SIP/2.0\r\n\
         v:SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n\
         f:<sip:a@b>;tag=1\r\nt:<sip:198.18.0.1>\r\ni:x\r\nCSeq:1 OPTIONS\r\n\r\n"
            .to_string()
    }

    /// Every case on an edge at `local` from `src`: the edge with the
    /// shortcut sends the very bytes the full path sends, and counts the
    /// same; the shortcut does with each what it should.
    fn compare(local: &str, pbx: &str, src: &str, cases: Vec<(String, Fast)>) {
        let (src, local): (SocketAddr, SocketAddr) = (src.parse().unwrap(), local.parse().unwrap());
        let edge = || {
            let cfg = EdgeConfig::new(local, pbx.parse().unwrap());
            Edge::new(cfg, Box::new(NoSink), None, 1_000)
        };
        for (case, want) in cases {
            let raw = case.as_bytes();
            let (with, without, probe) = (edge(), edge(), edge());
            let mut buf = Vec::new();
            let took = probe.answer_options_fast(raw, src, local, &mut buf);
            assert_eq!(took, want, "{case:?}");
            let a = with.handle(raw, src, local, 2_000);
            let b = without.handle_full(raw, src, local, 2_000);
            assert_eq!(
                a.as_ref().map(|(o, f)| (String::from_utf8_lossy(o), *f)),
                b.as_ref().map(|(o, f)| (String::from_utf8_lossy(o), *f)),
                "{case:?}"
            );
            assert_eq!(stats_values(&with), stats_values(&without), "{case:?}");
            match want {
                Fast::Answered => {
                    assert_eq!(buf, a.as_ref().unwrap().0);
                    let r = parse_message(&buf, Framing::Datagram, &Limits::default()).unwrap();
                    assert_eq!(r.status_code(), Some(200));
                    assert!(r.to_tag().is_some_and(|t| t.starts_with("ska")));
                    let top = r.top_via().unwrap();
                    // The answer's Via leads back to the source, and to
                    // its port when the ping asked for rport.
                    let back = via_destination(&top).map(|a| a.ip());
                    assert_eq!(back, Some(src.ip()), "{case:?}");
                    if top.rport().is_some() {
                        assert_eq!(top.rport(), Some(Some(src.port())), "{case:?}");
                    }
                }
                Fast::Dropped => assert!(a.is_none(), "{case:?}"),
                Fast::Full => {}
            }
        }
    }

    #[test]
    fn the_shortcut_answers_as_the_full_path_does() {
        let answered = fast_cases().into_iter().chain(via_cases());
        let cases = answered
            .map(|c| (c, Fast::Answered))
            .chain(full_cases().into_iter().map(|c| (c, Fast::Full)))
            .chain([(tiny(), Fast::Dropped)])
            .collect();
        compare(EDGE, PBX, UA, cases);
        compare(
            "[2001:db8::1]:5060",
            "[2001:db8::1]:5080",
            "[2001:db8::2]:5070",
            v6_cases(),
        );
    }

    /// Capabilities go when the answer would outgrow the request by more
    /// than MAX_ERROR_GROWTH, and with them no more than that is sent.
    #[test]
    fn the_answer_never_outgrows_the_request() {
        let (src, local) = (UA.parse().unwrap(), EDGE.parse().unwrap());
        let e = edge();
        let mut buf = Vec::new();
        let short = sipp();
        assert_eq!(
            e.answer_options_fast(short.as_bytes(), src, local, &mut buf),
            Fast::Answered
        );
        assert!(buf.len() <= short.len() + MAX_ERROR_GROWTH);
        assert!(!String::from_utf8_lossy(&buf).contains("Allow:"));
        let long = ping(EDGE_URI, &format!("User-Agent: {}\r\n", "x".repeat(200)));
        assert_eq!(
            e.answer_options_fast(long.as_bytes(), src, local, &mut buf),
            Fast::Answered
        );
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains(&format!("Allow: {ALLOW}\r\n")), "{text}");
        assert!(
            text.ends_with("Supported: \r\nContent-Length: 0\r\n\r\n"),
            "{text}"
        );
        // An answer larger than the request allows even without them.
        let f = Fields {
            vias: ["SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1"; MAX_VIAS],
            n_vias: MAX_VIAS,
            ..Fields::default()
        };
        assert_eq!(
            write_answer(
                &mut buf,
                &f,
                None,
                ("<sip:a@b>", "<sip:c@d>", "x", "1 OPTIONS"),
                LocalTag::of("x", ""),
                100
            ),
            Some(Fast::Dropped)
        );
    }

    /// A ping with the Call-ID of a dialog the edge holds goes the full
    /// way (which marks the dialog as active); others do not.
    #[test]
    fn a_ping_in_a_known_dialog_goes_the_full_way() {
        let e = edge();
        let (ua, pbx, local) = (
            UA.parse().unwrap(),
            PBX.parse().unwrap(),
            EDGE.parse().unwrap(),
        );
        let invite = "INVITE sip:service@198.18.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.2:5070;branch=z9hG4bK-inv;rport\r\n\
             From: <sip:bench@198.18.0.2:5070>;tag=1b0\r\n\
             To: <sip:service@198.18.0.1>\r\n\
             Call-ID: 1-77@198.18.0.2\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:bench@198.18.0.2:5070>\r\n\
             Content-Length: 5\r\n\r\nv=0\r\n";
        let (fwd, _) = e.handle(invite.as_bytes(), ua, local, 2_000).unwrap();
        let fwd = parse_message(&fwd, Framing::Datagram, &Limits::default()).unwrap();
        let ok = fwd.response(200, "OK", Some("p1")).unwrap().to_bytes();
        e.handle(&ok, pbx, local, 2_000).unwrap();
        assert!(e.dialogs().known("1-77@198.18.0.2"));
        let mut buf = Vec::new();
        assert_eq!(
            e.answer_options_fast(sipp().as_bytes(), ua, local, &mut buf),
            Fast::Full
        );
        let (r, _) = e.handle(sipp().as_bytes(), ua, local, 3_000).unwrap();
        let r = parse_message(&r, Framing::Datagram, &Limits::default()).unwrap();
        assert_eq!(r.status_code(), Some(200));
        let other = sipp().replace("1-77@", "1-78@");
        assert_eq!(
            e.answer_options_fast(other.as_bytes(), ua, local, &mut buf),
            Fast::Answered
        );
    }

    const EDGE_URI: &str = "sip:198.18.0.1:5060";

    /// The PBX's own OPTIONS and any request but OPTIONS go the full way.
    #[test]
    fn only_pings_from_uas() {
        let e = edge();
        let mut buf = Vec::new();
        let local = EDGE.parse().unwrap();
        assert_eq!(
            e.answer_options_fast(sipp().as_bytes(), PBX.parse().unwrap(), local, &mut buf),
            Fast::Full
        );
        let info = sipp().replace("OPTIONS", "INFO");
        assert_eq!(
            e.answer_options_fast(info.as_bytes(), UA.parse().unwrap(), local, &mut buf),
            Fast::Full
        );
        assert_eq!(
            e.answer_options_fast(b"\r\n\r\n", UA.parse().unwrap(), local, &mut buf),
            Fast::Full
        );
        assert_eq!(
            e.answer_options_fast(b"OPTIONS ", UA.parse().unwrap(), local, &mut buf),
            Fast::Full
        );
    }
}
