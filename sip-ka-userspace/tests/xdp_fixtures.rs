//! Fixtures for the XDP program through BPF_PROG_TEST_RUN (Katran style):
//! an input packet, the expected action, and for answers the expected
//! output packet, checked by independent parsers (etherparse for the
//! headers and checksums, stun_codec for STUN, FINGERPRINT included).
//!
//! Needs root: BPF_PROG_TEST_RUN and pinning maps under /sys/fs/bpf. So
//! the tests are ignored by a plain `cargo test`; `cargo xtask test` (or
//! `cargo test -- --include-ignored`) runs them, and as a user they fail
//! and say why.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytecodec::DecodeExt as _;
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use sip_ka::{
    bpf::test_run::{Harness, OWN_MAC, XDP_DROP, XDP_PASS, XDP_TX},
    lab::{
        packet::{
            sip_request, Checksum, PacketBuilder, Stun, CLIENT_MAC, CRLF_PING, CRLF_PONG,
            SERVER_MAC, SIP_CALL_ID,
        },
        CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
    },
    responder::stun,
};
use sip_ka_common::{
    callid_hash,
    config::{ACL_ALLOW_ONLY, ACL_DENY, ACL_OFF},
    counters::{sip_request_index, NAMED_COUNTERS},
    maps::{v4_mapped, BanReason, BanValue, DialogValue, RateValue, BAN_FOREVER, DIALOG_CONFIRMED},
    sip::Method,
    stun::{
        ATTR_MESSAGE_INTEGRITY, ATTR_SOFTWARE, ATTR_USERNAME, BINDING_SUCCESS, MAX_AMPLIFICATION,
    },
    Action, Config, Counter,
};
use stun_codec::{rfc5389, MessageClass, MessageDecoder};

/// A datagram from the lab's client, port 40000, to the server's SIP port.
fn v4(payload: &[u8]) -> PacketBuilder {
    PacketBuilder::udp4(CLIENT_V4, 40000, SERVER_V4, 5060, payload)
}

/// The same over IPv6.
fn v6(payload: &[u8]) -> PacketBuilder {
    PacketBuilder::udp6(CLIENT_V6, 40000, SERVER_V6, 5060, payload)
}

/// The transaction id of the STUN requests.
const TXID: [u8; 12] = [0x5a; 12];
/// A classic (RFC 3489) request's 16-byte id: no magic cookie.
const CLASSIC_ID: [u8; 16] = [
    0xde, 0xad, 0xbe, 0xef, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,
];

/// Checks an answer packet against its request with etherparse: MACs,
/// addresses and ports swapped, lengths and both checksums right, VLAN
/// tags kept. Returns the UDP payload.
fn check_answer(req: &PacketBuilder, out: &[u8]) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(out).expect("answer parses");
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = &h.link else {
        panic!("no ethernet header")
    };
    assert_eq!(
        eth.source, SERVER_MAC,
        "source MAC is the request's destination"
    );
    assert_eq!(eth.destination, CLIENT_MAC);
    assert_eq!(h.link_exts.len(), req.vlans.len(), "VLAN tags kept");
    let Some(TransportHeader::Udp(udp)) = &h.transport else {
        panic!("no UDP header")
    };
    let payload = h.payload.slice().to_vec();
    assert_eq!(udp.source_port, req.dport);
    assert_eq!(udp.destination_port, req.sport);
    assert_eq!(udp.length as usize, 8 + payload.len());
    match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert!(!req.is_v6());
            assert_eq!(IpAddr::from(ip.source), req.dst);
            assert_eq!(IpAddr::from(ip.destination), req.src);
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert_eq!(
                ip.total_len as usize,
                ip.header_len() + 8 + payload.len(),
                "IPv4 total length"
            );
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv4(ip, &payload).unwrap(),
                "UDP checksum"
            );
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert!(req.is_v6());
            assert_eq!(IpAddr::from(ip.source), req.dst);
            assert_eq!(IpAddr::from(ip.destination), req.src);
            assert_eq!(ip.payload_length as usize, 8 + payload.len());
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv6(ip, &payload).unwrap(),
                "UDP checksum"
            );
        }
        _ => panic!("no IP header"),
    }
    // The frame ends with the payload (no stale bytes, no padding).
    assert!(out.ends_with(&payload));
    assert!(
        payload.len() <= req.payload.len() + MAX_AMPLIFICATION,
        "amplification: {} -> {}",
        req.payload.len(),
        payload.len()
    );
    payload
}

struct Delta {
    before: Vec<u64>,
}

impl Delta {
    fn new(h: &Harness) -> Delta {
        Delta {
            before: h.counters().unwrap(),
        }
    }
    fn of(&self, h: &Harness, c: u32) -> u64 {
        h.counters().unwrap()[c as usize] - self.before[c as usize]
    }
    /// Asserts the named counters moved by exactly these amounts and every
    /// other named counter except rx_packets / sip_port_datagrams not at all.
    fn expect(&self, h: &Harness, what: &str, moved: &[(Counter, u64)]) {
        let now = h.counters().unwrap();
        for (i, value) in now.iter().enumerate().take(NAMED_COUNTERS) {
            if i == Counter::RxPackets as usize || i == Counter::SipPortDatagrams as usize {
                continue;
            }
            let want = moved
                .iter()
                .find(|(c, _)| *c as usize == i)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            assert_eq!(
                value - self.before[i],
                want,
                "{what}: counter {}",
                sip_ka::bpf::stats::counter_name(i as u32)
            );
        }
    }
}

fn harness() -> Harness {
    Harness::new().expect("loading the XDP program for BPF_PROG_TEST_RUN (needs root)")
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn crlf_ping_gets_a_pong_in_every_encapsulation() {
    let h = harness();
    let cases = [
        ("ipv4", v4(CRLF_PING)),
        ("ipv6", v6(CRLF_PING)),
        ("ipv4 + 802.1Q", v4(CRLF_PING).vlans(&[100])),
        ("ipv6 + QinQ", v6(CRLF_PING).vlans(&[10, 20])),
        ("ipv4 padded to 60 bytes", v4(CRLF_PING).pad_to(60)),
        (
            "ipv4 without UDP checksum",
            v4(CRLF_PING).udp_checksum(Checksum::Zero),
        ),
    ];
    for (name, req) in cases {
        let d = Delta::new(&h);
        let r = h.run(&req.build()).unwrap();
        assert_eq!(r.action, XDP_TX, "{name}");
        let payload = check_answer(&req, &r.packet);
        assert_eq!(payload, b"\r\n", "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::CrlfPing, 1), (Counter::CrlfPongSent, 1)],
        );
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn crlf_configuration_and_lone_crlf() {
    let mut h = harness();
    let ping = v4(CRLF_PING).build();
    let lone = v4(CRLF_PONG).build();

    let d = Delta::new(&h);
    assert_eq!(h.run(&lone).unwrap().action, XDP_DROP);
    d.expect(&h, "lone crlf", &[(Counter::CrlfLone, 1)]);

    let cfg = Config {
        udp_crlf: Action::Drop as u32,
        ..Config::DEFAULT
    };
    h.set_config(cfg).unwrap();
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping).unwrap().action, XDP_DROP);
    d.expect(
        &h,
        "udp_crlf drop",
        &[(Counter::CrlfPing, 1), (Counter::CrlfDropped, 1)],
    );

    h.set_config(Config {
        udp_crlf: Action::Pass as u32,
        lone_crlf: Action::Pass as u32,
        ..Config::DEFAULT
    })
    .unwrap();
    let d = Delta::new(&h);
    let r = h.run(&ping).unwrap();
    assert_eq!(r.action, XDP_PASS);
    assert_eq!(r.packet, ping, "passed packets are untouched");
    assert_eq!(h.run(&lone).unwrap().action, XDP_PASS);
    d.expect(
        &h,
        "pass",
        &[(Counter::CrlfPing, 1), (Counter::CrlfLone, 1)],
    );

    // An unconfigured program (the daemon has not written CONFIG) passes
    // everything and counts nothing but the packet.
    h.set_raw_config(Config {
        initialised: 0,
        ..Config::DEFAULT
    })
    .unwrap();
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping).unwrap().action, XDP_PASS);
    d.expect(&h, "unconfigured", &[]);
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn stun_binding_requests_get_verified_answers() {
    let h = harness();
    let software: &[u8] = b"sip-ka test client";
    let cases = [
        ("v4 bare", v4(&Stun::binding_request(TXID).build()), false),
        (
            "v4 fingerprint",
            v4(&Stun::binding_request(TXID).fingerprint().build()),
            true,
        ),
        ("v6 bare", v6(&Stun::binding_request(TXID).build()), false),
        (
            "v6 fingerprint",
            v6(&Stun::binding_request(TXID).fingerprint().build()),
            true,
        ),
        (
            "v4 software + fingerprint + vlan",
            v4(&Stun::binding_request(TXID)
                .attribute(ATTR_SOFTWARE, software)
                .fingerprint()
                .build())
            .vlans(&[7]),
            true,
        ),
        (
            "v6 comprehension-optional attribute",
            v6(&Stun::binding_request(TXID).attribute(0x8055, b"x").build()),
            false,
        ),
    ];
    for (name, req, fp) in cases {
        let d = Delta::new(&h);
        let r = h.run(&req.build()).unwrap();
        assert_eq!(r.action, XDP_TX, "{name}");
        let payload = check_answer(&req, &r.packet);
        // Independent decode; stun_codec verifies FINGERPRINT itself.
        let msg = MessageDecoder::<rfc5389::Attribute>::new()
            .decode_from_bytes(&payload)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|e| panic!("{name}: broken message {e:?}"));
        assert_eq!(msg.class(), MessageClass::SuccessResponse, "{name}");
        assert_eq!(msg.transaction_id().as_bytes(), &[0x5a; 12], "{name}");
        let mapped = msg
            .get_attribute::<rfc5389::attributes::XorMappedAddress>()
            .unwrap_or_else(|| panic!("{name}: no XOR-MAPPED-ADDRESS"));
        assert_eq!(mapped.address(), req.src_addr(), "{name}");
        assert_eq!(
            msg.get_attribute::<rfc5389::attributes::Fingerprint>()
                .is_some(),
            fp,
            "{name}: FINGERPRINT iff the request had one"
        );
        // The daemon's userspace responder answers with the same bytes.
        match stun::respond(&req.payload, req.src_addr()) {
            stun::Reply::Success(bytes) => assert_eq!(bytes, payload, "{name}"),
            other => panic!("{name}: userspace answered {other:?}"),
        }
        d.expect(&h, name, &[(Counter::StunReq, 1), (Counter::StunResp, 1)]);
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn classic_stun_gets_mapped_address() {
    let h = harness();
    for (name, req) in [
        (
            "classic v4",
            v4(&Stun::classic_binding_request(CLASSIC_ID).build()),
        ),
        (
            "classic v4, CHANGE-REQUEST without flags",
            v4(&Stun::classic_binding_request(CLASSIC_ID)
                .change_request(0)
                .build()),
        ),
        (
            "classic v6",
            v6(&Stun::classic_binding_request(CLASSIC_ID).build()),
        ),
    ] {
        let d = Delta::new(&h);
        let r = h.run(&req.build()).unwrap();
        assert_eq!(r.action, XDP_TX, "{name}");
        let payload = check_answer(&req, &r.packet);
        assert_eq!(&payload[0..2], &[0x01, 0x01], "{name}");
        assert_eq!(
            &payload[4..20],
            &req.payload[4..20],
            "{name}: 16-byte id echoed"
        );
        // MAPPED-ADDRESS, not XORed.
        assert_eq!(&payload[20..22], &[0x00, 0x01], "{name}");
        assert_eq!(&payload[26..28], &req.sport.to_be_bytes(), "{name}");
        match req.src {
            IpAddr::V6(src) => assert_eq!(&payload[28..44], &src.octets(), "{name}"),
            IpAddr::V4(src) => assert_eq!(&payload[28..32], &src.octets(), "{name}"),
        }
        match stun::respond(&req.payload, req.src_addr()) {
            stun::Reply::Success(bytes) => assert_eq!(bytes, payload, "{name}"),
            other => panic!("{name}: userspace answered {other:?}"),
        }
        d.expect(
            &h,
            name,
            &[(Counter::StunClassic, 1), (Counter::StunResp, 1)],
        );
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn stun_the_fast_path_cannot_serve_is_passed_or_dropped() {
    let h = harness();
    let bad_fp = Stun::binding_request(TXID).wrong_fingerprint().build();
    let wrong_len = Stun::binding_request(TXID).length_field(8).build();
    let long_software = vec![b's'; 300];
    // A correct FINGERPRINT (over a header whose length already counts
    // the attribute that follows it) and then one more attribute.
    let after_fp = Stun::binding_request(TXID)
        .fingerprint()
        .attribute(ATTR_SOFTWARE, b"abcd")
        .build();
    type Case = (&'static str, Vec<u8>, u32, Vec<(Counter, u64)>);
    let cases: Vec<Case> = vec![
        (
            "bad FINGERPRINT",
            bad_fp,
            XDP_DROP,
            vec![(Counter::StunReq, 1), (Counter::StunBadFp, 1)],
        ),
        (
            "USERNAME",
            Stun::binding_request(TXID)
                .attribute(ATTR_USERNAME, b"user")
                .fingerprint()
                .build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "MESSAGE-INTEGRITY",
            Stun::binding_request(TXID)
                .attribute(ATTR_MESSAGE_INTEGRITY, &[0u8; 20])
                .build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "unknown comprehension-required attribute",
            Stun::binding_request(TXID).attribute(0x0042, b"zz").build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "classic with change flags",
            Stun::classic_binding_request(CLASSIC_ID)
                .change_request(6)
                .build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "longer than the fast path reads",
            Stun::binding_request(TXID)
                .attribute(ATTR_SOFTWARE, &long_software)
                .fingerprint()
                .build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1), (Counter::PassTooLong, 1)],
        ),
        (
            "attribute after FINGERPRINT",
            after_fp,
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "short: 19 bytes",
            Stun::binding_request(TXID).build()[..19].to_vec(),
            XDP_PASS,
            vec![(Counter::Other, 1)],
        ),
        (
            "wrong length field",
            wrong_len,
            XDP_PASS,
            vec![(Counter::Other, 1)],
        ),
        (
            "Binding success (a response)",
            Stun::binding_request(TXID)
                .msg_type(BINDING_SUCCESS)
                .build(),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
    ];
    for (name, payload, action, moved) in cases {
        let req = v4(&payload);
        let d = Delta::new(&h);
        let bytes = req.build();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, action, "{name}");
        if action == XDP_PASS {
            assert_eq!(r.packet, bytes, "{name}: passed untouched");
        }
        d.expect(&h, name, &moved);
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn never_answer_rules_hold() {
    let mut h = harness();
    let ping = v4(CRLF_PING);
    let ping6 = v6(CRLF_PING);
    let mut mcast6 = [0u8; 16];
    mcast6[0] = 0xff;
    mcast6[1] = 0x02;
    mcast6[15] = 1;
    let mut loop6 = [0u8; 16];
    loop6[15] = 1;
    let mut mapped6 = [0u8; 16];
    mapped6[10] = 0xff;
    mapped6[11] = 0xff;
    mapped6[12..].copy_from_slice(&CLIENT_V4.octets());
    let bad_address: Vec<(&str, PacketBuilder)> = vec![
        (
            "multicast source",
            ping.clone().src_ip(Ipv4Addr::new(224, 0, 0, 1)),
        ),
        (
            "broadcast source",
            ping.clone().src_ip(Ipv4Addr::new(255, 255, 255, 255)),
        ),
        (
            "loopback source",
            ping.clone().src_ip(Ipv4Addr::new(127, 0, 0, 1)),
        ),
        (
            "unspecified source",
            ping.clone().src_ip(Ipv4Addr::new(0, 0, 0, 0)),
        ),
        ("source port 0", ping.clone().sport(0)),
        (
            "multicast destination",
            ping.clone().dst_ip(Ipv4Addr::new(239, 1, 2, 3)),
        ),
        (
            "v6 multicast source",
            ping6.clone().src_ip(Ipv6Addr::from(mcast6)),
        ),
        (
            "v6 loopback source",
            ping6.clone().src_ip(Ipv6Addr::from(loop6)),
        ),
        (
            "v6 unspecified source",
            ping6.clone().src_ip(Ipv6Addr::UNSPECIFIED),
        ),
        (
            "v6 v4-mapped source",
            ping6.clone().src_ip(Ipv6Addr::from(mapped6)),
        ),
        (
            "v6 multicast destination",
            ping6.clone().dst_ip(Ipv6Addr::from(mcast6)),
        ),
    ];
    for (name, req) in bad_address {
        let d = Delta::new(&h);
        let bytes = req.build();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}");
        assert_eq!(r.packet, bytes, "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::CrlfPing, 1), (Counter::PassBadAddress, 1)],
        );
    }

    let bad_sum: Vec<(&str, PacketBuilder)> = vec![
        (
            "bad UDP checksum",
            ping.clone().udp_checksum(Checksum::Wrong),
        ),
        (
            "bad IPv4 header checksum",
            ping.clone().ip_checksum(Checksum::Wrong),
        ),
        (
            "IPv6 with UDP checksum 0",
            ping6.clone().udp_checksum(Checksum::Zero),
        ),
        (
            "bad UDP checksum over IPv6",
            ping6.clone().udp_checksum(Checksum::Wrong),
        ),
    ];
    for (name, req) in bad_sum {
        let d = Delta::new(&h);
        let bytes = req.build();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}");
        assert_eq!(r.packet, bytes, "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::CrlfPing, 1), (Counter::PassBadChecksum, 1)],
        );
    }

    // STUN keep-alives are summed three ways (bare and FINGERPRINT
    // lengths in the program, any other length by the kernel): a wrong
    // UDP checksum stops each of them, over IPv4 and IPv6.
    let software = Stun::binding_request(TXID)
        .attribute(0x8022, b"sip-ka test")
        .fingerprint()
        .build();
    let stun_sums: Vec<(&str, PacketBuilder, u64)> = vec![
        ("STUN bare", v4(&Stun::binding_request(TXID).build()), 1),
        (
            "STUN with FINGERPRINT",
            v4(&Stun::binding_request(TXID).fingerprint().build()),
            1,
        ),
        ("STUN with SOFTWARE", v4(&software), 1),
        (
            "STUN bare over IPv6",
            v6(&Stun::binding_request(TXID).build()),
            1,
        ),
        (
            "classic STUN",
            v4(&Stun::classic_binding_request(CLASSIC_ID).build()),
            0,
        ),
    ];
    for (name, req, modern) in stun_sums {
        let good = req.clone().build();
        let d = Delta::new(&h);
        assert_eq!(h.run(&good).unwrap().action, XDP_TX, "{name}: answered");
        d.expect(
            &h,
            name,
            &[
                (Counter::StunReq, modern),
                (Counter::StunClassic, 1 - modern),
                (Counter::StunResp, 1),
            ],
        );
        let bytes = req.udp_checksum(Checksum::Wrong).build();
        let d = Delta::new(&h);
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}: bad UDP checksum");
        assert_eq!(r.packet, bytes, "{name}");
        d.expect(
            &h,
            name,
            &[
                (Counter::StunReq, modern),
                (Counter::StunClassic, 1 - modern),
                (Counter::PassBadChecksum, 1),
            ],
        );
    }

    for (name, frag) in [("more fragments", 0x2000u16), ("fragment offset", 0x0010)] {
        let d = Delta::new(&h);
        let bytes = ping.clone().flags_fragment(frag).build();
        assert_eq!(h.run(&bytes).unwrap().action, XDP_PASS, "{name}");
        d.expect(&h, name, &[(Counter::PassFragment, 1)]);
    }

    // IPv6 with an extension header (hop-by-hop) is left to the kernel.
    let d = Delta::new(&h);
    let bytes = ping6.clone().protocol(0).build();
    assert_eq!(h.run(&bytes).unwrap().action, XDP_PASS);
    d.expect(&h, "ipv6 extension header", &[]);

    // Not a SIP port: untouched, uncounted.
    let d = Delta::new(&h);
    let bytes = ping.clone().dport(5061).build();
    let r = h.run(&bytes).unwrap();
    assert_eq!((r.action, r.packet == bytes), (XDP_PASS, true));
    d.expect(&h, "other port", &[]);

    // Truncated at every length: passed (or counted malformed), never
    // answered, never a verifier-visible fault.
    for full in [
        ping.build(),
        ping6.build(),
        v4(&Stun::binding_request(TXID).fingerprint().build()).build(),
    ] {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for cut in 14..full.len() {
            let r = h.run(&full[..cut]).unwrap();
            assert_eq!(r.action, XDP_PASS, "truncated to {cut} bytes");
        }
    }
    // A UDP length larger than the IP payload.
    let mut lying = ping.build();
    let udp_len_at = 14 + 20 + 4;
    lying[udp_len_at..udp_len_at + 2].copy_from_slice(&100u16.to_be_bytes());
    let d = Delta::new(&h);
    assert_eq!(h.run(&lying).unwrap().action, XDP_PASS);
    d.expect(&h, "udp length lies", &[(Counter::PassMalformed, 1)]);

    // Rate limit: 1 answer/s per source, burst 2: the third ping in a row
    // from the same address is dropped, another address is still answered.
    h.set_config(Config {
        rate_limit_pps: 1,
        rate_limit_burst: 2,
        acl: ACL_OFF,
        ..Config::DEFAULT
    })
    .unwrap();
    let bytes = ping.build();
    assert_eq!(h.run(&bytes).unwrap().action, XDP_TX);
    assert_eq!(h.run(&bytes).unwrap().action, XDP_TX);
    let d = Delta::new(&h);
    assert_eq!(h.run(&bytes).unwrap().action, XDP_DROP);
    d.expect(
        &h,
        "rate limited",
        &[(Counter::CrlfPing, 1), (Counter::DropRateLimit, 1)],
    );
    let other = ping.clone().src_ip(Ipv4Addr::new(198, 18, 0, 9)).build();
    assert_eq!(h.run(&other).unwrap().action, XDP_TX);
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn acl_deny_and_allow_only() {
    let mut h = harness();
    let ping = v4(CRLF_PING);
    let stranger = ping.clone().src_ip(Ipv4Addr::new(203, 0, 113, 7));
    // 198.18.0.0/24 denied (IPv4 prefixes are mapped: length + 96).
    h.acl_insert(false, 96 + 24, v4_mapped([198, 18, 0, 0]))
        .unwrap();
    // Deny list present but ACL off: still answered.
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_TX);
    h.set_config(Config {
        acl: ACL_DENY,
        ..Config::DEFAULT
    })
    .unwrap();
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_DROP);
    d.expect(&h, "denied", &[(Counter::DropAcl, 1)]);
    assert_eq!(h.run(&stranger.build()).unwrap().action, XDP_TX);
    // Allow-only: 203.0.113.7/32 allowed, everything else refused.
    h.acl_insert(true, 128, v4_mapped([203, 0, 113, 7]))
        .unwrap();
    h.set_config(Config {
        acl: ACL_ALLOW_ONLY,
        ..Config::DEFAULT
    })
    .unwrap();
    assert_eq!(h.run(&stranger.build()).unwrap().action, XDP_TX);
    let other = ping.clone().src_ip(Ipv4Addr::new(203, 0, 113, 8));
    let d = Delta::new(&h);
    assert_eq!(h.run(&other.build()).unwrap().action, XDP_DROP);
    d.expect(&h, "not allowed", &[(Counter::DropAcl, 1)]);
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn sip_requests_and_responses_are_classified() {
    let h = harness();
    for m in Method::ALL {
        let name = if m == Method::Other {
            "FOOBAR"
        } else {
            m.name()
        };
        for (in_dialog, body) in [
            (false, ""),
            (true, ""),
            (false, "v=0\r\n"),
            (true, "v=0\r\n"),
        ] {
            let d = Delta::new(&h);
            let bytes = v4(&sip_request(name, in_dialog, body, "")).build();
            let r = h.run(&bytes).unwrap();
            assert_eq!(r.action, XDP_PASS, "{name}");
            assert_eq!(r.packet, bytes);
            let slot = sip_request_index(m as u32, in_dialog, !body.is_empty());
            assert_eq!(
                d.of(&h, slot),
                1,
                "{name} in_dialog={in_dialog} body={body:?}"
            );
            assert_eq!(d.of(&h, Counter::SipRequests as u32), 1);
        }
    }
    for (status, counter) in [
        ("100 Trying", Counter::Resp1xx),
        ("200 OK", Counter::Resp2xx),
        ("302 Moved", Counter::Resp3xx),
        ("481 Call/Transaction Does Not Exist", Counter::Resp4xx),
        ("503 Service Unavailable", Counter::Resp5xx),
        ("603 Decline", Counter::Resp6xx),
    ] {
        let d = Delta::new(&h);
        let msg = format!("SIP/2.0 {status}\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.run(&v4(msg.as_bytes()).build()).unwrap().action, XDP_PASS);
        d.expect(&h, status, &[(counter, 1), (Counter::SipResponses, 1)]);
    }
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"hello",
        b"invite sip:x SIP/2.0\r\n\r\n",
    ] {
        let d = Delta::new(&h);
        assert_eq!(h.run(&v4(junk).build()).unwrap().action, XDP_PASS);
        d.expect(&h, "junk", &[(Counter::Other, 1)]);
    }
    // Compact header forms: t (To), i (Call-ID), l (Content-Length).
    let compact = b"INFO sip:pbx@198.18.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 198.18.0.2\r\n\
                    f: <sip:a@b>;tag=1\r\nt: <sip:pbx@198.18.0.1>;tag=2\r\ni: abc\r\nl: 5\r\n\r\nhello";
    let d = Delta::new(&h);
    h.run(&v4(compact).build()).unwrap();
    assert_eq!(
        d.of(&h, sip_request_index(Method::Info as u32, true, true)),
        1
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn in_dialog_keepalives_are_counted_per_dialog_with_the_shared_hash() {
    let mut h = harness();
    // The daemon's hash of the Call-ID value...
    let hash = callid_hash(SIP_CALL_ID.as_bytes());
    h.insert_dialog(
        hash,
        DialogValue {
            state: DIALOG_CONFIRMED,
            ..DialogValue::default()
        },
    )
    .unwrap();
    // ...is the key the program finds for the same Call-ID on the wire,
    // whatever the header's form and spacing.
    let forms = [
        sip_request("INFO", true, "", ""),
        sip_request("UPDATE", true, "", ""),
        sip_request("OPTIONS", true, "", ""),
        sip_request("MESSAGE", true, "", ""),
        b"INFO sip:pbx SIP/2.0\r\nt: <sip:pbx>;tag=9\r\ni:   a84b4c76e66710@pc33.example  \r\nl: 0\r\n\r\n"
            .to_vec(),
        b"INFO sip:pbx SIP/2.0\r\nTO : <sip:pbx>;TAG=9\r\ncall-id:a84b4c76e66710@pc33.example\r\n\r\n"
            .to_vec(),
    ];
    for (i, msg) in forms.iter().enumerate() {
        let d = Delta::new(&h);
        assert_eq!(h.run(&v4(msg).build()).unwrap().action, XDP_PASS);
        assert_eq!(d.of(&h, Counter::KaInDialog as u32), 1, "form {i}");
        let v = h.dialog(hash).unwrap().expect("dialog still there");
        assert_eq!(v.ka_count, i as u64 + 1, "form {i}");
        assert!(v.last_ka_ns > 0);
        assert_eq!(
            v.state, DIALOG_CONFIRMED,
            "the program never touches the state"
        );
    }
    // Not keep-alives: a body, no To tag, a BYE, a re-INVITE without SDP.
    for msg in [
        sip_request("INFO", true, "Signal=1\r\n", ""),
        sip_request("INFO", false, "", ""),
        sip_request("BYE", true, "", ""),
        sip_request("INVITE", true, "", ""),
    ] {
        let d = Delta::new(&h);
        h.run(&v4(&msg).build()).unwrap();
        assert_eq!(d.of(&h, Counter::KaInDialog as u32), 0);
        assert_eq!(d.of(&h, Counter::KaUnknownDialog as u32), 0);
    }
    assert_eq!(
        h.dialog(hash).unwrap().unwrap().ka_count,
        forms.len() as u64
    );
    // An unknown Call-ID.
    let d = Delta::new(&h);
    let unknown = sip_request("INFO", true, "", "").replace_call_id();
    h.run(&v4(&unknown).build()).unwrap();
    assert_eq!(d.of(&h, Counter::KaUnknownDialog as u32), 1);
    assert_eq!(d.of(&h, Counter::KaInDialog as u32), 0);
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn ipv4_options_are_passed_never_echoed() {
    let h = harness();
    // NOPs, then a loose source route with a hop still to go (pointer 4
    // of a 7-byte option): answering would echo the route to the sender.
    let lsrr = [0x01, 0x83, 0x07, 0x04, 198, 18, 0, 77, 0, 0, 0, 0];
    let timestamp = [0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0, 0];
    for (name, options) in [
        ("router alert (IHL 7)", &timestamp[..]),
        ("LSRR", &lsrr[..]),
    ] {
        for (kind, req, moved) in [
            ("CRLF", v4(CRLF_PING), Counter::CrlfPing),
            (
                "STUN",
                v4(&Stun::binding_request(TXID).fingerprint().build()),
                Counter::StunReq,
            ),
        ] {
            let what = format!("{kind} with {name}");
            let d = Delta::new(&h);
            let bytes = req.ip_options(options).build();
            let r = h.run(&bytes).unwrap();
            assert_eq!(r.action, XDP_PASS, "{what}");
            assert_eq!(r.packet, bytes, "{what}: passed untouched");
            d.expect(&h, &what, &[(moved, 1), (Counter::PassIpOptions, 1)]);
        }
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn frames_not_for_this_host_are_never_answered() {
    let mut h = harness();
    assert_eq!(
        OWN_MAC, SERVER_MAC,
        "the harness plays the fixtures' server"
    );
    let bcast_mac = [0xff; 6];
    let mcast_mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let other_host = [0x02, 0, 0, 0, 0, 0x99];
    let stun = Stun::binding_request(TXID).build();
    let directed = Ipv4Addr::new(198, 18, 0, 255);
    let mut loop6 = [0u8; 16];
    loop6[15] = 1;
    let cases: Vec<(&str, PacketBuilder, Counter)> = vec![
        (
            "Ethernet broadcast",
            v4(CRLF_PING).macs(CLIENT_MAC, bcast_mac),
            Counter::PassEthGroup,
        ),
        (
            "directed broadcast in an Ethernet broadcast",
            v4(CRLF_PING).dst_ip(directed).macs(CLIENT_MAC, bcast_mac),
            Counter::PassEthGroup,
        ),
        (
            "Ethernet multicast, STUN",
            v4(&stun).macs(CLIENT_MAC, mcast_mac),
            Counter::PassEthGroup,
        ),
        (
            "IPv6 multicast MAC",
            v6(CRLF_PING).macs(CLIENT_MAC, [0x33, 0x33, 0, 0, 0, 1]),
            Counter::PassEthGroup,
        ),
        (
            "group source MAC",
            v4(CRLF_PING).macs(mcast_mac, SERVER_MAC),
            Counter::PassEthGroup,
        ),
        (
            "another host's MAC",
            v4(CRLF_PING).macs(CLIENT_MAC, other_host),
            Counter::PassOtherHost,
        ),
        (
            "another host's MAC, IPv6 STUN",
            v6(&stun).macs(CLIENT_MAC, other_host),
            Counter::PassOtherHost,
        ),
        (
            "another host's MAC, VLAN",
            v4(CRLF_PING).macs(CLIENT_MAC, other_host).vlans(&[100]),
            Counter::PassOtherHost,
        ),
        (
            "directed broadcast in a unicast frame",
            v4(CRLF_PING).dst_ip(directed),
            Counter::PassBadAddress,
        ),
        (
            "directed broadcast, STUN",
            v4(&stun).dst_ip(directed),
            Counter::PassBadAddress,
        ),
        (
            "limited broadcast destination",
            v4(CRLF_PING).dst_ip(Ipv4Addr::BROADCAST),
            Counter::PassBadAddress,
        ),
        (
            "unspecified destination",
            v4(CRLF_PING).dst_ip(Ipv4Addr::UNSPECIFIED),
            Counter::PassBadAddress,
        ),
        (
            "loopback destination",
            v4(CRLF_PING).dst_ip(Ipv4Addr::LOCALHOST),
            Counter::PassBadAddress,
        ),
        (
            "v6 unspecified destination",
            v6(CRLF_PING).dst_ip(Ipv6Addr::UNSPECIFIED),
            Counter::PassBadAddress,
        ),
        (
            "v6 loopback destination",
            v6(CRLF_PING).dst_ip(Ipv6Addr::from(loop6)),
            Counter::PassBadAddress,
        ),
    ];
    for (name, req, counter) in &cases {
        let seen = if req.payload == CRLF_PING {
            Counter::CrlfPing
        } else {
            Counter::StunReq
        };
        let d = Delta::new(&h);
        let bytes = req.build();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}");
        assert_eq!(r.packet, bytes, "{name}: passed untouched");
        d.expect(&h, name, &[(seen, 1), (*counter, 1)]);
    }
    // The same ping to this host's MAC and address is answered.
    assert_eq!(h.run(&v4(CRLF_PING).build()).unwrap().action, XDP_TX);

    // Every broadcast slot the daemon fills is refused.
    let mut cfg = Config::DEFAULT;
    cfg.broadcast_v4[5] = [10, 1, 255, 255];
    h.set_config(cfg).unwrap();
    let d = Delta::new(&h);
    let to_second = v4(CRLF_PING).dst_ip(Ipv4Addr::new(10, 1, 255, 255)).build();
    assert_eq!(h.run(&to_second).unwrap().action, XDP_PASS);
    d.expect(
        &h,
        "second broadcast",
        &[(Counter::CrlfPing, 1), (Counter::PassBadAddress, 1)],
    );

    // The interface's MAC not configured (all zero): nothing is answered.
    h.set_raw_config(Config::DEFAULT).unwrap();
    for req in [v4(CRLF_PING), v6(&stun)] {
        let d = Delta::new(&h);
        let bytes = req.build();
        assert_eq!(h.run(&bytes).unwrap().action, XDP_PASS);
        let seen = if req.payload == CRLF_PING {
            Counter::CrlfPing
        } else {
            Counter::StunReq
        };
        d.expect(
            &h,
            "MAC not configured",
            &[(seen, 1), (Counter::PassOtherHost, 1)],
        );
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn rate_limit_is_on_by_default_and_charged_only_for_answers() {
    assert_eq!(
        (
            Config::DEFAULT.rate_limit_pps,
            Config::DEFAULT.rate_limit_burst
        ),
        (200, 400)
    );
    let mut h = harness();
    // One source, as fast as BPF_PROG_TEST_RUN goes: the burst of 400 and
    // what 200/s refills meanwhile are answered, the rest dropped.
    let ping = v4(CRLF_PING).src_ip(Ipv4Addr::new(198, 18, 0, 5)).build();
    let d = Delta::new(&h);
    let started = std::time::Instant::now();
    let (mut tx, mut dropped) = (0u64, 0u64);
    for _ in 0..600 {
        match h.run(&ping).unwrap().action {
            XDP_TX => tx += 1,
            XDP_DROP => dropped += 1,
            other => panic!("action {other}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 200.0).ceil() as u64 + 1;
    assert!(
        (400..=400 + refill).contains(&tx),
        "{tx} answers, {dropped} drops"
    );
    assert_eq!(d.of(&h, Counter::DropRateLimit as u32), dropped);
    assert_eq!(d.of(&h, Counter::CrlfPongSent as u32), tx);

    // Packets that get no answer take no token: spoofed bad checksums,
    // frames for another host, IPv4 options, a broadcast destination.
    h.set_config(Config {
        rate_limit_pps: 1,
        rate_limit_burst: 2,
        ..Config::DEFAULT
    })
    .unwrap();
    let victim = v4(CRLF_PING).src_ip(Ipv4Addr::new(198, 18, 0, 6));
    for (name, req) in [
        (
            "bad UDP checksum",
            victim.clone().udp_checksum(Checksum::Wrong),
        ),
        (
            "bad IPv4 checksum",
            victim.clone().ip_checksum(Checksum::Wrong),
        ),
        (
            "another host's MAC",
            victim.clone().macs(CLIENT_MAC, [0x02, 0, 0, 0, 0, 0x99]),
        ),
        ("IPv4 options", victim.clone().ip_options(&[1, 1, 1, 1])),
        (
            "directed broadcast",
            victim.clone().dst_ip(Ipv4Addr::new(198, 18, 0, 255)),
        ),
    ] {
        for _ in 0..5 {
            assert_eq!(h.run(&req.build()).unwrap().action, XDP_PASS, "{name}");
        }
    }
    let good = victim.build();
    assert_eq!(h.run(&good).unwrap().action, XDP_TX, "first answer");
    assert_eq!(h.run(&good).unwrap().action, XDP_TX, "second answer");
    assert_eq!(h.run(&good).unwrap().action, XDP_DROP, "over the burst");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn token_bucket_refill_never_wraps() {
    let mut h = harness();
    // A rate the CLI refuses but the map can hold: 100 s of refill at
    // this rate plus what the bucket holds is exactly 2^64, which a
    // wrapping sum would make an empty bucket.
    let pps: u32 = 184_467_440;
    let tokens = (1u128 << 64) - 100_000_000_000u128 * pps as u128;
    h.set_config(Config {
        rate_limit_pps: pps,
        rate_limit_burst: 100,
        ..Config::DEFAULT
    })
    .unwrap();
    let src = Ipv4Addr::new(198, 18, 0, 8);
    h.set_rate(
        v4_mapped(src.octets()),
        40000,
        RateValue {
            tokens: tokens as u64,
            // Boot time: the elapsed time is capped at 100 s.
            last_ns: 0,
        },
    )
    .unwrap();
    let d = Delta::new(&h);
    let r = h.run(&v4(CRLF_PING).src_ip(src).build()).unwrap();
    assert_eq!(r.action, XDP_TX);
    d.expect(
        &h,
        "huge rate",
        &[(Counter::CrlfPing, 1), (Counter::CrlfPongSent, 1)],
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn phones_behind_one_address_have_their_own_budgets_under_its_ceiling() {
    assert_eq!(
        (
            Config::DEFAULT.rate_limit_addr_pps,
            Config::DEFAULT.rate_limit_addr_burst
        ),
        (20_000, 40_000)
    );
    let mut h = harness();
    h.set_config(Config {
        rate_limit_pps: 1,
        rate_limit_burst: 2,
        rate_limit_addr_pps: 1,
        rate_limit_addr_burst: 5,
        ..Config::DEFAULT
    })
    .unwrap();
    let nat = Ipv4Addr::new(198, 18, 0, 9);
    let phone = |port: u16| v4(CRLF_PING).src_ip(nat).sport(port).build();
    let run = |h: &Harness, port: u16| h.run(&phone(port)).unwrap().action;
    // One socket flooding is held to its own burst...
    assert_eq!(
        [run(&h, 7001), run(&h, 7001), run(&h, 7001)],
        [XDP_TX, XDP_TX, XDP_DROP]
    );
    // ...while the phone next to it, on another NAT port, is answered.
    assert_eq!([run(&h, 7002), run(&h, 7002)], [XDP_TX, XDP_TX]);
    assert_eq!(run(&h, 7003), XDP_TX, "the address's fifth answer");
    // Past the address's ceiling: refused, counted, and the refused
    // phone's own bucket is not charged for it.
    let d = Delta::new(&h);
    assert_eq!(run(&h, 7004), XDP_DROP);
    d.expect(
        &h,
        "address ceiling",
        &[(Counter::CrlfPing, 1), (Counter::DropRateLimit, 1)],
    );
    h.set_config(Config {
        rate_limit_pps: 1,
        rate_limit_burst: 2,
        rate_limit_addr_pps: 0,
        ..Config::DEFAULT
    })
    .unwrap();
    assert_eq!(
        [run(&h, 7004), run(&h, 7004), run(&h, 7004)],
        [XDP_TX, XDP_TX, XDP_DROP],
        "its whole burst is still there"
    );
}

trait ReplaceCallId {
    fn replace_call_id(self) -> Vec<u8>;
}

impl ReplaceCallId for Vec<u8> {
    fn replace_call_id(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace(SIP_CALL_ID, "no-such-dialog@x")
            .into_bytes()
    }
}

/// Found by the XDP mutation fuzzer: a frame whose source MAC is a group
/// address (broadcast, multicast) got its answer sent to that group, i.e.
/// to every host on the segment. The never-answer rules pass it (counted
/// as an Ethernet group address) after counting the keep-alive.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_group_source_mac_is_never_answered() {
    let h = harness();
    let stun = Stun::binding_request(TXID).build();
    for (name, mac) in [
        ("broadcast", [0xff; 6]),
        ("ipv4 multicast", [0x01, 0x00, 0x5e, 0, 0, 1]),
        ("ipv6 multicast", [0x33, 0x33, 0, 0, 0, 1]),
    ] {
        for req in [
            v4(CRLF_PING).macs(mac, SERVER_MAC),
            v6(CRLF_PING).macs(mac, SERVER_MAC),
            v4(&stun).macs(mac, SERVER_MAC),
        ] {
            let d = Delta::new(&h);
            let bytes = req.build();
            let r = h.run(&bytes).unwrap();
            assert_eq!(r.action, XDP_PASS, "{name}");
            assert_eq!(r.packet, bytes, "{name}: passed untouched");
            let seen = if req.payload == CRLF_PING {
                Counter::CrlfPing
            } else {
                Counter::StunReq
            };
            d.expect(&h, name, &[(seen, 1), (Counter::PassEthGroup, 1)]);
        }
    }
}

/// A spoofed in-dialog keep-alive whose IPv4 header or UDP checksum is
/// wrong (over IPv6: wrong, or zero) is counted as a SIP request but
/// moves neither the dialog's keep-alive time and count nor the PEERS
/// table; the same request with correct checksums does. Also for a SIP
/// request longer than the scan (its checksum still covers every byte).
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn bad_checksums_never_move_a_dialog() {
    let mut h = harness();
    let hash = callid_hash(SIP_CALL_ID.as_bytes());
    h.insert_dialog(
        hash,
        DialogValue {
            state: DIALOG_CONFIRMED,
            ..DialogValue::default()
        },
    )
    .unwrap();
    let info = sip_request("INFO", true, "", "");
    // Past the 1504 bytes the scan reads, still inside the copy.
    let long = sip_request(
        "UPDATE",
        true,
        "",
        &format!("X-Pad: {}\r\n", "p".repeat(1300)),
    );
    assert!((1504..2048).contains(&long.len()), "{}", long.len());
    let slot = |m: Method| sip_request_index(m as u32, true, false);
    for (name, msg, method) in [
        ("INFO", &info, Method::Info),
        ("long UPDATE", &long, Method::Update),
    ] {
        for (how, bad) in [
            ("wrong UDP checksum", v4(msg).udp_checksum(Checksum::Wrong)),
            (
                "wrong IPv4 header checksum",
                v4(msg).ip_checksum(Checksum::Wrong),
            ),
            (
                "IPv6, wrong UDP checksum",
                v6(msg).udp_checksum(Checksum::Wrong),
            ),
            (
                "IPv6, zero UDP checksum",
                v6(msg).udp_checksum(Checksum::Zero),
            ),
        ] {
            let what = format!("{name}: {how}");
            let before = h.dialog(hash).unwrap().expect("dialog");
            let peers = h.peers().unwrap();
            let d = Delta::new(&h);
            assert_eq!(h.run(&bad.build()).unwrap().action, XDP_PASS, "{what}");
            d.expect(
                &h,
                &what,
                &[(Counter::SipRequests, 1), (Counter::PassBadChecksum, 1)],
            );
            assert_eq!(d.of(&h, slot(method)), 1, "{what}: counted as a request");
            assert_eq!(
                h.dialog(hash).unwrap().expect("dialog"),
                before,
                "{what}: the dialog moved"
            );
            assert_eq!(h.peers().unwrap(), peers, "{what}: PEERS moved");
        }
        // The same request with its checksums right moves the dialog.
        let before = h.dialog(hash).unwrap().expect("dialog");
        let sip_seen = |h: &Harness| -> u64 { h.peers().unwrap().iter().map(|(_, v)| v.sip).sum() };
        let seen_before = sip_seen(&h);
        let d = Delta::new(&h);
        assert_eq!(h.run(&v4(msg).build()).unwrap().action, XDP_PASS, "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::SipRequests, 1), (Counter::KaInDialog, 1)],
        );
        let after = h.dialog(hash).unwrap().expect("dialog");
        assert_eq!(after.ka_count, before.ka_count + 1, "{name}");
        assert!(after.last_ka_ns > before.last_ka_ns, "{name}");
        assert_eq!(sip_seen(&h), seen_before + 1, "{name}: the peer is noted");
    }
}

/// PEERS is written through a per-CPU cache of recent peers: a source's
/// first keep-alive reaches PEERS at once, those of the next second wait
/// in the cache (PEERS lags by under a second), and the table readers see
/// (PEERS plus the cache, what `sip-ka peers` shows) is exact.
#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn peer_counts_read_through_the_cache_are_exact() {
    let mut h = harness();
    h.set_config(Config {
        rate_limit_pps: 0,
        rate_limit_addr_pps: 0,
        ..Config::DEFAULT
    })
    .unwrap();
    let src = Ipv4Addr::new(198, 18, 0, 9);
    let key = v4_mapped(src.octets());
    let find = |t: Vec<(sip_ka_common::maps::PeerKey, sip_ka_common::maps::PeerValue)>| {
        t.into_iter()
            .find(|(k, _)| k.addr == key && k.port == 40000)
            .map(|(_, v)| v)
    };
    for _ in 0..5 {
        let r = h.run(&v4(CRLF_PING).src_ip(src).build()).unwrap();
        assert_eq!(r.action, XDP_TX);
    }
    let written = find(h.peers_written().unwrap()).expect("in PEERS with its first ping");
    assert!((1..=5).contains(&written.crlf), "{written:?}");
    let seen = find(h.peers().unwrap()).expect("listed");
    assert_eq!((seen.crlf, seen.stun, seen.sip), (5, 0, 0), "{seen:?}");
    assert_eq!(seen.last_kind, sip_ka_common::maps::KIND_CRLF);
    assert_eq!(seen.first_seen_ns, written.first_seen_ns);
}

/// A TCP SYN from `src` to `dst` (port `dport`), built by etherparse.
fn tcp_syn(src: IpAddr, dst: IpAddr, dport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let b = b.tcp(40001, dport, 1, 64240).syn();
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).unwrap();
    out
}

fn ban_value(reason: BanReason, expires_ns: u64) -> BanValue {
    BanValue {
        expires_ns,
        reason: reason as u32,
        ..BanValue::default()
    }
}

fn drop_ban(reason: BanReason) -> Counter {
    match reason {
        BanReason::Scanner => Counter::DropBanScanner,
        BanReason::Auth => Counter::DropBanAuth,
        BanReason::Refused => Counter::DropBanRefused,
        BanReason::Flood => Counter::DropBanFlood,
        BanReason::List => Counter::DropBanList,
        BanReason::Manual => Counter::DropBanManual,
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_banned_source_is_dropped_first_over_udp_and_tcp() {
    let mut h = harness();
    let client = IpAddr::V4(CLIENT_V4);
    let server = IpAddr::V4(SERVER_V4);
    let ping = v4(CRLF_PING);
    let stun = v4(&Stun::binding_request(TXID).fingerprint().build());
    let options = v4(&sip_request("OPTIONS", false, "", ""));
    // Not banned yet: answered, passed.
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_TX);
    assert_eq!(
        h.run(&tcp_syn(client, server, 5060)).unwrap().action,
        XDP_PASS
    );
    h.ban(
        128,
        v4_mapped(CLIENT_V4.octets()),
        ban_value(BanReason::Auth, BAN_FOREVER),
    )
    .unwrap();
    let d = Delta::new(&h);
    for pkt in [ping.build(), stun.build(), options.build()] {
        assert_eq!(h.run(&pkt).unwrap().action, XDP_DROP);
    }
    // TCP to the SIP port: the handshake never reaches the stack.
    assert_eq!(
        h.run(&tcp_syn(client, server, 5060)).unwrap().action,
        XDP_DROP
    );
    d.expect(&h, "banned", &[(Counter::DropBanAuth, 4)]);
    // Not a SIP port: none of the program's business, banned or not.
    let d = Delta::new(&h);
    assert_eq!(
        h.run(&tcp_syn(client, server, 443)).unwrap().action,
        XDP_PASS
    );
    assert_eq!(
        h.run(&ping.clone().dport(9999).build()).unwrap().action,
        XDP_PASS
    );
    d.expect(&h, "other ports", &[]);
    // Another source of the same subnet is answered as before.
    let neighbour = ping.clone().src_ip(Ipv4Addr::new(198, 18, 0, 3));
    assert_eq!(h.run(&neighbour.build()).unwrap().action, XDP_TX);
    // Each reason has its counter; a prefix bans everything inside it.
    h.unban(128, v4_mapped(CLIENT_V4.octets())).unwrap();
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_TX);
    for reason in BanReason::ALL {
        h.ban(
            96 + 16,
            v4_mapped([198, 18, 0, 0]),
            ban_value(reason, BAN_FOREVER),
        )
        .unwrap();
        let d = Delta::new(&h);
        assert_eq!(h.run(&neighbour.build()).unwrap().action, XDP_DROP);
        d.expect(&h, reason.name(), &[(drop_ban(reason), 1)]);
    }
    h.unban(96 + 16, v4_mapped([198, 18, 0, 0])).unwrap();
    // IPv6: a /64 ban covers every address inside it, not the next /64.
    let v6_ping = v6(CRLF_PING);
    let mut net = CLIENT_V6.octets();
    net[8..].fill(0);
    h.ban(64, net, ban_value(BanReason::Scanner, BAN_FOREVER))
        .unwrap();
    let mut inside = CLIENT_V6.octets();
    inside[15] ^= 0x55;
    inside[9] ^= 0x0f;
    let mut outside = CLIENT_V6.octets();
    outside[7] ^= 1;
    let d = Delta::new(&h);
    assert_eq!(h.run(&v6_ping.build()).unwrap().action, XDP_DROP);
    assert_eq!(
        h.run(&v6_ping.clone().src_ip(Ipv6Addr::from(inside)).build())
            .unwrap()
            .action,
        XDP_DROP
    );
    let v6_client = IpAddr::V6(CLIENT_V6);
    assert_eq!(
        h.run(&tcp_syn(v6_client, IpAddr::V6(SERVER_V6), 5060))
            .unwrap()
            .action,
        XDP_DROP
    );
    d.expect(&h, "ipv6 /64", &[(Counter::DropBanScanner, 3)]);
    assert_eq!(
        h.run(&v6_ping.clone().src_ip(Ipv6Addr::from(outside)).build())
            .unwrap()
            .action,
        XDP_TX
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_ban_lifts_on_time_with_no_daemon() {
    let mut h = harness();
    let ping = v4(CRLF_PING);
    let now = sip_ka::util::clock::monotonic_ns();
    // Lifted 50 ms ago (the program reads the tick-grained clock, at most
    // a tick behind): answered.
    h.ban(
        128,
        v4_mapped(CLIENT_V4.octets()),
        ban_value(BanReason::Flood, now - 50_000_000),
    )
    .unwrap();
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_TX);
    // In force for 300 ms more: dropped now, answered once it is over,
    // though the entry is still in the map.
    let until = sip_ka::util::clock::monotonic_ns() + 300_000_000;
    h.ban(
        128,
        v4_mapped(CLIENT_V4.octets()),
        ban_value(BanReason::Flood, until),
    )
    .unwrap();
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_DROP);
    d.expect(&h, "in force", &[(Counter::DropBanFlood, 1)]);
    // The program's clock is tick-grained: wait past a tick more.
    std::thread::sleep(std::time::Duration::from_millis(350));
    assert!(sip_ka::util::clock::monotonic_ns() > until);
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping.build()).unwrap().action, XDP_TX);
    d.expect(
        &h,
        "lifted",
        &[(Counter::CrlfPing, 1), (Counter::CrlfPongSent, 1)],
    );
}
