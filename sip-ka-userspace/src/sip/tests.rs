//! Tests of parsing, accessors, edits, responses and stream framing.

use super::*;

fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

const REGISTER: &str = "REGISTER sip:example.com SIP/2.0
v: SIP/2.0/TCP 192.0.2.10:51000;rport;branch=z9hG4bK776asdhds
Max-Forwards: 70
f: Alice <sip:alice@example.com>;tag=1928301774
t: Alice <sip:alice@example.com>
i: a84b4c76e66710@pc33.example.com
CSeq: 314159 REGISTER
m: <sip:alice@192.0.2.10:51000;transport=tcp;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"
k: path, outbound
ms-keep-alive: UAC;hop-hop=yes
x: 1800;refresher=uac
Min-SE: 90
l: 0

";

fn limits() -> Limits {
    Limits::default()
}

fn parse(text: &str) -> Result<SipMessage, ParseError> {
    parse_message(&crlf(text), Framing::Datagram, &limits())
}

#[test]
fn register_with_compact_headers() {
    let m = parse(REGISTER).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some(&Method::Register));
    assert_eq!(m.request_uri().unwrap().as_str(), "sip:example.com");
    assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.example.com"));
    assert_eq!(
        m.call_id_hash(),
        Some(sip_ka_common::callid_hash(
            b"a84b4c76e66710@pc33.example.com"
        ))
    );
    assert_eq!(m.from_tag().as_deref(), Some("1928301774"));
    assert_eq!(m.to_tag(), None);
    assert_eq!(
        m.cseq().unwrap(),
        CSeq {
            seq: 314159,
            method: Method::Register
        }
    );
    let via = m.top_via().unwrap();
    assert_eq!(via.transport, "TCP");
    assert_eq!((via.host.as_str(), via.port), ("192.0.2.10", Some(51000)));
    assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
    assert_eq!(via.rport(), Some(None));
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.content_length(), Some(0));
    assert!(m.body().is_empty());
    let contacts = m.contacts().unwrap();
    let c = contacts[0].addr().unwrap();
    assert!(c.uri.has_param("ob"));
    assert_eq!(c.param("reg-id"), Some(Some("1")));
    let sup = m.supported().unwrap();
    assert!(sup.contains(OptionTags::PATH) && sup.contains(OptionTags::OUTBOUND));
    assert!(!sup.contains(OptionTags::TIMER));
    assert!(m.ms_keep_alive().unwrap().unwrap().offers_hop_hop());
    assert_eq!(
        m.session_expires().unwrap(),
        Some(SessionExpires::new(1800, Some(Refresher::Uac)))
    );
    assert_eq!(m.min_se().unwrap(), Some(MinSe::new(90)));
    assert_eq!(m.flow_timer().unwrap(), None);
    // Names are stored in long form.
    assert_eq!(m.header("Call-ID"), m.header("i"));
    assert!(m
        .headers()
        .iter()
        .any(|h| matches!(h, rsip::Header::CallId(_))));
}

#[test]
fn response_accessors_and_route_headers() {
    let text = "SIP/2.0 200 OK
Via: SIP/2.0/UDP edge.example.com;branch=z9hG4bKe1, SIP/2.0/UDP 192.0.2.10;received=198.51.100.7;rport=40000;branch=z9hG4bKa1
Record-Route: <sip:edge.example.com;lr>, <sip:pbx.example.com;lr>
Path: <sip:edge.example.com;lr;ob>
From: <sip:alice@example.com>;tag=a
To: <sip:bob@example.com>;tag=b
Call-ID: c1
CSeq: 2 INVITE
Require: timer
Session-Expires: 600;refresher=uas
Flow-Timer: 120
Contact: <sip:bob@192.0.2.20>
Content-Type: application/sdp
Content-Length: 4

v=0
";
    let m = parse(text).unwrap();
    assert_eq!(m.status_code(), Some(200));
    assert_eq!(m.reason_phrase(), Some("OK"));
    assert_eq!(m.method(), None);
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[1].received(), Some("198.51.100.7"));
    assert_eq!(vias[1].rport(), Some(Some(40000)));
    let rr = m.record_routes().unwrap();
    assert_eq!(rr.len(), 2);
    assert!(rr.iter().all(|r| r.is_loose_route()));
    assert_eq!(m.paths().unwrap()[0].uri.host(), Some("edge.example.com"));
    assert!(m.require().unwrap().contains("timer"));
    assert_eq!(
        m.session_expires().unwrap().unwrap().refresher,
        Some(Refresher::Uas)
    );
    assert_eq!(m.flow_timer().unwrap(), Some(FlowTimer(120)));
    assert_eq!(m.body(), b"v=0\r");
    assert_eq!(m.to_tag().as_deref(), Some("b"));
}

#[test]
fn datagram_body_rules() {
    // No Content-Length on UDP: the body runs to the end.
    let m = parse(
        "MESSAGE sip:b@h SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@h>;tag=1
To: <sip:b@h>
Call-ID: x
CSeq: 1 MESSAGE

hello",
    )
    .unwrap();
    assert_eq!(m.body(), b"hello");
    // Bytes beyond Content-Length are ignored.
    let m = parse(
        "MESSAGE sip:b@h SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@h>;tag=1
To: <sip:b@h>
Call-ID: x
CSeq: 1 MESSAGE
Content-Length: 2

hello",
    )
    .unwrap();
    assert_eq!(m.body(), b"he");
}

const OPTIONS_NO_CALLID: &str = "OPTIONS sip:pbx.example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnc
From: <sip:a@example.com>;tag=77
To: <sip:pbx.example.com>
CSeq: 1 OPTIONS
Content-Length: 0

";

#[test]
fn precise_errors() {
    let base = "INVITE sip:b@h SIP/2.0
Via: SIP/2.0/UDP h;branch=z9hG4bK1
From: <sip:a@h>;tag=1
To: <sip:b@h>
Call-ID: x
CSeq: 1 INVITE
";
    let cases: Vec<(String, &str)> = vec![
        (OPTIONS_NO_CALLID.to_string(), "missing Call-ID"),
        (
            base.replace("CSeq: 1 INVITE", "CSeq: one INVITE") + "\n",
            "bad CSeq: expected a sequence number in \"one INVITE\"",
        ),
        (
            base.replace("CSeq: 1 INVITE", "CSeq: 1 BYE") + "\n",
            "CSeq method BYE does not match request method INVITE",
        ),
        (
            base.to_string() + "Content-Length: 40\n\n0123456789\n",
            "Content-Length 40 larger than body 12",
        ),
        (
            base.to_string() + "Content-Length: -1\n\n",
            "bad Content-Length: value \"-1\" is not a number",
        ),
        (
            base.to_string() + "Max-Forwards: 256\n\n",
            "bad Max-Forwards: 256 is larger than 255",
        ),
        (base.to_string() + "Call-ID: y\n\n", "more than one Call-ID"),
        (
            base.to_string() + "Bad Header: 1\n\n",
            "malformed header line 7: header name contains byte 0x20",
        ),
        (
            base.to_string() + "NoColon\n\n",
            "malformed header line 7: no ':' after the header name",
        ),
        (
            base.replace("Via: SIP/2.0/UDP h;branch=z9hG4bK1\n", "") + "\n",
            "missing Via",
        ),
        (
            base.replace("SIP/2.0\n", "SIP/3.0\n") + "\n",
            "unsupported SIP version SIP/3.0",
        ),
        (
            base.replace("INVITE sip:b@h", "INVITE <sip:b@h>") + "\n",
            "bad Request-URI: enclosed in <>",
        ),
        (
            base.to_string(),
            "header section not terminated by an empty line",
        ),
        ("\n\n".to_string(), "empty message"),
    ];
    for (text, want) in cases {
        let err = parse(&text).unwrap_err();
        assert_eq!(err.to_string(), want, "{text:?}");
    }
    let err = parse_message(b"SIP/2.0 99 Low\r\n\r\n", Framing::Datagram, &limits()).unwrap_err();
    assert_eq!(err, ParseError::BadStatusCode("99".into()));
    let err = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\nbar\r\n x\r\n\r\n",
        Framing::Datagram,
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(err, ParseError::BadHeaderLine { line: 3, .. }));
    let err = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\n x: 1\r\n\r\n",
        Framing::Datagram,
        &limits(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed header line 2: continuation line before the first header"
    );
    let err = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nTo: a\rb\r\n\r\n",
        Framing::Datagram,
        &limits(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "malformed header line 2: bare CR or LF");
    let err = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nSubject: \xff\r\n\r\n",
        Framing::Datagram,
        &limits(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "Subject (line 2) is not valid UTF-8");
}

#[test]
fn limits_are_enforced() {
    let msg = crlf(REGISTER);
    let small = Limits {
        max_message_size: 100,
        max_headers: 128,
    };
    assert_eq!(
        parse_message(&msg, Framing::Datagram, &small).unwrap_err(),
        ParseError::MessageTooLarge {
            size: msg.len(),
            limit: 100
        }
    );
    let few = Limits {
        max_message_size: 65_535,
        max_headers: 5,
    };
    let err = parse_message(&msg, Framing::Datagram, &few).unwrap_err();
    assert_eq!(err, ParseError::TooManyHeaders { limit: 5 });
    assert_eq!(err.to_string(), "too many header fields (limit 5)");
    assert_eq!(err.status_code(), 400);
}

#[test]
fn stream_framing_rules() {
    let with_cl = crlf(REGISTER);
    assert!(parse_message(&with_cl, Framing::Stream, &limits()).is_ok());
    let no_cl = crlf(&REGISTER.replace("l: 0\n", ""));
    assert_eq!(
        parse_message(&no_cl, Framing::Stream, &limits()).unwrap_err(),
        ParseError::MissingContentLength
    );
    assert!(parse_message(&no_cl, Framing::Datagram, &limits()).is_ok());
    let mut extra = with_cl.clone();
    extra.extend_from_slice(b"xyz");
    assert_eq!(
        parse_message(&extra, Framing::Stream, &limits()).unwrap_err(),
        ParseError::TrailingBytes { extra: 3 }
    );
}

#[test]
fn edits_and_round_trip() {
    let mut m = parse(REGISTER).unwrap();
    let mut top = m.top_via().unwrap();
    top.set_param("received", Some("198.51.100.7".into()));
    top.set_param("rport", Some("40001".into()));
    assert!(m.set_top_via(&top));
    m.prepend_via(&Via::new(
        "UDP",
        "edge.example.com",
        Some(5060),
        "z9hG4bKedge1",
    ));
    m.set_max_forwards(69);
    assert_eq!(m.remove_header("ms-keep-alive"), 1);
    m.prepend_header("Path", "<sip:edge.example.com;lr;ob>");
    m.push_header("Flow-Timer", "120");
    let bytes = m.to_bytes();
    let again = parse_message(&bytes, Framing::Stream, &limits()).unwrap();
    let vias = again.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].host, "edge.example.com");
    assert_eq!(vias[1].received(), Some("198.51.100.7"));
    assert_eq!(vias[1].rport(), Some(Some(40001)));
    assert_eq!(again.max_forwards(), Some(69));
    assert_eq!(again.ms_keep_alive().unwrap(), None);
    assert_eq!(again.flow_timer().unwrap(), Some(FlowTimer(120)));
    assert_eq!(again.paths().unwrap().len(), 1);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("REGISTER sip:example.com SIP/2.0\r\nPath: <sip:edge"));
    assert!(text.contains("\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\n"));
    // Removing the top Via from a comma-separated field keeps the rest.
    let mut r = parse(
        "SIP/2.0 180 Ringing
Via: SIP/2.0/UDP edge;branch=z9hG4bKe, SIP/2.0/UDP ua;branch=z9hG4bKu
From: <sip:a@h>;tag=1
To: <sip:b@h>;tag=2
Call-ID: x
CSeq: 1 INVITE

",
    )
    .unwrap();
    assert_eq!(r.remove_top_via().unwrap().host, "edge");
    assert_eq!(r.header("Via"), Some("SIP/2.0/UDP ua;branch=z9hG4bKu"));
    assert_eq!(r.remove_top_via().unwrap().host, "ua");
    assert_eq!(r.header("Via"), None);
    // set_body keeps Content-Length right.
    r.set_body(b"abc".to_vec());
    assert_eq!(r.content_length(), Some(3));
}

#[test]
fn rsip_views() {
    let m = parse(REGISTER).unwrap();
    match m.to_rsip().unwrap() {
        rsip::SipMessage::Request(r) => {
            assert_eq!(r.method, rsip::Method::Register);
            assert_eq!(r.uri.host().to_string(), "example.com");
        }
        rsip::SipMessage::Response(_) => panic!("request expected"),
    }
    let ext = parse(&REGISTER.replace("REGISTER", "NEWMETHOD")).unwrap();
    assert_eq!(ext.method(), Some(&Method::Extension("NEWMETHOD".into())));
    assert!(ext.to_rsip().is_none());
}

/// What rsip 0.4's own parser does with messages this module accepts: the
/// reasons it is not the front end.
#[test]
fn rsip_parser_gaps() {
    // Extension methods are rejected.
    let ext = crlf(&REGISTER.replace("REGISTER", "NEWMETHOD"));
    assert!(rsip::SipMessage::try_from(ext.as_slice()).is_err());
    // `Name : value` (LWS before the colon) is rejected.
    let lws = crlf(&REGISTER.replace("Max-Forwards: 70", "Max-Forwards : 70"));
    assert!(rsip::SipMessage::try_from(lws.as_slice()).is_err());
    // Compact names are not expanded: `i:` is an unknown header to rsip.
    use rsip::message::HasHeaders;
    let ok = rsip::SipMessage::try_from(crlf(REGISTER).as_slice()).unwrap();
    assert!(ok
        .headers()
        .iter()
        .all(|h| !matches!(h, rsip::Header::CallId(_))));
    // rsip's typed Via rejects LWS around '/'.
    use rsip::headers::{ToTypedHeader, UntypedHeader};
    let via = rsip::headers::Via::new("SIP / 2.0 / UDP host;branch=z9hG4bK1");
    assert!(via.typed().is_err());
}

#[test]
fn response_to_request() {
    let mut m = parse(REGISTER).unwrap();
    m.push_header("Timestamp", "54");
    let r = m.response(200, "OK", Some("edge1")).unwrap();
    assert_eq!(r.status_code(), Some(200));
    assert_eq!(r.to_tag().as_deref(), Some("edge1"));
    assert_eq!(r.call_id(), m.call_id());
    assert_eq!(r.cseq(), m.cseq());
    assert_eq!(r.header("Timestamp"), Some("54"));
    assert_eq!(r.vias().unwrap(), m.vias().unwrap());
    let bytes = r.to_bytes();
    assert!(bytes.starts_with(b"SIP/2.0 200 OK\r\n"));
    let back = parse_message(&bytes, Framing::Stream, &limits()).unwrap();
    assert_eq!(back, r);
    // An existing To tag is kept; 100 Trying gets none.
    let r2 = r.clone();
    assert!(r2.response(200, "OK", None).is_none());
    let trying = m.response(100, "Trying", None).unwrap();
    assert_eq!(trying.to_tag(), None);
    assert!(m.response(700, "No", None).is_none());
    let ack = parse(&REGISTER.replace("REGISTER", "ACK")).unwrap();
    assert!(ack.response(200, "OK", None).is_none());
    let bad_reason = m.response(503, "Down\r\nX: y", None).unwrap();
    assert_eq!(bad_reason.reason_phrase(), Some("Down??X: y"));
}

#[test]
fn bad_request_for_unparsed_bytes() {
    let raw = crlf(OPTIONS_NO_CALLID);
    let err = parse_message(&raw, Framing::Datagram, &limits()).unwrap_err();
    let resp = error_response(&raw, &err, "t400").unwrap();
    let text = String::from_utf8(resp.clone()).unwrap();
    assert!(
        text.starts_with("SIP/2.0 400 Missing Call-ID\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnc\r\n"));
    assert!(text.contains("\r\nTo: <sip:pbx.example.com>;tag=t400\r\n"));
    assert!(text.contains("\r\nCSeq: 1 OPTIONS\r\n"));
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    // A bad CSeq: reason phrase says so; folded and compact headers are
    // still found.
    let raw = crlf(
        "INVITE sip:b@h SIP/2.0
v: SIP/2.0/UDP
 h:5062;branch=z9hG4bK1
f: <sip:a@h>;tag=1
t: <sip:b@h>;tag=2
i: x
CSeq: 99999999999 INVITE

",
    );
    let err = parse_message(&raw, Framing::Datagram, &limits()).unwrap_err();
    let resp = String::from_utf8(error_response(&raw, &err, "zz").unwrap()).unwrap();
    assert!(
        resp.starts_with("SIP/2.0 400 Bad CSeq: sequence number 99999999999 out of range\r\n"),
        "{resp}"
    );
    assert!(resp.contains("To: <sip:b@h>;tag=2\r\n"));
    assert!(resp.contains("Via: SIP/2.0/UDP h:5062;branch=z9hG4bK1\r\n"));
    assert!(resp.contains("Call-ID: x\r\n"));
    // A version error is a 505.
    let raw = crlf(&OPTIONS_NO_CALLID.replace("SIP/2.0\n", "SIP/3.0\n"));
    let err = parse_message(&raw, Framing::Datagram, &limits()).unwrap_err();
    let resp = error_response(&raw, &err, "t").unwrap();
    assert!(resp.starts_with(b"SIP/2.0 505 Version Not Supported\r\n"));
    // Never answered: responses, ACKs, no usable Via, garbage.
    let err = ParseError::MissingHeader("Call-ID");
    assert!(error_response(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n", &err, "t").is_none());
    assert!(error_response(
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
        &err,
        "t"
    )
    .is_none());
    assert!(error_response(b"OPTIONS sip:a@b SIP/2.0\r\nVia: bogus\r\n\r\n", &err, "t").is_none());
    assert!(error_response(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", &err, "t").is_none());
    assert!(error_response(b"\x00\x01\x02", &err, "t").is_none());
    assert!(error_response(b"", &err, "t").is_none());
}

#[test]
fn crlf_keepalive_datagrams() {
    assert!(is_crlf_keepalive(b"\r\n\r\n"));
    assert!(is_crlf_keepalive(b"\r\n"));
    assert!(!is_crlf_keepalive(b""));
    assert!(!is_crlf_keepalive(b"\r\nX"));
}

// ----- stream framer -----

fn options_msg(n: u32) -> Vec<u8> {
    let mut m = crlf(&format!(
        "OPTIONS sip:edge SIP/2.0
Via: SIP/2.0/TCP ua;branch=z9hG4bK{n}
From: <sip:a@h>;tag={n}
To: <sip:edge>
Call-ID: c{n}
CSeq: {n} OPTIONS
Content-Length: 6

"
    ));
    m.extend_from_slice(b"\r\n\r\nab");
    m
}

fn feed(f: &mut StreamFramer, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    chunks.iter().flat_map(|c| f.push(c)).collect()
}

#[test]
fn framer_messages_and_body_crlf() {
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let a = options_msg(1);
    let b = options_msg(2);
    let mut both = a.clone();
    both.extend_from_slice(&b);
    let ev = f.push(&both);
    // The CRLF CRLF inside the bodies is body, not a ping.
    assert_eq!(
        ev,
        vec![StreamEvent::Message(a.clone()), StreamEvent::Message(b)]
    );
    assert_eq!(f.buffered(), 0);
    let m = SipMessage::parse_stream(&a, &limits()).unwrap();
    assert_eq!(m.body(), b"\r\n\r\nab");
}

#[test]
fn framer_byte_by_byte() {
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend(options_msg(7));
    stream.extend_from_slice(b"\r\n\r\n");
    let mut ev = Vec::new();
    for b in &stream {
        ev.extend(f.push(std::slice::from_ref(b)));
    }
    assert_eq!(
        ev,
        vec![
            StreamEvent::Ping,
            StreamEvent::Message(options_msg(7)),
            StreamEvent::Ping
        ]
    );
}

#[test]
fn framer_split_ping() {
    for split in 1..4 {
        let mut f = StreamFramer::new(CrlfRole::Server, limits());
        let ping = b"\r\n\r\n";
        let ev = feed(&mut f, &[&ping[..split], &ping[split..]]);
        assert_eq!(ev, vec![StreamEvent::Ping], "split at {split}");
    }
    // Across three reads too.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert_eq!(
        feed(&mut f, &[b"\r", b"\n\r", b"\n"]),
        vec![StreamEvent::Ping]
    );
}

#[test]
fn framer_pongs() {
    // Server side: a lone CRLF is held until the next byte shows it is not
    // half a ping, then reported as a pong and consumed.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert_eq!(f.push(b"\r\n"), vec![]);
    assert_eq!(f.buffered(), 2);
    let msg = options_msg(3);
    let ev = f.push(&msg);
    assert_eq!(ev, vec![StreamEvent::Pong, StreamEvent::Message(msg)]);
    // Server side: two pongs glued together are indistinguishable from a
    // ping and are treated as one (RFC 5626 4.4.1).
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert_eq!(f.push(b"\r\n\r\n"), vec![StreamEvent::Ping]);
    // Client side: every CRLF is a pong, glued or not; never a ping.
    let mut f = StreamFramer::new(CrlfRole::Client, limits());
    assert_eq!(
        f.push(b"\r\n\r\n"),
        vec![StreamEvent::Pong, StreamEvent::Pong]
    );
    assert_eq!(f.push(b"\r"), vec![]);
    assert_eq!(f.push(b"\n"), vec![StreamEvent::Pong]);
    // Three CRLFs on the server side: a ping, then a pong once known.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert_eq!(f.push(b"\r\n\r\n\r\n"), vec![StreamEvent::Ping]);
    let msg = options_msg(4);
    assert_eq!(
        f.push(&msg),
        vec![StreamEvent::Pong, StreamEvent::Message(msg)]
    );
}

#[test]
fn framer_ping_after_partial_message() {
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let msg = options_msg(5);
    let (head, tail) = msg.split_at(40);
    assert_eq!(f.push(head), vec![]);
    let mut rest = tail.to_vec();
    rest.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        f.push(&rest),
        vec![StreamEvent::Message(msg.clone()), StreamEvent::Ping]
    );
    // The header section split inside its CRLF CRLF.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let end = msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    assert_eq!(f.push(&msg[..end]), vec![]);
    assert_eq!(f.push(&msg[end..]), vec![StreamEvent::Message(msg.clone())]);
}

#[test]
fn framer_errors() {
    let small = Limits {
        max_message_size: 200,
        max_headers: 128,
    };
    // Header section that never ends.
    let mut f = StreamFramer::new(CrlfRole::Server, small);
    assert_eq!(f.push(b"OPTIONS sip:edge SIP/2.0\r\n"), vec![]);
    let ev = f.push(&[b'X'; 300]);
    assert_eq!(
        ev,
        vec![StreamEvent::Error(ParseError::HeaderSectionTooLarge {
            limit: 200
        })]
    );
    assert!(f.failed());
    assert_eq!(f.push(b"\r\n\r\n"), vec![]);
    // Content-Length beyond the limit.
    let mut f = StreamFramer::new(CrlfRole::Server, small);
    let ev = f.push(&crlf("OPTIONS sip:edge SIP/2.0\nl: 5000\n\n"));
    assert!(matches!(
        ev.as_slice(),
        [StreamEvent::Error(ParseError::MessageTooLarge {
            limit: 200,
            ..
        })]
    ));
    // Missing Content-Length.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let ev = f.push(&crlf(&REGISTER.replace("l: 0\n", "")));
    assert_eq!(
        ev,
        vec![StreamEvent::Error(ParseError::MissingContentLength)]
    );
    // Negative and conflicting Content-Length.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let ev = f.push(&crlf("INVITE sip:a SIP/2.0\nContent-Length: -999\n\n"));
    assert!(matches!(
        ev.as_slice(),
        [StreamEvent::Error(ParseError::BadHeader(_))]
    ));
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let ev = f.push(&crlf("INVITE sip:a SIP/2.0\nContent-Length: 1\nl: 2\n\nab"));
    assert!(matches!(
        ev.as_slice(),
        [StreamEvent::Error(ParseError::BadHeader(_))]
    ));
    // Stray bytes between messages.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert!(matches!(
        f.push(b"\n").as_slice(),
        [StreamEvent::Error(ParseError::StrayBytes(_))]
    ));
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    assert!(matches!(
        f.push(b"\rX").as_slice(),
        [StreamEvent::Error(ParseError::StrayBytes(_))]
    ));
}

#[test]
fn framer_frames_unparseable_messages() {
    // A message with a broken header but a good Content-Length is framed,
    // so the parser can reject it with a 400 and the stream goes on.
    let mut f = StreamFramer::new(CrlfRole::Server, limits());
    let bad = crlf("OPTIONS sip:edge SIP/2.0\nVia: SIP/2.0/TCP ua;branch=z9hG4bK1\nNoColonHere\nContent-Length: 0\n\n");
    let good = options_msg(9);
    let mut both = bad.clone();
    both.extend_from_slice(&good);
    let ev = f.push(&both);
    assert_eq!(
        ev,
        vec![
            StreamEvent::Message(bad.clone()),
            StreamEvent::Message(good)
        ]
    );
    let err = SipMessage::parse_stream(&bad, &limits()).unwrap_err();
    assert!(matches!(err, ParseError::BadHeaderLine { line: 3, .. }));
}

#[test]
fn header_lookups_take_any_spelling_of_a_name() {
    let mut m = parse(REGISTER).unwrap();
    let long = "X-A-Header-Name-Longer-Than-Thirty-Two-Bytes";
    m.push_header(long, "1");
    m.push_header("q", "2");
    for (name, value) in [
        ("Call-ID", "a84b4c76e66710@pc33.example.com"),
        ("call-id", "a84b4c76e66710@pc33.example.com"),
        ("i", "a84b4c76e66710@pc33.example.com"),
        ("I", "a84b4c76e66710@pc33.example.com"),
        ("session-expires", "1800;refresher=uac"),
        ("x", "1800;refresher=uac"),
        ("MIN-SE", "90"),
        (long, "1"),
        (&long.to_lowercase(), "1"),
        ("q", "2"),
        ("Q", "2"),
    ] {
        assert_eq!(m.header(name), Some(value), "{name}");
    }
    assert_eq!(m.header("y"), None);
    assert_eq!(m.header("Session-Expire"), None);
    assert!(m.lists_option_tag("k", "outbound").unwrap());
    assert!(!m.lists_option_tag("Supported", "timer").unwrap());
    assert_eq!(
        m.session_expires_brief().unwrap(),
        Some((1800, Some(Refresher::Uac)))
    );
    assert_eq!(m.min_se_delta().unwrap(), Some(90));
    m.push_header("Min-SE", "120");
    assert!(m.min_se_delta().is_err(), "a repeated Min-SE is refused");
}
