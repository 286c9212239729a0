//! `ms-keep-alive` (MS-CONMGMT 2.2.1): hop-by-hop, removed from every
//! request; on a stream, a well-formed `UAC;hop-hop=yes` offer is accepted
//! and the connection kept while keep-alives flow.

use super::{
    state::{Counters, Edge},
    transport::Flow,
};
use crate::sip::{MsKeepAlive, SipMessage};

/// What became of an `ms-keep-alive` header on a request from a UA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsKeepAliveOffer {
    /// No header, or one that does not ask for hop-by-hop keep-alives.
    None,
    /// `UAC;hop-hop=yes` on a stream: answered with this timeout.
    Accepted(u32),
    /// Repeated or malformed: counted, not negotiated.
    Bad,
}

/// An answer from the edge carries the ms-keep-alive answer when the
/// request's offer was accepted.
pub fn with_answer(mka: MsKeepAliveOffer, mut r: SipMessage) -> SipMessage {
    if let MsKeepAliveOffer::Accepted(t) = mka {
        r.push_header("ms-keep-alive", answer(t));
    }
    r
}

/// The answer header's value: `UAS;tcp=no;hop-hop=yes;end-end=no;timeout=N`.
pub fn answer(timeout: u32) -> String {
    MsKeepAlive::answer(timeout).to_string()
}

/// The ms-keep-alive header of a request from a UA: removed (it is
/// hop-by-hop), and on a stream an offer of hop-by-hop keep-alives is
/// accepted.
pub fn take(edge: &Edge, msg: &mut SipMessage, src: Flow) -> MsKeepAliveOffer {
    let values: Vec<String> = msg
        .header_values("ms-keep-alive")
        .map(str::to_string)
        .collect();
    if values.is_empty() {
        return MsKeepAliveOffer::None;
    }
    msg.remove_header("ms-keep-alive");
    let offer = match values.as_slice() {
        [one] => match MsKeepAlive::parse(one) {
            Ok(v) if v.offers_hop_hop() => {
                MsKeepAliveOffer::Accepted(edge.tun().streams.ms_keepalive_timeout)
            }
            Ok(_) => MsKeepAliveOffer::None,
            Err(e) => {
                log::debug!("edge: ms-keep-alive from {src}: {e}");
                MsKeepAliveOffer::Bad
            }
        },
        _ => MsKeepAliveOffer::Bad,
    };
    match offer {
        MsKeepAliveOffer::Bad => Counters::bump(&edge.counters.ms_keepalive_bad),
        // Over UDP there is no connection to keep: not negotiated.
        MsKeepAliveOffer::Accepted(t) if src.is_stream() => {
            Counters::bump(&edge.counters.ms_keepalive_negotiated);
            edge.transports.keep_alive(&src, t);
        }
        _ => return MsKeepAliveOffer::None,
    }
    offer
}
