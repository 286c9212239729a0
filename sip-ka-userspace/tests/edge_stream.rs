//! Edge mode over TCP, driven byte by byte: a UA written here connects
//! from the client namespace to the edge (198.18.0.1:5060), a PBX written
//! here listens on UDP 198.18.0.1:5080 in the server namespace. CRLF
//! keep-alives at message boundaries (RFC 5626 4.4.1), ms-keep-alive
//! negotiation and idle close, connection limits, and RFC 5626 outbound:
//! a REGISTER gets Path and Flow-Timer, and an INVITE from the PBX
//! reaches the UA over the connection it opened.
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

use common::{
    edge::{edge_addr, start_edge, EDGE_PORT, PBX_PORT},
    in_ns,
    sip_text::{counter_reaches, headers, pbx_recv, pbx_socket, reply, status},
    wait_until,
};
use sip_ka::lab::{Lab, CLIENT_V4, SERVER_V4};

/// A lab with the edge running with `extra` flags.
fn edge_lab(extra: &[&str]) -> Lab {
    start_edge(extra)
}

/// A TCP connection from the client namespace to the edge.
fn ua_connect(lab: &Lab) -> TcpStream {
    let to = edge_addr();
    let s = in_ns(&lab.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connecting to tcp/{to}: {e}"))
    });
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// What a connection delivered: bytes read until `done` says enough, the
/// peer closed, or `wait` ran out.
struct Reader {
    buf: Vec<u8>,
    closed: bool,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            buf: Vec::new(),
            closed: false,
        }
    }

    fn read_until(
        &mut self,
        s: &mut TcpStream,
        wait: Duration,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            if done(&self.buf) {
                return true;
            }
            match s.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return done(&self.buf);
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => {
                    self.closed = true;
                    return done(&self.buf);
                }
            }
        }
        done(&self.buf)
    }

    /// The first complete message in the buffer (header section plus
    /// Content-Length), removed from it; leading CRLFs are kept as they are.
    fn take_message(&mut self, s: &mut TcpStream, wait: Duration) -> Option<String> {
        self.read_until(s, wait, |b| message_len(b).is_some());
        let (start, len) = message_len(&self.buf)?;
        let msg = String::from_utf8_lossy(&self.buf[start..start + len]).into_owned();
        self.buf.drain(start..start + len);
        Some(msg)
    }
}

/// Where the first message in `b` starts (after CRLFs) and its length.
fn message_len(b: &[u8]) -> Option<(usize, usize)> {
    let start = b.iter().position(|&c| c != b'\r' && c != b'\n')?;
    let rest = &b[start..];
    let end = rest.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&rest[..end]);
    let cl: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim().to_ascii_lowercase();
            (k == "content-length" || k == "l").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (rest.len() >= end + cl).then_some((start, end + cl))
}

/// An OPTIONS to the edge itself, over TCP, with `extra` header lines.
fn options(seq: u32, extra: &str, local: SocketAddr) -> String {
    format!(
        "OPTIONS sip:{SERVER_V4}:{EDGE_PORT} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bKopt{seq}\r\n\
         From: <sip:ua@{CLIENT_V4}>;tag=o{seq}\r\n\
         To: <sip:{SERVER_V4}>\r\n\
         Call-ID: opt{seq}@{CLIENT_V4}\r\n\
         CSeq: {seq} OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
}

fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).expect("writing to the edge");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn crlf_keepalives_on_tcp_follow_message_boundaries() {
    let started = Instant::now();
    let lab = edge_lab(&[]);
    let mut s = ua_connect(&lab);
    let local = s.local_addr().unwrap();
    let mut r = Reader::new();
    let pong = |b: &[u8]| b.len() >= 2;

    // A ping split across two writes (and so two reads) is one ping.
    send(&mut s, b"\r\n");
    std::thread::sleep(Duration::from_millis(150));
    send(&mut s, b"\r\n");
    assert!(
        r.read_until(&mut s, Duration::from_secs(2), pong),
        "no pong"
    );
    assert_eq!(r.buf, b"\r\n", "one ping, one pong");
    r.buf.clear();

    // A ping after a message cut in two: the message is answered, then
    // the ping; the CRLFCRLF that ends the header section is no ping.
    let opt = options(1, "", local);
    let (a, b) = opt.as_bytes().split_at(opt.len() / 2);
    send(&mut s, a);
    std::thread::sleep(Duration::from_millis(150));
    send(&mut s, b);
    send(&mut s, b"\r\n\r\n");
    let msg = r
        .take_message(&mut s, Duration::from_secs(2))
        .expect("no answer to the OPTIONS");
    assert_eq!(status(&msg), Some(200), "{msg}");
    assert!(
        r.read_until(&mut s, Duration::from_secs(2), pong),
        "no pong after the message"
    );
    assert_eq!(r.buf, b"\r\n", "exactly one pong after the 200");
    r.buf.clear();

    // A lone CRLF (a pong nobody asked for) followed by a message is
    // consumed: the message is answered, nothing else comes back.
    send(&mut s, format!("\r\n{}", options(2, "", local)).as_bytes());
    let msg = r
        .take_message(&mut s, Duration::from_secs(2))
        .expect("no answer to the OPTIONS after a pong");
    assert_eq!(status(&msg), Some(200), "{msg}");
    r.read_until(&mut s, Duration::from_millis(300), |_| false);
    assert!(r.buf.is_empty(), "a stray pong was answered: {:?}", r.buf);

    // Pings glued together: each is answered.
    send(&mut s, b"\r\n\r\n\r\n\r\n\r\n\r\n");
    assert!(
        r.read_until(&mut s, Duration::from_secs(2), |b| b.len() >= 6),
        "three pings, got {:?}",
        r.buf
    );
    assert_eq!(r.buf, b"\r\n\r\n\r\n");
    let (ok, pings) = counter_reaches(&lab, "crlf_pings", 5);
    assert!(ok, "edge_crlf_pings {pings}, want 5");
    assert!(!r.closed, "the edge closed the connection");

    // A message without Content-Length loses the framing: the edge closes
    // the connection and counts it.
    send(
        &mut s,
        options(3, "", local)
            .replace("Content-Length: 0\r\n", "")
            .as_bytes(),
    );
    r.read_until(&mut s, Duration::from_secs(3), |_| false);
    assert!(
        r.closed,
        "connection still open after a message without Content-Length"
    );
    let (ok, errors) = counter_reaches(&lab, "stream_errors", 1);
    assert!(ok, "edge_stream_errors {errors}");
    eprintln!(
        "crlf_keepalives_on_tcp_follow_message_boundaries: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn ms_keepalive_is_negotiated_and_an_idle_connection_is_closed() {
    let started = Instant::now();
    // timeout=1: the connection lives while traffic comes within 1 s plus
    // the 2 s grace; others get the 30 s idle time.
    let lab = edge_lab(&[
        "--ms-keep-alive-timeout",
        "1",
        "--tcp-idle-timeout",
        "30",
        "--flow-timer-tcp",
        "25",
    ]);
    let mut s = ua_connect(&lab);
    let mut quiet = ua_connect(&lab);
    let local = s.local_addr().unwrap();
    let mut r = Reader::new();
    send(
        &mut s,
        options(1, "ms-keep-alive: UAC;hop-hop=yes\r\n", local).as_bytes(),
    );
    let msg = r
        .take_message(&mut s, Duration::from_secs(2))
        .expect("no answer");
    assert_eq!(status(&msg), Some(200), "{msg}");
    assert_eq!(
        headers(&msg, "ms-keep-alive"),
        vec!["UAS;tcp=no;hop-hop=yes;end-end=no;timeout=1"],
        "{msg}"
    );
    // Keep-alives every 0.5 s for 4 s keep it open past timeout + grace.
    for _ in 0..8 {
        send(&mut s, b"\r\n\r\n");
        assert!(
            r.read_until(&mut s, Duration::from_millis(500), |b| b.len() >= 2),
            "no pong"
        );
        r.buf.clear();
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(!r.closed);
    // Then silence: closed within timeout + grace (3 s), with a margin.
    let silent = Instant::now();
    r.read_until(&mut s, Duration::from_secs(6), |_| false);
    assert!(r.closed, "the negotiated connection outlived its timeout");
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(2_500) && after <= Duration::from_millis(4_500),
        "closed after {after:?}, want about 3 s (timeout 1 s + 2 s grace)"
    );
    // The other connection, silent all along, is still open (30 s).
    let mut q = Reader::new();
    send(&mut quiet, b"\r\n\r\n");
    assert!(
        q.read_until(&mut quiet, Duration::from_secs(2), |b| b.len() >= 2),
        "the connection without ms-keep-alive was closed"
    );
    let (ok, n) = counter_reaches(&lab, "conns_idle_closed", 1);
    assert!(ok, "edge_conns_idle_closed {n}");
    assert_eq!(common::counters(&lab)["edge_ms_keepalive_negotiated"], 1);
    eprintln!(
        "ms_keepalive_is_negotiated_and_an_idle_connection_is_closed: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn malformed_ms_keepalive_is_counted_and_not_negotiated() {
    let started = Instant::now();
    let lab = edge_lab(&[]);
    let mut s = ua_connect(&lab);
    let local = s.local_addr().unwrap();
    let mut r = Reader::new();
    let bad = [
        "ms-keep-alive: UAC;hop-hop=yes\r\nms-keep-alive: UAC;hop-hop=yes\r\n",
        "ms-keep-alive: UAC;hop-hop=maybe\r\n",
        "ms-keep-alive: XYZ;hop-hop=yes\r\n",
        "ms-keep-alive: UAC;end-end=yes;hop-hop=yes\r\n",
        "ms-keep-alive: ;hop-hop=yes\r\n",
        "ms-keep-alive: UAC;hop-hop=yes;hop-hop=yes\r\n",
    ];
    // Well-formed, but not an offer of hop-by-hop keep-alives.
    let not_offers = ["ms-keep-alive: UAC;hop-hop=no\r\n"];
    for (i, extra) in bad.iter().chain(not_offers.iter()).enumerate() {
        send(&mut s, options(i as u32 + 1, extra, local).as_bytes());
        let msg = r
            .take_message(&mut s, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no answer with {extra:?}"));
        assert_eq!(status(&msg), Some(200), "{extra:?}: {msg}");
        assert!(
            headers(&msg, "ms-keep-alive").is_empty(),
            "{extra:?} was negotiated: {msg}"
        );
    }
    let (ok, n) = counter_reaches(&lab, "ms_keepalive_bad", bad.len() as u64);
    assert!(ok, "edge_ms_keepalive_bad {n}, want {}", bad.len());
    let c = common::counters(&lab);
    assert_eq!(c["edge_ms_keepalive_bad"], bad.len() as u64);
    assert_eq!(c["edge_ms_keepalive_negotiated"], 0);
    eprintln!(
        "malformed_ms_keepalive_is_counted_and_not_negotiated: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn connections_per_source_are_bounded() {
    let started = Instant::now();
    let lab = edge_lab(&["--max-connections-per-ip", "3"]);
    let mut open: Vec<TcpStream> = (0..3).map(|_| ua_connect(&lab)).collect();
    // The three are served.
    for s in &mut open {
        let mut r = Reader::new();
        send(s, b"\r\n\r\n");
        assert!(r.read_until(s, Duration::from_secs(2), |b| b.len() >= 2));
    }
    // The fourth is accepted by the kernel and closed by the edge at once.
    let mut fourth = ua_connect(&lab);
    let mut r = Reader::new();
    let _ = fourth.write_all(b"\r\n\r\n");
    r.read_until(&mut fourth, Duration::from_secs(3), |_| false);
    assert!(
        r.closed && r.buf.is_empty(),
        "the fourth connection was served"
    );
    let (ok, n) = counter_reaches(&lab, "conns_refused", 1);
    assert!(ok, "edge_conns_refused {n}");
    // Closing one makes room again.
    drop(open.pop());
    let served = wait_until(Duration::from_secs(3), || {
        let mut s = ua_connect(&lab);
        let mut r = Reader::new();
        let _ = s.write_all(b"\r\n\r\n");
        r.read_until(&mut s, Duration::from_millis(500), |b| b.len() >= 2)
    });
    assert!(served, "no room after a connection closed");
    eprintln!(
        "connections_per_source_are_bounded: {:?}",
        started.elapsed()
    );
}

/// A REGISTER over TCP from `local` for `contact` (Expires 600), with
/// `extra` header lines; `id` names its branch and Call-ID.
fn register(local: SocketAddr, id: &str, extra: &str, contact: &str) -> String {
    format!(
        "REGISTER sip:{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK{id}\r\n\
         From: <sip:ua@{SERVER_V4}>;tag=r1\r\n\
         To: <sip:ua@{SERVER_V4}>\r\n\
         Call-ID: {id}@{CLIENT_V4}\r\n\
         CSeq: 1 REGISTER\r\n\
         Max-Forwards: 70\r\n\
         {extra}\
         Contact: {contact}\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn outbound_register_gets_path_and_flow_timer_and_the_pbx_reaches_the_ua_over_its_connection() {
    let started = Instant::now();
    let lab = edge_lab(&["--flow-timer-tcp", "90"]);
    let pbx = pbx_socket(&lab);
    let mut ua = ua_connect(&lab);
    let local = ua.local_addr().unwrap();
    let mut r = Reader::new();
    let contact = format!(
        "<sip:ua@{CLIENT_V4}:5062;transport=tcp>;reg-id=1;\
         +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\""
    );
    let register = register(local, "reg1", "Supported: path, outbound\r\n", &contact);
    send(&mut ua, register.as_bytes());
    let reg = pbx_recv(&pbx, Duration::from_secs(3), |t| t.starts_with("REGISTER "))
        .expect("the REGISTER did not reach the PBX");
    let path = headers(&reg, "Path");
    assert_eq!(path.len(), 1, "{reg}");
    let path = path[0].to_string();
    assert!(
        path.starts_with("<sip:") && path.contains(&format!("@{SERVER_V4}:{EDGE_PORT};lr;ob>")),
        "Path with a flow token: {path}"
    );
    let vias = headers(&reg, "Via");
    assert!(vias[0].starts_with("SIP/2.0/UDP"), "{reg}");
    // The registrar's 200 echoes Path (RFC 3327) and has no Flow-Timer:
    // the edge adds it.
    let ok = reply(
        &reg,
        200,
        "OK",
        Some("reg"),
        &[
            format!("Path: {path}"),
            format!("Contact: {contact};expires=600"),
        ],
    );
    pbx.send_to(ok.as_bytes(), edge_addr()).unwrap();
    let ok = r
        .take_message(&mut ua, Duration::from_secs(3))
        .expect("the UA got no 200 for its REGISTER");
    assert_eq!(status(&ok), Some(200), "{ok}");
    assert_eq!(headers(&ok, "Flow-Timer"), vec!["90"], "{ok}");
    assert_eq!(headers(&ok, "Via").len(), 1, "{ok}");

    // The PBX calls the UA: Route from the Path, to the edge over UDP.
    let invite = |branch: &str, call: &str| {
        format!(
            "INVITE sip:ua@{CLIENT_V4}:5062;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/UDP {SERVER_V4}:{PBX_PORT};branch=z9hG4bK{branch}\r\n\
             Route: {path}\r\n\
             From: <sip:pbx@{SERVER_V4}>;tag=p1\r\n\
             To: <sip:ua@{SERVER_V4}>\r\n\
             Call-ID: {call}@{SERVER_V4}\r\n\
             CSeq: 1 INVITE\r\n\
             Max-Forwards: 70\r\n\
             Contact: <sip:pbx@{SERVER_V4}:{PBX_PORT}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    pbx.send_to(invite("inv1", "in1").as_bytes(), edge_addr())
        .unwrap();
    let inv = r
        .take_message(&mut ua, Duration::from_secs(3))
        .expect("the INVITE from the PBX did not reach the UA's connection");
    assert!(inv.starts_with("INVITE sip:ua@"), "{inv}");
    assert!(
        headers(&inv, "Route").is_empty(),
        "our Route left in: {inv}"
    );
    let vias = headers(&inv, "Via");
    assert_eq!(vias.len(), 2, "{inv}");
    assert!(
        vias[0].starts_with(&format!("SIP/2.0/TCP {SERVER_V4}:{EDGE_PORT}")),
        "{inv}"
    );
    let rr = headers(&inv, "Record-Route").join(", ");
    assert!(rr.contains("transport=tcp"), "UA-side Record-Route: {inv}");
    // The UA answers over its connection; the 200 reaches the PBX.
    let ringing = reply(&inv, 180, "Ringing", Some("u1"), &[]);
    send(&mut ua, ringing.as_bytes());
    let back = pbx_recv(&pbx, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0 180")
    })
    .expect("the UA's 180 did not reach the PBX");
    assert_eq!(headers(&back, "Via").len(), 1, "{back}");

    // Once the UA's connection is gone, the PBX learns it: 430 Flow Failed.
    drop(ua);
    let failed = wait_until(Duration::from_secs(3), || {
        pbx.send_to(invite("inv2", "in2").as_bytes(), edge_addr())
            .unwrap();
        pbx_recv(&pbx, Duration::from_millis(500), |t| {
            t.starts_with("SIP/2.0 430")
        })
        .is_some()
    });
    assert!(
        failed,
        "no 430 Flow Failed after the UA's connection closed"
    );
    let (ok, n) = counter_reaches(&lab, "registers_outbound", 1);
    assert!(ok && n == 1, "edge_registers_outbound {n}, want 1");
    let (ok, n) = counter_reaches(&lab, "flow_failed", 1);
    assert!(ok, "edge_flow_failed {n}");
    eprintln!(
        "outbound_register_gets_path_and_flow_timer_and_the_pbx_reaches_the_ua_over_its_connection: {:?}",
        started.elapsed()
    );
}

/// A scratch directory removed however the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TLS client connection to the edge that trusts only `cert`.
fn tls_connect(
    lab: &Lab,
    cert: &std::path::Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).expect("reading the certificate") {
        roots
            .add(c.expect("PEM certificate"))
            .expect("adding the root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(std::net::IpAddr::from(SERVER_V4).into());
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut sock = ua_connect(lab);
    // The handshake, with a read timeout long enough for it.
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .expect("TLS handshake with the edge");
    }
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads from a TLS stream until `done` or `wait` ran out.
fn tls_read_until(
    s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: &mut Vec<u8>,
    wait: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline && !done(buf) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("TLS read: {e}"),
        }
    }
    done(buf)
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn tls_and_tcp_share_the_port_and_tls_gets_messages_and_pongs() {
    let started = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!("ska-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (cert, key) = common::edge::lab_certificate(&dir.0);
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let lab = edge_lab(&["--tls-cert", &cert_s, "--tls-key", &key_s]);
    let mut tls = tls_connect(&lab, &cert);
    let local = tls.sock.local_addr().unwrap();
    let opt = options(1, "ms-keep-alive: UAC;hop-hop=yes\r\n", local).replace("/TCP ", "/TLS ");
    tls.write_all(opt.as_bytes()).expect("TLS write");
    let mut buf = Vec::new();
    assert!(
        tls_read_until(&mut tls, &mut buf, Duration::from_secs(3), |b| message_len(
            b
        )
        .is_some()),
        "no answer over TLS: {:?}",
        String::from_utf8_lossy(&buf)
    );
    let msg = String::from_utf8_lossy(&buf).into_owned();
    assert_eq!(status(&msg), Some(200), "{msg}");
    assert_eq!(
        headers(&msg, "ms-keep-alive").len(),
        1,
        "negotiated over TLS: {msg}"
    );
    buf.clear();
    tls.write_all(b"\r\n\r\n").expect("TLS write");
    assert!(tls_read_until(
        &mut tls,
        &mut buf,
        Duration::from_secs(2),
        |b| b.len() >= 2
    ));
    assert_eq!(buf, b"\r\n");
    // Plain TCP on the same port at the same time.
    let mut tcp = ua_connect(&lab);
    let mut r = Reader::new();
    send(&mut tcp, b"\r\n\r\n");
    assert!(r.read_until(&mut tcp, Duration::from_secs(2), |b| b.len() >= 2));
    assert_eq!(r.buf, b"\r\n");
    let (ok, n) = counter_reaches(&lab, "crlf_pings", 2);
    assert!(ok, "edge_crlf_pings {n}");
    eprintln!(
        "tls_and_tcp_share_the_port_and_tls_gets_messages_and_pongs: {:?}",
        started.elapsed()
    );
}

/// A PBX that ignores Path (Asterisk's default): the REGISTER has no
/// outbound, the PBX calls the registered Contact with no Route, and the
/// INVITE still reaches the UA over the connection it registered by.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_pbx_without_path_reaches_a_registered_tcp_ua_over_its_connection() {
    let started = Instant::now();
    let lab = edge_lab(&[]);
    let pbx = pbx_socket(&lab);
    let mut ua = ua_connect(&lab);
    let local = ua.local_addr().unwrap();
    let mut r = Reader::new();
    // The Contact is the UA's listening address, not the connection's.
    let contact = format!("<sip:ua@{CLIENT_V4}:5062;transport=tcp>");
    let register = register(local, "plain1", "", &contact);
    send(&mut ua, register.as_bytes());
    let reg = pbx_recv(&pbx, Duration::from_secs(3), |t| t.starts_with("REGISTER "))
        .expect("the REGISTER did not reach the PBX");
    assert!(
        headers(&reg, "Path").is_empty(),
        "no outbound, no Path: {reg}"
    );
    let ok = reply(
        &reg,
        200,
        "OK",
        Some("reg"),
        &[format!("Contact: {contact};expires=600")],
    );
    pbx.send_to(ok.as_bytes(), edge_addr()).unwrap();
    let ok = r
        .take_message(&mut ua, Duration::from_secs(3))
        .expect("the UA got no 200 for its REGISTER");
    assert_eq!(status(&ok), Some(200), "{ok}");
    assert!(headers(&ok, "Flow-Timer").is_empty(), "{ok}");
    let invite = format!(
        "INVITE sip:ua@{CLIENT_V4}:5062;transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/UDP {SERVER_V4}:{PBX_PORT};branch=z9hG4bKplaininv\r\n\
         From: <sip:pbx@{SERVER_V4}>;tag=p1\r\n\
         To: <sip:ua@{SERVER_V4}>\r\n\
         Call-ID: plaininv@{SERVER_V4}\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:pbx@{SERVER_V4}:{PBX_PORT}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    pbx.send_to(invite.as_bytes(), edge_addr()).unwrap();
    let inv = r
        .take_message(&mut ua, Duration::from_secs(3))
        .expect("the INVITE for the registered Contact did not reach the UA's connection");
    assert!(inv.starts_with("INVITE sip:ua@"), "{inv}");
    assert!(
        headers(&inv, "Via")[0].starts_with(&format!("SIP/2.0/TCP {SERVER_V4}:{EDGE_PORT}")),
        "{inv}"
    );
    // Another Contact, never registered: no connection, 480.
    let other = invite
        .replace("ua@198.18.0.2:5062", "nobody@198.18.0.2:5999")
        .replace("plaininv", "plaininv2");
    pbx.send_to(other.as_bytes(), edge_addr()).unwrap();
    let refused = pbx_recv(&pbx, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0 480")
    });
    assert!(refused.is_some(), "no 480 for an unregistered TCP Contact");
    eprintln!(
        "a_pbx_without_path_reaches_a_registered_tcp_ua_over_its_connection: {:?}",
        started.elapsed()
    );
}
