//! Forged SIP against the edge, from an attacker in the client namespace
//! (198.18.0.2): the edge (198.18.0.1:5060) must not be made to send the
//! PBX's answers to a third party, nor take a phone's forged answer for
//! the registrar's. The PBX is a UDP socket of the test in the server
//! namespace (198.18.0.1:5080); the victim of a reflection is a third
//! namespace (10.201.1.9) routed from the server namespace.
//!
//! Needs root; `cargo xtask test` (or `-- --include-ignored`) runs them.
//! Every wait is bounded; each test builds its own lab.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use common::{
    client_socket, counters,
    edge::{edge_addr, pbx_addr, start_edge},
    ANSWER_WAIT, SILENCE_WAIT,
};
use sip_ka::lab::{self, Lab, CLIENT_V4};

/// The victim's address, in its own namespace behind the server's.
const VICTIM: &str = "10.201.1.9";
const VICTIM_GW: &str = "10.201.1.1";

/// A namespace joined to the server namespace by a veth pair; deleted
/// (with the pair) when dropped, whatever the test did.
struct Victim {
    ns: String,
}

impl Victim {
    fn new(lab: &Lab) -> Victim {
        let v = Victim {
            ns: format!("{}v", lab.name),
        };
        let (outer, inner) = (format!("{}d", lab.name), format!("{}e", lab.name));
        let ip = |args: &[&str]| {
            lab::run(std::process::Command::new("ip").args(args))
                .unwrap_or_else(|e| panic!("ip {}: {e:#}", args.join(" ")));
        };
        ip(&["netns", "add", &v.ns]);
        ip(&[
            "link",
            "add",
            &outer,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &inner,
            "netns",
            &v.ns,
        ]);
        ip(&["-n", &v.ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            &format!("{VICTIM_GW}/24"),
            "dev",
            &outer,
        ]);
        ip(&["-n", &lab.server_ns, "link", "set", &outer, "up"]);
        ip(&[
            "-n",
            &v.ns,
            "addr",
            "add",
            &format!("{VICTIM}/24"),
            "dev",
            &inner,
        ]);
        ip(&["-n", &v.ns, "link", "set", &inner, "up"]);
        v
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = lab::run(std::process::Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

/// A UDP socket bound to `bind` in the namespace `ns`.
fn socket_in(ns: &str, bind: SocketAddr) -> UdpSocket {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns({path}): {}", std::io::Error::last_os_error());
        }
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        s
    })
    .join()
    .expect("socket thread")
}

/// Datagrams that reach `sock` within `wait` and pass `keep`, at most 50.
fn collect(sock: &UdpSocket, wait: Duration, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    for _ in 0..1000 {
        if Instant::now() >= deadline || got.len() >= 50 {
            break;
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if keep(&text) {
                got.push(text);
            }
        }
    }
    got
}

/// The first datagram at the PBX socket that starts with `start` (the
/// edge's OPTIONS pings are skipped).
fn pbx_receives(pbx: &UdpSocket, start: &str) -> String {
    collect(pbx, ANSWER_WAIT, |t| t.starts_with(start))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("the PBX got no {start} within {ANSWER_WAIT:?}"))
}

/// A response to `req` (as the PBX received it): every Via, From, To (a
/// tag added), Call-ID and CSeq copied, `extra` header lines appended.
fn answer(req: &str, status: &str, to_tag: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        match name.to_ascii_lowercase().as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" if line.contains(";tag=") || to_tag.is_empty() => {
                out.push_str(&format!("{line}\r\n"))
            }
            "to" => out.push_str(&format!("{line};tag={to_tag}\r\n")),
            _ => {}
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_forged_received_does_not_reflect_answers_to_a_third_party() {
    let lab = start_edge(&[]);
    let victim = Victim::new(&lab);
    let pbx = socket_in(&lab.server_ns, pbx_addr());
    let catcher = socket_in(&victim.ns, format!("{VICTIM}:5999").parse().unwrap());
    let attacker = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 5999));
    attacker
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let invite = format!(
        "INVITE sip:service@198.18.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CLIENT_V4}:5999;branch=z9hG4bK1;received={VICTIM}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:a@{CLIENT_V4}>;tag=a1\r\n\
         To: <sip:service@198.18.0.1>\r\n\
         Call-ID: reflect@{CLIENT_V4}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:a@{CLIENT_V4}:5999>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    attacker.send_to(invite.as_bytes(), edge_addr()).unwrap();
    let fwd = pbx_receives(&pbx, "INVITE ");
    // The PBX answers 100 and a 401, then retransmits the 401.
    let trying = answer(&fwd, "100 Trying", "", "");
    let challenge = answer(
        &fwd,
        "401 Unauthorized",
        "pbx1",
        "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"0123456789abcdef\"\r\n",
    );
    for msg in [&trying, &challenge, &challenge, &challenge] {
        pbx.send_to(msg.as_bytes(), edge_addr()).unwrap();
    }
    let at_victim = collect(&catcher, SILENCE_WAIT, |_| true);
    let at_attacker = collect(&attacker, ANSWER_WAIT, |t| t.starts_with("SIP/2.0 "));
    assert!(
        at_victim.is_empty(),
        "{} answer(s) reflected to {VICTIM}: {:?}",
        at_victim.len(),
        at_victim.first()
    );
    assert_eq!(
        at_attacker.len(),
        4,
        "the sender's real address gets every answer: {at_attacker:?}"
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_forged_registrar_answer_does_not_hijack_a_contact() {
    let lab = start_edge(&[]);
    let pbx = socket_in(&lab.server_ns, pbx_addr());
    let attacker = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 5062));
    attacker
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let before = counters(&lab);
    let victim_contact = "sip:victim@10.201.1.77:5060";
    let register = format!(
        "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CLIENT_V4}:5062;branch=z9hG4bKreg1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:victim@198.18.0.1>;tag=r1\r\n\
         To: <sip:victim@198.18.0.1>\r\n\
         Call-ID: hijack@{CLIENT_V4}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{victim_contact}>\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    attacker.send_to(register.as_bytes(), edge_addr()).unwrap();
    // The strongest attacker knows the branch the edge put on the
    // forwarded REGISTER (here read from the PBX's socket): its 200 names
    // the edge's Via with that branch and the PBX's as the next one.
    let fwd = pbx_receives(&pbx, "REGISTER ");
    let ours = fwd
        .split("\r\n")
        .find(|l| l.starts_with("Via:"))
        .expect("the edge's Via")
        .to_string();
    let forged = format!(
        "SIP/2.0 200 OK\r\n\
         {ours}\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbx\r\n\
         From: <sip:victim@198.18.0.1>;tag=r1\r\n\
         To: <sip:victim@198.18.0.1>;tag=reg\r\n\
         Call-ID: hijack@{CLIENT_V4}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{victim_contact}>;expires=3600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    attacker.send_to(forged.as_bytes(), edge_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The PBX calls the victim's Contact (no Route: it ignores Path).
    let invite = "INVITE sip:victim@10.201.1.77:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbxinv1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:service@198.18.0.1>;tag=p1\r\n\
         To: <sip:victim@198.18.0.1>\r\n\
         Call-ID: for-the-victim@198.18.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:service@198.18.0.1:5080>\r\n\
         Content-Length: 0\r\n\r\n";
    pbx.send_to(invite.as_bytes(), edge_addr()).unwrap();
    let stolen = collect(&attacker, SILENCE_WAIT, |t| t.starts_with("INVITE "));
    assert!(
        stolen.is_empty(),
        "the victim's call reached the attacker: {:?}",
        stolen.first()
    );
    let after = counters(&lab);
    let refused = |m: &std::collections::BTreeMap<String, u64>| {
        m.get("edge_responses_refused").copied().unwrap_or(0)
    };
    assert!(
        refused(&after) > refused(&before),
        "the forged answer was not counted as refused"
    );
}

/// A phone behind NAT learns its public address from the edge's answers
/// to its keep-alives: the top Via of the edge's own 200 (the OPTIONS
/// shortcut), 481 and 400 says the real source in `received` and `rport`
/// (RFC 3581), whatever the phone wrote there itself; the answers go to
/// the real source, none to the address it forged.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn the_edges_own_answers_tell_a_phone_its_public_address() {
    let lab = start_edge(&[]);
    let victim = Victim::new(&lab);
    let catcher = socket_in(&victim.ns, format!("{VICTIM}:5998").parse().unwrap());
    let phone = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 5998));
    phone
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let via = format!("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat1;received={VICTIM};rport=5998");
    let want = format!(
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat1;rport=5998;received={CLIENT_V4}\r\n"
    );
    let ping = |start: &str, method: &str, to_tag: &str, extra: &str| {
        format!(
            "{start} SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:nat@{CLIENT_V4}>;tag=n1\r\n\
             To: <sip:198.18.0.1>{to_tag}\r\n\
             {extra}CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let call_id = "Call-ID: nat@10.0.0.5\r\n";
    for (req, status) in [
        (
            ping("OPTIONS sip:198.18.0.1:5060", "OPTIONS", "", call_id),
            "SIP/2.0 200 ",
        ),
        (
            ping("INFO sip:x@198.18.0.1", "INFO", ";tag=gone", call_id),
            "SIP/2.0 481 ",
        ),
        (
            ping("OPTIONS sip:198.18.0.1:5060", "OPTIONS", "", ""),
            "SIP/2.0 400 ",
        ),
    ] {
        phone.send_to(req.as_bytes(), edge_addr()).unwrap();
        let got = collect(&phone, ANSWER_WAIT, |t| t.starts_with("SIP/2.0 "));
        let answer = got
            .first()
            .unwrap_or_else(|| panic!("no answer to {req:?} within {ANSWER_WAIT:?}"));
        assert!(answer.starts_with(status), "{answer}");
        assert!(answer.contains(&want), "{want:?} not in {answer}");
    }
    let at_victim = collect(&catcher, SILENCE_WAIT, |_| true);
    assert!(at_victim.is_empty(), "reflected to {VICTIM}: {at_victim:?}");
}
