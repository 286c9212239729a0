//! The dialog table's unit tests.

use std::sync::{Arc, Mutex};

use sip_ka_common::maps::{DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING};

use super::{bye::byes, model::tag_of, *};
use crate::{
    edge::{
        session_timer::{SessionTimers, TimerConfig},
        transport::Flow,
    },
    sip::{Framing, Limits, SipMessage},
    util::clock::virtual_clock::now,
};

type Entries = Vec<(u64, Option<u32>)>;

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Entries>>);

impl DialogSink for Log {
    fn upsert(&mut self, hash: u64, state: u32, _: u64) {
        self.0.lock().unwrap().push((hash, Some(state)));
    }
    fn remove(&mut self, hash: u64) {
        self.0.lock().unwrap().push((hash, None));
    }
}

fn msg(s: &str) -> SipMessage {
    crate::sip::parse_message(s.as_bytes(), Framing::Datagram, &Limits::default()).unwrap()
}

fn request(method: &str, to_tag: &str, cseq: u32) -> SipMessage {
    msg(&format!(
        "{method} sip:bob@198.18.0.1:5080 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK{cseq}{method}\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         Call-ID: d1@example.com\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

#[test]
fn invite_ringing_ok_bye() {
    let log = Log::default();
    let mut d = Dialogs::new(Box::new(log.clone()), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = request("INVITE", "", 1);
    let hash = inv.call_id_hash().unwrap();
    d.on_request(&inv, ua, now());
    assert!(!d.known("d1@example.com"));
    d.on_response(&inv.response(100, "Trying", None).unwrap(), now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Pending));
    d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap(), now());
    assert!(d.known("d1@example.com"));
    d.on_response(&inv.response(200, "OK", Some("b1")).unwrap(), now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
    assert_eq!(d.ua_flow("d1@example.com"), Some(ua));
    let bye = request("BYE", ";tag=b1", 2);
    d.on_request(&bye, ua, now());
    d.on_response(&bye.response(200, "OK", None).unwrap(), now());
    assert!(d.is_empty());
    assert_eq!(
        *log.0.lock().unwrap(),
        vec![
            (hash, Some(DIALOG_EARLY)),
            (hash, Some(DIALOG_CONFIRMED)),
            (hash, Some(DIALOG_TERMINATING)),
            (hash, None)
        ]
    );
}

#[test]
fn failure_and_cancel_end_the_dialog() {
    let log = Log::default();
    let mut d = Dialogs::new(Box::new(log.clone()), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = request("INVITE", "", 1);
    d.on_request(&inv, ua, now());
    d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap(), now());
    d.on_request(&request("CANCEL", "", 1), ua, now());
    d.on_response(
        &inv.response(487, "Request Terminated", Some("b1")).unwrap(),
        now(),
    );
    assert!(d.is_empty());
    // A failure before any 1xx never touched the map.
    let log2 = Log::default();
    let mut d = Dialogs::new(Box::new(log2.clone()), now());
    d.on_request(&inv, ua, now());
    d.on_response(&inv.response(486, "Busy Here", Some("b1")).unwrap(), now());
    assert!(d.is_empty());
    assert!(log2.0.lock().unwrap().is_empty());
}

#[test]
fn reinvite_failure_keeps_a_confirmed_dialog() {
    let mut d = Dialogs::new(Box::new(NoSink), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = request("INVITE", "", 1);
    d.on_request(&inv, ua, now());
    d.on_response(&inv.response(200, "OK", Some("b1")).unwrap(), now());
    let re = request("INVITE", ";tag=b1", 2);
    d.on_request(&re, ua, now());
    d.on_response(&re.response(491, "Request Pending", None).unwrap(), now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
    assert_eq!(d.sweep(now() + EARLY_LIMIT.as_millis() as u64 * 2), 0);
}

#[test]
fn a_bye_to_one_fork_keeps_the_fork_the_caller_kept() {
    let log = Log::default();
    let mut d = Dialogs::new(Box::new(log.clone()), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = request("INVITE", "", 1);
    d.on_request(&inv, ua, now());
    // Two forks answer: early dialogs b1 and b2, then both 2xx.
    d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap(), now());
    d.on_response(&inv.response(180, "Ringing", Some("b2")).unwrap(), now());
    let mut ok1 = inv.response(200, "OK", Some("b1")).unwrap();
    d.timer_response(&mut ok1, now());
    d.on_response(&ok1, now());
    let mut ok2 = inv.response(200, "OK", Some("b2")).unwrap();
    d.timer_response(&mut ok2, now());
    d.on_response(&ok2, now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
    // The caller keeps b1 and sends BYE to b2 (RFC 3261 13.2.2.4).
    let bye2 = request("BYE", ";tag=b2", 2);
    d.on_request(&bye2, ua, now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
    d.on_response(&bye2.response(200, "OK", None).unwrap(), now());
    assert!(d.known("d1@example.com"), "the kept call lost its dialog");
    // Then the kept call ends.
    let bye1 = request("BYE", ";tag=b1", 3);
    d.on_request(&bye1, ua, now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Terminating));
    d.on_response(&bye1.response(200, "OK", None).unwrap(), now());
    assert!(d.is_empty());
}

/// A request of the callee's side (the PBX's): From b1, To a1.
fn from_callee(method: &str, cseq: u32) -> SipMessage {
    msg(&format!(
        "{method} sip:alice@198.18.0.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKc{cseq}{method}\r\n\
         From: <sip:bob@example.com>;tag=b1\r\n\
         To: <sip:alice@example.com>;tag=a1\r\n\
         Call-ID: d1@example.com\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn with_contact(mut m: SipMessage, uri: &str) -> SipMessage {
    m.push_header("Contact", format!("<{uri}>"));
    m
}

fn confirmed(d: &mut Dialogs) -> SipMessage {
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = with_contact(request("INVITE", "", 1), "sip:alice@198.18.0.2:5060");
    d.on_request(&inv, ua, now());
    let mut ok = with_contact(
        inv.response(200, "OK", Some("b1")).unwrap(),
        "sip:bob@198.18.0.1:5080",
    );
    d.timer_response(&mut ok, now());
    d.on_response(&ok, now());
    inv
}

#[test]
fn a_reinvite_from_the_pbx_side_does_not_keep_the_dialog_after_bye() {
    let mut d = Dialogs::new(Box::new(NoSink), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    confirmed(&mut d);
    // The PBX's side re-INVITEs (hold); the UA's 200 has To tag b1 and
    // From tag... of the re-INVITE: From b1, To a1. Its Contact is the
    // caller's.
    let re = from_callee("INVITE", 1);
    d.on_request_from(&re, ua, false, now());
    let mut ok = with_contact(
        re.response(200, "OK", None).unwrap(),
        "sip:alice@198.18.0.2:5070",
    );
    d.timer_response(&mut ok, now());
    d.on_response(&ok, now());
    let ended = {
        let byes = byes(
            "d1@example.com",
            d.get("d1@example.com").unwrap(),
            "198.18.0.1:5080".parse().unwrap(),
            "198.18.0.1:5060".parse().unwrap(),
        );
        byes.iter()
            .map(|(m, _)| m.request_uri().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // The callee's Contact stays the callee's; the caller's is updated.
    assert_eq!(
        ended,
        vec![
            "sip:bob@198.18.0.1:5080".to_string(),
            "sip:alice@198.18.0.2:5070".to_string()
        ]
    );
    let bye = request("BYE", ";tag=b1", 2);
    d.on_request(&bye, ua, now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Terminating));
    d.on_response(&bye.response(200, "OK", None).unwrap(), now());
    assert!(d.is_empty(), "the BYE did not end the dialog");
}

#[test]
fn a_retransmitted_2xx_keeps_the_session_timer() {
    let timers = SessionTimers::new(TimerConfig::new(90, 1800, false).unwrap(), false, now());
    let mut d = Dialogs::with_timers(Box::new(NoSink), timers);
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    // The UAC supports timer; the PBX's 2xx will say nothing of it, so
    // the edge adds Session-Expires with refresher=uac to the 2xx.
    let mut inv = request("INVITE", "", 1);
    inv.push_header("Supported", "timer");
    // The edge inserts Session-Expires into the INVITE.
    let _ = d.timer_request(&mut inv, None);
    assert_eq!(inv.header("Session-Expires"), Some("1800"));
    d.on_request(&inv, ua, now());
    let ok = inv.response(200, "OK", Some("b1")).unwrap();
    for _ in 0..3 {
        let mut copy = ok.clone();
        d.timer_response(&mut copy, now());
        d.on_response(&copy, now());
        let s = d.session("d1@example.com", now()).unwrap();
        assert_eq!(s.0.interval, 1800, "a retransmission stopped the timer");
        assert_eq!(
            copy.header("Session-Expires")
                .map(|v| v.starts_with("1800")),
            Some(true)
        );
    }
}

#[test]
fn the_bye_to_the_first_fork_moves_reaping_to_the_kept_one() {
    let mut d = Dialogs::new(Box::new(NoSink), now());
    let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
    let inv = confirmed(&mut d);
    let mut ok2 = with_contact(
        inv.response(200, "OK", Some("b2")).unwrap(),
        "sip:carol@198.18.0.1:5080",
    );
    d.timer_response(&mut ok2, now());
    d.on_response(&ok2, now());
    // The caller keeps b2 and ends b1.
    let bye1 = request("BYE", ";tag=b1", 2);
    d.on_request(&bye1, ua, now());
    d.on_response(&bye1.response(200, "OK", None).unwrap(), now());
    let dl = d.get("d1@example.com").unwrap();
    assert_eq!(dl.cold.callee_to().and_then(tag_of).as_deref(), Some("b2"));
    assert_eq!(dl.cold.callee_contact(), Some("sip:carol@198.18.0.1:5080"));
}

/// An INVITE (no To tag) or, with `to_tag`, a re-INVITE or UPDATE, with
/// its own Call-ID and a From padded by `pad` bytes.
fn fresh(method: &str, call: &str, to_tag: &str, pad: usize) -> SipMessage {
    msg(&format!(
        "{method} sip:bob@198.18.0.1:5080 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.9:5060;branch=z9hG4bK{call}\r\n\
         From: <sip:mallory@example.com>;tag=m1;x=p{}\r\n\
         To: <sip:bob@example.com>{to_tag}\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:mallory@198.18.0.9:5060>\r\n\
         Content-Length: 0\r\n\r\n",
        "p".repeat(pad)
    ))
}

#[test]
fn pending_dialogs_stay_under_their_caps_oldest_first() {
    let mut d = Dialogs::new(Box::new(NoSink), now());
    d.set_pending_limits(100, 1 << 20);
    let ua = Flow::Udp("198.18.0.9:5060".parse().unwrap());
    for i in 0..1_000 {
        d.on_request(&fresh("INVITE", &format!("flood{i}"), "", 0), ua, now());
    }
    assert_eq!(d.len(), 100);
    assert_eq!(d.pending_usage().0, 100);
    assert_eq!(d.pending_evicted(), 900);
    assert!(d.phase("flood999").is_some() && d.phase("flood899").is_none());
    // A real call still goes through, and once answered is no longer
    // pending: the flood cannot push it out.
    let inv = request("INVITE", "", 1);
    d.on_request(&inv, ua, now());
    d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap(), now());
    for i in 1_000..2_000 {
        d.on_request(&fresh("INVITE", &format!("flood{i}"), "", 0), ua, now());
    }
    assert!(d.known("d1@example.com"));
    d.on_response(&inv.response(200, "OK", Some("b1")).unwrap(), now());
    assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
    assert_eq!(d.pending_usage().0, 100);
    assert_eq!(d.len(), 101);
}

#[test]
fn pending_dialog_bytes_are_capped() {
    let mut d = Dialogs::new(Box::new(NoSink), now());
    let cap = 256 * 1024;
    d.set_pending_limits(1_000_000, cap);
    let ua = Flow::Udp("198.18.0.9:5060".parse().unwrap());
    for i in 0..200 {
        // A 16 KB From each: 3.2 MB offered.
        d.on_request(&fresh("INVITE", &format!("big{i}"), "", 16_000), ua, now());
    }
    let (n, bytes) = d.pending_usage();
    assert!(bytes <= cap, "{bytes}");
    assert!(n < 20 && n > 0, "{n}");
    assert_eq!(d.len(), n);
    assert_eq!(d.pending_evicted(), 200 - n as u64);
    // One that alone is over the cap is not kept.
    let mut tiny = Dialogs::new(Box::new(NoSink), now());
    tiny.set_pending_limits(10, 1_000);
    tiny.on_request(&fresh("INVITE", "huge", "", 4_000), ua, now());
    assert!(tiny.is_empty());
    assert_eq!(tiny.pending_evicted(), 1);
}

#[test]
fn refresh_offers_for_unknown_call_ids_are_not_kept() {
    let timers = SessionTimers::new(TimerConfig::new(90, 1800, false).unwrap(), false, now());
    let mut d = Dialogs::with_timers(Box::new(NoSink), timers);
    d.set_pending_limits(10, 1 << 20);
    let ua = Flow::Udp("198.18.0.9:5060".parse().unwrap());
    for i in 0..500 {
        let method = if i % 2 == 0 { "INVITE" } else { "UPDATE" };
        let mut m = fresh(method, &format!("re{i}"), ";tag=x", 0);
        assert!(matches!(
            d.timer_request(&mut m, None),
            crate::edge::session_timer::RequestAction::Forward(_)
        ));
        d.on_request(&m, ua, now());
    }
    assert_eq!(d.timers().offers(), 0, "offers of no dialog were kept");
    // Initial INVITEs beyond the dialog cap take their offers with them.
    for i in 0..500 {
        let mut m = fresh("INVITE", &format!("new{i}"), "", 0);
        let _ = d.timer_request(&mut m, None);
        d.on_request(&m, ua, now());
    }
    assert_eq!(d.len(), 10);
    assert_eq!(d.timers().offers(), 10);
    // A real dialog's refresh still negotiates.
    let mut inv = request("INVITE", "", 1);
    let _ = d.timer_request(&mut inv, None);
    d.on_request(&inv, ua, now());
    let mut ok = inv.response(200, "OK", Some("b1")).unwrap();
    ok.push_header("Session-Expires", "1800;refresher=uac");
    d.timer_response(&mut ok, now());
    d.on_response(&ok, now());
    let mut update = request("UPDATE", ";tag=b1", 2);
    let _ = d.timer_request(&mut update, None);
    d.on_request(&update, ua, now());
    let mut ok = update.response(200, "OK", Some("b1")).unwrap();
    ok.push_header("Session-Expires", "900;refresher=uac");
    d.timer_response(&mut ok, now());
    assert_eq!(d.session("d1@example.com", now()).unwrap().0.interval, 900);
}

#[test]
fn a_call_id_sharing_a_live_dialogs_hash_does_not_take_its_place() {
    // The hash reads the first 256 bytes only: these two share it.
    let (a, b) = (
        format!("{}a", "x".repeat(256)),
        format!("{}b", "x".repeat(256)),
    );
    assert_eq!(
        sip_ka_common::callid_hash(a.as_bytes()),
        sip_ka_common::callid_hash(b.as_bytes())
    );
    let mut d = Dialogs::new(Box::new(NoSink), now());
    let ua = Flow::Udp("198.18.0.9:5060".parse().unwrap());
    let inv = fresh("INVITE", &a, "", 0);
    d.on_request(&inv, ua, now());
    d.on_response(&inv.response(200, "OK", Some("b1")).unwrap(), now());
    assert_eq!(d.phase(&a), Some(Phase::Confirmed));
    // The second Call-ID is not the first one's dialog, and gets none.
    let other = fresh("INVITE", &b, "", 0);
    d.on_request(&other, ua, now());
    assert_eq!(d.phase(&b), None);
    assert!(!d.known(&b) && d.ua_flow(&b).is_none());
    d.on_response(
        &other.response(486, "Busy Here", Some("c1")).unwrap(),
        now(),
    );
    assert_eq!((d.len(), d.phase(&a)), (1, Some(Phase::Confirmed)));
}

#[test]
fn the_store_keeps_an_unconfirmed_dialog_longer_than_the_table() {
    use crate::edge::store::{GRACE_MS, UNCONFIRMED_TTL_MS};
    assert_eq!(
        UNCONFIRMED_TTL_MS,
        super::EARLY_LIMIT.as_millis() as u64 + GRACE_MS
    );
}
