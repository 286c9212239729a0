//! Edge mode end to end: sipp as the UA in the client namespace, sipp as
//! the PBX in the server namespace (198.18.0.1:5080), sip-ka's edge on
//! 198.18.0.1:5060 with XDP attached natively on the server veth.
//!
//! Needs root and sipp (`cargo xtask setup`); fails and says so otherwise.
//! Every wait is bounded; each test builds its own lab.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{client_socket, exchange, text, wait_until, ANSWER_WAIT};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

const EDGE_PORT: u16 = 5060;
const PBX_PORT: u16 = 5080;
const UA_PORT: u16 = 5062;

fn edge_addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), EDGE_PORT)
}

fn pbx_addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), PBX_PORT)
}

/// A lab with the edge running and a scratch directory holding the
/// scenarios.
fn edge_lab() -> (Lab, PathBuf) {
    let mut lab = common::lab();
    let edge = edge_addr().to_string();
    let pbx = pbx_addr().to_string();
    common::start(
        &mut lab,
        &[
            "--mode",
            "edge",
            "--xdp-mode",
            "native",
            "--listen",
            &edge,
            "--upstream",
            &pbx,
            "--qualify-frequency",
            "1",
        ],
    );
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
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    let base = std::fs::read_to_string(here.join("ua_call.xml")).unwrap();
    let ka = std::fs::read_to_string(here.join("keepalive.xml")).unwrap();
    let blocks: String = methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            ka.replace("CSEQ", &(2 + i).to_string())
                .replace("METHOD", m)
        })
        .collect();
    let xml = base
        .replace("<!-- IN_DIALOG -->", &blocks)
        .replace("HOLD_MS", &hold_ms.to_string());
    std::fs::write(dir.join("ua_call.xml"), xml).unwrap();
}

/// The PBX: sipp UAS answering calls and the edge's OPTIONS pings (each a
/// call of its own) until stopped with SIGTERM; its exit status then says
/// whether any call failed (an unexpected message fails a call).
struct Pbx {
    child: Option<Child>,
}

impl Pbx {
    fn start(lab: &Lab, dir: &Path, secs: u32) -> Pbx {
        Pbx::start_with(lab, dir, "pbx_uas.xml", secs)
    }

    fn start_with(lab: &Lab, dir: &Path, scenario: &str, secs: u32) -> Pbx {
        let mut cmd = lab.server("timeout");
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .args(["-k", "2", &secs.to_string(), "sipp", "-sf", scenario])
            .args(["-nostdin", "-trace_err"])
            .args(["-i", &SERVER_V4.to_string(), "-p", &PBX_PORT.to_string()])
            .args(["-recv_timeout", "10000"]);
        let child = cmd.spawn().expect("starting sipp as the PBX");
        Pbx { child: Some(child) }
    }

    /// Stops the PBX (SIGTERM; `timeout` passes it on to sipp) and returns
    /// its output; the exit status is 0 only if no call failed.
    fn finish(mut self) -> Output {
        let c = self.child.take().unwrap();
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        // Bounded by the `timeout` wrapper's -k.
        c.wait_with_output().expect("waiting for the PBX")
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `timeout` passes SIGTERM on to sipp.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The UA: sipp UAC in the client namespace, `calls` calls at `rate` per
/// second through the edge.
fn ua_command(lab: &Lab, dir: &Path, calls: u32, rate: u32, secs: u32) -> Command {
    ua_command_with(lab, dir, "ua_call.xml", calls, rate, secs)
}

fn ua_command_with(
    lab: &Lab,
    dir: &Path,
    scenario: &str,
    calls: u32,
    rate: u32,
    secs: u32,
) -> Command {
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .args(["-k", "2", &secs.to_string(), "sipp", "-sf", scenario])
        .args(["-m", &calls.to_string(), "-r", &rate.to_string()])
        .args(["-l", "20", "-nostdin", "-trace_err", "-s", "service"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "5000", "-timeout", &format!("{secs}s")])
        .arg(edge_addr().to_string());
    cmd
}

/// `sip-ka dialogs --json`.
fn dialogs(lab: &Lab) -> Vec<serde_json::Value> {
    let out =
        lab::run(&mut lab.sip_ka(&["dialogs", "--json"]).unwrap()).expect("sip-ka dialogs --json");
    match serde_json::from_slice(&out.stdout).expect("dialogs JSON") {
        serde_json::Value::Array(a) => a,
        v => panic!("dialogs --json is not an array: {v}"),
    }
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

#[test]
fn calls_complete_through_the_edge_and_leave_no_dialog() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    const CALLS: u32 = 50;
    write_ua_scenario(&dir, &[], 0);
    let pbx = Pbx::start(&lab, &dir, 40);
    std::thread::sleep(Duration::from_millis(300));
    let ua = common::run_capture(&mut ua_command(&lab, &dir, CALLS, 50, 30));
    let pbx = pbx.finish();
    assert!(ua.status.success(), "UA sipp: {}", text(&ua));
    assert!(pbx.status.success(), "PBX sipp: {}", text(&pbx));
    assert!(
        wait_until(Duration::from_secs(5), || dialogs(&lab).is_empty()),
        "after {CALLS} calls `sip-ka dialogs` still lists {:?}",
        dialogs(&lab)
    );
    cleanup(&dir);
    eprintln!(
        "calls_complete_through_the_edge_and_leave_no_dialog: {:?}",
        started.elapsed()
    );
}

/// INFOS INFO keep-alives, then one UPDATE, MESSAGE and OPTIONS each, all
/// without a body inside the dialog: the edge answers every one (the PBX
/// scenario would fail on any of them) and XDP counts every one.
#[test]
fn in_dialog_keepalives_are_answered_by_the_edge_and_counted_by_xdp() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    const INFOS: usize = 7;
    let mut methods = vec!["INFO"; INFOS];
    methods.extend(["UPDATE", "MESSAGE", "OPTIONS"]);
    let total = methods.len();
    write_ua_scenario(&dir, &methods, 3000);
    let pbx = Pbx::start(&lab, &dir, 30);
    std::thread::sleep(Duration::from_millis(300));
    let ua = ua_command(&lab, &dir, 1, 1, 20)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the UA");
    // While the UA holds the call after its keep-alives: one confirmed
    // dialog with all of them counted by the XDP program.
    let mut last = Vec::new();
    let seen = wait_until(Duration::from_secs(10), || {
        last = dialogs(&lab);
        last.len() == 1
            && last[0]["state"] == "confirmed"
            && last[0]["ka_count"] == total
            && last[0]["last_ka_secs_ago"].is_number()
    });
    let ua = ua.wait_with_output().expect("UA");
    let pbx = pbx.finish();
    assert!(
        seen,
        "want one confirmed dialog with ka_count {total}, got {last:?}"
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
        "in_dialog_keepalives_are_answered_by_the_edge_and_counted_by_xdp: {:?}",
        started.elapsed()
    );
}

#[test]
fn options_and_unknown_dialogs_follow_the_pbx_health() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let local = SocketAddr::new(CLIENT_V4.into(), 5070);
    let sock = client_socket(&lab, local);
    let mut pbx = Pbx::start(&lab, &dir, 60);

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

    // OPTIONS to the edge itself: 200 with Allow, Accept, Supported.
    let opt = sip_request("OPTIONS", "sip:198.18.0.1:5060", "", "opt-edge", local);
    let r = answer_to(&sock, &opt).expect("no answer to OPTIONS to the edge");
    assert_eq!(status(&r), Some(200), "{r}");
    for h in ["\r\nAllow: ", "\r\nAccept: ", "\r\nSupported:"] {
        assert!(r.contains(h), "no {h:?} in {r}");
    }

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
    cleanup(&dir);
    eprintln!(
        "options_and_unknown_dialogs_follow_the_pbx_health: {:?}",
        started.elapsed()
    );
}

#[test]
fn reinvite_without_sdp_reaches_the_pbx_and_the_pbx_bye_reaches_the_ua() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let pbx = Pbx::start_with(&lab, &dir, "pbx_reinvite.xml", 30);
    std::thread::sleep(Duration::from_millis(300));
    let ua = common::run_capture(&mut ua_command_with(
        &lab,
        &dir,
        "ua_reinvite.xml",
        1,
        1,
        20,
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
        "reinvite_without_sdp_reaches_the_pbx_and_the_pbx_bye_reaches_the_ua: {:?}",
        started.elapsed()
    );
}

#[test]
fn early_dialog_then_cancel_leaves_no_dialog() {
    let started = Instant::now();
    let (lab, dir) = edge_lab();
    let pbx = Pbx::start_with(&lab, &dir, "pbx_cancel.xml", 30);
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
