//! How a request goes from one flow to another: our Via's transport and
//! parameters, and the Record-Route entries a dialog-creating request gets.

use std::net::SocketAddr;

use super::{
    evidence::{has_credentials, VIA_CREDENTIALS},
    forward::{self, Hop},
    ms_keepalive::MsKeepAliveOffer,
    proxy::{VIA_FLOW, VIA_MS_KEEPALIVE, VIA_OUTBOUND},
    state::Edge,
    transport::Flow,
};
use crate::sip::{Method, SipMessage};

impl Edge {
    /// Whether a REGISTER asks for outbound (RFC 5626 5.1 keys on "a
    /// reg-id header field parameter in the Contact"): a Contact with
    /// `reg-id` and `+sip.instance`, and Path support (RFC 3327 5.1: no
    /// Path unless the UA supports it).
    pub(super) fn outbound_register(&self, msg: &SipMessage) -> bool {
        let path = msg.supported().is_ok_and(|s| s.contains("path"));
        let reg_id = msg.contacts().is_ok_and(|cs| {
            cs.iter().any(|c| match c {
                crate::sip::Contact::Addr(a) => {
                    a.param("reg-id").is_some() && a.param("+sip.instance").is_some()
                }
                crate::sip::Contact::Wildcard => false,
            })
        });
        path && reg_id
    }

    /// How a request goes from `src` to `dest`: our Via's transport and
    /// parameters, and the Record-Route a dialog-creating request gets.
    /// A UA on a connection gets two Record-Route entries (RFC 5658): the
    /// top one for the PBX (UDP), the other for the UA, with the stream's
    /// transport; both carry the flow token so in-dialog requests from the
    /// PBX find the connection.
    pub(super) fn hop(
        &self,
        req: &SipMessage,
        src: Flow,
        dest: Flow,
        local: SocketAddr,
        mka: MsKeepAliveOffer,
    ) -> Hop {
        let host = forward::uri_host(local.ip());
        let port = local.port();
        let mut hop = Hop {
            transport: dest.via_transport(),
            ..Hop::default()
        };
        // The UA's side of the request: where it came from, or where it
        // goes when the PBX sent it.
        let ua = if dest == Flow::Udp(self.cfg.upstream) {
            src
        } else {
            dest
        };
        let creates = forward::creates_dialog(req);
        // Tokens cost an HMAC: made only where they are used.
        let token = (creates || src.is_stream()).then(|| self.transports.tokens.encode(&ua));
        hop.record_route = match (&token, ua) {
            (Some(token), Flow::Stream { kind, .. }) if creates => {
                let pbx_side = format!("<sip:{token}@{host}:{port};lr>");
                let ua_side = format!(
                    "<sip:{token}@{host}:{port};transport={};lr>",
                    kind.uri_transport()
                );
                // Top first: the PBX's side on top toward the PBX; toward
                // the UA its side first (the UA reverses the set).
                if ua == src {
                    vec![pbx_side, ua_side]
                } else {
                    vec![ua_side, pbx_side]
                }
            }
            // A UA on UDP: the token names its address (behind its NAT),
            // so requests the PBX sends in any dialog (a NOTIFY for a
            // SUBSCRIBE, say) reach it, not its private Contact.
            (Some(token), Flow::Udp(_)) if creates => {
                vec![format!("<sip:{token}@{host}:{port};lr>")]
            }
            _ => Vec::new(),
        };
        if let (Some(token), true) = (token, src.is_stream()) {
            hop.via_params.push((VIA_FLOW, token));
        }
        if matches!(mka, MsKeepAliveOffer::Accepted(_)) {
            hop.via_params.push((VIA_MS_KEEPALIVE, "1".to_string()));
        }
        if req.method() == Some(&Method::Register) && self.outbound_register(req) {
            hop.via_params.push((VIA_OUTBOUND, "1".to_string()));
        }
        // The PBX's 401/407 to it is then a failed login, not a challenge.
        if ua == src && has_credentials(req) {
            hop.via_params.push((VIA_CREDENTIALS, "1".to_string()));
        }
        hop
    }
}
