//! Fixtures for the XDP program through BPF_PROG_TEST_RUN (Katran style):
//! an input packet, the expected action, and for answers the expected
//! output packet, checked by independent parsers (etherparse for the
//! headers and checksums, stun_codec for STUN, FINGERPRINT included).
//!
//! Needs root: BPF_PROG_TEST_RUN and pinning maps under /sys/fs/bpf.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytecodec::DecodeExt as _;
use etherparse::{NetHeaders, PacketHeaders, TransportHeader, UdpHeader};
use sip_ka::{
    bpf::test_run::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    responder::stun,
};
use sip_ka_common::{
    callid_hash,
    config::{ACL_ALLOW_ONLY, ACL_DENY, ACL_OFF},
    counters::{sip_request_index, NAMED_COUNTERS},
    maps::{v4_mapped, DialogValue, DIALOG_CONFIRMED},
    sip::Method,
    stun::{crc32, FINGERPRINT_XOR, MAGIC_COOKIE_BYTES, MAX_AMPLIFICATION},
    Action, Config, Counter,
};
use stun_codec::{rfc5389, MessageClass, MessageDecoder};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT4: [u8; 4] = [198, 18, 0, 2];
const SERVER4: [u8; 4] = [198, 18, 0, 1];
const CLIENT6: [u8; 16] = [0xfd, 0, 0, 0x5a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER6: [u8; 16] = [0xfd, 0, 0, 0x5a, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

#[derive(Clone, Copy, PartialEq)]
enum UdpSum {
    Good,
    Zero,
    Bad,
}

/// A test packet, written out by `bytes()` with correct checksums unless
/// told otherwise.
#[derive(Clone)]
struct Pkt {
    vlans: Vec<u16>,
    v6: bool,
    src4: [u8; 4],
    dst4: [u8; 4],
    src6: [u8; 16],
    dst6: [u8; 16],
    sport: u16,
    dport: u16,
    ip_options: Vec<u8>,
    /// IPv4 flags+fragment offset field.
    frag: u16,
    /// IPv6 next header (17 = UDP directly).
    next_header: u8,
    udp_sum: UdpSum,
    bad_ip_sum: bool,
    /// Pad the frame with zeros to this length (Ethernet minimum frames).
    pad_to: usize,
    payload: Vec<u8>,
}

impl Pkt {
    fn v4(payload: &[u8]) -> Pkt {
        Pkt {
            vlans: vec![],
            v6: false,
            src4: CLIENT4,
            dst4: SERVER4,
            src6: CLIENT6,
            dst6: SERVER6,
            sport: 40000,
            dport: 5060,
            ip_options: vec![],
            frag: 0x4000, // DF
            next_header: 17,
            udp_sum: UdpSum::Good,
            bad_ip_sum: false,
            pad_to: 0,
            payload: payload.to_vec(),
        }
    }

    fn v6(payload: &[u8]) -> Pkt {
        Pkt {
            v6: true,
            ..Pkt::v4(payload)
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Pkt)) -> Pkt {
        f(&mut self);
        self
    }

    fn src(&self) -> SocketAddr {
        let ip = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.src6))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.src4))
        };
        SocketAddr::new(ip, self.sport)
    }

    fn bytes(&self) -> Vec<u8> {
        let udp_len = 8 + self.payload.len();
        let mut udp = UdpHeader {
            source_port: self.sport,
            destination_port: self.dport,
            length: udp_len as u16,
            checksum: 0,
        };
        let mut out = Vec::new();
        out.extend_from_slice(&SERVER_MAC);
        out.extend_from_slice(&CLIENT_MAC);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid: u16 = if i == 0 && self.vlans.len() == 2 {
                0x88a8
            } else {
                0x8100
            };
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&vid.to_be_bytes());
        }
        if self.v6 {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            udp.checksum = udp
                .calc_checksum_ipv6_raw(self.src6, self.dst6, &self.payload)
                .unwrap();
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(udp_len as u16).to_be_bytes());
            out.push(self.next_header);
            out.push(64);
            out.extend_from_slice(&self.src6);
            out.extend_from_slice(&self.dst6);
        } else {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            udp.checksum = udp
                .calc_checksum_ipv4_raw(self.src4, self.dst4, &self.payload)
                .unwrap();
            let ihl = 20 + self.ip_options.len();
            assert_eq!(ihl % 4, 0);
            let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
            ip.extend_from_slice(&((ihl + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34]);
            ip.extend_from_slice(&self.frag.to_be_bytes());
            ip.extend_from_slice(&[64, 17, 0, 0]);
            ip.extend_from_slice(&self.src4);
            ip.extend_from_slice(&self.dst4);
            ip.extend_from_slice(&self.ip_options);
            let mut sum = ip_checksum(&ip);
            if self.bad_ip_sum {
                sum ^= 0x0101;
            }
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        match self.udp_sum {
            UdpSum::Good => {}
            UdpSum::Zero => udp.checksum = 0,
            UdpSum::Bad => udp.checksum ^= 0x0101,
        }
        out.extend_from_slice(&udp.to_bytes());
        out.extend_from_slice(&self.payload);
        while out.len() < self.pad_to {
            out.push(0);
        }
        out
    }
}

/// RFC 1071 over a header (test-side, independent of the program).
fn ip_checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Checks an answer packet against its request with etherparse: MACs,
/// addresses and ports swapped, lengths and both checksums right, VLAN
/// tags kept. Returns the UDP payload.
fn check_answer(req: &Pkt, out: &[u8]) -> Vec<u8> {
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
            assert!(!req.v6);
            assert_eq!(ip.source, req.dst4);
            assert_eq!(ip.destination, req.src4);
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
            assert!(req.v6);
            assert_eq!(ip.source, req.dst6);
            assert_eq!(ip.destination, req.src6);
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

fn stun_request(attrs: &[(u16, &[u8])], fingerprint: bool, modern: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in attrs {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
        while body.len() % 4 != 0 {
            body.push(0);
        }
    }
    let mut msg = vec![0x00, 0x01, 0, 0];
    if modern {
        msg.extend_from_slice(&MAGIC_COOKIE_BYTES);
    } else {
        msg.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    }
    msg.extend_from_slice(&[0x5a; 12]);
    msg.extend_from_slice(&body);
    let len = body.len() + if fingerprint { 8 } else { 0 };
    msg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    if fingerprint {
        let fp = crc32(&msg) ^ FINGERPRINT_XOR;
        msg.extend_from_slice(&[0x80, 0x28, 0, 4]);
        msg.extend_from_slice(&fp.to_be_bytes());
    }
    msg
}

#[test]
fn crlf_ping_gets_a_pong_in_every_encapsulation() {
    let h = harness();
    let cases = [
        ("ipv4", Pkt::v4(b"\r\n\r\n")),
        ("ipv6", Pkt::v6(b"\r\n\r\n")),
        (
            "ipv4 + 802.1Q",
            Pkt::v4(b"\r\n\r\n").with(|p| p.vlans = vec![100]),
        ),
        (
            "ipv6 + QinQ",
            Pkt::v6(b"\r\n\r\n").with(|p| p.vlans = vec![10, 20]),
        ),
        (
            "ipv4 with options (IHL 7)",
            Pkt::v4(b"\r\n\r\n")
                .with(|p| p.ip_options = vec![0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0, 0]),
        ),
        (
            "ipv4 padded to 60 bytes",
            Pkt::v4(b"\r\n\r\n").with(|p| p.pad_to = 60),
        ),
        (
            "ipv4 without UDP checksum",
            Pkt::v4(b"\r\n\r\n").with(|p| p.udp_sum = UdpSum::Zero),
        ),
    ];
    for (name, req) in cases {
        let d = Delta::new(&h);
        let r = h.run(&req.bytes()).unwrap();
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
fn crlf_configuration_and_lone_crlf() {
    let mut h = harness();
    let ping = Pkt::v4(b"\r\n\r\n").bytes();
    let lone = Pkt::v4(b"\r\n").bytes();

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
fn stun_binding_requests_get_verified_answers() {
    let h = harness();
    let software: &[u8] = b"sip-ka test client";
    let cases = [
        ("v4 bare", Pkt::v4(&stun_request(&[], false, true)), false),
        (
            "v4 fingerprint",
            Pkt::v4(&stun_request(&[], true, true)),
            true,
        ),
        ("v6 bare", Pkt::v6(&stun_request(&[], false, true)), false),
        (
            "v6 fingerprint",
            Pkt::v6(&stun_request(&[], true, true)),
            true,
        ),
        (
            "v4 software + fingerprint + vlan",
            Pkt::v4(&stun_request(&[(0x8022, software)], true, true)).with(|p| p.vlans = vec![7]),
            true,
        ),
        (
            "v6 comprehension-optional attribute",
            Pkt::v6(&stun_request(&[(0x8055, b"x")], false, true)),
            false,
        ),
    ];
    for (name, req, fp) in cases {
        let d = Delta::new(&h);
        let r = h.run(&req.bytes()).unwrap();
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
        assert_eq!(mapped.address(), req.src(), "{name}");
        assert_eq!(
            msg.get_attribute::<rfc5389::attributes::Fingerprint>()
                .is_some(),
            fp,
            "{name}: FINGERPRINT iff the request had one"
        );
        // The daemon's userspace responder answers with the same bytes.
        match stun::respond(&req.payload, req.src()) {
            stun::Reply::Success(bytes) => assert_eq!(bytes, payload, "{name}"),
            other => panic!("{name}: userspace answered {other:?}"),
        }
        d.expect(&h, name, &[(Counter::StunReq, 1), (Counter::StunResp, 1)]);
    }
}

#[test]
fn classic_stun_gets_mapped_address() {
    let h = harness();
    for (name, req) in [
        ("classic v4", Pkt::v4(&stun_request(&[], false, false))),
        (
            "classic v4, CHANGE-REQUEST without flags",
            Pkt::v4(&stun_request(&[(0x0003, &[0, 0, 0, 0])], false, false)),
        ),
        ("classic v6", Pkt::v6(&stun_request(&[], false, false))),
    ] {
        let d = Delta::new(&h);
        let r = h.run(&req.bytes()).unwrap();
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
        if req.v6 {
            assert_eq!(&payload[28..44], &req.src6, "{name}");
        } else {
            assert_eq!(&payload[28..32], &req.src4, "{name}");
        }
        match stun::respond(&req.payload, req.src()) {
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
fn stun_the_fast_path_cannot_serve_is_passed_or_dropped() {
    let h = harness();
    let mut bad_fp = stun_request(&[], true, true);
    let n = bad_fp.len();
    bad_fp[n - 1] ^= 0xff;
    let mut wrong_len = stun_request(&[], false, true);
    wrong_len[3] = 8;
    let long_software = vec![b's'; 300];
    // A correct FINGERPRINT (over a header whose length already counts
    // the attribute that follows it) and then one more attribute.
    let after_fp = {
        let mut m = stun_request(&[], false, true);
        m[2..4].copy_from_slice(&16u16.to_be_bytes());
        let fp = crc32(&m) ^ FINGERPRINT_XOR;
        m.extend_from_slice(&[0x80, 0x28, 0, 4]);
        m.extend_from_slice(&fp.to_be_bytes());
        m.extend_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        m
    };
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
            stun_request(&[(0x0006, b"user")], true, true),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "MESSAGE-INTEGRITY",
            stun_request(&[(0x0008, &[0u8; 20])], false, true),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "unknown comprehension-required attribute",
            stun_request(&[(0x0042, b"zz")], false, true),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "classic with change flags",
            stun_request(&[(0x0003, &[0, 0, 0, 6])], false, false),
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
        (
            "longer than the fast path reads",
            stun_request(&[(0x8022, &long_software)], true, true),
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
            stun_request(&[], false, true)[..19].to_vec(),
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
            {
                let mut m = stun_request(&[], false, true);
                m[0] = 0x01;
                m[1] = 0x01;
                m
            },
            XDP_PASS,
            vec![(Counter::StunPassed, 1)],
        ),
    ];
    for (name, payload, action, moved) in cases {
        let req = Pkt::v4(&payload);
        let d = Delta::new(&h);
        let bytes = req.bytes();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, action, "{name}");
        if action == XDP_PASS {
            assert_eq!(r.packet, bytes, "{name}: passed untouched");
        }
        d.expect(&h, name, &moved);
    }
}

#[test]
fn never_answer_rules_hold() {
    let mut h = harness();
    let ping = Pkt::v4(b"\r\n\r\n");
    let ping6 = Pkt::v6(b"\r\n\r\n");
    let mut mcast6 = [0u8; 16];
    mcast6[0] = 0xff;
    mcast6[1] = 0x02;
    mcast6[15] = 1;
    let mut loop6 = [0u8; 16];
    loop6[15] = 1;
    let mut mapped6 = [0u8; 16];
    mapped6[10] = 0xff;
    mapped6[11] = 0xff;
    mapped6[12..].copy_from_slice(&CLIENT4);
    let bad_address: Vec<(&str, Pkt)> = vec![
        (
            "multicast source",
            ping.clone().with(|p| p.src4 = [224, 0, 0, 1]),
        ),
        (
            "broadcast source",
            ping.clone().with(|p| p.src4 = [255, 255, 255, 255]),
        ),
        (
            "loopback source",
            ping.clone().with(|p| p.src4 = [127, 0, 0, 1]),
        ),
        (
            "unspecified source",
            ping.clone().with(|p| p.src4 = [0, 0, 0, 0]),
        ),
        ("source port 0", ping.clone().with(|p| p.sport = 0)),
        (
            "multicast destination",
            ping.clone().with(|p| p.dst4 = [239, 1, 2, 3]),
        ),
        (
            "v6 multicast source",
            ping6.clone().with(|p| p.src6 = mcast6),
        ),
        ("v6 loopback source", ping6.clone().with(|p| p.src6 = loop6)),
        (
            "v6 unspecified source",
            ping6.clone().with(|p| p.src6 = [0; 16]),
        ),
        (
            "v6 v4-mapped source",
            ping6.clone().with(|p| p.src6 = mapped6),
        ),
        (
            "v6 multicast destination",
            ping6.clone().with(|p| p.dst6 = mcast6),
        ),
    ];
    for (name, req) in bad_address {
        let d = Delta::new(&h);
        let bytes = req.bytes();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}");
        assert_eq!(r.packet, bytes, "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::CrlfPing, 1), (Counter::PassBadAddress, 1)],
        );
    }

    let bad_sum: Vec<(&str, Pkt)> = vec![
        (
            "bad UDP checksum",
            ping.clone().with(|p| p.udp_sum = UdpSum::Bad),
        ),
        (
            "bad IPv4 header checksum",
            ping.clone().with(|p| p.bad_ip_sum = true),
        ),
        (
            "IPv6 with UDP checksum 0",
            ping6.clone().with(|p| p.udp_sum = UdpSum::Zero),
        ),
        (
            "bad UDP checksum over IPv6",
            ping6.clone().with(|p| p.udp_sum = UdpSum::Bad),
        ),
    ];
    for (name, req) in bad_sum {
        let d = Delta::new(&h);
        let bytes = req.bytes();
        let r = h.run(&bytes).unwrap();
        assert_eq!(r.action, XDP_PASS, "{name}");
        assert_eq!(r.packet, bytes, "{name}");
        d.expect(
            &h,
            name,
            &[(Counter::CrlfPing, 1), (Counter::PassBadChecksum, 1)],
        );
    }

    for (name, frag) in [("more fragments", 0x2000u16), ("fragment offset", 0x0010)] {
        let d = Delta::new(&h);
        let bytes = ping.clone().with(|p| p.frag = frag).bytes();
        assert_eq!(h.run(&bytes).unwrap().action, XDP_PASS, "{name}");
        d.expect(&h, name, &[(Counter::PassFragment, 1)]);
    }

    // IPv6 with an extension header (hop-by-hop) is left to the kernel.
    let d = Delta::new(&h);
    let bytes = ping6.clone().with(|p| p.next_header = 0).bytes();
    assert_eq!(h.run(&bytes).unwrap().action, XDP_PASS);
    d.expect(&h, "ipv6 extension header", &[]);

    // Not a SIP port: untouched, uncounted.
    let d = Delta::new(&h);
    let bytes = ping.clone().with(|p| p.dport = 5061).bytes();
    let r = h.run(&bytes).unwrap();
    assert_eq!((r.action, r.packet == bytes), (XDP_PASS, true));
    d.expect(&h, "other port", &[]);

    // Truncated at every length: passed (or counted malformed), never
    // answered, never a verifier-visible fault.
    for full in [
        ping.bytes(),
        ping6.bytes(),
        Pkt::v4(&stun_request(&[], true, true)).bytes(),
    ] {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for cut in 14..full.len() {
            let r = h.run(&full[..cut]).unwrap();
            assert_eq!(r.action, XDP_PASS, "truncated to {cut} bytes");
        }
    }
    // A UDP length larger than the IP payload.
    let mut lying = ping.bytes();
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
    let bytes = ping.bytes();
    assert_eq!(h.run(&bytes).unwrap().action, XDP_TX);
    assert_eq!(h.run(&bytes).unwrap().action, XDP_TX);
    let d = Delta::new(&h);
    assert_eq!(h.run(&bytes).unwrap().action, XDP_DROP);
    d.expect(
        &h,
        "rate limited",
        &[(Counter::CrlfPing, 1), (Counter::DropRateLimit, 1)],
    );
    let other = ping.clone().with(|p| p.src4 = [198, 18, 0, 9]).bytes();
    assert_eq!(h.run(&other).unwrap().action, XDP_TX);
}

#[test]
fn acl_deny_and_allow_only() {
    let mut h = harness();
    let ping = Pkt::v4(b"\r\n\r\n");
    let stranger = ping.clone().with(|p| p.src4 = [203, 0, 113, 7]);
    // 198.18.0.0/24 denied (IPv4 prefixes are mapped: length + 96).
    h.acl_insert(false, 96 + 24, v4_mapped([198, 18, 0, 0]))
        .unwrap();
    // Deny list present but ACL off: still answered.
    assert_eq!(h.run(&ping.bytes()).unwrap().action, XDP_TX);
    h.set_config(Config {
        acl: ACL_DENY,
        ..Config::DEFAULT
    })
    .unwrap();
    let d = Delta::new(&h);
    assert_eq!(h.run(&ping.bytes()).unwrap().action, XDP_DROP);
    d.expect(&h, "denied", &[(Counter::DropAcl, 1)]);
    assert_eq!(h.run(&stranger.bytes()).unwrap().action, XDP_TX);
    // Allow-only: 203.0.113.7/32 allowed, everything else refused.
    h.acl_insert(true, 128, v4_mapped([203, 0, 113, 7]))
        .unwrap();
    h.set_config(Config {
        acl: ACL_ALLOW_ONLY,
        ..Config::DEFAULT
    })
    .unwrap();
    assert_eq!(h.run(&stranger.bytes()).unwrap().action, XDP_TX);
    let other = ping.clone().with(|p| p.src4 = [203, 0, 113, 8]);
    let d = Delta::new(&h);
    assert_eq!(h.run(&other.bytes()).unwrap().action, XDP_DROP);
    d.expect(&h, "not allowed", &[(Counter::DropAcl, 1)]);
}

fn sip(method: &str, to_tag: bool, body: &str, extra: &str) -> Vec<u8> {
    let tag = if to_tag { ";tag=as83kd" } else { "" };
    format!(
        "{method} sip:pbx@198.18.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:40000;branch=z9hG4bK776asdhds;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@198.18.0.2>;tag=1928301774\r\n\
         To: <sip:pbx@198.18.0.1>{tag}\r\n\
         Call-ID: a84b4c76e66710@pc33.example\r\n\
         CSeq: 314159 {method}\r\n\
         {extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
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
            let bytes = Pkt::v4(&sip(name, in_dialog, body, "")).bytes();
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
        assert_eq!(
            h.run(&Pkt::v4(msg.as_bytes()).bytes()).unwrap().action,
            XDP_PASS
        );
        d.expect(&h, status, &[(counter, 1), (Counter::SipResponses, 1)]);
    }
    for junk in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"hello",
        b"invite sip:x SIP/2.0\r\n\r\n",
    ] {
        let d = Delta::new(&h);
        assert_eq!(h.run(&Pkt::v4(junk).bytes()).unwrap().action, XDP_PASS);
        d.expect(&h, "junk", &[(Counter::Other, 1)]);
    }
    // Compact header forms: t (To), i (Call-ID), l (Content-Length).
    let compact = b"INFO sip:pbx@198.18.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 198.18.0.2\r\n\
                    f: <sip:a@b>;tag=1\r\nt: <sip:pbx@198.18.0.1>;tag=2\r\ni: abc\r\nl: 5\r\n\r\nhello";
    let d = Delta::new(&h);
    h.run(&Pkt::v4(compact).bytes()).unwrap();
    assert_eq!(
        d.of(&h, sip_request_index(Method::Info as u32, true, true)),
        1
    );
}

#[test]
fn in_dialog_keepalives_are_counted_per_dialog_with_the_shared_hash() {
    let mut h = harness();
    // The daemon's hash of the Call-ID value...
    let hash = callid_hash(b"a84b4c76e66710@pc33.example");
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
        sip("INFO", true, "", ""),
        sip("UPDATE", true, "", ""),
        sip("OPTIONS", true, "", ""),
        sip("MESSAGE", true, "", ""),
        b"INFO sip:pbx SIP/2.0\r\nt: <sip:pbx>;tag=9\r\ni:   a84b4c76e66710@pc33.example  \r\nl: 0\r\n\r\n"
            .to_vec(),
        b"INFO sip:pbx SIP/2.0\r\nTO : <sip:pbx>;TAG=9\r\ncall-id:a84b4c76e66710@pc33.example\r\n\r\n"
            .to_vec(),
    ];
    for (i, msg) in forms.iter().enumerate() {
        let d = Delta::new(&h);
        assert_eq!(h.run(&Pkt::v4(msg).bytes()).unwrap().action, XDP_PASS);
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
        sip("INFO", true, "Signal=1\r\n", ""),
        sip("INFO", false, "", ""),
        sip("BYE", true, "", ""),
        sip("INVITE", true, "", ""),
    ] {
        let d = Delta::new(&h);
        h.run(&Pkt::v4(&msg).bytes()).unwrap();
        assert_eq!(d.of(&h, Counter::KaInDialog as u32), 0);
        assert_eq!(d.of(&h, Counter::KaUnknownDialog as u32), 0);
    }
    assert_eq!(
        h.dialog(hash).unwrap().unwrap().ka_count,
        forms.len() as u64
    );
    // An unknown Call-ID.
    let d = Delta::new(&h);
    let unknown = sip("INFO", true, "", "").replace_call_id();
    h.run(&Pkt::v4(&unknown).bytes()).unwrap();
    assert_eq!(d.of(&h, Counter::KaUnknownDialog as u32), 1);
    assert_eq!(d.of(&h, Counter::KaInDialog as u32), 0);
}

trait ReplaceCallId {
    fn replace_call_id(self) -> Vec<u8>;
}

impl ReplaceCallId for Vec<u8> {
    fn replace_call_id(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replace("a84b4c76e66710@pc33.example", "no-such-dialog@x")
            .into_bytes()
    }
}
