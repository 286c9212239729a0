//! Every frame and payload the bench sends or answers with: Ethernet/IPv4/
//! UDP frames for BPF_PROG_TEST_RUN, STUN Binding requests, CRLF pings and
//! the SIP messages of the test run, the readiness probe and the stand-in
//! PBX. Frames and STUN messages come from the library's packet builder
//! (`sip_ka::lab::packet`), the one the fixtures use.

use std::net::{Ipv4Addr, SocketAddr};

use sip_ka::lab::{
    packet::{self, PacketBuilder, Stun},
    CLIENT_V4, SERVER_V4,
};

/// An RFC 5626 keep-alive ping (double CRLF); the pong is a single CRLF.
pub(crate) const CRLF_PING: &[u8] = packet::CRLF_PING;

/// Ethernet + IPv4 + UDP around `payload` from the lab's client to its
/// server, checksums correct.
pub(crate) fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::udp4(CLIENT_V4, sport, SERVER_V4, dport, payload)
        .ip_id(0x1c46)
        .build()
}

/// The source the bench bans (the BANS map) to time the drop of a banned
/// source's packets.
pub(crate) const BANNED_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 66);

/// [`udp4`] from [`BANNED_V4`].
pub(crate) fn udp4_banned(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::udp4(BANNED_V4, sport, SERVER_V4, dport, payload)
        .ip_id(0x1c47)
        .build()
}

/// A STUN Binding request (RFC 5389) with no attributes, or only a
/// FINGERPRINT.
pub(crate) fn binding_request(txid: [u8; 12], fingerprint: bool) -> Vec<u8> {
    let req = Stun::binding_request(txid);
    if fingerprint {
        req.fingerprint().build()
    } else {
        req.build()
    }
}

/// The lab load's Binding request number `seq`: its transaction id is
/// "skab" and `seq`, so that every request in flight is a new one.
pub(crate) fn numbered_binding_request(seq: u64, fingerprint: bool) -> Vec<u8> {
    let mut txid = [0u8; 12];
    txid[..4].copy_from_slice(b"skab");
    txid[4..].copy_from_slice(&seq.to_be_bytes());
    binding_request(txid, fingerprint)
}

/// The Call-ID of [`sip_options`], which the test run puts in DIALOGS.
pub(crate) const CALL_ID: &str = "a84b4c76e66710-3f1c@198.18.0.2";

/// A realistic OPTIONS (about 450 bytes): out of dialog, or in dialog
/// (To tag) for a dialog the DIALOGS map knows.
pub(crate) fn sip_options(in_dialog: bool) -> Vec<u8> {
    let to_tag = if in_dialog { ";tag=as5f2c1a9e" } else { "" };
    format!(
        "OPTIONS sip:pbx@198.18.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-524287-1---7c2f4a9d0e1b;rport\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:pbx@198.18.0.1:5060>{to_tag}\r\n\
         From: \"Alice\" <sip:alice@198.18.0.2:5060>;tag=1928301774\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: 63104 OPTIONS\r\n\
         Contact: <sip:alice@198.18.0.2:5060;ob>\r\n\
         Accept: application/sdp\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
         User-Agent: Bench-Phone/4.2\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Readiness probe `n` of the Kamailio comparison: an OPTIONS from `local`
/// to `server` itself (no user part), which both servers answer with 200.
pub(crate) fn options_probe(
    server: SocketAddr,
    local: SocketAddr,
    client: Ipv4Addr,
    n: u32,
) -> String {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-probe-{n};rport\r\n\
         From: <sip:bench@{local}>;tag=probe\r\n\
         To: <sip:{server}>\r\n\
         Call-ID: probe-{n}@{client}\r\n\
         CSeq: {n} OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A 200 to a SIP request (None for anything else): its Via, From, To
/// (tagged), Call-ID and CSeq, no body.
pub(crate) fn ok_response(req: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(req).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    if start.starts_with("SIP/2.0") || !start.ends_with("SIP/2.0") {
        return None;
    }
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" if !value.contains(";tag=") => {
                out.push_str(line);
                out.push_str(";tag=bench-pbx\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_pbx_answers_requests_only() {
        let req = b"OPTIONS sip:198.18.0.1:5080 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\n\
            From: <sip:198.18.0.1:5060>;tag=e1\r\n\
            To: <sip:198.18.0.1:5080>\r\n\
            Call-ID: q1\r\n\
            CSeq: 7 OPTIONS\r\n\
            Max-Forwards: 70\r\n\
            Content-Length: 0\r\n\r\n";
        let ok = String::from_utf8(ok_response(req).expect("a 200")).expect("text");
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        for h in [
            "Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\n",
            "From: <sip:198.18.0.1:5060>;tag=e1\r\n",
            "To: <sip:198.18.0.1:5080>;tag=bench-pbx\r\n",
            "Call-ID: q1\r\n",
            "CSeq: 7 OPTIONS\r\n",
        ] {
            assert!(ok.contains(h), "{h:?} missing from {ok:?}");
        }
        assert!(!ok.contains("Max-Forwards"));
        assert!(ok.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(
            ok_response(b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            None
        );
        assert_eq!(ok_response(b"\r\n\r\n"), None);
        assert_eq!(ok_response(&[0xff, 0xfe, 0x00]), None);
    }
}
