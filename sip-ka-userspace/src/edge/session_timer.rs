//! RFC 4028 session timers in the proxy role.
//!
//! * [`process_request`] applies RFC 4028 8.1 to a session refresh request
//!   (INVITE, re-INVITE, UPDATE) on its way through: a Session-Expires
//!   below the Min-SE floor gets 422 with Min-SE when the UAC supports
//!   `timer`, otherwise the value is raised and Min-SE inserted or
//!   increased; a missing Session-Expires is inserted (with no
//!   `refresher`, which a proxy never sets in a request). Anything else,
//!   `refresher` included, is left as it is.
//! * [`process_response`] applies 8.2 to a 2xx: one that lacks
//!   Session-Expires while the UAC supports `timer` gets
//!   `Session-Expires: N;refresher=uac` and `Require: timer`. It returns
//!   the [`Negotiated`] interval and refresher, if a session timer is in
//!   effect.
//! * [`SessionTimers`] tracks the sessions of confirmed dialogs on one
//!   [`TimerWheel`]: every 2xx to a refresh (re-INVITE or UPDATE, with or
//!   without SDP) restarts the dialog's timer; a dialog with no refresh
//!   before its expiry is expired (8.3): its state is dropped and only a
//!   tombstone stays for one interval, so a late refresh is answered 481.
//!   A proxy does not send BYE on expiry (8.3): [`Expired::reap`] only
//!   says whether the configuration asks for it.
//!
//! Times are absolute milliseconds on the caller's clock, so expiry times
//! can be persisted ([`SessionTimers::snapshot`]) and restored after a
//! restart ([`SessionTimers::restore`]).

use std::collections::HashMap;
use std::fmt;

use crate::sip::{Method, MinSe, OptionTags, Refresher, SessionExpires, SipMessage};

mod track;
use crate::util::timer_wheel::IdHashBuilder;
use track::cseq;
pub use track::{Counts, Expired, Kept, OwnStore, Session, SessionRecord, SessionStore, Track};

/// The smallest Min-SE allowed by RFC 4028 (section 4 and 5).
pub const RFC_MIN_SE: u32 = 90;
/// Session-Expires inserted when a request has none (Asterisk's default).
pub const DEFAULT_SESS_EXPIRES: u32 = 1800;

/// The session timer settings of the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    min_se: u32,
    sess_expires: u32,
}

impl Default for TimerConfig {
    /// Min-SE 90 s, Session-Expires 1800 s.
    fn default() -> Self {
        TimerConfig {
            min_se: RFC_MIN_SE,
            sess_expires: DEFAULT_SESS_EXPIRES,
        }
    }
}

/// Why a [`TimerConfig`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Min-SE below 90 s outside the lab.
    MinSeBelowRfc { min_se: u32 },
    /// Min-SE of zero, even in the lab.
    ZeroMinSe,
    /// Session-Expires below Min-SE.
    SessExpiresBelowMinSe { sess_expires: u32, min_se: u32 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MinSeBelowRfc { min_se } => write!(
                f,
                "timers min-se {min_se} is below {RFC_MIN_SE} s (RFC 4028); allowed only with --lab"
            ),
            ConfigError::ZeroMinSe => f.write_str("timers min-se must be at least 1 s"),
            ConfigError::SessExpiresBelowMinSe {
                sess_expires,
                min_se,
            } => write!(
                f,
                "timers sess-expires {sess_expires} is below timers min-se {min_se}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl TimerConfig {
    /// Min-SE floor and the Session-Expires to insert, in seconds. A
    /// floor below 90 s is refused unless `lab`.
    pub fn new(min_se: u32, sess_expires: u32, lab: bool) -> Result<Self, ConfigError> {
        if min_se == 0 {
            return Err(ConfigError::ZeroMinSe);
        }
        if min_se < RFC_MIN_SE && !lab {
            return Err(ConfigError::MinSeBelowRfc { min_se });
        }
        if sess_expires < min_se {
            return Err(ConfigError::SessExpiresBelowMinSe {
                sess_expires,
                min_se,
            });
        }
        Ok(TimerConfig {
            min_se,
            sess_expires,
        })
    }

    pub fn min_se(&self) -> u32 {
        self.min_se
    }

    pub fn sess_expires(&self) -> u32 {
        self.sess_expires
    }
}

/// What the proxy did to a refresh request's Session-Expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestEdit {
    Unchanged,
    /// Session-Expires was absent and was inserted.
    Inserted,
    /// Session-Expires was below the floor and was raised (UAC without
    /// `timer`); Min-SE was inserted or increased.
    Raised {
        from: u32,
    },
}

/// What a forwarded refresh request offered, kept until its final
/// response ([`process_response`] needs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The request carried `Supported: timer`.
    pub uac_supports_timer: bool,
    /// Session-Expires as forwarded, in seconds.
    pub session_expires: u32,
    pub edit: RequestEdit,
}

/// The outcome of [`process_request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestAction {
    /// Not a session refresh request (only INVITE and UPDATE are): nothing
    /// was looked at.
    NotApplicable,
    /// Forward the request (as edited); keep the offer for the response.
    Forward(Offer),
    /// Do not forward; send this response (422 with Min-SE, 400 for a
    /// malformed timer header, 481 for a refresh of an unknown dialog).
    Reject(Box<SipMessage>),
}

/// The session timer a 2xx established or refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Session interval, in seconds.
    pub interval: u32,
    /// Who refreshes; `None` when the 2xx did not say (RFC 4028 9
    /// requires it to).
    pub refresher: Option<Refresher>,
    /// The proxy added Session-Expires and Require to the 2xx.
    pub inserted: bool,
}

fn is_refresh_method(m: &Method) -> bool {
    matches!(m, Method::Invite | Method::Update)
}

fn supports_timer(msg: &SipMessage) -> bool {
    msg.lists_option_tag("Supported", OptionTags::TIMER)
        .unwrap_or(false)
}

fn reject(req: &SipMessage, code: u16, reason: &str, to_tag: Option<&str>) -> RequestAction {
    match req.response(code, reason, to_tag) {
        Some(r) => RequestAction::Reject(Box::new(r)),
        None => RequestAction::NotApplicable,
    }
}

/// RFC 4028 8.1 on a request passing through the proxy. `to_tag` is put
/// in the To of a response the proxy generates when the request has none.
pub fn process_request(
    cfg: &TimerConfig,
    req: &mut SipMessage,
    to_tag: Option<&str>,
) -> RequestAction {
    match req.method() {
        Some(m) if is_refresh_method(m) => {}
        _ => return RequestAction::NotApplicable,
    }
    let uac_supports_timer = supports_timer(req);
    // Read without building their parameters: only a raise below needs
    // those, to keep them in the rewritten fields.
    let se = match req.session_expires_brief() {
        Ok(se) => se,
        Err(_) => return reject(req, 400, "Malformed Session-Expires", to_tag),
    };
    let min_se = match req.min_se_delta() {
        Ok(m) => m,
        Err(_) => return reject(req, 400, "Malformed Min-SE", to_tag),
    };
    let floor = cfg.min_se;
    let req_min = min_se.unwrap_or(0);
    match se {
        None => {
            let value = cfg.sess_expires.max(floor).max(req_min);
            req.set_header("Session-Expires", value.to_string());
            RequestAction::Forward(Offer {
                uac_supports_timer,
                session_expires: value,
                edit: RequestEdit::Inserted,
            })
        }
        Some((delta, refresher)) if delta < floor => {
            let new_min = floor.max(req_min);
            if uac_supports_timer {
                let RequestAction::Reject(mut r) =
                    reject(req, 422, "Session Interval Too Small", to_tag)
                else {
                    return RequestAction::NotApplicable;
                };
                r.set_header("Min-SE", MinSe::new(new_min).to_string());
                return RequestAction::Reject(r);
            }
            let from = delta;
            // Both read above without an error: they parse.
            let se = req.session_expires().ok().flatten();
            let mut min = req
                .min_se()
                .ok()
                .flatten()
                .unwrap_or_else(|| MinSe::new(new_min));
            min.delta = new_min;
            req.set_header("Min-SE", min.to_string());
            let mut raised = se.unwrap_or_else(|| SessionExpires::new(delta, refresher));
            raised.delta = new_min;
            req.set_header("Session-Expires", raised.to_string());
            RequestAction::Forward(Offer {
                uac_supports_timer,
                session_expires: new_min,
                edit: RequestEdit::Raised { from },
            })
        }
        Some((delta, _)) => RequestAction::Forward(Offer {
            uac_supports_timer,
            session_expires: delta,
            edit: RequestEdit::Unchanged,
        }),
    }
}

/// RFC 4028 8.2 on the response to a forwarded refresh request. Only a 2xx
/// negotiates; `None` when no session timer is in effect (no
/// Session-Expires in the 2xx and a UAC without `timer`, or a
/// Session-Expires that does not parse).
pub fn process_response(offer: &Offer, resp: &mut SipMessage) -> Option<Negotiated> {
    let code = resp.status_code()?;
    if !(200..300).contains(&code) {
        return None;
    }
    match resp.session_expires_brief() {
        Ok(Some((interval, refresher))) => Some(Negotiated {
            interval,
            refresher,
            inserted: false,
        }),
        Ok(None) if offer.uac_supports_timer => {
            let se = SessionExpires::new(offer.session_expires, Some(Refresher::Uac));
            resp.set_header("Session-Expires", se.to_string());
            let has_require = resp
                .lists_option_tag("Require", OptionTags::TIMER)
                .unwrap_or(false);
            if !has_require {
                resp.push_header("Require", OptionTags::TIMER);
            }
            Some(Negotiated {
                interval: offer.session_expires,
                refresher: Some(Refresher::Uac),
                inserted: true,
            })
        }
        Ok(None) | Err(_) => None,
    }
}

/// The session timers of every confirmed dialog, on one timer wheel.
#[derive(Debug)]
pub struct SessionTimers<S = OwnStore> {
    cfg: TimerConfig,
    reap: bool,
    /// Sessions, outstanding refresh requests and the wheel.
    store: S,
    /// Expired dialogs, remembered for [`SessionTimers::tombstone_ms`] so
    /// that a late refresh gets 481; purged by the same wheel.
    expired: HashMap<u64, (), IdHashBuilder>,
    expired_total: u64,
}

/// Shortest time an expired dialog is remembered (RFC 3261 64*T1).
pub const MIN_TOMBSTONE_MS: u64 = 32_000;

impl SessionTimers {
    /// How long an expired dialog is remembered to answer 481: one session
    /// interval, at least [`MIN_TOMBSTONE_MS`].
    pub fn tombstone_ms(interval: u32) -> u64 {
        (u64::from(interval) * 1_000).max(MIN_TOMBSTONE_MS)
    }

    /// Tracking with ticks of 1 ms, starting at `now_ms`.
    pub fn new(cfg: TimerConfig, reap_expired: bool, now_ms: u64) -> Self {
        SessionTimers::with_store(cfg, reap_expired, OwnStore::new(now_ms))
    }

    /// The same settings over another store, whose clock starts where this
    /// one's is (before any session: the sessions are not moved).
    pub fn rehome<T: SessionStore>(self, store: impl FnOnce(u64) -> T) -> SessionTimers<T> {
        let now = self.store.now_ms();
        SessionTimers::with_store(self.cfg, self.reap, store(now))
    }
}

impl<S: SessionStore> SessionTimers<S> {
    pub fn with_store(cfg: TimerConfig, reap_expired: bool, store: S) -> Self {
        SessionTimers {
            cfg,
            reap: reap_expired,
            store,
            expired: HashMap::with_hasher(IdHashBuilder::default()),
            expired_total: 0,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Changes the track of `dialog` (an empty one is dropped).
    fn update(&mut self, dialog: u64, f: impl FnOnce(&mut Track)) {
        let mut t = self.store.track(dialog);
        f(&mut t);
        self.store.set_track(dialog, t);
    }

    /// Drops the track of `dialog`; returns its session.
    fn take(&mut self, dialog: u64) -> Option<Session> {
        let t = self.store.track(dialog);
        if t != Track::EMPTY {
            self.store.set_track(dialog, Track::EMPTY);
        }
        t.session()
    }

    pub fn set_config(&mut self, cfg: TimerConfig, reap_expired: bool) {
        self.cfg = cfg;
        self.reap = reap_expired;
    }

    pub fn config(&self) -> &TimerConfig {
        &self.cfg
    }

    /// Confirmed dialogs tracked.
    pub fn len(&self) -> usize {
        self.store.counts().0
    }

    pub fn is_empty(&self) -> bool {
        self.store.counts().0 == 0
    }

    /// Sessions expired since the start (`sessions_expired`).
    pub fn expired_total(&self) -> u64 {
        self.expired_total
    }

    pub fn session(&self, dialog: u64) -> Option<Session> {
        self.store.track(dialog).session()
    }

    /// Milliseconds until the session of `dialog` expires (0 when due).
    pub fn time_left_ms(&self, dialog: u64, now_ms: u64) -> Option<u64> {
        self.store
            .armed_at(dialog)
            .map(|at| at.saturating_sub(now_ms))
    }

    /// The absolute expiry (ms) of the session of `dialog`, if a timer
    /// runs (what persistence stores).
    pub fn expires_at_ms(&self, dialog: u64) -> Option<u64> {
        if self.expired.contains_key(&dialog) {
            return None; // the wheel holds the tombstone's end, not an expiry
        }
        self.store.armed_at(dialog)
    }

    /// When to call [`SessionTimers::expire`] next (never late).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.store.next_deadline()
    }

    /// Whether `dialog` expired recently (a refresh now gets 481).
    pub fn is_expired(&self, dialog: u64) -> bool {
        self.expired.contains_key(&dialog)
    }

    /// A request of `dialog` on its way through. An in-dialog (To tag)
    /// INVITE or UPDATE of a dialog whose session expired is answered 481;
    /// otherwise RFC 4028 8.1 applies ([`process_request`]) and the offer
    /// is kept for the response. A dialog the tracker has not seen
    /// confirmed (an UPDATE in an early dialog) is processed normally:
    /// whether a dialog exists at all is the dialog table's business.
    pub fn on_request(
        &mut self,
        dialog: u64,
        req: &mut SipMessage,
        to_tag: Option<&str>,
    ) -> RequestAction {
        match req.method() {
            Some(m) if is_refresh_method(m) => {}
            _ => return RequestAction::NotApplicable,
        }
        if self.expired.contains_key(&dialog) && req.to_tag().is_some() {
            return reject(req, 481, "Call/Transaction Does Not Exist", None);
        }
        let action = process_request(&self.cfg, req, to_tag);
        if let RequestAction::Forward(offer) = &action {
            let seq = cseq(req).map_or(0, |c| c.seq);
            let kept = Kept {
                seq,
                session_expires: offer.session_expires,
                uac_supports_timer: offer.uac_supports_timer,
            };
            self.update(dialog, |t| t.set_offer(Some(kept)));
        }
        action
    }

    /// A response of `dialog` on its way back. A 2xx to an INVITE or
    /// UPDATE confirms the dialog (initial INVITE) or refreshes it, and
    /// (re)starts its timer at `now_ms` + interval; a 2xx with no session
    /// timer stops it. Other responses change nothing (a failed refresh
    /// leaves the running timer alone).
    pub fn on_response(
        &mut self,
        dialog: u64,
        resp: &mut SipMessage,
        now_ms: u64,
    ) -> Option<Negotiated> {
        let cseq = cseq(resp)?;
        if !is_refresh_method(&cseq.method) {
            return None;
        }
        let code = resp.status_code()?;
        if code < 200 {
            return None;
        }
        // The offer stays until a newer request replaces it: a 2xx is
        // retransmitted until the ACK comes (and forks send 2xx of their
        // own), and each copy must be treated like the first.
        let offer = match self.store.track(dialog).offer() {
            Some(k) if k.seq == cseq.seq => Some(Offer {
                uac_supports_timer: k.uac_supports_timer,
                session_expires: k.session_expires,
                edit: RequestEdit::Unchanged,
            }),
            _ => None,
        };
        if !(200..300).contains(&code) {
            return None;
        }
        let offer = match offer {
            Some(o) => o,
            // A 2xx whose request was not seen (sent before a restart, or
            // superseded) and that says nothing of a session: it changes
            // nothing (it cannot stop a running timer).
            None if !resp.has_header("Session-Expires") => return None,
            // One that does: its Session-Expires is taken as it is.
            None => Offer {
                uac_supports_timer: false,
                session_expires: self.cfg.sess_expires,
                edit: RequestEdit::Unchanged,
            },
        };
        let negotiated = process_response(&offer, resp);
        self.expired.remove(&dialog);
        match negotiated {
            Some(n) => {
                let s = Session {
                    interval: n.interval,
                    refresher: n.refresher,
                };
                self.update(dialog, |t| t.set_session(Some(s)));
                self.store
                    .arm(dialog, now_ms.saturating_add(u64::from(n.interval) * 1_000));
            }
            None => {
                let s = Session {
                    interval: 0,
                    refresher: None,
                };
                self.update(dialog, |t| t.set_session(Some(s)));
                self.store.disarm(dialog);
            }
        }
        negotiated
    }

    /// Drops the offer kept for `dialog`'s outstanding refresh, if any
    /// (its dialog is not tracked).
    pub fn forget_offer(&mut self, dialog: u64) {
        if self.store.track(dialog).offer().is_some() {
            self.update(dialog, |t| t.set_offer(None));
        }
    }

    /// Offers kept for outstanding refresh requests.
    pub fn offers(&self) -> usize {
        self.store.counts().1
    }

    /// The dialog ended (BYE, failure): forget it.
    pub fn end(&mut self, dialog: u64) -> Option<Session> {
        self.store.disarm(dialog);
        self.expired.remove(&dialog);
        self.take(dialog)
    }

    /// Sessions whose expiry is at or before `now_ms`: removed (RFC 4028
    /// 8.3: the proxy drops their state), remembered as expired for
    /// [`SessionTimers::tombstone_ms`], and returned.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Expired> {
        let mut ids = Vec::new();
        self.store.expire(now_ms, &mut ids);
        let mut out = Vec::with_capacity(ids.len());
        for dialog in ids {
            if self.expired.remove(&dialog).is_some() {
                continue; // a tombstone's time is up
            }
            let interval = self.take(dialog).map_or(0, |s| s.interval);
            self.expired.insert(dialog, ());
            self.store.arm(
                dialog,
                now_ms.saturating_add(SessionTimers::tombstone_ms(interval)),
            );
            self.expired_total += 1;
            out.push(Expired {
                dialog,
                interval,
                reap: self.reap,
            });
        }
        out
    }

    /// Every tracked session with its absolute expiry, to persist.
    pub fn snapshot(&self) -> Vec<SessionRecord> {
        self.store
            .sessions()
            .into_iter()
            .map(|(dialog, session)| SessionRecord {
                dialog,
                session,
                expires_at_ms: self.store.armed_at(dialog),
            })
            .collect()
    }

    /// Restores persisted sessions (after a restart). Expiry times already
    /// past expire at the next [`SessionTimers::expire`].
    pub fn restore(&mut self, records: impl IntoIterator<Item = SessionRecord>) {
        for r in records {
            self.expired.remove(&r.dialog);
            self.update(r.dialog, |t| t.set_session(Some(r.session)));
            match r.expires_at_ms {
                Some(at) => self.store.arm(r.dialog, at),
                None => self.store.disarm(r.dialog),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::sip::{parse_message, Framing, Limits};

    const CALL: &str = "a84b4c76e66710@pc33.example.com";

    /// A request; `extra` are header lines (CRLF-terminated).
    fn request(method: &str, cseq: u32, to_tag: bool, extra: &str, body: &str) -> SipMessage {
        let to = if to_tag {
            "<sip:pbx@example.com>;tag=pbx1"
        } else {
            "<sip:pbx@example.com>"
        };
        let raw = format!(
            "{method} sip:pbx@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.com>;tag=ua1\r\n\
             To: {to}\r\n\
             Call-ID: {CALL}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@192.0.2.10:5060>\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        parse_message(raw.as_bytes(), Framing::Datagram, &Limits::default()).unwrap()
    }

    /// A response to `req`, with `extra` header lines added.
    fn answer(req: &SipMessage, code: u16, extra: &[(&str, &str)]) -> SipMessage {
        let mut r = req.response(code, "OK", Some("pbx1")).unwrap();
        for (n, v) in extra {
            r.push_header(n, *v);
        }
        // Through the wire and back, as the proxy would see it.
        parse_message(&r.to_bytes(), Framing::Datagram, &Limits::default()).unwrap()
    }

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn cfg() -> TimerConfig {
        TimerConfig::default()
    }

    fn forwarded(a: RequestAction) -> Offer {
        match a {
            RequestAction::Forward(o) => o,
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    fn rejected(a: RequestAction) -> SipMessage {
        match a {
            RequestAction::Reject(r) => *r,
            other => panic!("expected Reject, got {other:?}"),
        }
    }

    // ----- configuration -----

    #[test]
    fn config_defaults_and_floor_of_90_outside_the_lab() {
        let c = TimerConfig::default();
        assert_eq!((c.min_se(), c.sess_expires()), (90, 1800));
        assert_eq!(
            TimerConfig::new(30, 1800, false),
            Err(ConfigError::MinSeBelowRfc { min_se: 30 })
        );
        assert_eq!(TimerConfig::new(4, 8, true).unwrap().min_se(), 4);
        assert_eq!(TimerConfig::new(0, 8, true), Err(ConfigError::ZeroMinSe));
        assert!(matches!(
            TimerConfig::new(120, 100, false),
            Err(ConfigError::SessExpiresBelowMinSe { .. })
        ));
        assert!(TimerConfig::new(30, 1800, false)
            .unwrap_err()
            .to_string()
            .contains("--lab"));
    }

    // ----- 8.1 requests -----

    #[test]
    fn too_small_with_timer_support_gets_422_with_min_se() {
        let c = TimerConfig::new(120, 1800, false).unwrap();
        let mut req = request(
            "INVITE",
            1,
            false,
            "Supported: timer\r\nSession-Expires: 100\r\n",
            SDP,
        );
        let before = req.clone();
        let r = rejected(process_request(&c, &mut req, Some("edge1")));
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.reason_phrase(), Some("Session Interval Too Small"));
        assert_eq!(r.min_se().unwrap().unwrap().delta, 120);
        assert_eq!(r.to_tag().as_deref(), Some("edge1"));
        assert_eq!(r.call_id(), Some(CALL));
        assert_eq!(req, before, "a rejected request is not edited");
    }

    #[test]
    fn too_small_422_carries_the_larger_of_floor_and_request_min_se() {
        let mut req = request(
            "UPDATE",
            5,
            true,
            "Supported: timer\r\nSession-Expires: 60\r\nMin-SE: 95\r\n",
            "",
        );
        let r = rejected(process_request(&cfg(), &mut req, None));
        assert_eq!(r.status_code(), Some(422));
        assert_eq!(r.min_se().unwrap().unwrap().delta, 95);
    }

    #[test]
    fn too_small_without_timer_support_is_raised_and_min_se_inserted() {
        let c = TimerConfig::new(120, 1800, false).unwrap();
        let mut req = request(
            "INVITE",
            1,
            false,
            "Session-Expires: 100;refresher=uac\r\n",
            SDP,
        );
        let o = forwarded(process_request(&c, &mut req, None));
        assert_eq!(o.edit, RequestEdit::Raised { from: 100 });
        assert_eq!((o.session_expires, o.uac_supports_timer), (120, false));
        let se = req.session_expires().unwrap().unwrap();
        assert_eq!(se.delta, 120);
        assert_eq!(se.refresher, Some(Refresher::Uac), "refresher kept");
        assert_eq!(req.min_se().unwrap().unwrap().delta, 120);
    }

    #[test]
    fn raising_increases_an_existing_min_se_never_decreases_it() {
        let c = TimerConfig::new(150, 1800, false).unwrap();
        let mut req = request(
            "INVITE",
            1,
            false,
            "Supported: 100rel\r\nSession-Expires: 100\r\nMin-SE: 100\r\n",
            SDP,
        );
        let o = forwarded(process_request(&c, &mut req, None));
        assert_eq!(o.edit, RequestEdit::Raised { from: 100 });
        assert_eq!(req.header_values("Min-SE").collect::<Vec<_>>(), ["150"]);
        assert_eq!(req.session_expires().unwrap().unwrap().delta, 150);
        assert_eq!(req.session_expires().unwrap().unwrap().refresher, None);
    }

    #[test]
    fn session_expires_inserted_when_absent_without_refresher() {
        let mut req = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        assert_eq!(o.edit, RequestEdit::Inserted);
        assert_eq!(o.session_expires, 1800);
        assert!(o.uac_supports_timer);
        let se = req.session_expires().unwrap().unwrap();
        assert_eq!((se.delta, se.refresher), (1800, None));
        assert!(!req.has_header("Min-SE"));
        // Never below the request's own Min-SE.
        let c = TimerConfig::new(90, 300, false).unwrap();
        let mut req = request("INVITE", 1, false, "Min-SE: 600\r\n", SDP);
        let o = forwarded(process_request(&c, &mut req, None));
        assert_eq!(o.session_expires, 600);
        assert_eq!(req.session_expires().unwrap().unwrap().delta, 600);
    }

    #[test]
    fn acceptable_request_and_its_refresher_are_left_alone() {
        for extra in [
            "Supported: timer\r\nSession-Expires: 1800;refresher=uas\r\n",
            "Session-Expires: 90;refresher=uac\r\n",
            "Supported: timer\r\nSession-Expires: 600\r\nMin-SE: 90\r\n",
        ] {
            let mut req = request("INVITE", 1, false, extra, SDP);
            let before = req.to_bytes();
            let o = forwarded(process_request(&cfg(), &mut req, None));
            assert_eq!(o.edit, RequestEdit::Unchanged, "{extra}");
            assert_eq!(req.to_bytes(), before, "{extra}");
        }
    }

    #[test]
    fn compact_form_x_is_understood() {
        let mut req = request("INVITE", 1, false, "k: timer\r\nx: 60\r\n", SDP);
        let r = rejected(process_request(&cfg(), &mut req, None));
        assert_eq!(r.status_code(), Some(422));
        let mut req = request("UPDATE", 2, true, "x: 60;refresher=uas\r\n", "");
        let o = forwarded(process_request(&cfg(), &mut req, None));
        assert_eq!(o.edit, RequestEdit::Raised { from: 60 });
        assert_eq!(req.header_values("Session-Expires").count(), 1);
        let se = req.session_expires().unwrap().unwrap();
        assert_eq!((se.delta, se.refresher), (90, Some(Refresher::Uas)));
        let mut req = request("INVITE", 1, false, "x: 1800;refresher=uac\r\n", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        assert_eq!((o.edit, o.session_expires), (RequestEdit::Unchanged, 1800));
    }

    #[test]
    fn other_methods_are_not_session_refreshes() {
        for m in ["BYE", "OPTIONS", "INFO", "MESSAGE", "PRACK"] {
            let mut req = request(m, 3, true, "Session-Expires: 10\r\n", "");
            let before = req.clone();
            assert_eq!(
                process_request(&cfg(), &mut req, None),
                RequestAction::NotApplicable,
                "{m}"
            );
            assert_eq!(req, before);
        }
    }

    #[test]
    fn malformed_timer_headers_get_400() {
        let mut req = request("INVITE", 1, false, "Session-Expires: soon\r\n", SDP);
        let r = rejected(process_request(&cfg(), &mut req, None));
        assert_eq!(r.status_code(), Some(400));
        let mut req = request(
            "INVITE",
            1,
            false,
            "Session-Expires: 1800\r\nSession-Expires: 900\r\n",
            SDP,
        );
        assert_eq!(
            rejected(process_request(&cfg(), &mut req, None)).status_code(),
            Some(400)
        );
        let mut req = request("INVITE", 1, false, "Min-SE: -1\r\n", SDP);
        assert_eq!(
            rejected(process_request(&cfg(), &mut req, None)).status_code(),
            Some(400)
        );
    }

    // ----- 8.2 responses -----

    #[test]
    fn ok_lacking_session_expires_gets_refresher_uac_and_require_timer() {
        let mut req = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        let mut ok = answer(&req, 200, &[]);
        let n = process_response(&o, &mut ok).unwrap();
        assert_eq!(
            n,
            Negotiated {
                interval: 1800,
                refresher: Some(Refresher::Uac),
                inserted: true
            }
        );
        assert_eq!(ok.header("Session-Expires"), Some("1800;refresher=uac"));
        assert!(ok.require().unwrap().contains("timer"));
        // An existing Require gets timer once.
        let mut ok = answer(&req, 200, &[("Require", "100rel")]);
        process_response(&o, &mut ok).unwrap();
        let req_tags = ok.require().unwrap();
        assert!(req_tags.contains("timer") && req_tags.contains("100rel"));
        let mut ok = answer(&req, 200, &[("Require", "timer")]);
        process_response(&o, &mut ok).unwrap();
        assert_eq!(ok.header_values("Require").count(), 1);
    }

    #[test]
    fn ok_lacking_session_expires_without_uac_support_has_no_timer() {
        let mut req = request("INVITE", 1, false, "", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        let mut ok = answer(&req, 200, &[]);
        let before = ok.clone();
        assert_eq!(process_response(&o, &mut ok), None);
        assert_eq!(ok, before);
    }

    #[test]
    fn ok_with_session_expires_is_not_rewritten() {
        let mut req = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        for (value, refresher) in [
            ("900;refresher=uas", Some(Refresher::Uas)),
            ("1800;refresher=uac", Some(Refresher::Uac)),
            ("600", None),
        ] {
            let mut ok = answer(
                &req,
                200,
                &[("Session-Expires", value), ("Require", "timer")],
            );
            let before = ok.to_bytes();
            let n = process_response(&o, &mut ok).unwrap();
            assert_eq!((n.refresher, n.inserted), (refresher, false));
            assert_eq!(ok.to_bytes(), before);
        }
        let mut ok = answer(&req, 200, &[("x", "120;refresher=uas")]);
        assert_eq!(process_response(&o, &mut ok).unwrap().interval, 120);
    }

    #[test]
    fn only_2xx_negotiates() {
        let mut req = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        let o = forwarded(process_request(&cfg(), &mut req, None));
        for code in [180, 183, 422, 486, 503] {
            let mut r = answer(&req, code, &[]);
            let before = r.clone();
            assert_eq!(process_response(&o, &mut r), None, "{code}");
            assert_eq!(r, before);
        }
    }

    // ----- tracking, on a virtual clock (ms) -----

    const T0: u64 = 1_700_000_000_000;
    const DIALOG: u64 = 0xD1A1;

    /// INVITE with Supported: timer, 200 with the given Session-Expires.
    fn establish(st: &mut SessionTimers, now: u64, se: &str) -> Negotiated {
        let mut inv = request(
            "INVITE",
            1,
            false,
            &format!("Supported: timer\r\nSession-Expires: {se}\r\n"),
            SDP,
        );
        forwarded(st.on_request(DIALOG, &mut inv, None));
        let mut ok = answer(&inv, 200, &[("Session-Expires", se), ("Require", "timer")]);
        st.on_response(DIALOG, &mut ok, now).unwrap()
    }

    /// An in-dialog refresh with CSeq `seq`, answered 2xx at `now`.
    fn refresh(st: &mut SessionTimers, method: &str, seq: u32, sdp: bool, now: u64) -> Negotiated {
        let body = if sdp { SDP } else { "" };
        let mut req = request(
            method,
            seq,
            true,
            "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
            body,
        );
        forwarded(st.on_request(DIALOG, &mut req, None));
        let mut ok = answer(
            &req,
            200,
            &[
                ("Session-Expires", "120;refresher=uac"),
                ("Require", "timer"),
            ],
        );
        st.on_response(DIALOG, &mut ok, now).unwrap()
    }

    #[test]
    fn session_expires_at_the_right_instant() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        let n = establish(&mut st, T0, "120;refresher=uac");
        assert_eq!((n.interval, n.refresher), (120, Some(Refresher::Uac)));
        assert_eq!(st.time_left_ms(DIALOG, T0), Some(120_000));
        assert!(st.expire(T0 + 119_999).is_empty());
        assert_eq!(st.time_left_ms(DIALOG, T0 + 119_999), Some(1));
        let e = st.expire(T0 + 120_000);
        assert_eq!(
            e,
            vec![Expired {
                dialog: DIALOG,
                interval: 120,
                reap: false
            }]
        );
        assert_eq!(st.expired_total(), 1);
        assert!(st.session(DIALOG).is_none());
        assert!(st.is_empty());
    }

    #[test]
    fn refresh_by_reinvite_restarts_the_timer() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        establish(&mut st, T0, "120;refresher=uac");
        // Refresh at SE/2, with SDP and without (a re-INVITE without SDP is
        // a refresh too).
        refresh(&mut st, "INVITE", 2, true, T0 + 60_000);
        assert!(st.expire(T0 + 120_000).is_empty());
        refresh(&mut st, "INVITE", 3, false, T0 + 120_000);
        assert!(st.expire(T0 + 239_999).is_empty());
        assert_eq!(st.expire(T0 + 240_000).len(), 1);
    }

    #[test]
    fn refresh_by_update_restarts_the_timer() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        establish(&mut st, T0, "120;refresher=uac");
        let mut now = T0;
        for seq in 2..8 {
            now += 60_000;
            refresh(&mut st, "UPDATE", seq, seq % 2 == 0, now);
            assert!(st.expire(now).is_empty());
        }
        assert_eq!(st.time_left_ms(DIALOG, now), Some(120_000));
        assert!(st.expire(now + 119_999).is_empty());
        assert_eq!(st.expire(now + 120_000)[0].dialog, DIALOG);
    }

    #[test]
    fn failed_refresh_leaves_the_timer_running() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        establish(&mut st, T0, "120;refresher=uac");
        let mut up = request("UPDATE", 2, true, "Session-Expires: 120\r\n", "");
        forwarded(st.on_request(DIALOG, &mut up, None));
        let mut busy = answer(&up, 491, &[]);
        assert_eq!(st.on_response(DIALOG, &mut busy, T0 + 60_000), None);
        assert_eq!(st.expire(T0 + 120_000).len(), 1);
    }

    #[test]
    fn refresh_after_expiry_is_rejected_with_481() {
        let mut st = SessionTimers::new(cfg(), true, T0);
        establish(&mut st, T0, "90;refresher=uac");
        let e = st.expire(T0 + 90_000);
        assert_eq!(e.len(), 1);
        assert!(e[0].reap, "--reap-expired is only a decision here");
        assert!(st.is_expired(DIALOG));
        for method in ["UPDATE", "INVITE"] {
            let mut late = request(method, 9, true, "Session-Expires: 90\r\n", "");
            let r = rejected(st.on_request(DIALOG, &mut late, None));
            assert_eq!(r.status_code(), Some(481), "{method}");
            assert_eq!(r.to_tag().as_deref(), Some("pbx1"));
        }
        // Remembered for one interval, then forgotten without a second
        // expiry.
        assert!(st.expire(T0 + 179_999).is_empty());
        assert!(st.is_expired(DIALOG));
        assert!(st.expire(T0 + 180_000).is_empty());
        assert!(!st.is_expired(DIALOG));
        assert_eq!(st.expired_total(), 1);
        // A new call with the same id (no To tag) is not a refresh.
        let mut fresh = request("INVITE", 1, false, "", SDP);
        forwarded(st.on_request(DIALOG, &mut fresh, None));
    }

    #[test]
    fn update_in_an_early_dialog_is_not_481() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        let mut inv = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        forwarded(st.on_request(DIALOG, &mut inv, None));
        let mut up = request("UPDATE", 2, true, "Supported: timer\r\nx: 60\r\n", SDP);
        let r = rejected(st.on_request(DIALOG, &mut up, None));
        assert_eq!(r.status_code(), Some(422));
        let mut up = request("UPDATE", 3, true, "Supported: timer\r\n", SDP);
        forwarded(st.on_request(DIALOG, &mut up, None));
    }

    #[test]
    fn inserted_timer_is_tracked_and_expires() {
        let mut st = SessionTimers::new(TimerConfig::new(5, 10, true).unwrap(), false, T0);
        let mut inv = request("INVITE", 1, false, "Supported: timer\r\n", SDP);
        let o = forwarded(st.on_request(DIALOG, &mut inv, None));
        assert_eq!(o.session_expires, 10);
        let mut ok = answer(&inv, 200, &[]);
        let n = st.on_response(DIALOG, &mut ok, T0).unwrap();
        assert!(n.inserted);
        assert_eq!(ok.header("Session-Expires"), Some("10;refresher=uac"));
        assert!(st.expire(T0 + 9_999).is_empty());
        assert_eq!(st.expire(T0 + 10_000).len(), 1);
    }

    #[test]
    fn dialog_without_timer_never_expires_and_is_not_481() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        let mut inv = request("INVITE", 1, false, "", SDP);
        forwarded(st.on_request(DIALOG, &mut inv, None));
        let mut ok = answer(&inv, 200, &[]);
        assert_eq!(st.on_response(DIALOG, &mut ok, T0), None);
        assert_eq!(st.session(DIALOG).unwrap().interval, 0);
        assert!(st.expire(T0 + 86_400_000).is_empty());
        let mut up = request("UPDATE", 2, true, "", "");
        forwarded(st.on_request(DIALOG, &mut up, None));
        assert_eq!(st.time_left_ms(DIALOG, T0), None);
    }

    #[test]
    fn ended_dialog_does_not_expire() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        establish(&mut st, T0, "90;refresher=uas");
        assert!(st.end(DIALOG).is_some());
        assert!(st.expire(T0 + 1_000_000).is_empty());
        assert_eq!(st.expired_total(), 0);
    }

    #[test]
    fn snapshot_and_restore_resume_timers_from_absolute_times() {
        let mut st = SessionTimers::new(cfg(), false, T0);
        establish(&mut st, T0, "120;refresher=uac");
        let saved = st.snapshot();
        assert_eq!(saved[0].expires_at_ms, Some(T0 + 120_000));
        // Restart 30 s later: the expiry still falls at T0 + 120 s.
        let mut st2 = SessionTimers::new(cfg(), false, T0 + 30_000);
        st2.restore(saved.clone());
        assert_eq!(st2.time_left_ms(DIALOG, T0 + 30_000), Some(90_000));
        assert!(st2.expire(T0 + 119_999).is_empty());
        assert_eq!(st2.expire(T0 + 120_000).len(), 1);
        // Restart after the expiry: it fires at once.
        let mut st3 = SessionTimers::new(cfg(), false, T0 + 500_000);
        st3.restore(saved);
        assert_eq!(st3.expire(T0 + 500_000).len(), 1);
    }
}
