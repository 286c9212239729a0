//! RFC 4028 at the edge (proxy role), message by message through
//! [`Edge::handle`], with expiry driven by [`Edge::expire`] on a virtual
//! clock; then the same dialogs across a restart (state directory) and
//! the idle clock (`--dialog-idle-timeout`).
//!
//! The rows of RFC 4028 sections 8 and 9 that bind a proxy:
//!
//! | row | test |
//! |---|---|
//! | 8.1: SE below the proxy's Min-SE, UAC supports timer: 422 with Min-SE | `s8_1_below_min_se_with_timer_gets_422_with_min_se` |
//! | 8.1: same, UAC without timer: SE raised, Min-SE inserted or raised | `s8_1_below_min_se_without_timer_is_raised_with_min_se` |
//! | 8.1: SE absent: inserted (at least the request's Min-SE), no refresher | `s8_1_absent_session_expires_is_inserted_without_refresher` |
//! | 8.1: acceptable SE and its refresher left alone | `s8_1_acceptable_session_expires_and_refresher_are_untouched` |
//! | 8.2: 2xx without SE, UAC supports timer: SE with refresher=uac, Require: timer | `s8_2_2xx_without_se_gets_refresher_uac_and_require_timer` |
//! | 8.2 / 9: 2xx without SE, UAC without timer: no timer, 2xx untouched | `s8_2_2xx_without_se_and_uac_without_timer_is_untouched` |
//! | 8.2 / 9: the refresher the UAS chose is not rewritten | `s9_refresher_chosen_by_the_uas_is_not_rewritten` |
//! | 10: refresh by re-INVITE (with or without SDP) restarts the timer | `refresh_by_reinvite_restarts_the_session_timer` |
//! | 10: refresh by UPDATE restarts the timer | `refresh_by_update_restarts_the_session_timer` |
//! | 8.3: expiry not before SE, at most one tick (1 ms) after | `expiry_falls_at_the_session_interval_not_before` |
//! | 8.3 / 3261 12.2.2: a refresh after expiry gets 481 | `refresh_after_expiry_gets_481` |
//! | 4 / 7.1: compact form `x` (and `k` for Supported) | `compact_form_x_is_understood_both_ways` |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use sip_ka_common::maps::{DialogValue, DIALOG_CONFIRMED};

use super::{
    config::{test_config, DialogOptions, EdgeConfig},
    dialog::{DialogSink, NoSink},
    persist,
    state::Edge,
};
use crate::util::clock::virtual_clock::{advance, now};
use crate::{
    edge::session_timer::TimerConfig,
    sip::{parse_message, Framing, Limits, Method, Refresher, SipMessage},
};

const EDGE: &str = "198.18.0.1:5060";
const PBX: &str = "198.18.0.1:5080";
const UA: &str = "198.18.0.2:5062";
const CALL: &str = "st1@198.18.0.2";
/// The edge's floor and the Session-Expires it inserts.
const MIN_SE: u32 = 90;
const SE: u32 = 1800;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn cfg(reap: bool) -> EdgeConfig {
    let mut c = test_config(addr(EDGE), addr(PBX));
    c.timers = TimerConfig::new(MIN_SE, SE, false).unwrap();
    c.reap_expired = reap;
    c
}

fn edge() -> Edge {
    Edge::new(cfg(false), Box::new(NoSink), None, now())
}

fn parse(b: &[u8]) -> SipMessage {
    parse_message(b, Framing::Datagram, &Limits::default()).unwrap()
}

/// A request from the UA; `extra` are header lines (CRLF-terminated).
fn ua_request(method: &str, cseq: u32, in_dialog: bool, extra: &str, body: &str) -> Vec<u8> {
    let to_tag = if in_dialog { ";tag=pbx1" } else { "" };
    format!(
        "{method} sip:service@198.18.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK{method}{cseq};rport\r\n\
         From: <sip:ua@198.18.0.2>;tag=ua1\r\n\
         To: <sip:service@198.18.0.1>{to_tag}\r\n\
         Call-ID: {CALL}\r\n\
         CSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:ua@198.18.0.2:5062>\r\n\
         {extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const SDP: &str = "v=0\r\n";

/// Sends a UA request into the edge: what came out and where.
fn from_ua(e: &Edge, raw: &[u8]) -> (SipMessage, SocketAddr) {
    let (out, dest) = e
        .handle(raw, addr(UA), addr(EDGE), now())
        .expect("an answer or a forward");
    (parse(&out), dest.peer())
}

/// The PBX answers what the edge forwarded with `code` and `extra`
/// headers; returns the response as the UA gets it.
fn pbx_answers(e: &Edge, fwd: &SipMessage, code: u16, extra: &[(&str, &str)]) -> SipMessage {
    let mut r = fwd.response(code, "X", Some("pbx1")).unwrap();
    r.push_header("Contact", "<sip:service@198.18.0.1:5080>");
    for (k, v) in extra {
        r.push_header(k, *v);
    }
    let (out, dest) = e
        .handle(&r.to_bytes(), addr(PBX), addr(EDGE), now())
        .expect("the response goes on");
    assert_eq!(dest.peer(), addr(UA));
    parse(&out)
}

fn hash() -> u64 {
    sip_ka_common::callid_hash(CALL.as_bytes())
}

fn expires_at(e: &Edge) -> Option<u64> {
    e.dialogs().timers().expires_at_ms(hash())
}

/// INVITE (with `extra`), 200 with `ok_extra`: the dialog confirmed.
/// Returns the 200 as the UA got it and the clock before and after.
fn call(e: &Edge, extra: &str, ok_extra: &[(&str, &str)]) -> (SipMessage, u64, u64) {
    let (fwd, dest) = from_ua(e, &ua_request("INVITE", 1, false, extra, SDP));
    assert_eq!(dest, addr(PBX));
    let before = now();
    let ok = pbx_answers(e, &fwd, 200, ok_extra);
    let after = now();
    assert!(e.dialogs().known(CALL));
    (ok, before, after)
}

// ----- 8.1: requests -----

#[test]
fn s8_1_below_min_se_with_timer_gets_422_with_min_se() {
    let e = edge();
    for method in ["INVITE", "UPDATE"] {
        let in_dialog = method == "UPDATE";
        let (r, dest) = from_ua(
            &e,
            &ua_request(
                method,
                1,
                in_dialog,
                "Supported: timer\r\nSession-Expires: 60\r\n",
                "",
            ),
        );
        assert_eq!(dest, addr(UA), "{method}: answered by the edge");
        assert_eq!(r.status_code(), Some(422), "{method}");
        assert_eq!(r.min_se().unwrap().unwrap().delta, MIN_SE, "{method}");
        assert!(r.to_tag().is_some(), "{method}: 422 without To tag");
        assert_eq!(r.vias().unwrap().len(), 1, "{method}: our Via left in");
    }
    assert_eq!(e.counters.timer_rejects.load(Ordering::Relaxed), 2);
    assert_eq!(e.counters.requests_forwarded.load(Ordering::Relaxed), 0);
    assert!(e.dialogs().is_empty());
}

#[test]
fn s8_1_below_min_se_without_timer_is_raised_with_min_se() {
    let e = edge();
    let (f, dest) = from_ua(
        &e,
        &ua_request(
            "INVITE",
            1,
            false,
            "Session-Expires: 60;refresher=uac\r\n",
            SDP,
        ),
    );
    assert_eq!(dest, addr(PBX));
    let se = f.session_expires().unwrap().unwrap();
    assert_eq!((se.delta, se.refresher), (MIN_SE, Some(Refresher::Uac)));
    assert_eq!(f.min_se().unwrap().unwrap().delta, MIN_SE);
    // A lower Min-SE of the UAC's is raised, not duplicated.
    let e = edge();
    let (f, _) = from_ua(
        &e,
        &ua_request(
            "INVITE",
            1,
            false,
            "Session-Expires: 60\r\nMin-SE: 30\r\n",
            SDP,
        ),
    );
    assert_eq!(f.session_expires().unwrap().unwrap().delta, MIN_SE);
    assert_eq!(f.header_values("Min-SE").collect::<Vec<_>>(), ["90"]);
}

#[test]
fn s8_1_absent_session_expires_is_inserted_without_refresher() {
    let e = edge();
    let (f, _) = from_ua(&e, &ua_request("INVITE", 1, false, "", SDP));
    let se = f.session_expires().unwrap().unwrap();
    assert_eq!((se.delta, se.refresher), (SE, None));
    // Never below the request's own Min-SE.
    let e = edge();
    let (f, _) = from_ua(&e, &ua_request("INVITE", 1, false, "Min-SE: 3600\r\n", SDP));
    assert_eq!(f.session_expires().unwrap().unwrap().delta, 3600);
}

#[test]
fn s8_1_acceptable_session_expires_and_refresher_are_untouched() {
    for extra in [
        "Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n",
        "Session-Expires: 90;refresher=uac\r\nMin-SE: 90\r\n",
        "Supported: timer\r\nSession-Expires: 7200\r\n",
    ] {
        let e = edge();
        let (f, _) = from_ua(&e, &ua_request("INVITE", 1, false, extra, SDP));
        let sent = parse(&ua_request("INVITE", 1, false, extra, SDP));
        assert_eq!(
            f.header_values("Session-Expires").collect::<Vec<_>>(),
            sent.header_values("Session-Expires").collect::<Vec<_>>(),
            "{extra}"
        );
        assert_eq!(
            f.header_values("Min-SE").collect::<Vec<_>>(),
            sent.header_values("Min-SE").collect::<Vec<_>>(),
            "{extra}"
        );
    }
}

// ----- 8.2 / 9: responses -----

#[test]
fn s8_2_2xx_without_se_gets_refresher_uac_and_require_timer() {
    let e = edge();
    let (ok, before, after) = call(&e, "Supported: timer\r\n", &[]);
    let se = ok.session_expires().unwrap().unwrap();
    assert_eq!((se.delta, se.refresher), (SE, Some(Refresher::Uac)));
    assert!(ok.require().unwrap().contains("timer"));
    let (s, _) = e.dialogs().session(CALL, now()).unwrap();
    assert_eq!((s.interval, s.refresher), (SE, Some(Refresher::Uac)));
    let at = expires_at(&e).unwrap();
    let se_ms = u64::from(SE) * 1_000;
    assert!(at >= before + se_ms && at <= after + se_ms, "{at}");
}

#[test]
fn s8_2_2xx_without_se_and_uac_without_timer_is_untouched() {
    let e = edge();
    let (ok, _, _) = call(&e, "", &[]);
    assert!(ok.session_expires().unwrap().is_none());
    assert!(!ok.has_header("Require"));
    let (s, left) = e.dialogs().session(CALL, now()).unwrap();
    assert_eq!((s.interval, left), (0, None));
    assert!(e.expire(now() + 10 * 86_400_000, 0, addr(EDGE)).is_empty());
    assert!(e.dialogs().known(CALL));
}

#[test]
fn s9_refresher_chosen_by_the_uas_is_not_rewritten() {
    let e = edge();
    let (ok, _, _) = call(
        &e,
        "Supported: timer\r\n",
        &[
            ("Session-Expires", "900;refresher=uas"),
            ("Require", "timer"),
        ],
    );
    assert_eq!(ok.header("Session-Expires"), Some("900;refresher=uas"));
    assert_eq!(ok.header_values("Require").count(), 1);
    let (s, _) = e.dialogs().session(CALL, now()).unwrap();
    assert_eq!((s.interval, s.refresher), (900, Some(Refresher::Uas)));
}

// ----- refreshes and expiry -----

/// An in-dialog refresh from the UA, answered 200 by the PBX with the
/// session; returns the clock before and after the 200 went through.
fn refresh(e: &Edge, method: &str, cseq: u32, sdp: bool) -> (u64, u64) {
    let body = if sdp { SDP } else { "" };
    let (f, dest) = from_ua(
        e,
        &ua_request(
            method,
            cseq,
            true,
            "Supported: timer\r\nSession-Expires: 1800;refresher=uac\r\n",
            body,
        ),
    );
    assert_eq!(dest, addr(PBX), "{method}: a refresh goes to the PBX");
    let want = if method == "INVITE" {
        Method::Invite
    } else {
        Method::Update
    };
    assert_eq!(f.method(), Some(&want));
    let before = now();
    let ok = pbx_answers(
        e,
        &f,
        200,
        &[
            ("Session-Expires", "1800;refresher=uac"),
            ("Require", "timer"),
        ],
    );
    assert_eq!(ok.status_code(), Some(200));
    (before, now())
}

fn refresh_restarts(method: &str) {
    let e = edge();
    call(&e, "Supported: timer\r\n", &[]);
    let first = expires_at(&e).unwrap();
    for (cseq, sdp) in [(2, true), (3, false)] {
        advance(5);
        let prev = expires_at(&e).unwrap();
        let (before, after) = refresh(&e, method, cseq, sdp);
        let at = expires_at(&e).unwrap();
        let se_ms = u64::from(SE) * 1_000;
        assert!(
            at >= before + se_ms && at <= after + se_ms && at > prev,
            "{method} {cseq}: {at} vs [{before}, {after}] + SE"
        );
        // The old deadline passes without expiry.
        assert!(e.expire(prev, 0, addr(EDGE)).is_empty(), "{method} {cseq}");
    }
    assert!(expires_at(&e).unwrap() > first);
    assert!(e.dialogs().known(CALL));
}

#[test]
fn refresh_by_reinvite_restarts_the_session_timer() {
    refresh_restarts("INVITE");
}

#[test]
fn refresh_by_update_restarts_the_session_timer() {
    refresh_restarts("UPDATE");
}

#[test]
fn expiry_falls_at_the_session_interval_not_before() {
    for reap in [false, true] {
        let e = Edge::new(cfg(reap), Box::new(NoSink), None, now());
        let (_, before, after) = call(&e, "Supported: timer\r\n", &[]);
        let at = expires_at(&e).unwrap();
        let se_ms = u64::from(SE) * 1_000;
        assert!(at >= before + se_ms && at <= after + se_ms);
        assert!(e.expire(at - 1, 0, addr(EDGE)).is_empty(), "before SE");
        assert!(e.dialogs().known(CALL));
        let byes = e.expire(at, 0, addr(EDGE));
        assert!(!e.dialogs().known(CALL), "still there at SE");
        assert_eq!(e.counters.sessions_expired.load(Ordering::Relaxed), 1);
        if reap {
            let dests: Vec<SocketAddr> = byes.iter().map(|(_, d)| d.peer()).collect();
            assert_eq!(dests, vec![addr(PBX), addr(UA)]);
            assert_eq!(e.counters.sessions_reaped.load(Ordering::Relaxed), 1);
        } else {
            assert!(byes.is_empty(), "8.3: a proxy sends no BYE");
        }
        // Once only.
        assert!(e.expire(at + 3_600_000, 0, addr(EDGE)).is_empty());
        assert_eq!(e.counters.sessions_expired.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn refresh_after_expiry_gets_481() {
    let e = edge();
    call(&e, "Supported: timer\r\n", &[]);
    let at = expires_at(&e).unwrap();
    e.expire(at, 0, addr(EDGE));
    for (method, cseq, body) in [("INVITE", 2, SDP), ("UPDATE", 3, "")] {
        let (r, dest) = from_ua(
            &e,
            &ua_request(
                method,
                cseq,
                true,
                "Supported: timer\r\nSession-Expires: 1800\r\n",
                body,
            ),
        );
        assert_eq!(dest, addr(UA), "{method}: answered by the edge");
        assert_eq!(r.status_code(), Some(481), "{method}");
    }
    // A keep-alive UPDATE (no Session-Expires) of the gone dialog: 481 too.
    let (r, _) = from_ua(&e, &ua_request("UPDATE", 4, true, "", ""));
    assert_eq!(r.status_code(), Some(481));
}

#[test]
fn compact_form_x_is_understood_both_ways() {
    let e = edge();
    let (r, _) = from_ua(
        &e,
        &ua_request("INVITE", 1, false, "k: timer\r\nx: 60\r\n", SDP),
    );
    assert_eq!(r.status_code(), Some(422));
    let (f, _) = from_ua(&e, &ua_request("INVITE", 1, false, "x: 60\r\n", SDP));
    assert_eq!(f.session_expires().unwrap().unwrap().delta, MIN_SE);
    // Raised in place: still one Session-Expires (`x` is the same header).
    assert_eq!(f.header_values("Session-Expires").count(), 1);
    // A 2xx carrying `x` is taken as it is.
    let ok = pbx_answers(&e, &f, 200, &[("x", "120;refresher=uas")]);
    assert_eq!(ok.session_expires().unwrap().unwrap().delta, 120);
    let (s, _) = e.dialogs().session(CALL, now()).unwrap();
    assert_eq!((s.interval, s.refresher), (120, Some(Refresher::Uas)));
}

// ----- restart: the state directory -----

/// A DIALOGS map in memory, shared by the edges of one test (the pinned
/// map outlives the daemon the same way).
#[derive(Clone, Default)]
pub(crate) struct FakeMap(pub(crate) Arc<Mutex<HashMap<u64, DialogValue>>>);

impl DialogSink for FakeMap {
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64) {
        let mut m = self.0.lock().unwrap();
        let v = m.entry(hash).or_insert(DialogValue {
            created_unix,
            ..DialogValue::default()
        });
        v.state = state;
    }
    fn remove(&mut self, hash: u64) {
        self.0.lock().unwrap().remove(&hash);
    }
    fn set_session(&mut self, hash: u64, expires_unix: u64, flags: u32) {
        if let Some(v) = self.0.lock().unwrap().get_mut(&hash) {
            v.expires_unix = expires_unix;
            v.flags = flags;
        }
    }
    fn last_ka_ns(&mut self, hash: u64) -> Option<u64> {
        self.0
            .lock()
            .unwrap()
            .get(&hash)
            .map(|v| v.last_ka_ns)
            .filter(|&n| n != 0)
    }
    fn retain(&mut self, keep: &dyn Fn(u64) -> bool) -> usize {
        let mut m = self.0.lock().unwrap();
        let before = m.len();
        m.retain(|k, _| keep(*k));
        before - m.len()
    }
}

struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let d = std::env::temp_dir().join(format!(
            "sip-ka-timer-tests-{}-{name}-{}",
            std::process::id(),
            now()
        ));
        let _ = std::fs::remove_dir_all(&d);
        StateDir(d)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn persistent_edge(dir: &StateDir, map: &FakeMap, reap: bool, idle: Option<Duration>) -> Edge {
    Edge::with_options(
        cfg(reap),
        &DialogOptions {
            state_dir: Some(dir.0.clone()),
            idle_timeout: idle,
            store: None,
            shield: None,
        },
        Box::new(map.clone()),
        None,
        now(),
    )
    .unwrap()
}

#[test]
fn a_restarted_edge_resumes_dialogs_timers_and_the_mirror() {
    let dir = StateDir::new("restart");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, true, None);
    call(&e, "Supported: timer\r\n", &[]);
    let at = expires_at(&e).unwrap();
    // XDP counts keep-alives in the entry; an entry of a dialog no edge
    // knows is left over from some earlier run.
    map.0.lock().unwrap().get_mut(&hash()).unwrap().ka_count = 5;
    map.0.lock().unwrap().insert(0xdead, DialogValue::default());
    // A crash: no clean shutdown, nothing written at exit.
    drop(e);

    let e = persistent_edge(&dir, &map, true, None);
    assert_eq!(e.counters.dialogs_restored.load(Ordering::Relaxed), 1);
    assert!(e.dialogs().known(CALL));
    assert_eq!(expires_at(&e), Some(at), "the absolute expiry is kept");
    let (s, _) = e.dialogs().session(CALL, now()).unwrap();
    assert_eq!((s.interval, s.refresher), (SE, Some(Refresher::Uac)));
    {
        let m = map.0.lock().unwrap();
        assert!(!m.contains_key(&0xdead), "stale entry kept");
        let v = m[&hash()];
        assert_eq!((v.state, v.ka_count), (DIALOG_CONFIRMED, 5));
        assert_eq!(v.expires_unix, at / 1_000);
    }
    // In-dialog requests from the PBX still reach the UA.
    let options_from_pbx = "OPTIONS sip:ua@198.18.0.2:5062 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbxbye\r\n\
         From: <sip:service@198.18.0.1>;tag=pbx1\r\n\
         To: <sip:ua@198.18.0.2>;tag=ua1\r\n\
         Call-ID: st1@198.18.0.2\r\n\
         CSeq: 7 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n";
    let (_, dest) = e
        .handle(options_from_pbx.as_bytes(), addr(PBX), addr(EDGE), now())
        .unwrap();
    assert_eq!(dest.peer(), addr(UA));
    // The restored timer fires at the same instant, and the reaping BYEs
    // come from what was restored (From, To, Contacts, CSeq).
    assert!(e.expire(at - 1, 0, addr(EDGE)).is_empty());
    let byes = e.expire(at, 0, addr(EDGE));
    assert_eq!(byes.len(), 2);
    let to_pbx = parse(&byes[0].0);
    assert_eq!(to_pbx.from_tag().as_deref(), Some("ua1"));
    assert_eq!(to_pbx.to_tag().as_deref(), Some("pbx1"));
    assert_eq!(to_pbx.cseq().unwrap().seq, 8, "CSeq after the PBX's 7");
    assert!(map.0.lock().unwrap().is_empty());
    drop(e);
    // The expiry was journaled: a third start has nothing.
    let e = persistent_edge(&dir, &map, true, None);
    assert!(e.dialogs().is_empty());
}

#[test]
fn a_missing_mirror_entry_is_put_back_with_its_session() {
    let dir = StateDir::new("missing");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, false, None);
    call(&e, "Supported: timer\r\n", &[]);
    let at = expires_at(&e).unwrap();
    drop(e);
    // Lost from the map (an operator, another tool): the restart puts it
    // back from the state directory.
    map.0.lock().unwrap().clear();
    let e = persistent_edge(&dir, &map, false, None);
    assert!(e.dialogs().known(CALL));
    let m = map.0.lock().unwrap();
    let v = m.get(&hash()).expect("DIALOGS entry re-inserted");
    assert_eq!(v.state, DIALOG_CONFIRMED);
    assert_eq!(v.expires_unix, at / 1_000);
    assert_eq!(
        v.session(),
        Some((SE, Some(sip_ka_common::maps::SessionRefresher::Uac)))
    );
}

#[test]
fn a_session_due_while_no_daemon_ran_expires_at_start() {
    let dir = StateDir::new("due");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, false, None);
    call(&e, "Supported: timer\r\n", &[]);
    let at = expires_at(&e).unwrap();
    drop(e);
    let e = persistent_edge(&dir, &map, false, None);
    assert!(e.dialogs().known(CALL));
    // Restarted after the expiry: due at the first look.
    e.expire(at + 60_000, 0, addr(EDGE));
    assert!(!e.dialogs().known(CALL));
    assert_eq!(e.counters.sessions_expired.load(Ordering::Relaxed), 1);
}

#[test]
fn a_corrupt_state_file_is_skipped_not_fatal() {
    let dir = StateDir::new("corrupt");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, false, None);
    call(&e, "Supported: timer\r\n", &[]);
    drop(e);
    // A half-written line, binary junk and a record with an unknown phase.
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.0.join("journal"))
        .unwrap();
    f.write_all(b"\x00\xff{{{\n{\"op\":\"up\",\"call_id\":\"x\",\"phase\":\"gone\",\"ua\":{\"t\":\"udp\",\"addr\":\"1.2.3.4:5\"},\"created_unix\":1,\"since_ms\":1,\"caller_is_ua\":true,\"caller_from\":\"a\",\"cseq\":1}\n{\"op\":\"up\",\"call_")
        .unwrap();
    drop(f);
    let e = persistent_edge(&dir, &map, false, None);
    assert_eq!(e.dialogs().len(), 1);
    assert!(e.dialogs().known(CALL));
}

#[test]
fn a_stream_ua_is_unreachable_after_a_restart_until_its_next_request() {
    use super::transport::{Flow, StreamKind};
    let dir = StateDir::new("stream");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, false, None);
    let peer = addr("198.18.0.2:40000");
    let conn = Flow::Stream {
        id: 3,
        peer,
        kind: StreamKind::Tls,
    };
    let inv = parse(&ua_request("INVITE", 1, false, "", SDP));
    e.dialogs().on_request(&inv, conn, now());
    e.dialogs()
        .on_response(&inv.response(200, "OK", Some("pbx1")).unwrap(), now());
    assert_eq!(e.dialogs().ua_flow(CALL), Some(conn));
    drop(e);
    let e = persistent_edge(&dir, &map, false, None);
    let restored = e.dialogs().ua_flow(CALL).unwrap();
    assert_eq!(
        restored,
        Flow::Stream {
            id: persist::GONE_CONN_ID,
            peer,
            kind: StreamKind::Tls
        }
    );
    assert!(!e.transports.alive(&restored), "no connection has id 0");
    // The UA's next request, on a new connection, makes it reachable.
    let again = Flow::Stream {
        id: 1,
        peer: addr("198.18.0.2:40002"),
        kind: StreamKind::Tls,
    };
    let info = parse(&ua_request("INFO", 2, true, "", "x"));
    e.dialogs().on_request(&info, again, now());
    assert_eq!(e.dialogs().ua_flow(CALL), Some(again));
    drop(e);
    let e = persistent_edge(&dir, &map, false, None);
    assert!(matches!(
        e.dialogs().ua_flow(CALL),
        Some(Flow::Stream { id: 0, peer, .. }) if peer == addr("198.18.0.2:40002")
    ));
}

#[test]
fn a_call_id_alone_does_not_take_a_dialog_over() {
    use super::transport::{Flow, StreamKind};
    let e = edge();
    call(&e, "", &[]);
    let ua = Some(Flow::Udp(addr(UA)));
    assert_eq!(e.dialogs().ua_flow(CALL), ua);
    let conn = |id: u64, peer: &str| Flow::Stream {
        id,
        peer: addr(peer),
        kind: StreamKind::Tcp,
    };
    let send = |flow: Flow, raw: Vec<u8>| {
        e.handle_message(&raw, Framing::Stream, flow, addr(EDGE), now())
            .expect("answered or forwarded");
    };
    let keepalive = || ua_request("INFO", 2, true, "", "");
    let reinvite = || ua_request("INVITE", 3, true, "", SDP);
    let wrong_from = |raw: Vec<u8>| {
        String::from_utf8(raw)
            .unwrap()
            .replace(";tag=ua1", ";tag=guess")
            .into_bytes()
    };
    let wrong_to = |raw: Vec<u8>| {
        String::from_utf8(raw)
            .unwrap()
            .replace(";tag=pbx1", ";tag=guess")
            .into_bytes()
    };
    // Another address with the right Call-ID and tags; the phone's own
    // address with wrong tags: the keep-alive the edge answers and the
    // request it forwards both leave the dialog where it was.
    let stranger = conn(7, "203.0.113.5:40000");
    let same_ip = conn(8, "198.18.0.2:40001");
    for (flow, raw) in [
        (stranger, keepalive()),
        (stranger, reinvite()),
        (same_ip, wrong_from(keepalive())),
        (same_ip, wrong_to(keepalive())),
        (same_ip, wrong_from(reinvite())),
        (same_ip, wrong_to(reinvite())),
    ] {
        send(flow, raw);
        assert_eq!(e.dialogs().ua_flow(CALL), ua, "moved to {flow:?}");
    }
    // The phone itself on a new connection: it moves.
    send(same_ip, keepalive());
    assert_eq!(e.dialogs().ua_flow(CALL), Some(same_ip));
    let again = conn(9, "198.18.0.2:40002");
    send(again, reinvite());
    assert_eq!(e.dialogs().ua_flow(CALL), Some(again));
}

// ----- --dialog-idle-timeout -----

const IDLE: Duration = Duration::from_secs(30);

#[test]
fn an_idle_dialog_ends_after_the_idle_timeout_and_traffic_defers_it() {
    let e = Edge::new(cfg(true), Box::new(NoSink), None, now());
    e.dialogs().set_idle_timeout(Some(IDLE), now());
    let (_, before, after) = call(&e, "", &[]);
    let idle_ms = IDLE.as_millis() as u64;
    assert!(e.expire(before + idle_ms - 1, 0, addr(EDGE)).is_empty());
    assert!(e.dialogs().known(CALL));
    // A keep-alive the edge answers is traffic.
    advance(20);
    let touched = now();
    let (r, _) = from_ua(&e, &ua_request("INFO", 2, true, "", ""));
    assert_eq!(r.status_code(), Some(200));
    assert!(e.expire(after + idle_ms, 0, addr(EDGE)).is_empty());
    assert!(e.expire(touched + idle_ms - 1, 0, addr(EDGE)).is_empty());
    assert!(e.dialogs().known(CALL), "ended despite the keep-alive");
    let byes = e.expire(now() + idle_ms, 0, addr(EDGE));
    assert!(!e.dialogs().known(CALL));
    assert_eq!(e.counters.dialogs_idle_ended.load(Ordering::Relaxed), 1);
    // --reap-expired: both sides get a BYE.
    let dests: Vec<SocketAddr> = byes.iter().map(|(_, d)| d.peer()).collect();
    assert_eq!(dests, vec![addr(PBX), addr(UA)]);
}

#[test]
fn keepalives_counted_by_xdp_keep_a_dialog_from_idling() {
    let dir = StateDir::new("idle-xdp");
    let map = FakeMap::default();
    let e = persistent_edge(&dir, &map, false, Some(IDLE));
    let (_, _, after) = call(&e, "", &[]);
    let idle_ms = IDLE.as_millis() as u64;
    // Virtual clocks: wall `now`, monotonic `mono` at the same instant.
    let mono = 1_000_000_000_000u64;
    let now = after + idle_ms + 5_000;
    // XDP counted a keep-alive 10 s ago (monotonic).
    map.0.lock().unwrap().get_mut(&hash()).unwrap().last_ka_ns = mono - 10_000_000_000;
    let ended = e
        .dialogs()
        .expire_idle(now, mono, false, addr(PBX), addr(EDGE));
    assert!(ended.is_empty(), "XDP saw traffic 10 s ago");
    assert!(e.dialogs().known(CALL));
    // Not due again before that keep-alive is IDLE old.
    let ended = e
        .dialogs()
        .expire_idle(now + idle_ms - 10_001, mono, false, addr(PBX), addr(EDGE));
    assert!(ended.is_empty());
    let ended = e.dialogs().expire_idle(
        now + idle_ms - 10_000,
        mono + (idle_ms - 10_000) * 1_000_000,
        false,
        addr(PBX),
        addr(EDGE),
    );
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].call_id, CALL);
    assert!(!e.dialogs().known(CALL));
    assert!(map.0.lock().unwrap().is_empty());
}

#[test]
fn without_an_idle_timeout_a_silent_dialog_stays() {
    let e = edge();
    call(&e, "", &[]);
    assert!(e.expire(now() + 30 * 86_400_000, 0, addr(EDGE)).is_empty());
    assert!(e.dialogs().known(CALL));
}
