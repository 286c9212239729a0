//! The top Via of every answer the edge generates itself carries the
//! request's source as the forward path stamps it (RFC 3261 18.2.1,
//! RFC 3581 4): keep-alive answers, refusals and 400s, over UDP and
//! streams, IPv4 and IPv6, within the amplification bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, sync::atomic::Ordering};

use super::{
    config::EdgeConfig,
    dialog::NoSink,
    keepalive::{ALLOW, MAX_ERROR_GROWTH},
    state::Edge,
    transport::{Conn, Flow, StreamKind},
};
use crate::sip::{parse_message, Framing, Limits, SipMessage};

const EDGE: &str = "198.18.0.1:5060";
const PBX: &str = "198.18.0.1:5080";
const UA: &str = "198.18.0.2:5062";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn edge_at(local: &str, pbx: &str) -> Edge {
    Edge::new(
        EdgeConfig::new(addr(local), addr(pbx)),
        Box::new(NoSink),
        None,
        1_000,
    )
}

fn parse(b: &[u8]) -> SipMessage {
    parse_message(b, Framing::Datagram, &Limits::default()).unwrap()
}

/// The request line and fields of a request from a UA with `via` on top
/// (and a second Via below it, which no answer may touch), `extra` lines
/// before Content-Length.
fn request(start: &str, method: &str, via: &str, to_tag: &str, extra: &str) -> String {
    format!(
        "{start} SIP/2.0\r\n\
         Via: {via}\r\n\
         Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKbelow;received=10.201.1.1\r\n\
         From: <sip:ua@198.18.0.2>;tag=u1\r\n\
         To: <sip:service@198.18.0.1>{to_tag}\r\n\
         Call-ID: st-1@198.18.0.2\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// Every kind of answer the edge generates, for a request topped by `via`.
fn requests(via: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "200 to an OPTIONS to the edge",
            request("OPTIONS sip:198.18.0.1", "OPTIONS", via, "", ""),
        ),
        (
            "481 to a keep-alive in an unknown dialog",
            request("INFO sip:service@198.18.0.1", "INFO", via, ";tag=x1", ""),
        ),
        (
            "503 to an OPTIONS for the PBX while it is down",
            request("OPTIONS sip:100@198.18.0.1", "OPTIONS", via, "", ""),
        ),
        (
            "483 to Max-Forwards 0",
            request("INVITE sip:100@198.18.0.1", "INVITE", via, "", "")
                .replace("Max-Forwards: 70", "Max-Forwards: 0"),
        ),
        (
            "422 to a Session-Expires below Min-SE",
            request(
                "INVITE sip:100@198.18.0.1",
                "INVITE",
                via,
                "",
                "Supported: timer\r\nSession-Expires: 30\r\n",
            ),
        ),
        (
            "400 to a request without Call-ID",
            request("INVITE sip:100@198.18.0.1", "INVITE", via, "", "")
                .replace("Call-ID: st-1@198.18.0.2\r\n", ""),
        ),
    ]
}

/// The top Via of an answer, as the bytes spell it, and the one below.
fn vias_of(answer: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(answer);
    let mut vias = text
        .lines()
        .filter_map(|l| l.strip_prefix("Via: "))
        .map(str::to_string);
    (vias.next().unwrap(), vias.next().unwrap())
}

/// (top Via of the request, the top Via every answer must carry), for a
/// request from `src`.
fn stamp_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        // Sent-by is the source, no rport: left exactly as it came.
        (
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1",
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1",
        ),
        // rport asked: filled in, and received with it though the host
        // matches (RFC 3581 4).
        (
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1;rport=5062;received=198.18.0.2",
        ),
        // Behind NAT, no rport: received only (RFC 3261 18.2.1).
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=198.18.0.2",
        ),
        // Behind NAT with rport: the public address and port.
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=5062;received=198.18.0.2",
        ),
        // A host name is never the source address.
        (
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1",
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1;received=198.18.0.2",
        ),
        // Values the sender wrote itself are replaced by the real ones.
        (
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=10.201.1.9;rport=7",
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=5062;received=198.18.0.2",
        ),
        // A forged received on a sent-by that is the source: dropped.
        (
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1;received=10.201.1.9",
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1",
        ),
        // A forged rport alone: the sender did ask, so the real one.
        (
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1;rport=9",
            "SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK1;rport=5062;received=198.18.0.2",
        ),
    ]
}

#[test]
fn every_answer_the_edge_makes_carries_the_stamped_top_via() {
    let (ua, local) = (addr(UA), addr(EDGE));
    for (via, want) in stamp_cases() {
        for (what, req) in requests(via) {
            // Both the datagram path (with the shortcut) and the full one.
            for full in [false, true] {
                let e = edge_at(EDGE, PBX);
                let raw = req.as_bytes();
                let out = if full {
                    e.handle_full(raw, ua, local, 2_000)
                } else {
                    e.handle(raw, ua, local, 2_000)
                };
                let (bytes, dest) = out.unwrap_or_else(|| panic!("{what}: no answer to {via}"));
                assert_eq!(dest, Flow::Udp(ua), "{what}");
                let status = String::from_utf8_lossy(&bytes);
                let code = what.get(..3).unwrap();
                assert!(
                    status.starts_with(&format!("SIP/2.0 {code} ")),
                    "{what}: {status}"
                );
                let (top, below) = vias_of(&bytes);
                assert_eq!(top, want, "{what}, full path {full}");
                assert_eq!(
                    below, "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKbelow;received=10.201.1.1",
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn answers_to_an_ipv6_source_say_its_address_unbracketed() {
    let (edge6, pbx6, ua6) = (
        "[2001:db8::1]:5060",
        "[2001:db8::1]:5080",
        "[2001:db8::2]:5062",
    );
    let cases = [
        (
            "SIP/2.0/UDP [2001:db8::2]:5062;branch=z9hG4bK1;rport",
            "SIP/2.0/UDP [2001:db8::2]:5062;branch=z9hG4bK1;rport=5062;received=2001:db8::2",
        ),
        // The same address spelt otherwise is still the source.
        (
            "SIP/2.0/UDP [2001:DB8:0::2]:5062;branch=z9hG4bK1",
            "SIP/2.0/UDP [2001:DB8:0::2]:5062;branch=z9hG4bK1",
        ),
        (
            "SIP/2.0/UDP [fd00::5]:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP [fd00::5]:5060;branch=z9hG4bK1;received=2001:db8::2",
        ),
        (
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;received=10.201.1.9;rport",
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;rport=5062;received=2001:db8::2",
        ),
    ];
    for (via, want) in cases {
        let reqs = [
            request("OPTIONS sip:[2001:db8::1]", "OPTIONS", via, "", ""),
            request("INFO sip:s@[2001:db8::1]", "INFO", via, ";tag=x1", ""),
        ];
        for req in reqs {
            let e = edge_at(edge6, pbx6);
            let (bytes, _) = e
                .handle(req.as_bytes(), addr(ua6), addr(edge6), 2_000)
                .unwrap();
            assert_eq!(vias_of(&bytes).0, want, "{req}");
        }
    }
}

#[test]
fn answers_over_a_connection_are_stamped_with_its_peer() {
    let e = edge_at(EDGE, PBX);
    let (local, peer) = (addr(EDGE), addr("198.18.0.2:40009"));
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let id = e.transports.add_conn(Conn {
        tx,
        peer,
        local,
        idle_ms: Default::default(),
    });
    for kind in [StreamKind::Tcp, StreamKind::Tls] {
        let flow = Flow::Stream { id, peer, kind };
        let via = "SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK1;rport";
        let want = "SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK1;rport=40009;received=198.18.0.2";
        for (what, req) in requests(via) {
            let (bytes, dest) = e
                .handle_message(req.as_bytes(), Framing::Stream, flow, local, 2_000)
                .unwrap_or_else(|| panic!("{what}"));
            assert_eq!(dest, flow, "{what}");
            assert_eq!(vias_of(&bytes).0, want, "{what} over {kind:?}");
        }
    }
}

/// A small ping from behind NAT with rport: the stamped Via (30 bytes
/// more) and the To tag leave no room for the capabilities, so they go;
/// the stamp stays. Smaller yet, with compact names spelt out: even
/// without them the answer would outgrow the bound, so nothing is sent
/// (counted), never an answer without the stamp.
#[test]
fn the_stamp_outranks_the_capabilities_and_the_bound_still_holds() {
    let (ua, local) = (addr(UA), addr(EDGE));
    let small = "OPTIONS sip:198.18.0.1 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n\
                 From: <sip:a@b>;tag=1\r\n\
                 To: <sip:198.18.0.1>\r\n\
                 Call-ID: x\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n";
    let tiny = "OPTIONS sip:198.18.0.1 SIP/2.0\r\n\
                v:SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n\
                f:<sip:a@b>;tag=1\r\n\
                t:<sip:198.18.0.1>\r\n\
                i:x\r\n\
                CSeq:1 OPTIONS\r\n\r\n";
    for full in [false, true] {
        let e = edge_at(EDGE, PBX);
        let send = |raw: &str| {
            if full {
                e.handle_full(raw.as_bytes(), ua, local, 2_000)
            } else {
                e.handle(raw.as_bytes(), ua, local, 2_000)
            }
        };
        let (bytes, _) = send(small).unwrap();
        assert!(
            bytes.len() <= small.len() + MAX_ERROR_GROWTH,
            "{} bytes to {}",
            bytes.len(),
            small.len()
        );
        let r = parse(&bytes);
        assert_eq!(r.status_code(), Some(200));
        assert!(!r.has_header("Allow") && !r.has_header("Supported"));
        let top = r.top_via().unwrap();
        assert_eq!(top.rport(), Some(Some(5062)));
        assert_eq!(top.received(), Some("198.18.0.2"));
        // With the capabilities it would have been too large.
        let allow = format!("Allow: {ALLOW}\r\n");
        assert!(bytes.len() + allow.len() > small.len() + MAX_ERROR_GROWTH);

        assert!(send(tiny).is_none(), "full path {full}");
        assert_eq!(e.counters.answers_dropped_size.load(Ordering::Relaxed), 1);
    }
}

/// A 400 for a top Via whose parameters are what is broken: it cannot be
/// stamped without guessing, so it goes back as it came (to the source,
/// as every datagram answer does).
#[test]
fn a_top_via_that_does_not_parse_is_copied_into_the_400() {
    let (ua, local) = (addr(UA), addr(EDGE));
    let via = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=none";
    let req = request("OPTIONS sip:198.18.0.1", "OPTIONS", via, "", "");
    let e = edge_at(EDGE, PBX);
    let (bytes, dest) = e.handle(req.as_bytes(), ua, local, 2_000).unwrap();
    assert_eq!(dest, Flow::Udp(ua));
    assert!(String::from_utf8_lossy(&bytes).starts_with("SIP/2.0 400 "));
    assert_eq!(vias_of(&bytes).0, via);
}
