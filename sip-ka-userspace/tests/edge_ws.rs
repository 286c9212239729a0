//! SIP over WebSocket (RFC 7118) at the edge, driven frame by frame: a
//! UA written here connects from the client namespace to the edge's
//! `--ws-listen` (198.18.0.1:8080) with tungstenite's client, a PBX
//! written here listens on UDP 198.18.0.1:5080 in the server namespace.
//! Keep-alives answered by the edge (CRLF frames, client Pings, the
//! edge's own Pings), an outbound REGISTER with a `.invalid` Contact, a
//! call from the PBX over the UA's WebSocket, and each refusal: no `sip`
//! subprotocol, a foreign Origin, an oversized frame, a handshake that
//! never comes, a frame that never ends, Pings never answered.
//!
//! Needs root (`cargo xtask setup` installs the rest); fails and says so
//! otherwise. Every wait is bounded; each test builds its own lab. A plain
//! `cargo test` ignores these tests; `cargo xtask test` (or
//! `-- --include-ignored`) runs them.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::ws_ua::WsUa;
use common::{
    edge::{edge_addr, start_edge, EDGE_PORT, PBX_PORT},
    in_ns,
    sip_text::{counter_reaches, headers, pbx_recv, pbx_socket, reply, status},
    wait_until,
};
use sip_ka::lab::{Lab, CLIENT_V4, SERVER_V4};
use tokio_tungstenite::tungstenite::{stream::MaybeTlsStream, Message};

/// Where the edge takes WebSocket connections.
const WS_PORT: u16 = 8080;

fn ws_addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), WS_PORT)
}

/// A lab with the edge on `--ws-listen`, with `extra` flags.
fn ws_lab(extra: &[&str]) -> Lab {
    let ws = ws_addr().to_string();
    let mut args = vec!["--ws-listen", ws.as_str(), "--shield", "off"];
    args.extend_from_slice(extra);
    start_edge(&args)
}

/// A TCP connection from the client namespace to the WebSocket port.
fn tcp_connect(lab: &Lab) -> TcpStream {
    let to = ws_addr();
    let s = in_ns(&lab.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connecting to tcp/{to}: {e}"))
    });
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// An outbound REGISTER as a browser phone sends it (JsSIP's shape: a
/// `.invalid` Via host and Contact, `transport=ws`, reg-id and instance).
fn ws_register(id: &str) -> String {
    format!(
        "REGISTER sip:{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/WS k2v8n3p0q1r4.invalid;branch=z9hG4bK{id}\r\n\
         Max-Forwards: 69\r\n\
         To: <sip:alice@{SERVER_V4}>\r\n\
         From: <sip:alice@{SERVER_V4}>;tag=r{id}\r\n\
         Call-ID: {id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:a1b2c3@k2v8n3p0q1r4.invalid;transport=ws;ob>;reg-id=1;\
         +sip.instance=\"<urn:uuid:5b1c1c30-0000-4000-8000-00000000ws01>\";expires=600\r\n\
         Expires: 600\r\n\
         Allow: INVITE,ACK,CANCEL,BYE,OPTIONS,MESSAGE\r\n\
         Supported: path,gruu,outbound\r\n\
         User-Agent: JsSIP 3.10.0\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn browser_phone_registers_is_called_and_kept_alive_over_websocket() {
    let started = Instant::now();
    let lab = ws_lab(&["--ws-ping-interval", "1", "--flow-timer-tcp", "90"]);
    let pbx = pbx_socket(&lab);
    let mut ua = WsUa::connect(tcp_connect(&lab), ws_addr(), None);

    // A CRLF keep-alive frame (SIP.js) gets a CRLF frame.
    ua.send("\r\n\r\n");
    assert_eq!(
        ua.recv(Duration::from_secs(2)).expect("connection"),
        Some("\r\n".to_string()),
        "the pong to a CRLFCRLF frame"
    );
    // A client's Ping gets its Pong.
    ua.ws
        .send(Message::Ping(b"ka".to_vec().into()))
        .expect("sending a Ping");
    let pong = wait_until(Duration::from_secs(2), || {
        let _ = ua.recv(Duration::from_millis(100));
        counter_reaches(&lab, "ws_pings_answered", 1).0
    });
    assert!(pong, "the client's Ping was not counted answered");

    // Silent for a few ping intervals: the edge pings, the UA answers, the
    // connection stays.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(3_500) {
        assert_eq!(
            ua.recv(Duration::from_millis(200)),
            Ok(None),
            "no frame but Pings"
        );
    }
    assert!(
        ua.pings >= 2,
        "the edge sent {} Pings in 3.5 s of silence at 1 s",
        ua.pings
    );

    // The outbound REGISTER: Path with a flow token toward the PBX.
    ua.send(&ws_register("wsreg1"));
    let reg = pbx_recv(&pbx, Duration::from_secs(3), |t| t.starts_with("REGISTER "))
        .expect("the REGISTER did not reach the PBX");
    let vias = headers(&reg, "Via");
    assert!(vias[0].starts_with("SIP/2.0/UDP"), "{reg}");
    assert!(
        vias[1].starts_with("SIP/2.0/WS k2v8n3p0q1r4.invalid")
            && vias[1].contains(&format!("received={CLIENT_V4}")),
        "the phone's Via with received: {reg}"
    );
    let path = headers(&reg, "Path");
    assert_eq!(path.len(), 1, "{reg}");
    let path = path[0].to_string();
    assert!(
        path.contains(&format!("@{SERVER_V4}:{EDGE_PORT};lr;ob>")),
        "Path with a flow token: {path}"
    );
    let ok = reply(
        &reg,
        200,
        "OK",
        Some("reg"),
        &[
            format!("Path: {path}"),
            "Contact: <sip:a1b2c3@k2v8n3p0q1r4.invalid;transport=ws;ob>;expires=600".into(),
        ],
    );
    pbx.send_to(ok.as_bytes(), edge_addr()).unwrap();
    let ok = ua.message(Duration::from_secs(3));
    assert_eq!(status(&ok), Some(200), "{ok}");
    assert_eq!(headers(&ok, "Flow-Timer"), vec!["90"], "{ok}");
    assert_eq!(headers(&ok, "Via").len(), 1, "{ok}");

    // The PBX calls the phone by its Path: the INVITE arrives over the
    // WebSocket, the edge's Via says WS, its Record-Route transport=ws.
    let invite = |branch: &str, call: &str| {
        format!(
            "INVITE sip:a1b2c3@k2v8n3p0q1r4.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/UDP {SERVER_V4}:{PBX_PORT};branch=z9hG4bK{branch}\r\n\
             Route: {path}\r\n\
             From: <sip:pbx@{SERVER_V4}>;tag=p1\r\n\
             To: <sip:alice@{SERVER_V4}>\r\n\
             Call-ID: {call}@{SERVER_V4}\r\n\
             CSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n\
             Contact: <sip:pbx@{SERVER_V4}:{PBX_PORT}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    pbx.send_to(invite("wsinv1", "wsin1").as_bytes(), edge_addr())
        .unwrap();
    let inv = ua.message(Duration::from_secs(3));
    assert!(inv.starts_with("INVITE sip:a1b2c3@"), "{inv}");
    let vias = headers(&inv, "Via");
    assert_eq!(vias.len(), 2, "{inv}");
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/WS {SERVER_V4}:{EDGE_PORT}")),
        "{inv}"
    );
    let rr = headers(&inv, "Record-Route").join(", ");
    assert!(rr.contains("transport=ws"), "UA-side Record-Route: {inv}");
    let ringing = reply(&inv, 180, "Ringing", Some("u1"), &[]);
    ua.send(&ringing);
    let back = pbx_recv(&pbx, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0 180")
    })
    .expect("the phone's 180 did not reach the PBX");
    assert_eq!(headers(&back, "Via").len(), 1, "{back}");

    // None of the keep-alives reached the PBX: nothing but the edge's
    // qualify OPTIONS (answered in pbx_recv) came besides.
    ua.send("\r\n\r\n");
    assert_eq!(
        ua.recv(Duration::from_secs(2)),
        Ok(Some("\r\n".to_string()))
    );
    assert!(
        pbx_recv(&pbx, Duration::from_millis(700), |t| !t
            .starts_with("OPTIONS "))
        .is_none(),
        "something other than the qualify OPTIONS reached the PBX"
    );

    // The phone's WebSocket is gone: the PBX learns it, 430 Flow Failed.
    drop(ua);
    let failed = wait_until(Duration::from_secs(3), || {
        pbx.send_to(invite("wsinv2", "wsin2").as_bytes(), edge_addr())
            .unwrap();
        pbx_recv(&pbx, Duration::from_millis(500), |t| {
            t.starts_with("SIP/2.0 430")
        })
        .is_some()
    });
    assert!(
        failed,
        "no 430 Flow Failed after the phone's WebSocket closed"
    );
    for (name, want) in [
        ("ws_upgrades", 1),
        ("ws_crlf_pings", 2),
        ("ws_pings_answered", 1),
        ("ws_pings_sent", 2),
        ("ws_pongs_received", 2),
        ("registers_outbound", 1),
    ] {
        let (ok, n) = counter_reaches(&lab, name, want);
        assert!(ok, "edge_{name} {n}, want at least {want}");
    }
    eprintln!(
        "browser_phone_registers_is_called_and_kept_alive_over_websocket: {:?}",
        started.elapsed()
    );
}

/// Whether the edge ends the connection within `wait` (bytes it sends
/// before are read and dropped).
fn hangs_up(tcp: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// An upgrade request written by hand; the status line of the answer.
fn raw_upgrade(lab: &Lab, protocol: Option<&str>, origin: Option<&str>) -> String {
    let mut s = tcp_connect(lab);
    let mut req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        ws_addr()
    );
    if let Some(p) = protocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(o) = origin {
        req.push_str(&format!("Origin: {o}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("writing the upgrade");
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn upgrades_frames_and_silence_that_break_the_rules_are_refused_and_counted() {
    let started = Instant::now();
    let lab = ws_lab(&[
        "--ws-origin",
        "https://phone.lab.example",
        "--max-message-size",
        "2048",
        "--tcp-message-timeout",
        "1",
        "--ws-ping-interval",
        "1",
    ]);
    let before = common::counters(&lab);

    // No `sip` subprotocol: 400, no upgrade.
    let line = raw_upgrade(&lab, None, None);
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    let line = raw_upgrade(&lab, Some("chat"), None);
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    // A page of another site: 403.
    let line = raw_upgrade(&lab, Some("sip"), Some("https://evil.example"));
    assert!(line.starts_with("HTTP/1.1 403"), "{line}");
    // The listed Origin, and a client that is not a browser (no Origin).
    let line = raw_upgrade(&lab, Some("sip"), Some("https://phone.lab.example"));
    assert!(line.starts_with("HTTP/1.1 101"), "{line}");

    // A frame larger than --max-message-size closes the connection.
    let mut big = WsUa::connect(tcp_connect(&lab), ws_addr(), None);
    big.send(&"x".repeat(4_000));
    let closed = big.recv(Duration::from_secs(3)).is_err();
    assert!(closed, "the oversized frame did not close the connection");

    // A frame begun and never finished: closed after the message time.
    let mut dribble = WsUa::connect(tcp_connect(&lab), ws_addr(), None);
    {
        let tcp = match dribble.ws.get_mut() {
            MaybeTlsStream::Plain(t) => t,
            _ => unreachable!(),
        };
        // FIN, text, masked, 100 bytes: only the header and 10 bytes.
        let mut head = vec![0x81, 0x80 | 100, 1, 2, 3, 4];
        head.extend_from_slice(&[b'a' ^ 1; 10]);
        tcp.write_all(&head).expect("writing a partial frame");
    }
    let ended = {
        let tcp = match dribble.ws.get_mut() {
            MaybeTlsStream::Plain(t) => t,
            _ => unreachable!(),
        };
        // Read raw: the Pings the edge sends are not answered, and the
        // Close frame is skipped; only the end of the connection counts.
        hangs_up(tcp, Duration::from_secs(5))
    };
    assert!(ended, "the unfinished frame's connection was not closed");

    // A phone that never answers the edge's Pings (it never reads, so its
    // side sends no Pong): closed after three.
    let mut deaf = WsUa::connect(tcp_connect(&lab), ws_addr(), None);
    std::thread::sleep(Duration::from_millis(5_500));
    assert!(
        deaf.recv(Duration::from_secs(1)).is_err(),
        "the deaf phone's connection is still open"
    );

    // A connection that never upgrades: closed at the handshake time.
    let mut silent = tcp_connect(&lab);
    let t0 = Instant::now();
    let hung_up = hangs_up(&mut silent, Duration::from_secs(13));
    assert!(hung_up, "a connection that never upgraded is still open");
    assert!(
        t0.elapsed() >= Duration::from_secs(8),
        "closed too early: {:?}",
        t0.elapsed()
    );

    // Nothing else is disturbed: a phone still registers and is answered.
    let mut ok = WsUa::connect(
        tcp_connect(&lab),
        ws_addr(),
        Some("https://phone.lab.example"),
    );
    ok.send("\r\n\r\n");
    assert_eq!(
        ok.recv(Duration::from_secs(2)),
        Ok(Some("\r\n".to_string()))
    );

    let want = [
        ("edge_ws_refused_protocol", 2),
        ("edge_ws_refused_origin", 1),
        ("edge_ws_handshake_failed", 1),
        ("edge_stream_errors", 1),
        ("edge_conns_message_timeout", 1),
        ("edge_ws_ping_timeouts", 1),
        ("edge_ws_crlf_pings", 1),
    ];
    // The counters are published every 500 ms.
    let mut d = common::delta(&before, &common::counters(&lab));
    wait_until(Duration::from_secs(3), || {
        d = common::delta(&before, &common::counters(&lab));
        want.iter().all(|(k, v)| d.get(k) == *v)
    });
    d.expect("refusals", &want);
    eprintln!(
        "upgrades_frames_and_silence_that_break_the_rules_are_refused_and_counted: {:?}",
        started.elapsed()
    );
}
