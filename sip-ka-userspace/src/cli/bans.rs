//! `sip-ka bans`: the sources the fast path drops (the BANS map), and
//! bans added or lifted by hand. Works while the daemon runs (it takes the
//! change within a second and tells the other edges) and while none does
//! (the program keeps dropping, and lifts each ban on time by itself).

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use sip_ka_common::maps::BanReason;

use super::args::PinDir;
use crate::{
    bpf::pins,
    shield::{
        always_spared,
        writer::{key_of, read_map, Clocks},
        Ban, Prefix, FOREVER,
    },
};

#[derive(Args, Debug)]
pub struct BansArgs {
    #[command(subcommand)]
    pub action: Option<BansAction>,
    /// Print a JSON array instead of a table (listing only).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

#[derive(Subcommand, Debug)]
pub enum BansAction {
    /// Ban an address or a prefix (e.g. `203.0.113.7`, `203.0.113.0/24`,
    /// `2001:db8:1:2::/64`): its packets to the SIP ports are dropped at
    /// once.
    Add {
        /// The address or CIDR.
        prefix: Prefix,
        /// How long (`90`, `90s`, `10m`, `2h`, `1d`); without it the ban
        /// holds until removed.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Why, in a few words (kept with the ban, at most 32 bytes).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Lift the ban on an address or prefix, as it is listed.
    Remove {
        /// The address or CIDR.
        prefix: Prefix,
    },
}

/// `90`, `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds or e.g. 10m, 2h, 1d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(secs) if secs > 0 && secs <= 10 * 365 * 86_400 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{s:?}: between 1 second and 10 years")),
    }
}

pub fn bans(args: BansArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    let mut map = pins.bans()?;
    let c = Clocks::now();
    match args.action {
        None => list(&read_map(&map, &c), &c, args.json),
        Some(BansAction::Add {
            prefix,
            duration,
            reason,
        }) => {
            if always_spared().iter().any(|s| s.overlaps(&prefix)) {
                bail!("{prefix} covers loopback or an unspecified address: never banned");
            }
            if reason.len() > sip_ka_common::maps::BAN_NOTE_LEN {
                bail!("--reason: at most 32 bytes");
            }
            let ban = Ban {
                prefix,
                reason: BanReason::Manual,
                evidence: 0,
                strikes: 0,
                since_unix: c.now_ms / 1000,
                until_ms: match duration {
                    Some(d) => c.now_ms.saturating_add(d.as_millis() as u64),
                    None => FOREVER,
                },
                note: reason,
            };
            map.insert(&key_of(&prefix), c.to_map(&ban), 0)
                .with_context(|| format!("writing the ban of {prefix} to BANS"))?;
            match duration {
                Some(d) => println!("banned {prefix} for {} s", d.as_secs()),
                None => println!("banned {prefix} until removed"),
            }
            Ok(())
        }
        Some(BansAction::Remove { prefix }) => {
            map.remove(&key_of(&prefix)).with_context(|| {
                format!("{prefix} is not banned (give it as `sip-ka bans` lists it)")
            })?;
            println!("lifted the ban on {prefix}");
            Ok(())
        }
    }
}

fn list(all: &[Ban], c: &Clocks, json: bool) -> Result<()> {
    let mut rows: Vec<&Ban> = all.iter().filter(|b| b.in_force(c.now_ms)).collect();
    rows.sort_by_key(|b| (std::cmp::Reverse(b.since_unix), b.prefix));
    let left = |b: &Ban| (b.until_ms != FOREVER).then(|| b.until_ms.saturating_sub(c.now_ms));
    if json {
        let arr: Vec<_> = rows
            .iter()
            .map(|b| {
                serde_json::json!({
                    "prefix": b.prefix.to_string(),
                    "reason": b.reason.name(),
                    "evidence": b.evidence,
                    "strikes": b.strikes,
                    "since_unix": b.since_unix,
                    "expires_in_ms": left(b),
                    "note": b.note,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(arr));
        return Ok(());
    }
    println!(
        "{:<28} {:<8} {:>8} {:>7} {:>9} {:>10}  NOTE",
        "SOURCE", "REASON", "EVIDENCE", "STRIKES", "SINCE(s)", "EXPIRES(s)"
    );
    let now_unix = c.now_ms / 1000;
    for b in &rows {
        println!(
            "{:<28} {:<8} {:>8} {:>7} {:>9} {:>10}  {}",
            b.prefix.to_string(),
            b.reason.name(),
            b.evidence,
            b.strikes,
            now_unix.saturating_sub(b.since_unix),
            left(b).map_or("never".to_string(), |ms| ms.div_ceil(1000).to_string()),
            b.note
        );
    }
    println!("{} ban(s) in force", rows.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "0", "m", "5w", "-1", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
