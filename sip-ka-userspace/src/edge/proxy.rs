//! One message in, at most one message out: answer it, forward it, or
//! drop it (counted). Messages come as UDP datagrams or, cut by the
//! stream framer, from TCP/TLS connections ([`super::transport::stream`]).

use std::net::SocketAddr;

use super::{
    config::OptionsPolicy,
    forward::{self, fnv1a, via_param},
    keepalive::{self, Kind, MAX_ERROR_GROWTH},
    ms_keepalive::{self, MsKeepAliveOffer},
    state::{Counters, Edge},
    transport::Flow,
};
use crate::{
    edge::session_timer::RequestAction,
    logs, responder,
    shield::Evidence,
    sip::{
        is_crlf_keepalive, parse_message, response::error_response_stamped, Framing, Method,
        NameAddr, SipMessage,
    },
};

/// Bytes to send and by which flow.
pub type Out = Option<(Vec<u8>, Flow)>;

/// The largest UDP payload over IPv4 (65,535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Our Via parameter carrying the flow token of the connection a request
/// came in on (its response goes back there).
pub const VIA_FLOW: &str = "ska-flow";
/// Our Via parameter saying the request negotiated ms-keep-alive: its
/// response gets the answer header.
pub const VIA_MS_KEEPALIVE: &str = "ska-mka";
/// Our Via parameter saying a REGISTER used outbound: its 2xx gets
/// Flow-Timer.
pub const VIA_OUTBOUND: &str = "ska-ob";

/// A request as it came in, with what every answer to it needs.
struct Inbound {
    msg: SipMessage,
    src: Flow,
    local: SocketAddr,
    mka: MsKeepAliveOffer,
    /// Our To tag, for the answers the edge generates.
    tag: String,
    /// Set when the edge refused the request itself (evidence against
    /// its sender).
    refused: std::cell::Cell<bool>,
}

impl Inbound {
    /// The edge's own answer: top Via stamped (RFC 3581), ms-keep-alive's.
    fn with_mka(&self, mut r: SipMessage) -> SipMessage {
        forward::stamp_received(&mut r, self.src.peer());
        ms_keepalive::with_answer(self.mka, r)
    }

    /// The edge's own final response to the request, back where it came
    /// from.
    fn refuse(&self, code: u16, reason: &str) -> Out {
        let call_id = self.msg.call_id();
        self.refused.set(true);
        logs::edge_refused(call_id, format_args!("{code} {reason} to {}", self.src));
        self.msg
            .response(code, reason, Some(&self.tag))
            .map(|r| (self.with_mka(r).to_bytes(), self.src))
    }

    fn is_from_pbx(&self, edge: &Edge) -> bool {
        self.src == Flow::Udp(edge.cfg.upstream)
    }
}

impl Edge {
    /// [`Edge::handle`], every datagram parsed in full: no shortcut.
    pub fn handle_full(&self, raw: &[u8], src: SocketAddr, local: SocketAddr, now_ms: u64) -> Out {
        let c = &self.counters;
        if is_crlf_keepalive(raw) || raw.first().is_some_and(|b| b & 0xC0 == 0) {
            Counters::bump(&c.other);
            let shared = self.responder.as_ref()?;
            return responder::answer(shared, raw, src).map(|r| (r, Flow::Udp(src)));
        }
        self.handle_message(raw, Framing::Datagram, Flow::Udp(src), local, now_ms)
    }

    /// Handles one message (a datagram's, or one the stream framer cut)
    /// that arrived by `src` at the listen address `local`.
    pub fn handle_message(
        &self,
        raw: &[u8],
        framing: Framing,
        src: Flow,
        local: SocketAddr,
        now_ms: u64,
    ) -> Out {
        let c = &self.counters;
        let parsed = parse_message(raw, framing, &self.tun().limits);
        if let Ok(msg) = &parsed {
            self.take_over(msg, now_ms);
        }
        match parsed {
            Ok(msg) if msg.is_request() => {
                let out = self.request(msg, raw.len(), src, local, now_ms);
                self.no_amplifier(out, raw.len(), src)
            }
            Ok(msg) => self.response(msg, src, local, now_ms),
            Err(err) => {
                self.observe(src, Evidence::Refusal, now_ms);
                let tag = format!("ska{:012x}", fnv1a(&[raw]) & 0xffff_ffff_ffff);
                let stamp = |v: &mut _| forward::stamp_via(v, src.peer());
                match error_response_stamped(raw, &err, &tag, stamp) {
                    // The answer spells out compact header names and adds a
                    // tag: over UDP, whose source may be spoofed, it must not
                    // make the edge an amplifier.
                    Some(bytes)
                        if !src.is_stream() && bytes.len() > raw.len() + MAX_ERROR_GROWTH =>
                    {
                        logs::edge_unparsed(raw, format_args!("400 to {src} too large: dropped"));
                        Counters::bump(&c.error_answers_dropped);
                        None
                    }
                    Some(bytes) => {
                        logs::edge_unparsed(raw, format_args!("400 to {src}: {err}"));
                        Counters::bump(&c.bad_requests);
                        Some((bytes, src))
                    }
                    None => {
                        logs::edge_unparsed(raw, format_args!("dropped from {src}: {err}"));
                        Counters::bump(&c.dropped);
                        None
                    }
                }
            }
        }
    }

    /// A request from a UA or from the PBX: the keep-alives the edge
    /// answers itself, then routing by direction.
    fn request(
        &self,
        mut msg: SipMessage,
        raw_len: usize,
        src: Flow,
        local: SocketAddr,
        now_ms: u64,
    ) -> Out {
        let from_pbx = src == Flow::Udp(self.cfg.upstream);
        if !from_pbx && self.screen(&msg, src, now_ms) {
            return None;
        }
        let mka = if from_pbx {
            msg.remove_header("ms-keep-alive");
            MsKeepAliveOffer::None
        } else {
            ms_keepalive::take(self, &mut msg, src)
        };
        if !from_pbx {
            if let Some(answer) = self.answer_keepalive(&msg, raw_len, src, local, mka, now_ms) {
                return answer;
            }
            // Keep-alives aside, every request counts toward a flood.
            if self.count_request(src, now_ms) {
                return None;
            }
        }
        let inbound = Inbound {
            tag: keepalive::local_tag(&msg),
            msg,
            src,
            local,
            mka,
            refused: std::cell::Cell::new(false),
        };
        // The ACK for a final response the edge generated itself (483, 482,
        // 422, 430, 404) carries the edge's To tag: it ends there.
        if inbound.msg.method() == Some(&Method::Ack)
            && inbound.msg.to_tag().as_deref() == Some(inbound.tag.as_str())
        {
            Counters::bump(&self.counters.acks_absorbed);
            return None;
        }
        let mut fwd = inbound.msg.clone();
        let popped = forward::pop_own_routes(&mut fwd, local);
        if from_pbx {
            self.request_from_pbx(&inbound, fwd, &popped, now_ms)
        } else {
            let out = self.request_from_ua(&inbound, fwd, now_ms);
            if inbound.refused.get() {
                self.observe(src, Evidence::Refusal, now_ms);
            }
            out
        }
    }

    /// A keep-alive from a UA that the edge answers itself (`None`: not
    /// one, the request goes on). The answer is `Some(None)` only when
    /// the request cannot be answered at all.
    fn answer_keepalive(
        &self,
        msg: &SipMessage,
        raw_len: usize,
        src: Flow,
        local: SocketAddr,
        mka: MsKeepAliveOffer,
        now_ms: u64,
    ) -> Option<Out> {
        let c = &self.counters;
        let kind = keepalive::classify(msg, local)?;
        let call_id = msg.call_id().unwrap_or_default();
        let up = self.health.is_up();
        let forward_options =
            kind == Kind::OptionsToPbx && self.tun().options_pbx == OptionsPolicy::Forward;
        let mut dialogs = self.dialogs();
        let known = dialogs.known(call_id);
        // An UPDATE in a dialog with a session timer, or one that carries
        // Session-Expires, is a session refresh: the PBX may run the same
        // timer (RFC 4028), and a refresh the edge answered itself would
        // never reach it, so the PBX would end a live call. Refreshes are
        // forwarded like any request; only UPDATEs outside any timer are
        // keep-alives.
        let refresh = kind == Kind::InDialog
            && msg.method() == Some(&Method::Update)
            && (dialogs
                .session(call_id, now_ms)
                .is_some_and(|s| s.0.interval > 0)
                || msg.session_expires().is_ok_and(|se| se.is_some()));
        if refresh || forward_options {
            return None;
        }
        // Not idle (--dialog-idle-timeout).
        dialogs.touch(msg, Some(src), now_ms);
        drop(dialogs);
        if kind == Kind::InDialog && !known {
            self.observe(src, Evidence::UnknownDialog, now_ms);
        }
        Counters::bump(match kind {
            Kind::InDialog if known => &c.ka_in_dialog_ok,
            Kind::InDialog => &c.ka_unknown_dialog,
            Kind::OptionsToEdge => &c.options_edge,
            Kind::OptionsToPbx if up => &c.options_pbx_up,
            Kind::OptionsToPbx => &c.options_pbx_down,
        });
        Some(
            keepalive::answer(msg, kind, known, up, self.tun().retry_after()).map(|answer| {
                let answer = ms_keepalive::with_answer(mka, keepalive::stamped(answer, src.peer()));
                let bound = (!src.is_stream()).then_some(raw_len + MAX_ERROR_GROWTH);
                (keepalive::to_bytes_within(answer, bound), src)
            }),
        )
    }

    /// The edge's own answer to a UDP request, much larger than the
    /// request, is not sent: its source may be forged (an amplifier).
    fn no_amplifier(&self, out: Out, raw_len: usize, src: Flow) -> Out {
        let amplifies = |(b, d): &(Vec<u8>, Flow)| keepalive::amplifies(b, *d, src, raw_len);
        if !out.as_ref().is_some_and(amplifies) {
            return out;
        }
        log::debug!("edge: answer to {src} larger than its request: dropped");
        Counters::bump(&self.counters.answers_dropped_size);
        None
    }

    /// A request from a UA: it goes to the PBX.
    fn request_from_ua(&self, inbound: &Inbound, mut fwd: SipMessage, now_ms: u64) -> Out {
        let c = &self.counters;
        let (src, local) = (inbound.src, inbound.local);
        let dest = Flow::Udp(self.cfg.upstream);
        let hop = self.hop(&fwd, src, dest, local, inbound.mka);
        let key = &self.transports.tokens;
        if let Err(refusal) = forward::prepare_request(&mut fwd, src.peer(), local, &hop, key, dest)
        {
            return self.refuse_forward(inbound, refusal);
        }
        if fwd.method() == Some(&Method::Register) {
            if self.outbound_register(&inbound.msg) {
                Counters::bump(&c.registers_outbound);
                fwd.prepend_header(
                    "Path",
                    format!(
                        "<sip:{}@{}:{};lr;ob>",
                        self.transports.tokens.encode(&src),
                        forward::uri_host(local.ip()),
                        local.port()
                    ),
                );
            }
            if let Some(branch) = fwd.top_branch() {
                self.bindings
                    .on_register(&branch, &inbound.msg, src, now_ms);
            }
        }
        self.send_request(inbound, fwd, dest, src, now_ms)
    }

    /// A request from the PBX: to the UA its route, its dialog or its
    /// registration names.
    fn request_from_pbx(
        &self,
        inbound: &Inbound,
        mut fwd: SipMessage,
        popped: &[NameAddr],
        now_ms: u64,
    ) -> Out {
        let dest = match self.pbx_request_target(&fwd, popped, now_ms) {
            Ok(d) => d,
            Err((code, reason)) => return inbound.refuse(code, reason),
        };
        let hop = self.hop(&fwd, inbound.src, dest, inbound.local, inbound.mka);
        if let Err(refusal) = forward::prepare_request(
            &mut fwd,
            inbound.src.peer(),
            inbound.local,
            &hop,
            &self.transports.tokens,
            dest,
        ) {
            return self.refuse_forward(inbound, refusal);
        }
        self.send_request(inbound, fwd, dest, dest, now_ms)
    }

    /// Where a request from the PBX goes, or the refusal it gets.
    fn pbx_request_target(
        &self,
        fwd: &SipMessage,
        popped: &[NameAddr],
        now_ms: u64,
    ) -> Result<Flow, (u16, &'static str)> {
        let c = &self.counters;
        // A flow token in our Route (Record-Route or Path) names the
        // connection the UA opened; it wins over anything learned.
        let users: Vec<&str> = popped.iter().filter_map(|r| r.uri.user()).collect();
        let token = users.iter().find_map(|u| self.transports.tokens.decode(u));
        if token.is_none() && !users.is_empty() {
            // RFC 5626 5.3: a tampered token (or one made with another
            // key) gets 403.
            Counters::bump(&c.flow_failed);
            return Err((403, "Forbidden (Bad Flow Token)"));
        }
        // A request that starts a dialog (no To tag) goes by its Request-URI:
        // a dialog under its Call-ID is another leg's (a proxy PBX calling a
        // phone behind this edge keeps the caller's Call-ID).
        let call_id = fwd.call_id().unwrap_or_default();
        let dialog_ua = fwd.to_tag().and_then(|_| self.dialogs().ua_flow(call_id));
        let learned = match token {
            // The connection the token names is gone; the UA may have
            // reached the edge again on a new one within the dialog
            // (after a restart, or a reconnect).
            Some(t) if t.is_stream() && !self.transports.alive(&t) => Some(
                dialog_ua
                    .filter(|f| f.is_stream() && self.transports.alive(f))
                    .unwrap_or(t),
            ),
            Some(t) => Some(t),
            None => None,
        };
        let learned = learned.or(dialog_ua).or_else(|| {
            // A PBX that ignores Path: the Contact it calls was
            // registered by a flow the edge remembers.
            fwd.request_uri()
                .and_then(|u| self.bindings.lookup(u, now_ms))
        });
        let target = learned.or_else(|| match forward::request_destination(fwd) {
            Some((addr, Some(kind))) => {
                // A UA on TCP/TLS without a flow token: only a connection
                // it opened from that address reaches it (the edge opens
                // none).
                Some(
                    self.transports
                        .find_conn(addr, kind)
                        .unwrap_or(Flow::Stream {
                            id: 0,
                            peer: addr,
                            kind,
                        }),
                )
            }
            Some((addr, None)) => Some(Flow::Udp(addr)),
            None => None,
        });
        match target {
            Some(d) if self.transports.alive(&d) => Ok(d),
            Some(Flow::Stream { id: 0, .. }) => {
                // No connection from that UA (and no token): the edge
                // cannot open one toward it.
                Counters::bump(&c.unroutable);
                Err((480, "Temporarily Unavailable (No Connection)"))
            }
            Some(_) => {
                // RFC 5626 5.3: the flow is gone.
                Counters::bump(&c.flow_failed);
                Err((430, "Flow Failed"))
            }
            None => {
                Counters::bump(&c.unroutable);
                Err((404, "Not Found"))
            }
        }
    }

    /// 483 or 482 for a request forwarding refused.
    fn refuse_forward(&self, inbound: &Inbound, refusal: forward::Refusal) -> Out {
        let c = &self.counters;
        Counters::bump(match refusal {
            forward::Refusal::TooManyHops => &c.too_many_hops,
            forward::Refusal::Loop => &c.loops,
        });
        let (code, reason) = refusal.status();
        inbound.refuse(code, reason)
    }

    /// The common tail of both directions: session timers and dialog
    /// state (one look at the table), then the bytes, retransmitted on
    /// the UDP leg for a UA on a stream.
    fn send_request(
        &self,
        inbound: &Inbound,
        mut fwd: SipMessage,
        dest: Flow,
        ua: Flow,
        now_ms: u64,
    ) -> Out {
        let c = &self.counters;
        let src = inbound.src;
        {
            let mut dialogs = self.dialogs();
            if let RequestAction::Reject(r) = dialogs.timer_request(&mut fwd, Some(&inbound.tag)) {
                drop(dialogs);
                Counters::bump(&c.timer_rejects);
                // The reject answers the request as it came in (our Via off).
                let mut r = *r;
                r.remove_top_via();
                return Some((inbound.with_mka(r).to_bytes(), src));
            }
            dialogs.on_request_from(&fwd, ua, !inbound.is_from_pbx(self), now_ms);
        }
        let bytes = fwd.to_bytes();
        if let Flow::Udp(to) = dest {
            if bytes.len() > MAX_UDP_PAYLOAD {
                // Came over a stream, too big for a datagram.
                Counters::bump(&c.bad_requests);
                return inbound.refuse(513, "Message Too Large");
            }
            // The UA on a stream will not retransmit: the edge does, on
            // the UDP leg (see `retransmit`).
            if src.is_stream() {
                let method = fwd.method().map_or("", Method::as_str);
                let branch = fwd
                    .top_via()
                    .and_then(|v| v.branch().map(str::to_string))
                    .unwrap_or_default();
                if method != "ACK" {
                    self.retransmits
                        .add(&branch, method, bytes.clone(), to, inbound.local, now_ms);
                }
            }
        }
        Counters::bump(&c.requests_forwarded);
        Some((bytes, dest))
    }

    fn response(&self, mut msg: SipMessage, src: Flow, local: SocketAddr, now_ms: u64) -> Out {
        let c = &self.counters;
        let Some((ours, next)) = forward::prepare_response(&mut msg, local) else {
            Counters::bump(&c.dropped);
            return None;
        };
        // Only the PBX sends responses toward UAs. A UA answers requests
        // of the PBX, so its responses go to the PBX and nowhere else:
        // anything else is a forged Via turning the edge into a reflector.
        let from_pbx = src == Flow::Udp(self.cfg.upstream);
        if !from_pbx && (via_param(&ours, VIA_FLOW).is_some() || next != self.cfg.upstream) {
            Counters::bump(&c.dropped);
            return None;
        }
        // Our branch seals the request's transaction and the flow it left
        // by: a response from anyone else (a phone forging the registrar's
        // 200, a 2xx to another caller's BYE) is not an answer to it. A
        // phone's genuine answer to the PBX's request still ends or
        // confirms that request's dialog: it is the UA the request went to.
        if !forward::answers_request_sent_to(&ours, &msg, &self.transports.tokens, &src) {
            Counters::bump(&c.responses_refused);
            return None;
        }
        // Retransmissions and bindings wait for the PBX's answers only.
        if let (true, Some(branch), Some(cseq), Some(code)) =
            (from_pbx, ours.branch(), msg.cseq(), msg.status_code())
        {
            self.retransmits
                .on_response(branch, cseq.method.as_str(), code, now_ms);
            if cseq.method == Method::Register {
                let changes = self.bindings.on_response(branch, code, now_ms);
                self.share_bindings(changes);
            }
        }
        // ms-keep-alive is hop-by-hop: whatever the PBX said stays here.
        msg.remove_header("ms-keep-alive");
        let dest = match via_param(&ours, VIA_FLOW) {
            Some(token) => match self.transports.tokens.decode(&token) {
                Some(flow) if self.transports.alive(&flow) => flow,
                _ => {
                    // The UA's connection is gone: nothing reaches it.
                    Counters::bump(&c.flow_failed);
                    return None;
                }
            },
            None => Flow::Udp(next),
        };
        if from_pbx && self.on_pbx_answer(&ours, &msg, dest.peer(), now_ms) {
            return None;
        }
        if via_param(&ours, VIA_MS_KEEPALIVE).is_some() {
            msg.push_header(
                "ms-keep-alive",
                ms_keepalive::answer(self.tun().streams.ms_keepalive_timeout),
            );
        }
        let register_2xx = msg.cseq().is_some_and(|c| c.method == Method::Register)
            && msg.status_code().is_some_and(|s| (200..300).contains(&s));
        if register_2xx && via_param(&ours, VIA_OUTBOUND).is_some() && !msg.has_header("Flow-Timer")
        {
            let st = self.tun().streams;
            let secs = if dest.is_stream() {
                st.flow_timer_stream
            } else {
                st.flow_timer_udp
            };
            msg.push_header("Flow-Timer", secs.to_string());
        }
        let mut dialogs = self.dialogs();
        dialogs.timer_response(&mut msg, now_ms);
        dialogs.on_response(&msg, now_ms);
        drop(dialogs);
        Counters::bump(&c.responses_forwarded);
        Some((msg.to_bytes(), dest))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::util::clock::virtual_clock::now;
    use crate::{
        edge::{config::EdgeConfig, dialog::NoSink},
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
                streams: Default::default(),
                options_pbx: Default::default(),
                tls: None,
                state: Default::default(),
                shield: Default::default(),
                ws: Default::default(),
            },
            Box::new(NoSink),
            None,
            now(),
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
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local, now())
            .unwrap();
        assert_eq!(dest.peer(), pbx);
        let fwd_msg = parse(&fwd);
        assert_eq!(fwd_msg.max_forwards(), Some(69));
        assert!(fwd_msg.has_header("Record-Route"));
        // Unknown dialog before any 1xx.
        let (r, _) = e
            .handle(&request("INFO", ";tag=p1", 2, ""), ua, local, now())
            .unwrap();
        assert_eq!(parse(&r).status_code(), Some(481));
        for (code, tag) in [(100, ""), (180, "p1"), (200, "p1")] {
            let tag = (!tag.is_empty()).then_some(tag);
            let resp = parse(&fwd).response(code, "X", tag).unwrap().to_bytes();
            let (out, dest) = e.handle(&resp, pbx, local, now()).unwrap();
            assert_eq!(dest.peer(), ua, "{code}");
            assert_eq!(parse(&out).vias().unwrap().len(), 1);
        }
        // In-dialog keep-alives are answered, never forwarded.
        for m in ["INFO", "UPDATE", "MESSAGE", "OPTIONS"] {
            let (r, dest) = e
                .handle(&request(m, ";tag=p1", 3, ""), ua, local, now())
                .unwrap();
            assert_eq!(dest.peer(), ua);
            assert_eq!(parse(&r).status_code(), Some(200), "{m}");
        }
        // No session timer was negotiated (neither side has `timer`), and
        // the keep-alive UPDATE the edge answered started none.
        let s = e.dialogs().session("p1@198.18.0.2", now());
        assert!(s.is_none_or(|s| s.0.interval == 0), "{s:?}");
        // A re-INVITE without SDP and an INFO with a body go to the PBX.
        let (_, dest) = e
            .handle(&request("INVITE", ";tag=p1", 4, ""), ua, local, now())
            .unwrap();
        assert_eq!(dest.peer(), pbx);
        let (_, dest) = e
            .handle(&request("INFO", ";tag=p1", 5, "x"), ua, local, now())
            .unwrap();
        assert_eq!(dest.peer(), pbx);
        // A BYE from the PBX goes to the UA's learned address.
        let bye = "BYE sip:ua@198.18.0.2:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbx1\r\n\
             Route: <sip:198.18.0.1:5060;lr>\r\n\
             From: <sip:service@198.18.0.1>;tag=p1\r\n\
             To: <sip:ua@198.18.0.2>;tag=u1\r\n\
             Call-ID: p1@198.18.0.2\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n";
        let (out, dest) = e.handle(bye.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest.peer(), ua);
        let out_msg = parse(&out);
        assert!(!out_msg.has_header("Route"));
        let (back, dest) = e
            .handle(&pbx_response(&out, 200, "u1"), ua, local, now())
            .unwrap();
        assert_eq!(dest.peer(), pbx);
        assert_eq!(parse(&back).status_code(), Some(200));
        assert!(e.dialogs().is_empty());
    }

    fn timed_edge(reap: bool) -> Edge {
        let mut e = edge();
        e.cfg.timers = crate::edge::session_timer::TimerConfig::new(2, 4, true).unwrap();
        e.cfg.reap_expired = reap;
        Edge::new(e.cfg.clone(), Box::new(NoSink), None, now())
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
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local, now())
            .unwrap();
        let fwd_msg = parse(&fwd);
        assert_eq!(fwd_msg.header("Session-Expires"), Some("4"));
        let mut ok = fwd_msg.response(200, "OK", Some("p1")).unwrap();
        ok.push_header("Contact", "<sip:service@198.18.0.1:5080>");
        ok.push_header("Session-Expires", "4;refresher=uac");
        e.handle(&ok.to_bytes(), pbx, local, now()).unwrap();
        let s = e.dialogs().session("p1@198.18.0.2", now()).unwrap();
        assert_eq!(s.0.interval, 4);
        fwd_msg.call_id_hash().unwrap()
    }

    #[test]
    fn session_timer_refresh_by_update_then_expiry_and_reap() {
        let e = timed_edge(true);
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        timed_call(&e);
        let t0 = now();
        // Below Min-SE with timer supported: 422 with Min-SE.
        let low = String::from_utf8(request("UPDATE", ";tag=p1", 2, ""))
            .unwrap()
            .replace(
                "Contact:",
                "Supported: timer\r\nSession-Expires: 1\r\nContact:",
            );
        let (r, _) = e.handle(low.as_bytes(), ua, local, now()).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.header("Min-SE"), Some("2"));
        // An UPDATE in a dialog with a session timer is a refresh: it goes
        // to the PBX (which may run the same timer), and its 200 coming
        // back restarts the session timer.
        let pbx: SocketAddr = PBX.parse().unwrap();
        let (f, dest) = e
            .handle(&request("UPDATE", ";tag=p1", 3, ""), ua, local, now())
            .unwrap();
        assert_eq!(dest.peer(), pbx, "a refresh is never answered by the edge");
        let mut ok = parse(&f).response(200, "OK", None).unwrap();
        ok.push_header("Session-Expires", "4;refresher=uac");
        let (back, dest) = e.handle(&ok.to_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest.peer(), ua);
        assert_eq!(parse(&back).status_code(), Some(200));
        let left = e.dialogs().session("p1@198.18.0.2", t0).unwrap().1.unwrap();
        assert!(left > 3_500, "{left}");
        assert!(e.expire(t0 + 3_000, 0, local).is_empty());
        let byes = e.expire(t0 + 5_000, 0, local);
        assert!(e.dialogs().is_empty());
        assert_eq!(
            e.counters
                .sessions_expired
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let dests: Vec<SocketAddr> = byes.iter().map(|(_, d)| d.peer()).collect();
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
            .handle(&request("UPDATE", ";tag=p1", 4, ""), ua, local, now())
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
        let (r, dest) = e.handle(low.as_bytes(), ua, local, now()).unwrap();
        assert_eq!(dest.peer(), ua);
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.header("Min-SE"), Some("2"));
        assert_eq!(r.vias().unwrap().len(), 1);
        assert!(e.dialogs().is_empty());
        // Without timer support the value is raised and forwarded.
        let low = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Contact:", "Session-Expires: 1\r\nContact:");
        let (f, dest) = e.handle(low.as_bytes(), ua, local, now()).unwrap();
        assert_eq!(dest.peer(), PBX.parse().unwrap());
        let f = parse(&f);
        assert_eq!(f.header("Session-Expires"), Some("2"));
        assert_eq!(f.header("Min-SE"), Some("2"));
    }

    #[test]
    fn expiry_without_reap_sends_nothing() {
        let e = timed_edge(false);
        let local = EDGE.parse().unwrap();
        timed_call(&e);
        assert!(e.expire(now() + 5_000, 0, local).is_empty());
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
            )
            // As phones send it: with room for the capabilities in the
            // answer (a bare one gets a bare answer over UDP).
            .replace(
                "Content-Length",
                "User-Agent: Example Phone 1.0\r\nAccept: application/sdp\r\n\
                 Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nContent-Length",
            );
        let (r, _) = e.handle(opt.as_bytes(), ua, local, now()).unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(200));
        assert!(r.has_header("Allow"));
        // For the PBX, which has not answered a ping yet: 503.
        let (r, _) = e
            .handle(&request("OPTIONS", "", 1, ""), ua, local, now())
            .unwrap();
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(503));
        assert_eq!(r.header("Retry-After"), Some("1"));
        e.health
            .answered(PBX.parse().unwrap(), Duration::from_millis(1));
        let (r, _) = e
            .handle(&request("OPTIONS", "", 1, ""), ua, local, now())
            .unwrap();
        assert_eq!(parse(&r).status_code(), Some(200));
        // Max-Forwards 0: 483.
        let zero = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        let (r, _) = e.handle(zero.as_bytes(), ua, local, now()).unwrap();
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
        assert!(e.handle(ack.as_bytes(), ua, local, now()).is_none());
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
        let (r, dest) = e.handle(bad.as_bytes(), ua, local, now()).unwrap();
        assert_eq!(dest.peer(), ua);
        assert!(String::from_utf8_lossy(&r).starts_with("SIP/2.0 400 "));
        assert!(e.handle(b"hello world", ua, local, now()).is_none());
        assert_eq!(
            e.counters
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn a_400_over_udp_is_never_much_larger_than_its_request() {
        let e = edge();
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        // Compact headers, a Via per line: the 400 spells every name out
        // (and there are too many headers, so it is a 400).
        let vias: String = (0..200)
            .map(|i| format!("v:SIP/2.0/UDP a{i}\r\n"))
            .collect();
        let compact = format!(
            "OPTIONS sip:a SIP/2.0\r\n{vias}f:<sip:a>;tag=1\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n"
        );
        let answer = e.handle(compact.as_bytes(), ua, local, now());
        if let Some((bytes, _)) = &answer {
            assert!(
                bytes.len() <= compact.len() + MAX_ERROR_GROWTH,
                "{} bytes answered to {}",
                bytes.len(),
                compact.len()
            );
        }
        assert_eq!(
            e.counters
                .error_answers_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Over a connection (no spoofed source) it is answered.
        let (flow, _rx) = tcp_conn(&e, "198.18.0.2:40009".parse().unwrap(), local);
        let stream = compact.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        let (r, _) = e
            .handle_message(stream.as_bytes(), Framing::Stream, flow, local, now())
            .unwrap();
        assert!(String::from_utf8_lossy(&r).starts_with("SIP/2.0 400 "));
    }

    #[test]
    fn a_keepalive_answer_over_udp_is_never_much_larger_than_its_request() {
        let e = edge();
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let minimal = |vias: usize| {
            let vias: String = (0..vias)
                .map(|i| format!("v:SIP/2.0/UDP a{i};branch=z9hG4bK{i}\r\n"))
                .collect();
            format!("OPTIONS sip:198.18.0.1 SIP/2.0\r\n{vias}f:<sip:a>;tag=1\r\nt:<sip:b>\r\ni:c\r\nCSeq:1 OPTIONS\r\n\r\n")
        };
        // A minimal OPTIONS: answered 200, without the capability headers
        // that would make the answer much larger than the request.
        let one = minimal(1);
        let (r, dest) = e.handle(one.as_bytes(), ua, local, now()).unwrap();
        assert_eq!(dest.peer(), ua);
        assert!(
            r.len() <= one.len() + MAX_ERROR_GROWTH,
            "{} to {}",
            r.len(),
            one.len()
        );
        let r = parse(&r);
        assert_eq!(r.status_code(), Some(200));
        assert!(!r.has_header("Allow"));
        // Compact Vias, each spelt out in the answer: not sent, counted.
        let many = minimal(40);
        assert!(e.handle(many.as_bytes(), ua, local, now()).is_none());
        let dropped = &e.counters.answers_dropped_size;
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Over a connection (no spoofed source) both are answered whole.
        let (flow, _rx) = tcp_conn(&e, "198.18.0.2:40010".parse().unwrap(), local);
        for text in [one, many] {
            // Streams need a Content-Length.
            let text = text
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                .replace("\r\n\r\n", "\r\nl:0\r\n\r\n");
            let (r, _) = e
                .handle_message(text.as_bytes(), Framing::Stream, flow, local, now())
                .unwrap();
            assert!(parse(&r).has_header("Allow"));
        }
    }

    /// A fake connection in the edge's registry: its flow, and what the
    /// edge queued for it.
    fn tcp_conn(
        e: &Edge,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> (Flow, tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let id = e.transports.add_conn(crate::edge::transport::Conn {
            tx,
            peer,
            local,
            idle_ms: Default::default(),
        });
        let flow = Flow::Stream {
            id,
            peer,
            kind: crate::edge::transport::StreamKind::Tcp,
        };
        (flow, rx)
    }

    #[test]
    fn a_ua_on_tcp_gets_responses_and_pbx_requests_over_its_connection() {
        let e = edge();
        let (local, pbx): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), PBX.parse().unwrap());
        let (flow, _rx) = tcp_conn(&e, "198.18.0.2:40001".parse().unwrap(), local);
        let invite = String::from_utf8(request("INVITE", "", 1, "v=0\r\n"))
            .unwrap()
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        let (fwd, dest) = e
            .handle_message(invite.as_bytes(), Framing::Stream, flow, local, now())
            .unwrap();
        assert_eq!(
            dest,
            Flow::Udp(pbx),
            "transport conversion: the PBX is on UDP"
        );
        let f = parse(&fwd);
        let top = f.top_via().unwrap();
        assert_eq!(top.transport.to_ascii_uppercase(), "UDP");
        let token = e.transports.tokens.encode(&flow);
        assert_eq!(top.param(VIA_FLOW), Some(Some(token.as_str())));
        // Two Record-Route entries: PBX side (UDP) on top, UA side (TCP).
        let rr = f.record_routes().unwrap();
        assert_eq!(rr.len(), 2, "{rr:?}");
        assert_eq!(rr[0].uri.user(), Some(token.as_str()));
        assert_eq!(rr[0].uri.param("transport"), None);
        assert_eq!(rr[1].uri.param("transport"), Some(Some("tcp")));
        // The PBX's responses go back over the connection, forked ones
        // included: two early dialogs (To tags p1, p2), the 200 from p2.
        for (code, tag) in [(180, "p1"), (183, "p2"), (200, "p2")] {
            let resp = f.response(code, "X", Some(tag)).unwrap().to_bytes();
            let (out, dest) = e.handle(&resp, pbx, local, now()).unwrap();
            assert_eq!(dest, flow, "{code} {tag}");
            assert_eq!(parse(&out).vias().unwrap().len(), 1);
        }
        assert_eq!(
            e.dialogs().phase("p1@198.18.0.2"),
            Some(crate::edge::dialog::Phase::Confirmed)
        );
        // The PBX's BYE, routed by the Record-Route it got, reaches the
        // UA's connection, with a TCP Via of ours.
        let routes = format!("{}, {}", rr[0], rr[1]);
        let bye = format!(
            "BYE sip:ua@198.18.0.2:5062;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbxbye\r\n\
             Route: {routes}\r\n\
             From: <sip:service@198.18.0.1>;tag=p2\r\n\
             To: <sip:ua@198.18.0.2>;tag=u1\r\n\
             Call-ID: other-call-id-so-only-the-route-can-tell\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let (out, dest) = e.handle(bye.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, flow);
        let out = parse(&out);
        assert!(!out.has_header("Route"));
        assert_eq!(out.top_via().unwrap().transport.to_ascii_uppercase(), "TCP");
        // A forged token is not a flow: 403 to the PBX (RFC 5626 5.3).
        let last = if token.ends_with('0') { '1' } else { '0' };
        let forged = bye.replace(&token, &format!("{}{last}", &token[..token.len() - 1]));
        let (out, dest) = e.handle(forged.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(pbx));
        assert_eq!(parse(&out).status_code(), Some(403));
        // Connection gone: 430 Flow Failed to the PBX.
        e.transports.remove_conn(match flow {
            Flow::Stream { id, .. } => id,
            Flow::Udp(_) => unreachable!(),
        });
        let (out, dest) = e.handle(bye.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(pbx));
        assert_eq!(parse(&out).status_code(), Some(430));
    }

    #[test]
    fn options_for_the_pbx_are_forwarded_when_configured() {
        let mut cfg = edge().cfg;
        cfg.options_pbx = OptionsPolicy::Forward;
        let e = Edge::new(cfg, Box::new(NoSink), None, now());
        let (local, ua) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let (out, dest) = e
            .handle(&request("OPTIONS", "", 1, ""), ua, local, now())
            .unwrap();
        assert_eq!(dest, Flow::Udp(PBX.parse().unwrap()));
        assert!(parse(&out).is_request());
        // OPTIONS to the edge itself are still answered.
        let opt = String::from_utf8(request("OPTIONS", "", 1, ""))
            .unwrap()
            .replace(
                "OPTIONS sip:service@198.18.0.1:5080",
                "OPTIONS sip:198.18.0.1",
            );
        let (r, _) = e.handle(opt.as_bytes(), ua, local, now()).unwrap();
        assert_eq!(parse(&r).status_code(), Some(200));
    }

    #[test]
    fn ms_keepalive_over_udp_is_removed_and_not_negotiated() {
        let e = edge();
        let (local, ua) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let req = String::from_utf8(request("INVITE", "", 1, ""))
            .unwrap()
            .replace("Contact:", "ms-keep-alive: UAC;hop-hop=yes\r\nContact:");
        let (out, _) = e.handle(req.as_bytes(), ua, local, now()).unwrap();
        let out = parse(&out);
        assert!(
            !out.has_header("ms-keep-alive"),
            "hop-by-hop, never forwarded"
        );
        assert_eq!(out.top_via().unwrap().param(VIA_MS_KEEPALIVE), None);
    }

    #[test]
    fn responses_from_uas_go_to_the_pbx_only() {
        let e = edge();
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        // A forged response whose second Via names a third party: the edge
        // must not reflect it there (nor over someone's connection).
        for (next, flow) in [("203.0.113.9:9999", ""), ("198.18.0.1:5080", ";ska-flow=x")] {
            let forged = format!(
                "SIP/2.0 200 OK\r\n\
                 Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bKskaZ{flow}\r\n\
                 Via: SIP/2.0/UDP {next};branch=z9hG4bKx\r\n\
                 From: <sip:a@x>;tag=1\r\n\
                 To: <sip:b@x>;tag=2\r\n\
                 Call-ID: r1\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            assert_eq!(
                e.handle(forged.as_bytes(), ua, local, now()),
                None,
                "{next}{flow}"
            );
        }
        // The UA's answer to a request of the PBX does go to the PBX.
        let pbx: SocketAddr = PBX.parse().unwrap();
        let bye = "BYE sip:ua@198.18.0.2:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbx9\r\n\
             From: <sip:service@198.18.0.1>;tag=p1\r\n\
             To: <sip:ua@198.18.0.2>;tag=u1\r\n\
             Call-ID: nothing-known\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n";
        let (out, dest) = e.handle(bye.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(ua));
        let (back, dest) = e
            .handle(&pbx_response(&out, 200, "u1"), ua, local, now())
            .unwrap();
        assert_eq!(dest, Flow::Udp(pbx));
        assert_eq!(parse(&back).status_code(), Some(200));
    }

    /// A response built on what the edge forwarded to the PBX, but sent
    /// by someone else: our Via with its real branch on top (the worst
    /// case: the attacker knows it), the PBX's address as the next Via so
    /// the reflection check lets it by.
    fn forged_answer(fwd: &[u8], code: u16, to_tag: Option<&str>) -> Vec<u8> {
        let f = parse(fwd);
        let ua_via = f.header_values("Via").nth(1).unwrap().to_string();
        String::from_utf8(f.response(code, "OK", to_tag).unwrap().to_bytes())
            .unwrap()
            .replace(&ua_via, "SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKforged")
            .into_bytes()
    }

    #[test]
    fn a_forged_registrar_answer_creates_no_binding() {
        let e = edge();
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let reg = String::from_utf8(request("REGISTER", "", 1, ""))
            .unwrap()
            .replace(
                "Contact: <sip:ua@198.18.0.2:5062>",
                "Contact: <sip:victim@10.201.1.77:5060>",
            );
        let (fwd, _) = e.handle(reg.as_bytes(), ua, local, now()).unwrap();
        let forged = forged_answer(&fwd, 200, Some("r1"));
        assert_eq!(e.handle(&forged, ua, local, now()), None);
        let victim = crate::sip::Uri::parse("sip:victim@10.201.1.77:5060").unwrap();
        assert_eq!(e.bindings.lookup(&victim, now()), None, "hijacked");
        assert_eq!(
            e.counters
                .responses_refused
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // The registrar's own answer still makes the binding.
        e.handle(
            &pbx_response(&fwd, 200, "r1"),
            PBX.parse().unwrap(),
            local,
            now(),
        )
        .unwrap();
        assert_eq!(e.bindings.lookup(&victim, now()), Some(Flow::Udp(ua)));
    }

    #[test]
    fn a_forged_answer_confirms_no_dialog_and_ends_none() {
        let e = edge();
        let (local, pbx, ua): (SocketAddr, SocketAddr, SocketAddr) = (
            EDGE.parse().unwrap(),
            PBX.parse().unwrap(),
            UA.parse().unwrap(),
        );
        let call = "p1@198.18.0.2";
        let (inv, _) = e
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local, now())
            .unwrap();
        // The caller answers its own INVITE: the PBX never accepted it.
        assert_eq!(
            e.handle(&forged_answer(&inv, 200, Some("p1")), ua, local, now()),
            None
        );
        assert_eq!(
            e.dialogs().phase(call),
            Some(crate::edge::dialog::Phase::Pending)
        );
        e.handle(&pbx_response(&inv, 200, "p1"), pbx, local, now())
            .unwrap();
        assert_eq!(
            e.dialogs().phase(call),
            Some(crate::edge::dialog::Phase::Confirmed)
        );
        // The UA's BYE: a 2xx from anyone but the PBX does not end it.
        let (bye, _) = e
            .handle(&request("BYE", ";tag=p1", 2, ""), ua, local, now())
            .unwrap();
        let other: SocketAddr = "198.18.0.66:5062".parse().unwrap();
        for from in [ua, other] {
            assert_eq!(
                e.handle(&forged_answer(&bye, 200, None), from, local, now()),
                None
            );
            assert!(
                e.dialogs().phase(call).is_some(),
                "ended by a forged 2xx from {from}"
            );
        }
        e.handle(&pbx_response(&bye, 200, "p1"), pbx, local, now())
            .unwrap();
        assert_eq!(e.dialogs().phase(call), None);
    }

    #[test]
    fn a_ua_answers_only_what_the_edge_sent_it() {
        let e = edge();
        let (local, pbx, ua): (SocketAddr, SocketAddr, SocketAddr) = (
            EDGE.parse().unwrap(),
            PBX.parse().unwrap(),
            UA.parse().unwrap(),
        );
        let inv = "INVITE sip:ua@198.18.0.2:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbxinv\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:service@198.18.0.1>;tag=p1\r\n\
             To: <sip:ua@198.18.0.2>\r\n\
             Call-ID: pbx-calls@198.18.0.1\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:service@198.18.0.1:5080>\r\n\
             Content-Length: 0\r\n\r\n";
        let (out, dest) = e.handle(inv.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(ua));
        // Another phone (or the same one from elsewhere) cannot answer it.
        let other: SocketAddr = "198.18.0.66:5062".parse().unwrap();
        let ok = pbx_response(&out, 200, "u9");
        assert_eq!(e.handle(&ok, other, local, now()), None);
        assert_eq!(
            e.dialogs().phase("pbx-calls@198.18.0.1"),
            Some(crate::edge::dialog::Phase::Pending)
        );
        // The phone it went to can, and its 2xx goes to the PBX.
        let (_, dest) = e.handle(&ok, ua, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(pbx));
        assert_eq!(
            e.dialogs().phase("pbx-calls@198.18.0.1"),
            Some(crate::edge::dialog::Phase::Confirmed)
        );
    }

    #[test]
    fn a_ua_on_udp_gets_a_flow_token_in_record_route() {
        let e = edge();
        let (local, ua): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), UA.parse().unwrap());
        let (fwd, _) = e
            .handle(&request("INVITE", "", 1, "v=0\r\n"), ua, local, now())
            .unwrap();
        let rr = parse(&fwd).record_routes().unwrap();
        assert_eq!(rr.len(), 1);
        let tok = rr[0].uri.user().unwrap();
        assert_eq!(e.transports.tokens.decode(tok), Some(Flow::Udp(ua)));
    }

    #[test]
    fn a_proxy_pbx_calling_back_through_the_edge_reaches_the_callee() {
        let e = edge();
        let (local, pbx): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), PBX.parse().unwrap());
        let caller: SocketAddr = UA.parse().unwrap();
        // The caller's INVITE: the edge now has a dialog under p1@ with
        // the caller's flow.
        let (fwd, dest) = e
            .handle(&request("INVITE", "", 1, "v=0\r\n"), caller, local, now())
            .unwrap();
        assert_eq!(dest, Flow::Udp(pbx));
        // A proxy PBX (Kamailio) relays it to the callee, also behind the
        // edge, with the same Call-ID and From tag.
        let fwd = String::from_utf8(fwd).unwrap();
        let callee: SocketAddr = "198.18.0.3:5064".parse().unwrap();
        let relayed = fwd
            .replacen(
                "INVITE sip:service@198.18.0.1:5080",
                "INVITE sip:bob@198.18.0.3:5064",
                1,
            )
            .replacen(
                "Via: ",
                "Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpx1\r\nVia: ",
                1,
            );
        let (_, dest) = e.handle(relayed.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(
            dest,
            Flow::Udp(callee),
            "the callee's INVITE went to {dest:?}"
        );
        // Its CANCEL too (no To tag either).
        let cancel = relayed
            .replacen("INVITE sip:bob", "CANCEL sip:bob", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
        let (_, dest) = e.handle(cancel.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, Flow::Udp(callee));
    }

    #[test]
    fn requests_from_tcp_uas_are_retransmitted_until_answered() {
        let e = edge();
        let local: SocketAddr = EDGE.parse().unwrap();
        let (flow, _rx) = tcp_conn(&e, "198.18.0.2:40002".parse().unwrap(), local);
        let bye = String::from_utf8(request("BYE", ";tag=p1", 2, ""))
            .unwrap()
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        let (fwd, _) = e
            .handle_message(bye.as_bytes(), Framing::Stream, flow, local, now())
            .unwrap();
        assert_eq!(e.retransmits.len(), 1);
        let later = now() + 600;
        let again = e.retransmits.due(later);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0, fwd, "the same bytes");
        // The PBX's 200 stops it.
        let ok = parse(&fwd).response(200, "OK", None).unwrap().to_bytes();
        e.handle(&ok, PBX.parse().unwrap(), local, now()).unwrap();
        assert!(e.retransmits.is_empty());
        // A UA on UDP retransmits by itself: nothing kept for it.
        e.handle(
            &request("BYE", ";tag=p1", 3, ""),
            UA.parse().unwrap(),
            local,
            now(),
        );
        assert!(e.retransmits.is_empty());
    }

    #[test]
    fn a_ua_back_on_a_new_connection_is_reached_by_the_old_route() {
        let e = edge();
        let (local, pbx): (SocketAddr, SocketAddr) = (EDGE.parse().unwrap(), PBX.parse().unwrap());
        let peer: SocketAddr = "198.18.0.2:40003".parse().unwrap();
        let (old, _rx) = tcp_conn(&e, peer, local);
        let tcp = |m: Vec<u8>| {
            String::from_utf8(m)
                .unwrap()
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        };
        let (fwd, _) = e
            .handle_message(
                tcp(request("INVITE", "", 1, "v=0\r\n")).as_bytes(),
                Framing::Stream,
                old,
                local,
                now(),
            )
            .unwrap();
        let f = parse(&fwd);
        let rr = f.record_routes().unwrap();
        let ok = f.response(200, "OK", Some("p1")).unwrap().to_bytes();
        e.handle(&ok, pbx, local, now()).unwrap();
        // The connection drops (or the daemon restarted); the UA comes back
        // on a new one with an in-dialog keep-alive the edge answers.
        e.transports.remove_conn(match old {
            Flow::Stream { id, .. } => id,
            Flow::Udp(_) => unreachable!(),
        });
        let (new, _rx2) = tcp_conn(&e, "198.18.0.2:40004".parse().unwrap(), local);
        let (r, dest) = e
            .handle_message(
                tcp(request("INFO", ";tag=p1", 2, "")).as_bytes(),
                Framing::Stream,
                new,
                local,
                now(),
            )
            .unwrap();
        assert_eq!(dest, new);
        assert_eq!(parse(&r).status_code(), Some(200));
        // The PBX's BYE routed by the old Record-Route reaches the new one.
        let bye = format!(
            "BYE sip:ua@198.18.0.2:5062;transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5080;branch=z9hG4bKpbxbye2\r\n\
             Route: {}, {}\r\n\
             From: <sip:service@198.18.0.1>;tag=p1\r\n\
             To: <sip:ua@198.18.0.2>;tag=u1\r\n\
             Call-ID: p1@198.18.0.2\r\n\
             CSeq: 1 BYE\r\n\
             Content-Length: 0\r\n\r\n",
            rr[0], rr[1]
        );
        let (_, dest) = e.handle(bye.as_bytes(), pbx, local, now()).unwrap();
        assert_eq!(dest, new, "the BYE got 430 or went elsewhere");
    }
}
