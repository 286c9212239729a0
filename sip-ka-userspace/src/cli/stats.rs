//! `sip-ka stats`: counters summed over CPUs, as a table or JSON.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::args::PinDir;
use crate::{bpf::pins, bpf::stats::named_totals};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one JSON object: {"counters": {name: total, ...}}.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds (with the change since the last print).
    #[arg(long, value_name = "SECS")]
    pub watch: Option<f64>,
    /// Also print counters that are zero.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

pub fn stats(args: StatsArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    let stats = pins.stats()?;
    let mut last: Option<Vec<u64>> = None;
    loop {
        let totals = pins::counter_totals(&stats)?;
        let named = named_totals(&totals);
        if args.json {
            let counters: serde_json::Map<String, serde_json::Value> = named
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect();
            println!("{}", serde_json::json!({ "counters": counters }));
        } else {
            for (i, (name, v)) in named.iter().enumerate() {
                if *v == 0 && !args.all {
                    continue;
                }
                match &last {
                    Some(prev) => {
                        println!("{name:<40} {v:>14} {:>+12}", *v as i128 - prev[i] as i128)
                    }
                    None => println!("{name:<40} {v:>14}"),
                }
            }
        }
        let Some(secs) = args.watch else {
            return Ok(());
        };
        last = Some(totals);
        if !args.json {
            println!();
        }
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}
