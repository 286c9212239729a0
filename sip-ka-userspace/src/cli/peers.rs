//! `sip-ka peers`: the live table of keep-alive sources (NAT bindings).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Result;
use clap::Args;
use sip_ka_common::maps::{as_v4, KIND_CRLF, KIND_SIP, KIND_STUN};

use super::args::PinDir;
use crate::{bpf::pins, util::clock};

#[derive(Args, Debug)]
pub struct PeersArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

fn kind_name(k: u32) -> &'static str {
    match k {
        KIND_CRLF => "crlf",
        KIND_STUN => "stun",
        KIND_SIP => "sip",
        _ => "-",
    }
}

pub fn addr_of(addr: &[u8; 16], port: u16) -> SocketAddr {
    let ip = match as_v4(addr) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(*addr)),
    };
    SocketAddr::new(ip, port)
}

pub fn peers(args: PeersArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    let now = clock::monotonic_ns();
    let mut rows: Vec<_> = pins
        .peer_table()?
        .into_iter()
        .map(|(k, v)| (addr_of(&k.addr, k.port), v))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.last_seen_ns));
    if args.json {
        let arr: Vec<_> = rows
            .iter()
            .map(|(a, v)| {
                serde_json::json!({
                    "source": a.to_string(),
                    "crlf": v.crlf,
                    "stun": v.stun,
                    "sip": v.sip,
                    "last_kind": kind_name(v.last_kind),
                    "first_seen_secs_ago": clock::age(now, v.first_seen_ns),
                    "last_seen_secs_ago": clock::age(now, v.last_seen_ns),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(());
    }
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>6} {:>12} {:>12}",
        "SOURCE", "CRLF", "STUN", "SIP", "LAST", "FIRST(s ago)", "LAST(s ago)"
    );
    for (a, v) in &rows {
        println!(
            "{:<46} {:>10} {:>10} {:>10} {:>6} {:>12.1} {:>12.1}",
            a.to_string(),
            v.crlf,
            v.stun,
            v.sip,
            kind_name(v.last_kind),
            clock::age(now, v.first_seen_ns),
            clock::age(now, v.last_seen_ns)
        );
    }
    println!("{} peer(s)", rows.len());
    Ok(())
}
