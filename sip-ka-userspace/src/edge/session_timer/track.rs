//! The per-dialog entries of the session timers: a dialog's session
//! and its outstanding refresh request share one map entry (a million
//! confirmed calls make the bytes per entry count).

use std::collections::HashMap;

use crate::{
    sip::{
        headers::{header_parts, name_matches},
        CSeq, Refresher, SipMessage,
    },
    util::timer_wheel::IdHashBuilder,
};

/// A confirmed dialog's session, as tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Session interval in seconds; 0 when no session timer is in effect.
    pub interval: u32,
    pub refresher: Option<Refresher>,
}

/// What a 2xx needs of the refresh request it answers (the rest of the
/// offer is for the caller of `on_request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Kept {
    /// The request's CSeq number.
    pub(super) seq: u32,
    pub(super) session_expires: u32,
    pub(super) uac_supports_timer: bool,
}

/// One dialog's entry, packed into 16 bytes: the session (interval,
/// refresher) and the offer (CSeq number, Session-Expires, `timer`
/// support), with a flag word saying which are there.
#[derive(Clone, Copy, Debug)]
struct Track {
    interval: u32,
    offer_seq: u32,
    offer_se: u32,
    flags: u8,
}

const SESSION: u8 = 1;
const REFRESHER_UAC: u8 = 2;
const REFRESHER_UAS: u8 = 4;
const OFFER: u8 = 8;
const UAC_TIMER: u8 = 16;

impl Track {
    const EMPTY: Track = Track {
        interval: 0,
        offer_seq: 0,
        offer_se: 0,
        flags: 0,
    };

    fn session(&self) -> Option<Session> {
        (self.flags & SESSION != 0).then_some(Session {
            interval: self.interval,
            refresher: if self.flags & REFRESHER_UAC != 0 {
                Some(Refresher::Uac)
            } else if self.flags & REFRESHER_UAS != 0 {
                Some(Refresher::Uas)
            } else {
                None
            },
        })
    }

    fn set_session(&mut self, s: Option<Session>) {
        self.flags &= !(SESSION | REFRESHER_UAC | REFRESHER_UAS);
        self.interval = 0;
        if let Some(s) = s {
            self.interval = s.interval;
            self.flags |= SESSION
                | match s.refresher {
                    Some(Refresher::Uac) => REFRESHER_UAC,
                    Some(Refresher::Uas) => REFRESHER_UAS,
                    None => 0,
                };
        }
    }

    fn offer(&self) -> Option<Kept> {
        (self.flags & OFFER != 0).then_some(Kept {
            seq: self.offer_seq,
            session_expires: self.offer_se,
            uac_supports_timer: self.flags & UAC_TIMER != 0,
        })
    }

    fn set_offer(&mut self, k: Option<Kept>) {
        self.flags &= !(OFFER | UAC_TIMER);
        (self.offer_seq, self.offer_se) = (0, 0);
        if let Some(k) = k {
            self.flags |= OFFER | if k.uac_supports_timer { UAC_TIMER } else { 0 };
            (self.offer_seq, self.offer_se) = (k.seq, k.session_expires);
        }
    }

    fn has(&self) -> (bool, bool) {
        (self.flags & SESSION != 0, self.flags & OFFER != 0)
    }
}

/// Sessions and offers by dialog; an entry with neither is removed.
#[derive(Debug, Default)]
pub(super) struct Tracks {
    map: HashMap<u64, Track, IdHashBuilder>,
    /// Entries with a session, and with an offer.
    sessions: usize,
    offers: usize,
}

impl Tracks {
    pub(super) fn sessions(&self) -> usize {
        self.sessions
    }

    pub(super) fn offers(&self) -> usize {
        self.offers
    }

    pub(super) fn session(&self, dialog: u64) -> Option<Session> {
        self.map.get(&dialog).and_then(Track::session)
    }

    pub(super) fn offer(&self, dialog: u64) -> Option<Kept> {
        self.map.get(&dialog).and_then(Track::offer)
    }

    /// Every session, with its dialog.
    pub(super) fn sessions_iter(&self) -> impl Iterator<Item = (u64, Session)> + '_ {
        self.map
            .iter()
            .filter_map(|(&d, t)| t.session().map(|s| (d, s)))
    }

    /// Sets (or with `None` clears) the session of `dialog`.
    pub(super) fn put_session(&mut self, dialog: u64, session: Option<Session>) {
        self.update(dialog, |t| t.set_session(session));
    }

    pub(super) fn put_offer(&mut self, dialog: u64, offer: Option<Kept>) {
        if offer.is_none() && !self.map.contains_key(&dialog) {
            return;
        }
        self.update(dialog, |t| t.set_offer(offer));
    }

    /// Drops the session and offer of `dialog`; returns the session.
    pub(super) fn end(&mut self, dialog: u64) -> Option<Session> {
        let t = self.map.remove(&dialog)?;
        let (session, offer) = t.has();
        self.sessions -= usize::from(session);
        self.offers -= usize::from(offer);
        t.session()
    }

    /// Applies `f` to the entry of `dialog` (made if missing, removed if
    /// left empty), keeping the counts.
    fn update(&mut self, dialog: u64, f: impl FnOnce(&mut Track)) {
        let t = self.map.entry(dialog).or_insert(Track::EMPTY);
        let before = t.has();
        f(t);
        let after = t.has();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_16_bytes_and_keeps_what_it_is_given() {
        assert_eq!(std::mem::size_of::<Track>(), 16);
        let mut t = Tracks::default();
        let k = Kept {
            seq: 7,
            session_expires: u32::MAX,
            uac_supports_timer: true,
        };
        t.put_offer(1, Some(k));
        assert_eq!((t.offer(1), t.session(1), t.offers()), (Some(k), None, 1));
        for refresher in [None, Some(Refresher::Uac), Some(Refresher::Uas)] {
            let s = Session {
                interval: u32::MAX,
                refresher,
            };
            t.put_session(1, Some(s));
            assert_eq!((t.session(1), t.offer(1)), (Some(s), Some(k)));
        }
        t.put_offer(1, None);
        assert_eq!((t.offer(1), t.offers(), t.sessions()), (None, 0, 1));
        t.put_session(1, None);
        assert_eq!((t.session(1), t.sessions(), t.map.len()), (None, 0, 0));
        let k = Kept {
            uac_supports_timer: false,
            ..k
        };
        t.put_offer(2, Some(k));
        assert_eq!(t.offer(2), Some(k));
        assert_eq!(t.end(2), None);
        assert_eq!(t.offers(), 0);
    }
}
