//! The dialog table's journal glue: every change recorded for a restart,
//! and the table put back from what a previous run recorded.

use super::{
    model::{session_flags, Dialog, Phase, Share},
    packed::Cold,
    table::Dialogs,
};
use crate::{
    edge::{
        persist::{self, DialogRecord, FlowRecord, Journal, Record},
        session_timer::{self, Session},
        store::Write,
    },
    sip::Refresher,
};

impl Dialogs {
    /// Records every change from now on in `journal` (after
    /// [`Dialogs::restore`] has taken what it held).
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The stored form of a dialog.
    pub(super) fn record(&self, hash: u64, d: &Dialog) -> DialogRecord {
        let c = d.cold.unpack();
        DialogRecord {
            call_id: c.call_id,
            phase: d.phase.name().to_string(),
            ua: FlowRecord::of(&c.ua),
            created_unix: c.created_unix,
            since_ms: c.since_ms,
            caller_is_ua: d.caller_is_ua,
            caller_from: c.caller_from,
            callee_to: c.callee_to,
            caller_contact: c.caller_contact,
            callee_contact: c.callee_contact,
            cseq: d.cseq,
            forks: c.forks,
            session: self.timers.session(hash).map(|s| persist::SessionRecord {
                interval: s.interval,
                refresher: s.refresher.map(|r| r.to_string()),
                expires_at_ms: self.timers.expires_at_ms(hash),
            }),
        }
    }

    /// Journals the dialog's current state (or its removal), hands it to
    /// the shared store, and compacts the journal when it has grown
    /// enough.
    pub(super) fn save(&mut self, call_id: &str) {
        self.save_as(call_id, Share::Write);
    }

    /// [`Dialogs::save`], saying what the shared store gets.
    pub(super) fn save_as(&mut self, call_id: &str, share: Share) {
        let share = match &self.store {
            Some(store) if share != Share::Skip => Some((store.clone(), share == Share::Take)),
            _ => None,
        };
        if self.journal.is_none() && share.is_none() {
            return;
        }
        let hash = sip_ka_common::callid_hash(call_id.as_bytes());
        let rec = self.get(call_id).map(|d| self.record(hash, d));
        if let Some((store, take)) = share {
            // An unanswered INVITE is not shared: a flood of them would
            // cost a write each, and its transaction is the UA's to retry.
            if rec
                .as_ref()
                .is_none_or(|r| r.phase != Phase::Pending.name())
            {
                store.send(Write::Dialog {
                    call_id: call_id.to_string(),
                    rec: rec.clone().map(Box::new),
                    take,
                });
            }
        }
        if self.journal.is_none() {
            return;
        }
        let rec = match rec {
            Some(r) => Record::Upsert(Box::new(r)),
            None => Record::Remove {
                call_id: call_id.to_string(),
            },
        };
        let live = self.timers.store().len();
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

    /// Whether changes are recorded anywhere (journal or shared store).
    pub(super) fn persisting(&self) -> bool {
        self.journal.is_some() || self.store.is_some()
    }

    /// Rewrites the snapshot from the table and empties the journal (at
    /// start, before any traffic: it holds the table while it writes).
    pub fn compact(&mut self) {
        let Some(mut j) = self.journal.take() else {
            return;
        };
        let all: Vec<DialogRecord> = self
            .timers
            .store()
            .iter()
            .map(|(h, d)| self.record(h, d))
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
        for r in records {
            if !self.insert_record(r, now_ms) {
                refused += 1;
            }
        }
        let live: std::collections::HashSet<u64> = self
            .timers
            .store()
            .iter()
            .filter(|(_, d)| d.phase != Phase::Pending)
            .map(|(h, _)| h)
            .chain(self.replicas.keys().copied())
            .collect();
        let stale = self.sink.retain(&|h| live.contains(&h));
        (self.timers.store().len(), refused, stale)
    }

    /// Puts one stored dialog into the table: its mirror entry, its
    /// session timer (absolute expiry: one already past fires at the next
    /// [`Dialogs::expire`]) and, confirmed, its idle clock. False (logged)
    /// for a record naming no known phase.
    pub(super) fn insert_record(&mut self, r: DialogRecord, now_ms: u64) -> bool {
        let Some(phase) = Phase::from_name(&r.phase) else {
            // The phase comes from a file or the store: control characters
            // escaped so the line stays one line.
            log::warn!(
                "state: dialog {}: not restored, its recorded phase '{}' is none of \
                 pending, early, confirmed, terminating",
                r.call_id.escape_debug(),
                r.phase.escape_debug()
            );
            return false;
        };
        let hash = sip_ka_common::callid_hash(r.call_id.as_bytes());
        let session = session_record(hash, &r);
        if let Some(state) = phase.map_state() {
            self.sink.upsert(hash, state, r.created_unix);
        }
        let cold = Cold {
            created_unix: r.created_unix,
            since_ms: r.since_ms.min(now_ms),
            ua: r.ua.restore(),
            call_id: r.call_id,
            caller_from: r.caller_from,
            callee_to: r.callee_to,
            caller_contact: r.caller_contact,
            callee_contact: r.callee_contact,
            forks: r.forks,
        };
        // The idle clock restarts: a restart never ends a call earlier
        // than its idle limit after the restart.
        let d = Dialog::new(phase, r.cseq, r.caller_is_ua, now_ms, &cold);
        self.timers.store_mut().insert(hash, d);
        if let Some(s) = session {
            self.timers.restore([s]);
            let expires = s.expires_at_ms.map_or(0, |at| at / 1_000);
            self.sink
                .set_session(hash, expires, session_flags(&s.session));
        }
        if phase == Phase::Confirmed {
            self.arm_idle(hash, now_ms);
        }
        true
    }
}

/// The session timer a stored dialog carries, if any.
pub(super) fn session_record(hash: u64, r: &DialogRecord) -> Option<session_timer::SessionRecord> {
    let s = r.session.as_ref()?;
    let refresher = match s.refresher.as_deref() {
        Some("uac") => Some(Refresher::Uac),
        Some("uas") => Some(Refresher::Uas),
        _ => None,
    };
    Some(session_timer::SessionRecord {
        dialog: hash,
        session: Session {
            interval: s.interval,
            refresher,
        },
        expires_at_ms: s.expires_at_ms.filter(|_| s.interval > 0),
    })
}
