//! The edge's counters: what it did with each message, connection and
//! dialog. They are published into the edge block of STATS.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal,)*) => {
        /// What the edge did, for the logs.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Counter names in order (`sip-ka stats` prints them with an
            /// `edge_` prefix, after them `edge_pbx_up` and `edge_pbx_rtt_us`).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    requests_forwarded: "Requests sent on (either direction).",
    responses_forwarded: "Responses sent on (either direction).",
    ka_in_dialog_ok: "In-dialog keep-alives answered 200.",
    ka_unknown_dialog: "In-dialog keep-alives answered 481.",
    options_edge: "OPTIONS to the edge answered 200.",
    options_pbx_up: "OPTIONS for the PBX answered 200 (PBX up).",
    options_pbx_down: "OPTIONS for the PBX answered 503 (PBX down).",
    bad_requests: "Malformed requests answered 400 (or 505/513).",
    too_many_hops: "Requests answered 483.",
    loops: "Requests answered 482.",
    unroutable: "Requests from the PBX with no UA address (answered 404).",
    dropped: "Datagrams dropped: unanswerable garbage, responses not ours.",
    acks_absorbed: "ACKs for final responses the edge generated (not forwarded).",
    other: "CRLF/STUN datagrams handed to the keep-alive responder.",
    crlf_pings: "CRLFCRLF pings on connections, answered CRLF.",
    conns_accepted: "TCP/TLS connections accepted.",
    conns_refused: "Connections refused: --max-connections-per-ip, or near --max-connections from a source holding the most.",
    conns_evicted: "Connections of the source holding the most closed to let another source in (the edge at --max-connections).",
    conns_idle_closed: "Connections closed after their idle time.",
    stream_errors: "Connections closed because framing was lost (bad Content-Length, oversize).",
    flow_failed: "Requests answered 430 or responses dropped: the UA's connection is gone.",
    ms_keepalive_negotiated: "ms-keep-alive offers accepted on a connection.",
    ms_keepalive_bad: "ms-keep-alive headers repeated or malformed (not negotiated).",
    registers_outbound: "Outbound REGISTERs given a Path with a flow token.",
    timer_rejects: "Refresh requests answered 422 (Min-SE) or 481 (session expired).",
    sessions_expired: "Dialogs whose session timer expired (dropped).",
    sessions_reaped: "Expired dialogs ended with a BYE to both sides (--reap-expired).",
    dialogs_idle_ended: "Confirmed dialogs ended after --dialog-idle-timeout without in-dialog traffic.",
    dialogs_restored: "Dialogs read back from the state directory at start.",
    retransmissions: "Requests from TCP/TLS UAs retransmitted to the PBX over UDP.",
    error_answers_dropped: "400s (or 505/513) to malformed UDP requests not sent: more than MAX_ERROR_GROWTH bytes larger than the request.",
    responses_refused: "Responses dropped because their branch names no request the edge sent by the flow they came by (forged answers).",
    dialogs_pending_evicted: "Unanswered INVITE dialogs dropped (oldest first) or not kept: --max-pending-dialogs/--max-pending-dialog-bytes reached.",
    registers_pending_evicted: "REGISTERs awaiting their answer dropped (oldest first) or not kept: --max-pending-registers/--max-pending-register-bytes reached.",
    conns_message_timeout: "Connections closed because a message took longer than --tcp-message-timeout from its first byte to its end.",
    store_up: "1 while the shared store (--state-store) is reachable, else 0: a level, not a count.",
    dialog_replicas: "Dialogs other edges own, replicated here (shared store): a level, not a count.",
    store_writes: "Changes written to the shared store (one per key).",
    store_write_failures: "Changes not written to the shared store (unreachable): re-published once it is back.",
    store_queue_dropped: "Changes dropped because the shared store's queue was full (re-published later).",
    store_disconnects: "Connections to the shared store lost.",
    dialogs_claimed: "Dialogs this edge took over from another (their traffic came here, or their owner's lease lapsed).",
    dialogs_released: "Dialogs another edge took over from this one.",
    dialogs_replicated: "Changes of other edges' dialogs and bindings applied here.",
    banned_dropped: "Messages and connections from banned sources dropped by the edge itself (what XDP did not drop).",
    scanners_dropped: "Requests with a scanner's User-Agent dropped (their source banned).",
    banned_conns_closed: "Open connections closed because their source was banned.",
    ws_upgrades: "WebSocket upgrades accepted (the `sip` subprotocol, an allowed Origin).",
    ws_refused_protocol: "WebSocket upgrades refused: no `sip` subprotocol offered (answered 400).",
    ws_refused_origin: "WebSocket upgrades refused: an Origin not in --ws-origin (answered 403).",
    ws_handshake_failed: "WebSocket connections that never completed their TLS or HTTP upgrade (malformed, or not within the handshake time).",
    ws_crlf_pings: "CRLFCRLF keep-alive frames on WebSocket connections, answered with a CRLF frame.",
    ws_pings_answered: "WebSocket Ping frames from clients, answered with a Pong.",
    ws_pings_sent: "WebSocket Pings the edge sent on idle connections (--ws-ping-interval).",
    ws_pongs_received: "WebSocket Pongs received (answers to the edge's Pings).",
    ws_ping_timeouts: "WebSocket connections closed after their Pings went unanswered.",
    answers_dropped_size: "The edge's own answers to UDP requests (keep-alives, refusals) not sent: more than MAX_ERROR_GROWTH bytes larger than the request, even without the capability headers.",
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Names of the edge block of STATS (`edge_` + counter, `edge_pbx_up`,
/// `edge_pbx_rtt_us`), in the order the edge publishes its values.
pub fn names() -> Vec<String> {
    Counters::NAMES
        .iter()
        .map(|n| format!("edge_{n}"))
        .chain(["edge_pbx_up".to_string(), "edge_pbx_rtt_us".to_string()])
        .collect()
}
