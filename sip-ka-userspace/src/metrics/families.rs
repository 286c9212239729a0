//! The metric families the endpoint exposes: name, type and help. The
//! order here is the order of the page.

/// How a family is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic; the exposed name gets `_total`.
    Counter,
    Gauge,
    /// A constant 1 carrying labels; the exposed name gets `_info`.
    Info,
}

/// One family. `name` is the base name: the encoder appends `_total` to a
/// counter's and `_info` to an info's.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Family {
    /// The name samples carry on the page.
    pub fn exposed(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge => self.name.to_string(),
            Kind::Info => format!("{}_info", self.name),
        }
    }
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

pub const BUILD: &str = "sipka_build";
pub const DIALOGS: &str = "sipka_dialogs";
pub const PEERS: &str = "sipka_peers";
pub const CONNECTIONS: &str = "sipka_connections";
pub const PBX_UP: &str = "sipka_pbx_up";
pub const STORE_UP: &str = "sipka_edge_store_up";
pub const REPLICAS: &str = "sipka_edge_dialog_replicas";
pub const PBX_RTT: &str = "sipka_pbx_rtt_seconds";
pub const BANS: &str = "sipka_bans";
pub const BANNED: &str = "sipka_banned_sources";
pub const EVIDENCE: &str = "sipka_shield_sources";

pub const ALL: &[Family] = &[
    Family {
        name: BUILD,
        kind: Kind::Info,
        help: "The running daemon: version, XDP attach mode (native, skb, off, or inherited \
               when it replaced the program behind an existing link) and interface",
    },
    counter(
        "sipka_keepalives",
        "Keep-alives by where they were handled (path: xdp, responder = the daemon's UDP \
         responder, edge = the edge proxy), kind and what was done: answered, rejected \
         (an error answer: STUN 4xx, SIP 481/503), dropped (policy), invalid (wrong STUN \
         FINGERPRINT, dropped), passed (to the stack). kind=stun counts both STUN generations \
         once answered; path=edge,kind=crlf is CRLF on TCP/TLS connections; kind=ws_crlf a \
         CRLF frame on a WebSocket, ws_ping a client's Ping (answered Pong), ws_ping_sent the \
         edge's own Pings on idle WebSockets (sent, answered)",
    ),
    counter(
        "sipka_keepalives_received",
        "Keep-alives received, by path and kind (crlf_lone: a lone CRLF, dropped or passed \
         by the lone_crlf policy)",
    ),
    counter(
        "sipka_xdp_packets",
        "Packets the XDP program passed to the stack or dropped other than by keep-alive \
         policy, by reason (other_payload: anything on a SIP port that is neither a \
         keep-alive nor a SIP request it classifies)",
    ),
    counter("sipka_xdp_rx_packets", "Packets the XDP program saw"),
    counter(
        "sipka_xdp_sip_port_datagrams",
        "Whole UDP datagrams to a configured SIP port, seen by the XDP program",
    ),
    counter(
        "sipka_xdp_sip_messages",
        "SIP requests and responses classified by the XDP program",
    ),
    counter(
        "sipka_sip_requests",
        "SIP requests classified by the XDP program, by method, inside a dialog (To tag) \
         or not, with a body or not",
    ),
    counter(
        "sipka_sip_responses",
        "SIP responses seen by the XDP program, by class",
    ),
    counter(
        "sipka_xdp_dialog_keepalives",
        "In-dialog keep-alives (UPDATE, INFO, MESSAGE, OPTIONS without a body) seen by the \
         XDP program, by whether the Call-ID is a live dialog in DIALOGS",
    ),
    counter(
        "sipka_responder_ignored",
        "Datagrams the userspace responder ignored (neither a keep-alive nor a STUN request \
         it answers)",
    ),
    counter(
        "sipka_responder_rate_limited",
        "Answers the userspace responder refused: the source was over its rate \
         (rate_limit_pps, rate_limit_burst)",
    ),
    counter(
        "sipka_edge_forwarded",
        "SIP messages the edge sent on, by type, either direction",
    ),
    counter(
        "sipka_edge_rejected_requests",
        "Requests the edge answered with an error instead of forwarding them, by reason \
         (malformed: 400/505/513, too_many_hops: 483, loop: 482, unroutable: 404, \
         session_timer: 422/481)",
    ),
    counter(
        "sipka_responder_banned_dropped",
        "Datagrams from banned sources the userspace responder dropped (--xdp off, or a ban \
         XDP had not seen yet)",
    ),
    counter(
        BANS,
        "Bans put in force, by reason (scanner: a scanner's User-Agent, auth: failed logins \
         and unknown users as the PBX answered them, refused: requests the edge refused, \
         flood: too many requests, list: --blocklist, manual: sip-ka bans add)",
    ),
    gauge(BANNED, "Addresses and prefixes banned now, by reason"),
    gauge(
        EVIDENCE,
        "Sources the shield keeps evidence on (capped by --ban-max-sources)",
    ),
    counter(
        "sipka_edge_dropped",
        "Messages the edge dropped, by reason (unanswerable: garbage or responses not ours, \
         error_too_large: an error answer larger than the request allows, forged_response: \
         a branch the edge never sent by that flow)",
    ),
    counter(
        "sipka_edge_flow_failed",
        "Requests answered 430 or responses dropped because the UA's connection is gone",
    ),
    counter(
        "sipka_edge_acks_absorbed",
        "ACKs for final responses the edge generated (not forwarded)",
    ),
    counter(
        "sipka_edge_keepalives_to_responder",
        "CRLF and STUN datagrams the edge handed to the userspace responder",
    ),
    counter(
        "sipka_edge_connections_accepted",
        "TCP, TLS and WebSocket connections accepted",
    ),
    counter(
        "sipka_edge_connections_refused",
        "TCP/TLS connections refused (--max-connections, --max-connections-per-ip)",
    ),
    counter(
        "sipka_edge_connections_closed",
        "TCP, TLS and WebSocket connections the edge closed, by reason (idle, framing: lost \
         framing, an oversized or malformed frame, or a failed TLS handshake, message_timeout, \
         fair_share: the largest source's oldest, to let another source in at \
         --max-connections, banned: its source was banned, ping_timeout: a WebSocket that \
         left three Pings unanswered)",
    ),
    counter(
        "sipka_edge_websocket_handshakes",
        "WebSocket upgrades, by result (accepted; no_sip_subprotocol: answered 400; \
         origin_refused: an Origin not in --ws-origin, answered 403; failed: a TLS handshake \
         or HTTP upgrade that failed or did not come within 10 s)",
    ),
    counter(
        "sipka_edge_keepalive_negotiations",
        "ms-keep-alive offers on connections, by result (accepted, malformed: repeated or \
         malformed, not negotiated)",
    ),
    counter(
        "sipka_edge_outbound_registers",
        "Outbound REGISTERs given a Path with a flow token",
    ),
    counter(
        "sipka_edge_sessions_expired",
        "Dialogs whose RFC 4028 session timer expired",
    ),
    counter(
        "sipka_edge_sessions_reaped",
        "Expired dialogs ended with a BYE to both sides (--reap-expired)",
    ),
    counter(
        "sipka_edge_dialogs_idle_ended",
        "Confirmed dialogs ended after --dialog-idle-timeout without in-dialog traffic",
    ),
    counter(
        "sipka_edge_dialogs_restored",
        "Dialogs read back from the state directory when the daemon started",
    ),
    counter(
        "sipka_edge_retransmissions",
        "Requests from TCP/TLS UAs retransmitted to the PBX over UDP",
    ),
    counter(
        "sipka_edge_evictions",
        "Entries dropped from a full table, by table (pending_dialogs, pending_registers)",
    ),
    counter(
        "sipka_edge_store_writes",
        "Changes for the shared store (--state-store), by result: written, failed (store \
         unreachable) or dropped (queue full); failed and dropped ones are re-published later",
    ),
    counter(
        "sipka_edge_store_disconnects",
        "Connections to the shared store lost",
    ),
    counter(
        "sipka_edge_dialog_handovers",
        "Dialogs that changed edge: claimed by this one (traffic came here, or the owner's \
         lease lapsed) or released to another",
    ),
    counter(
        "sipka_edge_store_changes_applied",
        "Changes of other edges' dialogs and bindings applied here",
    ),
    gauge(
        STORE_UP,
        "Whether the shared store is reachable (1) or not (0); 0 without --state-store",
    ),
    gauge(
        REPLICAS,
        "Dialogs other edges own, replicated here (warm standby)",
    ),
    gauge(DIALOGS, "Live dialogs in the edge's table"),
    gauge(
        PEERS,
        "Sources in the PEERS map (keep-alive senders the XDP program remembers, at most \
         65536, least recently seen out first)",
    ),
    gauge(
        CONNECTIONS,
        "Open TCP/TLS connections to the edge, by transport (handshake: not yet known to \
         be TCP or TLS)",
    ),
    gauge(
        PBX_UP,
        "Whether the PBX answers the edge's OPTIONS (1) or not, or not yet (0)",
    ),
    gauge(
        PBX_RTT,
        "Round-trip time of the PBX's last answer to the edge's OPTIONS (absent while down)",
    ),
];

/// The family named `name` (base name).
pub fn find(name: &str) -> Option<&'static Family> {
    ALL.iter().find(|f| f.name == name)
}
