//! End-to-end tests: sip-ka attached to a veth in a server network
//! namespace, real clients (sockets, coturn's turnutils_stunclient, the
//! classic `stun` client, sipsak, sipp) in a client namespace. Every
//! feature runs in native and in SKB mode. Each test builds its own lab,
//! which is torn down on drop, also when the test fails.
//!
//! Needs root and the Debian clients (`cargo xtask setup`); without them
//! the tests fail and say what is missing. A plain `cargo test` ignores
//! them; `cargo xtask test` (or `-- --include-ignored`) runs them.

mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use common::{
    addr_after, client_run, client_socket, config_set, counters, delta, exchange, exchange_fenced,
    full_id, parse_success, peers, text, txid, ANSWER_WAIT, SILENCE_WAIT,
};
use sip_ka::lab::{
    packet::{Stun, CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const SIP_PORT: u16 = 5060;

fn server4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), SIP_PORT)
}

fn server6() -> SocketAddr {
    SocketAddr::new(SERVER_V6.into(), SIP_PORT)
}

/// A lab with the daemon attached in `mode`, checked against what the
/// kernel reports.
fn lab_with_xdp(mode: &str) -> Lab {
    let mut lab = common::lab();
    common::start(&mut lab, &["--mode", "offload", "--xdp-mode", mode]);
    assert_eq!(
        common::attached_mode(&lab),
        mode,
        "the kernel does not report the program in {mode} mode on {}",
        lab.server_if
    );
    lab
}

/// Sends `\r\n\r\n` and asserts that exactly `\r\n` comes back from `to`.
#[track_caller]
fn ping_pong(sock: &std::net::UdpSocket, to: SocketAddr, what: &str) {
    match exchange(sock, to, CRLF_PING, ANSWER_WAIT) {
        Some((reply, from)) => {
            assert_eq!(reply, CRLF_PONG, "{what}: the pong is not exactly CRLF");
            assert_eq!(from, to, "{what}: the pong came from the wrong address");
        }
        None => panic!("{what}: no pong within {ANSWER_WAIT:?}"),
    }
}

// ---------------------------------------------------------------------------
// CRLF keep-alives, exact counting, the PEERS table, `config set udp_crlf
// drop`, and SIP classification of sipsak's and sipp's requests.

fn crlf_and_sip(mode: &str) {
    let started = Instant::now();
    let lab = lab_with_xdp(mode);
    let v4 = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let v6 = client_socket(&lab, SocketAddr::new(CLIENT_V6.into(), 0));
    let (p4, p6) = (
        v4.local_addr().unwrap().port(),
        v6.local_addr().unwrap().port(),
    );

    // N pings over IPv4 and M over IPv6, each answered with exactly CRLF
    // from the server's address and SIP port, and counted exactly.
    const N4: u64 = 5;
    const N6: u64 = 3;
    let before = counters(&lab);
    for i in 0..N4 {
        ping_pong(&v4, server4(), &format!("{mode} IPv4 ping {i}"));
    }
    for i in 0..N6 {
        ping_pong(&v6, server6(), &format!("{mode} IPv6 ping {i}"));
    }
    delta(&before, &counters(&lab)).expect(
        &format!("{mode}: after {N4} IPv4 and {N6} IPv6 pings"),
        &[
            ("crlf_ping", N4 + N6),
            ("crlf_pong_sent", N4 + N6),
            ("crlf_dropped", 0),
            ("crlf_lone", 0),
            ("pass_bad_checksum", 0),
            ("pass_malformed", 0),
        ],
    );

    // The PEERS table knows both sources with their ping counts.
    let table = peers(&lab);
    for (src, n) in [
        (SocketAddr::new(CLIENT_V4.into(), p4), N4),
        (SocketAddr::new(CLIENT_V6.into(), p6), N6),
    ] {
        let e = table
            .get(&src.to_string())
            .unwrap_or_else(|| panic!("{mode}: {src} missing from `sip-ka peers`: {table:?}"));
        assert_eq!(e["crlf"].as_u64(), Some(n), "{mode}: peer {src}: {e}");
        assert_eq!(e["last_kind"].as_str(), Some("crlf"), "{mode}: {e}");
    }

    // A lone CRLF (what a pong looks like) is never answered.
    let before = counters(&lab);
    assert_eq!(
        exchange_fenced(&v4, server4(), CRLF_PONG),
        None,
        "{mode}: a lone CRLF was answered"
    );
    delta(&before, &counters(&lab)).expect(
        &format!("{mode}: lone CRLF"),
        &[("crlf_lone", 1), ("crlf_ping", 1), ("crlf_pong_sent", 1)],
    );

    // `config set udp_crlf drop` applies to the very next ping; `pong`
    // brings the answers back.
    config_set(&lab, "udp_crlf", "drop");
    // Every subcommand takes --pin-dir, also after its arguments (as
    // `Lab::sip_ka` puts it).
    // Checked at the end, so that the rest of the test still runs.
    let got = common::run_capture(&mut lab.sip_ka(&["config", "get", "udp_crlf"]).unwrap());
    let pin_dir_last = (
        got.status.success(),
        String::from_utf8_lossy(&got.stdout).trim().to_string(),
        text(&got),
    );
    let before = counters(&lab);
    assert_eq!(
        exchange(&v4, server4(), CRLF_PING, SILENCE_WAIT),
        None,
        "{mode}: a ping was answered after `config set udp_crlf drop`"
    );
    delta(&before, &counters(&lab)).expect(
        &format!("{mode}: one ping with udp_crlf = drop"),
        &[("crlf_ping", 1), ("crlf_dropped", 1), ("crlf_pong_sent", 0)],
    );
    config_set(&lab, "udp_crlf", "pong");
    ping_pong(
        &v4,
        server4(),
        &format!("{mode}: ping after udp_crlf = pong"),
    );

    // sipsak's OPTIONS (nothing listens on 5060 in the server namespace, so
    // it gets an ICMP port unreachable and stops at once; its own timer and
    // `timeout` bound it anyway).
    let before = counters(&lab);
    let out = client_run(
        &lab,
        10,
        "sipsak",
        &["-s", "sip:198.18.0.1", "--timer-t1=100", "-v"],
    );
    let d = delta(&before, &counters(&lab));
    assert_ne!(
        out.status.code(),
        Some(124),
        "{mode}: sipsak timed out: {}",
        text(&out)
    );
    d.expect(
        &format!("{mode}: sipsak OPTIONS ({})", text(&out).trim()),
        &[
            ("req_options_out_of_dialog_no_body", 1),
            ("sip_requests", 1),
            ("sip_port_datagrams", 1),
        ],
    );

    // sipp as a UAC: an OPTIONS outside a dialog, then a bodiless INFO with
    // a To tag (an in-dialog keep-alive for a dialog sip-ka does not know).
    let dir = scratch_dir(&lab);
    std::fs::write(dir.join("ka.xml"), sip_ka::lab::SIPP_KEEPALIVE_SCENARIO).unwrap();
    let before = counters(&lab);
    let out = run_sipp(
        &lab,
        &dir,
        SocketAddr::new(CLIENT_V4.into(), 45060),
        server4(),
    );
    let d = delta(&before, &counters(&lab));
    assert!(out.status.success(), "{mode}: sipp failed: {}", text(&out));
    d.expect(
        &format!("{mode}: sipp OPTIONS + in-dialog INFO"),
        &[
            ("req_options_out_of_dialog_no_body", 1),
            ("req_info_in_dialog_no_body", 1),
            ("ka_unknown_dialog", 1),
            ("ka_in_dialog", 0),
            ("sip_requests", 2),
            ("crlf_ping", 0),
            ("stun_req", 0),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        (pin_dir_last.0, pin_dir_last.1.as_str()),
        (true, "drop"),
        "{mode}: `sip-ka config get udp_crlf --pin-dir DIR` after `set udp_crlf drop`: {}",
        pin_dir_last.2
    );
    eprintln!("crlf_and_sip({mode}): {:?}", started.elapsed());
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn crlf_and_sip_native() {
    crlf_and_sip("native");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn crlf_and_sip_skb() {
    crlf_and_sip("skb");
}

fn scratch_dir(lab: &Lab) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{}-e2e", lab.name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_sipp(
    lab: &Lab,
    dir: &std::path::Path,
    local: SocketAddr,
    to: SocketAddr,
) -> std::process::Output {
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(std::process::Stdio::null())
        .args([
            "-k", "2", "15", "sipp", "-sf", "ka.xml", "-m", "1", "-nostdin",
        ])
        .args([
            "-i",
            &local.ip().to_string(),
            "-p",
            &local.port().to_string(),
        ])
        .args(["-timeout", "10s", &to.to_string()]);
    common::run_capture(&mut cmd)
}

// ---------------------------------------------------------------------------
// STUN: the test's own requests (with, without and with a wrong
// FINGERPRINT; classic with and without change flags), coturn's
// turnutils_stunclient and the classic `stun` client.

fn stun(mode: &str) {
    let started = Instant::now();
    let lab = lab_with_xdp(mode);

    // Own requests, decoded by the tests' own parser.
    let before = counters(&lab);
    for (bind, to) in [
        (SocketAddr::new(CLIENT_V4.into(), 0), server4()),
        (SocketAddr::new(CLIENT_V6.into(), 0), server6()),
    ] {
        let sock = client_socket(&lab, bind);
        let me = sock.local_addr().unwrap();
        // (what, the request's attributes, with FINGERPRINT?)
        type Attributes = fn(Stun) -> Stun;
        let variants: [(&str, Attributes, bool); 3] = [
            ("FINGERPRINT", Stun::fingerprint, true),
            ("no attribute", |s| s, false),
            (
                "SOFTWARE and FINGERPRINT",
                |s| s.software("e2e test client").fingerprint(),
                true,
            ),
        ];
        for (n, (kind, attributes, fingerprint)) in variants.into_iter().enumerate() {
            let what = format!("{mode}: Binding request from {me} ({kind})");
            let id = txid(n as u32 + 7 * me.port() as u32);
            let req = attributes(Stun::binding_request(id)).build();
            let (reply, from) = exchange(&sock, to, &req, ANSWER_WAIT)
                .unwrap_or_else(|| panic!("{what}: no answer within {ANSWER_WAIT:?}"));
            assert_eq!(from, to, "{what}: answer from the wrong address");
            let s = parse_success(&reply).unwrap_or_else(|e| panic!("{what}: {e}: {reply:02x?}"));
            assert_eq!(s.id, full_id(id), "{what}: transaction id");
            assert!(s.xor_mapped, "{what}: no XOR-MAPPED-ADDRESS");
            assert_eq!(s.mapped, me, "{what}: mapped address");
            if fingerprint {
                assert_eq!(s.fingerprint, Some(true), "{what}: FINGERPRINT");
            } else {
                assert_eq!(s.fingerprint, None, "{what}: unexpected FINGERPRINT");
            }
        }
        // A wrong FINGERPRINT: nothing comes back.
        let bad = Stun::binding_request(txid(99)).wrong_fingerprint().build();
        assert_eq!(
            exchange_fenced(&sock, to, &bad),
            None,
            "{mode}: a request with a wrong FINGERPRINT from {me} was answered"
        );
    }
    // Classic requests (IPv4): no change flags -> MAPPED-ADDRESS; change
    // flags -> not served by the fast path (passed; nothing listens).
    let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let me = sock.local_addr().unwrap();
    let id = [0x5a; 16];
    let (reply, _) = exchange(
        &sock,
        server4(),
        &Stun::classic_binding_request(id).change_request(0).build(),
        ANSWER_WAIT,
    )
    .unwrap_or_else(|| panic!("{mode}: no answer to a classic Binding request"));
    let s = parse_success(&reply).unwrap_or_else(|e| panic!("{mode}: classic answer: {e}"));
    assert_eq!(s.id, id, "{mode}: classic answer's transaction id");
    assert!(
        !s.xor_mapped,
        "{mode}: classic answer uses XOR-MAPPED-ADDRESS"
    );
    assert_eq!(s.mapped, me, "{mode}: classic MAPPED-ADDRESS");
    assert_eq!(
        exchange_fenced(
            &sock,
            server4(),
            &Stun::classic_binding_request([0x6b; 16])
                .change_request(6)
                .build()
        ),
        None,
        "{mode}: a classic request with change flags was answered"
    );
    delta(&before, &counters(&lab)).expect(
        &format!("{mode}: own STUN requests"),
        &[
            ("stun_req", 8),
            ("stun_resp", 7),
            ("stun_bad_fp", 2),
            ("stun_classic", 1),
            ("stun_passed", 1),
            // The fences after the three requests that get no answer.
            ("crlf_ping", 3),
            ("crlf_pong_sent", 3),
            ("pass_malformed", 0),
            ("pass_bad_checksum", 0),
        ],
    );

    // coturn's client, over IPv4 and IPv6: a success with our address and
    // the port the PEERS table saw it use.
    for (server, client_ip) in [
        (SERVER_V4.to_string(), IpAddr::from(CLIENT_V4)),
        (SERVER_V6.to_string(), IpAddr::from(CLIENT_V6)),
    ] {
        let before = counters(&lab);
        let out = client_run(
            &lab,
            10,
            "turnutils_stunclient",
            &["-p", &SIP_PORT.to_string(), &server],
        );
        let d = delta(&before, &counters(&lab));
        let t = text(&out);
        let what = format!("{mode}: turnutils_stunclient -p 5060 {server}");
        let mapped = addr_after(&t, "UDP reflexive addr: ").unwrap_or_else(|| {
            panic!(
                "{what}: no reflexive address in its output: {t:?}; counters changed: {:?}",
                d.0
            )
        });
        assert_eq!(mapped.ip(), client_ip, "{what}: {t}");
        assert_ne!(mapped.port(), 0, "{what}: {t}");
        let table = peers(&lab);
        let e = table.get(&mapped.to_string()).unwrap_or_else(|| {
            panic!("{what}: mapped {mapped} is not a source in `sip-ka peers`: {table:?}")
        });
        assert!(e["stun"].as_u64() >= Some(1), "{what}: {e}");
        d.expect(
            &what,
            &[("stun_req", 1), ("stun_resp", 1), ("stun_bad_fp", 0)],
        );
    }

    // The classic client, test 1 only (one request without change flags):
    // it prints the mapped address, and exactly one request is answered.
    let before = counters(&lab);
    let out = client_run(
        &lab,
        15,
        "stun",
        &["198.18.0.1:5060", "1", "-v", "-p", "40000"],
    );
    let t = text(&out);
    assert_eq!(
        addr_after(&t, "MappedAddress = "),
        Some("198.18.0.2:40000".parse().unwrap()),
        "{mode}: stun 198.18.0.1:5060 1: {t}"
    );
    delta(&before, &counters(&lab)).expect(
        &format!("{mode}: stun test 1"),
        &[("stun_classic", 1), ("stun_resp", 1)],
    );

    // The full classic run: test I gets the mapped address; tests II and
    // III (change IP and/or port) get no answer from a one-address server.
    let before = counters(&lab);
    let out = client_run(&lab, 20, "stun", &["198.18.0.1:5060", "-v", "-p", "40010"]);
    let t = text(&out);
    let d = delta(&before, &counters(&lab));
    assert_eq!(
        addr_after(&t, "MappedAddress = "),
        Some("198.18.0.2:40010".parse().unwrap()),
        "{mode}: stun 198.18.0.1:5060: {t}"
    );
    for line in ["test I = 1", "test II = 0", "test III = 0"] {
        assert!(t.contains(line), "{mode}: stun printed no {line:?}: {t}");
    }
    assert!(d.get("stun_classic") >= 1, "{mode}: {d:?}");
    assert_eq!(
        d.get("stun_resp"),
        d.get("stun_classic"),
        "{mode}: every answered classic request, and only those: {d:?}"
    );
    assert!(
        d.get("stun_passed") >= 2,
        "{mode}: change requests not passed: {d:?}"
    );
    eprintln!("stun({mode}): {:?}", started.elapsed());
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn stun_native() {
    stun("native");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn stun_skb() {
    stun("skb");
}

// ---------------------------------------------------------------------------
// The userspace responder (`--xdp off --listen`) answers with the same
// bytes as the XDP program, native and SKB, for the same requests from the
// same source ports.

/// The requests compared, by name: (name, IPv6?, payload).
fn comparison_requests() -> Vec<(String, bool, Vec<u8>)> {
    let mut v = Vec::new();
    for (six, fam) in [(false, "v4"), (true, "v6")] {
        let tag = six as u32;
        let name = |s: &str| format!("{s} {fam}");
        v.push((name("crlf ping"), six, CRLF_PING.to_vec()));
        v.push((
            name("stun fingerprint"),
            six,
            Stun::binding_request(txid(1 + tag)).fingerprint().build(),
        ));
        v.push((
            name("stun no fingerprint"),
            six,
            Stun::binding_request(txid(3 + tag)).build(),
        ));
        v.push((
            name("stun software+fingerprint"),
            six,
            Stun::binding_request(txid(5 + tag))
                .software("sip-ka e2e")
                .fingerprint()
                .build(),
        ));
        v.push((
            name("stun bad fingerprint"),
            six,
            Stun::binding_request(txid(7 + tag))
                .wrong_fingerprint()
                .build(),
        ));
    }
    v.push((
        "stun classic v4".into(),
        false,
        Stun::classic_binding_request([0x11; 16])
            .change_request(0)
            .build(),
    ));
    v.push((
        "stun classic change v4".into(),
        false,
        Stun::classic_binding_request([0x22; 16])
            .change_request(4)
            .build(),
    ));
    v
}

type Answers = Vec<Option<Vec<u8>>>;

/// Whether a comparison request must be answered (the others must not).
fn must_answer(name: &str) -> bool {
    !(name.contains("bad") || name.contains("change"))
}

fn collect_answers(lab: &Lab) -> Answers {
    let v4 = client_socket(lab, SocketAddr::new(CLIENT_V4.into(), 41000));
    let v6 = client_socket(lab, SocketAddr::new(CLIENT_V6.into(), 41000));
    comparison_requests()
        .iter()
        .map(|(name, six, payload)| {
            let (sock, to) = if *six {
                (&v6, server6())
            } else {
                (&v4, server4())
            };
            let answer = if must_answer(name) {
                exchange(sock, to, payload, ANSWER_WAIT)
            } else {
                exchange_fenced(sock, to, payload)
            };
            answer.map(|(reply, from)| {
                assert_eq!(from, to, "{name}: answer from the wrong address");
                reply
            })
        })
        .collect()
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn userspace_responder_answers_like_xdp() {
    let started = Instant::now();
    let mut lab = common::lab();
    let mut runs: Vec<(String, Answers)> = Vec::new();

    for mode in ["native", "skb"] {
        common::start(&mut lab, &["--mode", "offload", "--xdp-mode", mode]);
        assert_eq!(common::attached_mode(&lab), mode);
        runs.push((format!("XDP {mode}"), collect_answers(&lab)));
        lab.stop_daemon().expect("stopping the daemon");
    }

    // The userspace responder alone: no --iface, nothing attached.
    let listen4 = server4().to_string();
    let listen6 = server6().to_string();
    let responder = [
        "--mode", "offload", "--xdp", "off", "--listen", &listen4, "--listen", &listen6,
    ];
    let mut daemon = common::Daemon::start(&lab, &responder);
    let before = counters(&lab);
    runs.push(("userspace (--xdp off)".into(), collect_answers(&lab)));
    // The responder publishes its counters every 500 ms.
    let want = [
        // Two pings compared, and three fences.
        ("user_crlf_ping", 5),
        ("user_crlf_pong_sent", 5),
        ("user_stun_req", 10),
        ("user_stun_resp", 7),
        ("user_stun_bad_fp", 2),
        ("user_stun_error", 0),
        ("crlf_ping", 0),
        ("stun_req", 0),
    ];
    let mut last = None;
    common::wait_until(Duration::from_secs(3), || {
        let d = delta(&before, &counters(&lab));
        let ok = want.iter().all(|(k, v)| d.get(k) == *v);
        last = Some(d);
        ok
    });
    let user_delta = last.unwrap();
    daemon.stop();

    // `--xdp off` with `--iface` too (how the lab starts a daemon) must
    // attach nothing either: the same ping is answered by userspace.
    let mut with_iface = vec!["--iface", lab.server_if.as_str()];
    with_iface.extend_from_slice(&responder);
    let mut daemon = common::Daemon::start(&lab, &with_iface);
    let attached = common::attached_mode(&lab);
    let before = counters(&lab);
    let v4 = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    ping_pong(&v4, server4(), "--iface with --xdp off");
    let mut iface_delta = None;
    common::wait_until(Duration::from_secs(3), || {
        let d = delta(&before, &counters(&lab));
        let ok = d.get("user_crlf_pong_sent") == 1;
        iface_delta = Some(d);
        ok
    });
    let iface_delta = iface_delta.unwrap();
    daemon.stop();

    // Every expected answer is present and correct in every run, nothing
    // else is answered, and all runs agree byte for byte.
    let reqs = comparison_requests();
    let mut problems = Vec::new();
    for (i, (name, six, _)) in reqs.iter().enumerate() {
        let must_answer = must_answer(name);
        for (run, answers) in &runs {
            match (&answers[i], must_answer) {
                (None, true) => problems.push(format!("{run}: {name}: no answer")),
                (Some(a), false) => {
                    problems.push(format!("{run}: {name}: unexpected answer {a:02x?}"))
                }
                (Some(a), true) if name.starts_with("stun") => {
                    let me = SocketAddr::new(
                        if *six {
                            IpAddr::from(CLIENT_V6)
                        } else {
                            IpAddr::from(CLIENT_V4)
                        },
                        41000,
                    );
                    match parse_success(a) {
                        Ok(s) if s.mapped == me => {}
                        Ok(s) => problems.push(format!("{run}: {name}: mapped {}", s.mapped)),
                        Err(e) => problems.push(format!("{run}: {name}: {e}")),
                    }
                }
                _ => {}
            }
        }
        let (run0, a0) = &runs[0];
        for (run, answers) in &runs[1..] {
            if answers[i].is_some() && a0[i].is_some() && answers[i] != a0[i] {
                problems.push(format!(
                    "{name}: {run0} answered {:02x?}, {run} answered {:02x?}",
                    a0[i], answers[i]
                ));
            }
        }
    }
    if attached != "none" {
        problems.push(format!(
            "--iface {} --xdp off: the kernel reports an XDP program ({attached}) on it",
            lab.server_if
        ));
    }
    if iface_delta.get("user_crlf_pong_sent") != 1 || iface_delta.get("crlf_ping") != 0 {
        problems.push(format!(
            "--iface {} --xdp off: the ping was not answered by userspace: {:?}",
            lab.server_if, iface_delta.0
        ));
    }
    for (k, v) in want {
        if user_delta.get(k) != v {
            problems.push(format!(
                "--xdp off: {k} +{} (want +{v}); all changes {:?}",
                user_delta.get(k),
                user_delta.0
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "userspace vs XDP:\n  {}",
        problems.join("\n  ")
    );
    eprintln!(
        "userspace_responder_answers_like_xdp: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// `sip-ka lab`: the self-contained demonstration runs and exits 0.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn lab_command_runs_the_demonstration() {
    common::require_env();
    let started = Instant::now();
    let exe = sip_ka::lab::sip_ka_exe().expect("sip-ka binary");
    let out = common::run_capture(
        std::process::Command::new("timeout")
            .args(["-k", "5", "90"])
            .arg(exe)
            .arg("lab"),
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "sip-ka lab failed ({}): {t}",
        out.status
    );
    for needle in [
        "crlf_pong_sent",
        "stun_resp",
        "req_options_out_of_dialog_no_body",
        "peer(s)",
    ] {
        assert!(t.contains(needle), "sip-ka lab printed no {needle:?}: {t}");
    }
    eprintln!(
        "lab_command_runs_the_demonstration: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The fast path outlives the daemon: with --keep-attached the program stays
// attached (pinned link) and keeps answering while no daemon runs; a new
// daemon replaces the program behind the same link and keeps the pinned
// counters and configuration.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn fast_path_keeps_answering_across_a_daemon_restart() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--xdp-mode", "native", "--keep-attached"]);
    config_set(&lab, "rate_limit_burst", "7");
    let sock = client_socket(&lab, "198.18.0.2:0".parse().unwrap());
    ping_pong(&sock, server4(), "before the restart");

    // A steady sender of pings, bounded in count and time, across the stop
    // and the restart; every ping must be answered.
    let sender = {
        let sock = sock.try_clone().expect("clone socket");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut sent, mut answered) = (0u32, 0u32);
            while sent < 300 && Instant::now() < deadline {
                sent += 1;
                if let Some((reply, _)) = exchange(&sock, server4(), CRLF_PING, ANSWER_WAIT) {
                    answered += (reply == CRLF_PONG) as u32;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (sent, answered)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = counters(&lab);
    let status = lab.stop_daemon().expect("stopping the daemon");
    assert!(status.success(), "sip-ka run exited with {status}");
    assert_eq!(
        common::attached_mode(&lab),
        "native",
        "still attached with no daemon"
    );
    std::thread::sleep(Duration::from_millis(500));
    let while_down = counters(&lab);
    assert!(
        delta(&before, &while_down).get("crlf_pong_sent") > 10,
        "pongs are counted in the pinned STATS map while no daemon runs"
    );
    common::start(&mut lab, &["--xdp-mode", "native"]);
    let (sent, answered) = sender.join().expect("sender thread");
    assert!(sent >= 100, "only {sent} pings sent");
    assert_eq!(answered, sent, "pings unanswered across the restart");
    // Counters and configuration survived the restart.
    let after = counters(&lab);
    assert!(after["crlf_pong_sent"] > while_down["crlf_pong_sent"]);
    let out = common::run_capture(&mut lab.sip_ka(&["config", "get", "rate_limit_burst"]).unwrap());
    assert_eq!(text(&out).trim(), "7");

    // A daemon without --keep-attached detaches on exit: no more pongs.
    let status = lab.stop_daemon().expect("stopping the daemon");
    assert!(status.success());
    assert_eq!(common::attached_mode(&lab), "none", "detached on exit");
    assert!(
        exchange(&sock, server4(), CRLF_PING, Duration::from_millis(500)).is_none(),
        "a pong after the daemon detached"
    );
}
