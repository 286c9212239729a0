//! `sip-ka stats`: counters summed over CPUs, as a table or JSON; with
//! `--watch`, again every few seconds with per-second rates.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::args::PinDir;
use crate::{bpf::pins, bpf::stats::named_totals};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one JSON object: {"counters": {name: total, ...}} (with
    /// --watch, one a line, with "per_second" from the second on).
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds (1 when no value is given), with
    /// each counter's change per second since the last print, until
    /// Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
    pub watch: Option<f64>,
    /// With --watch: stop after N prints.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
    /// Also print counters that are zero.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

/// STATS slots that hold a level, not a count: no rate.
const GAUGES: &[&str] = &[
    "edge_pbx_up",
    "edge_pbx_rtt_us",
    "edge_store_up",
    "edge_dialog_replicas",
];

/// Change per second of each counter between two reads `secs` apart.
pub fn per_second(prev: &[u64], now: &[u64], secs: f64) -> Vec<f64> {
    now.iter()
        .zip(prev)
        .map(|(n, p)| n.wrapping_sub(*p) as f64 / secs.max(1e-9))
        .collect()
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    let stats = pins.stats()?;
    let mut last: Option<(Instant, Vec<u64>)> = None;
    let mut printed = 0u64;
    loop {
        let totals = pins::counter_totals(&stats)?;
        let at = Instant::now();
        let named = named_totals(&totals);
        let rates = last
            .as_ref()
            .map(|(t, prev)| per_second(prev, &totals, at.duration_since(*t).as_secs_f64()));
        if args.json {
            let counters: serde_json::Map<String, serde_json::Value> = named
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect();
            let mut obj = serde_json::json!({ "counters": counters });
            if let Some(rates) = &rates {
                let r: serde_json::Map<String, serde_json::Value> = named
                    .iter()
                    .zip(rates)
                    .filter(|((k, _), _)| !GAUGES.contains(&k.as_str()))
                    .map(|((k, _), r)| (k.clone(), serde_json::Value::from(*r)))
                    .collect();
                obj["per_second"] = serde_json::Value::Object(r);
            }
            println!("{obj}");
        } else {
            if args.watch.is_some() {
                println!("{:<40} {:>14} {:>12}", "counter", "total", "per second");
            }
            for (i, (name, v)) in named.iter().enumerate() {
                if *v == 0 && !args.all {
                    continue;
                }
                match (&rates, args.watch) {
                    (Some(_), _) if GAUGES.contains(&name.as_str()) => {
                        println!("{name:<40} {v:>14} {:>12}", "-")
                    }
                    (Some(r), _) => println!("{name:<40} {v:>14} {:>12.2}", r[i]),
                    (None, Some(_)) => println!("{name:<40} {v:>14} {:>12}", "-"),
                    (None, None) => println!("{name:<40} {v:>14}"),
                }
            }
        }
        let Some(secs) = args.watch else {
            return Ok(());
        };
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        last = Some((at, totals));
        if !args.json {
            println!();
        }
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_divides_the_change_by_the_time() {
        assert_eq!(
            per_second(&[10, 5, 7], &[30, 5, 8], 2.0),
            vec![10.0, 0.0, 0.5]
        );
    }

    #[test]
    fn watch_takes_an_optional_value_and_count_needs_it() {
        use clap::Parser as _;
        let parse = |a: &[&str]| {
            crate::cli::Cli::try_parse_from(["sip-ka", "stats"].iter().chain(a)).map(|c| {
                match c.command {
                    crate::cli::Command::Stats(s) => (s.watch, s.count),
                    _ => unreachable!(),
                }
            })
        };
        assert_eq!(parse(&["--watch"]).unwrap(), (Some(1.0), None));
        assert_eq!(parse(&["--watch", "2.5"]).unwrap(), (Some(2.5), None));
        assert_eq!(
            parse(&["--watch", "--count", "3"]).unwrap(),
            (Some(1.0), Some(3))
        );
        assert_eq!(parse(&[]).unwrap(), (None, None));
        assert!(parse(&["--count", "3"]).is_err());
    }
}
