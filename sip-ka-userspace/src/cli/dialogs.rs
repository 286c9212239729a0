//! `sip-ka dialogs`: the live dialogs the edge mirrors into DIALOGS, with
//! the keep-alive count and time the XDP program keeps.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use sip_ka_common::maps::{DIALOG_CONFIRMED, DIALOG_EARLY, DIALOG_TERMINATING};

use super::args::PinDir;
use crate::{bpf::pins, util::clock};

#[derive(Args, Debug)]
pub struct DialogsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

pub fn state_name(s: u32) -> &'static str {
    match s {
        DIALOG_EARLY => "early",
        DIALOG_CONFIRMED => "confirmed",
        DIALOG_TERMINATING => "terminating",
        _ => "-",
    }
}

pub fn dialogs(args: DialogsArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    let map = pins.dialogs()?;
    let now_ns = clock::monotonic_ns();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = Vec::new();
    for entry in map.iter() {
        rows.push(entry?);
    }
    rows.sort_by_key(|(_, v)| std::cmp::Reverse(v.created_unix));
    let last_ka = |ns: u64| (ns != 0).then(|| clock::age(now_ns, ns));
    // RFC 4028 session: interval, refresher, seconds left (from the
    // absolute expiry the edge writes).
    let session = |v: &sip_ka_common::maps::DialogValue| {
        let (interval, refresher) = v.session()?;
        let refresher = refresher.map(|r| r.name());
        let left = (v.expires_unix != 0).then(|| v.expires_unix.saturating_sub(now_unix));
        Some((interval, refresher, left))
    };
    if args.json {
        let arr: Vec<_> = rows
            .iter()
            .map(|(k, v)| {
                serde_json::json!({
                    "call_id_hash": format!("{k:016x}"),
                    "state": state_name(v.state),
                    "age_secs": now_unix.saturating_sub(v.created_unix),
                    "ka_count": v.ka_count,
                    "last_ka_secs_ago": last_ka(v.last_ka_ns),
                    "session_interval_secs": session(v).map(|s| s.0),
                    "refresher": session(v).and_then(|s| s.1),
                    "session_expires_unix": (v.expires_unix != 0).then_some(v.expires_unix),
                    "session_left_secs": session(v).and_then(|s| s.2),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(());
    }
    println!(
        "{:<18} {:<12} {:>8} {:>10} {:>12} {:>8} {:>9} {:>8}",
        "CALL-ID HASH", "STATE", "AGE(s)", "KA", "LAST KA(s)", "SE(s)", "REFRESHER", "LEFT(s)"
    );
    for (k, v) in &rows {
        let s = session(v);
        let dash = || "-".to_string();
        println!(
            "{:<18} {:<12} {:>8} {:>10} {:>12} {:>8} {:>9} {:>8}",
            format!("{k:016x}"),
            state_name(v.state),
            now_unix.saturating_sub(v.created_unix),
            v.ka_count,
            last_ka(v.last_ka_ns)
                .map(|a| format!("{a:.1}"))
                .unwrap_or_else(|| "-".into()),
            s.map(|s| s.0.to_string()).unwrap_or_else(dash),
            s.and_then(|s| s.1).unwrap_or("-"),
            s.and_then(|s| s.2)
                .map(|l| l.to_string())
                .unwrap_or_else(dash),
        );
    }
    println!("{} dialog(s)", rows.len());
    Ok(())
}
