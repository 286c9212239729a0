//! The BYEs that reap an ended dialog on both sides.

use std::net::SocketAddr;

use super::model::Dialog;
use crate::{
    edge::{forward, transport::Flow},
    sip::SipMessage,
};

/// BYEs (with our Via) to both sides of an expired dialog, built from what
/// the table kept; a side whose Contact is unknown gets none.
pub(super) fn byes(
    call_id: &str,
    d: &Dialog,
    upstream: SocketAddr,
    local: SocketAddr,
) -> Vec<(SipMessage, Flow)> {
    let Some(callee_to) = &d.callee_to else {
        return Vec::new();
    };
    let upstream = Flow::Udp(upstream);
    let (caller_addr, callee_addr) = if d.caller_is_ua {
        (d.ua, upstream)
    } else {
        (upstream, d.ua)
    };
    let cseq = d.cseq.saturating_add(1);
    let mut out = Vec::new();
    for (ruri, from, to, dest) in [
        (&d.callee_contact, &d.caller_from, callee_to, callee_addr),
        (&d.caller_contact, callee_to, &d.caller_from, caller_addr),
    ] {
        let Some(ruri) = ruri else { continue };
        let host = forward::uri_host(local.ip());
        let port = local.port();
        let branch = format!(
            "{}{:016x}",
            forward::BRANCH_PREFIX,
            forward::fnv1a(&[call_id.as_bytes(), ruri.as_bytes(), b"reap"])
        );
        let transport = dest.via_transport();
        let text = format!(
            "BYE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {host}:{port};branch={branch}\r\n\
             Max-Forwards: 70\r\n\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} BYE\r\n\
             Reason: SIP;cause=408;text=\"Session expired\"\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match crate::sip::parse_message(
            text.as_bytes(),
            crate::sip::Framing::Datagram,
            &crate::sip::Limits::default(),
        ) {
            Ok(m) => out.push((m, dest)),
            Err(e) => log::warn!("edge: BYE for {call_id}: {e}"),
        }
    }
    out
}
