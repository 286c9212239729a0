//! Stateless forwarding (RFC 3261 16.11): our Via with a deterministic
//! branch, `received`/`rport` on the sender's Via (RFC 3581),
//! Max-Forwards, Record-Route and Route, loop detection, and where a
//! message goes next.

use std::net::{IpAddr, SocketAddr};

use super::transport::{Flow, FlowToken, StreamKind};
use crate::sip::{Method, NameAddr, SipMessage, Via};

/// Every branch the edge puts in a Via starts with this (RFC 3261 magic
/// cookie, then `ska`).
pub const BRANCH_PREFIX: &str = "z9hG4bKska";

/// Max-Forwards put on a request that has none (RFC 3261 8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// 64-bit FNV-1a over `parts`, each followed by a 0xff separator.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The loop-detection hash of a request (RFC 3261 16.3 item 4): the
/// Request-URI, From tag, Call-ID, CSeq number and the Route values,
/// taken after our own Route entries were removed. The To tag is left
/// out so that the ACK of a non-2xx final response (which has one) gets
/// the INVITE's branch (RFC 3261 16.11).
pub fn loop_key(msg: &SipMessage) -> u64 {
    loop_key_of(msg, &Txn::of(msg))
}

/// What the loop key and a branch's seal both read of a message: each
/// parse of a From header and CSeq costs as much as the hash, and a
/// forwarded request needs both.
struct Txn<'m> {
    call_id: &'m str,
    from_tag: String,
    cseq: String,
}

impl<'m> Txn<'m> {
    fn of(msg: &'m SipMessage) -> Txn<'m> {
        Txn {
            call_id: msg.call_id().unwrap_or_default(),
            from_tag: msg.from_tag().unwrap_or_default(),
            cseq: msg.cseq().map(|c| c.seq.to_string()).unwrap_or_default(),
        }
    }
}

fn loop_key_of(msg: &SipMessage, t: &Txn) -> u64 {
    let ruri = msg.request_uri().map(|u| u.to_string()).unwrap_or_default();
    let routes: Vec<&str> = msg.header_values("Route").collect();
    let routes = routes.join(",");
    fnv1a(&[
        ruri.as_bytes(),
        t.from_tag.as_bytes(),
        t.call_id.as_bytes(),
        t.cseq.as_bytes(),
        routes.as_bytes(),
    ])
}

/// What a branch seals besides the loop key: the transaction as every
/// response to it shows it too (the request's top Via branch as it came
/// in, which is the response's Via below ours; Call-ID, From tag and CSeq
/// number, which a CANCEL and a non-2xx ACK share with their INVITE) and
/// the flow the request left by, keyed with the edge's secret.
fn seal(key: &FlowToken, mark: &str, t: &Txn, incoming: &str, to: &Flow) -> u64 {
    let (call_id, from_tag, cseq) = (t.call_id, &t.from_tag, &t.cseq);
    let flow = match *to {
        Flow::Udp(a) => format!("u{a}"),
        Flow::Stream { id, peer, kind } => format!("{}{id}-{peer}", kind.uri_transport()),
    };
    key.keyed_hash(
        b"branch",
        &[
            mark.as_bytes(),
            incoming.as_bytes(),
            call_id.as_bytes(),
            from_tag.as_bytes(),
            cseq.as_bytes(),
            flow.as_bytes(),
        ],
    )
}

/// The branch of the top Via (empty when absent).
fn top_branch(msg: &SipMessage) -> String {
    msg.top_branch().unwrap_or_default()
}

/// Our branch for a request sent by the flow `to`: the loop key, then a
/// keyed hash ([`FlowToken::keyed_hash`]) of the transaction and `to`. A
/// retransmission, and the CANCEL or non-2xx ACK of an INVITE, get the
/// same branch as the request they belong to; nobody without the key can
/// compute one, so nobody can answer a request they did not receive.
pub fn branch(msg: &SipMessage, key: &FlowToken, to: &Flow) -> String {
    let t = Txn::of(msg);
    branch_of(msg, &t, loop_key_of(msg, &t), key, to)
}

/// [`branch`] with the transaction read and the loop key computed.
fn branch_of(msg: &SipMessage, t: &Txn, loop_key: u64, key: &FlowToken, to: &Flow) -> String {
    let mark = format!("{loop_key:016x}");
    let seal = seal(key, &mark, t, &top_branch(msg), to);
    format!("{BRANCH_PREFIX}{mark}.{seal:016x}")
}

/// Whether our Via `ours`, taken off the response `resp`, names a request
/// the edge sent by the flow `from` the response came by. A response to
/// anything else is forged: a phone's "registrar answer", a 2xx to
/// someone else's BYE.
pub fn answers_request_sent_to(
    ours: &Via,
    resp: &SipMessage,
    key: &FlowToken,
    from: &Flow,
) -> bool {
    let Some((mark, sealed)) = ours
        .branch()
        .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
        .and_then(|b| b.split_once('.'))
    else {
        return false;
    };
    let want = format!(
        "{:016x}",
        seal(key, mark, &Txn::of(resp), &top_branch(resp), from)
    );
    sealed.eq_ignore_ascii_case(&want)
}

/// An IP address as a URI or Via host (IPv6 in brackets).
pub fn uri_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A host from a URI or Via as an IP address (brackets removed); `None`
/// for a host name.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether `host:port` (port defaulting to 5060) names `local`.
pub fn names(local: SocketAddr, host: Option<&str>, port: Option<u16>) -> bool {
    host.and_then(host_ip) == Some(local.ip()) && port.unwrap_or(5060) == local.port()
}

/// Whether a Via was put there by the edge listening on `local`.
pub fn is_own_via(via: &Via, local: SocketAddr) -> bool {
    names(local, Some(&via.host), Some(via.port_or_default()))
        && via.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX))
}

/// Whether the request already passed this edge in the same state (a
/// Via of ours carrying this loop key): answer 482.
pub fn is_loop(msg: &SipMessage, local: SocketAddr) -> bool {
    is_loop_keyed(msg, local, loop_key(msg))
}

/// [`is_loop`] with the loop key computed.
fn is_loop_keyed(msg: &SipMessage, local: SocketAddr, loop_key: u64) -> bool {
    let mark = format!("{BRANCH_PREFIX}{loop_key:016x}.");
    msg.vias()
        .unwrap_or_default()
        .iter()
        .any(|v| is_own_via(v, local) && v.branch().is_some_and(|b| b.starts_with(&mark)))
}

/// RFC 3581 / RFC 3261 18.2.1: `received` when the sent-by differs from
/// the packet's source, and `rport` (with `received`) filled in when the
/// sender asked for it, so the response finds its way back through NAT.
/// Responses go where these say (see [`via_destination`]), so any
/// `received` or `rport` value the sender wrote itself is dropped first:
/// only the packet's real source may choose where the edge sends.
pub fn stamp_received(msg: &mut SipMessage, src: SocketAddr) {
    let Some(mut top) = msg.top_via() else {
        return;
    };
    if stamp_via(&mut top, src) {
        msg.set_top_via(&top);
    }
}

/// [`stamp_received`] on one Via, the top one of a request that came
/// from `src`: of one forwarded, and of the edge's own answers to it
/// (which is how a phone behind NAT learns its public address from its
/// keep-alives). `false` when it is left as it came.
pub fn stamp_via(top: &mut Via, src: SocketAddr) -> bool {
    let asked_rport = top.rport().is_some();
    let forged = top.received().is_some() || top.rport().flatten().is_some();
    if !asked_rport && !forged && host_ip(&top.host) == Some(src.ip()) {
        return false;
    }
    top.params.retain(|p| {
        !p.name.eq_ignore_ascii_case("received") && !p.name.eq_ignore_ascii_case("rport")
    });
    if asked_rport {
        top.set_param("rport", Some(src.port().to_string()));
        top.set_param("received", Some(src.ip().to_string()));
    } else if host_ip(&top.host) != Some(src.ip()) {
        top.set_param("received", Some(src.ip().to_string()));
    }
    true
}

/// Removes the Route entries at the top that name this edge (it put them
/// there with Record-Route or Path) and returns them: their user parts
/// may carry flow tokens.
pub fn pop_own_routes(msg: &mut SipMessage, local: SocketAddr) -> Vec<NameAddr> {
    let Ok(routes) = msg.routes() else {
        return Vec::new();
    };
    // Our entry, and its twin when the edge put two (RFC 5658: the same
    // token, one per side). Only those: a request that spirals back
    // through the edge later on its route keeps that later entry.
    let is_ours = |r: &NameAddr| names(local, r.uri.host(), r.uri.port());
    let own = match routes.as_slice() {
        [first, second, ..]
            if is_ours(first)
                && is_ours(second)
                && first.uri.user().is_some()
                && first.uri.user() == second.uri.user() =>
        {
            2
        }
        [first, ..] if is_ours(first) => 1,
        _ => return Vec::new(),
    };
    let rest: Vec<String> = routes.iter().skip(own).map(|r| r.to_string()).collect();
    if rest.is_empty() {
        msg.remove_header("Route");
    } else {
        msg.set_header("Route", rest.join(", "));
    }
    routes.into_iter().take(own).collect()
}

/// Whether a request can create a dialog (and so gets our Record-Route).
pub fn creates_dialog(msg: &SipMessage) -> bool {
    msg.to_tag().is_none()
        && matches!(
            msg.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        )
}

/// Why a request is not forwarded, with the status to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 483 Too Many Hops.
    TooManyHops,
    /// 482 Loop Detected.
    Loop,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::TooManyHops => (483, "Too Many Hops"),
            Refusal::Loop => (482, "Loop Detected"),
        }
    }
}

/// How a request leaves the edge: the transport of the next hop (for our
/// Via), the Record-Route values to add to a dialog-creating request (top
/// first), and parameters for our Via that its responses bring back.
#[derive(Clone, Debug, Default)]
pub struct Hop {
    pub transport: &'static str,
    pub record_route: Vec<String>,
    pub via_params: Vec<(&'static str, String)>,
}

impl Hop {
    /// A UDP hop with one plain Record-Route naming `local`.
    #[cfg(test)]
    pub fn udp(local: SocketAddr) -> Hop {
        Hop {
            transport: "UDP",
            record_route: vec![format!(
                "<sip:{}:{};lr>",
                uri_host(local.ip()),
                local.port()
            )],
            via_params: Vec::new(),
        }
    }
}

/// Prepares a request for the next hop (RFC 3261 16.6): checks
/// Max-Forwards and loops, removes our Route entries, stamps the sender's
/// Via, decrements Max-Forwards, adds Record-Route to dialog-creating
/// requests and pushes our Via. `local` is the address the request came
/// in on and leaves from; `to` the flow it leaves by, which its branch
/// seals with `key`.
pub fn prepare_request(
    msg: &mut SipMessage,
    src: SocketAddr,
    local: SocketAddr,
    hop: &Hop,
    key: &FlowToken,
    to: Flow,
) -> Result<(), Refusal> {
    let hops = msg.max_forwards().unwrap_or(DEFAULT_MAX_FORWARDS);
    if hops == 0 {
        return Err(Refusal::TooManyHops);
    }
    pop_own_routes(msg, local);
    let t = Txn::of(msg);
    let loop_key = loop_key_of(msg, &t);
    if is_loop_keyed(msg, local, loop_key) {
        return Err(Refusal::Loop);
    }
    let branch = branch_of(msg, &t, loop_key, key, &to);
    stamp_received(msg, src);
    msg.set_max_forwards(hops - 1);
    if creates_dialog(msg) {
        // Prepended bottom first, so the first value ends up on top.
        for rr in hop.record_route.iter().rev() {
            msg.prepend_header("Record-Route", rr.clone());
        }
    }
    let transport = if hop.transport.is_empty() {
        "UDP"
    } else {
        hop.transport
    };
    let mut via = Via::new(
        transport,
        &uri_host(local.ip()),
        Some(local.port()),
        &branch,
    );
    for (k, v) in &hop.via_params {
        via.set_param(k, Some(v.clone()));
    }
    msg.prepend_via(&via);
    Ok(())
}

/// Where a request from the PBX goes when the dialog does not say: the
/// first remaining Route, else the Request-URI (IP hosts only), with the
/// stream transport its `transport=` parameter asks for, if any.
pub fn request_destination(msg: &SipMessage) -> Option<(SocketAddr, Option<StreamKind>)> {
    let uri = match msg.routes().ok().and_then(|r| r.into_iter().next()) {
        Some(route) => route.uri,
        None => msg.request_uri()?.clone(),
    };
    let ip = host_ip(uri.host()?)?;
    let kind = uri
        .param("transport")
        .flatten()
        .and_then(StreamKind::from_uri_transport);
    Some((SocketAddr::new(ip, uri.port().unwrap_or(5060)), kind))
}

/// Where a response goes, from the Via below ours: `received` (else the
/// sent-by host, an IP) and `rport` (else the sent-by port).
pub fn via_destination(via: &Via) -> Option<SocketAddr> {
    let ip = match via.received() {
        Some(r) => host_ip(r)?,
        None => host_ip(&via.host)?,
    };
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port_or_default(),
    };
    Some(SocketAddr::new(ip, port))
}

/// Removes our top Via from a response and says where it goes next (from
/// the Via below); returns our Via too, whose parameters say more (flow).
/// `None` when the top Via is not ours or nothing below it is routable.
pub fn prepare_response(msg: &mut SipMessage, local: SocketAddr) -> Option<(Via, SocketAddr)> {
    let top = msg.top_via()?;
    if !is_own_via(&top, local) {
        return None;
    }
    msg.remove_top_via()?;
    Some((top, via_destination(&msg.top_via()?)?))
}

/// The value of a parameter of our Via (`None` when absent).
pub fn via_param(via: &Via, name: &str) -> Option<String> {
    via.param(name).map(|v| v.unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Framing, Limits};

    const EDGE: &str = "198.18.0.1:5060";
    const PBX: &str = "198.18.0.1:5080";

    fn key() -> FlowToken {
        FlowToken::with_key(&[7; 32])
    }

    fn pbx() -> Flow {
        Flow::Udp(PBX.parse().unwrap())
    }

    fn prep(m: &mut SipMessage, src: SocketAddr, local: SocketAddr) -> Result<(), Refusal> {
        prepare_request(m, src, local, &Hop::udp(local), &key(), pbx())
    }

    fn parse(s: &str) -> SipMessage {
        crate::sip::parse_message(s.as_bytes(), Framing::Datagram, &Limits::default()).unwrap()
    }

    fn invite() -> SipMessage {
        parse(
            "INVITE sip:bob@198.18.0.1:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKabc;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: c1@example.com\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n",
        )
    }

    #[test]
    fn request_gets_via_record_route_rport_and_one_hop_less() {
        let local: SocketAddr = EDGE.parse().unwrap();
        let src: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let mut m = invite();
        let expected_branch = branch(&m, &key(), &pbx());
        prep(&mut m, src, local).unwrap();
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].branch(), Some(expected_branch.as_str()));
        assert!(is_own_via(&vias[0], local));
        assert_eq!(vias[1].received(), Some("198.18.0.2"));
        assert_eq!(vias[1].rport(), Some(Some(40000)));
        assert_eq!(m.max_forwards(), Some(69));
        assert_eq!(m.header("Record-Route"), Some("<sip:198.18.0.1:5060;lr>"));
        // Deterministic: the same request gives the same branch.
        let mut again = invite();
        prep(&mut again, src, local).unwrap();
        assert_eq!(again.top_via(), m.top_via());
    }

    #[test]
    fn cancel_and_non_2xx_ack_get_the_invite_branch() {
        let inv = invite();
        let as_method = |m: &str, to_tag: &str| {
            let text = String::from_utf8(invite().to_bytes())
                .unwrap()
                .replace("INVITE", m)
                .replace(
                    "<sip:bob@example.com>",
                    &format!("<sip:bob@example.com>{to_tag}"),
                );
            parse(&text)
        };
        let b = |m: &SipMessage| branch(m, &key(), &pbx());
        assert_eq!(b(&as_method("CANCEL", "")), b(&inv));
        assert_eq!(b(&as_method("ACK", ";tag=b1")), b(&inv));
        // Another transaction (a new top branch) gets another branch.
        let text = String::from_utf8(inv.to_bytes())
            .unwrap()
            .replace("z9hG4bKabc", "z9hG4bKdef");
        assert_ne!(b(&parse(&text)), b(&inv));
    }

    #[test]
    fn a_received_or_rport_the_sender_wrote_is_replaced_by_its_source() {
        let src: SocketAddr = "198.18.0.2:5999".parse().unwrap();
        let with_via = |via: &str| {
            let text = String::from_utf8(invite().to_bytes())
                .unwrap()
                .replace("10.0.0.5:5060;branch=z9hG4bKabc;rport", via);
            parse(&text)
        };
        for (via, to) in [
            // Sent-by is the source: a forged `received` goes.
            ("198.18.0.2:5999;branch=z9hG4bK1;received=10.201.1.9", src),
            // Behind NAT: `received` says the real source.
            ("10.0.0.5:5999;branch=z9hG4bK1;received=10.201.1.9", src),
            // rport asked for, forged values in both.
            (
                "10.0.0.5:5060;branch=z9hG4bK1;received=10.201.1.9;rport=7",
                "198.18.0.2:5999".parse().unwrap(),
            ),
            // Two `received`: neither is kept.
            (
                "198.18.0.2:5999;branch=z9hG4bK1;received=10.201.1.9;received=10.201.1.8",
                src,
            ),
        ] {
            let mut m = with_via(via);
            stamp_received(&mut m, src);
            let top = m.top_via().unwrap();
            assert_eq!(via_destination(&top), Some(to), "{via}");
            let text = top.to_string();
            assert!(!text.contains("10.201.1."), "{text}");
        }
    }

    #[test]
    fn branches_carry_the_edge_secret_and_the_flow() {
        let inv = invite();
        let other = FlowToken::with_key(&[8; 32]);
        // Stable for a retransmission (the same request again).
        assert_eq!(
            branch(&inv, &key(), &pbx()),
            branch(&invite(), &key(), &pbx())
        );
        // Another edge's key, or another flow: another branch.
        assert_ne!(branch(&inv, &key(), &pbx()), branch(&inv, &other, &pbx()));
        let ua = Flow::Udp("198.18.0.2:5062".parse().unwrap());
        assert_ne!(branch(&inv, &key(), &pbx()), branch(&inv, &key(), &ua));
        // Today's unkeyed form (FNV of the same public fields) is not it.
        let public = format!(
            "{BRANCH_PREFIX}{:016x}.{:016x}",
            loop_key(&inv),
            fnv1a(&[b"z9hG4bKabc"])
        );
        assert_ne!(branch(&inv, &key(), &pbx()), public);
        // A response proves itself only from the flow the request took,
        // with the same transaction and only to the key that made it.
        let local: SocketAddr = EDGE.parse().unwrap();
        let src: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let mut m = invite();
        prep(&mut m, src, local).unwrap();
        let mut resp = m.response(200, "OK", Some("b1")).unwrap();
        let (ours, _) = prepare_response(&mut resp, local).unwrap();
        assert!(answers_request_sent_to(&ours, &resp, &key(), &pbx()));
        assert!(!answers_request_sent_to(&ours, &resp, &key(), &ua));
        assert!(!answers_request_sent_to(&ours, &resp, &other, &pbx()));
        let text = String::from_utf8(resp.to_bytes())
            .unwrap()
            .replace("c1@example.com", "someone-else@example.com");
        assert!(!answers_request_sent_to(
            &ours,
            &parse(&text),
            &key(),
            &pbx()
        ));
    }

    #[test]
    fn zero_hops_and_loops_are_refused() {
        let local: SocketAddr = EDGE.parse().unwrap();
        let src: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let mut m = invite();
        m.set_max_forwards(0);
        assert_eq!(prep(&mut m, src, local), Err(Refusal::TooManyHops));
        let mut m = invite();
        prep(&mut m, src, local).unwrap();
        // The same request comes back (the PBX sent it to us again).
        m.remove_header("Record-Route");
        assert_eq!(prep(&mut m, src, local), Err(Refusal::Loop));
    }

    #[test]
    fn own_routes_are_popped() {
        let local: SocketAddr = EDGE.parse().unwrap();
        let mut m = invite();
        m.push_header("Route", "<sip:198.18.0.1:5060;lr>, <sip:10.1.1.1;lr>");
        assert_eq!(pop_own_routes(&mut m, local).len(), 1);
        assert_eq!(m.header("Route"), Some("<sip:10.1.1.1;lr>"));
        assert_eq!(
            request_destination(&m),
            Some(("10.1.1.1:5060".parse().unwrap(), None))
        );
        m.remove_header("Route");
        assert_eq!(
            request_destination(&m),
            Some(("198.18.0.1:5080".parse().unwrap(), None))
        );
    }

    #[test]
    fn response_goes_to_received_and_rport() {
        let local: SocketAddr = EDGE.parse().unwrap();
        let src: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let mut m = invite();
        prep(&mut m, src, local).unwrap();
        let mut resp = m.response(180, "Ringing", Some("b1")).unwrap();
        assert_eq!(prepare_response(&mut resp, local).map(|r| r.1), Some(src));
        assert_eq!(resp.vias().unwrap().len(), 1);
        // A response whose top Via is not ours is not forwarded.
        assert_eq!(prepare_response(&mut resp, local), None);
    }
}
