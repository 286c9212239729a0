//! Bans shared by an HA pair (tests/common/ha.rs: keepalived moves the
//! VIPs, Redis holds the shared state).
//!
//! * A scanner's first request reaches edge A (it holds the VIP) and is
//!   banned there for its User-Agent; edge B's XDP drops the scanner's
//!   packets within a second (B's `drop_ban_scanner` moves), while a phone
//!   on another address of the same subnet is answered by both. With a
//!   ban time of 3 s the ban ends on both on time, and the key leaves the
//!   store.
//! * A ban added by hand on A (`sip-ka bans add` on A's pins) is in B's
//!   BANS map; `sip-ka bans remove` on A lifts it on B.
//!
//! Needs root, keepalived and redis-server; fails and says so otherwise.
//! A plain `cargo test` ignores it; `cargo xtask test` (or `--
//! --include-ignored`) runs it.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    ha::{self, HaLab, EDGE_IPS, EDGE_PORT, PHONES},
    text, wait_until,
};
use sip_ka::lab;

/// The scanner: an address of its own on the phones' segment.
const SCANNER: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 66);
/// An address banned by hand.
const MANUAL: &str = "198.18.10.67";
/// `--ban-time` of both edges (s).
const BAN_TIME: u64 = 3;
/// How long a ping waits for its answer.
const PING_WAIT: Duration = Duration::from_millis(40);
/// The pace of the pings to one edge: well inside the fast path's answer
/// budget per source (200/s), so an unanswered ping is a drop.
const PING_EVERY: Duration = Duration::from_millis(10);

fn flags(node: &str) -> Vec<String> {
    [
        "--state-store",
        &ha::store_url(),
        "--node-id",
        node,
        "--ban-time",
        &BAN_TIME.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Edge `i`'s own public address (not the VIP): its XDP sees what is
/// sent there whichever edge holds the VIP.
fn own(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(EDGE_IPS[i].0, EDGE_PORT))
}

/// A CRLF keep-alive to `dest`: whether its answer came. Takes at least
/// [`PING_EVERY`].
fn ping(sock: &UdpSocket, dest: SocketAddr) -> bool {
    let mut buf = [0u8; 512];
    let at = Instant::now();
    let mut answered = false;
    // Answers to earlier pings that came late are read and skipped.
    if sock.send_to(b"\r\n\r\n", dest).is_ok() {
        while at.elapsed() < PING_WAIT {
            if let Ok((len, src)) = sock.recv_from(&mut buf) {
                if src == dest && &buf[..len] == b"\r\n" {
                    answered = true;
                    break;
                }
            }
        }
    }
    std::thread::sleep(PING_EVERY.saturating_sub(at.elapsed()));
    answered
}

fn drops(lab: &HaLab, i: usize) -> u64 {
    lab.counters(i)
        .get("drop_ban_scanner")
        .copied()
        .unwrap_or(0)
}

/// `sip-ka bans --json` of edge `i`: prefix -> reason.
fn bans(lab: &HaLab, i: usize) -> BTreeMap<String, String> {
    let out = lab::run(
        Command::new(lab::sip_ka_exe().expect("sip-ka"))
            .args(["bans", "--json", "--pin-dir"])
            .arg(&lab.edges[i].pin_dir),
    )
    .unwrap_or_else(|e| panic!("sip-ka bans on edge {}: {e:#}", lab.edges[i].name));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bans JSON");
    v.as_array()
        .expect("bans JSON is an array")
        .iter()
        .map(|b| {
            (
                b["prefix"].as_str().unwrap_or("").to_string(),
                b["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn bans_cmd(lab: &HaLab, i: usize, args: &[&str]) {
    let out = lab::run(
        Command::new(lab::sip_ka_exe().expect("sip-ka"))
            .arg("bans")
            .args(args)
            .arg("--pin-dir")
            .arg(&lab.edges[i].pin_dir),
    )
    .unwrap_or_else(|e| panic!("sip-ka bans {args:?} on edge {}: {e:#}", lab.edges[i].name));
    assert!(out.status.success(), "{}", text(&out));
}

fn scanner_register(n: u32) -> Vec<u8> {
    format!(
        "REGISTER sip:{vip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {SCANNER}:5070;branch=z9hG4bKscan{n};rport\r\n\
         From: <sip:100@{vip}>;tag=scan{n}\r\n\
         To: <sip:100@{vip}>\r\n\
         Call-ID: scan{n}@{SCANNER}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:100@{SCANNER}:5070>\r\n\
         Max-Forwards: 70\r\n\
         User-Agent: friendly-scanner\r\n\
         Content-Length: 0\r\n\r\n",
        vip = ha::VIP_PUB
    )
    .into_bytes()
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_ban_on_edge_a_drops_the_scanner_at_edge_b_and_ends_on_both() {
    let mut lab = HaLab::new();
    // The scanner's own address beside the phones'.
    let phones_if = format!("{}p", lab.tag);
    lab::run(Command::new("ip").args([
        "-n",
        &lab.phones_ns,
        "addr",
        "add",
        &format!("{SCANNER}/24"),
        "dev",
        &phones_if,
    ]))
    .unwrap_or_else(|e| panic!("adding the scanner's address: {e:#}"));
    lab.start_redis();
    for (i, node) in [(0, "edge-a"), (1, "edge-b")] {
        let f = flags(node);
        let f: Vec<&str> = f.iter().map(String::as_str).collect();
        lab.start_edge(i, &f);
    }
    lab.start_keepalived(0);
    lab.start_keepalived(1);
    assert!(
        lab.wait_vip(0, Duration::from_secs(15)).is_some(),
        "edge A did not take the VIPs within 15 s"
    );

    let scanner = lab.phone_socket(
        SocketAddr::V4(SocketAddrV4::new(SCANNER, 5070)),
        Duration::from_millis(5),
    );
    let phone = lab.phone_socket(
        SocketAddr::V4(SocketAddrV4::new(PHONES, 5072)),
        Duration::from_millis(5),
    );
    // Before: both edges' XDP answer the scanner and the phone.
    for i in 0..2 {
        for (who, s) in [("scanner", &scanner), ("phone", &phone)] {
            assert!(
                wait_until(Duration::from_secs(5), || ping(s, own(i))),
                "edge {}'s XDP does not answer the {who} before any ban",
                lab.edges[i].name
            );
        }
    }
    let before = [drops(&lab, 0), drops(&lab, 1)];

    // The scanner's first request, to the VIP (edge A): banned there.
    let t0 = Instant::now();
    scanner
        .send_to(&scanner_register(1), ha::vip())
        .expect("sending the scanner's REGISTER");
    // B's XDP drops it: the first ping of an unanswered run.
    let mut first_drop = None;
    let mut last_answer = None;
    let mut unanswered = 0;
    while t0.elapsed() < Duration::from_secs(BAN_TIME) && unanswered < 5 {
        let at = t0.elapsed();
        if ping(&scanner, own(1)) {
            last_answer = Some(at);
            first_drop = None;
            unanswered = 0;
        } else {
            first_drop = first_drop.or(Some(at));
            unanswered += 1;
        }
    }
    let first_drop = first_drop.expect("edge B never dropped the scanner");

    assert!(unanswered >= 5, "edge B answers the scanner again");
    eprintln!(
        "ban decided on A: the scanner's first ping dropped at B's XDP {first_drop:?} after (the \
         last answered: {last_answer:?})"
    );
    assert!(
        first_drop < Duration::from_secs(1),
        "edge B dropped the scanner {first_drop:?} after the ban on A; A's log: {}\nB's log: {}",
        lab.edge_log(0),
        lab.edge_log(1)
    );
    // Dropped at B's XDP for the ban (not lost), and at A's; the phone
    // beside it is answered by both; the store has A's ban with its TTL.
    assert!(!ping(&scanner, own(0)), "edge A answers the banned scanner");
    let after = [drops(&lab, 0), drops(&lab, 1)];
    assert!(
        after[1] >= before[1] + 5 && after[0] > before[0],
        "drop_ban_scanner: A {} -> {}, B {} -> {}",
        before[0],
        after[0],
        before[1],
        after[1]
    );
    for i in 0..2 {
        assert!(
            ping(&phone, own(i)),
            "a phone beside the scanner is dropped"
        );
    }
    assert_eq!(
        bans(&lab, 1).get(&SCANNER.to_string()).map(String::as_str),
        Some("scanner"),
        "B's BANS map"
    );
    let key = format!("sipka:ban:{SCANNER}");
    let rec = lab.redis_try(&["GET", &key]).unwrap_or_default();
    assert!(
        rec.contains(r#""node":"edge-a""#) && rec.contains(r#""reason":"scanner""#),
        "{key}: {rec}"
    );
    let ttl: i64 = lab
        .redis_try(&["PTTL", &key])
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(-1);
    assert!(
        ttl > 0 && ttl <= (BAN_TIME * 1000) as i64,
        "{key}: TTL {ttl} ms for a ban of {BAN_TIME} s"
    );

    // The ban ends on both, on time, and leaves the store.
    let mut back = [None; 2];
    let end = Instant::now() + Duration::from_secs(BAN_TIME + 3);
    while Instant::now() < end && back.iter().any(Option::is_none) {
        for (i, b) in back.iter_mut().enumerate() {
            if b.is_none() && ping(&scanner, own(i)) {
                *b = Some(t0.elapsed());
            }
        }
    }
    eprintln!(
        "the scanner answered again: by A {:?}, by B {:?}",
        back[0], back[1]
    );
    for (i, b) in back.iter().enumerate() {
        let b = b.unwrap_or_else(|| {
            panic!(
                "edge {} still drops the scanner {} s after a ban of {BAN_TIME} s",
                lab.edges[i].name,
                BAN_TIME + 3
            )
        });
        assert!(
            b >= Duration::from_millis(BAN_TIME * 1000 - 500),
            "edge {}'s ban ended early: {b:?}",
            lab.edges[i].name
        );
    }
    assert!(
        wait_until(Duration::from_secs(2), || lab
            .redis_keys("sipka:ban:*")
            .is_empty()),
        "the ban's key outlived it: {:?}",
        lab.redis_keys("sipka:ban:*")
    );

    // By hand on A: added on B, then lifted on B, a tombstone in the store.
    bans_cmd(
        &lab,
        0,
        &["add", MANUAL, "--for", "120", "--reason", "ha test"],
    );
    assert!(
        wait_until(Duration::from_secs(3), || bans(&lab, 1)
            .get(MANUAL)
            .is_some_and(|r| r == "manual")),
        "the ban added by hand on A is not in B's map: {:?}",
        bans(&lab, 1)
    );
    bans_cmd(&lab, 0, &["remove", MANUAL]);
    assert!(
        wait_until(Duration::from_secs(3), || !bans(&lab, 1)
            .contains_key(MANUAL)),
        "the ban lifted by hand on A is still in B's map"
    );
    let tomb = lab
        .redis_try(&["GET", &format!("sipka:ban:{MANUAL}")])
        .unwrap_or_default();
    assert!(tomb.starts_with("lifted:"), "{tomb}");
}
