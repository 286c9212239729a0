//! Counter indices, and the two maps that hold the counters.
//!
//! The first block is named by [`Counter`]; after it come the SIP request
//! counters, one per (method, in-dialog?, has body?), at
//! [`sip_request_index`], then the edge's block. The XDP program's
//! counters are one [`Stats`] block per CPU, the single entry of
//! `STATS`: a packet looks the map up once and bumps fields of the block,
//! rather than looking up one entry per counter. The daemon's own
//! counters (the responder's, the edge's) live in `DAEMON_STATS`, an
//! array the kernel never touches, because a user write of a per-CPU
//! value replaces every CPU's copy and would wipe what the kernel counted
//! meanwhile. A counter's total is its slot in every CPU's block plus its
//! slot in `DAEMON_STATS`, under the same index.

use crate::sip::{Method, METHOD_COUNT};

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program saw.
    RxPackets = 0,
    /// UDP datagrams to a configured SIP port (whole, non-fragmented).
    SipPortDatagrams,
    /// `\r\n\r\n` received.
    CrlfPing,
    /// `\r\n` pong sent with XDP_TX.
    CrlfPongSent,
    /// `\r\n\r\n` dropped because `udp_crlf` is `drop`.
    CrlfDropped,
    /// Lone `\r\n` (a pong or a keep-alive that wants no answer).
    CrlfLone,
    /// RFC 5389/8489 Binding requests received.
    StunReq,
    /// STUN Binding success responses sent (both generations).
    StunResp,
    /// Binding requests dropped because their FINGERPRINT was wrong.
    StunBadFp,
    /// RFC 3489 Binding requests (no magic cookie) received.
    StunClassic,
    /// STUN messages passed to the stack (the daemon answers them).
    StunPassed,
    /// STUN requests dropped because `stun` is `drop`.
    StunDropped,
    /// In-dialog keep-alive whose dialog is in `DIALOGS`.
    KaInDialog,
    /// In-dialog keep-alive whose Call-ID is not in `DIALOGS`.
    KaUnknownDialog,
    Resp1xx,
    Resp2xx,
    Resp3xx,
    Resp4xx,
    Resp5xx,
    Resp6xx,
    /// Any other payload on a SIP port.
    Other,
    /// IP fragments (always passed).
    PassFragment,
    /// A keep-alive that is never answered because of its addresses: a
    /// multicast, broadcast, loopback or unspecified source (or port 0), or
    /// a multicast or broadcast destination.
    PassBadAddress,
    /// A keep-alive whose IPv4 header or UDP checksum is wrong (or a zero
    /// UDP checksum over IPv6); the stack drops it.
    PassBadChecksum,
    /// Truncated or inconsistent headers or lengths.
    PassMalformed,
    /// A STUN or SIP message longer than the fast path reads.
    PassTooLong,
    /// Dropped by the ACL.
    DropAcl,
    /// Dropped because the source is over its answer rate.
    DropRateLimit,
    /// SIP requests (all methods).
    SipRequests,
    /// SIP responses (all classes).
    SipResponses,
    /// A keep-alive in a frame sent to an Ethernet group address
    /// (broadcast, multicast) or from one: never answered.
    PassEthGroup,
    /// A keep-alive in a frame sent to a unicast MAC that is not the
    /// interface's (flooded, mirrored, or during a failover), or while the
    /// interface's MAC is not configured: never answered.
    PassOtherHost,
    /// A keep-alive over IPv4 with options (IHL > 5): passed, so options
    /// such as source routes are never echoed back.
    PassIpOptions,
    // The daemon's userspace responder (written by the daemon only: the
    // kernel never touches these slots).
    /// `\r\n\r\n` received by the userspace responder.
    UserCrlfPing,
    /// `\r\n` sent by the userspace responder.
    UserCrlfPongSent,
    /// STUN Binding requests received by the userspace responder.
    UserStunReq,
    /// Binding success responses sent by the userspace responder.
    UserStunResp,
    /// Binding error responses (400, 401, 420) sent by the userspace
    /// responder.
    UserStunError,
    /// Requests with a wrong FINGERPRINT dropped by the userspace responder.
    UserStunBadFp,
    /// Datagrams the userspace responder ignored (neither keep-alive nor a
    /// STUN request it answers).
    UserIgnored,
    /// Answers the userspace responder refused: their source was over
    /// its rate (`rate_limit_pps` / `rate_limit_burst`).
    UserDropRateLimit,
    /// Datagrams from a banned source the userspace responder dropped
    /// (`--xdp off`, or a ban not yet seen by XDP).
    UserDropBanned,
    /// Packets (UDP and TCP) to a SIP port from a banned source, dropped
    /// first: one counter per `BanReason`, in its order.
    DropBanScanner,
    DropBanAuth,
    DropBanRefused,
    DropBanFlood,
    DropBanList,
    DropBanManual,
}

/// Names of the [`Counter`] block, in index order, as printed by
/// `sip-ka stats`.
pub const COUNTER_NAMES: [&str; NAMED_COUNTERS] = [
    "rx_packets",
    "sip_port_datagrams",
    "crlf_ping",
    "crlf_pong_sent",
    "crlf_dropped",
    "crlf_lone",
    "stun_req",
    "stun_resp",
    "stun_bad_fp",
    "stun_classic",
    "stun_passed",
    "stun_dropped",
    "ka_in_dialog",
    "ka_unknown_dialog",
    "resp_1xx",
    "resp_2xx",
    "resp_3xx",
    "resp_4xx",
    "resp_5xx",
    "resp_6xx",
    "other",
    "pass_fragment",
    "pass_bad_address",
    "pass_bad_checksum",
    "pass_malformed",
    "pass_too_long",
    "drop_acl",
    "drop_rate_limit",
    "sip_requests",
    "sip_responses",
    "pass_eth_group",
    "pass_other_host",
    "pass_ip_options",
    "user_crlf_ping",
    "user_crlf_pong_sent",
    "user_stun_req",
    "user_stun_resp",
    "user_stun_error",
    "user_stun_bad_fp",
    "user_ignored",
    "user_drop_rate_limit",
    "user_drop_banned",
    "drop_ban_scanner",
    "drop_ban_auth",
    "drop_ban_refused",
    "drop_ban_flood",
    "drop_ban_list",
    "drop_ban_manual",
];

pub const NAMED_COUNTERS: usize = Counter::DropBanManual as usize + 1;
/// First index of the per-method SIP request block.
pub const SIP_METHOD_BASE: u32 = NAMED_COUNTERS as u32;
/// First index of the edge proxy's block: slots the daemon writes in edge
/// mode (the kernel never touches them); their names come from the daemon.
pub const EDGE_BASE: u32 = SIP_METHOD_BASE + (METHOD_COUNT as u32) * 4;
/// Slots reserved for the edge block (room for counters to come: a
/// change resizes the pinned STATS map).
pub const EDGE_SLOTS: u32 = 64;
/// Total number of counter indices (the slots of `DAEMON_STATS`).
pub const NUM_COUNTERS: u32 = EDGE_BASE + EDGE_SLOTS;
/// Slots of the kernel's block: every index below the edge's block (the
/// responder's named slots in it stay zero there), rounded up to a power
/// of two so that a masked index is in bounds whatever the compiler made
/// of the range check. The slots from `EDGE_BASE` on are never counted.
pub const KERNEL_SLOTS: usize = (EDGE_BASE as usize).next_power_of_two();

/// The value of `STATS`'s one entry, one copy per CPU: the program's
/// counters, indexed by [`Counter`] and [`sip_request_index`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub slots: [u64; KERNEL_SLOTS],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            slots: [0; KERNEL_SLOTS],
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Stats {}

/// Index of the counter for a SIP request of `method`, inside a dialog (the
/// To header has a tag) or not, with a body or without.
#[inline(always)]
pub const fn sip_request_index(method: u32, in_dialog: bool, has_body: bool) -> u32 {
    SIP_METHOD_BASE + method * 4 + (in_dialog as u32) * 2 + has_body as u32
}

/// The (method, in_dialog, has_body) a SIP request slot stands for.
pub const fn sip_request_slot(index: u32) -> Option<(Method, bool, bool)> {
    if index < SIP_METHOD_BASE || index >= EDGE_BASE {
        return None;
    }
    let off = index - SIP_METHOD_BASE;
    Some((Method::ALL[(off / 4) as usize], off % 4 >= 2, off % 2 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_enum_order() {
        assert_eq!(COUNTER_NAMES[Counter::CrlfPing as usize], "crlf_ping");
        assert_eq!(COUNTER_NAMES[Counter::StunBadFp as usize], "stun_bad_fp");
        assert_eq!(
            COUNTER_NAMES[Counter::DropRateLimit as usize],
            "drop_rate_limit"
        );
        assert_eq!(COUNTER_NAMES[NAMED_COUNTERS - 1], "drop_ban_manual");
        assert_eq!(
            COUNTER_NAMES[Counter::UserDropBanned as usize],
            "user_drop_banned"
        );
        for r in crate::maps::BanReason::ALL {
            let i = Counter::DropBanScanner as usize + r as usize;
            assert_eq!(COUNTER_NAMES[i], alloc_free_name(r.name()));
        }
    }

    /// `drop_ban_<reason>`, compared without allocating.
    fn alloc_free_name(reason: &str) -> &'static str {
        COUNTER_NAMES
            .iter()
            .find(|n| n.strip_prefix("drop_ban_") == Some(reason))
            .copied()
            .unwrap_or("")
    }

    #[test]
    fn the_kernel_block_covers_every_kernel_index() {
        assert!(KERNEL_SLOTS >= EDGE_BASE as usize);
        assert!(KERNEL_SLOTS.is_power_of_two());
    }

    #[test]
    fn sip_slots_round_trip() {
        for m in Method::ALL {
            for in_dialog in [false, true] {
                for body in [false, true] {
                    let idx = sip_request_index(m as u32, in_dialog, body);
                    assert!(idx < NUM_COUNTERS);
                    assert_eq!(sip_request_slot(idx), Some((m, in_dialog, body)));
                }
            }
        }
        assert_eq!(sip_request_slot(EDGE_BASE), None);
    }
}
