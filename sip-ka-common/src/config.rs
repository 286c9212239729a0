//! The `CONFIG` map's single value: switches and limits read by the XDP
//! program on every packet and written by the daemon and `sip-ka config set`.

/// What the fast path does with a class of keep-alive.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer it from XDP (a CRLF pong, a STUN success).
    Answer = 0,
    /// Drop it silently.
    Drop = 1,
    /// Hand it to the kernel stack (and so to the daemon or the PBX).
    Pass = 2,
}

impl Action {
    pub const fn from_u32(v: u32) -> Action {
        match v {
            0 => Action::Answer,
            1 => Action::Drop,
            _ => Action::Pass,
        }
    }
}

/// ACL modes.
pub const ACL_OFF: u32 = 0;
/// Drop sources found in `ACL_DENY`.
pub const ACL_DENY: u32 = 1;
/// Drop sources found in `ACL_DENY` and every source not in `ACL_ALLOW`.
pub const ACL_ALLOW_ONLY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// UDP `\r\n\r\n`: Answer (pong) | Drop | Pass.
    pub udp_crlf: u32,
    /// UDP lone `\r\n`: Drop | Pass (never answered).
    pub lone_crlf: u32,
    /// RFC 5389/8489 Binding requests XDP can serve: Answer | Drop | Pass.
    pub stun: u32,
    /// RFC 3489 Binding requests without a magic cookie: Answer | Pass.
    pub stun_classic: u32,
    /// Classify and count SIP messages (1) or pass them unread (0).
    pub sip_classify: u32,
    /// Verify IPv4 header and UDP checksums before answering (1).
    pub verify_checksums: u32,
    /// Record every keep-alive source in `PEERS` (1).
    pub track_peers: u32,
    /// One of `ACL_OFF`, `ACL_DENY`, `ACL_ALLOW_ONLY`.
    pub acl: u32,
    /// Answers per second per source (address and port: one phone's
    /// socket, behind its NAT binding); 0 = unlimited. The program reads
    /// at most `RATE_LIMIT_MAX`.
    pub rate_limit_pps: u32,
    /// Token bucket depth per source (at most `RATE_LIMIT_MAX`).
    pub rate_limit_burst: u32,
    /// Answers per second per source address, all its ports together: the
    /// ceiling for a NAT's many phones (0 = unlimited).
    pub rate_limit_addr_pps: u32,
    /// Token bucket depth per source address.
    pub rate_limit_addr_burst: u32,
    /// Set by the daemon when the map was initialised (0 = never written:
    /// the program then passes everything).
    pub initialised: u32,
    /// The kernel's tick in ns (the resolution of CLOCK_MONOTONIC_COARSE),
    /// written by the daemon: the scale of the program's interval clock,
    /// `bpf_jiffies64` (0 = unknown: the program reads the coarse clock).
    pub tick_ns: u32,
    /// The ports marked in `SIP_PORTS` (0 = unused slot), so userspace can
    /// list them without reading 65536 array entries. The program does not
    /// read this.
    pub sip_ports: [u16; MAX_SIP_PORTS],
    /// The interface's own MAC address, written by the daemon when it
    /// attaches: only frames sent to it are answered, so a frame flooded
    /// or mirrored to this port for another host never gets a second
    /// answerer. All zero (not known) answers no frame at all.
    pub own_mac: [u8; 6],
    pub _pad_mac: [u8; 2],
    /// The interface's IPv4 directed broadcast addresses (all zero = unused
    /// slot), written by the daemon like `own_mac`: a ping sent to one is
    /// never answered (255.255.255.255 never is either).
    pub broadcast_v4: [[u8; 4]; MAX_BROADCAST_V4],
}

/// How many SIP ports can be configured.
pub const MAX_SIP_PORTS: usize = 8;
/// How many directed broadcast addresses of the interface are refused.
pub const MAX_BROADCAST_V4: usize = 8;
/// Largest `rate_limit_pps` and `rate_limit_burst`: the bucket's refill
/// (at most 100 s of elapsed nanoseconds times the rate) and its depth in
/// nanotokens stay far below 2^64.
pub const RATE_LIMIT_MAX: u32 = 10_000_000;
/// Answers per second per source (address and port) by default: a phone
/// sends a keep-alive every 15 to 30 s, so one socket asking 200 times a
/// second is a flood, held to this.
pub const DEFAULT_RATE_PPS: u32 = 200;
/// Default bucket depth per source.
pub const DEFAULT_RATE_BURST: u32 = 400;
/// Answers per second per source address by default, all ports together:
/// a carrier-grade NAT with 100,000 phones at 15 s intervals sends about
/// 6,700 keep-alives a second, an office of 5,000 after a power cut a few
/// thousand in a burst. An answer is never more than 24 bytes longer
/// than its request, so this ceiling is about floods, not reflection.
pub const DEFAULT_RATE_ADDR_PPS: u32 = 20_000;
/// Default bucket depth per source address (two seconds of the ceiling).
pub const DEFAULT_RATE_ADDR_BURST: u32 = 40_000;

impl Config {
    pub const DEFAULT: Config = Config {
        udp_crlf: Action::Answer as u32,
        lone_crlf: Action::Drop as u32,
        stun: Action::Answer as u32,
        stun_classic: Action::Answer as u32,
        sip_classify: 1,
        verify_checksums: 1,
        track_peers: 1,
        acl: ACL_OFF,
        rate_limit_pps: DEFAULT_RATE_PPS,
        rate_limit_burst: DEFAULT_RATE_BURST,
        rate_limit_addr_pps: DEFAULT_RATE_ADDR_PPS,
        rate_limit_addr_burst: DEFAULT_RATE_ADDR_BURST,
        initialised: 1,
        tick_ns: 0,
        sip_ports: [0; MAX_SIP_PORTS],
        own_mac: [0; 6],
        _pad_mac: [0; 2],
        broadcast_v4: [[0; 4]; MAX_BROADCAST_V4],
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}
