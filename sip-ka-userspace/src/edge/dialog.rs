//! Dialog state kept by the edge (INVITE dialogs, keyed by Call-ID) and
//! mirrored into the DIALOGS map that the XDP program reads and bumps.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use sip_ka_common::maps::{DialogValue, DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING};

use super::{
    persist::{self, DialogRecord, FlowRecord, Journal, Record},
    transport::Flow,
};
use crate::{
    edge::session_timer::{self, RequestAction, Session, SessionTimers, TimerConfig},
    sip::{Method, Refresher, SipMessage},
    util::{clock::now_ms, timer_wheel::TimerWheel},
};

/// Where live dialogs are mirrored.
pub trait DialogSink: Send {
    /// Creates or updates the entry for `hash` with `state` (a
    /// `DIALOG_*`), keeping the keep-alive count the XDP program keeps.
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64);
    fn remove(&mut self, hash: u64);
    /// Records the session timer: absolute expiry (unix seconds, 0 =
    /// none) and interval/refresher as [`session_flags`].
    fn set_session(&mut self, _hash: u64, _expires_unix: u64, _flags: u32) {}
    /// When the XDP program last counted an in-dialog keep-alive for
    /// `hash` (CLOCK_MONOTONIC ns), if ever.
    fn last_ka_ns(&mut self, _hash: u64) -> Option<u64> {
        None
    }
    /// Removes every entry whose hash `keep` refuses (left by an earlier
    /// run for dialogs that are gone); returns how many.
    fn retain(&mut self, _keep: &dyn Fn(u64) -> bool) -> usize {
        0
    }
}

/// No mirror (XDP off, or unit tests).
pub struct NoSink;

impl DialogSink for NoSink {
    fn upsert(&mut self, _: u64, _: u32, _: u64) {}
    fn remove(&mut self, _: u64) {}
}

/// The pinned DIALOGS map.
pub struct BpfDialogs(pub BpfHashMap<MapData, u64, DialogValue>);

impl BpfDialogs {
    /// Removes every entry (left by an earlier run; this edge owns the map).
    pub fn clear(&mut self) -> usize {
        let keys: Vec<u64> = self.0.keys().filter_map(Result::ok).collect();
        keys.iter().filter(|k| self.0.remove(k).is_ok()).count()
    }
}

impl DialogSink for BpfDialogs {
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64) {
        let mut v = self.0.get(&hash, 0).unwrap_or(DialogValue {
            created_unix,
            ..DialogValue::default()
        });
        v.state = state;
        if let Err(e) = self.0.insert(hash, v, 0) {
            log::warn!("DIALOGS: writing {hash:#018x}: {e}");
        }
    }

    fn remove(&mut self, hash: u64) {
        // Absent already is fine.
        let _ = self.0.remove(&hash);
    }

    fn set_session(&mut self, hash: u64, expires_unix: u64, flags: u32) {
        if let Ok(mut v) = self.0.get(&hash, 0) {
            v.expires_unix = expires_unix;
            v.flags = flags;
            if let Err(e) = self.0.insert(hash, v, 0) {
                log::warn!("DIALOGS: writing {hash:#018x}: {e}");
            }
        }
    }

    fn last_ka_ns(&mut self, hash: u64) -> Option<u64> {
        self.0
            .get(&hash, 0)
            .ok()
            .map(|v| v.last_ka_ns)
            .filter(|&ns| ns != 0)
    }

    fn retain(&mut self, keep: &dyn Fn(u64) -> bool) -> usize {
        let gone: Vec<u64> = self
            .0
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep(*k))
            .collect();
        gone.iter().filter(|k| self.0.remove(k).is_ok()).count()
    }
}

/// `DialogValue.flags` in edge mode: bit 31 says a session timer is
/// known, bits 28..=29 the refresher (0 none, 1 uac, 2 uas), bits 0..=27
/// the session interval in seconds.
pub const SESSION_KNOWN: u32 = 1 << 31;
const REFRESHER_SHIFT: u32 = 28;
const INTERVAL_MASK: u32 = (1 << REFRESHER_SHIFT) - 1;

pub fn session_flags(s: &Session) -> u32 {
    let r = match s.refresher {
        None => 0,
        Some(Refresher::Uac) => 1,
        Some(Refresher::Uas) => 2,
    };
    SESSION_KNOWN | (r << REFRESHER_SHIFT) | s.interval.min(INTERVAL_MASK)
}

/// The interval and refresher in `DialogValue.flags`, if any.
pub fn decode_session_flags(flags: u32) -> Option<(u32, Option<&'static str>)> {
    if flags & SESSION_KNOWN == 0 {
        return None;
    }
    let r = match (flags >> REFRESHER_SHIFT) & 3 {
        1 => Some("uac"),
        2 => Some("uas"),
        _ => None,
    };
    Some((flags & INTERVAL_MASK, r))
}

/// Where a dialog is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// INVITE sent, no To tag seen yet (not in the map).
    Pending,
    /// A 1xx with a To tag.
    Early,
    /// A 2xx.
    Confirmed,
    /// BYE seen, waiting for its response.
    Terminating,
}

impl Phase {
    fn map_state(self) -> Option<u32> {
        match self {
            Phase::Pending => None,
            Phase::Early => Some(DIALOG_EARLY),
            Phase::Confirmed => Some(DIALOG_CONFIRMED),
            Phase::Terminating => Some(DIALOG_TERMINATING),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Early => "early",
            Phase::Confirmed => "confirmed",
            Phase::Terminating => "terminating",
        }
    }

    fn from_name(s: &str) -> Option<Phase> {
        Some(match s {
            "pending" => Phase::Pending,
            "early" => Phase::Early,
            "confirmed" => Phase::Confirmed,
            "terminating" => Phase::Terminating,
            _ => return None,
        })
    }
}

struct Dialog {
    phase: Phase,
    hash: u64,
    /// How the UA is reached (where requests from the PBX go).
    ua: Flow,
    created_unix: u64,
    since: Instant,
    /// Whether the UA sent the dialog-creating INVITE.
    caller_is_ua: bool,
    /// From of the INVITE (caller side, with its tag).
    caller_from: String,
    /// To of the 2xx (callee side, with its tag).
    callee_to: Option<String>,
    /// Contact URIs of both sides (where a BYE goes).
    caller_contact: Option<String>,
    callee_contact: Option<String>,
    /// Highest CSeq number seen in the dialog.
    cseq: u32,
    /// Last in-dialog traffic the edge saw itself (unix ms): requests it
    /// forwarded, keep-alives it answered (`--dialog-idle-timeout`).
    last_activity_ms: u64,
    /// To tags of the forks that answered the INVITE with a 2xx: each is a
    /// dialog (RFC 3261 13.2.2.4) sharing the Call-ID, so the BYE ending
    /// one fork's dialog must not end the one the caller kept.
    forks: Vec<persist::Fork>,
}

/// Most forks remembered per Call-ID.
const MAX_FORKS: usize = 16;

/// The tag parameter of a From or To value.
fn tag_of(value: &str) -> Option<String> {
    crate::sip::NameAddr::parse(value)
        .ok()?
        .param("tag")
        .flatten()
        .map(str::to_string)
}

impl Dialog {
    /// The callee-side tag of an in-dialog request or its response: the
    /// To tag when the caller's From tag is the From tag, else the From tag
    /// (a request from the callee side).
    fn callee_tag(&self, msg: &SipMessage) -> Option<String> {
        let caller = tag_of(&self.caller_from);
        let from = msg.from_tag();
        if from.is_some() && from == caller {
            msg.to_tag()
        } else {
            from
        }
    }

    /// A 2xx to an INVITE. To a request of the caller's side (its From
    /// tag is the caller's): a fork's answer, or a callee target refresh;
    /// the fork is added or its Contact updated, and the first fork is the
    /// one reaping BYEs address. To a request of the callee's side (a
    /// re-INVITE from the PBX's side): its Contact is the caller's. Returns
    /// whether anything changed.
    fn note_invite_2xx(
        &mut self,
        msg: &SipMessage,
        to: Option<String>,
        contact: Option<String>,
    ) -> bool {
        let caller_tag = tag_of(&self.caller_from);
        let from_caller = msg.from_tag().is_some() && msg.from_tag() == caller_tag;
        if !from_caller {
            let changed = contact.is_some() && contact != self.caller_contact;
            if changed {
                self.caller_contact = contact;
            }
            return changed;
        }
        let (Some(tag), Some(to)) = (msg.to_tag(), to) else {
            return false;
        };
        let mut changed = false;
        let room = self.forks.len() < MAX_FORKS;
        match self.forks.iter_mut().find(|f| f.tag == tag) {
            Some(f) if contact.is_some() && contact != f.contact => {
                f.contact = contact.clone();
                changed = true;
            }
            Some(_) => {}
            None if room => {
                self.forks.push(persist::Fork {
                    tag: tag.clone(),
                    to: to.clone(),
                    contact: contact.clone(),
                });
                changed = true;
            }
            None => {}
        }
        if self.callee_to.is_none() {
            self.callee_to = Some(to);
            self.callee_contact = contact;
            changed = true;
        } else if self.callee_to.as_deref().and_then(tag_of) == Some(tag) && changed {
            self.callee_contact = contact;
        }
        changed
    }

    /// A fork's dialog ended: if reaping BYEs addressed it, they now
    /// address the first fork left.
    fn drop_fork(&mut self, tag: &str) {
        self.forks.retain(|f| f.tag != tag);
        if self.callee_to.as_deref().and_then(tag_of).as_deref() == Some(tag) {
            let next = self.forks.first();
            self.callee_to = next.map(|f| f.to.clone());
            self.callee_contact = next.and_then(|f| f.contact.clone());
        }
    }

    /// Whether ending the dialog `msg` belongs to leaves other confirmed
    /// forks of this Call-ID alive.
    fn other_forks_live(&self, msg: &SipMessage) -> bool {
        let tag = self.callee_tag(msg);
        self.forks.len() > 1 && tag.is_some_and(|t| self.forks.iter().any(|f| f.tag == t))
    }
}

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
    by_call: HashMap<String, Dialog>,
    by_hash: HashMap<u64, String>,
    sink: Box<dyn DialogSink>,
    timers: SessionTimers,
    /// A session timer change to mirror once the dialog's entry exists.
    pending_session: Option<(u64, u64, u32)>,
    /// Where every change is recorded, to survive a restart.
    journal: Option<Journal>,
    /// `--dialog-idle-timeout`.
    idle: Option<Idle>,
}

/// The second clock of a confirmed dialog: no in-dialog traffic for
/// `limit_ms` ends it. The wheel holds each dialog's earliest possible
/// idle end; when one falls due the dialog's real last activity (ours and
/// the XDP program's) decides whether it ends or is re-armed, so a
/// keep-alive costs one O(1) wheel update, not a scan.
struct Idle {
    limit_ms: u64,
    wheel: TimerWheel,
}

/// The URI of a Contact or From/To value (`<uri>` or a bare URI).
fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Dialogs {
    pub fn new(sink: Box<dyn DialogSink>) -> Dialogs {
        let timers = SessionTimers::new(TimerConfig::default(), false, now_ms());
        Dialogs::with_timers(sink, timers)
    }

    pub fn with_timers(sink: Box<dyn DialogSink>, timers: SessionTimers) -> Dialogs {
        Dialogs {
            by_call: HashMap::new(),
            by_hash: HashMap::new(),
            sink,
            timers,
            pending_session: None,
            journal: None,
            idle: None,
        }
    }

    /// Ends confirmed dialogs with no in-dialog traffic for `limit`
    /// (`None`: never).
    pub fn set_idle_timeout(&mut self, limit: Option<std::time::Duration>, now_ms: u64) {
        self.idle = limit.filter(|l| !l.is_zero()).map(|l| Idle {
            limit_ms: l.as_millis() as u64,
            wheel: TimerWheel::new(1, now_ms),
        });
        let confirmed: Vec<(u64, u64)> = self
            .by_call
            .values()
            .filter(|d| d.phase == Phase::Confirmed)
            .map(|d| (d.hash, d.last_activity_ms))
            .collect();
        for (hash, last) in confirmed {
            self.arm_idle(hash, last);
        }
    }

    fn arm_idle(&mut self, hash: u64, last_ms: u64) {
        if let Some(idle) = &mut self.idle {
            idle.wheel.set(hash, last_ms.saturating_add(idle.limit_ms));
        }
    }

    /// In-dialog traffic the edge answered itself (a keep-alive): the
    /// dialog is not idle. Not journaled (one write per keep-alive would
    /// cost more than it saves): after a restart the idle clock starts
    /// again from the restart.
    pub fn touch(&mut self, call_id: &str, from_ua: Option<Flow>) {
        let now = now_ms();
        let Some(d) = self.by_call.get_mut(call_id) else {
            return;
        };
        d.last_activity_ms = now;
        // A keep-alive on a new connection (after a restart, or a
        // reconnect) is how the UA is reached from now on.
        if let Some(flow) = from_ua.filter(|f| f.is_stream() && *f != d.ua) {
            d.ua = flow;
            self.save(call_id);
            let Some(d) = self.by_call.get(call_id) else {
                return;
            };
            let (hash, confirmed) = (d.hash, d.phase == Phase::Confirmed);
            if confirmed {
                self.arm_idle(hash, now);
            }
            return;
        }
        let (hash, confirmed) = (d.hash, d.phase == Phase::Confirmed);
        if confirmed {
            self.arm_idle(hash, now);
        }
    }

    /// Records every change from now on in `journal` (after
    /// [`Dialogs::restore`] has taken what it held).
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The stored form of a dialog.
    fn record(&self, call_id: &str, d: &Dialog) -> DialogRecord {
        let now = now_ms();
        let since_ms = now.saturating_sub(d.since.elapsed().as_millis() as u64);
        DialogRecord {
            call_id: call_id.to_string(),
            phase: d.phase.name().to_string(),
            ua: FlowRecord::of(&d.ua),
            created_unix: d.created_unix,
            since_ms,
            caller_is_ua: d.caller_is_ua,
            caller_from: d.caller_from.clone(),
            callee_to: d.callee_to.clone(),
            caller_contact: d.caller_contact.clone(),
            callee_contact: d.callee_contact.clone(),
            cseq: d.cseq,
            forks: d.forks.clone(),
            session: self.timers.session(d.hash).map(|s| persist::SessionRecord {
                interval: s.interval,
                refresher: s.refresher.map(|r| r.to_string()),
                expires_at_ms: self.timers.expires_at_ms(d.hash),
            }),
        }
    }

    /// Journals the dialog's current state (or its removal), and compacts
    /// the journal when it has grown enough.
    fn save(&mut self, call_id: &str) {
        if self.journal.is_none() {
            return;
        }
        let rec = match self.by_call.get(call_id) {
            Some(d) => Record::Upsert(Box::new(self.record(call_id, d))),
            None => Record::Remove {
                call_id: call_id.to_string(),
            },
        };
        let live = self.by_call.len();
        let compact = self.journal.as_mut().is_some_and(|j| {
            j.append(&rec);
            j.wants_compaction(live)
        });
        if compact {
            if let Some(j) = self.journal.as_mut() {
                // Off the table's lock: the merge reads only the files.
                j.compact_in_background();
            }
        }
    }

    /// Rewrites the snapshot from the table and empties the journal (at
    /// start, before any traffic: it holds the table while it writes).
    pub fn compact(&mut self) {
        let Some(mut j) = self.journal.take() else {
            return;
        };
        let all: Vec<DialogRecord> = self
            .by_call
            .iter()
            .map(|(c, d)| self.record(c, d))
            .collect();
        if let Err(e) = j.compact(&all) {
            log::warn!("state: compacting {}: {e:#}", j.dir().display());
        }
        self.journal = Some(j);
    }

    /// Puts back the dialogs a previous run recorded: the table, their
    /// session timers (absolute expiries: one already past fires at the
    /// next [`Dialogs::expire`]), and the mirror. Mirror entries of
    /// dialogs that are gone are removed; the entries of restored dialogs
    /// keep the keep-alive count and time the XDP program kept while no
    /// daemon ran. Returns (dialogs restored, records refused, stale mirror
    /// entries removed).
    pub fn restore(&mut self, records: Vec<DialogRecord>, now_ms: u64) -> (usize, usize, usize) {
        let mut refused = 0;
        let mut sessions = Vec::new();
        for r in records {
            let Some(phase) = Phase::from_name(&r.phase) else {
                log::warn!(
                    "state: dialog {}: unknown phase {:?}; dropped",
                    r.call_id,
                    r.phase
                );
                refused += 1;
                continue;
            };
            let hash = sip_ka_common::callid_hash(r.call_id.as_bytes());
            let age = std::time::Duration::from_millis(now_ms.saturating_sub(r.since_ms));
            let since = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            if let Some(s) = &r.session {
                let refresher = match s.refresher.as_deref() {
                    Some("uac") => Some(Refresher::Uac),
                    Some("uas") => Some(Refresher::Uas),
                    _ => None,
                };
                sessions.push(session_timer::SessionRecord {
                    dialog: hash,
                    session: Session {
                        interval: s.interval,
                        refresher,
                    },
                    expires_at_ms: s.expires_at_ms.filter(|_| s.interval > 0),
                });
            }
            if let Some(state) = phase.map_state() {
                self.sink.upsert(hash, state, r.created_unix);
            }
            self.by_hash.insert(hash, r.call_id.clone());
            self.by_call.insert(
                r.call_id,
                Dialog {
                    phase,
                    hash,
                    ua: r.ua.restore(),
                    created_unix: r.created_unix,
                    since,
                    caller_is_ua: r.caller_is_ua,
                    caller_from: r.caller_from,
                    callee_to: r.callee_to,
                    caller_contact: r.caller_contact,
                    callee_contact: r.callee_contact,
                    cseq: r.cseq,
                    forks: r.forks,
                    // The idle clock restarts: a restart never ends a call
                    // earlier than its idle limit after the restart.
                    last_activity_ms: now_ms,
                },
            );
        }
        self.timers.restore(sessions.iter().copied());
        for s in &sessions {
            if !self.by_hash.contains_key(&s.dialog) {
                continue;
            }
            let expires = s.expires_at_ms.map_or(0, |at| at / 1_000);
            self.sink
                .set_session(s.dialog, expires, session_flags(&s.session));
        }
        let confirmed: Vec<u64> = self
            .by_call
            .values()
            .filter(|d| d.phase == Phase::Confirmed)
            .map(|d| d.hash)
            .collect();
        for hash in confirmed {
            self.arm_idle(hash, now_ms);
        }
        let by_hash = &self.by_hash;
        let live: std::collections::HashSet<u64> = by_hash
            .iter()
            .filter(|(_, c)| {
                self.by_call
                    .get(*c)
                    .is_some_and(|d| d.phase != Phase::Pending)
            })
            .map(|(h, _)| *h)
            .collect();
        let stale = self.sink.retain(&|h| live.contains(&h));
        (self.by_call.len(), refused, stale)
    }

    pub fn timers(&self) -> &SessionTimers {
        &self.timers
    }

    /// The session of a dialog and its time left, if a timer runs.
    pub fn session(&self, call_id: &str, now_ms: u64) -> Option<(Session, Option<u64>)> {
        let hash = self.by_call.get(call_id)?.hash;
        let s = self.timers.session(hash)?;
        Some((s, self.timers.time_left_ms(hash, now_ms)))
    }

    /// RFC 4028 8.1 on a refresh request (INVITE, re-INVITE, UPDATE) on
    /// its way through; `to_tag` goes into a 422 or 481 the edge answers.
    pub fn timer_request(&mut self, msg: &mut SipMessage, to_tag: Option<&str>) -> RequestAction {
        let Some(hash) = msg.call_id_hash() else {
            return RequestAction::NotApplicable;
        };
        self.timers.on_request(hash, msg, to_tag)
    }

    /// RFC 4028 8.2 on a response on its way back (a dialog the table
    /// knows only): a 2xx to a refresh (re)starts the session timer, whose
    /// absolute expiry goes into the mirror.
    pub fn timer_response(&mut self, msg: &mut SipMessage, now_ms: u64) {
        let Some(call_id) = msg.call_id() else {
            return;
        };
        let Some(d) = self.by_call.get_mut(call_id) else {
            return;
        };
        let hash = d.hash;
        let contact = msg.header("Contact").map(uri_of);
        let to = msg.header("To").map(str::to_string);
        let mut changed = false;
        if let (Some(code), Some(cseq)) = (msg.status_code(), msg.cseq()) {
            if cseq.method == Method::Invite && (200..300).contains(&code) && msg.to_tag().is_some()
            {
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
        if changed {
            if let Some(call_id) = self.by_hash.get(&hash).cloned() {
                self.save(&call_id);
            }
        }
    }

    /// Sessions due at `now_ms`: the dialogs are dropped (state and
    /// mirror) and returned, with BYEs for both sides when reaping.
    pub fn expire(&mut self, now_ms: u64, upstream: SocketAddr, local: SocketAddr) -> Vec<Ended> {
        let mut out = Vec::new();
        for e in self.timers.expire(now_ms) {
            let Some(call_id) = self.by_hash.get(&e.dialog).cloned() else {
                continue;
            };
            let Some(d) = self.by_call.get(&call_id) else {
                continue;
            };
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
            if let Some(d) = self.by_call.remove(&call_id) {
                self.by_hash.remove(&d.hash);
                if let Some(idle) = &mut self.idle {
                    idle.wheel.cancel(d.hash);
                }
                if d.phase != Phase::Pending {
                    self.sink.remove(d.hash);
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
            let Some(call_id) = self.by_hash.get(&hash).cloned() else {
                continue;
            };
            let Some(d) = self.by_call.get_mut(&call_id) else {
                continue;
            };
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

    pub fn len(&self) -> usize {
        self.by_call.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_call.is_empty()
    }

    /// Whether in-dialog requests with this Call-ID have a dialog to
    /// belong to (early, confirmed or ending).
    pub fn known(&self, call_id: &str) -> bool {
        self.by_call
            .get(call_id)
            .is_some_and(|d| d.phase != Phase::Pending)
    }

    pub fn phase(&self, call_id: &str) -> Option<Phase> {
        self.by_call.get(call_id).map(|d| d.phase)
    }

    /// How the UA of this Call-ID is reached.
    pub fn ua_flow(&self, call_id: &str) -> Option<Flow> {
        self.by_call.get(call_id).map(|d| d.ua)
    }

    fn set(&mut self, call_id: &str, phase: Phase) {
        if let Some(d) = self.by_call.get_mut(call_id) {
            if d.phase == phase {
                return;
            }
            d.phase = phase;
            d.since = Instant::now();
            let (hash, last) = (d.hash, d.last_activity_ms);
            if let Some(state) = phase.map_state() {
                self.sink.upsert(d.hash, state, d.created_unix);
            }
            if phase == Phase::Confirmed {
                self.arm_idle(hash, last.max(now_ms()));
            } else if let Some(idle) = &mut self.idle {
                idle.wheel.cancel(hash);
            }
            self.save(call_id);
        }
    }

    fn end(&mut self, call_id: &str) {
        if let Some(d) = self.by_call.remove(call_id) {
            self.by_hash.remove(&d.hash);
            self.timers.end(d.hash);
            if let Some(idle) = &mut self.idle {
                idle.wheel.cancel(d.hash);
            }
            if d.phase != Phase::Pending {
                self.sink.remove(d.hash);
            }
            self.save(call_id);
        }
    }

    /// A request being forwarded; `ua` is the UA's address (the source
    /// of a request from a UA, the destination of one from the PBX).
    pub fn on_request(&mut self, msg: &SipMessage, ua: Flow) {
        self.on_request_from(msg, ua, true)
    }

    /// [`Dialogs::on_request`], saying whether the UA sent it.
    pub fn on_request_from(&mut self, msg: &SipMessage, ua: Flow, caller_is_ua: bool) {
        let (Some(call_id), Some(hash)) = (msg.call_id(), msg.call_id_hash()) else {
            return;
        };
        if let Some(d) = self.by_call.get_mut(call_id) {
            let mut changed = false;
            if let Some(c) = msg.cseq() {
                changed |= c.seq > d.cseq;
                d.cseq = d.cseq.max(c.seq);
            }
            // A UA whose connection died with an earlier daemon is
            // reachable again by the connection its next request uses; so
            // is one that reconnected for any other reason: the UA's
            // latest connection is the way to it.
            if caller_is_ua && ua.is_stream() && d.ua != ua {
                d.ua = ua;
                changed = true;
            }
            // In-dialog traffic (either direction) keeps it from idling.
            let now = now_ms();
            d.last_activity_ms = now;
            let (hash, confirmed) = (d.hash, d.phase == Phase::Confirmed);
            if confirmed {
                self.arm_idle(hash, now);
            }
            if changed {
                self.save(call_id);
            }
        }
        match msg.method() {
            Some(Method::Invite)
                if msg.to_tag().is_none() && !self.by_call.contains_key(call_id) =>
            {
                let caller_from = msg.header("From").unwrap_or_default().to_string();
                self.by_call.insert(
                    call_id.to_string(),
                    Dialog {
                        phase: Phase::Pending,
                        hash,
                        ua,
                        created_unix: now_unix(),
                        since: Instant::now(),
                        caller_is_ua,
                        caller_from,
                        callee_to: None,
                        caller_contact: msg.header("Contact").map(uri_of),
                        callee_contact: None,
                        cseq: msg.cseq().map_or(1, |c| c.seq),
                        last_activity_ms: now_ms(),
                        forks: Vec::new(),
                    },
                );
                self.by_hash.insert(hash, call_id.to_string());
                self.save(call_id);
            }
            Some(Method::Bye) => {
                // A BYE for one fork while another is confirmed ends that
                // fork only (on its 2xx): the Call-ID stays confirmed.
                let others = self
                    .by_call
                    .get(call_id)
                    .is_some_and(|d| d.other_forks_live(msg));
                if !others {
                    self.set(call_id, Phase::Terminating);
                }
            }
            _ => {}
        }
    }

    /// A response being forwarded.
    pub fn on_response(&mut self, msg: &SipMessage) {
        self.phase_response(msg);
        self.flush_session();
    }

    fn phase_response(&mut self, msg: &SipMessage) {
        let (Some(call_id), Some(code), Some(cseq)) =
            (msg.call_id(), msg.status_code(), msg.cseq())
        else {
            return;
        };
        let Some(phase) = self.phase(call_id) else {
            return;
        };
        match cseq.method {
            Method::Invite => match code {
                101..=199 if phase == Phase::Pending && msg.to_tag().is_some() => {
                    self.set(call_id, Phase::Early)
                }
                200..=299 if matches!(phase, Phase::Pending | Phase::Early) => {
                    self.set(call_id, Phase::Confirmed)
                }
                300.. if matches!(phase, Phase::Pending | Phase::Early) => self.end(call_id),
                _ => {}
            },
            // 401/407: the BYE comes again with credentials; the dialog
            // stays (terminating) until then or until the sweep.
            Method::Bye if code == 401 || code == 407 => {}
            Method::Bye if code >= 200 => {
                let fork = self.by_call.get_mut(call_id).and_then(|d| {
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
            if self.by_hash.contains_key(&hash) {
                self.sink.set_session(hash, expires, flags);
            }
        }
    }

    /// Drops dialogs that stayed unanswered or early past
    /// [`EARLY_LIMIT`], or whose BYE got no response within [`BYE_LIMIT`].
    pub fn sweep(&mut self, now: Instant) -> usize {
        let stale: Vec<String> = self
            .by_call
            .iter()
            .filter(|(_, d)| {
                let age = now.saturating_duration_since(d.since);
                match d.phase {
                    Phase::Pending | Phase::Early => age > EARLY_LIMIT,
                    Phase::Terminating => age > BYE_LIMIT,
                    Phase::Confirmed => false,
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &stale {
            self.end(k);
        }
        stale.len()
    }
}

/// BYEs (with our Via) to both sides of an expired dialog, built from what
/// the table kept; a side whose Contact is unknown gets none.
fn byes(
    call_id: &str,
    d: &Dialog,
    upstream: SocketAddr,
    local: SocketAddr,
) -> Vec<(SipMessage, Flow)> {
    let Some(callee_to) = &d.callee_to else {
        return Vec::new();
    };
    let upstream = Flow::Udp(upstream);
    let (caller_addr, callee_addr) = if d.caller_is_ua {
        (d.ua, upstream)
    } else {
        (upstream, d.ua)
    };
    let cseq = d.cseq.saturating_add(1);
    let mut out = Vec::new();
    for (ruri, from, to, dest) in [
        (&d.callee_contact, &d.caller_from, callee_to, callee_addr),
        (&d.caller_contact, callee_to, &d.caller_from, caller_addr),
    ] {
        let Some(ruri) = ruri else { continue };
        let host = super::forward::uri_host(local.ip());
        let port = local.port();
        let branch = format!(
            "{}{:016x}",
            super::forward::BRANCH_PREFIX,
            super::forward::fnv1a(&[call_id.as_bytes(), ruri.as_bytes(), b"reap"])
        );
        let transport = dest.via_transport();
        let text = format!(
            "BYE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {host}:{port};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} BYE\r\n\
             Reason: SIP;cause=408;text=\"Session expired\"\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match crate::sip::parse_message(
            text.as_bytes(),
            crate::sip::Framing::Datagram,
            &crate::sip::Limits::default(),
        ) {
            Ok(m) => out.push((m, dest)),
            Err(e) => log::warn!("edge: BYE for {call_id}: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::sip::{Framing, Limits};

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
        let mut d = Dialogs::new(Box::new(log.clone()));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        let inv = request("INVITE", "", 1);
        let hash = inv.call_id_hash().unwrap();
        d.on_request(&inv, ua);
        assert!(!d.known("d1@example.com"));
        d.on_response(&inv.response(100, "Trying", None).unwrap());
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Pending));
        d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap());
        assert!(d.known("d1@example.com"));
        d.on_response(&inv.response(200, "OK", Some("b1")).unwrap());
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
        assert_eq!(d.ua_flow("d1@example.com"), Some(ua));
        let bye = request("BYE", ";tag=b1", 2);
        d.on_request(&bye, ua);
        d.on_response(&bye.response(200, "OK", None).unwrap());
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
        let mut d = Dialogs::new(Box::new(log.clone()));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        let inv = request("INVITE", "", 1);
        d.on_request(&inv, ua);
        d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap());
        d.on_request(&request("CANCEL", "", 1), ua);
        d.on_response(&inv.response(487, "Request Terminated", Some("b1")).unwrap());
        assert!(d.is_empty());
        // A failure before any 1xx never touched the map.
        let log2 = Log::default();
        let mut d = Dialogs::new(Box::new(log2.clone()));
        d.on_request(&inv, ua);
        d.on_response(&inv.response(486, "Busy Here", Some("b1")).unwrap());
        assert!(d.is_empty());
        assert!(log2.0.lock().unwrap().is_empty());
    }

    #[test]
    fn reinvite_failure_keeps_a_confirmed_dialog() {
        let mut d = Dialogs::new(Box::new(NoSink));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        let inv = request("INVITE", "", 1);
        d.on_request(&inv, ua);
        d.on_response(&inv.response(200, "OK", Some("b1")).unwrap());
        let re = request("INVITE", ";tag=b1", 2);
        d.on_request(&re, ua);
        d.on_response(&re.response(491, "Request Pending", None).unwrap());
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
        assert_eq!(d.sweep(Instant::now() + EARLY_LIMIT * 2), 0);
    }

    #[test]
    fn a_bye_to_one_fork_keeps_the_fork_the_caller_kept() {
        let log = Log::default();
        let mut d = Dialogs::new(Box::new(log.clone()));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        let inv = request("INVITE", "", 1);
        d.on_request(&inv, ua);
        // Two forks answer: early dialogs b1 and b2, then both 2xx.
        d.on_response(&inv.response(180, "Ringing", Some("b1")).unwrap());
        d.on_response(&inv.response(180, "Ringing", Some("b2")).unwrap());
        let mut ok1 = inv.response(200, "OK", Some("b1")).unwrap();
        d.timer_response(&mut ok1, now_ms());
        d.on_response(&ok1);
        let mut ok2 = inv.response(200, "OK", Some("b2")).unwrap();
        d.timer_response(&mut ok2, now_ms());
        d.on_response(&ok2);
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
        // The caller keeps b1 and sends BYE to b2 (RFC 3261 13.2.2.4).
        let bye2 = request("BYE", ";tag=b2", 2);
        d.on_request(&bye2, ua);
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
        d.on_response(&bye2.response(200, "OK", None).unwrap());
        assert!(d.known("d1@example.com"), "the kept call lost its dialog");
        // Then the kept call ends.
        let bye1 = request("BYE", ";tag=b1", 3);
        d.on_request(&bye1, ua);
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Terminating));
        d.on_response(&bye1.response(200, "OK", None).unwrap());
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
        d.on_request(&inv, ua);
        let mut ok = with_contact(
            inv.response(200, "OK", Some("b1")).unwrap(),
            "sip:bob@198.18.0.1:5080",
        );
        d.timer_response(&mut ok, now_ms());
        d.on_response(&ok);
        inv
    }

    #[test]
    fn a_reinvite_from_the_pbx_side_does_not_keep_the_dialog_after_bye() {
        let mut d = Dialogs::new(Box::new(NoSink));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        confirmed(&mut d);
        // The PBX's side re-INVITEs (hold); the UA's 200 has To tag b1 and
        // From tag... of the re-INVITE: From b1, To a1. Its Contact is the
        // caller's.
        let re = from_callee("INVITE", 1);
        d.on_request_from(&re, ua, false);
        let mut ok = with_contact(
            re.response(200, "OK", None).unwrap(),
            "sip:alice@198.18.0.2:5070",
        );
        d.timer_response(&mut ok, now_ms());
        d.on_response(&ok);
        let ended = {
            let byes = byes(
                "d1@example.com",
                d.by_call.get("d1@example.com").unwrap(),
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
        d.on_request(&bye, ua);
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Terminating));
        d.on_response(&bye.response(200, "OK", None).unwrap());
        assert!(d.is_empty(), "the BYE did not end the dialog");
    }

    #[test]
    fn a_retransmitted_2xx_keeps_the_session_timer() {
        let timers =
            SessionTimers::new(TimerConfig::new(90, 1800, false).unwrap(), false, now_ms());
        let mut d = Dialogs::with_timers(Box::new(NoSink), timers);
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        // The UAC supports timer; the PBX's 2xx will say nothing of it, so
        // the edge adds Session-Expires with refresher=uac to the 2xx.
        let mut inv = request("INVITE", "", 1);
        inv.push_header("Supported", "timer");
        // The edge inserts Session-Expires into the INVITE.
        let _ = d.timer_request(&mut inv, None);
        assert_eq!(inv.header("Session-Expires"), Some("1800"));
        d.on_request(&inv, ua);
        let ok = inv.response(200, "OK", Some("b1")).unwrap();
        for _ in 0..3 {
            let mut copy = ok.clone();
            d.timer_response(&mut copy, now_ms());
            d.on_response(&copy);
            let s = d.session("d1@example.com", now_ms()).unwrap();
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
        let mut d = Dialogs::new(Box::new(NoSink));
        let ua = Flow::Udp("198.18.0.2:5060".parse().unwrap());
        let inv = confirmed(&mut d);
        let mut ok2 = with_contact(
            inv.response(200, "OK", Some("b2")).unwrap(),
            "sip:carol@198.18.0.1:5080",
        );
        d.timer_response(&mut ok2, now_ms());
        d.on_response(&ok2);
        // The caller keeps b2 and ends b1.
        let bye1 = request("BYE", ";tag=b1", 2);
        d.on_request(&bye1, ua);
        d.on_response(&bye1.response(200, "OK", None).unwrap());
        let dl = d.by_call.get("d1@example.com").unwrap();
        assert_eq!(
            dl.callee_to.as_deref().and_then(tag_of).as_deref(),
            Some("b2")
        );
        assert_eq!(
            dl.callee_contact.as_deref(),
            Some("sip:carol@198.18.0.1:5080")
        );
    }
}
