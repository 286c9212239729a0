//! The dialog table: INVITE dialogs keyed by Call-ID, their phases from
//! the requests and responses the edge forwards, mirrored into DIALOGS.
//! Session and idle timers are in [`super::expiry`], the journal in
//! [`super::journal`]. Every call takes the time as an argument.

use std::{collections::HashMap, time::Duration};

use sip_ka_common::callid_hash;

use super::{
    map::DialogMap,
    mirror::DialogSink,
    model::{self, Dialog, Phase},
    packed::Cold,
};
use crate::{
    edge::{
        persist::Journal,
        session_timer::{SessionTimers, TimerConfig},
        transport::Flow,
    },
    sip::{name_addr_uri, Method, SipMessage},
    util::{
        capped::Capped,
        timer_wheel::{IdHashBuilder, TimerWheel},
    },
};

/// What the edge needs to end an expired dialog on both sides.
#[derive(Clone, Debug)]
pub struct Ended {
    pub call_id: String,
    pub hash: u64,
    pub interval: u32,
    /// BYE requests and where they go.
    pub byes: Vec<(SipMessage, Flow)>,
}

/// How long a dialog may stay unanswered or early, and how long a BYE
/// may wait for its response, before the entry is dropped.
pub const EARLY_LIMIT: Duration = Duration::from_secs(300);
pub const BYE_LIMIT: Duration = Duration::from_secs(32);

/// The dialog table.
pub struct Dialogs {
    pub(super) sink: Box<dyn DialogSink>,
    /// The session timers, whose store is the dialogs themselves
    /// ([`DialogMap`]): by Call-ID hash (the DIALOGS map's key and the
    /// timers' id), each dialog in one slot with its session entry and
    /// wheel node; the Call-ID itself is in the dialog and checked on
    /// every lookup by Call-ID. A Call-ID whose hash another live dialog
    /// holds gets no dialog (see [`Dialogs::on_request_from`]).
    pub(super) timers: SessionTimers<DialogMap>,
    /// A session timer change to mirror once the dialog's entry exists.
    pub(super) pending_session: Option<(u64, u64, u32)>,
    /// Where every change is recorded, to survive a restart.
    pub(super) journal: Option<Journal>,
    /// Where every change is shared with the other edges.
    pub(super) store: Option<std::sync::Arc<crate::edge::store::Store>>,
    /// Dialogs other edges own, by Call-ID hash (see `replica`).
    pub(super) replicas: HashMap<u64, super::model::Replica, IdHashBuilder>,
    /// `--dialog-idle-timeout`.
    pub(super) idle: Option<Idle>,
    /// The dialogs still pending (any INVITE makes one), by Call-ID
    /// hash, oldest first, under `--max-pending-dialogs` and
    /// `--max-pending-dialog-bytes`.
    pub(super) pending: Capped<u64, ()>,
}

/// What a pending dialog is charged beyond its strings: its entries in
/// the map and the queue and the struct (a round figure above their
/// size; unchanged from when a dialog held a dozen strings and two maps,
/// so that the caps hold as many dialogs as before).
const PENDING_OVERHEAD: usize = 256;

/// The second clock of a confirmed dialog: no in-dialog traffic for
/// `limit_ms` ends it. The wheel holds each dialog's earliest possible
/// idle end; when one falls due the dialog's real last activity (ours and
/// the XDP program's) decides whether it ends or is re-armed, so a
/// keep-alive costs one O(1) wheel update, not a scan.
pub(super) struct Idle {
    pub(super) limit_ms: u64,
    pub(super) wheel: TimerWheel,
}

impl Dialogs {
    /// An empty table with default session timers, their clock at
    /// `now_ms`.
    pub fn new(sink: Box<dyn DialogSink>, now_ms: u64) -> Dialogs {
        let timers = SessionTimers::new(TimerConfig::default(), false, now_ms);
        Dialogs::with_timers(sink, timers)
    }

    /// An empty table with the settings of `timers` (which must hold no
    /// session yet: they are not moved).
    pub fn with_timers(sink: Box<dyn DialogSink>, timers: SessionTimers) -> Dialogs {
        Dialogs {
            sink,
            timers: timers.rehome(DialogMap::new),
            pending_session: None,
            journal: None,
            store: None,
            replicas: HashMap::with_hasher(IdHashBuilder::default()),
            idle: None,
            pending: {
                let d = crate::edge::config::StateLimits::default();
                Capped::new(d.pending_dialogs, d.pending_dialog_bytes)
            },
        }
    }

    /// Caps the dialogs still pending (the ones kept above new caps go,
    /// oldest first, as new ones come).
    pub fn set_pending_limits(&mut self, count: usize, bytes: usize) {
        self.pending.set_limits(count, bytes);
    }

    /// RFC 4028 settings and `--reap-expired` for the sessions negotiated
    /// from now on (a running session keeps its interval).
    pub fn set_session_config(&mut self, cfg: TimerConfig, reap: bool) {
        self.timers.set_config(cfg, reap);
    }

    /// Pending dialogs dropped or not kept because of the caps.
    pub fn pending_evicted(&self) -> u64 {
        self.pending.evicted()
    }

    /// Pending dialogs held and what they are charged.
    pub fn pending_usage(&self) -> (usize, usize) {
        (self.pending.len(), self.pending.bytes())
    }

    pub fn len(&self) -> usize {
        self.timers.store().len()
    }

    pub fn is_empty(&self) -> bool {
        self.timers.store().is_empty()
    }

    /// The dialog of this Call-ID.
    pub(super) fn get(&self, call_id: &str) -> Option<&Dialog> {
        self.get_hashed(callid_hash(call_id.as_bytes()), call_id)
    }

    pub(super) fn get_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        self.get_hashed_mut(callid_hash(call_id.as_bytes()), call_id)
    }

    /// [`Dialogs::get`] with the Call-ID's hash already computed (a
    /// refresh goes through four calls, each with the hash at hand).
    pub(super) fn get_hashed(&self, hash: u64, call_id: &str) -> Option<&Dialog> {
        self.timers.store().get_call(hash, call_id)
    }

    pub(super) fn get_hashed_mut(&mut self, hash: u64, call_id: &str) -> Option<&mut Dialog> {
        self.timers.store_mut().get_call_mut(hash, call_id)
    }

    /// The Call-ID of the dialog with this hash.
    pub(super) fn call_id_of(&self, hash: u64) -> Option<String> {
        self.timers
            .store()
            .get(&hash)
            .map(|d| d.cold.call_id().to_string())
    }

    /// Whether in-dialog requests with this Call-ID have a dialog to
    /// belong to (early, confirmed or ending).
    pub fn known(&self, call_id: &str) -> bool {
        self.get(call_id).is_some_and(|d| d.phase != Phase::Pending)
    }

    pub fn phase(&self, call_id: &str) -> Option<Phase> {
        self.get(call_id).map(|d| d.phase)
    }

    /// How the UA of this Call-ID is reached.
    pub fn ua_flow(&self, call_id: &str) -> Option<Flow> {
        self.get(call_id).map(Dialog::ua)
    }

    fn set(&mut self, call_id: &str, phase: Phase, now_ms: u64) {
        let hash = callid_hash(call_id.as_bytes());
        if let Some(d) = self.get_mut(call_id) {
            if d.phase == phase {
                return;
            }
            d.phase = phase;
            d.cold.set_since_ms(now_ms);
            let (last, created) = (d.last_activity_ms, d.cold.created_unix());
            self.pending.remove(&hash);
            if let Some(state) = phase.map_state() {
                self.sink.upsert(hash, state, created);
            }
            if phase == Phase::Confirmed {
                self.arm_idle(hash, last.max(now_ms));
            } else if let Some(idle) = &mut self.idle {
                idle.wheel.cancel(hash);
            }
            self.save(call_id);
        }
    }

    pub(super) fn end(&mut self, call_id: &str) {
        let hash = callid_hash(call_id.as_bytes());
        if self.get(call_id).is_none() {
            return;
        }
        if let Some(d) = self.timers.store_mut().remove(&hash) {
            self.pending.remove(&hash);
            self.timers.end(hash);
            if let Some(idle) = &mut self.idle {
                idle.wheel.cancel(hash);
            }
            if d.phase != Phase::Pending {
                self.sink.remove(hash);
            }
            // An INVITE that never got an answer was never shared.
            let share = if d.phase == Phase::Pending {
                super::model::Share::Skip
            } else {
                super::model::Share::Write
            };
            self.save_as(call_id, share);
        }
    }

    /// A request being forwarded; `ua` is the UA's address (the source
    /// of a request from a UA, the destination of one from the PBX).
    pub fn on_request(&mut self, msg: &SipMessage, ua: Flow, now_ms: u64) {
        self.on_request_from(msg, ua, true, now_ms)
    }

    /// [`Dialogs::on_request`], saying whether the UA sent it.
    pub fn on_request_from(&mut self, msg: &SipMessage, ua: Flow, caller_is_ua: bool, now_ms: u64) {
        let Some(call_id) = model::call_id(msg) else {
            return;
        };
        let hash = callid_hash(call_id.as_bytes());
        let journaled = self.persisting();
        if let Some(d) = self.get_hashed_mut(hash, call_id) {
            let mut changed = false;
            if let Some(c) = model::cseq(msg) {
                changed |= c.seq > d.cseq;
                d.cseq = d.cseq.max(c.seq);
            }
            // A UA whose connection died with an earlier daemon is
            // reachable again by the connection its next request uses; so
            // is one that reconnected for any other reason: the UA's
            // latest connection is the way to it. Only the UA's: same
            // address, same dialog tags.
            if caller_is_ua && ua.is_stream() && d.ua() != ua && d.may_move_to(msg, &ua) {
                d.set_ua(ua);
                changed = true;
            }
            // In-dialog traffic (either direction) keeps it from idling.
            d.last_activity_ms = now_ms;
            let confirmed = d.phase == Phase::Confirmed;
            if confirmed {
                self.arm_idle(hash, now_ms);
            }
            if changed && journaled {
                self.save(call_id);
            }
        }
        match msg.method() {
            // A dialog of this Call-ID exists already; or another Call-ID
            // with the same hash holds the entry (the hash is no secret,
            // and long Call-IDs share theirs): the call goes on untracked
            // rather than taking the other's.
            Some(Method::Invite)
                if msg.to_tag().is_none() && !self.timers.store().contains_key(&hash) =>
            {
                self.add_pending(msg, call_id, hash, ua, caller_is_ua, now_ms);
            }
            Some(Method::Bye) => {
                // A BYE for one fork while another is confirmed ends that
                // fork only (on its 2xx): the Call-ID stays confirmed.
                let others = self.get(call_id).is_some_and(|d| d.other_forks_live(msg));
                if !others {
                    self.set(call_id, Phase::Terminating, now_ms);
                }
            }
            _ => {}
        }
    }

    /// A dialog-creating INVITE: a pending dialog, made room for under
    /// the caps by ending the oldest pending ones.
    fn add_pending(
        &mut self,
        msg: &SipMessage,
        call_id: &str,
        hash: u64,
        ua: Flow,
        caller_is_ua: bool,
        now_ms: u64,
    ) {
        let caller_from = msg.header("From").unwrap_or_default().to_string();
        let caller_contact = msg.header("Contact").and_then(name_addr_uri);
        let cost = PENDING_OVERHEAD
            + 2 * call_id.len()
            + caller_from.len()
            + caller_contact.as_ref().map_or(0, String::len);
        for (old, ()) in self.pending.insert(hash, (), cost) {
            if old == hash {
                // Too big to keep at all: no dialog, and no session offer
                // waiting for one.
                self.timers.end(hash);
                return;
            }
            if let Some(c) = self.call_id_of(old) {
                self.end(&c);
            }
        }
        let cold = Cold {
            created_unix: now_ms / 1_000,
            since_ms: now_ms,
            ua,
            call_id: call_id.to_string(),
            caller_from,
            callee_to: None,
            caller_contact,
            callee_contact: None,
            forks: Vec::new(),
        };
        let cseq = model::cseq(msg).map_or(1, |c| c.seq);
        self.timers.store_mut().insert(
            hash,
            Dialog::new(Phase::Pending, cseq, caller_is_ua, now_ms, &cold),
        );
        self.save(call_id);
    }

    /// A response being forwarded.
    pub fn on_response(&mut self, msg: &SipMessage, now_ms: u64) {
        self.phase_response(msg, now_ms);
        self.flush_session();
    }

    fn phase_response(&mut self, msg: &SipMessage, now_ms: u64) {
        let (Some(call_id), Some(code), Some(cseq)) =
            (model::call_id(msg), msg.status_code(), model::cseq(msg))
        else {
            return;
        };
        let hash = callid_hash(call_id.as_bytes());
        let Some(phase) = self.get_hashed(hash, call_id).map(|d| d.phase) else {
            return;
        };
        match cseq.method {
            Method::Invite => match code {
                101..=199 if phase == Phase::Pending && msg.to_tag().is_some() => {
                    self.set(call_id, Phase::Early, now_ms)
                }
                200..=299 if matches!(phase, Phase::Pending | Phase::Early) => {
                    self.set(call_id, Phase::Confirmed, now_ms)
                }
                300.. if matches!(phase, Phase::Pending | Phase::Early) => self.end(call_id),
                _ => {}
            },
            // 401/407: the BYE comes again with credentials; the dialog
            // stays (terminating) until then or until the sweep.
            Method::Bye if code == 401 || code == 407 => {}
            Method::Bye if code >= 200 => {
                let fork = self.get_mut(call_id).and_then(|d| {
                    if !d.other_forks_live(msg) {
                        return None;
                    }
                    let tag = d.callee_tag(msg)?;
                    d.drop_fork(&tag);
                    Some(())
                });
                match fork {
                    Some(()) => self.save(call_id),
                    None => self.end(call_id),
                }
            }
            _ => {}
        }
    }

    /// Mirrors a session timer change noted by [`Dialogs::timer_response`].
    pub fn flush_session(&mut self) {
        if let Some((hash, expires, flags)) = self.pending_session.take() {
            if self.timers.store().contains_key(&hash) {
                self.sink.set_session(hash, expires, flags);
            }
        }
    }

    /// Drops dialogs that stayed unanswered or early past
    /// [`EARLY_LIMIT`], or whose BYE got no response within [`BYE_LIMIT`].
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let stale: Vec<String> = self
            .timers
            .store()
            .values()
            .filter(|d| {
                let age = Duration::from_millis(now_ms.saturating_sub(d.cold.since_ms()));
                match d.phase {
                    Phase::Pending | Phase::Early => age > EARLY_LIMIT,
                    Phase::Terminating => age > BYE_LIMIT,
                    Phase::Confirmed => false,
                }
            })
            .map(|d| d.cold.call_id().to_string())
            .collect();
        for k in &stale {
            self.end(k);
        }
        stale.len()
    }
}
