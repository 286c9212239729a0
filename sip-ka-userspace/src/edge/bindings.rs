//! Which flow each registered Contact was registered from.
//!
//! Many PBXes ignore Path (Asterisk does unless `support_path=yes`): a
//! request for a registered UA then arrives with no Route of ours, only the
//! UA's Contact as Request-URI, often a private address or a TCP/TLS URI
//! the edge cannot open a connection to. So the edge remembers, for every
//! Contact of a REGISTER the registrar accepted (a 2xx, so the registrar
//! authenticated it), the flow the REGISTER came by, until the binding
//! expires; a request from the PBX whose Request-URI is such a Contact
//! goes by that flow. A REGISTER's Contacts wait, keyed by our branch,
//! until its final response: a 2xx makes them bindings (Expires 0 removes
//! them), anything else forgets them.

use std::{collections::HashMap, sync::Mutex};

use super::transport::Flow;
use crate::{
    sip::{Contact, SipMessage, Uri},
    util::capped::Capped,
};

/// Bindings kept, at most (one per registered Contact).
pub const MAX_BINDINGS: usize = 1_000_000;
/// A REGISTER whose response never comes is forgotten after 64*T1.
const PENDING_MS: u64 = 32_000;
/// Expires when the REGISTER says nothing (RFC 3261 10.2.1.1 leaves it to
/// the registrar; 3600 s is the common default).
const DEFAULT_EXPIRES_S: u64 = 3_600;
/// Longest binding kept, whatever a UA asks for (a day).
const MAX_EXPIRES_S: u64 = 86_400;

struct Pending {
    /// Contact keys with their requested expiry (seconds).
    contacts: Vec<(String, u64)>,
    /// `Contact: *` with Expires 0: every binding of this flow goes.
    wildcard: bool,
    flow: Flow,
    at_ms: u64,
}

pub use super::store::BindingChange as Change;

struct Binding {
    /// `None` when two sources registered the same Contact (two sites
    /// with the same private address plan): nobody is reached by it,
    /// rather than the wrong phone.
    flow: Option<Flow>,
    expires_at_ms: u64,
}

struct Inner {
    /// Oldest first, under `--max-pending-registers` and
    /// `--max-pending-register-bytes`: a stranger's REGISTERs with fresh
    /// Contacts push out the oldest, never past the caps.
    pending: Capped<String, Pending>,
    by_contact: HashMap<String, Binding>,
}

/// What a pending REGISTER is charged beyond its strings (map entry,
/// queue slot, struct), and per Contact beyond its key.
const PENDING_OVERHEAD: usize = 192;
const CONTACT_OVERHEAD: usize = 48;

/// The bindings table.
pub struct Bindings {
    inner: Mutex<Inner>,
}

impl Default for Bindings {
    fn default() -> Self {
        let d = super::config::StateLimits::default();
        Bindings::with_limits(d.pending_registers, d.pending_register_bytes)
    }
}

/// How a Contact URI is compared with a Request-URI: user, host and port
/// (5060 when absent), host case-insensitive; parameters ignored.
pub fn contact_key(uri: &Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port().unwrap_or(5060);
    Some(format!("{}@{host}:{port}", uri.user().unwrap_or("")))
}

impl Bindings {
    /// At most `count` REGISTERs waiting for their answer, charged at
    /// most `bytes`.
    pub fn with_limits(count: usize, bytes: usize) -> Bindings {
        Bindings {
            inner: Mutex::new(Inner {
                pending: Capped::new(count, bytes),
                by_contact: HashMap::new(),
            }),
        }
    }

    /// New caps on the REGISTERs waiting (see [`Capped::set_limits`]).
    pub fn set_limits(&self, count: usize, bytes: usize) {
        self.lock().pending.set_limits(count, bytes);
    }

    /// Pending REGISTERs dropped or not kept because of the caps.
    pub fn pending_evicted(&self) -> u64 {
        self.lock().pending.evicted()
    }

    /// Pending REGISTERs held and what they are charged.
    pub fn pending_usage(&self) -> (usize, usize) {
        let g = self.lock();
        (g.pending.len(), g.pending.bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::util::lock::lock(&self.inner)
    }

    /// A REGISTER from a UA by `flow`, sent on with our `branch`.
    pub fn on_register(&self, branch: &str, msg: &SipMessage, flow: Flow, now_ms: u64) {
        let default = msg
            .header("Expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_EXPIRES_S);
        let Ok(contacts) = msg.contacts() else {
            return;
        };
        let mut wildcard = false;
        let mut keys = Vec::new();
        for c in contacts {
            match c {
                Contact::Wildcard => wildcard = default == 0,
                Contact::Addr(a) => {
                    let expires = a
                        .param("expires")
                        .flatten()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(default);
                    if let Some(k) = contact_key(&a.uri) {
                        keys.push((k, expires));
                    }
                }
            }
        }
        if keys.is_empty() && !wildcard {
            // A query for the bindings: nothing to learn.
            return;
        }
        let cost = PENDING_OVERHEAD
            + branch.len()
            + keys
                .iter()
                .map(|(k, _)| k.len() + CONTACT_OVERHEAD)
                .sum::<usize>();
        let mut g = self.lock();
        // Entries are in arrival order: the unanswered ones at the front
        // go first, each in O(1).
        while g
            .pending
            .pop_oldest_if(|p| now_ms >= p.at_ms + PENDING_MS)
            .is_some()
        {}
        g.pending.insert(
            branch.to_string(),
            Pending {
                contacts: keys,
                wildcard,
                flow,
                at_ms: now_ms,
            },
            cost,
        );
    }

    /// The response to a REGISTER sent with our `branch`; returns the
    /// bindings it changed (for the shared store): each Contact with its
    /// flow and expiry, or `None` when it went.
    pub fn on_response(&self, branch: &str, code: u16, now_ms: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        if code < 200 {
            return changes;
        }
        let mut g = self.lock();
        let Some(p) = g.pending.remove(branch) else {
            return changes;
        };
        if code >= 300 {
            return changes;
        }
        if p.wildcard {
            g.by_contact.retain(|k, b| {
                let keep = b.flow != Some(p.flow);
                if !keep {
                    changes.push((k.clone(), None));
                }
                keep
            });
        }
        for (key, expires) in p.contacts {
            if expires == 0 {
                if g.by_contact.remove(&key).is_some() {
                    changes.push((key, None));
                }
                continue;
            }
            let expires_at_ms = now_ms.saturating_add(expires.min(MAX_EXPIRES_S) * 1_000);
            let flow = match g.by_contact.get(&key) {
                // The same source again (a new connection, a new NAT
                // port): it moved. Another source: ambiguous while both
                // could be live.
                Some(b) if now_ms < b.expires_at_ms => match b.flow {
                    Some(f) if f.peer().ip() != p.flow.peer().ip() => None,
                    None => None,
                    Some(_) => Some(p.flow),
                },
                _ => Some(p.flow),
            };
            if g.by_contact.len() < MAX_BINDINGS || g.by_contact.contains_key(&key) {
                changes.push((key.clone(), Some((flow, expires_at_ms))));
                g.by_contact.insert(
                    key,
                    Binding {
                        flow,
                        expires_at_ms,
                    },
                );
            }
        }
        changes
    }

    /// A binding another edge learnt (or removed: `None`), as it stands
    /// there: flow and absolute expiry.
    pub fn apply_remote(&self, contact: &str, binding: Option<(Option<Flow>, u64)>) {
        let mut g = self.lock();
        match binding {
            Some((flow, expires_at_ms)) => {
                if g.by_contact.len() < MAX_BINDINGS || g.by_contact.contains_key(contact) {
                    g.by_contact.insert(
                        contact.to_string(),
                        Binding {
                            flow,
                            expires_at_ms,
                        },
                    );
                }
            }
            None => {
                g.by_contact.remove(contact);
            }
        }
    }

    /// Every live binding: Contact, flow, expiry.
    pub fn snapshot(&self, now_ms: u64) -> Vec<(String, Option<Flow>, u64)> {
        self.lock()
            .by_contact
            .iter()
            .filter(|(_, b)| now_ms < b.expires_at_ms)
            .map(|(k, b)| (k.clone(), b.flow, b.expires_at_ms))
            .collect()
    }

    /// The flow a registered Contact was registered by, if it is live.
    pub fn lookup(&self, uri: &Uri, now_ms: u64) -> Option<Flow> {
        let key = contact_key(uri)?;
        let g = self.lock();
        let b = g.by_contact.get(&key)?;
        if now_ms < b.expires_at_ms {
            b.flow
        } else {
            None
        }
    }

    /// Drops expired bindings and REGISTERs that got no answer.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut g = self.lock();
        let before = g.by_contact.len();
        g.by_contact.retain(|_, b| now_ms < b.expires_at_ms);
        while g
            .pending
            .pop_oldest_if(|p| now_ms >= p.at_ms + PENDING_MS)
            .is_some()
        {}
        before - g.by_contact.len()
    }

    pub fn len(&self) -> usize {
        self.lock().by_contact.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        edge::transport::StreamKind,
        sip::{Framing, Limits},
    };

    fn register(contact: &str, expires: &str) -> SipMessage {
        let text = format!(
            "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TCP 198.18.0.2:40000;branch=z9hG4bKr1\r\n\
             From: <sip:ua@198.18.0.1>;tag=r1\r\n\
             To: <sip:ua@198.18.0.1>\r\n\
             Call-ID: reg@198.18.0.2\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: {contact}\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        crate::sip::parse_message(text.as_bytes(), Framing::Datagram, &Limits::default()).unwrap()
    }

    fn uri(s: &str) -> Uri {
        crate::sip::NameAddr::parse(s).unwrap().uri
    }

    #[test]
    fn a_binding_exists_only_after_a_2xx_and_until_it_expires() {
        let b = Bindings::default();
        let flow = Flow::Stream {
            id: 7,
            peer: "198.18.0.2:40000".parse().unwrap(),
            kind: StreamKind::Tcp,
        };
        let target = uri("<sip:ua@198.18.0.2:5062;transport=tcp>");
        b.on_register(
            "br1",
            &register("<sip:ua@198.18.0.2:5062;transport=tcp>", "60"),
            flow,
            0,
        );
        assert_eq!(
            b.lookup(&target, 1),
            None,
            "not before the registrar said yes"
        );
        b.on_response("br1", 100, 1);
        assert_eq!(b.lookup(&target, 1), None);
        b.on_response("br1", 200, 2);
        assert_eq!(b.lookup(&target, 3), Some(flow));
        // Case of the host and URI parameters do not matter; the port does.
        assert_eq!(b.lookup(&uri("<sip:ua@198.18.0.2:5062>"), 3), Some(flow));
        assert_eq!(b.lookup(&uri("<sip:ua@198.18.0.2>"), 3), None);
        assert_eq!(b.lookup(&target, 60_002), None, "expired");
        assert_eq!(b.sweep(60_002), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn refusals_unregisters_and_wildcards() {
        let b = Bindings::default();
        let flow = Flow::Udp("198.18.0.2:5062".parse().unwrap());
        let target = uri("<sip:ua@10.0.0.9:5062>");
        // 401: nothing learned.
        b.on_register("b1", &register("<sip:ua@10.0.0.9:5062>", "60"), flow, 0);
        b.on_response("b1", 401, 1);
        assert_eq!(b.lookup(&target, 2), None);
        b.on_register("b2", &register("<sip:ua@10.0.0.9:5062>", "60"), flow, 2);
        b.on_response("b2", 200, 3);
        assert_eq!(b.lookup(&target, 4), Some(flow));
        // expires=0 on the Contact removes it.
        b.on_register(
            "b3",
            &register("<sip:ua@10.0.0.9:5062>;expires=0", "60"),
            flow,
            5,
        );
        b.on_response("b3", 200, 6);
        assert_eq!(b.lookup(&target, 7), None);
        // Contact: * with Expires: 0 removes every binding of the flow.
        b.on_register("b4", &register("<sip:ua@10.0.0.9:5062>", "60"), flow, 8);
        b.on_response("b4", 200, 9);
        b.on_register("b5", &register("*", "0"), flow, 10);
        b.on_response("b5", 200, 11);
        assert!(b.is_empty());
    }

    #[test]
    fn huge_expires_are_capped_and_shared_contacts_reach_nobody() {
        let b = Bindings::default();
        let a = Flow::Udp("192.0.2.1:5060".parse().unwrap());
        let c = Flow::Udp("192.0.2.2:5060".parse().unwrap());
        let target = uri("<sip:200@192.168.1.100:5060>");
        b.on_register(
            "h1",
            &register("<sip:200@192.168.1.100:5060>", "18446744073709551615"),
            a,
            0,
        );
        b.on_response("h1", 200, 1);
        assert_eq!(b.lookup(&target, 2), Some(a));
        assert_eq!(b.lookup(&target, MAX_EXPIRES_S * 1_000 + 2), None, "capped");
        // The same source from a new port: it moved.
        let a2 = Flow::Udp("192.0.2.1:5070".parse().unwrap());
        b.on_register("h2", &register("<sip:200@192.168.1.100:5060>", "60"), a2, 3);
        b.on_response("h2", 200, 4);
        assert_eq!(b.lookup(&target, 5), Some(a2));
        // Another site with the same private Contact: nobody is reached.
        b.on_register("h3", &register("<sip:200@192.168.1.100:5060>", "60"), c, 6);
        b.on_response("h3", 200, 7);
        assert_eq!(b.lookup(&target, 8), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cap_tests {
    use super::*;
    use crate::sip::{Framing, Limits};

    fn register(branch: &str, contacts: &[String]) -> SipMessage {
        let lines: String = contacts
            .iter()
            .map(|c| format!("Contact: {c}\r\n"))
            .collect();
        let text = format!(
            "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.9:5060;branch={branch}\r\n\
             From: <sip:m@198.18.0.1>;tag=r1\r\n\
             To: <sip:m@198.18.0.1>\r\n\
             Call-ID: {branch}\r\n\
             CSeq: 1 REGISTER\r\n\
             {lines}Content-Length: 0\r\n\r\n"
        );
        let limits = Limits {
            max_message_size: 1 << 20,
            max_headers: 4096,
        };
        crate::sip::parse_message(text.as_bytes(), Framing::Datagram, &limits).unwrap()
    }

    #[test]
    fn pending_registers_stay_under_their_caps() {
        let b = Bindings::with_limits(50, 1 << 20);
        let flow = Flow::Udp("198.18.0.9:5060".parse().unwrap());
        for i in 0..10_000u32 {
            let c = vec![format!("<sip:u{i}@10.9.{}.{}:5060>", i / 250, i % 250)];
            b.on_register(&format!("br{i}"), &register(&format!("br{i}"), &c), flow, 1);
        }
        assert_eq!(b.pending_usage().0, 50);
        assert_eq!(b.pending_evicted(), 10_000 - 50);
        // A phone's REGISTER still becomes a binding.
        let phone = Flow::Udp("198.18.0.2:5062".parse().unwrap());
        let c = vec!["<sip:200@192.168.1.10:5062>".to_string()];
        b.on_register("real", &register("real", &c), phone, 2);
        b.on_response("real", 200, 3);
        let uri = crate::sip::NameAddr::parse("<sip:200@192.168.1.10:5062>")
            .unwrap()
            .uri;
        assert_eq!(b.lookup(&uri, 4), Some(phone));
    }

    #[test]
    fn pending_register_bytes_are_capped_and_expire_in_order() {
        let cap = 64 * 1024;
        let b = Bindings::with_limits(1_000_000, cap);
        let flow = Flow::Udp("198.18.0.9:5060".parse().unwrap());
        for i in 0..500u32 {
            // 200 Contacts each: ~8 KB charged per REGISTER.
            let cs: Vec<String> = (0..200)
                .map(|j| format!("<sip:c{i}x{j}@10.1.1.1:5060>"))
                .collect();
            b.on_register(&format!("b{i}"), &register(&format!("b{i}"), &cs), flow, 0);
        }
        let (n, bytes) = b.pending_usage();
        assert!(bytes <= cap && n > 0, "{n} {bytes}");
        assert_eq!(b.pending_evicted(), 500 - n as u64);
        // Unanswered ones go after 64*T1, not counted as cap hits.
        b.sweep(PENDING_MS);
        assert_eq!(b.pending_usage(), (0, 0));
        assert_eq!(b.pending_evicted(), 500 - n as u64);
    }
}
