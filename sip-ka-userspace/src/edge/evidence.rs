//! What the edge tells the shield (`crate::shield`): who is banned, and
//! the evidence its messages carry. The proxy calls these at the points
//! where it learns something; the policy lives in the shield.

use std::net::SocketAddr;

use super::{
    forward::via_param,
    state::{Counters, Edge},
    transport::Flow,
};
use crate::{
    shield::{Ban, Evidence, Prefix},
    sip::{headers::via::Via, Method, SipMessage},
};

/// Our Via parameter saying the request carried credentials: a 401/407
/// to it is a failed login, not the challenge of a normal one.
pub const VIA_CREDENTIALS: &str = "ska-cr";

/// Whether `msg` carries digest credentials.
pub fn has_credentials(msg: &SipMessage) -> bool {
    msg.has_header("Authorization") || msg.has_header("Proxy-Authorization")
}

/// The methods whose 404 says "no such user" (an extension scan), rather
/// than a route the PBX does not know.
fn names_a_user(method: &Method) -> bool {
    matches!(
        method,
        Method::Register | Method::Invite | Method::Subscribe | Method::Message | Method::Options
    )
}

/// What the PBX's answer to a request says about the request's sender.
pub fn answer_evidence(code: u16, method: &Method, had_credentials: bool) -> Option<Evidence> {
    match code {
        403 => Some(Evidence::Failure),
        404 if names_a_user(method) => Some(Evidence::Failure),
        401 | 407 if had_credentials => Some(Evidence::Failure),
        200..=299 if had_credentials => Some(Evidence::Accepted),
        _ => None,
    }
}

impl Edge {
    /// Whether a message from `src` is dropped unread: its source is
    /// banned (the PBX never is). Counted.
    pub fn drops_banned(&self, src: SocketAddr, now_ms: u64) -> bool {
        let Some(shield) = &self.shield else {
            return false;
        };
        if src == self.cfg.upstream || !shield.drops(src.ip(), now_ms) {
            return false;
        }
        Counters::bump(&self.counters.banned_dropped);
        true
    }

    /// Whether `user_agent` is a scanner's.
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        self.shield
            .as_ref()
            .is_some_and(|s| s.is_scanner(user_agent))
    }

    /// A request from a UA, before anything answers it: a banned source or
    /// a scanner's User-Agent is dropped (`true`), the scanner banned.
    pub(super) fn screen(&self, msg: &SipMessage, src: Flow, now_ms: u64) -> bool {
        let Some(shield) = &self.shield else {
            return false;
        };
        if self.drops_banned(src.peer(), now_ms) {
            return true;
        }
        if !msg
            .header("User-Agent")
            .is_some_and(|ua| shield.is_scanner(ua))
        {
            return false;
        }
        Counters::bump(&self.counters.scanners_dropped);
        self.observe(src, Evidence::Scanner, now_ms);
        true
    }

    /// A request from a UA that the edge handles (not a keep-alive it
    /// answered): flood evidence; `true` when that banned its source (the
    /// request is then dropped).
    pub(super) fn count_request(&self, src: Flow, now_ms: u64) -> bool {
        self.observe(src, Evidence::Request, now_ms).is_some()
    }

    /// Evidence from `src` (never the PBX).
    pub(super) fn observe(&self, src: Flow, ev: Evidence, now_ms: u64) -> Option<Ban> {
        let shield = self.shield.as_ref()?;
        let peer = src.peer();
        if peer == self.cfg.upstream {
            return None;
        }
        let ban = shield.observe(peer.ip(), ev, now_ms)?;
        self.close_banned(&ban.prefix);
        Some(ban)
    }

    /// Closes the connections a banned prefix holds.
    pub fn close_banned(&self, prefix: &Prefix) {
        let closed = self.transports.close_within(prefix);
        if closed > 0 {
            Counters::add(&self.counters.banned_conns_closed, closed as u64);
        }
    }

    /// The PBX answered a request the edge forwarded for `ua`: a failure
    /// or an accepted login is evidence. `true` when the answer must not
    /// reach `ua` (it is banned, now or before).
    pub(super) fn on_pbx_answer(
        &self,
        ours: &Via,
        msg: &SipMessage,
        ua: SocketAddr,
        now_ms: u64,
    ) -> bool {
        if self.shield.is_none() {
            return false;
        }
        if let (Some(code), Some(cseq)) = (msg.status_code(), msg.cseq()) {
            let creds = via_param(ours, VIA_CREDENTIALS).is_some();
            if let Some(ev) = answer_evidence(code, &cseq.method, creds) {
                self.observe(Flow::Udp(ua), ev, now_ms);
            }
        }
        // A scanner learns nothing more once it is banned: not even the
        // answers to what it sent before.
        self.drops_banned(ua, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_to_a_request_without_credentials_is_no_evidence() {
        let reg = Method::Register;
        assert_eq!(answer_evidence(401, &reg, false), None);
        assert_eq!(answer_evidence(407, &Method::Invite, false), None);
        assert_eq!(answer_evidence(401, &reg, true), Some(Evidence::Failure));
        assert_eq!(answer_evidence(403, &reg, false), Some(Evidence::Failure));
        assert_eq!(answer_evidence(404, &reg, false), Some(Evidence::Failure));
        // A BYE's 404 is a lost dialog, not a scan.
        assert_eq!(answer_evidence(404, &Method::Bye, false), None);
        assert_eq!(answer_evidence(200, &reg, true), Some(Evidence::Accepted));
        assert_eq!(answer_evidence(200, &reg, false), None);
        assert_eq!(answer_evidence(486, &Method::Invite, true), None);
    }
}
