//! Requests the edge answers itself and never forwards (seed 000 and
//! design section 4): in-dialog UPDATE/INFO/MESSAGE/OPTIONS without a
//! body, and OPTIONS outside a dialog.

use std::net::SocketAddr;

use super::forward::{fnv1a, names, stamp_received};
use super::transport::Flow;
use crate::sip::{Method, SipMessage};

/// Methods the edge answers for itself, in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, MESSAGE, PRACK, \
                         SUBSCRIBE, NOTIFY, REFER";
/// Bodies the edge accepts (it forwards SDP untouched).
pub const ACCEPT: &str = "application/sdp";

/// How many bytes the edge's own answer to a request over UDP (a
/// keep-alive's, or a 400 to a malformed one) may exceed the request by
/// (its To tag and Content-Length, a longer reason phrase than the
/// request line); a larger one is dropped and counted.
pub const MAX_ERROR_GROWTH: usize = 64;

/// What kind of keep-alive a request is, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// In-dialog (To tag) UPDATE, INFO, MESSAGE or OPTIONS without body.
    InDialog,
    /// OPTIONS outside a dialog whose Request-URI has no user part and
    /// names the edge's listening address.
    OptionsToEdge,
    /// Any other OPTIONS outside a dialog: answered for the PBX.
    OptionsToPbx,
}

/// Classifies a request that arrived on `local`; `None` means forward it
/// (a re-INVITE without SDP, for one, is never a keep-alive: 3PCC).
pub fn classify(msg: &SipMessage, local: SocketAddr) -> Option<Kind> {
    let method = msg.method()?;
    if msg.to_tag().is_some() {
        let ka = matches!(
            method,
            Method::Update | Method::Info | Method::Message | Method::Options
        );
        return (ka && msg.body().is_empty()).then_some(Kind::InDialog);
    }
    if *method != Method::Options {
        return None;
    }
    let to_edge = msg
        .request_uri()
        .is_some_and(|u| u.user().is_none() && names(local, u.host(), u.port()));
    Some(if to_edge {
        Kind::OptionsToEdge
    } else {
        Kind::OptionsToPbx
    })
}

/// The To tag the edge puts on responses it generates: stable for a
/// Call-ID and From tag, so retransmissions get the same answer.
pub struct LocalTag(u64);

impl LocalTag {
    pub fn of(call_id: &str, from_tag: &str) -> LocalTag {
        LocalTag(fnv1a(&[call_id.as_bytes(), from_tag.as_bytes()]) & 0xffff_ffff_ffff)
    }
}

impl std::fmt::Display for LocalTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ska{:012x}", self.0)
    }
}

/// [`LocalTag`] of a request.
pub fn local_tag(msg: &SipMessage) -> String {
    let call_id = msg.call_id().unwrap_or_default();
    let from_tag = msg.from_tag().unwrap_or_default();
    LocalTag::of(call_id, &from_tag).to_string()
}

/// What the edge answers, given whether the dialog is known, whether the
/// PBX is up, and the Retry-After (seconds) for a 503.
pub fn answer(
    msg: &SipMessage,
    kind: Kind,
    dialog_known: bool,
    upstream_up: bool,
    retry_after: u64,
) -> Option<SipMessage> {
    let tag = local_tag(msg);
    match kind {
        Kind::InDialog if dialog_known => msg.response(200, "OK", None),
        Kind::InDialog => msg.response(481, "Call/Transaction Does Not Exist", None),
        Kind::OptionsToEdge => {
            let mut r = msg.response(200, "OK", Some(&tag))?;
            capabilities(&mut r);
            Some(r)
        }
        Kind::OptionsToPbx if upstream_up => {
            let mut r = msg.response(200, "OK", Some(&tag))?;
            capabilities(&mut r);
            Some(r)
        }
        Kind::OptionsToPbx => {
            let mut r = msg.response(503, "Service Unavailable", Some(&tag))?;
            insert_before_length(&mut r, "Retry-After", retry_after.to_string());
            Some(r)
        }
    }
}

/// The edge's own answer to a request from `src` with its top Via stamped
/// as a forwarded request's is ([`stamp_received`]: `received`, `rport`).
/// Done before [`to_bytes_within`], so the stamp is kept and the
/// capabilities are what goes when the answer would outgrow its bound.
pub fn stamped(mut answer: SipMessage, src: SocketAddr) -> SipMessage {
    stamp_received(&mut answer, src);
    answer
}

/// Whether the edge's own answer `bytes` to a request of `request_len`
/// bytes that came by `src` would make the edge an amplifier: it goes
/// back over UDP (whose source anyone can forge) and is more than
/// [`MAX_ERROR_GROWTH`] bytes larger.
pub fn amplifies(bytes: &[u8], dest: Flow, src: Flow, request_len: usize) -> bool {
    dest == src && !src.is_stream() && bytes.len() > request_len + MAX_ERROR_GROWTH
}

/// The answer's bytes; with a `bound` (UDP), the capability headers are
/// left out of an answer that would be longer, since they are what a
/// spoofed minimal OPTIONS could otherwise get the edge to add.
pub fn to_bytes_within(mut answer: SipMessage, bound: Option<usize>) -> Vec<u8> {
    let bytes = answer.to_bytes();
    match bound {
        Some(max) if bytes.len() > max => {
            for name in ["Allow", "Accept", "Supported"] {
                answer.remove_header(name);
            }
            answer.to_bytes()
        }
        _ => bytes,
    }
}

fn capabilities(r: &mut SipMessage) {
    insert_before_length(r, "Allow", ALLOW.to_string());
    insert_before_length(r, "Accept", ACCEPT.to_string());
    // The edge itself requires no extension and offers none.
    insert_before_length(r, "Supported", String::new());
}

/// Adds a header, keeping Content-Length last.
fn insert_before_length(r: &mut SipMessage, name: &str, value: String) {
    r.remove_header("Content-Length");
    r.push_header(name, value);
    r.push_header("Content-Length", "0");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};

    fn msg(s: &str) -> SipMessage {
        crate::sip::parse_message(s.as_bytes(), Framing::Datagram, &Limits::default()).unwrap()
    }

    fn req(method: &str, ruri: &str, to_tag: &str, body: &str) -> SipMessage {
        msg(&format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@example.com>{to_tag}\r\n\
             Call-ID: k1@example.com\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    #[test]
    fn classification() {
        let local = "198.18.0.1:5060".parse().unwrap();
        for m in ["UPDATE", "INFO", "MESSAGE", "OPTIONS"] {
            assert_eq!(
                classify(&req(m, "sip:bob@x", ";tag=t", ""), local),
                Some(Kind::InDialog),
                "{m}"
            );
            assert_eq!(
                classify(&req(m, "sip:bob@x", ";tag=t", "v=0\r\n"), local),
                None
            );
        }
        assert_eq!(
            classify(&req("INVITE", "sip:bob@x", ";tag=t", ""), local),
            None
        );
        assert_eq!(
            classify(&req("BYE", "sip:bob@x", ";tag=t", ""), local),
            None
        );
        assert_eq!(classify(&req("INFO", "sip:bob@x", "", ""), local), None);
        assert_eq!(
            classify(&req("OPTIONS", "sip:198.18.0.1", "", ""), local),
            Some(Kind::OptionsToEdge)
        );
        assert_eq!(
            classify(&req("OPTIONS", "sip:198.18.0.1:5060", "", ""), local),
            Some(Kind::OptionsToEdge)
        );
        assert_eq!(
            classify(&req("OPTIONS", "sip:100@198.18.0.1", "", ""), local),
            Some(Kind::OptionsToPbx)
        );
        assert_eq!(
            classify(&req("OPTIONS", "sip:198.18.0.1:5080", "", ""), local),
            Some(Kind::OptionsToPbx)
        );
    }

    #[test]
    fn answers() {
        let ka = req("INFO", "sip:bob@x", ";tag=t", "");
        let r = answer(&ka, Kind::InDialog, true, true, 5).unwrap();
        assert_eq!(r.status_code(), Some(200));
        let r = answer(&ka, Kind::InDialog, false, true, 5).unwrap();
        assert_eq!(r.status_code(), Some(481));
        let opt = req("OPTIONS", "sip:198.18.0.1", "", "");
        let r = answer(&opt, Kind::OptionsToEdge, false, false, 5).unwrap();
        assert_eq!(r.status_code(), Some(200));
        assert_eq!(r.header("Allow"), Some(ALLOW));
        assert_eq!(r.header("Accept"), Some(ACCEPT));
        assert!(r.has_header("Supported"));
        assert!(r.to_tag().is_some());
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
        let r = answer(&opt, Kind::OptionsToPbx, false, false, 7).unwrap();
        assert_eq!(r.status_code(), Some(503));
        assert_eq!(r.header("Retry-After"), Some("7"));
        // Parses back.
        msg(&String::from_utf8(r.to_bytes()).unwrap());
    }
}
