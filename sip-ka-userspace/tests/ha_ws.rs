//! A browser phone on the HA pair: it registers and calls over a
//! WebSocket to the VIP (edge A); A's host dies; the phone reconnects to
//! the VIP, now edge B, re-registers, and its call goes on: its next
//! in-dialog request makes B take the dialog over (from the shared
//! store) and the connection it came by becomes the dialog's flow, so
//! the PBX's own in-dialog request reaches the phone over its new
//! WebSocket, and the call ends with a BYE.
//!
//! Needs root, Redis and keepalived (`cargo xtask setup`); fails and says
//! which is missing. Every wait is bounded.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use common::{
    ha::{self, HaLab},
    sip_text::{headers, reply, status},
    wait_until,
    ws_ua::WsUa,
};

const WS_PORT: u16 = 8080;

fn ws_vip() -> SocketAddr {
    SocketAddr::new(ha::VIP_PUB.into(), WS_PORT)
}

/// The PBX: answers the edges' qualify OPTIONS itself and hands every
/// other message (with its source) to the test, until dropped.
struct Pbx {
    sock: UdpSocket,
    rx: mpsc::Receiver<(String, SocketAddr)>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pbx {
    fn start(lab: &HaLab) -> Pbx {
        let at = ha::pbx();
        let sock = common::in_ns(&lab.pbx_ns, move || {
            UdpSocket::bind(at).unwrap_or_else(|e| panic!("binding the PBX at {at}: {e}"))
        });
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let sock = sock.try_clone().expect("PBX socket");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if text.starts_with("OPTIONS ") {
                        let _ = sock.send_to(reply(&text, 200, "OK", None, &[]).as_bytes(), from);
                    } else if tx.send((text, from)).is_err() {
                        break;
                    }
                }
            })
        };
        Pbx {
            sock,
            rx,
            stop,
            thread: Some(thread),
        }
    }

    /// The next message that satisfies `want` within `wait`.
    fn next(&self, wait: Duration, want: impl Fn(&str) -> bool) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok((t, from)) if want(&t) => return Some((t, from)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    }

    #[track_caller]
    fn expect(
        &self,
        what: &str,
        wait: Duration,
        want: impl Fn(&str) -> bool,
    ) -> (String, SocketAddr) {
        self.next(wait, want)
            .unwrap_or_else(|| panic!("the PBX did not get {what} within {wait:?}"))
    }

    fn send(&self, text: &str, to: SocketAddr) {
        self.sock.send_to(text.as_bytes(), to).expect("PBX send");
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const CONTACT: &str = "<sip:h4w1@q9z2x8.invalid;transport=ws;ob>";

fn register(cseq: u32) -> String {
    let d = ha::VIP_PUB;
    format!(
        "REGISTER sip:{d} SIP/2.0\r\n\
         Via: SIP/2.0/WS q9z2x8.invalid;branch=z9hG4bKhareg{cseq}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:alice@{d}>\r\n\
         From: <sip:alice@{d}>;tag=hareg\r\n\
         Call-ID: ha-ws-reg\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: {CONTACT};reg-id=1;+sip.instance=\"<urn:uuid:5b1c1c30-0000-4000-8000-0000000ha001>\"\r\n\
         Expires: 600\r\n\
         Supported: path,outbound\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A request of the phone's call; `route` the route set (RFC 3261
/// 12.1.2: the Record-Route of the 200, reversed), `to_tag` once known.
fn phone_request(
    method: &str,
    cseq: u32,
    uri: &str,
    route: &[String],
    to_tag: Option<&str>,
) -> String {
    let d = ha::VIP_PUB;
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let routes: String = route.iter().map(|r| format!("Route: {r}\r\n")).collect();
    // An INFO without a body is an in-dialog keep-alive the edge answers
    // itself: this one carries a DTMF event, for the PBX.
    let body = if method == "INFO" {
        "Signal=5\r\nDuration=160\r\n"
    } else {
        ""
    };
    let ctype = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/dtmf-relay\r\n".to_string()
    };
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/WS q9z2x8.invalid;branch=z9hG4bKha{method}{cseq}\r\n\
         {routes}\
         Max-Forwards: 70\r\n\
         To: <sip:bob@{d}>{to_tag}\r\n\
         From: <sip:alice@{d}>;tag=hacall\r\n\
         Call-ID: ha-ws-call\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: {CONTACT}\r\n\
         {ctype}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The phone registers (CSeq `cseq`); the registrar answers 200 with
/// the Path it got.
#[track_caller]
fn register_through(pbx: &Pbx, ua: &mut WsUa, cseq: u32, what: &str) {
    let wait = Duration::from_secs(5);
    ua.send(&register(cseq));
    let (reg, from) = pbx.expect(what, wait, |t| t.starts_with("REGISTER "));
    let path = headers(&reg, "Path")
        .first()
        .map(|p| p.to_string())
        .expect("a Path");
    let extra = [
        format!("Path: {path}"),
        format!("Contact: {CONTACT};expires=600"),
    ];
    pbx.send(&reply(&reg, 200, "OK", Some("r"), &extra), from);
    assert_eq!(status(&ua.message(wait)), Some(200), "{what}");
}

/// A phone's WebSocket to the VIP, from the phones' namespace.
fn connect(lab: &HaLab) -> WsUa {
    let to = ws_vip();
    let tcp = common::in_ns(&lab.phones_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connecting to {to}: {e}"))
    });
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    WsUa::connect(tcp, to, None)
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_browser_phone_reconnects_to_the_standby_edge_and_its_call_goes_on() {
    let started = Instant::now();
    let mut lab = HaLab::new();
    lab.start_redis();
    let ws = ws_vip().to_string();
    for (i, node) in [(0, "edge-a"), (1, "edge-b")] {
        let store = ha::store_url();
        lab.start_edge(
            i,
            &[
                "--state-store",
                &store,
                "--node-id",
                node,
                "--ws-listen",
                &ws,
            ],
        );
    }
    lab.start_keepalived(0);
    lab.start_keepalived(1);
    assert!(
        lab.wait_vip(0, Duration::from_secs(15)).is_some(),
        "edge A did not take the VIPs"
    );
    let pbx = Pbx::start(&lab);
    let wait = Duration::from_secs(5);

    // Registered and in a call through A.
    let mut ua = connect(&lab);
    register_through(&pbx, &mut ua, 1, "the REGISTER");

    let pbx_uri = format!("sip:bob@{}", ha::pbx());
    ua.send(&phone_request(
        "INVITE",
        1,
        &format!("sip:bob@{}", ha::VIP_PUB),
        &[],
        None,
    ));
    let (inv, from) = pbx.expect("the INVITE", wait, |t| t.starts_with("INVITE "));
    let rr: Vec<String> = headers(&inv, "Record-Route")
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(rr.len(), 2, "{inv}");
    let mut ok_extra: Vec<String> = rr.iter().map(|r| format!("Record-Route: {r}")).collect();
    ok_extra.push(format!("Contact: <{pbx_uri}>"));
    pbx.send(&reply(&inv, 200, "OK", Some("b0b"), &ok_extra), from);
    let ok = ua.message(wait);
    assert_eq!(status(&ok), Some(200), "{ok}");
    let mut route: Vec<String> = headers(&ok, "Record-Route")
        .iter()
        .flat_map(|h| h.split(", "))
        .map(str::to_string)
        .collect();
    route.reverse();
    ua.send(&phone_request("ACK", 1, &pbx_uri, &route, Some("b0b")));
    pbx.expect("the ACK", wait, |t| t.starts_with("ACK "));
    // B holds the call's replica before A dies.
    let replicated = wait_until(Duration::from_secs(5), || !lab.dialogs(1).is_empty());
    assert!(replicated, "edge B has no replica of the call");

    // A dies; B takes the VIPs; the browser reconnects and re-registers.
    lab.kill_edge_host(0);
    let took = lab.wait_vip(1, Duration::from_secs(15));
    assert!(took.is_some(), "edge B did not take the VIPs");
    drop(ua);
    let mut ua = connect(&lab);
    register_through(&pbx, &mut ua, 2, "the REGISTER through B");

    // The phone's next in-dialog request: B takes the dialog over.
    ua.send(&phone_request("INFO", 2, &pbx_uri, &route, Some("b0b")));
    let Some((info, from)) = pbx.next(wait, |t| t.starts_with("INFO ")) else {
        panic!(
            "the phone's INFO did not reach the PBX through B; the phone got {:?}; B's log:\n{}",
            ua.recv(Duration::from_secs(1)),
            lab.edge_log(1)
        );
    };
    pbx.send(&reply(&info, 200, "OK", None, &[]), from);
    assert_eq!(status(&ua.message(wait)), Some(200));

    // The PBX's own in-dialog request reaches the phone on its new
    // WebSocket (the route set of the UAS: the Record-Route as it came).
    let d = ha::VIP_PUB;
    let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let pbx_info = format!(
        "INFO sip:h4w1@q9z2x8.invalid;transport=ws SIP/2.0\r\n\
         Via: SIP/2.0/UDP {};branch=z9hG4bKhapbxinfo\r\n\
         {routes}\
         Max-Forwards: 70\r\n\
         From: <sip:bob@{d}>;tag=b0b\r\n\
         To: <sip:alice@{d}>;tag=hacall\r\n\
         Call-ID: ha-ws-call\r\n\
         CSeq: 1 INFO\r\n\
         Contact: <{pbx_uri}>\r\n\
         Content-Length: 0\r\n\r\n",
        ha::pbx()
    );
    pbx.send(&pbx_info, ha::vip());
    let got = ua.message(wait);
    assert!(got.starts_with("INFO "), "{got}");
    ua.send(&reply(&got, 200, "OK", None, &[]));
    pbx.expect("the phone's 200 to the PBX's INFO", wait, |t| {
        t.starts_with("SIP/2.0 200") && t.contains("CSeq: 1 INFO")
    });

    // And it ends.
    ua.send(&phone_request("BYE", 3, &pbx_uri, &route, Some("b0b")));
    let (bye, from) = pbx.expect("the BYE", wait, |t| t.starts_with("BYE "));
    pbx.send(&reply(&bye, 200, "OK", None, &[]), from);
    assert_eq!(status(&ua.message(wait)), Some(200));

    // B's counters, once published (every 500 ms).
    let mut b = lab.counters(1);
    let counted = wait_until(Duration::from_secs(3), || {
        b = lab.counters(1);
        b.get("edge_dialogs_claimed").copied().unwrap_or(0) >= 1
            && b.get("edge_ws_upgrades").copied().unwrap_or(0) >= 1
    });
    assert!(counted, "edge B: dialogs_claimed and ws_upgrades: {b:?}");
    eprintln!(
        "a_browser_phone_reconnects_to_the_standby_edge_and_its_call_goes_on: {:?}",
        started.elapsed()
    );
}
