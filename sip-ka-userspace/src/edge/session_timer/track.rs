//! The per-dialog entries of the session timers: a dialog's session
//! and its outstanding refresh request share one map entry (a million
//! confirmed calls make the bytes per entry count).

use std::collections::HashMap;

use crate::{
    sip::{
        headers::{header_parts, name_matches},
        CSeq, SipMessage,
    },
    util::timer_wheel::IdHashBuilder,
};

/// What a 2xx needs of the refresh request it answers (the rest of the
/// offer is for the caller of `on_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kept {
    /// The request's CSeq number.
    pub(super) seq: u32,
    pub(super) session_expires: u32,
    pub(super) uac_supports_timer: bool,
}

#[derive(Clone, Copy, Debug)]
struct Track<S> {
    session: Option<S>,
    offer: Option<Kept>,
}

/// Sessions (`S`) and offers by dialog; an entry with neither is removed.
#[derive(Debug)]
pub(super) struct Tracks<S> {
    map: HashMap<u64, Track<S>, IdHashBuilder>,
    /// Entries with a session, and with an offer.
    sessions: usize,
    offers: usize,
}

impl<S: Copy> Default for Tracks<S> {
    fn default() -> Self {
        Tracks {
            map: HashMap::default(),
            sessions: 0,
            offers: 0,
        }
    }
}

impl<S: Copy> Tracks<S> {
    pub(super) fn sessions(&self) -> usize {
        self.sessions
    }

    pub(super) fn offers(&self) -> usize {
        self.offers
    }

    pub(super) fn session(&self, dialog: u64) -> Option<S> {
        self.map.get(&dialog).and_then(|t| t.session)
    }

    pub(super) fn offer(&self, dialog: u64) -> Option<Kept> {
        self.map.get(&dialog).and_then(|t| t.offer)
    }

    /// Every session, with its dialog.
    pub(super) fn sessions_iter(&self) -> impl Iterator<Item = (u64, S)> + '_ {
        self.map
            .iter()
            .filter_map(|(&d, t)| t.session.map(|s| (d, s)))
    }

    /// Sets (or with `None` clears) the session of `dialog`.
    pub(super) fn put_session(&mut self, dialog: u64, session: Option<S>) {
        self.update(dialog, |t| t.session = session);
    }

    pub(super) fn put_offer(&mut self, dialog: u64, offer: Option<Kept>) {
        if offer.is_none() && !self.map.contains_key(&dialog) {
            return;
        }
        self.update(dialog, |t| t.offer = offer);
    }

    /// Drops the session and offer of `dialog`; returns the session.
    pub(super) fn end(&mut self, dialog: u64) -> Option<S> {
        let t = self.map.remove(&dialog)?;
        self.sessions -= usize::from(t.session.is_some());
        self.offers -= usize::from(t.offer.is_some());
        t.session
    }

    /// Applies `f` to the entry of `dialog` (made if missing, removed if
    /// left empty), keeping the counts.
    fn update(&mut self, dialog: u64, f: impl FnOnce(&mut Track<S>)) {
        let t = self.map.entry(dialog).or_insert(Track {
            session: None,
            offer: None,
        });
        let before = (t.session.is_some(), t.offer.is_some());
        f(t);
        let after = (t.session.is_some(), t.offer.is_some());
        if after == (false, false) {
            self.map.remove(&dialog);
        }
        self.sessions = self.sessions + usize::from(after.0) - usize::from(before.0);
        self.offers = self.offers + usize::from(after.1) - usize::from(before.1);
    }
}

/// [`SipMessage::cseq`] without looking the name up in the table of names
/// and copying it (read on every refresh and its 2xx).
pub(super) fn cseq(msg: &SipMessage) -> Option<CSeq> {
    msg.headers()
        .iter()
        .map(header_parts)
        .find(|(n, _)| name_matches(n, "CSeq"))
        .and_then(|(_, v)| CSeq::parse(v).ok())
}
