//! Retransmissions on the UDP leg of a converted transport.
//!
//! A UA on TCP or TLS never retransmits its requests (RFC 3261 17.1.1.2:
//! timers A and E run only "if an unreliable transport is being used"),
//! and the PBX is reached over UDP. A stateless edge would let one lost
//! datagram fail the transaction: a call set up after Timer B, a BYE that
//! never reaches the PBX (a zombie call), a REGISTER refresh lost. So for
//! those requests only, the edge keeps the bytes it sent and retransmits
//! them with the client transaction's timers until a response passes back
//! through it: every T1 doubling for INVITE (timer A) until any response;
//! doubling up to T2 for other requests (timer E) until a final response,
//! every T2 once a provisional came; given up after 64*T1 (timers B/F).
//! The UA's own transaction still decides the outcome; the edge only
//! makes the UDP leg as reliable as the UA thought its request was.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Mutex,
};

/// RFC 3261 timer values, in milliseconds.
pub const T1_MS: u64 = 500;
pub const T2_MS: u64 = 4_000;
/// Timers B and F.
pub const GIVE_UP_MS: u64 = 64 * T1_MS;
/// Most transactions tracked at once; past this a request is sent once,
/// as a stateless proxy would.
pub const MAX_PENDING: usize = 65_536;
/// Most bytes kept for retransmission at once (a PBX that stops answering
/// must not make the edge hold 65,536 large messages).
pub const MAX_BYTES: usize = 64 << 20;

struct Entry {
    bytes: Vec<u8>,
    dest: SocketAddr,
    local: SocketAddr,
    invite: bool,
    interval_ms: u64,
    give_up_at: u64,
    due: (u64, u64),
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<String, Entry>,
    /// (due time in ms, sequence) -> key, the next due first.
    due: BTreeMap<(u64, u64), String>,
    seq: u64,
    /// Bytes of all `Entry::bytes`.
    bytes: usize,
}

/// The requests being retransmitted, keyed by our branch and the method
/// (a CANCEL has its INVITE's branch).
#[derive(Default)]
pub struct Retransmits {
    inner: Mutex<Inner>,
}

/// A retransmission to send: bytes, PBX address, listen address.
pub type Resend = (Vec<u8>, SocketAddr, SocketAddr);

fn key(branch: &str, method: &str) -> String {
    format!("{branch} {method}")
}

impl Retransmits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::util::lock::lock(&self.inner)
    }

    /// Tracks a request just sent to `dest` from `local`; false when the
    /// table is full (it is then sent once only).
    pub fn add(
        &self,
        branch: &str,
        method: &str,
        bytes: Vec<u8>,
        dest: SocketAddr,
        local: SocketAddr,
        now_ms: u64,
    ) -> bool {
        let mut g = self.lock();
        let k = key(branch, method);
        if let Some(old) = g.by_key.remove(&k) {
            // The UA sent it again (a new connection after a failure):
            // start over with the new bytes.
            g.due.remove(&old.due);
            g.bytes -= old.bytes.len();
        }
        if g.by_key.len() >= MAX_PENDING || g.bytes + bytes.len() > MAX_BYTES {
            return false;
        }
        g.bytes += bytes.len();
        g.seq += 1;
        let due = (now_ms + T1_MS, g.seq);
        g.due.insert(due, k.clone());
        g.by_key.insert(
            k,
            Entry {
                bytes,
                dest,
                local,
                invite: method == "INVITE",
                interval_ms: T1_MS,
                give_up_at: now_ms + GIVE_UP_MS,
                due,
            },
        );
        true
    }

    /// A response with our `branch` for `method` came back: an INVITE
    /// stops at any response, another request at a final one, and goes to
    /// every T2 after a provisional one.
    pub fn on_response(&self, branch: &str, method: &str, code: u16, now_ms: u64) {
        let mut g = self.lock();
        // Every response the edge relays comes here; most find nothing.
        if g.by_key.is_empty() {
            return;
        }
        let k = key(branch, method);
        let Some(e) = g.by_key.get_mut(&k) else {
            return;
        };
        if e.invite || code >= 200 {
            let due = e.due;
            if let Some(e) = g.by_key.remove(&k) {
                g.bytes -= e.bytes.len();
            }
            g.due.remove(&due);
            return;
        }
        e.interval_ms = T2_MS;
        let old = e.due;
        g.seq += 1;
        let new = (now_ms + T2_MS, g.seq);
        if let Some(e) = g.by_key.get_mut(&k) {
            e.due = new;
        }
        g.due.remove(&old);
        g.due.insert(new, k);
    }

    /// The retransmissions due at `now_ms` (each rescheduled), dropping
    /// those past 64*T1.
    pub fn due(&self, now_ms: u64) -> Vec<Resend> {
        let mut g = self.lock();
        let mut out = Vec::new();
        while let Some((&at, _)) = g.due.first_key_value() {
            if at.0 > now_ms {
                break;
            }
            let Some((_, k)) = g.due.pop_first() else {
                break;
            };
            let Some(mut e) = g.by_key.remove(&k) else {
                continue;
            };
            if now_ms >= e.give_up_at {
                g.bytes -= e.bytes.len();
                continue;
            }
            out.push((e.bytes.clone(), e.dest, e.local));
            e.interval_ms = if e.invite {
                e.interval_ms * 2
            } else {
                (e.interval_ms * 2).min(T2_MS)
            };
            g.seq += 1;
            // Never later than the give-up time, so the entry goes then.
            e.due = ((now_ms + e.interval_ms).min(e.give_up_at), g.seq);
            g.due.insert(e.due, k.clone());
            g.by_key.insert(k, e);
        }
        out
    }

    /// When [`Retransmits::due`] has something next.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.lock().due.first_key_value().map(|(k, _)| k.0)
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "198.18.0.1:5080".parse().unwrap(),
            "198.18.0.1:5060".parse().unwrap(),
        )
    }

    #[test]
    fn invite_doubles_from_t1_until_any_response() {
        let r = Retransmits::default();
        let (pbx, local) = addrs();
        assert!(r.add("b1", "INVITE", b"INVITE".to_vec(), pbx, local, 0));
        assert!(r.due(499).is_empty());
        let mut sent_at = Vec::new();
        let mut now = 0;
        while now <= 4_000 {
            if !r.due(now).is_empty() {
                sent_at.push(now);
            }
            now += 1;
        }
        assert_eq!(sent_at, vec![500, 1_500, 3_500]);
        r.on_response("b1", "INVITE", 100, now);
        assert!(r.is_empty());
        assert!(r.due(100_000).is_empty());
    }

    #[test]
    fn non_invite_caps_at_t2_and_waits_for_a_final_response() {
        let r = Retransmits::default();
        let (pbx, local) = addrs();
        r.add("b2", "BYE", b"BYE".to_vec(), pbx, local, 0);
        let mut sent_at = Vec::new();
        for now in 0..=16_000 {
            if !r.due(now).is_empty() {
                sent_at.push(now);
            }
        }
        assert_eq!(sent_at, vec![500, 1_500, 3_500, 7_500, 11_500, 15_500]);
        // A provisional: every T2 from now; a final one ends it.
        r.on_response("b2", "BYE", 100, 16_000);
        assert_eq!(r.next_due_ms(), Some(20_000));
        r.on_response("b2", "BYE", 200, 16_500);
        assert!(r.is_empty());
    }

    #[test]
    fn gives_up_after_64_t1_and_keeps_cancel_apart_from_its_invite() {
        let r = Retransmits::default();
        let (pbx, local) = addrs();
        r.add("b3", "INVITE", b"I".to_vec(), pbx, local, 0);
        r.add("b3", "CANCEL", b"C".to_vec(), pbx, local, 0);
        r.on_response("b3", "CANCEL", 200, 10);
        assert_eq!(r.len(), 1);
        let mut last = 0;
        for now in 0..=40_000 {
            if !r.due(now).is_empty() {
                last = now;
            }
        }
        assert!(last < GIVE_UP_MS, "{last}");
        assert!(r.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let r = Retransmits::default();
        let (pbx, local) = addrs();
        for i in 0..MAX_PENDING {
            assert!(r.add(&i.to_string(), "OPTIONS", Vec::new(), pbx, local, 0));
        }
        assert!(!r.add("one more", "OPTIONS", Vec::new(), pbx, local, 0));
        assert_eq!(r.len(), MAX_PENDING);
    }
}
