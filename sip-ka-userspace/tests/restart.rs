//! Edge mode across a `kill -9` of the daemon (and `--dialog-idle-timeout`,
//! the other clock that ends dialogs), in the lab: sipp as 100 UAs
//! in the client namespace holding calls through the edge to a sipp PBX in
//! the server namespace, a steady sender of CRLF pings and STUN Binding
//! requests, and one call whose short session timer falls due after the
//! restart.
//!
//! What must hold: no keep-alive goes unanswered (XDP answers while no
//! daemon runs: the link is pinned), the restarted daemon lists the same
//! dialogs with the same session expiries and the keep-alive counts XDP
//! kept in DIALOGS, the short session expires on time (and its call is
//! reaped with BYEs built from the restored dialog), and the held calls
//! end with BYEs through the restarted edge, leaving no dialog.
//!
//! Neither daemon is given `--keep-attached`: that flag only decides what
//! a clean exit does, and `kill -9` runs nothing at exit; the XDP link is
//! pinned from the start, so the program stays attached (asserted). The
//! second daemon detaches when the lab stops it (SIGTERM).
//!
//! Needs root, sipp, and the other lab tools; fails and says so otherwise.
//! A plain `cargo test` ignores these tests; `cargo xtask test` (or
//! `-- --include-ignored`) runs them.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    client_socket,
    edge::{edge_addr, sipp_in, Sipp, PBX_PORT},
    exchange, full_id, parse_success, text, txid, wait_until, ANSWER_WAIT,
};
use sip_ka::lab::{packet::Stun, Lab, CLIENT_V4, SERVER_V4};

const UA_PORT: u16 = 5062;
const SHORT_UA_PORT: u16 = 5064;
/// Calls held across the restart.
const CALLS: usize = 100;
/// Session-Expires of the one call left to expire after the restart (s).
const SHORT_SE: u64 = 10;
/// Session-Expires the edge inserts into the held calls (s): they never
/// expire during the test.
const LONG_SE: u64 = 1800;
/// How long the held calls last after their keep-alive (ms).
const HOLD_MS: u64 = 13_000;
/// Pace of the keep-alive sender.
const PING_EVERY: Duration = Duration::from_millis(5);

/// Removes the scratch and state directories however the test ends.
struct Dirs {
    scratch: PathBuf,
    state: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// `sip-ka dialogs --json`, by Call-ID hash.
fn dialogs(lab: &Lab) -> BTreeMap<String, serde_json::Value> {
    common::edge::dialogs(lab)
        .into_iter()
        .map(|d| (d["call_id_hash"].as_str().unwrap_or("").to_string(), d))
        .collect()
}

/// The daemon's command line (both runs use the same one).
fn daemon_args(state: &Path) -> Vec<String> {
    let (se, state) = (LONG_SE.to_string(), state.to_string_lossy().into_owned());
    common::edge::edge_args(&[
        "--lab",
        "--timers-min-se",
        "2",
        "--timers-sess-expires",
        &se,
        "--reap-expired",
        "--state-dir",
        &state,
    ])
}

/// One keep-alive sent and whether its answer came.
struct Ping {
    at: Instant,
    stun: bool,
    answered: bool,
}

/// Sends a CRLF ping and a STUN Binding request in turn every
/// [`PING_EVERY`] until `stop` (or 60 s, or 12000 pings), each waiting for
/// its answer up to [`ANSWER_WAIT`].
fn keepalive_sender(sock: std::net::UdpSocket, stop: Arc<AtomicBool>) -> Vec<Ping> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pings = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 12_000 {
        n += 1;
        let at = Instant::now();
        let stun = n.is_multiple_of(2);
        let answered = if stun {
            let id = txid(n);
            let req = Stun::binding_request(id)
                .software("sip-ka restart test")
                .fingerprint()
                .build();
            exchange(&sock, edge_addr(), &req, ANSWER_WAIT)
                .and_then(|(r, _)| parse_success(&r).ok())
                .is_some_and(|s| s.id == full_id(id))
        } else {
            exchange(&sock, edge_addr(), b"\r\n\r\n", ANSWER_WAIT)
                .is_some_and(|(r, _)| r == b"\r\n")
        };
        pings.push(Ping { at, stun, answered });
        std::thread::sleep(PING_EVERY);
    }
    pings
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn dialogs_and_session_timers_survive_kill_9_and_keepalives_stay_answered() {
    let started = Instant::now();
    let mut lab = common::lab();
    let dirs = Dirs {
        scratch: std::env::temp_dir().join(format!("{}-restart", lab.name)),
        state: std::env::temp_dir().join(format!("{}-state", lab.name)),
    };
    let _ = std::fs::remove_dir_all(&dirs.state);
    std::fs::create_dir_all(&dirs.scratch).expect("scratch dir");
    let args = daemon_args(&dirs.state);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::start(&mut lab, &args);

    // Scenarios: the held calls support `timer` (the edge inserts
    // Session-Expires and, the PBX saying nothing, refresher=uac), send
    // one in-dialog INFO (counted by XDP in DIALOGS, answered by the edge)
    // and hold; the short call offers SHORT_SE and waits for the edge's
    // BYE when it expires.
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    let read = |f: &str| {
        std::fs::read_to_string(here.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}"))
    };
    let ka = read("keepalive.xml")
        .replace("CSEQ", "2")
        .replace("METHOD", "INFO");
    // After the hold (the restart happens during it), one more INFO: the
    // restarted edge answers it 200 only if it knows the dialog again (481
    // otherwise, which fails the UA's call; the PBX fails on any INFO).
    let ka_after = read("keepalive.xml")
        .replace("CSEQ", "3")
        .replace("METHOD", "INFO");
    let held = read("ua_call.xml")
        .replace(
            "CSeq: 1 INVITE\n",
            "CSeq: 1 INVITE\n      Supported: timer\n",
        )
        .replace("<!-- IN_DIALOG -->", &ka)
        .replace(
            "<pause milliseconds=\"HOLD_MS\"/>",
            &format!("<pause milliseconds=\"HOLD_MS\"/>\n{ka_after}"),
        )
        .replace("HOLD_MS", &HOLD_MS.to_string());
    assert!(held.contains("Supported: timer") && held.matches("INFO sip:").count() == 2);
    std::fs::write(dirs.scratch.join("ua_held.xml"), held).expect("writing ua_held.xml");
    let short = read("ua_expire.xml").replace(
        "CSeq: 1 INVITE\n",
        &format!("CSeq: 1 INVITE\n      Supported: timer\n      Session-Expires: {SHORT_SE}\n"),
    );
    assert!(short.contains("Session-Expires: "));
    std::fs::write(dirs.scratch.join("ua_short.xml"), short).expect("writing ua_short.xml");
    std::fs::write(dirs.scratch.join("pbx.xml"), read("pbx_uas.xml")).expect("writing pbx.xml");

    // The PBX waits for each BYE for as long as the test may take.
    let mut cmd = sipp_in(&lab, false, &dirs.scratch, 60);
    cmd.args(["-sf", "pbx.xml", "-i", &SERVER_V4.to_string()])
        .args(["-p", &PBX_PORT.to_string(), "-recv_timeout", "60000"]);
    let pbx = Sipp::spawn(cmd, "PBX");
    std::thread::sleep(Duration::from_millis(300));

    let mut cmd = sipp_in(&lab, true, &dirs.scratch, 45);
    cmd.args(["-sf", "ua_held.xml", "-s", "service"])
        .args(["-m", &CALLS.to_string(), "-r", "100", "-l", "200"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "10000", "-timeout", "45s"])
        .arg(edge_addr().to_string());
    let uas = Sipp::spawn(cmd, "held UAs");

    // The held calls: confirmed, with the inserted timer and their INFO
    // counted by XDP.
    let mut before = BTreeMap::new();
    let held_up = wait_until(Duration::from_secs(10), || {
        before = dialogs(&lab);
        before.len() == CALLS
            && before.values().all(|d| {
                d["state"] == "confirmed"
                    && d["session_interval_secs"] == LONG_SE
                    && d["refresher"] == "uac"
                    && d["ka_count"] == 1
            })
    });
    assert!(
        held_up,
        "want {CALLS} confirmed dialogs with SE {LONG_SE} and one keep-alive each, got {} : {:?}",
        before.len(),
        before.values().take(3).collect::<Vec<_>>()
    );

    // The short call.
    let mut cmd = sipp_in(&lab, true, &dirs.scratch, 30);
    cmd.args(["-sf", "ua_short.xml", "-s", "service", "-m", "1"])
        .args([
            "-i",
            &CLIENT_V4.to_string(),
            "-p",
            &SHORT_UA_PORT.to_string(),
        ])
        .args(["-recv_timeout", "20000", "-timeout", "30s"])
        .arg(edge_addr().to_string());
    let short_ua = Sipp::spawn(cmd, "short UA");
    let mut short_hash = String::new();
    let short_up = wait_until(Duration::from_secs(5), || {
        before = dialogs(&lab);
        match before
            .iter()
            .find(|(_, d)| d["session_interval_secs"] == SHORT_SE)
        {
            Some((h, d)) if d["state"] == "confirmed" && before.len() == CALLS + 1 => {
                short_hash = h.clone();
                true
            }
            _ => false,
        }
    });
    let confirmed = Instant::now();
    assert!(
        short_up,
        "the short call (SE {SHORT_SE}) is not confirmed: {} dialogs",
        before.len()
    );

    // Keep-alives from now until after the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let sock = client_socket(&lab, "198.18.0.2:0".parse().expect("addr"));
        let stop = stop.clone();
        std::thread::spawn(move || keepalive_sender(sock, stop))
    };
    std::thread::sleep(Duration::from_millis(700));

    // kill -9: nothing runs at exit; the pinned link keeps XDP attached.
    let pid = lab.daemon_pid().expect("daemon pid");
    let killed_at = Instant::now();
    assert_eq!(
        unsafe { libc::kill(pid as i32, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
    let status = lab.stop_daemon().expect("reaping the killed daemon");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    assert_eq!(
        common::attached_mode(&lab),
        "native",
        "XDP still attached after kill -9"
    );
    // A record cut short, as a crash in the middle of a write would leave
    // it (kill -9 itself cannot: one write() per record): skipped.
    {
        use std::io::Write as _;
        let journal = dirs.state.join("journal");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap_or_else(|e| panic!("opening {}: {e}", journal.display()));
        f.write_all(b"{\"op\":\"up\",\"call_id\":\"torn")
            .expect("appending a torn record");
    }
    std::thread::sleep(Duration::from_millis(300));
    common::start(&mut lab, &args);
    let ready_at = Instant::now();

    // Every dialog is back, with the same session expiry, its keep-alive
    // count kept (the DIALOGS entries were not cleared), and the timer.
    let after = dialogs(&lab);
    let restored_at = confirmed.elapsed();
    assert!(
        restored_at < Duration::from_secs(SHORT_SE - 2),
        "the restart took too long to test the expiry: {restored_at:?}"
    );
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "dialogs after the restart differ"
    );
    for (h, d) in &after {
        let b = &before[h];
        for field in [
            "state",
            "session_interval_secs",
            "refresher",
            "session_expires_unix",
            "ka_count",
        ] {
            assert_eq!(d[field], b[field], "dialog {h}: {field} {d} vs before {b}");
        }
        assert!(d["last_ka_secs_ago"].is_number() || h == &short_hash, "{d}");
    }
    let mut restored = None;
    assert!(
        wait_until(Duration::from_secs(2), || {
            restored = common::counters(&lab).get("edge_dialogs_restored").copied();
            restored == Some(CALLS as u64 + 1)
        }),
        "edge_dialogs_restored {restored:?}, want {}",
        CALLS + 1
    );

    // The short session expires at SE after its confirmation, from the
    // restarted daemon's restored timer.
    let gone = wait_until(Duration::from_secs(SHORT_SE + 2), || {
        !dialogs(&lab).contains_key(&short_hash)
    });
    let expired_after = confirmed.elapsed();
    assert!(gone, "the short session did not expire after the restart");
    assert!(
        expired_after >= Duration::from_millis(SHORT_SE * 1000 - 1000)
            && expired_after <= Duration::from_millis(SHORT_SE * 1000 + 1000),
        "expired {expired_after:?} after confirmation (SE {SHORT_SE} s)"
    );
    // Counted (STATS is published every 500 ms).
    let mut c = BTreeMap::new();
    let counted = wait_until(Duration::from_secs(2), || {
        c = common::counters(&lab);
        c.get("edge_sessions_expired") == Some(&1) && c.get("edge_sessions_reaped") == Some(&1)
    });
    assert!(
        counted,
        "edge_sessions_expired {:?}, edge_sessions_reaped {:?} (want 1 each)",
        c.get("edge_sessions_expired"),
        c.get("edge_sessions_reaped")
    );
    // Its UA got the edge's BYE (built from the restored dialog).
    let short_out = short_ua.wait();
    assert!(
        short_out.status.success(),
        "the short call's UA got no BYE after the restart: {}",
        text(&short_out)
    );

    stop.store(true, Ordering::Relaxed);
    let pings = sender.join().expect("sender thread");
    let unanswered: Vec<&Ping> = pings.iter().filter(|p| !p.answered).collect();
    let down = pings
        .iter()
        .filter(|p| p.at >= killed_at && p.at <= ready_at)
        .count();
    let stun = pings.iter().filter(|p| p.stun).count();
    assert!(
        pings.len() >= 500 && stun >= 250,
        "only {} keep-alives sent ({stun} STUN)",
        pings.len()
    );
    assert!(
        down >= 50,
        "only {down} keep-alives sent while no daemon ran"
    );
    assert!(
        unanswered.is_empty(),
        "{} of {} keep-alives unanswered across the restart (first at {:?} after the kill, stun={})",
        unanswered.len(),
        pings.len(),
        unanswered[0].at.saturating_duration_since(killed_at),
        unanswered[0].stun
    );

    // The held calls end: BYE through the restarted edge, 200 back.
    let uas_out = uas.wait();
    assert!(uas_out.status.success(), "held UAs: {}", text(&uas_out));
    let mut left = BTreeMap::new();
    let empty = wait_until(Duration::from_secs(5), || {
        left = dialogs(&lab);
        left.is_empty()
    });
    assert!(empty, "after the BYEs: {} dialogs left", left.len());
    std::thread::sleep(Duration::from_millis(200));
    let pbx_out = pbx.finish();
    assert!(pbx_out.status.success(), "PBX: {}", text(&pbx_out));
    drop(dirs);
    eprintln!(
        "dialogs_and_session_timers_survive_kill_9_and_keepalives_stay_answered: {:?} \
         ({} keep-alives, {down} while no daemon ran, daemon down for {:?}, \
         expiry {expired_after:?} after confirmation)",
        started.elapsed(),
        pings.len(),
        ready_at - killed_at
    );
}

/// Idle limit of the idle test (s).
const IDLE_SECS: u64 = 3;

/// `--dialog-idle-timeout` through the daemon: a call with no traffic
/// after its ACK is ended IDLE_SECS after it was confirmed, with a BYE to
/// both sides (`--reap-expired`; the silent UA's scenario waits for it and
/// the PBX's would fail without it); a call whose UA sends an in-dialog
/// INFO keep-alive every IDLE/3 s (answered by the edge, counted by XDP)
/// stays up past twice the limit and ends with its own BYE.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn dialog_idle_timeout_ends_a_silent_call_and_spares_a_kept_alive_one() {
    let started = Instant::now();
    let mut lab = common::lab();
    let dirs = Dirs {
        scratch: std::env::temp_dir().join(format!("{}-idle", lab.name)),
        state: std::env::temp_dir().join(format!("{}-idle-state", lab.name)),
    };
    let _ = std::fs::remove_dir_all(&dirs.state);
    std::fs::create_dir_all(&dirs.scratch).expect("scratch dir");
    let mut args = daemon_args(&dirs.state);
    args.extend(["--dialog-idle-timeout".to_string(), IDLE_SECS.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::start(&mut lab, &args);

    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    let read = |f: &str| {
        std::fs::read_to_string(here.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}"))
    };
    // Kept alive: INFO every IDLE/3 s for 8/3 x IDLE s, then BYE.
    let rounds = 8;
    let blocks: String = (0..rounds)
        .map(|i| {
            format!(
                "<pause milliseconds=\"{}\"/>\n{}",
                IDLE_SECS * 1000 / 3,
                read("keepalive.xml")
                    .replace("CSEQ", &(2 + i).to_string())
                    .replace("METHOD", "INFO")
            )
        })
        .collect();
    let kept = read("ua_call.xml")
        .replace("<!-- IN_DIALOG -->", &blocks)
        .replace("HOLD_MS", "0");
    std::fs::write(dirs.scratch.join("ua_kept.xml"), kept).expect("writing ua_kept.xml");
    std::fs::write(dirs.scratch.join("ua_silent.xml"), read("ua_expire.xml"))
        .expect("writing ua_silent.xml");
    std::fs::write(dirs.scratch.join("pbx.xml"), read("pbx_uas.xml")).expect("writing pbx.xml");

    let mut cmd = sipp_in(&lab, false, &dirs.scratch, 40);
    cmd.args(["-sf", "pbx.xml", "-i", &SERVER_V4.to_string()])
        .args(["-p", &PBX_PORT.to_string(), "-recv_timeout", "30000"]);
    let pbx = Sipp::spawn(cmd, "PBX");
    std::thread::sleep(Duration::from_millis(300));
    let ua = |scenario: &str, port: u16, what: &'static str| {
        let mut cmd = sipp_in(&lab, true, &dirs.scratch, 30);
        cmd.args(["-sf", scenario, "-s", "service", "-m", "1"])
            .args(["-i", &CLIENT_V4.to_string(), "-p", &port.to_string()])
            .args(["-recv_timeout", "15000", "-timeout", "30s"])
            .arg(edge_addr().to_string());
        Sipp::spawn(cmd, what)
    };
    let kept_ua = ua("ua_kept.xml", UA_PORT, "kept-alive UA");
    let silent_ua = ua("ua_silent.xml", SHORT_UA_PORT, "silent UA");

    let mut last = BTreeMap::new();
    let both = wait_until(Duration::from_secs(5), || {
        last = dialogs(&lab);
        last.len() == 2 && last.values().all(|d| d["state"] == "confirmed")
    });
    let confirmed = Instant::now();
    assert!(both, "want two confirmed dialogs: {last:?}");

    // The silent call goes at IDLE after confirmation (± 1 s).
    let one = wait_until(Duration::from_secs(IDLE_SECS + 2), || {
        last = dialogs(&lab);
        last.len() == 1
    });
    let ended_after = confirmed.elapsed();
    assert!(one, "the silent call was not ended: {last:?}");
    assert!(
        ended_after >= Duration::from_millis(IDLE_SECS * 1000 - 1000)
            && ended_after <= Duration::from_millis(IDLE_SECS * 1000 + 1000),
        "ended {ended_after:?} after confirmation (idle limit {IDLE_SECS} s)"
    );
    let silent = silent_ua.wait();
    assert!(
        silent.status.success(),
        "the silent UA got no BYE from the edge: {}",
        text(&silent)
    );
    let mut c = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(2), || {
            c = common::counters(&lab);
            c.get("edge_dialogs_idle_ended") == Some(&1)
        }),
        "edge_dialogs_idle_ended {:?}",
        c.get("edge_dialogs_idle_ended")
    );

    // The kept-alive call lives past twice the limit, then ends by BYE.
    std::thread::sleep(
        Duration::from_secs(2 * IDLE_SECS).saturating_sub(confirmed.elapsed())
            + Duration::from_millis(100),
    );
    let still = dialogs(&lab);
    assert_eq!(still.len(), 1, "kept-alive call at 2 x idle: {still:?}");
    let kept = kept_ua.wait();
    assert!(kept.status.success(), "kept-alive UA: {}", text(&kept));
    assert!(
        wait_until(Duration::from_secs(3), || dialogs(&lab).is_empty()),
        "after the BYE: {:?}",
        dialogs(&lab)
    );
    let c = common::counters(&lab);
    assert_eq!(
        c.get("edge_dialogs_idle_ended"),
        Some(&1),
        "the kept-alive call was counted as idle"
    );
    std::thread::sleep(Duration::from_millis(200));
    let pbx_out = pbx.finish();
    assert!(
        pbx_out.status.success(),
        "PBX (no BYE for the idle call?): {}",
        text(&pbx_out)
    );
    drop(dirs);
    eprintln!(
        "dialog_idle_timeout_ends_a_silent_call_and_spares_a_kept_alive_one: {:?} \
         (silent call ended {ended_after:?} after confirmation)",
        started.elapsed()
    );
}
