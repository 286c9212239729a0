//! The SIP message parser on arbitrary bytes, as a UDP datagram and as a
//! message cut from a stream; on failure the 400 the edge would send, on
//! success every accessor the proxy reads and the re-serialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_ka::sip::{error_response, parse_message, Framing, Limits, SipMessage};

fn read_all(msg: &SipMessage) {
    let _ = msg.method();
    let _ = msg.request_uri().map(|u| u.to_string());
    let _ = (msg.status_code(), msg.reason_phrase());
    let _ = (msg.call_id(), msg.call_id_hash());
    let _ = (msg.from_tag(), msg.to_tag(), msg.cseq());
    if let Ok(vias) = msg.vias() {
        for v in &vias {
            let _ = (v.branch(), v.received(), v.rport(), v.port_or_default());
            let _ = v.rsip_transport();
        }
    }
    let _ = (msg.max_forwards(), msg.content_length());
    let _ = (
        msg.contacts(),
        msg.routes(),
        msg.record_routes(),
        msg.paths(),
    );
    let _ = (msg.supported(), msg.require(), msg.proxy_require());
    let _ = (msg.session_expires(), msg.min_se(), msg.flow_timer());
    let _ = msg.ms_keep_alive();
    let _ = msg.response(200, "OK", Some("fz"));
    let _ = msg.to_rsip();
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for framing in [Framing::Datagram, Framing::Stream] {
        match parse_message(data, framing, &limits) {
            Ok(msg) => {
                read_all(&msg);
                // What the edge sends on must parse again.
                let bytes = msg.to_bytes();
                if bytes.len() <= limits.max_message_size {
                    if let Ok(again) = parse_message(&bytes, Framing::Datagram, &limits) {
                        read_all(&again);
                    }
                }
            }
            Err(e) => {
                let _ = (e.status_code(), e.reason_phrase());
                let _ = error_response(data, &e, "fz");
            }
        }
    }
});
