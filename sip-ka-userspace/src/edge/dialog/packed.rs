//! What a dialog keeps beyond its hot fields, in one allocation: its
//! creation time, phase start, UA flow and every string (Call-ID, the
//! INVITE's From, the 2xx's To, both Contact URIs, the forks), the strings
//! back to back with a range table in front. A fork's To and Contact,
//! when they are the callee's, and its tag, inside its To, are not stored
//! again. A million live calls make this the table's size, so a
//! dialog costs one heap block instead of a dozen `String`s and a second
//! map.
//!
//! Layout: created_unix (8, LE) | since_ms (8, LE) | flow length (1) |
//! flow | field count (1; high bit: 4-byte ranges) | (start, end) per
//! field | text. A field that is absent has the range (MAX, MAX).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::edge::{
    persist::Fork,
    transport::{Flow, StreamKind},
};

/// A dialog's cold data, unpacked (to change it, or to store it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cold {
    pub(super) created_unix: u64,
    pub(super) since_ms: u64,
    pub(super) ua: Flow,
    pub(super) call_id: String,
    pub(super) caller_from: String,
    pub(super) callee_to: Option<String>,
    pub(super) caller_contact: Option<String>,
    pub(super) callee_contact: Option<String>,
    pub(super) forks: Vec<Fork>,
}

/// Fields before the forks: Call-ID, caller From, callee To, caller
/// Contact, callee Contact.
const FIXED: usize = 5;
const CALL_ID: usize = 0;
const CALLER_FROM: usize = 1;
const CALLEE_TO: usize = 2;
const CALLER_CONTACT: usize = 3;
const CALLEE_CONTACT: usize = 4;
const WIDE: u8 = 0x80;
const FLOW_AT: usize = 16;

/// The packed form. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Packed(Box<[u8]>);

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.ip().octets());
            out.extend_from_slice(&v4.port().to_le_bytes());
        }
        SocketAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.ip().octets());
            out.extend_from_slice(&v6.port().to_le_bytes());
            out.extend_from_slice(&v6.flowinfo().to_le_bytes());
            out.extend_from_slice(&v6.scope_id().to_le_bytes());
        }
    }
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> [u8; N] {
    let mut out = [0; N];
    if let Some(s) = b.get(*at..*at + N) {
        out.copy_from_slice(s);
    }
    *at += N;
    out
}

fn get_addr(b: &[u8], at: &mut usize) -> SocketAddr {
    let kind = take::<1>(b, at)[0];
    if kind == 6 {
        let ip = Ipv6Addr::from(take::<16>(b, at));
        let port = u16::from_le_bytes(take(b, at));
        let flow = u32::from_le_bytes(take(b, at));
        let scope = u32::from_le_bytes(take(b, at));
        SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope))
    } else {
        let ip = Ipv4Addr::from(take::<4>(b, at));
        let port = u16::from_le_bytes(take(b, at));
        SocketAddr::V4(SocketAddrV4::new(ip, port))
    }
}

fn encode_flow(f: &Flow) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    match f {
        Flow::Udp(a) => {
            out.push(0);
            put_addr(&mut out, a);
        }
        Flow::Stream { id, peer, kind } => {
            out.push(match kind {
                StreamKind::Tcp => 1,
                StreamKind::Tls => 2,
                StreamKind::Ws => 3,
                StreamKind::Wss => 4,
            });
            out.extend_from_slice(&id.to_le_bytes());
            put_addr(&mut out, peer);
        }
    }
    out
}

fn decode_flow(b: &[u8]) -> Flow {
    let mut at = 1;
    let kind = match b.first() {
        Some(1) => StreamKind::Tcp,
        Some(2) => StreamKind::Tls,
        Some(3) => StreamKind::Ws,
        Some(4) => StreamKind::Wss,
        _ => return Flow::Udp(get_addr(b, &mut at)),
    };
    let id = u64::from_le_bytes(take(b, &mut at));
    Flow::Stream {
        id,
        peer: get_addr(b, &mut at),
        kind,
    }
}

impl Packed {
    pub(super) fn pack(c: &Cold) -> Packed {
        let mut text = String::new();
        let mut ranges: Vec<Option<(usize, usize)>> = Vec::with_capacity(FIXED + 3);
        let append = |s: &str, text: &mut String| {
            text.push_str(s);
            (text.len() - s.len(), text.len())
        };
        ranges.push(Some(append(&c.call_id, &mut text)));
        ranges.push(Some(append(&c.caller_from, &mut text)));
        let callee_to = c.callee_to.as_deref().map(|s| append(s, &mut text));
        ranges.push(callee_to);
        ranges.push(c.caller_contact.as_deref().map(|s| append(s, &mut text)));
        let callee_contact = c.callee_contact.as_deref().map(|s| append(s, &mut text));
        ranges.push(callee_contact);
        // A fork's strings are looked for only where they are expected
        // (the callee's To and Contact, the fork's own To): never a search
        // through the whole text, which a From of 16 KB would make slow.
        for f in &c.forks {
            let to = match callee_to {
                Some(r) if c.callee_to.as_deref() == Some(f.to.as_str()) => r,
                _ => append(&f.to, &mut text),
            };
            ranges.push(Some(to));
            let tag = text
                .get(to.0..to.1)
                .and_then(|t| t.rfind(f.tag.as_str()))
                .map(|at| (to.0 + at, to.0 + at + f.tag.len()));
            ranges.push(Some(tag.unwrap_or_else(|| append(&f.tag, &mut text))));
            ranges.push(f.contact.as_deref().map(|s| match callee_contact {
                Some(r) if c.callee_contact.as_deref() == Some(s) => r,
                _ => append(s, &mut text),
            }));
        }
        let flow = encode_flow(&c.ua);
        let wide = text.len() >= usize::from(u16::MAX);
        let width = if wide { 4 } else { 2 };
        let mut out =
            Vec::with_capacity(FLOW_AT + 2 + flow.len() + 2 * width * ranges.len() + text.len());
        out.extend_from_slice(&c.created_unix.to_le_bytes());
        out.extend_from_slice(&c.since_ms.to_le_bytes());
        out.push(flow.len() as u8);
        out.extend_from_slice(&flow);
        out.push(ranges.len() as u8 | if wide { WIDE } else { 0 });
        for r in &ranges {
            let (a, b) = r.unwrap_or((usize::MAX, usize::MAX));
            if wide {
                out.extend_from_slice(&(a.min(u32::MAX as usize) as u32).to_le_bytes());
                out.extend_from_slice(&(b.min(u32::MAX as usize) as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&(a.min(u16::MAX as usize) as u16).to_le_bytes());
                out.extend_from_slice(&(b.min(u16::MAX as usize) as u16).to_le_bytes());
            }
        }
        out.extend_from_slice(text.as_bytes());
        Packed(out.into_boxed_slice())
    }

    pub(super) fn unpack(&self) -> Cold {
        let forks = (0..self.fork_count())
            .map(|i| {
                let (tag, to, contact) = self.fork(i);
                Fork {
                    tag: tag.to_string(),
                    to: to.to_string(),
                    contact: contact.map(str::to_string),
                }
            })
            .collect();
        Cold {
            created_unix: self.created_unix(),
            since_ms: self.since_ms(),
            ua: self.ua(),
            call_id: self.call_id().to_string(),
            caller_from: self.caller_from().to_string(),
            callee_to: self.callee_to().map(str::to_string),
            caller_contact: self.caller_contact().map(str::to_string),
            callee_contact: self.callee_contact().map(str::to_string),
            forks,
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn created_unix(&self) -> u64 {
        u64::from_le_bytes(take(&self.0, &mut 0))
    }

    pub(super) fn since_ms(&self) -> u64 {
        u64::from_le_bytes(take(&self.0, &mut 8))
    }

    pub(super) fn set_since_ms(&mut self, ms: u64) {
        if let Some(s) = self.0.get_mut(8..FLOW_AT) {
            s.copy_from_slice(&ms.to_le_bytes());
        }
    }

    fn flow_len(&self) -> usize {
        usize::from(self.0.get(FLOW_AT).copied().unwrap_or(0))
    }

    pub(super) fn ua(&self) -> Flow {
        let n = self.flow_len();
        decode_flow(self.0.get(FLOW_AT + 1..FLOW_AT + 1 + n).unwrap_or(&[]))
    }

    /// (field count, range width, where the ranges start, where the text
    /// starts).
    fn table(&self) -> (usize, usize, usize, usize) {
        let at = FLOW_AT + 1 + self.flow_len();
        let head = self.0.get(at).copied().unwrap_or(0);
        let count = usize::from(head & !WIDE);
        let width = if head & WIDE != 0 { 4 } else { 2 };
        (count, width, at + 1, at + 1 + 2 * width * count)
    }

    fn field(&self, i: usize) -> Option<&str> {
        // Ranges are cut at the edges of whole strings: always UTF-8.
        std::str::from_utf8(self.field_bytes(i)?).ok()
    }

    /// Whether the Call-ID is `call_id`: the check of every lookup, on
    /// the bytes (no UTF-8 check of the stored copy).
    pub(super) fn call_id_is(&self, call_id: &str) -> bool {
        self.field_bytes(CALL_ID).unwrap_or_default() == call_id.as_bytes()
    }

    /// The Call-ID's bytes (what the table's map hashes).
    pub(super) fn call_id_bytes(&self) -> &[u8] {
        self.field_bytes(CALL_ID).unwrap_or_default()
    }

    fn field_bytes(&self, i: usize) -> Option<&[u8]> {
        let (count, width, ranges, text) = self.table();
        if i >= count {
            return None;
        }
        let mut at = ranges + 2 * width * i;
        let (a, b) = if width == 4 {
            let a = u32::from_le_bytes(take(&self.0, &mut at));
            let b = u32::from_le_bytes(take(&self.0, &mut at));
            (a as usize, b as usize)
        } else {
            let a = u16::from_le_bytes(take(&self.0, &mut at));
            let b = u16::from_le_bytes(take(&self.0, &mut at));
            if a == u16::MAX {
                return None;
            }
            (usize::from(a), usize::from(b))
        };
        if a == u32::MAX as usize {
            return None;
        }
        self.0.get(text + a..text + b)
    }

    pub(super) fn call_id(&self) -> &str {
        self.field(CALL_ID).unwrap_or("")
    }

    pub(super) fn caller_from(&self) -> &str {
        self.field(CALLER_FROM).unwrap_or("")
    }

    pub(super) fn callee_to(&self) -> Option<&str> {
        self.field(CALLEE_TO)
    }

    pub(super) fn caller_contact(&self) -> Option<&str> {
        self.field(CALLER_CONTACT)
    }

    pub(super) fn callee_contact(&self) -> Option<&str> {
        self.field(CALLEE_CONTACT)
    }

    pub(super) fn fork_count(&self) -> usize {
        self.table().0.saturating_sub(FIXED) / 3
    }

    /// Fork `i`: (tag, To, Contact).
    pub(super) fn fork(&self, i: usize) -> (&str, &str, Option<&str>) {
        let at = FIXED + 3 * i;
        (
            self.field(at + 1).unwrap_or(""),
            self.field(at).unwrap_or(""),
            self.field(at + 2),
        )
    }

    pub(super) fn fork_tags(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.fork_count()).map(|i| self.fork(i).0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cold(ua: Flow, forks: usize) -> Cold {
        Cold {
            created_unix: 1_700_000_000,
            since_ms: 1_700_000_000_123,
            ua,
            call_id: "abc@198.18.0.2".into(),
            caller_from: "\"A\" <sip:a@x>;tag=a1".into(),
            callee_to: (forks > 0).then(|| "<sip:b@y>;tag=b1".into()),
            caller_contact: Some("sip:a@198.18.0.2:5060".into()),
            callee_contact: None,
            forks: (0..forks)
                .map(|i| Fork {
                    tag: format!("b{}", i + 1),
                    to: format!("<sip:b@y>;tag=b{}", i + 1),
                    contact: (i % 2 == 0).then(|| "sip:b@198.18.0.1".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_every_flow_and_fork_count() {
        let flows = [
            Flow::Udp("198.18.0.2:5060".parse().unwrap()),
            Flow::Udp("[fe80::1%3]:5062".parse().unwrap()),
            Flow::Stream {
                id: 77,
                peer: "[2001:db8::2]:5061".parse().unwrap(),
                kind: StreamKind::Tls,
            },
            Flow::Stream {
                id: 0,
                peer: "10.0.0.1:1".parse().unwrap(),
                kind: StreamKind::Tcp,
            },
        ];
        for ua in flows {
            for forks in [0, 1, 2, 16] {
                let c = cold(ua, forks);
                let p = Packed::pack(&c);
                assert_eq!(p.unpack(), c, "{ua:?} {forks}");
                assert_eq!(p.ua(), ua);
                assert_eq!(p.fork_count(), forks);
            }
        }
    }

    #[test]
    fn a_string_already_held_is_not_stored_again() {
        let c = cold(Flow::Udp("198.18.0.2:5060".parse().unwrap()), 1);
        let p = Packed::pack(&c);
        // The fork's To, tag and Contact are all in the text already
        // (Contact is; the second fork's would not be).
        let text: usize = [&c.call_id, &c.caller_from]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            + c.callee_to.as_ref().unwrap().len()
            + c.caller_contact.as_ref().unwrap().len()
            + "sip:b@198.18.0.1".len();
        // Times, flow length, UDP v4 flow (8), field count, 8 ranges.
        assert_eq!(p.len(), 16 + 1 + 8 + 1 + 8 * 4 + text);
    }

    #[test]
    fn long_strings_take_wide_ranges() {
        let mut c = cold(Flow::Udp("198.18.0.2:5060".parse().unwrap()), 2);
        c.caller_from = "x".repeat(70_000);
        let p = Packed::pack(&c);
        assert_eq!(p.unpack(), c);
    }

    #[test]
    fn since_is_changed_in_place() {
        let c = cold(Flow::Udp("198.18.0.2:5060".parse().unwrap()), 0);
        let mut p = Packed::pack(&c);
        p.set_since_ms(42);
        assert_eq!(p.since_ms(), 42);
        assert_eq!(p.created_unix(), c.created_unix);
        assert_eq!(p.call_id(), c.call_id);
    }
}
