//! Dialog state kept by the edge (INVITE dialogs, keyed by Call-ID) and
//! mirrored into the DIALOGS map that the XDP program reads and bumps.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use sip_ka_common::maps::{DialogValue, DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING};

use crate::sip::{Method, SipMessage};

/// Where live dialogs are mirrored.
pub trait DialogSink: Send {
    /// Creates or updates the entry for `hash` with `state` (a
    /// `DIALOG_*`), keeping the keep-alive count the XDP program keeps.
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64);
    fn remove(&mut self, hash: u64);
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
}

struct Dialog {
    phase: Phase,
    hash: u64,
    /// The UA's transport address (where requests from the PBX go).
    ua: SocketAddr,
    created_unix: u64,
    since: Instant,
}

/// How long a dialog may stay unanswered or early, and how long a BYE
/// may wait for its response, before the entry is dropped.
pub const EARLY_LIMIT: Duration = Duration::from_secs(300);
pub const BYE_LIMIT: Duration = Duration::from_secs(32);

/// The dialog table.
pub struct Dialogs {
    by_call: HashMap<String, Dialog>,
    sink: Box<dyn DialogSink>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Dialogs {
    pub fn new(sink: Box<dyn DialogSink>) -> Dialogs {
        Dialogs {
            by_call: HashMap::new(),
            sink,
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

    /// The UA's address for this Call-ID.
    pub fn ua_addr(&self, call_id: &str) -> Option<SocketAddr> {
        self.by_call.get(call_id).map(|d| d.ua)
    }

    fn set(&mut self, call_id: &str, phase: Phase) {
        if let Some(d) = self.by_call.get_mut(call_id) {
            if d.phase == phase {
                return;
            }
            d.phase = phase;
            d.since = Instant::now();
            if let Some(state) = phase.map_state() {
                self.sink.upsert(d.hash, state, d.created_unix);
            }
        }
    }

    fn end(&mut self, call_id: &str) {
        if let Some(d) = self.by_call.remove(call_id) {
            if d.phase != Phase::Pending {
                self.sink.remove(d.hash);
            }
        }
    }

    /// A request being forwarded; `ua` is the UA's address (the source
    /// of a request from a UA, the destination of one from the PBX).
    pub fn on_request(&mut self, msg: &SipMessage, ua: SocketAddr) {
        let (Some(call_id), Some(hash)) = (msg.call_id(), msg.call_id_hash()) else {
            return;
        };
        match msg.method() {
            Some(Method::Invite)
                if msg.to_tag().is_none() && !self.by_call.contains_key(call_id) =>
            {
                self.by_call.insert(
                    call_id.to_string(),
                    Dialog {
                        phase: Phase::Pending,
                        hash,
                        ua,
                        created_unix: now_unix(),
                        since: Instant::now(),
                    },
                );
            }
            Some(Method::Bye) => self.set(call_id, Phase::Terminating),
            _ => {}
        }
    }

    /// A response being forwarded.
    pub fn on_response(&mut self, msg: &SipMessage) {
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
            Method::Bye if code >= 200 => self.end(call_id),
            _ => {}
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
        let ua = "198.18.0.2:5060".parse().unwrap();
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
        assert_eq!(d.ua_addr("d1@example.com"), Some(ua));
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
        let ua = "198.18.0.2:5060".parse().unwrap();
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
        let ua = "198.18.0.2:5060".parse().unwrap();
        let inv = request("INVITE", "", 1);
        d.on_request(&inv, ua);
        d.on_response(&inv.response(200, "OK", Some("b1")).unwrap());
        let re = request("INVITE", ";tag=b1", 2);
        d.on_request(&re, ua);
        d.on_response(&re.response(491, "Request Pending", None).unwrap());
        assert_eq!(d.phase("d1@example.com"), Some(Phase::Confirmed));
        assert_eq!(d.sweep(Instant::now() + EARLY_LIMIT * 2), 0);
    }
}
