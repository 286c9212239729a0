//! Edge mode end to end: sipp as the UA in the client namespace, sipp as
//! the PBX in the server namespace (198.18.0.1:5080), sip-ka's edge on
//! 198.18.0.1:5060 with XDP attached natively on the server veth.
//!
//! Needs root and sipp (`cargo xtask setup`); fails and says so otherwise.
//! A plain `cargo test` ignores these tests; `cargo xtask test` (or
//! `-- --include-ignored`) runs them.
//! Every wait is bounded; each test builds its own lab.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    client_socket,
    edge::{dialogs, edge_addr, sipp_in, start_edge, Sipp, PBX_PORT},
    exchange, text, wait_until, ANSWER_WAIT,
};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

const UA_PORT: u16 = 5062;

/// A lab with the edge running and a scratch directory holding the
/// scenarios.
fn edge_lab() -> (Lab, PathBuf) {
    edge_lab_with(&[])
}

/// [`edge_lab`] with more `sip-ka run` flags.
fn edge_lab_with(extra: &[&str]) -> (Lab, PathBuf) {
    let lab = start_edge(extra);
    let dir = std::env::temp_dir().join(format!("{}-edge", lab.name));
    std::fs::create_dir_all(&dir).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    for f in [
        "pbx_uas.xml",
        "pbx_reinvite.xml",
        "ua_reinvite.xml",
        "pbx_cancel.xml",
        "ua_cancel.xml",
    ] {
        std::fs::copy(here.join(f), dir.join(f)).unwrap();
    }
    (lab, dir)
}

/// Writes the UA scenario with one in-dialog keep-alive (no body) per
/// entry of `methods` and a pause of `hold_ms` before the BYE.
fn write_ua_scenario(dir: &Path, methods: &[&str], hold_ms: u32) {
    std::fs::write(
        dir.join("ua_call.xml"),
        lab::edge_ua_scenario(methods, hold_ms),
    )
    .unwrap();
}

/// The PBX: sipp UAS running `scenario`, answering calls and the edge's
/// OPTIONS pings (each a call of its own) until stopped; its exit status
/// then says whether any call failed (an unexpected message fails a call).
fn pbx(lab: &Lab, dir: &Path, scenario: &str, secs: u64) -> Sipp {
    let mut cmd = sipp_in(lab, false, dir, secs);
    cmd.args(["-sf", scenario])
        .args(["-i", &SERVER_V4.to_string(), "-p", &PBX_PORT.to_string()])
        .args(["-recv_timeout", "10000"]);
    Sipp::spawn(cmd, "PBX")
}

/// The UA: sipp UAC in the client namespace, `calls` calls at `rate` per
/// second through the edge, over UDP.
fn ua_command_with(
    lab: &Lab,
    dir: &Path,
    scenario: &str,
    calls: u32,
    rate: u32,
    secs: u32,
) -> Command {
    ua_command_on(lab, dir, scenario, calls, rate, secs, UaTransport::Udp)
}

/// How the UA reaches the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UaTransport {
    Udp,
    /// One TCP connection for all calls (sipp `-t t1`).
    Tcp,
}

fn ua_command_on(
    lab: &Lab,
    dir: &Path,
    scenario: &str,
    calls: u32,
    rate: u32,
    secs: u32,
    transport: UaTransport,
) -> Command {
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .args(["-k", "2", &secs.to_string(), "sipp", "-sf", scenario])
        .args([
            "-t",
            if transport == UaTransport::Tcp {
                "t1"
            } else {
                "u1"
            },
        ])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-l", "20", "-nostdin", "-trace_err", "-s", "service"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "5000", "-timeout", &format!("{secs}s")])
        .arg(edge_addr().to_string());
    cmd
}

fn sip_request(
    method: &str,
    ruri: &str,
    to_tag: &str,
    call_id: &str,
    local: SocketAddr,
) -> Vec<u8> {
    format!(
        "{method} {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{method}{call_id};rport\r\n\
         From: <sip:test@{local}>;tag=t1\r\n\
         To: <{ruri}>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The status line and the headers of a response, as text.
fn answer_to(sock: &std::net::UdpSocket, req: &[u8]) -> Option<String> {
    exchange(sock, edge_addr(), req, ANSWER_WAIT)
        .map(|(r, _)| String::from_utf8_lossy(&r).into_owned())
}

fn status(resp: &str) -> Option<u16> {
    resp.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// 1,000 sequential calls from a UA on UDP, then 1,000 from a UA on one
/// TCP connection (transport conversion: the PBX stays on UDP); none may
/// fail and none may leave a dialog behind.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn calls_complete_over_udp_and_tcp_and_leave_no_dialog() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    const CALLS: u32 = 1_000;
    write_ua_scenario(&dir, &[], 0);
    let pbx = pbx(&lab, &dir, "pbx_uas.xml", 60);
    std::thread::sleep(Duration::from_millis(300));
    for transport in [UaTransport::Udp, UaTransport::Tcp] {
        let ua = common::run_capture(&mut ua_command_on(
            &lab,
            &dir,
            "ua_call.xml",
            CALLS,
            250,
            25,
            transport,
        ));
        assert!(
            ua.status.success(),
            "UA sipp over {transport:?}: {}",
            text(&ua)
        );
        assert!(
            wait_until(Duration::from_secs(5), || dialogs(&lab).is_empty()),
            "after {CALLS} calls over {transport:?} `sip-ka dialogs` still lists {:?}",
            dialogs(&lab)
        );
    }
    let pbx = pbx.finish();
    assert!(pbx.status.success(), "PBX sipp: {}", text(&pbx));
    let c = common::counters(&lab);
    assert!(c["edge_conns_accepted"] >= 1, "{c:?}");
    assert_eq!(c["edge_stream_errors"], 0, "{c:?}");
    cleanup(&dir);
    eprintln!(
        "calls_complete_over_udp_and_tcp_and_leave_no_dialog: {:?}",
        started.elapsed()
    );
}

/// INFOS INFO keep-alives, then one UPDATE, MESSAGE and OPTIONS each, all
/// without a body inside the dialog: the edge answers every one (the PBX
/// scenario would fail on any of them) and XDP counts every one.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn in_dialog_keepalives_are_answered_by_the_edge_and_counted_by_xdp() {
    in_dialog_keepalives(UaTransport::Udp);
}

/// The same from a UA on TCP: answered by the edge over the connection,
/// never forwarded (XDP sees only UDP, so the edge's counter tells).
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn in_dialog_keepalives_over_tcp_are_answered_by_the_edge() {
    in_dialog_keepalives(UaTransport::Tcp);
}

fn in_dialog_keepalives(transport: UaTransport) {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    const INFOS: usize = 7;
    let mut methods = vec!["INFO"; INFOS];
    methods.extend(["UPDATE", "MESSAGE", "OPTIONS"]);
    let total = methods.len();
    write_ua_scenario(&dir, &methods, 3000);
    let pbx = pbx(&lab, &dir, "pbx_uas.xml", 30);
    std::thread::sleep(Duration::from_millis(300));
    let before = common::counters(&lab);
    let ua = ua_command_on(&lab, &dir, "ua_call.xml", 1, 1, 20, transport)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the UA");
    // While the UA holds the call after its keep-alives: one confirmed
    // dialog, with all of them counted by the XDP program (UDP).
    let want_xdp = if transport == UaTransport::Udp {
        total
    } else {
        0
    };
    let mut last = Vec::new();
    let seen = wait_until(Duration::from_secs(10), || {
        last = dialogs(&lab);
        last.len() == 1
            && last[0]["state"] == "confirmed"
            && last[0]["ka_count"] == want_xdp
            && (transport == UaTransport::Tcp || last[0]["last_ka_secs_ago"].is_number())
            && common::delta(&before, &common::counters(&lab)).get("edge_ka_in_dialog_ok")
                == total as u64
    });
    let ua = ua.wait_with_output().expect("UA");
    let pbx = pbx.finish();
    assert!(
        seen,
        "over {transport:?}: want one confirmed dialog with ka_count {want_xdp} and \
         {total} keep-alives answered by the edge, got {last:?}, {:?}",
        common::delta(&before, &common::counters(&lab)).0
    );
    // The PBX scenario fails on any of them: the edge answered them all.
    assert!(ua.status.success(), "UA sipp: {}", text(&ua));
    assert!(
        pbx.status.success(),
        "PBX sipp (a keep-alive reached it?): {}",
        text(&pbx)
    );
    assert!(
        wait_until(Duration::from_secs(5), || dialogs(&lab).is_empty()),
        "after the BYE: {:?}",
        dialogs(&lab)
    );
    cleanup(&dir);
    eprintln!(
        "in_dialog_keepalives over {transport:?}: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn options_and_unknown_dialogs_follow_the_pbx_health() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let local = SocketAddr::new(CLIENT_V4.into(), 5070);
    let sock = client_socket(&lab, local);
    let mut pbx = pbx(&lab, &dir, "pbx_uas.xml", 60);

    // An in-dialog INFO for a Call-ID the edge does not know: 481.
    let info = sip_request(
        "INFO",
        "sip:svc@198.18.0.1:5060",
        ";tag=x",
        "unknown-1",
        local,
    );
    let r = answer_to(&sock, &info).expect("no answer to an INFO with an unknown Call-ID");
    assert_eq!(status(&r), Some(481), "{r}");

    // OPTIONS to the edge itself, as a phone sends it: 200 with Allow,
    // Accept, Supported.
    let bare = sip_request("OPTIONS", "sip:198.18.0.1:5060", "", "opt-edge", local);
    let phone = String::from_utf8(bare.clone()).unwrap().replace(
        "Content-Length",
        "User-Agent: Example Phone 1.0\r\nAccept: application/sdp\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nContent-Length",
    );
    let r = answer_to(&sock, phone.as_bytes()).expect("no answer to OPTIONS to the edge");
    assert_eq!(status(&r), Some(200), "{r}");
    for h in ["\r\nAllow: ", "\r\nAccept: ", "\r\nSupported:"] {
        assert!(r.contains(h), "no {h:?} in {r}");
    }
    // A bare one: 200 without them, no more than 64 bytes larger than
    // the request (its source may be forged: no amplification).
    let r = answer_to(&sock, &bare).expect("no answer to a bare OPTIONS to the edge");
    assert_eq!(status(&r), Some(200), "{r}");
    assert!(!r.contains("\r\nAllow: "), "{r}");

    // OPTIONS for the PBX: 200 once the edge's pings got an answer.
    let opt = sip_request("OPTIONS", "sip:100@198.18.0.1:5060", "", "opt-pbx", local);
    let mut last = String::new();
    let up = wait_until(Duration::from_secs(10), || {
        last = answer_to(&sock, &opt).unwrap_or_default();
        status(&last) == Some(200)
    });
    assert!(
        up,
        "OPTIONS for a running PBX: want 200, last answer {last:?}"
    );
    // `sip-ka stats` shows the PBX up, its round-trip time and what the
    // edge answered (published every 500 ms).
    let mut stats = Default::default();
    assert!(
        wait_until(Duration::from_secs(3), || {
            stats = common::counters(&lab);
            stats.get("edge_pbx_up") == Some(&1)
                && stats.get("edge_pbx_rtt_us").is_some_and(|v| *v > 0)
                && stats.get("edge_options_edge").is_some_and(|v| *v >= 1)
                && stats.get("edge_options_pbx_up").is_some_and(|v| *v >= 1)
        }),
        "edge counters in sip-ka stats: {stats:?}"
    );

    // The PBX stops: 503 with Retry-After after two unanswered pings.
    pbx.stop();
    let down = wait_until(Duration::from_secs(10), || {
        last = answer_to(&sock, &opt).unwrap_or_default();
        status(&last) == Some(503)
    });
    assert!(
        down,
        "OPTIONS after the PBX stopped: want 503, last answer {last:?}"
    );
    assert!(
        last.contains("\r\nRetry-After: "),
        "503 without Retry-After: {last}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || {
            stats = common::counters(&lab);
            stats.get("edge_pbx_up") == Some(&0)
                && stats.get("edge_options_pbx_down").is_some_and(|v| *v >= 1)
        }),
        "PBX down in sip-ka stats: {stats:?}"
    );
    cleanup(&dir);
    eprintln!(
        "options_and_unknown_dialogs_follow_the_pbx_health: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn reinvite_without_sdp_reaches_the_pbx_and_the_pbx_bye_reaches_the_ua() {
    reinvite_and_pbx_bye(UaTransport::Udp);
}

/// The same with the UA on TCP: the PBX's BYE (UDP to the edge) reaches
/// the UA over the connection it opened, found by the flow token in the
/// Record-Route the PBX routes by.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn over_tcp_the_pbx_bye_reaches_the_ua_over_its_connection() {
    reinvite_and_pbx_bye(UaTransport::Tcp);
}

fn reinvite_and_pbx_bye(transport: UaTransport) {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let pbx = pbx(&lab, &dir, "pbx_reinvite.xml", 30);
    std::thread::sleep(Duration::from_millis(300));
    let ua = common::run_capture(&mut ua_command_on(
        &lab,
        &dir,
        "ua_reinvite.xml",
        1,
        1,
        20,
        transport,
    ));
    // The UA answered the PBX's BYE; once the edge relayed that 200 the
    // dialog is gone and the PBX's call is complete.
    let gone = wait_until(Duration::from_secs(5), || dialogs(&lab).is_empty());
    std::thread::sleep(Duration::from_millis(200));
    let pbx = pbx.finish();
    assert!(ua.status.success(), "UA sipp: {}", text(&ua));
    assert!(
        pbx.status.success(),
        "PBX sipp (the re-INVITE did not reach it?): {}",
        text(&pbx)
    );
    assert!(gone, "after the PBX's BYE: {:?}", dialogs(&lab));
    cleanup(&dir);
    eprintln!(
        "re-INVITE and the PBX's BYE over {transport:?}: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn early_dialog_then_cancel_leaves_no_dialog() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let pbx = pbx(&lab, &dir, "pbx_cancel.xml", 30);
    std::thread::sleep(Duration::from_millis(300));
    let ua = ua_command_with(&lab, &dir, "ua_cancel.xml", 1, 1, 20)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the UA");
    // Ringing: one early dialog.
    let mut last = Vec::new();
    let early = wait_until(Duration::from_secs(5), || {
        last = dialogs(&lab);
        last.len() == 1 && last[0]["state"] == "early"
    });
    // The table form says the same.
    let table = lab::run(&mut lab.sip_ka(&["dialogs"]).unwrap()).expect("sip-ka dialogs");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let ua = ua.wait_with_output().expect("UA");
    let gone = wait_until(Duration::from_secs(5), || dialogs(&lab).is_empty());
    std::thread::sleep(Duration::from_millis(200));
    let pbx = pbx.finish();
    assert!(early, "while ringing: want one early dialog, got {last:?}");
    assert!(
        table.contains(" early ") && table.contains("1 dialog(s)"),
        "`sip-ka dialogs` while ringing:\n{table}"
    );
    assert!(ua.status.success(), "UA sipp: {}", text(&ua));
    assert!(pbx.status.success(), "PBX sipp: {}", text(&pbx));
    assert!(gone, "after CANCEL and 487: {:?}", dialogs(&lab));
    cleanup(&dir);
    eprintln!(
        "early_dialog_then_cancel_leaves_no_dialog: {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn malformed_and_hop_limited_requests_are_answered_by_the_edge() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let local = SocketAddr::new(CLIENT_V4.into(), 5072);
    let sock = client_socket(&lab, local);

    // Max-Forwards 0: 483, not forwarded (no PBX runs to take it anyway).
    let inv = String::from_utf8(sip_request(
        "INVITE",
        "sip:svc@198.18.0.1:5060",
        "",
        "hops-1",
        local,
    ))
    .unwrap()
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    let r = answer_to(&sock, inv.as_bytes()).expect("no answer to Max-Forwards: 0");
    assert_eq!(status(&r), Some(483), "{r}");

    // No Call-ID: 400 whose reason says so.
    let bad = String::from_utf8(sip_request(
        "INVITE",
        "sip:svc@198.18.0.1:5060",
        "",
        "bad-1",
        local,
    ))
    .unwrap()
    .replace("Call-ID: bad-1\r\n", "");
    let r = answer_to(&sock, bad.as_bytes()).expect("no answer to a request without Call-ID");
    assert_eq!(status(&r), Some(400), "{r}");
    assert!(
        r.lines().next().unwrap_or("").contains("Call-ID"),
        "the reason phrase does not name Call-ID: {r}"
    );
    cleanup(&dir);
    eprintln!(
        "malformed_and_hop_limited_requests_are_answered_by_the_edge: {:?}",
        started.elapsed()
    );
}

/// Session interval of the session timer test (seconds): the lab-only
/// Min-SE floor is half of it.
const SE: u64 = 4;

/// A UA on `port` running `scenario` (one call), in the background.
fn ua_on(lab: &Lab, dir: &Path, scenario: &str, port: u16, secs: u32) -> Child {
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .args(["-k", "2", &secs.to_string(), "sipp", "-sf", scenario])
        .args([
            "-m",
            "1",
            "-r",
            "1",
            "-nostdin",
            "-trace_err",
            "-s",
            "service",
        ])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &port.to_string()])
        .args(["-recv_timeout", "10000", "-timeout", &format!("{secs}s")])
        .arg(edge_addr().to_string());
    cmd.spawn().expect("starting a UA")
}

/// RFC 4028 through the edge, in real time, with a lab-only Min-SE of
/// SE/2 and Session-Expires SE inserted by the edge: the UAs support
/// `timer`, the PBX does not, so the edge adds `refresher=uac` to the 200.
/// One UA refreshes with UPDATE every SE/2 (forwarded to the PBX, which
/// answers them: a refresh is never answered by the edge) and keeps its
/// call for three intervals; the other never refreshes: its
/// dialog is gone from `sip-ka dialogs` within a second after SE, and
/// with `--reap-expired` both its UA and the PBX get a BYE from the edge
/// (the PBX scenario fails without one; the UA scenario waits for it).
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn session_timer_refresh_keeps_a_call_and_expiry_reaps_the_other() {
    let started = Instant::now();
    let se = SE.to_string();
    let min_se = (SE / 2).to_string();
    let (lab, dir) = edge_lab_with(&[
        "--lab",
        "--timers-min-se",
        &min_se,
        "--timers-sess-expires",
        &se,
        "--reap-expired",
    ]);
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    let base = std::fs::read_to_string(here.join("ua_call.xml"))
        .unwrap()
        .replace(
            "CSeq: 1 INVITE\n",
            "CSeq: 1 INVITE\n      Supported: timer\n",
        );
    assert!(base.contains("Supported: timer"));
    let ka = std::fs::read_to_string(here.join("keepalive.xml")).unwrap();
    // Refreshing: an UPDATE every SE/2 for three intervals, then BYE.
    let refreshes = 3 * 2;
    let blocks: String = (0..refreshes)
        .map(|i| {
            format!(
                "<pause milliseconds=\"{}\"/>\n{}",
                SE * 1000 / 2,
                ka.replace("CSEQ", &(2 + i).to_string())
                    .replace("METHOD", "UPDATE")
                    .replace(
                        "      Max-Forwards: 70\n",
                        &format!(
                            "      Max-Forwards: 70\n      Supported: timer\n      \
                             Session-Expires: {SE};refresher=uac\n"
                        ),
                    )
            )
        })
        .collect();
    let refreshing = base
        .replace("<!-- IN_DIALOG -->", &blocks)
        .replace("HOLD_MS", "1000");
    std::fs::write(dir.join("ua_refresh.xml"), refreshing).unwrap();
    std::fs::write(
        dir.join("ua_expire.xml"),
        std::fs::read_to_string(here.join("ua_expire.xml"))
            .unwrap()
            .replace(
                "CSeq: 1 INVITE\n",
                "CSeq: 1 INVITE\n      Supported: timer\n",
            ),
    )
    .unwrap();
    // The PBX holds the refreshed call for longer than -recv_timeout and
    // answers its refresh UPDATEs.
    let pbx_xml = std::fs::read_to_string(here.join("pbx_uas.xml"))
        .unwrap()
        .replace(
            "<recv request=\"BYE\"/>",
            "<label id=\"incall\"/>\n  \
             <recv request=\"UPDATE\" optional=\"true\" next=\"update\"/>\n  \
             <recv request=\"BYE\" timeout=\"30000\"/>",
        )
        .replace(
            "<label id=\"options\"/>",
            "<label id=\"update\"/>\n  <send>\n    <![CDATA[\n\n      SIP/2.0 200 OK\n      \
             [last_Via:]\n      [last_From:]\n      [last_To:]\n      [last_Call-ID:]\n      \
             [last_CSeq:]\n      Content-Length: 0\n\n    ]]>\n  </send>\n  \
             <nop next=\"incall\"/>\n\n  <label id=\"options\"/>",
        );
    assert!(pbx_xml.contains("next=\"update\"") && pbx_xml.contains("<label id=\"update\"/>"));
    std::fs::write(dir.join("pbx_timer.xml"), pbx_xml).unwrap();
    let pbx = pbx(&lab, &dir, "pbx_timer.xml", 30);
    std::thread::sleep(Duration::from_millis(300));

    let refresh_ua = ua_on(&lab, &dir, "ua_refresh.xml", UA_PORT, 25);
    let expire_ua = ua_on(&lab, &dir, "ua_expire.xml", UA_PORT + 2, 25);
    // Both calls confirmed, with the session the edge negotiated.
    let mut last = Vec::new();
    let both = wait_until(Duration::from_secs(5), || {
        last = dialogs(&lab);
        last.len() == 2
            && last.iter().all(|d| {
                d["state"] == "confirmed"
                    && d["session_interval_secs"] == SE
                    && d["refresher"] == "uac"
            })
    });
    let confirmed = Instant::now();
    assert!(both, "want two confirmed dialogs with SE {SE}: {last:?}");

    // The unrefreshed call is gone within one second after SE.
    let gone = wait_until(Duration::from_secs(SE + 2), || {
        last = dialogs(&lab);
        last.len() == 1
    });
    let expired_after = confirmed.elapsed();
    assert!(gone, "the unrefreshed dialog is still listed: {last:?}");
    assert!(
        expired_after <= Duration::from_millis(SE * 1000 + 1000),
        "expired {expired_after:?} after confirmation (SE {SE} s)"
    );
    assert!(
        expired_after >= Duration::from_millis(SE * 1000 - 1000),
        "expired too early: {expired_after:?} (SE {SE} s)"
    );
    let expire_ua = expire_ua.wait_with_output().expect("UA (expired)");
    assert!(
        expire_ua.status.success(),
        "the unrefreshed UA got no BYE from the edge: {}",
        text(&expire_ua)
    );

    // The refreshed call is still up after three intervals.
    let three = Duration::from_secs(3 * SE) + Duration::from_millis(200);
    std::thread::sleep(three.saturating_sub(confirmed.elapsed()));
    let still = dialogs(&lab);
    assert_eq!(still.len(), 1, "after three intervals: {still:?}");
    assert_eq!(still[0]["state"], "confirmed", "{still:?}");
    let left = still[0]["session_left_secs"].as_u64().unwrap_or(u64::MAX);
    assert!(left <= SE, "time left {left} s > SE: {still:?}");

    let refresh_ua = refresh_ua.wait_with_output().expect("UA (refreshing)");
    assert!(
        refresh_ua.status.success(),
        "refreshing UA: {}",
        text(&refresh_ua)
    );
    let pbx = pbx.finish();
    // Every refresh reached the PBX (sipp's screen: `----------> UPDATE  N`).
    let pbx_text = text(&pbx);
    let updates = pbx_text
        .lines()
        .find(|l| l.contains("UPDATE"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse::<u32>().ok());
    assert_eq!(
        updates,
        Some(refreshes as u32),
        "refresh UPDATEs received by the PBX: {pbx_text}"
    );
    assert!(
        pbx.status.success(),
        "PBX sipp (no BYE for the expired call?): {}",
        text(&pbx)
    );
    assert!(
        wait_until(Duration::from_secs(3), || dialogs(&lab).is_empty()),
        "after the BYE: {:?}",
        dialogs(&lab)
    );
    cleanup(&dir);
    eprintln!(
        "session_timer_refresh_keeps_a_call_and_expiry_reaps_the_other: {:?} (expiry after {expired_after:?})",
        started.elapsed()
    );
}
