//! The per-dialog entries of the session timers: a dialog's session
//! and its outstanding refresh request share one entry (a million
//! confirmed calls make the bytes per entry count), and where entries and
//! their wheel nodes are kept ([`SessionStore`]): in a map and a wheel of
//! their own ([`OwnStore`]), or in the dialog table's slots.

use std::collections::HashMap;

use crate::{
    sip::{
        headers::{header_parts, name_matches},
        CSeq, Refresher, SipMessage,
    },
    util::timer_wheel::{IdHashBuilder, TimerWheel},
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
pub struct Kept {
    /// The request's CSeq number.
    pub seq: u32,
    pub session_expires: u32,
    pub uac_supports_timer: bool,
}

/// One dialog's entry, packed into 16 bytes: the session (interval,
/// refresher) and the offer (CSeq number, Session-Expires, `timer`
/// support), with a flag word saying which are there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Track {
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
    pub const EMPTY: Track = Track {
        interval: 0,
        offer_seq: 0,
        offer_se: 0,
        flags: 0,
    };

    pub fn session(&self) -> Option<Session> {
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

    pub fn set_session(&mut self, s: Option<Session>) {
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

    pub fn offer(&self) -> Option<Kept> {
        (self.flags & OFFER != 0).then_some(Kept {
            seq: self.offer_seq,
            session_expires: self.offer_se,
            uac_supports_timer: self.flags & UAC_TIMER != 0,
        })
    }

    pub fn set_offer(&mut self, k: Option<Kept>) {
        self.flags &= !(OFFER | UAC_TIMER);
        (self.offer_seq, self.offer_se) = (0, 0);
        if let Some(k) = k {
            self.flags |= OFFER | if k.uac_supports_timer { UAC_TIMER } else { 0 };
            (self.offer_seq, self.offer_se) = (k.seq, k.session_expires);
        }
    }

    pub fn has(&self) -> (bool, bool) {
        (self.flags & SESSION != 0, self.flags & OFFER != 0)
    }
}

/// A session that expired: no refresh arrived before its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expired {
    pub dialog: u64,
    pub interval: u32,
    /// The configuration asks to send BYE to both sides (`--reap-expired`).
    /// RFC 4028 8.3 forbids a proxy to; off by default.
    pub reap: bool,
}

/// A session as persisted: absolute expiry, so it resumes after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub dialog: u64,
    pub session: Session,
    /// Absolute expiry in ms; `None` when no timer is in effect.
    pub expires_at_ms: Option<u64>,
}

/// Where the session timers keep each dialog's [`Track`] and its place
/// on a timing wheel (absolute ms). A track left empty is dropped.
pub trait SessionStore {
    fn track(&self, dialog: u64) -> Track;
    fn set_track(&mut self, dialog: u64, t: Track);
    /// Puts the dialog's timer at `at_ms`, moving it if it runs.
    fn arm(&mut self, dialog: u64, at_ms: u64);
    fn disarm(&mut self, dialog: u64);
    fn armed_at(&self, dialog: u64) -> Option<u64>;
    /// The dialogs due at `now_ms`, taken off the wheel, into `due`.
    fn expire(&mut self, now_ms: u64, due: &mut Vec<u64>);
    fn next_deadline(&self) -> Option<u64>;
    /// Tracks holding a session, and holding an offer.
    fn counts(&self) -> (usize, usize);
    /// Every session, with its dialog.
    fn sessions(&self) -> Vec<(u64, Session)>;
}

/// Tracks by dialog in a map, timers on a wheel of their own (for session
/// timers used without the dialog table).
#[derive(Debug)]
pub struct OwnStore {
    map: HashMap<u64, Track, IdHashBuilder>,
    wheel: TimerWheel,
    counts: Counts,
}

/// Tracks with a session, and with an offer, kept as tracks change.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    sessions: usize,
    offers: usize,
}

impl Counts {
    /// A track changed from `before` to `after`.
    pub fn change(&mut self, before: &Track, after: &Track) {
        let (b, a) = (before.has(), after.has());
        self.sessions = self.sessions + usize::from(a.0) - usize::from(b.0);
        self.offers = self.offers + usize::from(a.1) - usize::from(b.1);
    }

    pub fn get(&self) -> (usize, usize) {
        (self.sessions, self.offers)
    }
}

impl OwnStore {
    pub fn new(now_ms: u64) -> OwnStore {
        OwnStore {
            map: HashMap::with_hasher(IdHashBuilder::default()),
            wheel: TimerWheel::new(1, now_ms),
            counts: Counts::default(),
        }
    }

    /// The wheel's clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.wheel.now_ms()
    }
}

impl SessionStore for OwnStore {
    fn track(&self, dialog: u64) -> Track {
        self.map.get(&dialog).copied().unwrap_or(Track::EMPTY)
    }

    fn set_track(&mut self, dialog: u64, t: Track) {
        let before = if t.has() == (false, false) {
            self.map.remove(&dialog)
        } else {
            self.map.insert(dialog, t)
        };
        self.counts.change(&before.unwrap_or(Track::EMPTY), &t);
    }

    fn arm(&mut self, dialog: u64, at_ms: u64) {
        self.wheel.set(dialog, at_ms);
    }

    fn disarm(&mut self, dialog: u64) {
        self.wheel.cancel(dialog);
    }

    fn armed_at(&self, dialog: u64) -> Option<u64> {
        self.wheel.expires_at(dialog)
    }

    fn expire(&mut self, now_ms: u64, due: &mut Vec<u64>) {
        due.extend(self.wheel.expire(now_ms));
    }

    fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    fn counts(&self) -> (usize, usize) {
        self.counts.get()
    }

    fn sessions(&self) -> Vec<(u64, Session)> {
        self.map
            .iter()
            .filter_map(|(&d, t)| t.session().map(|s| (d, s)))
            .collect()
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
        let mut t = OwnStore::new(0);
        let put = |t: &mut OwnStore, d: u64, f: &dyn Fn(&mut Track)| {
            let mut x = t.track(d);
            f(&mut x);
            t.set_track(d, x);
        };
        let k = Kept {
            seq: 7,
            session_expires: u32::MAX,
            uac_supports_timer: true,
        };
        put(&mut t, 1, &|x| x.set_offer(Some(k)));
        assert_eq!(
            (t.track(1).offer(), t.track(1).session(), t.counts()),
            (Some(k), None, (0, 1))
        );
        for refresher in [None, Some(Refresher::Uac), Some(Refresher::Uas)] {
            let s = Session {
                interval: u32::MAX,
                refresher,
            };
            put(&mut t, 1, &|x| x.set_session(Some(s)));
            assert_eq!(
                (t.track(1).session(), t.track(1).offer()),
                (Some(s), Some(k))
            );
        }
        put(&mut t, 1, &|x| x.set_offer(None));
        assert_eq!((t.track(1).offer(), t.counts()), (None, (1, 0)));
        put(&mut t, 1, &|x| x.set_session(None));
        assert_eq!(
            (t.track(1).session(), t.counts(), t.map.len()),
            (None, (0, 0), 0)
        );
    }
}
