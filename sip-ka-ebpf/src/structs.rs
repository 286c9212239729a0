//! The structs the program's modules share: the description of the
//! packet being handled and the per-CPU work area (kept apart from the
//! code that fills them, so parsing, the SIP scan and the reply can all
//! use them without using each other).

use sip_ka_common::{
    maps::PeerKey,
    stun::{Reflexive, MAX_ANSWER},
};

/// What the header walk (`parse::parse_udp`) found: where each header
/// is, the ports and the IP version.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Udp {
    pub l3_off: usize,
    pub l4_off: usize,
    pub payload_off: usize,
    pub payload_len: usize,
    pub sport: u16,
    pub dport: u16,
    pub is_v4: bool,
}

impl Udp {
    /// Parks the packet description in map memory and reads it back.
    ///
    /// The verifier does not track values in map memory, so every path
    /// that reaches this point (VLAN depth, IP version, IHL...) leaves it
    /// with the same state, and what follows is verified once instead of
    /// once per path. The masks give back the bounds packet access needs.
    #[inline(always)]
    pub fn converge(self, slot: &mut Udp) -> Udp {
        *slot = self;
        // SAFETY: a plain read of the value just written; volatile so the
        // compiler cannot forward the stored registers past it.
        let mut p = unsafe { core::ptr::read_volatile(slot) };
        p.l3_off &= 0x3f;
        p.l4_off &= 0x7f;
        p.payload_off &= 0x7f;
        p.payload_len &= 0xffff;
        p
    }
}

/// Bytes of payload the program copies and reads. A power of two, so an
/// index masked with `BUF_MASK` is always in bounds.
pub const BUF_LEN: usize = 2048;
pub const BUF_MASK: usize = BUF_LEN - 1;
pub const BUF_SLACK: usize = 16;
/// Ethernet + 2 VLAN tags + IPv4 with options + UDP fit in this.
pub const HEADERS_MAX: usize = 128;

/// The per-CPU work area: the value of the SCRATCH map.
#[repr(C)]
pub struct Scratch {
    /// The answer payload, zero past its end (the UDP checksum sums all of
    /// it). First, so it is 8-aligned and cleared with word stores.
    pub out: [u8; MAX_ANSWER],
    /// The payload copy, with `BUF_SLACK` bytes past `BUF_LEN` so a word
    /// read at any masked index stays inside.
    pub buf: [u8; BUF_LEN + BUF_SLACK],
    /// The headers of a frame being grown at the front (see
    /// `reply::resize`).
    pub headers: [u8; HEADERS_MAX],
    /// Source and destination of the packet, IPv4 mapped into 16 bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The PEERS key of the packet's source.
    pub peer: PeerKey,
    /// A STUN request's cookie and transaction id, and what to reflect.
    pub stun_id: [u8; 16],
    pub reflexive: Reflexive,
    /// The packet being handled (see `Udp::converge`).
    pub pkt: Udp,
    /// The SIP request's method or response class, parked like `pkt`.
    pub sip_kind: u32,
    /// Payload bytes in `buf` (see `sip::len`).
    pub len: u32,
    /// Where the CRC of a STUN request stops (see `stun::crc_until`).
    pub crc_end: u32,
    /// SIP scan results: offsets into `buf` (0 = not found).
    pub first_eol: u32,
    pub to_value: u32,
    pub callid_value: u32,
    pub clen_value: u32,
    pub body_start: u32,
    pub _pad: u32,
}

/// `BAN_CACHE` has 2^this slots per CPU (the index is a hash's top bits).
pub const BAN_CACHE_BITS: u32 = 10;
pub const BAN_CACHE_SLOTS: u32 = 1 << BAN_CACHE_BITS;

/// A slot of the per-CPU `BAN_CACHE` (see `bans`): what BANS said about
/// `addr` at generation `stamp - 1`.
#[repr(C)]
pub struct BanSlot {
    pub addr: [u8; 16],
    pub stamp: u64,
    /// The ban's end (CLOCK_MONOTONIC ns), if `counter` is not 0.
    pub expires_ns: u64,
    /// The drop counter of the ban, 0 for none.
    pub counter: u32,
    pub _pad: u32,
}
