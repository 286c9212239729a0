//! The userspace responder (`sip-ka run --xdp off`) as an outsider meets
//! it: the fast path's per-source answer limit, taken only for answers,
//! and its address held against a second daemon.
//!
//! Needs root (`cargo xtask test` runs it).

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use common::{client_socket, config_set, counters, delta, wait_until};
use sip_ka::lab::{
    packet::{Stun, CRLF_PING, CRLF_PONG},
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

/// Sends every payload at once, then counts the datagrams equal to
/// `answer` that come back until 500 ms pass without one (10 s at most).
fn burst(sock: &UdpSocket, to: SocketAddr, payloads: &[Vec<u8>], answer: &[u8]) -> usize {
    for p in payloads {
        sock.send_to(p, to).expect("send_to");
    }
    let mut got = 0;
    let mut buf = [0u8; 2048];
    let mut quiet_since = Instant::now();
    let end = Instant::now() + Duration::from_secs(10);
    while quiet_since.elapsed() < Duration::from_millis(500) && Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == answer {
                got += 1;
            }
            quiet_since = Instant::now();
        }
    }
    got
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn userspace_responder_limits_answers_per_source() {
    let lab = common::lab();
    let v4 = SocketAddr::new(SERVER_V4.into(), 5060);
    let v6 = SocketAddr::new(SERVER_V6.into(), 5060);
    let (l4, l6) = (v4.to_string(), v6.to_string());
    let mut daemon = common::Daemon::start(
        &lab,
        &[
            "--mode", "offload", "--xdp", "off", "--listen", &l4, "--listen", &l6,
        ],
    );
    config_set(&lab, "rate_limit_pps", "10");
    config_set(&lab, "rate_limit_burst", "20");
    // The daemon reads CONFIG every 500 ms.
    std::thread::sleep(Duration::from_millis(1100));
    let before = counters(&lab);

    // 200 pings at once from one address: its burst (20), and what refills
    // while they arrive (10 a second), are answered; the rest are refused.
    let a = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let pings = vec![CRLF_PING.to_vec(); 200];
    let answered = burst(&a, v4, &pings, CRLF_PONG);
    assert!(
        (20..=25).contains(&answered),
        "{answered} of 200 pings from one source answered; the limit allows 20 + 10/s"
    );

    // Another address has its own bucket; and what gets no answer (lone
    // CRLFs, STUN with a wrong FINGERPRINT) takes no token from it, so a
    // full burst of pings after 100 of those is still answered whole.
    let b = client_socket(&lab, SocketAddr::new(CLIENT_V6.into(), 0));
    let mut unanswered: Vec<Vec<u8>> = vec![b"\r\n".to_vec(); 50];
    for i in 0..50u32 {
        let mut bad = Stun::binding_request(common::txid(i)).fingerprint().build();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        unanswered.push(bad);
    }
    assert_eq!(burst(&b, v6, &unanswered, CRLF_PONG), 0);
    let pings = vec![CRLF_PING.to_vec(); 20];
    assert_eq!(
        burst(&b, v6, &pings, CRLF_PONG),
        20,
        "datagrams that got no answer were charged to their source"
    );

    // Refusals are counted, answers are not.
    let refused = (200 - answered) as u64;
    let mut last = None;
    let counted = wait_until(Duration::from_secs(3), || {
        let d = delta(&before, &counters(&lab));
        let ok = d.get("user_drop_rate_limit") == refused
            && d.get("user_crlf_pong_sent") == answered as u64 + 20
            && d.get("user_stun_bad_fp") == 50;
        last = Some(d);
        ok
    });
    assert!(
        counted,
        "counters after {answered} answered and {refused} refused: {:?}",
        last.map(|d| d.0)
    );

    // Limit off: every ping from the first address is answered again.
    config_set(&lab, "rate_limit_pps", "0");
    std::thread::sleep(Duration::from_millis(1100));
    let pings = vec![CRLF_PING.to_vec(); 200];
    assert_eq!(burst(&a, v4, &pings, CRLF_PONG), 200);
    daemon.stop();
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_second_responder_on_the_same_address_refuses_to_start() {
    let lab = common::lab();
    let listen = SocketAddr::new(SERVER_V4.into(), 5060).to_string();
    let mut daemon = common::Daemon::start(&lab, &["--xdp", "off", "--listen", &listen]);
    // Its own pin dir, so only the address is shared.
    // (bpffs takes no dots in names.)
    let other_pins = std::path::PathBuf::from(format!("{}b", lab.pin_dir.display()));
    let out = lab
        .server(sip_ka::lab::sip_ka_exe().expect("sip-ka binary"))
        .args(["run", "--xdp", "off", "--listen", &listen, "--pin-dir"])
        .arg(&other_pins)
        .output()
        .expect("running a second sip-ka run");
    let _ = std::fs::remove_dir_all(&other_pins);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("binding the UDP responder"),
        "a second responder on udp/{listen}: {}\n{stderr}",
        out.status
    );
    // The first still answers every ping itself.
    let a = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let to: SocketAddr = listen.parse().expect("address");
    assert_eq!(burst(&a, to, &vec![CRLF_PING.to_vec(); 50], CRLF_PONG), 50);
    daemon.stop();
}
