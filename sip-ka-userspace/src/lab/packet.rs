//! Frames and payloads for the XDP fixtures, the end-to-end tests and the
//! benchmark: Ethernet (untagged, 802.1Q, or 802.1ad + 802.1Q), IPv4 or
//! IPv6, UDP, and the STUN, CRLF and SIP payloads they carry.
//!
//! Checksums are computed here from RFC 791 / 768 / 8200 and the STUN
//! framing from RFC 8489 / 3489, not taken from the program or the
//! responders they test. Every field that a negative fixture needs wrong
//! has a knob; anything rarer (truncation, stray bytes) is a byte operation
//! on the built frame.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sip_ka_common::stun::{
    crc32, ATTR_CHANGE_REQUEST, ATTR_FINGERPRINT, ATTR_SOFTWARE, BINDING_REQUEST, FINGERPRINT_XOR,
    MAGIC_COOKIE_BYTES,
};

/// MAC address of the lab's client end (the source of test frames).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// MAC address of the lab's server end, where XDP runs.
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An RFC 5626 keep-alive ping over UDP.
pub const CRLF_PING: &[u8] = b"\r\n\r\n";
/// The pong that answers it (and what a lone CRLF looks like).
pub const CRLF_PONG: &[u8] = b"\r\n";

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
/// IPv4 flags + fragment offset with only Don't Fragment set.
pub const IPV4_DONT_FRAGMENT: u16 = 0x4000;

/// What goes into a checksum field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The correct value.
    Correct,
    /// Zero: "no checksum" for UDP over IPv4, invalid over IPv6 and for
    /// an IPv4 header.
    Zero,
    /// The correct value with two bits flipped, so it is wrong whatever
    /// the content.
    Wrong,
}

impl Checksum {
    fn apply(self, correct: u16) -> u16 {
        match self {
            Checksum::Correct => correct,
            Checksum::Zero => 0,
            Checksum::Wrong => correct ^ 0x0101,
        }
    }
}

/// An Ethernet frame carrying one UDP datagram over IPv4 or IPv6, written
/// out by [`PacketBuilder::build`] with correct lengths and checksums
/// unless a knob says otherwise.
///
/// The IP version follows the addresses: both IPv4 or both IPv6. Fields
/// are public so a check can compare an answer with the request it came
/// from; the chaining setters are for building.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketBuilder {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// VLAN ids, outermost first. With more than one tag the outermost is
    /// an 802.1ad service tag (QinQ), the others 802.1Q.
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 protocol or IPv6 next header. The UDP header follows the IP
    /// header whatever this says, so another value makes the datagram look
    /// like an unknown protocol or an extension header.
    pub protocol: u8,
    /// IPv4 identification.
    pub ip_id: u16,
    /// IPv4 flags and fragment offset, as on the wire.
    pub flags_fragment: u16,
    /// IPv4 options (a multiple of 4 bytes, at most 40), which set the IHL.
    pub ip_options: Vec<u8>,
    pub ip_checksum: Checksum,
    pub sport: u16,
    pub dport: u16,
    pub udp_checksum: Checksum,
    /// A UDP length field other than the true one (the checksum is still
    /// that of the true datagram).
    pub udp_length: Option<u16>,
    pub payload: Vec<u8>,
    /// Zeros after the datagram up to this frame length (the Ethernet
    /// minimum of 60 bytes, as a NIC pads short frames).
    pub pad_to: usize,
}

impl PacketBuilder {
    /// A frame from the lab's client MAC to its server MAC, untagged, with
    /// TTL 64, IPv4 Don't Fragment and no options, and correct checksums.
    ///
    /// # Panics
    ///
    /// When one address is IPv4 and the other IPv6.
    pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> PacketBuilder {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source {src} and destination {dst} of different IP versions"
        );
        PacketBuilder {
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            vlans: Vec::new(),
            src: src.ip(),
            dst: dst.ip(),
            ttl: 64,
            protocol: IPPROTO_UDP,
            ip_id: 0x1234,
            flags_fragment: IPV4_DONT_FRAGMENT,
            ip_options: Vec::new(),
            ip_checksum: Checksum::Correct,
            sport: src.port(),
            dport: dst.port(),
            udp_checksum: Checksum::Correct,
            udp_length: None,
            payload: payload.to_vec(),
            pad_to: 0,
        }
    }

    /// [`PacketBuilder::udp`] over IPv4.
    pub fn udp4(
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        payload: &[u8],
    ) -> PacketBuilder {
        PacketBuilder::udp((src, sport).into(), (dst, dport).into(), payload)
    }

    /// [`PacketBuilder::udp`] over IPv6.
    pub fn udp6(
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
        payload: &[u8],
    ) -> PacketBuilder {
        PacketBuilder::udp((src, sport).into(), (dst, dport).into(), payload)
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// The VLAN tags, outermost first (none, 802.1Q, or QinQ).
    pub fn vlans(mut self, ids: &[u16]) -> Self {
        self.vlans = ids.to_vec();
        self
    }

    /// Another source address, of the same IP version.
    pub fn src_ip(mut self, ip: impl Into<IpAddr>) -> Self {
        self.src = ip.into();
        self
    }

    /// Another destination address, of the same IP version.
    pub fn dst_ip(mut self, ip: impl Into<IpAddr>) -> Self {
        self.dst = ip.into();
        self
    }

    pub fn sport(mut self, port: u16) -> Self {
        self.sport = port;
        self
    }

    pub fn dport(mut self, port: u16) -> Self {
        self.dport = port;
        self
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 protocol or IPv6 next header (the UDP header stays).
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn ip_id(mut self, id: u16) -> Self {
        self.ip_id = id;
        self
    }

    /// IPv4 flags and fragment offset, as on the wire (0x2000 = More
    /// Fragments, the low 13 bits the offset in 8-byte units).
    pub fn flags_fragment(mut self, field: u16) -> Self {
        self.flags_fragment = field;
        self
    }

    /// IPv4 options: a multiple of 4 bytes, at most 40.
    pub fn ip_options(mut self, options: &[u8]) -> Self {
        self.ip_options = options.to_vec();
        self
    }

    pub fn ip_checksum(mut self, c: Checksum) -> Self {
        self.ip_checksum = c;
        self
    }

    pub fn udp_checksum(mut self, c: Checksum) -> Self {
        self.udp_checksum = c;
        self
    }

    /// A UDP length field that lies about the datagram.
    pub fn udp_length(mut self, length: u16) -> Self {
        self.udp_length = Some(length);
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Pads the frame with zeros to `len` bytes.
    pub fn pad_to(mut self, len: usize) -> Self {
        self.pad_to = len;
        self
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// The datagram's source, as the server sees it.
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }

    /// The datagram's destination.
    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }

    /// Offset of the UDP header in the built frame.
    pub fn udp_offset(&self) -> usize {
        let ip = match self.src {
            IpAddr::V4(_) => 20 + self.ip_options.len(),
            IpAddr::V6(_) => 40,
        };
        14 + 4 * self.vlans.len() + ip
    }

    /// The frame's bytes.
    ///
    /// # Panics
    ///
    /// When the addresses are of different IP versions, or the IPv4
    /// options are not a multiple of 4 bytes up to 40, or the datagram
    /// does not fit its 16-bit length fields.
    pub fn build(&self) -> Vec<u8> {
        let udp_len = u16::try_from(8 + self.payload.len()).expect("UDP datagram over 64 KiB");
        let mut out = Vec::with_capacity(self.udp_offset() + usize::from(udp_len));
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for (i, vid) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() > 1 {
                ETH_P_8021AD
            } else {
                ETH_P_8021Q
            };
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&vid.to_be_bytes());
        }
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                out.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                out.extend_from_slice(&self.ipv4_header(src, dst, udp_len));
                let mut p = sum16(&src.octets()) + sum16(&dst.octets());
                p += u32::from(IPPROTO_UDP) + u32::from(udp_len);
                p
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                // Version 6, traffic class 0, flow label 0.
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&udp_len.to_be_bytes());
                out.extend_from_slice(&[self.protocol, self.ttl]);
                out.extend_from_slice(&src.octets());
                out.extend_from_slice(&dst.octets());
                let mut p = sum16(&src.octets()) + sum16(&dst.octets());
                p += u32::from(IPPROTO_UDP) + u32::from(udp_len);
                p
            }
            (s, d) => panic!("source {s} and destination {d} of different IP versions"),
        };
        let mut udp = Vec::with_capacity(usize::from(udp_len));
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        // RFC 768: a computed zero goes out as all ones, zero meaning none.
        let correct = match fold(pseudo + sum16(&udp)) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&self.udp_checksum.apply(correct).to_be_bytes());
        if let Some(lie) = self.udp_length {
            udp[4..6].copy_from_slice(&lie.to_be_bytes());
        }
        out.extend_from_slice(&udp);
        if out.len() < self.pad_to {
            out.resize(self.pad_to, 0);
        }
        out
    }

    fn ipv4_header(&self, src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> Vec<u8> {
        let ihl = 20 + self.ip_options.len();
        assert!(
            ihl.is_multiple_of(4) && ihl <= 60,
            "IPv4 options of {} bytes: a multiple of 4, at most 40",
            self.ip_options.len()
        );
        let total = u16::try_from(ihl + usize::from(udp_len)).expect("IPv4 packet over 64 KiB");
        let mut ip = Vec::with_capacity(ihl);
        ip.extend_from_slice(&[0x40 | (ihl / 4) as u8, 0]);
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&self.ip_id.to_be_bytes());
        ip.extend_from_slice(&self.flags_fragment.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.protocol, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let sum = self.ip_checksum.apply(fold(sum16(&ip)));
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip
    }
}

/// RFC 1071: the 16-bit one's complement sum of `data`, big-endian words,
/// an odd last byte padded with zero (not yet folded).
fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum()
}

/// Folds the carries of a one's complement sum and complements it.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One part of a STUN message after the header, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Attribute(u16, Vec<u8>),
    /// FINGERPRINT over everything before it, correct or not.
    Fingerprint(bool),
}

/// A STUN message: a Binding request (RFC 8489, or RFC 3489 "classic"
/// with a 16-byte transaction id and no magic cookie) or any other type,
/// with attributes in the order added, each padded to 4 bytes.
///
/// FINGERPRINT is written where [`Stun::fingerprint`] is called, over
/// the bytes before it with the header's final length, as RFC 8489 says;
/// so an attribute added after it makes a message with an attribute
/// after FINGERPRINT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stun {
    pub msg_type: u16,
    /// Bytes 4..20: the magic cookie and the 12-byte transaction id, or a
    /// classic 16-byte transaction id.
    pub id: [u8; 16],
    parts: Vec<Part>,
    length: Option<u16>,
}

impl Stun {
    /// An RFC 8489 Binding request with this transaction id.
    pub fn binding_request(txid: [u8; 12]) -> Stun {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&MAGIC_COOKIE_BYTES);
        id[4..].copy_from_slice(&txid);
        Stun::classic_binding_request(id)
    }

    /// An RFC 3489 Binding request: a 16-byte transaction id where a
    /// modern one has the magic cookie.
    pub fn classic_binding_request(id: [u8; 16]) -> Stun {
        Stun {
            msg_type: BINDING_REQUEST,
            id,
            parts: Vec::new(),
            length: None,
        }
    }

    /// Another message type (e.g. a Binding success, to check that
    /// responses are not answered).
    pub fn msg_type(mut self, msg_type: u16) -> Self {
        self.msg_type = msg_type;
        self
    }

    /// An attribute of any type and value (padded to 4 bytes).
    pub fn attribute(mut self, ty: u16, value: &[u8]) -> Self {
        self.parts.push(Part::Attribute(ty, value.to_vec()));
        self
    }

    /// SOFTWARE (comprehension-optional).
    pub fn software(self, name: &str) -> Self {
        self.attribute(ATTR_SOFTWARE, name.as_bytes())
    }

    /// RFC 3489 CHANGE-REQUEST with these flags (4 = change IP, 2 = change
    /// port, 0 = none).
    pub fn change_request(self, flags: u32) -> Self {
        self.attribute(ATTR_CHANGE_REQUEST, &flags.to_be_bytes())
    }

    /// A correct FINGERPRINT, here.
    pub fn fingerprint(mut self) -> Self {
        self.parts.push(Part::Fingerprint(true));
        self
    }

    /// A FINGERPRINT with a wrong CRC, here.
    pub fn wrong_fingerprint(mut self) -> Self {
        self.parts.push(Part::Fingerprint(false));
        self
    }

    /// A length field other than the true one.
    pub fn length_field(mut self, length: u16) -> Self {
        self.length = Some(length);
        self
    }

    /// The message's bytes.
    ///
    /// # Panics
    ///
    /// When an attribute is over 64 KiB or the message does not fit its
    /// length field.
    pub fn build(&self) -> Vec<u8> {
        let body: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Attribute(_, v) => 4 + v.len().div_ceil(4) * 4,
                Part::Fingerprint(_) => 8,
            })
            .sum();
        let length = match self.length {
            Some(l) => l,
            None => u16::try_from(body).expect("STUN message over 64 KiB"),
        };
        let mut m = Vec::with_capacity(20 + body);
        m.extend_from_slice(&self.msg_type.to_be_bytes());
        m.extend_from_slice(&length.to_be_bytes());
        m.extend_from_slice(&self.id);
        for p in &self.parts {
            match p {
                Part::Attribute(ty, v) => {
                    let len = u16::try_from(v.len()).expect("STUN attribute over 64 KiB");
                    m.extend_from_slice(&ty.to_be_bytes());
                    m.extend_from_slice(&len.to_be_bytes());
                    m.extend_from_slice(v);
                    m.resize(m.len().next_multiple_of(4), 0);
                }
                Part::Fingerprint(correct) => {
                    let mut crc = crc32(&m) ^ FINGERPRINT_XOR;
                    if !correct {
                        crc ^= 0x0000_0100;
                    }
                    m.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
                    m.extend_from_slice(&4u16.to_be_bytes());
                    m.extend_from_slice(&crc.to_be_bytes());
                }
            }
        }
        m
    }
}

/// The Call-ID of [`sip_request`].
pub const SIP_CALL_ID: &str = "a84b4c76e66710@pc33.example";

/// A SIP request from the lab's client (198.18.0.2:40000) to its server
/// (198.18.0.1), Call-ID [`SIP_CALL_ID`]: in a dialog when `in_dialog`
/// (the To header has a tag), with `extra_headers` (each ending in CRLF)
/// before Content-Length, and `body`.
pub fn sip_request(method: &str, in_dialog: bool, body: &str, extra_headers: &str) -> Vec<u8> {
    let tag = if in_dialog { ";tag=as83kd" } else { "" };
    format!(
        "{method} sip:pbx@198.18.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:40000;branch=z9hG4bK776asdhds;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@198.18.0.2>;tag=1928301774\r\n\
         To: <sip:pbx@198.18.0.1>{tag}\r\n\
         Call-ID: {SIP_CALL_ID}\r\n\
         CSeq: 314159 {method}\r\n\
         {extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use bytecodec::DecodeExt as _;
    use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader};
    use stun_codec::{rfc5389, MessageClass, MessageDecoder};

    use super::*;

    const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5a, 0, 1, 0, 0, 0, 2);
    const S6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5a, 0, 1, 0, 0, 0, 1);

    fn v4(payload: &[u8]) -> PacketBuilder {
        PacketBuilder::udp4(C4, 40000, S4, 5060, payload)
    }

    fn v6(payload: &[u8]) -> PacketBuilder {
        PacketBuilder::udp6(C6, 40000, S6, 5060, payload)
    }

    /// (IPv4 header checksum right?, UDP checksum right?, UDP checksum)
    fn sums(frame: &[u8]) -> (bool, bool, u16) {
        let h = PacketHeaders::from_ethernet_slice(frame).expect("frame parses");
        let Some(TransportHeader::Udp(udp)) = &h.transport else {
            panic!("no UDP header")
        };
        let payload = h.payload.slice();
        match &h.net {
            Some(NetHeaders::Ipv4(ip, _)) => (
                ip.header_checksum == ip.calc_header_checksum(),
                udp.checksum == udp.calc_checksum_ipv4(ip, payload).unwrap(),
                udp.checksum,
            ),
            Some(NetHeaders::Ipv6(ip, _)) => (
                true,
                udp.checksum == udp.calc_checksum_ipv6(ip, payload).unwrap(),
                udp.checksum,
            ),
            _ => panic!("no IP header"),
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data)), !0xddf2);
        // An odd byte is padded with zero.
        assert_eq!(sum16(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn ipv4_frames_parse_with_correct_checksums() {
        for p in [
            v4(CRLF_PING),
            v4(b"odd"),
            v4(&[]),
            v4(CRLF_PING).ip_options(&[0x01, 0x01, 0x01, 0x01, 0x94, 0x04, 0, 0]),
            v4(CRLF_PING).vlans(&[100]),
            v4(&[0x5a; 300]).vlans(&[10, 20]).ttl(3).ip_id(0x1c46),
        ] {
            let f = p.build();
            assert_eq!(sums(&f), (true, true, sums(&f).2), "{p:?}");
            let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
            let Some(etherparse::LinkHeader::Ethernet2(eth)) = &h.link else {
                panic!("no Ethernet header")
            };
            assert_eq!((eth.source, eth.destination), (CLIENT_MAC, SERVER_MAC));
            assert_eq!(h.link_exts.len(), p.vlans.len());
            let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
                panic!("not IPv4")
            };
            assert_eq!((ip.source, ip.destination), (C4.octets(), S4.octets()));
            assert_eq!(ip.time_to_live, p.ttl);
            assert_eq!(ip.identification, p.ip_id);
            assert!(ip.dont_fragment && !ip.more_fragments);
            assert_eq!(ip.options.as_slice(), &p.ip_options[..]);
            assert_eq!(ip.total_len as usize, f.len() - 14 - 4 * p.vlans.len());
            let Some(TransportHeader::Udp(udp)) = &h.transport else {
                panic!("no UDP")
            };
            assert_eq!((udp.source_port, udp.destination_port), (40000, 5060));
            assert_eq!(udp.length as usize, 8 + p.payload.len());
            assert_eq!(h.payload.slice(), &p.payload[..]);
            assert_eq!(p.udp_offset() + 8 + p.payload.len(), f.len());
        }
    }

    #[test]
    fn vlan_tags_are_8021q_or_qinq() {
        let one = v4(CRLF_PING).vlans(&[100]).build();
        assert_eq!(&one[12..18], &[0x81, 0x00, 0, 100, 0x08, 0x00]);
        let two = v6(CRLF_PING).vlans(&[10, 20]).build();
        assert_eq!(
            &two[12..22],
            &[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x86, 0xdd]
        );
        let h = PacketHeaders::from_ethernet_slice(&two).unwrap();
        let ids: Vec<u16> = h
            .link_exts
            .iter()
            .map(|e| match e {
                LinkExtHeader::Vlan(v) => v.vlan_id.value(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [10, 20]);
    }

    #[test]
    fn ipv6_frames_parse_with_correct_checksums() {
        for p in [v6(CRLF_PING), v6(b"odd"), v6(CRLF_PING).vlans(&[7]).ttl(1)] {
            let f = p.build();
            assert!(sums(&f).1, "{p:?}");
            let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
            let Some(NetHeaders::Ipv6(ip, _)) = &h.net else {
                panic!("not IPv6")
            };
            assert_eq!((ip.source, ip.destination), (C6.octets(), S6.octets()));
            assert_eq!(ip.hop_limit, p.ttl);
            assert_eq!(ip.payload_length as usize, 8 + p.payload.len());
            assert_eq!(h.payload.slice(), &p.payload[..]);
        }
        // Another next header: the same bytes but that one.
        let a = v6(CRLF_PING).build();
        let b = v6(CRLF_PING).protocol(0).build();
        let nh = 14 + 6;
        assert_eq!((a[nh], b[nh]), (17, 0));
        assert_eq!(a[..nh], b[..nh]);
        assert_eq!(a[nh + 1..], b[nh + 1..]);
    }

    #[test]
    fn checksum_knobs() {
        for p in [v4(CRLF_PING), v6(CRLF_PING)] {
            let good = sums(&p.build()).2;
            let wrong = p.clone().udp_checksum(Checksum::Wrong).build();
            assert_eq!(sums(&wrong).2, good ^ 0x0101);
            assert!(!sums(&wrong).1);
            let zero = p.clone().udp_checksum(Checksum::Zero).build();
            assert_eq!(sums(&zero).2, 0);
        }
        let bad_ip = v4(CRLF_PING).ip_checksum(Checksum::Wrong).build();
        assert_eq!(sums(&bad_ip), (false, true, sums(&v4(CRLF_PING).build()).2));
    }

    #[test]
    fn a_computed_zero_udp_checksum_goes_out_as_all_ones() {
        // Appending the checksum of a datagram to its payload makes the
        // one's complement sum all ones: a computed checksum of zero.
        for p in [v4(&[0, 0]), v6(&[0, 0])] {
            let c = sums(&p.build()).2;
            let f = p.payload(&c.to_be_bytes()).build();
            assert_eq!(sums(&f), (true, true, 0xffff));
        }
    }

    #[test]
    fn fragments_lies_and_padding() {
        let f = v4(CRLF_PING).flags_fragment(0x2000).build();
        let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
        let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
            panic!("not IPv4")
        };
        assert!(ip.more_fragments && !ip.dont_fragment);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());

        let p = v4(CRLF_PING);
        let (good, lying) = (p.build(), p.clone().udp_length(100).build());
        let at = p.udp_offset() + 4;
        assert_eq!(&lying[at..at + 2], &100u16.to_be_bytes());
        assert_eq!(lying[..at], good[..at]);
        assert_eq!(lying[at + 2..], good[at + 2..]);

        let padded = v4(CRLF_PING).pad_to(60).build();
        assert_eq!(padded.len(), 60);
        assert_eq!(padded[..good.len()], good[..]);
        assert!(padded[good.len()..].iter().all(|&b| b == 0));
        // Padding never shortens.
        assert_eq!(v4(&[1; 100]).pad_to(60).build().len(), 14 + 20 + 8 + 100);
    }

    #[test]
    #[should_panic(expected = "different IP versions")]
    fn mixed_ip_versions_are_refused() {
        v4(CRLF_PING).dst_ip(S6).build();
    }

    fn decode(msg: &[u8]) -> stun_codec::Message<rfc5389::Attribute> {
        MessageDecoder::<rfc5389::Attribute>::new()
            .decode_from_bytes(msg)
            .expect("decodes")
            .expect("a valid message")
    }

    #[test]
    fn stun_binding_requests_decode_with_an_independent_codec() {
        let id = *b"0123456789ab";
        let bare = Stun::binding_request(id).build();
        assert_eq!(bare.len(), 20);
        let m = decode(&bare);
        assert_eq!(m.class(), MessageClass::Request);
        assert_eq!(m.transaction_id().as_bytes(), &id);

        // stun_codec checks FINGERPRINT itself.
        let full = Stun::binding_request(id)
            .software("abcde")
            .fingerprint()
            .build();
        assert_eq!(full.len(), 20 + 4 + 8 + 8);
        assert_eq!(&full[2..4], &20u16.to_be_bytes());
        let m = decode(&full);
        assert_eq!(
            m.get_attribute::<rfc5389::attributes::Software>()
                .map(|s| s.description().to_string()),
            Some("abcde".to_string())
        );
        assert!(m
            .get_attribute::<rfc5389::attributes::Fingerprint>()
            .is_some());
        let fp = u32::from_be_bytes(full[full.len() - 4..].try_into().unwrap());
        assert_eq!(fp, crc32(&full[..full.len() - 8]) ^ FINGERPRINT_XOR);

        let wrong = Stun::binding_request(id).wrong_fingerprint().build();
        assert!(MessageDecoder::<rfc5389::Attribute>::new()
            .decode_from_bytes(&wrong)
            .map(|r| r.is_err())
            .unwrap_or(true));
        let right = Stun::binding_request(id).fingerprint().build();
        assert_eq!(wrong[..24], right[..24]);
        assert_ne!(wrong[24..], right[24..]);
    }

    #[test]
    fn classic_requests_and_odd_messages() {
        let classic = Stun::classic_binding_request([0x5a; 16])
            .change_request(6)
            .build();
        let mut want = vec![0x00, 0x01, 0x00, 0x08];
        want.extend_from_slice(&[0x5a; 16]);
        want.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6]);
        assert_eq!(classic, want);

        // An attribute after FINGERPRINT: the CRC covers the header with
        // the final length and nothing else.
        let after = Stun::binding_request([1; 12])
            .fingerprint()
            .attribute(ATTR_SOFTWARE, b"abcd")
            .build();
        assert_eq!(&after[2..4], &16u16.to_be_bytes());
        let fp = u32::from_be_bytes(after[24..28].try_into().unwrap());
        assert_eq!(fp, crc32(&after[..20]) ^ FINGERPRINT_XOR);
        assert_eq!(&after[28..], &[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);

        let padded = Stun::binding_request([1; 12])
            .attribute(0x8055, b"x")
            .build();
        assert_eq!(&padded[20..], &[0x80, 0x55, 0, 1, b'x', 0, 0, 0]);
        assert_eq!(&padded[2..4], &8u16.to_be_bytes());

        let lying = Stun::binding_request([1; 12]).length_field(8).build();
        assert_eq!((lying.len(), &lying[2..4]), (20, &[0u8, 8][..]));

        let response = Stun::binding_request([1; 12]).msg_type(0x0101).build();
        assert_eq!(decode(&response).class(), MessageClass::SuccessResponse);
    }

    #[test]
    fn sip_requests_carry_their_length() {
        let m = sip_request("INFO", true, "v=0\r\n", "Supported: timer\r\n");
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with("INFO sip:pbx@198.18.0.1 SIP/2.0\r\n"));
        assert!(text.contains("To: <sip:pbx@198.18.0.1>;tag=as83kd\r\n"));
        assert!(text.contains(&format!("Call-ID: {SIP_CALL_ID}\r\n")));
        assert!(text.contains("CSeq: 314159 INFO\r\nSupported: timer\r\n"));
        assert!(text.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        let out = String::from_utf8(sip_request("OPTIONS", false, "", "")).unwrap();
        assert!(out.contains("To: <sip:pbx@198.18.0.1>\r\n"));
    }
}
