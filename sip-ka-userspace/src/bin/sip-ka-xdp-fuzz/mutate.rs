//! Packets to push through the program: valid seeds (CRLF pings, STUN
//! modern and classic, SIP requests; IPv4 and IPv6; VLAN tags), changed
//! field by field (address classes, denied sources, ports, lengths,
//! options) and then byte by byte (flips, truncation, stray bytes, length
//! fields), with the checksums made right again half of the time so the
//! mutants reach the answer path rather than stop at the checksum check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sip_ka::lab::{
    packet::{sip_request, PacketBuilder, Stun, CRLF_PING, CRLF_PONG},
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};
use sip_ka_common::stun::{ATTR_FINGERPRINT, ATTR_SOFTWARE, ATTR_USERNAME};

use crate::rules::{fold, sum};

/// xorshift64*: deterministic from the printed seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so seed 0 works too.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// Sources in the deny list the fuzzer configures (see `main.rs`).
pub const DENIED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
pub const DENIED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0);

fn payloads(rng: &mut Rng) -> Vec<u8> {
    let txid: [u8; 12] = std::array::from_fn(|_| rng.byte());
    let classic: [u8; 16] = std::array::from_fn(|_| rng.byte());
    match rng.below(14) {
        0..=2 => CRLF_PING.to_vec(),
        3 => CRLF_PONG.to_vec(),
        4 => Stun::binding_request(txid).build(),
        5 => Stun::binding_request(txid).fingerprint().build(),
        6 => Stun::binding_request(txid)
            .software("sip-ka fuzz")
            .fingerprint()
            .build(),
        7 => Stun::classic_binding_request(classic).build(),
        8 => Stun::classic_binding_request(classic)
            .change_request(rng.pick(&[0, 2, 4, 6]))
            .build(),
        9 => Stun::binding_request(txid)
            .attribute(ATTR_USERNAME, b"user:peer")
            .build(),
        10 => Stun::binding_request(txid)
            .attribute(rng.next() as u16, &[rng.byte(); 5])
            .fingerprint()
            .build(),
        11 => sip_request("OPTIONS", rng.chance(50), "", ""),
        12 => sip_request(
            ["INVITE", "REGISTER", "NOTIFY", "INFO", "BYE"][rng.below(5)],
            rng.chance(50),
            if rng.chance(50) { "v=0\r\n" } else { "" },
            "",
        ),
        _ => (0..rng.below(64)).map(|_| rng.byte()).collect(),
    }
}

/// An address of a class the program must never answer, or one the ACL
/// denies, or an ordinary one.
fn source_v4(rng: &mut Rng) -> Ipv4Addr {
    match rng.below(10) {
        0 => Ipv4Addr::new(224, 0, 0, rng.byte()),
        1 => Ipv4Addr::new(239, rng.byte(), rng.byte(), rng.byte()),
        2 => Ipv4Addr::BROADCAST,
        3 => Ipv4Addr::new(127, 0, 0, rng.byte()),
        4 => Ipv4Addr::UNSPECIFIED,
        5 => Ipv4Addr::new(0, rng.byte(), rng.byte(), rng.byte()),
        6 | 7 => Ipv4Addr::new(198, 51, 100, rng.byte()),
        8 => Ipv4Addr::new(rng.byte(), rng.byte(), rng.byte(), rng.byte()),
        _ => CLIENT_V4,
    }
}

fn source_v6(rng: &mut Rng) -> Ipv6Addr {
    let any = rng.next() as u16;
    match rng.below(9) {
        0 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        1 => Ipv6Addr::new(0xff00 | (any & 0xff), 0, 0, 0, 0, 0, 0, any),
        2 => Ipv6Addr::LOCALHOST,
        3 => Ipv6Addr::UNSPECIFIED,
        4 => Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped(),
        5 => source_v4(rng).to_ipv6_mapped(),
        6 | 7 => Ipv6Addr::new(0x2001, 0xdb8, 0xbad, any, 0, 0, 0, 7),
        _ => CLIENT_V6,
    }
}

/// A valid frame, then changed field by field (the builder keeps lengths
/// and checksums right).
pub fn structured(rng: &mut Rng) -> PacketBuilder {
    let payload = payloads(rng);
    let v6 = rng.chance(40);
    let mut b = if v6 {
        PacketBuilder::udp6(CLIENT_V6, 40000, SERVER_V6, 5060, &payload)
    } else {
        PacketBuilder::udp4(CLIENT_V4, 40000, SERVER_V4, 5060, &payload)
    };
    if rng.chance(25) {
        let tags: Vec<u16> = (0..1 + rng.below(3))
            .map(|_| rng.next() as u16 & 0xfff)
            .collect();
        b = b.vlans(&tags);
    }
    if rng.chance(40) {
        b = if v6 {
            b.src_ip(source_v6(rng))
        } else {
            b.src_ip(source_v4(rng))
        };
    }
    if rng.chance(10) {
        b = b.dst_ip(if v6 {
            IpAddr::V6(source_v6(rng))
        } else {
            IpAddr::V4(source_v4(rng))
        });
    }
    if rng.chance(15) {
        b = b.sport({
            let any = rng.next() as u16;
            rng.pick(&[0, 1, 5060, 65535, any])
        });
    }
    if rng.chance(5) {
        b = b.dport({
            let any = rng.next() as u16;
            rng.pick(&[0, 5061, 5080, any])
        });
    }
    if rng.chance(10) {
        let mut mac = [rng.byte(), rng.byte(), 0, 0, 0, rng.byte()];
        if rng.chance(50) {
            mac[0] |= 1;
        }
        b.src_mac = if rng.chance(30) { [0xff; 6] } else { mac };
    }
    if !v6 && rng.chance(10) {
        let n = 4 * (1 + rng.below(10));
        let opts: Vec<u8> = (0..n)
            .map(|_| {
                let any = rng.byte();
                rng.pick(&[0, 1, 0x83, 0x89, 0x94, any])
            })
            .collect();
        b = b.ip_options(&opts);
    }
    if !v6 && rng.chance(5) {
        b = b.flags_fragment({
            let any = rng.next() as u16;
            rng.pick(&[0x2000, 0x0001, 0x1fff, any])
        });
    }
    if rng.chance(5) {
        b = b.protocol({
            let any = rng.byte();
            rng.pick(&[6, 0, 44, 43, 60, any])
        });
    }
    if rng.chance(5) {
        b = b.udp_length({
            let any = rng.next() as u16;
            rng.pick(&[0, 7, 8, 9, 0xffff, any])
        });
    }
    if rng.chance(10) {
        b = b.pad_to(60 + rng.below(40));
    }
    if rng.chance(10) {
        b.ttl = rng.byte();
    }
    b
}

/// Offsets of the length fields in a frame built from `b`.
fn length_fields(b: &PacketBuilder) -> Vec<usize> {
    let l3 = 14 + 4 * b.vlans.len();
    let udp = b.udp_offset();
    let mut v = vec![udp + 4, udp + 8 + 2];
    v.push(if b.is_v6() { l3 + 4 } else { l3 + 2 });
    v
}

/// Byte-level changes to a built frame.
pub fn bytes(rng: &mut Rng, b: &PacketBuilder, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        if f.is_empty() {
            break;
        }
        match rng.below(9) {
            0 | 1 => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(f.len());
                f[i] = rng.byte();
            }
            3 => f.truncate(rng.below(f.len() + 1)),
            4 => f.extend((0..rng.below(32)).map(|_| rng.byte())),
            5 | 6 => {
                // A length field (UDP, STUN, IP) set to a nearby or wild value.
                let at = rng.pick(&length_fields(b));
                if at + 1 < f.len() {
                    let old = u16::from_be_bytes([f[at], f[at + 1]]);
                    let new = match rng.below(4) {
                        0 => old.wrapping_add(rng.below(9) as u16).wrapping_sub(4),
                        1 => old.wrapping_add(4),
                        2 => 0,
                        _ => rng.next() as u16,
                    };
                    f[at..at + 2].copy_from_slice(&new.to_be_bytes());
                }
            }
            7 => {
                // A byte of the payload: where the classifiers look.
                let start = b.udp_offset() + 8;
                if start < f.len() {
                    let i = start + rng.below(f.len() - start);
                    f[i] = {
                        let any = rng.byte();
                        rng.pick(&[b'\r', b'\n', 0, 0x01, 0x80, 0x21, 0xff, any])
                    };
                }
            }
            _ => {
                // A STUN attribute type or length.
                let at = b.udp_offset() + 8 + 20 + 4 * rng.below(6);
                if at + 3 < f.len() {
                    let w = rng.pick(&[ATTR_FINGERPRINT, ATTR_SOFTWARE, 0x8000, 0x0003, 0xffff]);
                    let i = at + 2 * rng.below(2);
                    f[i..i + 2].copy_from_slice(&w.to_be_bytes());
                }
            }
        }
    }
    if rng.chance(50) {
        fix_checksums(b, &mut f);
    }
    f
}

/// Makes the IPv4 header and UDP checksums right for the frame as it now
/// is (lengths as its fields say), where the fields fit in it.
fn fix_checksums(b: &PacketBuilder, f: &mut [u8]) {
    let l3 = 14 + 4 * b.vlans.len();
    let udp = b.udp_offset();
    if !b.is_v6() {
        let Some(&ver_ihl) = f.get(l3) else { return };
        let ihl = usize::from(ver_ihl & 0xf) * 4;
        if ihl >= 20 && l3 + ihl <= f.len() {
            f[l3 + 10..l3 + 12].fill(0);
            let c = !fold(sum(&f[l3..l3 + ihl]));
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
    }
    if udp + 8 > f.len() {
        return;
    }
    let udp_len = usize::from(u16::from_be_bytes([f[udp + 4], f[udp + 5]]));
    if udp_len < 8 || udp + udp_len > f.len() {
        return;
    }
    f[udp + 6..udp + 8].fill(0);
    let (src, dst) = if b.is_v6() {
        (&f[l3 + 8..l3 + 24], &f[l3 + 24..l3 + 40])
    } else {
        (&f[l3 + 12..l3 + 16], &f[l3 + 16..l3 + 20])
    };
    let s = sum(src) + sum(dst) + 17 + udp_len as u64 + sum(&f[udp..udp + udp_len]);
    let mut c = !fold(s);
    if c == 0 {
        c = 0xffff;
    }
    f[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
}

/// A frame of random bytes, sometimes behind a valid Ethernet + IP + UDP
/// header.
pub fn random(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(200);
    let junk: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
    if rng.chance(50) {
        return junk;
    }
    let b = if rng.chance(50) {
        PacketBuilder::udp4(source_v4(rng), rng.next() as u16, SERVER_V4, 5060, &junk)
    } else {
        PacketBuilder::udp6(source_v6(rng), rng.next() as u16, SERVER_V6, 5060, &junk)
    };
    b.build()
}
