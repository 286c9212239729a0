//! One datagram in, at most one datagram out: answer it, forward it, or
//! drop it (counted).

use std::net::SocketAddr;

use super::{
    dialog::now_ms,
    forward::{self, fnv1a},
    keepalive::{self, Kind},
    Counters, Edge,
};
use crate::{
    responder,
    session_timer::RequestAction,
    sip::{error_response, is_crlf_keepalive, parse_message, Framing, SipMessage},
};

/// Bytes to send and where.
pub type Out = Option<(Vec<u8>, SocketAddr)>;

impl Edge {
    /// Handles a datagram that arrived from `src` on `local`.
    pub fn handle(&self, raw: &[u8], src: SocketAddr, local: SocketAddr) -> Out {
        let c = &self.counters;
        if is_crlf_keepalive(raw) || raw.first().is_some_and(|b| b & 0xC0 == 0) {
            Counters::bump(&c.other);
            let shared = self.responder.as_ref()?;
            return responder::answer(shared, raw, src).map(|r| (r, src));
        }
        match parse_message(raw, Framing::Datagram, &self.cfg.limits) {
            Ok(msg) if msg.is_request() => self.request(msg, src, local),
            Ok(msg) => self.response(msg, local),
            Err(err) => {
                let tag = format!("ska{:012x}", fnv1a(&[raw]) & 0xffff_ffff_ffff);
                match error_response(raw, &err, &tag) {
                    Some(bytes) => {
                        log::debug!("edge: 400 to {src}: {err}");
                        Counters::bump(&c.bad_requests);
                        Some((bytes, src))
                    }
                    None => {
                        log::debug!("edge: dropped from {src}: {err}");
                        Counters::bump(&c.dropped);
                        None
                    }
                }
            }
        }
    }

    fn request(&self, msg: SipMessage, src: SocketAddr, local: SocketAddr) -> Out {
        let c = &self.counters;
        let from_pbx = src == self.cfg.upstream;
        let call_id = msg.call_id().unwrap_or_default().to_string();
        if !from_pbx {
            if let Some(kind) = keepalive::classify(&msg, local) {
                let known = self.dialogs().known(&call_id);
                let up = self.health.is_up();
                let counter = match kind {
                    Kind::InDialog if known => &c.ka_in_dialog_ok,
                    Kind::InDialog => &c.ka_unknown_dialog,
                    Kind::OptionsToEdge => &c.options_edge,
                    Kind::OptionsToPbx if up => &c.options_pbx_up,
                    Kind::OptionsToPbx => &c.options_pbx_down,
                };
                // An UPDATE in a dialog with a session timer, or one that
                // carries Session-Expires, is a session refresh: the PBX
                // may run the same timer (RFC 4028), and a refresh the
                // edge answered itself would never reach it, so the PBX
                // would end a live call. Refreshes are forwarded like any
                // request; only UPDATEs outside any timer are keep-alives.
                let refresh = kind == Kind::InDialog
                    && msg.method() == Some(&crate::sip::Method::Update)
                    && (self
                        .dialogs()
                        .session(&call_id, now_ms())
                        .is_some_and(|s| s.0.interval > 0)
                        || msg.session_expires().is_ok_and(|se| se.is_some()));
                if !refresh {
                    Counters::bump(counter);
                    let answer = keepalive::answer(&msg, kind, known, up, self.cfg.retry_after())?;
                    return Some((answer.to_bytes(), src));
                }
            }
        }
        // The ACK for a final response the edge generated itself (483, 482,
        // 404 to an INVITE) carries the edge's To tag: it ends there.
        if msg.method() == Some(&crate::sip::Method::Ack)
            && msg.to_tag().as_deref() == Some(keepalive::local_tag(&msg).as_str())
        {
            Counters::bump(&c.acks_absorbed);
            return None;
        }
        let mut fwd = msg.clone();
        if let Err(refusal) = forward::prepare_request(&mut fwd, src, local) {
            Counters::bump(match refusal {
                forward::Refusal::TooManyHops => &c.too_many_hops,
                forward::Refusal::Loop => &c.loops,
            });
            let (code, reason) = refusal.status();
            let tag = keepalive::local_tag(&msg);
            return msg
                .response(code, reason, Some(&tag))
                .map(|r| (r.to_bytes(), src));
        }
        let dest = if from_pbx {
            let learned = self.dialogs().ua_addr(&call_id);
            match learned.or_else(|| forward::request_destination(&fwd)) {
                Some(d) => d,
                None => {
                    Counters::bump(&c.unroutable);
                    let tag = keepalive::local_tag(&msg);
                    return msg
                        .response(404, "Not Found", Some(&tag))
                        .map(|r| (r.to_bytes(), src));
                }
            }
        } else {
            self.cfg.upstream
        };
        let ua = if from_pbx { dest } else { src };
        let mut dialogs = self.dialogs();
        let tag = keepalive::local_tag(&msg);
        if let RequestAction::Reject(r) = dialogs.timer_request(&mut fwd, Some(&tag)) {
            Counters::bump(&c.timer_rejects);
            // The reject answers the request as it came in (our Via off).
            let mut r = *r;
            r.remove_top_via();
            return Some((r.to_bytes(), src));
        }
        dialogs.on_request_from(&fwd, ua, !from_pbx);
        drop(dialogs);
        Counters::bump(&c.requests_forwarded);
        Some((fwd.to_bytes(), dest))
    }

    fn response(&self, mut msg: SipMessage, local: SocketAddr) -> Out {
        let c = &self.counters;
        let Some(dest) = forward::prepare_response(&mut msg, local) else {
            Counters::bump(&c.dropped);
            return None;
        };
        let mut dialogs = self.dialogs();
        dialogs.timer_response(&mut msg, now_ms());
        dialogs.on_response(&msg);
        drop(dialogs);
        Counters::bump(&c.responses_forwarded);
        Some((msg.to_bytes(), dest))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        edge::{dialog::NoSink, EdgeConfig},
        sip::Limits,
    };

    const EDGE: &str = "198.18.0.1:5060";
    const PBX: &str = "198.18.0.1:5080";
    const UA: &str = "198.18.0.2:5062";

    fn edge() -> Edge {
        Edge::new(
            EdgeConfig {
                listen: vec![EDGE.parse().unwrap()],
                upstream: PBX.parse().unwrap(),
                qualify_frequency: Duration::from_secs(1),
                limits: Limits::default(),
                timers: Default::default(),
                reap_expired: false,
            },
            Box::new(NoSink),
            None,
        )
    }

    fn parse(b: &[u8]) -> SipMessage {
        parse_message(b, Framing::Datagram, &Limits::default()).unwrap()
    }

    fn request(method: &str, to_tag: &str, cseq: u32, body: &str) -> Vec<u8> {
        format!(
            "{method} sip:service@198.18.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK{cseq}{method};rport\r\n\
             From: <sip:ua@198.18.0.2>;tag=u1\r\n\
             To: <sip:service@198.18.0.1>{to_tag}\r\n\
             Call-ID: p1@198.18.0.2\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Contact: <sip:ua@198.18.0.2:5062>\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// The PBX's answer to what the edge forwarded.
    fn pbx_response(fwd: &[u8], code: u16, tag: &str) -> Vec<u8> {
        parse(fwd)
            .response(code, "X", Some(tag))
            .unwrap()
            .to_bytes()
    }

    #[test]
    fn call_through_the_edge_and_keepalives() {
        let e = edge();
        let (local, pbx, ua) = (
            EDGE.parse().unwrap(),
            PBX.parse().unwrap(),
            UA.parse().unwrap(),
        );
        let (fwd, dest) = e
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local)
            .unwrap();
        assert_eq!(dest, pbx);
        let fwd_msg = parse(&fwd);
        assert_eq!(fwd_msg.max_forwards(), Some(69));
        assert!(fwd_msg.has_header("Record-Route"));
        // Unknown dialog before any 1xx.
        let (r, _) = e
            .handle(&request("INFO", ";tag=p1", 2, ""), ua, local)
            .unwrap();
        assert_eq!(parse(&r).status_code(), Some(481));
        for (code, tag) in [(100, ""), (180, "p1"), (200, "p1")] {
            let tag = (!tag.is_empty()).then_some(tag);
            let resp = parse(&fwd).response(code, "X", tag).unwrap().to_bytes();
            let (out, dest) = e.handle(&resp, pbx, local).unwrap();
            assert_eq!(dest, ua, "{code}");
            assert_eq!(parse(&out).vias().unwrap().len(), 1);
        }
        // In-dialog keep-alives are answered, never forwarded.
        for m in ["INFO", "UPDATE", "MESSAGE", "OPTIONS"] {
            let (r, dest) = e.handle(&request(m, ";tag=p1", 3, ""), ua, local).unwrap();
            assert_eq!(dest, ua);
            assert_eq!(parse(&r).status_code(), Some(200), "{m}");
        }
        // No session timer was negotiated (neither side has `timer`), and
        // the keep-alive UPDATE the edge answered started none.
        let s = e.dialogs().session("p1@198.18.0.2", now_ms());
        assert!(s.is_none_or(|s| s.0.interval == 0), "{s:?}");
        // A re-INVITE without SDP and an INFO with a body go to the PBX.
        let (_, dest) = e
            .handle(&request("INVITE", ";tag=p1", 4, ""), ua, local)
            .unwrap();
        assert_eq!(dest, pbx);
        let (_, dest) = e
            .handle(&request("INFO", ";tag=p1", 5, "x"), ua, local)
            .unwrap();
        assert_eq!(dest, pbx);
        // A BYE from the PBX goes to the UA's learned address.
        let bye = "BYE sip:ua@198.18.0.2:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbx1\r\n\
             Route: <sip:198.18.0.1:5060;lr>\r\n\
             From: <sip:service@198.18.0.1>;tag=p1\r\n\
             To: <sip:ua@198.18.0.2>;tag=u1\r\n\
             Call-ID: p1@198.18.0.2\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n";
        let (out, dest) = e.handle(bye.as_bytes(), pbx, local).unwrap();
        assert_eq!(dest, ua);
        let out_msg = parse(&out);
        assert!(!out_msg.has_header("Route"));
        let (back, dest) = e.handle(&pbx_response(&out, 200, "u1"), ua, local).unwrap();
        assert_eq!(dest, pbx);
        assert_eq!(parse(&back).status_code(), Some(200));
        assert!(e.dialogs().is_empty());
    }

    fn timed_edge(reap: bool) -> Edge {
        let mut e = edge();
        e.cfg.timers = crate::session_timer::TimerConfig::new(2, 4, true).unwrap();
        e.cfg.reap_expired = reap;
        Edge::new(e.cfg.clone(), Box::new(NoSink), None)
    }

    /// An INVITE without Session-Expires: the edge inserts it, the PBX's
    /// 200 takes it, and the edge tracks the session.
    fn timed_call(e: &Edge) -> u64 {
        let (local, pbx, ua) = (
            EDGE.parse().unwrap(),
            PBX.parse().unwrap(),
            UA.parse().unwrap(),
        );
        let (fwd, _) = e
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local)
            .unwrap();
        let fwd_msg = parse(&fwd);
        assert_eq!(fwd_msg.header("Session-Expires"), Some("4"));
        let mut ok = fwd_msg.response(200, "OK", Some("p1")).unwrap();
        ok.push_header("Contact", "<sip:service@198.18.0.1:5080>");
        ok.push_header("Session-Expires", "4;refresher=uac");
        e.handle(&ok.to_bytes(), pbx, local).unwrap();
        let s = e.dialogs().session("p1@198.18.0.2", now_ms()).unwrap();
        assert_eq!(s.0.interval, 4);
        fwd_msg.call_id_hash().unwrap()
    }

    #[test]
    fn session_timer_refresh_by_update_then_expiry_and_reap() {
        let e = timed_edge(true);
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        timed_call(&e);
        let t0 = now_ms();
        // Below Min-SE with timer supported: 422 with Min-SE.
        let low = String::from_utf8(request("UPDATE", ";tag=p1", 2, ""))
            .unwrap()
            .replace(
                "Contact:",
                "Supported: timer\r\nSession-Expires: 1\r\nContact:",
            );
        let (r, _) = e.handle(low.as_bytes(), ua, local).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.header("Min-SE"), Some("2"));
        // An UPDATE in a dialog with a session timer is a refresh: it goes
        // to the PBX (which may run the same timer), and its 200 coming
        // back restarts the session timer.
        let pbx: SocketAddr = PBX.parse().unwrap();
        let (f, dest) = e
            .handle(&request("UPDATE", ";tag=p1", 3, ""), ua, local)
            .unwrap();
        assert_eq!(dest, pbx, "a refresh is never answered by the edge");
        let mut ok = parse(&f).response(200, "OK", None).unwrap();
        ok.push_header("Session-Expires", "4;refresher=uac");
        let (back, dest) = e.handle(&ok.to_bytes(), pbx, local).unwrap();
        assert_eq!(dest, ua);
        assert_eq!(parse(&back).status_code(), Some(200));
        let left = e.dialogs().session("p1@198.18.0.2", t0).unwrap().1.unwrap();
        assert!(left > 3_500, "{left}");
        assert!(e.expire(t0 + 3_000, local).is_empty());
        let byes = e.expire(t0 + 5_000, local);
        assert!(e.dialogs().is_empty());
        assert_eq!(
            e.counters
                .sessions_expired
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let dests: Vec<SocketAddr> = byes.iter().map(|(_, d)| *d).collect();
        assert_eq!(dests, vec![PBX.parse().unwrap(), ua]);
        for (b, _) in &byes {
            let b = parse(b);
            assert_eq!(b.method(), Some(&crate::sip::Method::Bye));
            assert_eq!(b.call_id(), Some("p1@198.18.0.2"));
        }
        let to_pbx = parse(&byes[0].0);
        assert_eq!(to_pbx.from_tag().as_deref(), Some("u1"));
        assert_eq!(to_pbx.to_tag().as_deref(), Some("p1"));
        // A late refresh: 481 (the dialog is gone).
        let (r, _) = e
            .handle(&request("UPDATE", ";tag=p1", 4, ""), ua, local)
            .unwrap();
        assert_eq!(parse(&r).status_code(), Some(481));
    }

    #[test]
    fn invite_below_min_se_gets_422_from_the_edge() {
        let e = timed_edge(false);
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let low = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace(
                "Contact:",
                "Supported: timer\r\nSession-Expires: 1\r\nContact:",
            );
        let (r, dest) = e.handle(low.as_bytes(), ua, local).unwrap();
        assert_eq!(dest, ua);
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.header("Min-SE"), Some("2"));
        assert_eq!(r.vias().unwrap().len(), 1);
        assert!(e.dialogs().is_empty());
        // Without timer support the value is raised and forwarded.
        let low = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Contact:", "Session-Expires: 1\r\nContact:");
        let (f, dest) = e.handle(low.as_bytes(), ua, local).unwrap();
        assert_eq!(dest, PBX.parse().unwrap());
        let f = parse(&f);
        assert_eq!(f.header("Session-Expires"), Some("2"));
        assert_eq!(f.header("Min-SE"), Some("2"));
    }

    #[test]
    fn expiry_without_reap_sends_nothing() {
        let e = timed_edge(false);
        let local = EDGE.parse().unwrap();
        timed_call(&e);
        assert!(e.expire(now_ms() + 5_000, local).is_empty());
        assert!(e.dialogs().is_empty());
    }

    #[test]
    fn options_and_errors() {
        let e = edge();
        let (local, ua) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let opt = String::from_utf8(request("OPTIONS", "", 1, ""))
            .unwrap()
            .replace(
                "OPTIONS sip:service@198.18.0.1:5080",
                "OPTIONS sip:198.18.0.1",
            );
        let (r, _) = e.handle(opt.as_bytes(), ua, local).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(200));
        assert!(r.has_header("Allow"));
        // For the PBX, which has not answered a ping yet: 503.
        let (r, _) = e.handle(&request("OPTIONS", "", 1, ""), ua, local).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(503));
        assert_eq!(r.header("Retry-After"), Some("1"));
        e.health
            .answered(PBX.parse().unwrap(), Duration::from_millis(1));
        let (r, _) = e.handle(&request("OPTIONS", "", 1, ""), ua, local).unwrap();
        assert_eq!(parse(&r).status_code(), Some(200));
        // Max-Forwards 0: 483.
        let zero = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        let (r, _) = e.handle(zero.as_bytes(), ua, local).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(483));
        // Its ACK (the edge's To tag) is not forwarded.
        let ack = String::from_utf8(request(
            "ACK",
            &format!(";tag={}", r.to_tag().unwrap()),
            1,
            "",
        ))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert!(e.handle(ack.as_bytes(), ua, local).is_none());
        assert_eq!(
            e.counters
                .acks_absorbed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Malformed: 400 with a reason; garbage: dropped.
        let bad = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Call-ID: p1@198.18.0.2\r\n", "");
        let (r, dest) = e.handle(bad.as_bytes(), ua, local).unwrap();
        assert_eq!(dest, ua);
        assert!(String::from_utf8_lossy(&r).starts_with("SIP/2.0 400 "));
        assert!(e.handle(b"hello world", ua, local).is_none());
        assert_eq!(
            e.counters
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
