//! The calls of the dialog table bench: the INVITE, UPDATE and their 200s
//! of call number `i`, sized like a softphone's behind a PBX, made as the
//! edge's own message type, and checked against the edge's parser.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use sip_ka::sip::{parse_message, Framing, Limits, Method, SipMessage, StartLine, Uri};

/// splitmix64: tags and Call-IDs that look random but are reproducible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the messages of call `i` carry. Header values are sized like a
/// softphone's behind a PBX: display names, 16-hex-digit tags, Contact
/// URIs with port and parameters, a UUID-style Call-ID with a host (about
/// 40 characters). Only From, To, Contact, Call-ID and CSeq stay in the
/// table; the rest is what RFC 4028 processing reads, or padding a real
/// phone sends.
pub(crate) struct Call {
    pub(crate) call_id: String,
    pub(crate) ua: SocketAddr,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) to_tag: String,
    pub(crate) caller_contact: String,
    pub(crate) callee_contact: String,
    pub(crate) branch: u64,
}

/// A message as its start line and header fields, in order.
pub(crate) type Parts = (StartLine, Vec<(&'static str, String)>);

impl Call {
    pub(crate) fn new(i: u64) -> Call {
        let h = mix(i);
        let ua = SocketAddr::from((
            Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
            5060 + (i % 7) as u16,
        ));
        let caller = format!("+4989{:07}", i % 10_000_000);
        let callee = format!("+4930{:07}", mix(i ^ 0x5eed) % 10_000_000);
        Call {
            call_id: format!(
                "{:08x}-{:04x}-{:04x}-{:012x}@{}",
                h >> 32,
                (h >> 16) & 0xffff,
                h & 0xffff,
                mix(h) & 0xffff_ffff_ffff,
                ua.ip()
            ),
            from: format!(
                "\"Alice Example {}\" <sip:{caller}@pbx.example.com>;tag={:016x}",
                i % 10_000,
                mix(h ^ 1)
            ),
            to: format!(
                "\"Sales Desk {}\" <sip:{callee}@pbx.example.com>",
                i % 1_000
            ),
            to_tag: format!("{:016x}", mix(h ^ 2)),
            caller_contact: format!("<sip:{caller}@{ua};transport=udp;ob>"),
            callee_contact: format!("<sip:{callee}@192.0.2.10:5080;transport=udp>"),
            ua,
            branch: mix(h ^ 3),
        }
    }

    /// The INVITE (`in_dialog` false) or an UPDATE from the UA.
    pub(crate) fn request(&self, method: Method, cseq: u32, in_dialog: bool) -> Result<Parts> {
        let (ruri, to) = if in_dialog {
            (uri(&self.callee_contact), self.to_tagged())
        } else {
            (uri(&self.to), self.to.clone())
        };
        let uri = Uri::parse(ruri).map_err(|e| anyhow::anyhow!("{ruri}: {e}"))?;
        let headers = vec![
            ("Via", self.via(cseq, false)),
            ("Max-Forwards", "70".into()),
            ("From", self.from.clone()),
            ("To", to),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{cseq} {method}")),
            ("Contact", self.caller_contact.clone()),
            (
                "Allow",
                "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY".into(),
            ),
            ("Supported", "timer, replaces, 100rel".into()),
            ("Session-Expires", "1800;refresher=uac".into()),
            ("Min-SE", "90".into()),
            ("User-Agent", "Bench-Phone/4.2".into()),
            ("Content-Length", "0".into()),
        ];
        Ok((StartLine::Request { method, uri }, headers))
    }

    /// The PBX's 200 to the request with this CSeq.
    pub(crate) fn ok(&self, method: Method, cseq: u32) -> Parts {
        let headers = vec![
            ("Via", self.via(cseq, true)),
            ("From", self.from.clone()),
            ("To", self.to_tagged()),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{cseq} {method}")),
            ("Contact", self.callee_contact.clone()),
            ("Supported", "timer, replaces".into()),
            ("Require", "timer".into()),
            ("Session-Expires", "1800;refresher=uac".into()),
            ("Server", "Bench-PBX/1.0".into()),
            ("Content-Length", "0".into()),
        ];
        let start = StartLine::Response {
            code: 200,
            reason: "OK".into(),
        };
        (start, headers)
    }

    fn to_tagged(&self) -> String {
        format!("{};tag={}", self.to, self.to_tag)
    }

    fn via(&self, cseq: u32, answered: bool) -> String {
        let mut v = format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{:016x}{cseq};rport",
            self.ua, self.branch
        );
        if answered {
            v += &format!("={};received={}", self.ua.port(), self.ua.ip());
        }
        v
    }
}

/// The URI inside `<...>`.
pub(crate) fn uri(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) if a < b => &name_addr[a + 1..b],
        _ => name_addr,
    }
}

/// The message from its parts, as the edge's parser would make it from
/// the datagram (checked on the first call of each kind by
/// [`check_parts`]); building it directly keeps 4,000,000 parses, which
/// take longer than the table's own work, out of the run.
pub(crate) fn message((start, headers): Parts) -> SipMessage {
    SipMessage::from_parts(start, headers, Vec::new())
}

/// The datagram of `parts`, parsed by the edge's parser, must give the
/// same message as [`message`].
pub(crate) fn check_parts(parts: Parts) -> Result<()> {
    let (start, headers) = &parts;
    let mut text = match start {
        StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0\r\n"),
        StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}\r\n"),
    };
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += "\r\n";
    let parsed = parse_message(text.as_bytes(), Framing::Datagram, &Limits::default())
        .map_err(|e| anyhow::anyhow!("bench message does not parse: {e}\n{text}"))?;
    if parsed != message(parts) {
        bail!("bench message built from parts differs from the parsed one:\n{text}");
    }
    Ok(())
}
