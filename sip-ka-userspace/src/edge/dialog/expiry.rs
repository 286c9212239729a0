//! When dialogs end by themselves: RFC 4028 session timers (through
//! [`SessionTimers`]) and `--dialog-idle-timeout`. The time is always an
//! argument.

use std::net::SocketAddr;

use sip_ka_common::callid_hash;

use super::{
    bye::byes,
    model::{self, session_flags, Phase},
    table::{Dialogs, Ended, Idle},
};
use crate::{
    edge::{
        session_timer::{RequestAction, Session, SessionTimers},
        transport::Flow,
    },
    sip::{name_addr_uri, Method, SipMessage},
    util::timer_wheel::TimerWheel,
};

impl Dialogs {
    /// Ends confirmed dialogs with no in-dialog traffic for `limit`
    /// (`None`: never).
    pub fn set_idle_timeout(&mut self, limit: Option<std::time::Duration>, now_ms: u64) {
        self.idle = limit.filter(|l| !l.is_zero()).map(|l| Idle {
            limit_ms: l.as_millis() as u64,
            wheel: TimerWheel::new(1, now_ms),
        });
        let confirmed: Vec<(u64, u64)> = self
            .timers
            .store()
            .iter()
            .filter(|(_, d)| d.phase == Phase::Confirmed)
            .map(|(h, d)| (h, d.last_activity_ms))
            .collect();
        for (hash, last) in confirmed {
            self.arm_idle(hash, last);
        }
    }

    pub(super) fn arm_idle(&mut self, hash: u64, last_ms: u64) {
        if let Some(idle) = &mut self.idle {
            idle.wheel.set(hash, last_ms.saturating_add(idle.limit_ms));
        }
    }

    /// In-dialog traffic the edge answered itself (a keep-alive): the
    /// dialog is not idle. Not journaled (one write per keep-alive would
    /// cost more than it saves): after a restart the idle clock starts
    /// again from the restart.
    pub fn touch(&mut self, msg: &SipMessage, from_ua: Option<Flow>, now: u64) {
        let Some(call_id) = model::call_id(msg) else {
            return;
        };
        let hash = callid_hash(call_id.as_bytes());
        let Some(d) = self.get_mut(call_id) else {
            return;
        };
        d.last_activity_ms = now;
        // A keep-alive on a new connection (after a restart, or a
        // reconnect) is how the UA is reached from now on, if it is the
        // UA's (see `may_move_to`).
        if let Some(flow) =
            from_ua.filter(|f| f.is_stream() && *f != d.ua() && d.may_move_to(msg, f))
        {
            d.set_ua(flow);
            self.save(call_id);
            let Some(d) = self.get(call_id) else {
                return;
            };
            if d.phase == Phase::Confirmed {
                self.arm_idle(hash, now);
            }
            return;
        }
        let confirmed = d.phase == Phase::Confirmed;
        if confirmed {
            self.arm_idle(hash, now);
        }
    }

    pub fn timers(&self) -> &SessionTimers<super::map::DialogMap> {
        &self.timers
    }

    /// The session of a dialog and its time left, if a timer runs.
    pub fn session(&self, call_id: &str, now_ms: u64) -> Option<(Session, Option<u64>)> {
        self.get(call_id)?;
        let hash = callid_hash(call_id.as_bytes());
        let s = self.timers.session(hash)?;
        Some((s, self.timers.time_left_ms(hash, now_ms)))
    }

    /// RFC 4028 8.1 on a refresh request (INVITE, re-INVITE, UPDATE) on
    /// its way through; `to_tag` goes into a 422 or 481 the edge answers.
    pub fn timer_request(&mut self, msg: &mut SipMessage, to_tag: Option<&str>) -> RequestAction {
        let Some(call_id) = model::call_id(msg) else {
            return RequestAction::NotApplicable;
        };
        let hash = callid_hash(call_id.as_bytes());
        let known = self.get_hashed(hash, call_id).is_some();
        let action = self.timers.on_request(hash, msg, to_tag);
        // An offer is read only for a dialog in the table, and dropped
        // with it. A refresh naming no dialog (any stranger can send one
        // with a fresh Call-ID) would leave its offer for ever: it is not
        // kept. A dialog-creating INVITE makes its dialog next
        // (`on_request_from`), or drops the offer if the caps refuse it.
        if !(known || (msg.method() == Some(&Method::Invite) && msg.to_tag().is_none())) {
            self.timers.forget_offer(hash);
        }
        action
    }

    /// RFC 4028 8.2 on a response on its way back (a dialog the table
    /// knows only): a 2xx to a refresh (re)starts the session timer, whose
    /// absolute expiry goes into the mirror.
    pub fn timer_response(&mut self, msg: &mut SipMessage, now_ms: u64) {
        let Some(call_id) = model::call_id(msg) else {
            return;
        };
        let hash = callid_hash(call_id.as_bytes());
        let Some(d) = self.get_hashed_mut(hash, call_id) else {
            return;
        };
        let mut changed = false;
        if let (Some(code), Some(cseq)) = (msg.status_code(), model::cseq(msg)) {
            if cseq.method == Method::Invite && (200..300).contains(&code) && msg.to_tag().is_some()
            {
                let contact = msg.header("Contact").and_then(name_addr_uri);
                let to = msg.header("To").map(str::to_string);
                changed |= d.note_invite_2xx(msg, to, contact);
            }
        }
        let before = self.timers.session(hash);
        let before_left = self.timers.time_left_ms(hash, now_ms);
        self.timers.on_response(hash, msg, now_ms);
        let after = self.timers.session(hash);
        let left = self.timers.time_left_ms(hash, now_ms);
        if let Some(s) = after {
            if after != before || left != before_left {
                let expires = left.map_or(0, |l| (now_ms + l) / 1_000);
                self.pending_session = Some((hash, expires, session_flags(&s)));
                changed = true;
            }
        }
        // The 2xx's To and Contact, or a new or refreshed session timer.
        if changed && self.persisting() {
            if let Some(call_id) = self.call_id_of(hash) {
                self.save(&call_id);
            }
        }
    }

    /// Sessions due at `now_ms`: the dialogs are dropped (state and
    /// mirror) and returned, with BYEs for both sides when reaping.
    pub fn expire(&mut self, now_ms: u64, upstream: SocketAddr, local: SocketAddr) -> Vec<Ended> {
        let mut out = Vec::new();
        for e in self.timers.expire(now_ms) {
            let Some(d) = self.timers.store().get(&e.dialog) else {
                continue;
            };
            let call_id = d.cold.call_id().to_string();
            let byes = if e.reap {
                byes(&call_id, d, upstream, local)
            } else {
                Vec::new()
            };
            out.push(Ended {
                call_id: call_id.clone(),
                hash: e.dialog,
                interval: e.interval,
                byes,
            });
            // The tombstone stays in the timers (a late refresh gets 481).
            if let Some(d) = self.timers.store_mut().remove(&e.dialog) {
                if let Some(idle) = &mut self.idle {
                    idle.wheel.cancel(e.dialog);
                }
                if d.phase != Phase::Pending {
                    self.sink.remove(e.dialog);
                }
            }
            self.save(&call_id);
        }
        out
    }

    /// Confirmed dialogs with no in-dialog traffic for the idle limit at
    /// `now_ms`: the edge's own view (requests forwarded, keep-alives
    /// answered) and the XDP program's (`last_ka_ns` in the mirror, on
    /// CLOCK_MONOTONIC, `mono_now_ns` being that clock now). Those are
    /// dropped (state, timer, mirror) and returned, with BYEs for both
    /// sides when `reap`; the others are re-armed from their last
    /// activity.
    pub fn expire_idle(
        &mut self,
        now_ms: u64,
        mono_now_ns: u64,
        reap: bool,
        upstream: SocketAddr,
        local: SocketAddr,
    ) -> Vec<Ended> {
        let Some(idle) = &mut self.idle else {
            return Vec::new();
        };
        let limit_ms = idle.limit_ms;
        let due: Vec<u64> = idle.wheel.expire(now_ms).collect();
        let mut out = Vec::new();
        for hash in due {
            let Some(d) = self.timers.store_mut().get_mut(&hash) else {
                continue;
            };
            let call_id = d.cold.call_id().to_string();
            if d.phase != Phase::Confirmed {
                continue;
            }
            // A keep-alive XDP counted (it answers some without the
            // daemon) is traffic too: its monotonic age, on our clock.
            let xdp_ms = self
                .sink
                .last_ka_ns(hash)
                .map(|ns| now_ms.saturating_sub(mono_now_ns.saturating_sub(ns) / 1_000_000));
            let last = d.last_activity_ms.max(xdp_ms.unwrap_or(0));
            d.last_activity_ms = last;
            if now_ms.saturating_sub(last) < limit_ms {
                self.arm_idle(hash, last);
                continue;
            }
            let byes = if reap {
                byes(&call_id, d, upstream, local)
            } else {
                Vec::new()
            };
            out.push(Ended {
                call_id: call_id.clone(),
                hash,
                interval: (limit_ms / 1_000) as u32,
                byes,
            });
            self.end(&call_id);
        }
        out
    }

    /// When [`Dialogs::expire`] or [`Dialogs::expire_idle`] is due next.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let idle = self.idle.as_ref().and_then(|i| i.wheel.next_deadline());
        match (self.timers.next_deadline_ms(), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
