//! The TCP/TLS stream framer fed the same bytes in arbitrary chunks: it
//! must never panic, hold no more than a message's worth of bytes, and cut
//! the stream the same way whatever the chunking (a reader's split points
//! are the network's choice).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_ka::sip::{CrlfRole, Limits, StreamEvent, StreamFramer};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let role = if ctl & 1 == 0 {
        CrlfRole::Server
    } else {
        CrlfRole::Client
    };
    // Small limits too, so the over-limit paths are reached.
    let limits = if ctl & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_message_size: 64 + usize::from(ctl >> 2) * 8,
            max_headers: 4,
        }
    };
    let cap = limits.max_message_size;

    let mut whole = StreamFramer::new(role, limits.clone());
    let expected: Vec<StreamEvent> = whole.push(rest);

    // Chunk sizes from the data itself: 1..=16 bytes, cycling.
    let mut chunked = StreamFramer::new(role, limits);
    let mut got = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < rest.len() {
        let step = 1 + usize::from(rest[i % rest.len()] % 16);
        let end = (at + step).min(rest.len());
        got.extend(chunked.push(&rest[at..end]));
        // A message over the limit is refused before it is all buffered;
        // what is held is at most one message plus the last read.
        assert!(
            chunked.buffered() <= cap + step + 4,
            "framer holds {} bytes (limit {cap})",
            chunked.buffered()
        );
        at = end;
        i += 1;
    }
    assert_eq!(got, expected, "chunking changed the events");
    assert_eq!(chunked.failed(), whole.failed());
    if !whole.failed() {
        assert_eq!(chunked.buffered(), whole.buffered());
    }
});
