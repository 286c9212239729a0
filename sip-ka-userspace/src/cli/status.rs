//! `sip-ka status`: one screen on the running daemon. Who it is and the
//! last minute's keep-alive rates come from the daemon (control socket,
//! which keeps that minute of STATS); the PBX's health from STATS.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Args;

use super::{
    args::PinDir,
    control::{self, Request},
    history::{Span, StatusInfo},
};
use crate::bpf::{pins, stats::named_totals};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object (the same fields, rates and counts unrounded).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

/// Keep-alives answered, by kind: the STATS counters (XDP, the userspace
/// responder, the edge) each kind's answers are counted in.
pub const KINDS: &[(&str, &[&str])] = &[
    (
        "crlf",
        &["crlf_pong_sent", "user_crlf_pong_sent", "edge_crlf_pings"],
    ),
    ("stun", &["stun_resp", "user_stun_resp"]),
    (
        "options",
        &[
            "edge_options_edge",
            "edge_options_pbx_up",
            "edge_options_pbx_down",
        ],
    ),
    ("in_dialog", &["edge_ka_in_dialog_ok"]),
];

/// Per kind: keep-alives answered between the span's samples, and per second.
pub fn rates(span: &Span) -> Vec<(&'static str, u64, f64)> {
    let first: BTreeMap<String, u64> = named_totals(&span.first).into_iter().collect();
    let last: BTreeMap<String, u64> = named_totals(&span.last).into_iter().collect();
    KINDS
        .iter()
        .map(|(kind, names)| {
            let n: u64 = names
                .iter()
                .map(|c| {
                    let b = first.get(*c).copied().unwrap_or(0);
                    last.get(*c).copied().unwrap_or(0).wrapping_sub(b)
                })
                .sum();
            let rate = if span.secs > 0.0 {
                n as f64 / span.secs
            } else {
                0.0
            };
            (*kind, n, rate)
        })
        .collect()
}

/// `1h 02m 03s`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, s) => format!("{s}s"),
        (0, 0, m, s) => format!("{m}m {s:02}s"),
        (0, h, m, s) => format!("{h}h {m:02}m {s:02}s"),
        (d, h, m, _) => format!("{d}d {h:02}h {m:02}m"),
    }
}

pub fn status(args: StatusArgs) -> Result<()> {
    let dir = &args.pin.pin_dir;
    let Some(reply) = control::request(dir, &Request::Status)? else {
        // Tell a program left attached (--keep-attached) from nothing.
        pins::Pins::attached(dir)?;
        bail!(
            "no sip-ka daemon runs with pin dir {} (its XDP program is still attached \
             and answering; `sip-ka stats` reads its counters)",
            dir.display()
        );
    };
    let info = match (reply.ok, reply.status) {
        (true, Some(info)) => info,
        _ => bail!(
            "the daemon did not answer `status`: {}",
            reply.error.as_deref().unwrap_or("no status in its answer")
        ),
    };
    let stats = pins::Pins::attached(dir)?.stats()?;
    let now: BTreeMap<String, u64> = named_totals(&pins::counter_totals(&stats)?)
        .into_iter()
        .collect();
    let bans = bans_line(dir, &now);
    let pbx = (info.identity.mode == "edge").then(|| {
        let up = now.get("edge_pbx_up") == Some(&1);
        let rtt_us = now.get("edge_pbx_rtt_us").copied().filter(|_| up);
        (up, rtt_us)
    });
    if args.json {
        let rates: serde_json::Map<String, serde_json::Value> = info
            .history
            .as_ref()
            .map(rates)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, n, r)| {
                (
                    k.to_string(),
                    serde_json::json!({ "answered": n, "per_second": r }),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "pid": info.identity.pid,
                "uptime_secs": info.uptime_secs,
                "iface": info.identity.iface,
                "xdp_mode": info.identity.xdp_mode,
                "prog_id": info.identity.prog_id,
                "pin_dir": dir,
                "mode": info.identity.mode,
                "pbx_up": pbx.map(|p| p.0),
                "pbx_rtt_us": pbx.and_then(|p| p.1),
                "dialogs": info.dialogs,
                "connections": info.connections.map(|[tcp, tls, ws, wss, hs]| {
                    serde_json::json!({
                        "tcp": tcp, "tls": tls, "ws": ws, "wss": wss, "handshake": hs
                    })
                }),
                "store": info.store,
                "bans": bans.as_ref().map(|b| serde_json::json!({
                    "in_force": b.0,
                    "by_reason": b.1,
                    "dropped": b.2,
                })),
                "window_secs": info.history.as_ref().map(|h| h.secs),
                "keepalives": rates,
            })
        );
        return Ok(());
    }
    let mut text = screen(&info, dir, pbx);
    if let Some((n, by, dropped)) = bans {
        let by: Vec<String> = by.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let by = if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        };
        text.push_str(&format!(
            "bans         {n} in force{by}; {dropped} packet(s) from banned sources dropped\n"
        ));
    }
    print!("{text}");
    Ok(())
}

/// Bans in force (in all and by reason) from the BANS map, and the
/// packets dropped for them (XDP and the daemon's own paths).
fn bans_line(
    dir: &std::path::Path,
    totals: &BTreeMap<String, u64>,
) -> Option<(usize, BTreeMap<&'static str, usize>, u64)> {
    use crate::shield::writer::{read_map, Clocks};
    let map = pins::Pins::attached(dir).ok()?.bans().ok()?;
    let c = Clocks::now();
    let mut by = BTreeMap::new();
    let mut n = 0;
    for b in read_map(&map, &c).iter().filter(|b| b.in_force(c.now_ms)) {
        n += 1;
        *by.entry(b.reason.name()).or_default() += 1;
    }
    let dropped = totals
        .iter()
        .filter(|(k, _)| {
            k.starts_with("drop_ban_") || *k == "user_drop_banned" || *k == "edge_banned_dropped"
        })
        .map(|(_, v)| *v)
        .sum();
    Some((n, by, dropped))
}

fn screen(info: &StatusInfo, dir: &std::path::Path, pbx: Option<(bool, Option<u64>)>) -> String {
    use std::fmt::Write as _;
    let id = &info.identity;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sip-ka {}: running, pid {}, up {}",
        env!("CARGO_PKG_VERSION"),
        id.pid,
        duration(info.uptime_secs)
    );
    let prog = id.prog_id.map_or("-".to_string(), |p| p.to_string());
    let _ = writeln!(
        s,
        "interface    {} (XDP {}, program id {prog})",
        id.iface.as_deref().unwrap_or("none"),
        id.xdp_mode
    );
    let _ = writeln!(s, "pin dir      {}", dir.display());
    let _ = writeln!(s, "mode         {}", id.mode);
    match pbx {
        Some((true, Some(us))) => {
            let _ = writeln!(s, "PBX          up, RTT {:.2} ms", us as f64 / 1000.0);
        }
        Some((true, None)) => {
            let _ = writeln!(s, "PBX          up");
        }
        Some((false, _)) => {
            let _ = writeln!(s, "PBX          DOWN (qualify unanswered)");
        }
        None => {}
    }
    if let Some(d) = info.dialogs {
        let _ = writeln!(s, "dialogs      {d} live");
    }
    if let Some([tcp, tls, ws, wss, hs]) = info.connections {
        let _ = writeln!(
            s,
            "connections  {tcp} TCP, {tls} TLS, {ws} WS, {wss} WSS, {hs} in handshake"
        );
    }
    if let Some(st) = &info.store {
        let state = if st.up {
            "up"
        } else {
            "UNREACHABLE (running on local state)"
        };
        let _ = writeln!(
            s,
            "store        {} {state}, node {}, {} dialog(s) of other edges replicated",
            st.url, st.node_id, st.replicas
        );
    }
    match &info.history {
        Some(span) if span.secs > 0.0 => {
            let _ = writeln!(
                s,
                "keep-alives answered per second, last {}:",
                duration(span.secs)
            );
            for (kind, n, rate) in rates(span) {
                let _ = writeln!(s, "  {kind:<10} {rate:>10.2}/s  ({n})");
            }
        }
        _ => {
            let _ = writeln!(s, "keep-alives  no rates yet (the daemon just started)");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::stats::counter_name;

    fn slot(name: &str) -> usize {
        (0..sip_ka_common::counters::NUM_COUNTERS)
            .find(|i| counter_name(*i) == name)
            .unwrap_or_else(|| panic!("no counter {name}")) as usize
    }

    #[test]
    fn rates_sum_each_kind_over_the_span() {
        let n = sip_ka_common::counters::NUM_COUNTERS as usize;
        let mut first = vec![0u64; n];
        first[slot("crlf_pong_sent")] = 100;
        let mut last = first.clone();
        last[slot("crlf_pong_sent")] = 160;
        last[slot("user_crlf_pong_sent")] = 30;
        last[slot("edge_crlf_pings")] = 30;
        last[slot("stun_resp")] = 12;
        last[slot("edge_options_pbx_up")] = 6;
        let span = Span {
            secs: 60.0,
            first,
            last,
        };
        let r = rates(&span);
        assert_eq!(
            r,
            vec![
                ("crlf", 120, 2.0),
                ("stun", 12, 0.2),
                ("options", 6, 0.1),
                ("in_dialog", 0, 0.0)
            ]
        );
    }

    #[test]
    fn the_screen_shows_the_shared_store_when_there_is_one() {
        let mut info: StatusInfo = serde_json::from_str(
            r#"{"pid":7,"iface":"eth0","xdp_mode":"native","prog_id":3,"mode":"edge",
                "uptime_secs":65.0,"dialogs":4,"connections":[1,0,0,0,0],"history":null}"#,
        )
        .unwrap();
        let dir = std::path::Path::new("/sys/fs/bpf/sip-ka");
        assert!(!screen(&info, dir, Some((true, None))).contains("store"));
        info.store = Some(super::super::history::StoreStatus {
            url: "redis://10.0.0.5:6379/0".into(),
            node_id: "edge-b".into(),
            up: false,
            replicas: 12,
        });
        let s = screen(&info, dir, Some((true, None)));
        assert!(
            s.contains(
                "store        redis://10.0.0.5:6379/0 UNREACHABLE (running on local state), \
                 node edge-b, 12 dialog(s) of other edges replicated"
            ),
            "{s}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5.9), "5s");
        assert_eq!(duration(65.0), "1m 05s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
        assert_eq!(duration(90000.0), "1d 01h 00m");
    }
}
