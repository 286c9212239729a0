//! The flow-token decoder: arbitrary text (which the keyed hash refuses),
//! the same text as a body signed with the edge's key (so the field
//! parsing behind the hash is reached), and the round trip of whatever
//! decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_ka::edge::transport::{FlowToken, KEY_LEN};

const KEY: [u8; KEY_LEN] = [0x5a; KEY_LEN];

/// The token format's keyed hash, computed here independently: HMAC-SHA256
/// over the body, first 8 bytes, 16 hex digits.
fn sign(body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &KEY);
    let tag = ring::hmac::sign(&key, body.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&tag.as_ref()[..8]);
    format!("{body}-{:016x}", u64::from_be_bytes(first))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let tokens = FlowToken::with_key(&KEY);
    let _ = tokens.decode(text);
    if let Some(flow) = tokens.decode(&sign(text)) {
        let again = tokens.encode(&flow);
        assert_eq!(tokens.decode(&again), Some(flow), "round trip of {again}");
    }
});
