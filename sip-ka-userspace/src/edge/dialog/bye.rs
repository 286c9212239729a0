//! The BYEs that reap an ended dialog on both sides.

use std::net::SocketAddr;

use super::model::Dialog;
use crate::{
    edge::{forward, transport::Flow},
    sip::{Method, RequestBuilder, SipMessage, Via},
};

/// BYEs (with our Via) to both sides of an expired dialog, built from what
/// the table kept; a side whose Contact is unknown gets none.
pub(super) fn byes(
    call_id: &str,
    d: &Dialog,
    upstream: SocketAddr,
    local: SocketAddr,
) -> Vec<(SipMessage, Flow)> {
    let Some(callee_to) = d.cold.callee_to() else {
        return Vec::new();
    };
    let upstream = Flow::Udp(upstream);
    let (caller_addr, callee_addr) = if d.caller_is_ua {
        (d.ua(), upstream)
    } else {
        (upstream, d.ua())
    };
    let cseq = d.cseq.saturating_add(1);
    let mut out = Vec::new();
    for (ruri, from, to, dest) in [
        (
            d.cold.callee_contact(),
            d.cold.caller_from(),
            callee_to,
            callee_addr,
        ),
        (
            d.cold.caller_contact(),
            callee_to,
            d.cold.caller_from(),
            caller_addr,
        ),
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
        let built = RequestBuilder::for_uri(Method::Bye, ruri).and_then(|b| {
            b.via(Via::new(transport, &host, Some(port), &branch))
                .max_forwards(70)
                .from(from)
                .to(to)
                .call_id(call_id)
                .cseq(cseq)
                .header("Reason", "SIP;cause=408;text=\"Session expired\"")
                .build_checked()
        });
        match built {
            Ok(m) => out.push((m, dest)),
            Err(e) => log::warn!("edge: BYE for {call_id}: {e}"),
        }
    }
    out
}
