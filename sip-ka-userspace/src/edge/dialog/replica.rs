//! Dialogs other edges own (shared state, [`crate::edge::store`]): each
//! kept as its owner's latest record and mirrored into the DIALOGS map, so
//! this edge's XDP program counts their keep-alives and this edge takes
//! them over the moment their traffic arrives here. A replica runs no
//! timer: only the owner expires, idles out or reaps a dialog.

use std::{collections::BTreeMap, sync::Arc};

use sip_ka_common::callid_hash;

use super::{
    journal::session_record,
    model::{session_flags, tag_of, Phase, Replica, Share},
    table::Dialogs,
};
use crate::edge::{
    persist::DialogRecord,
    store::{dialog_ttl_ms, Store},
};
use crate::sip::SipMessage;

/// Replicas kept, at most: half the DIALOGS map, so other edges' dialogs
/// never crowd out this edge's own.
pub const MAX_REPLICAS: usize = sip_ka_common::maps::DIALOGS_MAX as usize / 2;

impl Dialogs {
    /// Shares every change from now on through `store`.
    pub fn set_store(&mut self, store: Arc<Store>) {
        self.store = Some(store);
    }

    pub fn replicas_len(&self) -> usize {
        self.replicas.len()
    }

    fn count(
        &self,
        pick: impl Fn(&crate::edge::store::StoreStats) -> &std::sync::atomic::AtomicU64,
    ) {
        if let Some(s) = &self.store {
            Store::bump(pick(&s.stats), 1);
        }
    }

    /// The state `owner` published for a dialog it owns. A dialog this
    /// edge holds itself goes to `owner` only when `owner` took it over
    /// (`take`: its traffic went there, or it claimed it after this
    /// edge's lease lapsed): its timers stop here; a plain write of the
    /// old owner, arriving after this edge took the dialog, changes
    /// nothing. False for a record that names no known phase, whose
    /// Call-ID hash a different dialog of this edge holds (the local one
    /// wins), or past [`MAX_REPLICAS`].
    pub fn replicate(&mut self, owner: &str, rec: DialogRecord, take: bool, now_ms: u64) -> bool {
        let Some(phase) = Phase::from_name(&rec.phase) else {
            return false;
        };
        let hash = callid_hash(rec.call_id.as_bytes());
        if self.get(&rec.call_id).is_some() {
            if !take {
                return false;
            }
            self.release(hash, &rec.call_id);
        } else if self.timers.store().contains_key(&hash)
            || (self.replicas.len() >= MAX_REPLICAS && !self.replicas.contains_key(&hash))
        {
            return false;
        }
        if let Some(state) = phase.map_state() {
            self.sink.upsert(hash, state, rec.created_unix);
        }
        if let Some(s) = session_record(hash, &rec) {
            let expires = s.expires_at_ms.map_or(0, |at| at / 1_000);
            self.sink
                .set_session(hash, expires, session_flags(&s.session));
        }
        self.count(|s| &s.replicated);
        let until_ms = now_ms.saturating_add(dialog_ttl_ms(&rec, now_ms));
        self.replicas.insert(
            hash,
            Replica {
                owner: owner.to_string(),
                rec,
                until_ms,
            },
        );
        true
    }

    /// Drops the replicas past their TTL (their key is gone from the
    /// store too: an owner that ended them while this edge was not
    /// listening, or that is gone): their DIALOGS entries go with them.
    pub fn drop_expired_replicas(&mut self, now_ms: u64) -> usize {
        self.keep_replicas(|r| r.until_ms > now_ms)
    }

    /// Drops a dialog of this edge that another edge now owns, without a
    /// trace in the store (the other edge wrote it) and keeping its
    /// DIALOGS entry (the replica uses it).
    fn release(&mut self, hash: u64, call_id: &str) {
        if self.timers.store_mut().remove(&hash).is_none() {
            return;
        }
        self.pending.remove(&hash);
        self.timers.end(hash);
        if let Some(idle) = &mut self.idle {
            idle.wheel.cancel(hash);
        }
        self.save_as(call_id, Share::Skip);
        self.count(|s| &s.released);
    }

    /// A dialog ended at another edge: its replica goes, or, when this
    /// edge still held it as its own, the dialog itself (no BYE: the other
    /// edge saw the end).
    pub fn remote_end(&mut self, call_id: &str) {
        let hash = callid_hash(call_id.as_bytes());
        if self
            .replicas
            .get(&hash)
            .is_some_and(|r| r.rec.call_id == call_id)
        {
            self.replicas.remove(&hash);
            self.sink.remove(hash);
        } else if self.get(call_id).is_some() {
            self.release(hash, call_id);
            self.sink.remove(hash);
        }
    }

    /// A message of a replica's dialog arrived here: the replica becomes
    /// this edge's dialog (timers and all) and the store is told this edge
    /// owns it. Only a message with the dialog's tags moves it (the
    /// caller's, and the callee's once known): a Call-ID alone is no
    /// secret. True when it was a replica.
    pub fn take_over(&mut self, msg: &SipMessage, now_ms: u64) -> bool {
        if self.replicas.is_empty() {
            return false;
        }
        let Some(call_id) = msg.call_id() else {
            return false;
        };
        let hash = callid_hash(call_id.as_bytes());
        if self
            .replicas
            .get(&hash)
            .is_none_or(|r| r.rec.call_id != call_id || !carries_tags(&r.rec, msg))
        {
            return false;
        }
        let Some(r) = self.replicas.remove(&hash) else {
            return false;
        };
        if !self.insert_record(r.rec, now_ms) {
            return false;
        }
        self.save_as(call_id, Share::Take);
        self.count(|s| &s.claimed);
        true
    }

    /// A dialog this edge claimed in the store after its owner's lease
    /// lapsed (`rec` is the store's state): it becomes this edge's, and a
    /// session already due fires at the next [`Dialogs::expire`], here
    /// only.
    pub fn adopt(&mut self, rec: DialogRecord, now_ms: u64) -> bool {
        let hash = callid_hash(rec.call_id.as_bytes());
        if self
            .replicas
            .get(&hash)
            .is_some_and(|r| r.rec.call_id == rec.call_id)
        {
            self.replicas.remove(&hash);
        } else if self.timers.store().contains_key(&hash) {
            return false;
        }
        let call_id = rec.call_id.clone();
        if !self.insert_record(rec, now_ms) {
            return false;
        }
        // Written as this edge's: the claim kept the key's TTL, the
        // write renews it from the dialog's state.
        self.save_as(&call_id, Share::Write);
        self.count(|s| &s.claimed);
        true
    }

    /// The Call-IDs of the replicas, by owner.
    pub fn replicas_by_owner(&self) -> BTreeMap<String, Vec<String>> {
        let mut by = BTreeMap::<String, Vec<String>>::new();
        for r in self.replicas.values() {
            by.entry(r.owner.clone())
                .or_default()
                .push(r.rec.call_id.clone());
        }
        by
    }

    /// Every dialog this edge owns, as stored (pending ones are not
    /// shared).
    pub fn owned_records(&self) -> Vec<DialogRecord> {
        self.timers
            .store()
            .iter()
            .filter(|(_, d)| d.phase != Phase::Pending)
            .map(|(h, d)| self.record(h, d))
            .collect()
    }

    /// Replicas whose Call-ID the store no longer holds (ended while this
    /// edge was not listening): dropped with their DIALOGS entries.
    pub fn retain_replicas(&mut self, keep: &dyn Fn(&str) -> bool) -> usize {
        self.keep_replicas(|r| keep(&r.rec.call_id))
    }

    /// Drops the replicas `keep` refuses, with their DIALOGS entries.
    fn keep_replicas(&mut self, keep: impl Fn(&Replica) -> bool) -> usize {
        let sink = &mut self.sink;
        let before = self.replicas.len();
        self.replicas.retain(|&h, r| {
            let kept = keep(r);
            if !kept {
                sink.remove(h);
            }
            kept
        });
        before - self.replicas.len()
    }
}

/// Whether `msg` carries the dialog's tags, in either direction: the
/// caller's tag on one side, on the other a callee's (any fork's, or the
/// 2xx's To) once one is known.
fn carries_tags(rec: &DialogRecord, msg: &SipMessage) -> bool {
    let Some(caller) = tag_of(&rec.caller_from) else {
        return false;
    };
    let callees: Vec<String> = rec
        .forks
        .iter()
        .map(|f| f.tag.clone())
        .chain(rec.callee_to.as_deref().and_then(tag_of))
        .collect();
    let is_callee = |t: &Option<String>| t.as_ref().is_some_and(|t| callees.contains(t));
    let (from, to) = (msg.from_tag(), msg.to_tag());
    if from.as_deref() == Some(caller.as_str()) {
        callees.is_empty() || is_callee(&to)
    } else {
        to.as_deref() == Some(caller.as_str()) && is_callee(&from)
    }
}
