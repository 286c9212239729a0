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
use crate::sip::{Contact, SipMessage, Uri};

/// REGISTERs waiting for their final response, at most.
pub const MAX_PENDING: usize = 65_536;
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

struct Binding {
    /// `None` when two sources registered the same Contact (two sites
    /// with the same private address plan): nobody is reached by it,
    /// rather than the wrong phone.
    flow: Option<Flow>,
    expires_at_ms: u64,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    by_contact: HashMap<String, Binding>,
}

/// The bindings table.
#[derive(Default)]
pub struct Bindings {
    inner: Mutex<Inner>,
}

/// How a Contact URI is compared with a Request-URI: user, host and port
/// (5060 when absent), host case-insensitive; parameters ignored.
pub fn contact_key(uri: &Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port().unwrap_or(5060);
    Some(format!("{}@{host}:{port}", uri.user().unwrap_or("")))
}

impl Bindings {
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
        let mut g = self.lock();
        if g.pending.len() >= MAX_PENDING {
            g.pending.retain(|_, p| now_ms < p.at_ms + PENDING_MS);
            if g.pending.len() >= MAX_PENDING {
                return;
            }
        }
        g.pending.insert(
            branch.to_string(),
            Pending {
                contacts: keys,
                wildcard,
                flow,
                at_ms: now_ms,
            },
        );
    }

    /// The response to a REGISTER sent with our `branch`.
    pub fn on_response(&self, branch: &str, code: u16, now_ms: u64) {
        if code < 200 {
            return;
        }
        let mut g = self.lock();
        let Some(p) = g.pending.remove(branch) else {
            return;
        };
        if code >= 300 {
            return;
        }
        if p.wildcard {
            g.by_contact.retain(|_, b| b.flow != Some(p.flow));
        }
        for (key, expires) in p.contacts {
            if expires == 0 {
                g.by_contact.remove(&key);
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
                g.by_contact.insert(
                    key,
                    Binding {
                        flow,
                        expires_at_ms,
                    },
                );
            }
        }
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
        g.pending.retain(|_, p| now_ms < p.at_ms + PENDING_MS);
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
