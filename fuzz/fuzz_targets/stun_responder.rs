//! The userspace responder's answer path (CRLF and STUN) on arbitrary
//! datagrams from IPv4 and IPv6 sources, and the STUN encoder it calls.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sip_ka::responder::{answer, stun, Shared};
use sip_ka_common::Config;

fn shared() -> &'static Shared {
    static SHARED: OnceLock<std::sync::Arc<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| Shared::new(Config::DEFAULT))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (head, msg) = data.split_at(3);
    let port = u16::from_be_bytes([head[1], head[2]]);
    let ip = if head[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(198, 18, head[1], head[0]))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            u16::from(head[0]),
            port,
        ))
    };
    let src = SocketAddr::new(ip, port);
    let _ = answer(shared(), msg, src);
    let _ = stun::respond(msg, src);
});
