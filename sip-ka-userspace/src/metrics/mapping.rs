//! Which series each counter of STATS and of the edge is exposed as:
//! `sipka_` families with labels, never one name per counter.

use sip_ka_common::counters::{sip_request_slot, COUNTER_NAMES, NAMED_COUNTERS};

use super::families::{PBX_RTT, PBX_UP, REPLICAS, STORE_UP};

/// Label pairs of one series.
pub type Labels = Vec<(&'static str, String)>;

/// Where one counter goes: its family (base name), labels, and how many
/// of the counter's units make one of the family's base unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub family: &'static str,
    pub labels: Labels,
    pub divisor: f64,
}

fn series(family: &'static str, labels: &[(&'static str, &str)]) -> Series {
    Series {
        family,
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        divisor: 1.0,
    }
}

fn keepalive(path: &str, kind: &str, action: &str) -> Series {
    series(
        "sipka_keepalives",
        &[("path", path), ("kind", kind), ("action", action)],
    )
}

fn received(path: &str, kind: &str) -> Series {
    series(
        "sipka_keepalives_received",
        &[("path", path), ("kind", kind)],
    )
}

fn xdp_packets(outcome: &str, reason: &str) -> Series {
    series(
        "sipka_xdp_packets",
        &[("outcome", outcome), ("reason", reason)],
    )
}

/// The series of STATS slot `index` (the XDP program's counters, the
/// userspace responder's and the SIP request block); `None` for the edge
/// block (see [`edge_series`]) and past the end.
pub fn stats_series(index: u32) -> Option<Series> {
    if (index as usize) >= NAMED_COUNTERS {
        let (method, in_dialog, body) = sip_request_slot(index)?;
        return Some(series(
            "sipka_sip_requests",
            &[
                ("method", &method.name().to_ascii_lowercase()),
                ("in_dialog", if in_dialog { "true" } else { "false" }),
                ("body", if body { "true" } else { "false" }),
            ],
        ));
    }
    Some(match COUNTER_NAMES[index as usize] {
        "rx_packets" => series("sipka_xdp_rx_packets", &[]),
        "sip_port_datagrams" => series("sipka_xdp_sip_port_datagrams", &[]),
        "crlf_ping" => received("xdp", "crlf"),
        "crlf_pong_sent" => keepalive("xdp", "crlf", "answered"),
        "crlf_dropped" => keepalive("xdp", "crlf", "dropped"),
        "crlf_lone" => received("xdp", "crlf_lone"),
        "stun_req" => received("xdp", "stun"),
        "stun_resp" => keepalive("xdp", "stun", "answered"),
        "stun_bad_fp" => keepalive("xdp", "stun", "invalid"),
        "stun_classic" => received("xdp", "stun_classic"),
        "stun_passed" => keepalive("xdp", "stun", "passed"),
        "stun_dropped" => keepalive("xdp", "stun", "dropped"),
        "ka_in_dialog" => series("sipka_xdp_dialog_keepalives", &[("dialog", "known")]),
        "ka_unknown_dialog" => series("sipka_xdp_dialog_keepalives", &[("dialog", "unknown")]),
        "resp_1xx" => series("sipka_sip_responses", &[("class", "1xx")]),
        "resp_2xx" => series("sipka_sip_responses", &[("class", "2xx")]),
        "resp_3xx" => series("sipka_sip_responses", &[("class", "3xx")]),
        "resp_4xx" => series("sipka_sip_responses", &[("class", "4xx")]),
        "resp_5xx" => series("sipka_sip_responses", &[("class", "5xx")]),
        "resp_6xx" => series("sipka_sip_responses", &[("class", "6xx")]),
        "other" => xdp_packets("passed", "other_payload"),
        "pass_fragment" => xdp_packets("passed", "fragment"),
        "pass_bad_address" => xdp_packets("passed", "bad_address"),
        "pass_bad_checksum" => xdp_packets("passed", "bad_checksum"),
        "pass_malformed" => xdp_packets("passed", "malformed"),
        "pass_too_long" => xdp_packets("passed", "too_long"),
        "drop_acl" => xdp_packets("dropped", "acl"),
        "drop_rate_limit" => xdp_packets("dropped", "rate_limit"),
        "sip_requests" => series("sipka_xdp_sip_messages", &[("type", "request")]),
        "sip_responses" => series("sipka_xdp_sip_messages", &[("type", "response")]),
        "pass_eth_group" => xdp_packets("passed", "eth_group"),
        "pass_other_host" => xdp_packets("passed", "other_host"),
        "pass_ip_options" => xdp_packets("passed", "ip_options"),
        "user_crlf_ping" => received("responder", "crlf"),
        "user_crlf_pong_sent" => keepalive("responder", "crlf", "answered"),
        "user_stun_req" => received("responder", "stun"),
        "user_stun_resp" => keepalive("responder", "stun", "answered"),
        "user_stun_error" => keepalive("responder", "stun", "rejected"),
        "user_stun_bad_fp" => keepalive("responder", "stun", "invalid"),
        "user_ignored" => series("sipka_responder_ignored", &[]),
        "user_drop_rate_limit" => series("sipka_responder_rate_limited", &[]),
        "user_drop_banned" => series("sipka_responder_banned_dropped", &[]),
        "drop_ban_scanner" => xdp_packets("dropped", "banned_scanner"),
        "drop_ban_auth" => xdp_packets("dropped", "banned_auth"),
        "drop_ban_refused" => xdp_packets("dropped", "banned_refused"),
        "drop_ban_flood" => xdp_packets("dropped", "banned_flood"),
        "drop_ban_list" => xdp_packets("dropped", "banned_list"),
        "drop_ban_manual" => xdp_packets("dropped", "banned_manual"),
        _ => return None,
    })
}

/// The series of an edge value, by its name in the edge block of STATS
/// (`edge_` + counter, `edge_pbx_up`, `edge_pbx_rtt_us`).
pub fn edge_series(name: &str) -> Option<Series> {
    let counter = name.strip_prefix("edge_")?;
    let rejected = |reason| series("sipka_edge_rejected_requests", &[("reason", reason)]);
    let dropped = |reason| series("sipka_edge_dropped", &[("reason", reason)]);
    let closed = |reason| series("sipka_edge_connections_closed", &[("reason", reason)]);
    let ws_handshake = |result| series("sipka_edge_websocket_handshakes", &[("result", result)]);
    Some(match counter {
        "requests_forwarded" => series("sipka_edge_forwarded", &[("type", "request")]),
        "responses_forwarded" => series("sipka_edge_forwarded", &[("type", "response")]),
        "ka_in_dialog_ok" => keepalive("edge", "sip_in_dialog", "answered"),
        "ka_unknown_dialog" => keepalive("edge", "sip_in_dialog", "rejected"),
        "options_edge" => keepalive("edge", "options", "answered"),
        "options_pbx_up" => keepalive("edge", "options_pbx", "answered"),
        "options_pbx_down" => keepalive("edge", "options_pbx", "rejected"),
        "crlf_pings" => keepalive("edge", "crlf", "answered"),
        "ws_crlf_pings" => keepalive("edge", "ws_crlf", "answered"),
        "ws_pings_answered" => keepalive("edge", "ws_ping", "answered"),
        "ws_pings_sent" => keepalive("edge", "ws_ping_sent", "sent"),
        "ws_pongs_received" => keepalive("edge", "ws_ping_sent", "answered"),
        "ws_upgrades" => ws_handshake("accepted"),
        "ws_refused_protocol" => ws_handshake("no_sip_subprotocol"),
        "ws_refused_origin" => ws_handshake("origin_refused"),
        "ws_handshake_failed" => ws_handshake("failed"),
        "ws_ping_timeouts" => closed("ping_timeout"),
        "bad_requests" => rejected("malformed"),
        "too_many_hops" => rejected("too_many_hops"),
        "loops" => rejected("loop"),
        "unroutable" => rejected("unroutable"),
        "timer_rejects" => rejected("session_timer"),
        "dropped" => dropped("unanswerable"),
        "error_answers_dropped" => dropped("error_too_large"),
        "answers_dropped_size" => dropped("answer_too_large"),
        "responses_refused" => dropped("forged_response"),
        "banned_dropped" => dropped("banned"),
        "scanners_dropped" => dropped("scanner"),
        "banned_conns_closed" => closed("banned"),
        "flow_failed" => series("sipka_edge_flow_failed", &[]),
        "acks_absorbed" => series("sipka_edge_acks_absorbed", &[]),
        "other" => series("sipka_edge_keepalives_to_responder", &[]),
        "conns_accepted" => series("sipka_edge_connections_accepted", &[]),
        "conns_refused" => series("sipka_edge_connections_refused", &[]),
        "conns_evicted" => closed("fair_share"),
        "conns_idle_closed" => closed("idle"),
        "stream_errors" => closed("framing"),
        "conns_message_timeout" => closed("message_timeout"),
        "ms_keepalive_negotiated" => series(
            "sipka_edge_keepalive_negotiations",
            &[("result", "accepted")],
        ),
        "ms_keepalive_bad" => series(
            "sipka_edge_keepalive_negotiations",
            &[("result", "malformed")],
        ),
        "registers_outbound" => series("sipka_edge_outbound_registers", &[]),
        "sessions_expired" => series("sipka_edge_sessions_expired", &[]),
        "sessions_reaped" => series("sipka_edge_sessions_reaped", &[]),
        "dialogs_idle_ended" => series("sipka_edge_dialogs_idle_ended", &[]),
        "dialogs_restored" => series("sipka_edge_dialogs_restored", &[]),
        "retransmissions" => series("sipka_edge_retransmissions", &[]),
        "dialogs_pending_evicted" => {
            series("sipka_edge_evictions", &[("table", "pending_dialogs")])
        }
        "registers_pending_evicted" => {
            series("sipka_edge_evictions", &[("table", "pending_registers")])
        }
        "store_up" => series(STORE_UP, &[]),
        "dialog_replicas" => series(REPLICAS, &[]),
        "store_writes" => series("sipka_edge_store_writes", &[("result", "written")]),
        "store_write_failures" => series("sipka_edge_store_writes", &[("result", "failed")]),
        "store_queue_dropped" => series("sipka_edge_store_writes", &[("result", "dropped")]),
        "store_disconnects" => series("sipka_edge_store_disconnects", &[]),
        "dialogs_claimed" => series("sipka_edge_dialog_handovers", &[("direction", "claimed")]),
        "dialogs_released" => series("sipka_edge_dialog_handovers", &[("direction", "released")]),
        "dialogs_replicated" => series("sipka_edge_store_changes_applied", &[]),
        "pbx_up" => series(PBX_UP, &[]),
        "pbx_rtt_us" => Series {
            divisor: 1e6,
            ..series(PBX_RTT, &[])
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use sip_ka_common::counters::{sip_request_index, EDGE_BASE};
    use sip_ka_common::sip::Method;

    use super::*;
    use crate::bpf::stats::{counter_name, edge};
    use crate::metrics::families::{self, Kind};

    /// Every counter there is: each STATS slot below the edge block, then
    /// each name of the edge block.
    fn every_mapping() -> Vec<(String, Series)> {
        let mut all = Vec::new();
        for i in 0..EDGE_BASE {
            let s = stats_series(i)
                .unwrap_or_else(|| panic!("STATS slot {i} ({}) has no series", counter_name(i)));
            all.push((counter_name(i), s));
        }
        for name in edge::names() {
            let s =
                edge_series(&name).unwrap_or_else(|| panic!("edge counter {name} has no series"));
            all.push((name, s));
        }
        all
    }

    #[test]
    fn every_counter_has_a_series_of_its_own() {
        let all = every_mapping();
        let mut seen: BTreeMap<(String, Labels), String> = BTreeMap::new();
        for (name, s) in &all {
            if let Some(other) = seen.insert((s.family.to_string(), s.labels.clone()), name.clone())
            {
                panic!("{name} and {other} are both {} {:?}", s.family, s.labels);
            }
        }
        assert_eq!(
            all.len(),
            EDGE_BASE as usize + edge::names().len(),
            "a counter went unmapped"
        );
    }

    #[test]
    fn every_series_is_in_a_declared_family_with_one_label_set() {
        let mut keys: BTreeMap<&str, BTreeSet<Vec<&str>>> = BTreeMap::new();
        for (name, s) in every_mapping() {
            let f = families::find(s.family)
                .unwrap_or_else(|| panic!("{name}: family {} not declared", s.family));
            assert!(f.name.starts_with("sipka_"), "{}", f.name);
            assert!(
                f.kind == Kind::Counter
                    || [PBX_UP, PBX_RTT, STORE_UP, REPLICAS].contains(&s.family),
                "{name}: a counter mapped to the {:?} {}",
                f.kind,
                f.name
            );
            for (k, v) in &s.labels {
                let ok = |t: &str| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                };
                assert!(ok(k) && ok(v), "{name}: label {k}={v:?}");
            }
            keys.entry(s.family)
                .or_default()
                .insert(s.labels.iter().map(|(k, _)| *k).collect());
        }
        for (family, sets) in keys {
            assert_eq!(
                sets.len(),
                1,
                "{family} has series with different label names: {sets:?}"
            );
        }
    }

    #[test]
    fn family_names_follow_prometheus_naming() {
        let mut names = BTreeSet::new();
        for f in families::ALL {
            assert!(names.insert(f.exposed()), "{} twice", f.name);
            assert!(f.name.starts_with("sipka_"), "{}", f.name);
            assert!(
                f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                f.name
            );
            // The encoder adds these; a base name with them would double them.
            assert!(
                !f.name.ends_with("_total") && !f.name.ends_with("_info"),
                "{}",
                f.name
            );
            assert!(!f.help.is_empty() && !f.help.ends_with('.'), "{}", f.name);
        }
    }

    #[test]
    fn sample_mappings() {
        let s = stats_series(sip_request_index(Method::Options as u32, true, false)).unwrap();
        assert_eq!(s.family, "sipka_sip_requests");
        assert_eq!(
            s.labels,
            vec![
                ("method", "options".to_string()),
                ("in_dialog", "true".to_string()),
                ("body", "false".to_string())
            ]
        );
        let s = stats_series(sip_ka_common::Counter::DropRateLimit as u32).unwrap();
        assert_eq!(s, xdp_packets("dropped", "rate_limit"));
        assert_eq!(
            stats_series(sip_ka_common::Counter::CrlfPongSent as u32),
            Some(keepalive("xdp", "crlf", "answered"))
        );
        assert_eq!(stats_series(EDGE_BASE), None);
        assert_eq!(edge_series("edge_pbx_rtt_us").unwrap().divisor, 1e6);
        assert_eq!(edge_series("edge_no_such_counter"), None);
        assert_eq!(edge_series("crlf_pings"), None);
    }
}
