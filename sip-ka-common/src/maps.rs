//! Map names, sizes, keys and values.
//!
//! Addresses are stored as 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped
//! IPv6 address (`::ffff:a.b.c.d`), so one key type serves both families.

pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_SIP_PORTS: &str = "SIP_PORTS";
pub const MAP_STATS: &str = "STATS";
pub const MAP_PEERS: &str = "PEERS";
pub const MAP_DIALOGS: &str = "DIALOGS";
pub const MAP_ACL_ALLOW: &str = "ACL_ALLOW";
pub const MAP_ACL_DENY: &str = "ACL_DENY";
pub const MAP_RATE: &str = "RATE";
pub const MAP_BANS: &str = "BANS";
pub const MAP_RATE_ADDR: &str = "RATE_ADDR";
pub const MAP_DAEMON_STATS: &str = "DAEMON_STATS";
pub const MAP_PEER_CACHE: &str = "PEER_CACHE";
pub const MAP_BANS_GEN: &str = "BANS_GEN";
/// Every map the daemon pins, in the order `sip-ka` lists them.
pub const PINNED_MAPS: [&str; 13] = [
    MAP_CONFIG,
    MAP_SIP_PORTS,
    MAP_STATS,
    MAP_DAEMON_STATS,
    MAP_PEERS,
    MAP_PEER_CACHE,
    MAP_DIALOGS,
    MAP_ACL_ALLOW,
    MAP_ACL_DENY,
    MAP_RATE,
    MAP_RATE_ADDR,
    MAP_BANS,
    MAP_BANS_GEN,
];
/// Name of the pinned XDP link inside the pin directory.
pub const PIN_LINK_PREFIX: &str = "link_";
/// The XDP program's function name.
pub const PROGRAM_NAME: &str = "sip_ka";

pub const PEERS_MAX: u32 = 65_536;
/// `PEER_CACHE` has 2^this slots per CPU (the index is a hash's top bits).
pub const PEER_CACHE_BITS: u32 = 12;
pub const PEER_CACHE_SLOTS: u32 = 1 << PEER_CACHE_BITS;
pub const DIALOGS_MAX: u32 = 1_048_576;
pub const ACL_MAX: u32 = 4096;
/// Token buckets per CPU: one per source (address and port) in `RATE`,
/// one per address in `RATE_ADDR`.
pub const RATE_MAX: u32 = 65_536;
/// Bans in force at once (decided, listed and added by hand together).
pub const BANS_MAX: u32 = 262_144;
/// `SIP_PORTS` is an array indexed by the UDP port (value 1 = handled).
pub const SIP_PORTS_MAX: u32 = 65_536;

/// Keep-alive kinds counted per peer.
pub const KIND_CRLF: u32 = 1;
pub const KIND_STUN: u32 = 2;
pub const KIND_SIP: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Source address (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Source UDP port, host byte order.
    pub port: u16,
    pub _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerValue {
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub crlf: u64,
    pub stun: u64,
    /// In-dialog SIP keep-alives (UPDATE/INFO/MESSAGE/OPTIONS, no body).
    pub sip: u64,
    /// The last keep-alive kind seen (`KIND_*`).
    pub last_kind: u32,
    pub _pad: u32,
}

/// A slot of the per-CPU `PEER_CACHE`: the peer that last used it and
/// its keep-alives on this CPU not yet added to its `PEERS` entry (all
/// from under a second after that entry was last written).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSlot {
    pub key: PeerKey,
    /// The kind of the last keep-alive counted here.
    pub last_kind: u32,
    pub crlf: u32,
    pub stun: u32,
    pub sip: u32,
    pub _pad: u32,
    /// When this CPU last wrote the peer's entry, on the program's
    /// interval clock (not CLOCK_MONOTONIC).
    pub flushed: u64,
}

impl PeerSlot {
    /// Adds the keep-alives counted here to `v` (the peer's PEERS entry);
    /// whether there were any.
    pub fn add_pending(&self, v: &mut PeerValue) -> bool {
        if self.crlf | self.stun | self.sip == 0 {
            return false;
        }
        v.crlf += self.crlf as u64;
        v.stun += self.stun as u64;
        v.sip += self.sip as u64;
        true
    }
}

/// Dialog states written by the daemon.
pub const DIALOG_EARLY: u32 = 1;
pub const DIALOG_CONFIRMED: u32 = 2;
pub const DIALOG_TERMINATING: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogValue {
    /// `DIALOG_*`, written by the daemon.
    pub state: u32,
    pub flags: u32,
    /// When the dialog was created (CLOCK_REALTIME seconds, daemon-written).
    pub created_unix: u64,
    /// Absolute session expiry (CLOCK_REALTIME seconds), 0 = none.
    pub expires_unix: u64,
    /// Last in-dialog keep-alive seen by XDP (CLOCK_MONOTONIC ns).
    pub last_ka_ns: u64,
    /// In-dialog keep-alives counted by XDP.
    pub ka_count: u64,
}

/// Who refreshes a session (RFC 4028), as packed in [`DialogValue::flags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRefresher {
    Uac,
    Uas,
}

impl SessionRefresher {
    pub const fn name(self) -> &'static str {
        match self {
            SessionRefresher::Uac => "uac",
            SessionRefresher::Uas => "uas",
        }
    }
}

/// `DialogValue.flags` in edge mode: bit 31 says a session timer is
/// known, bits 28..=29 the refresher (0 none, 1 uac, 2 uas), bits 0..=27
/// the session interval in seconds (larger intervals are capped).
pub const SESSION_KNOWN: u32 = 1 << 31;
const REFRESHER_SHIFT: u32 = 28;
const INTERVAL_MASK: u32 = (1 << REFRESHER_SHIFT) - 1;

impl DialogValue {
    /// The `flags` word for a session of `interval` seconds.
    pub const fn session_flags(interval: u32, refresher: Option<SessionRefresher>) -> u32 {
        let r = match refresher {
            None => 0,
            Some(SessionRefresher::Uac) => 1,
            Some(SessionRefresher::Uas) => 2,
        };
        let interval = if interval > INTERVAL_MASK {
            INTERVAL_MASK
        } else {
            interval
        };
        SESSION_KNOWN | (r << REFRESHER_SHIFT) | interval
    }

    /// The session interval and refresher in `flags`, if a timer is known.
    pub const fn session(&self) -> Option<(u32, Option<SessionRefresher>)> {
        if self.flags & SESSION_KNOWN == 0 {
            return None;
        }
        let r = match (self.flags >> REFRESHER_SHIFT) & 3 {
            1 => Some(SessionRefresher::Uac),
            2 => Some(SessionRefresher::Uas),
            _ => None,
        };
        Some((self.flags & INTERVAL_MASK, r))
    }
}

/// Key of the `ACL_*` LPM tries: the prefix length is in `aya`'s
/// `lpm_trie::Key`; IPv4 prefixes are mapped (length + 96).
pub type AclAddr = [u8; 16];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateValue {
    /// Tokens scaled by 1e9 (one answer = 1e9), so refills need no division
    /// by the elapsed time.
    pub tokens: u64,
    pub last_ns: u64,
}

/// Why a source is banned: the value of [`BanValue::reason`], and the
/// offset of its drop counter from [`crate::Counter::DropBanScanner`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BanReason {
    /// A scanner's User-Agent (friendly-scanner, sipvicious...).
    Scanner = 0,
    /// Failed authentications and unknown users, as the PBX answered them.
    Auth = 1,
    /// Requests the edge itself refused (malformed, loops, unknown dialogs).
    Refused = 2,
    /// More requests per second than any office NAT sends.
    Flood = 3,
    /// A static blocklist (`--blocklist`).
    List = 4,
    /// Added by the operator (`sip-ka bans add`).
    Manual = 5,
}

/// How many [`BanReason`]s there are.
pub const BAN_REASONS: usize = 6;

impl BanReason {
    pub const ALL: [BanReason; BAN_REASONS] = [
        BanReason::Scanner,
        BanReason::Auth,
        BanReason::Refused,
        BanReason::Flood,
        BanReason::List,
        BanReason::Manual,
    ];

    pub const fn from_u32(v: u32) -> BanReason {
        match v {
            0 => BanReason::Scanner,
            1 => BanReason::Auth,
            2 => BanReason::Refused,
            3 => BanReason::Flood,
            4 => BanReason::List,
            _ => BanReason::Manual,
        }
    }

    /// The name in `sip-ka bans`, logs and the metrics' `reason` label.
    pub const fn name(self) -> &'static str {
        match self {
            BanReason::Scanner => "scanner",
            BanReason::Auth => "auth",
            BanReason::Refused => "refused",
            BanReason::Flood => "flood",
            BanReason::List => "list",
            BanReason::Manual => "manual",
        }
    }
}

/// `BanValue::expires_ns` of a ban that never lifts by itself (a list
/// entry, or one added by hand without a duration).
pub const BAN_FOREVER: u64 = u64::MAX;

/// Value of the `BANS` LPM trie, keyed like the ACL (IPv4 mapped, the
/// prefix length in the trie's key): one entry per banned address or
/// prefix (IPv6 sources are banned per /64 by default).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// CLOCK_MONOTONIC ns at which the ban lifts: the program compares it
    /// with its clock, so a ban ends on time with no daemon running.
    /// [`BAN_FOREVER`] never lifts.
    pub expires_ns: u64,
    /// When it was decided (CLOCK_REALTIME seconds), for the operator.
    pub since_unix: u64,
    /// A [`BanReason`].
    pub reason: u32,
    /// The evidence that decided it (failures, requests in the flood
    /// window; 1 for a scanner, 0 for lists and bans by hand).
    pub evidence: u32,
    /// How many times in a row this source was banned: each ban lasts
    /// twice as long as the one before, up to the configured ceiling.
    pub strikes: u32,
    pub _pad: u32,
    /// The operator's words for a ban by hand (`--reason`), NUL-padded
    /// UTF-8; empty for the others.
    pub note: [u8; BAN_NOTE_LEN],
}

/// Bytes of [`BanValue::note`].
pub const BAN_NOTE_LEN: usize = 32;

/// An IPv4 address as the 16-byte form used in keys.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// The IPv4 address inside a mapped key, if it is one.
pub fn as_v4(addr: &[u8; 16]) -> Option<[u8; 4]> {
    if addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_flags_round_trip() {
        for (interval, r) in [
            (90, None),
            (1800, Some(SessionRefresher::Uac)),
            (7200, Some(SessionRefresher::Uas)),
        ] {
            let v = DialogValue {
                flags: DialogValue::session_flags(interval, r),
                ..DialogValue::default()
            };
            assert_eq!(v.session(), Some((interval, r)));
        }
        assert_eq!(DialogValue::default().session(), None);
        let big = DialogValue {
            flags: DialogValue::session_flags(u32::MAX, None),
            ..DialogValue::default()
        };
        assert_eq!(big.session(), Some((INTERVAL_MASK, None)));
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for PeerKey {}
    unsafe impl aya::Pod for PeerValue {}
    unsafe impl aya::Pod for PeerSlot {}
    unsafe impl aya::Pod for DialogValue {}
    unsafe impl aya::Pod for RateValue {}
    unsafe impl aya::Pod for BanValue {}
}
