//! (f) The headline curve: the comparison's fixed-rate STUN Binding load
//! ([`stun_load`]) at a series of offered rates, against sip-ka's XDP
//! program, its userspace responder (`--xdp off`), Kamailio's stun module
//! and coturn, in one lab and one run. Each responder is started once and
//! takes every rate in turn; a table per responder, then the chart
//! ([`sweep_chart`]).

use std::io::Write as _;

use anyhow::{bail, Result};
use sip_ka::lab::SERVER_V4;

use super::measure::{ratio, Measure, Outcome, Peer};
use super::servers::SIP_PORT;
use super::stun::{reported, serve};
use super::stun_load::stun_load;
use super::sweep_chart::{draw, Line, Xy};
use super::Setup;
use crate::opts::Opts;

/// The responders, in the order they run and are drawn.
const PEERS: [Peer; 4] = [
    Peer::SipKaXdp,
    Peer::SipKaUser,
    Peer::Kamailio,
    Peer::Coturn,
];

/// The rate asked of the load generator for "as fast as it goes": its
/// pacing never waits, every `sendmmsg` carries a full batch.
const FLAT_OUT: u32 = u32::MAX;

/// One responder at one offered rate.
struct Point {
    peer: Peer,
    /// The rate asked for; 0 is the generator's maximum.
    rate: u32,
    outcome: Outcome,
}

impl Point {
    fn measured(&self) -> Option<&Measure> {
        match &self.outcome {
            Outcome::Measured(m) => Some(m),
            Outcome::NotAvailable(_) => None,
        }
    }
}

/// Requests that left the generator per second.
fn offered(m: &Measure) -> f64 {
    m.sent as f64 / m.elapsed.max(1e-9)
}

fn share(m: &Measure) -> f64 {
    100.0 * m.answered as f64 / m.sent.max(1) as f64
}

/// Server CPU per answer in microseconds (None without threaded NAPI).
fn cpu_us(m: &Measure) -> Option<f64> {
    m.server_per_answer().map(|ns| ns / 1000.0)
}

fn rate_label(rate: u32) -> String {
    if rate == 0 {
        "max".into()
    } else {
        rate.to_string()
    }
}

/// Runs the sweep, prints its tables and writes the chart to `--chart`.
pub(crate) fn sweep_bench(opts: &Opts) -> Result<()> {
    let rates = &opts.sweep_rates;
    if rates.is_empty() {
        bail!("--sweep-rates is empty");
    }
    let seconds = opts.sweep_seconds.clamp(1, 60);
    println!(
        "== (f) STUN sweep: answered share and CPU per answer against the offered rate ({} \
         rates x {seconds} s per responder)",
        rates.len()
    );
    let mut run = Setup::new(opts)?;
    let mut points = Vec::new();
    for peer in PEERS {
        let measured = serve(
            &mut run.lab,
            &run.dir.0,
            &run.modules,
            peer,
            |lab, procs| {
                let mut out = Vec::new();
                for &rate in rates {
                    print!("{} at {} per s ... ", peer.name(), rate_label(rate));
                    std::io::stdout().flush().ok();
                    let at = Opts {
                        stun_rate: if rate == 0 { FLAT_OUT } else { rate },
                        stun_seconds: seconds,
                        ..opts.clone()
                    };
                    let n = (run.server_napi.clone(), run.client_napi.clone());
                    // One rate that fails (a server that stopped answering at
                    // all) leaves the others measured.
                    let outcome = reported(stun_load(lab, &at, procs.clone(), n.0, n.1));
                    out.push(Point {
                        peer,
                        rate,
                        outcome,
                    });
                }
                Ok(out)
            },
        )?;
        match measured {
            Ok(p) => points.extend(p),
            Err(e) => {
                println!("{}: n/a: {e:#}", peer.name());
                points.extend(rates.iter().map(|&rate| Point {
                    peer,
                    rate,
                    outcome: Outcome::NotAvailable(format!("{e:#}")),
                }));
            }
        }
    }
    drop(run.lab);

    print_tables(opts, seconds, &points, run.background);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lines: Vec<Line> = PEERS
        .iter()
        .map(|&peer| Line {
            name: peer.name(),
            points: points
                .iter()
                .filter(|p| p.peer == peer)
                .filter_map(Point::measured)
                .map(|m| Xy {
                    offered: offered(m),
                    answered_pct: share(m),
                    cpu_us: cpu_us(m),
                })
                .collect(),
        })
        .collect();
    let caption = format!(
        "STUN Binding over a veth pair: {ncpu} CPUs shared by generator and responder, {seconds} \
         s per point"
    );
    draw(&opts.chart, &caption, &lines)?;
    println!("chart: {}", opts.chart.display());
    Ok(())
}

fn print_tables(opts: &Opts, seconds: u64, points: &[Point], background: f64) {
    let at = |peer: Peer, rate: u32| {
        points
            .iter()
            .find(|p| p.peer == peer && p.rate == rate)
            .and_then(Point::measured)
    };
    for peer in PEERS {
        println!();
        println!(
            "{:<29} {:>9} {:>8} {:>7} {:>8} | {:>10} {:>7} {:>8} | {:>9}",
            peer.name(),
            "",
            "",
            "÷ Kam.",
            "÷ coturn",
            "server CPU",
            "÷ Kam.",
            "÷ coturn",
            "machine"
        );
        println!(
            "{:<29} {:>9} {:>8} {:>7} {:>8} | {:>10} {:>7} {:>8} | {:>9}",
            "  offered per s (asked)",
            "sent/s",
            "answered",
            "share",
            "share",
            "us/answer",
            "",
            "",
            "us/answer"
        );
        for p in points.iter().filter(|p| p.peer == peer) {
            let Some(m) = p.measured() else {
                let why = match &p.outcome {
                    Outcome::NotAvailable(why) => why.as_str(),
                    Outcome::Measured(_) => "",
                };
                println!("  {:<27} n/a: {why}", rate_label(p.rate));
                continue;
            };
            let (k, c) = (at(Peer::Kamailio, p.rate), at(Peer::Coturn, p.rate));
            let cpu = cpu_us(m);
            println!(
                "  {:<27} {:>9.0} {:>7.1}% {:>7} {:>8} | {:>10} {:>7} {:>8} | {:>9.2}",
                rate_label(p.rate),
                offered(m),
                share(m),
                ratio(Some(share(m)), k.map(share)),
                ratio(Some(share(m)), c.map(share)),
                cpu.map_or("n/a".into(), |v| format!("{v:.2}")),
                ratio(cpu, k.and_then(cpu_us)),
                ratio(cpu, c.and_then(cpu_us)),
                m.machine_per_answer() / 1000.0,
            );
        }
    }
    println!();
    if background > 0.1 {
        println!(
            "warning: the machine was busy before the sweep ({:.0} ms of CPU per second): the \
             responders shared the CPUs with that work",
            background * 1000.0
        );
    }
    println!(
        "notes (sweep): each responder is started once and answers STUN on \
         udp/{SERVER_V4}:{SIP_PORT} while the comparison's load generator offers each rate in \
         turn for {seconds} s ({fp}, 8 source ports, answers counted until 0.5 s after the last \
         request); \"max\" is the generator sending as fast as it can. \"sent/s\" is what left \
         the generator: it shares the machine's CPUs with the responder, so where a responder \
         keeps them busy it falls short of the rate asked and the ratios on that line compare \
         different loads (the chart puts each point at its sent/s). \"share\" = answered / \
         sent; \"server CPU\" = CPU time of the responder's processes and of the server \
         veth's NAPI thread (where the XDP program runs) per answer; \"machine\" = busy CPU of \
         the whole machine less the generator's own threads, per answer. sip-ka: `run \
         --xdp-mode native` and `run --xdp off`, with the per-source answer limit off; \
         Kamailio: 2 UDP workers with the stun module; coturn: `turnserver --stun-only`.",
        fp = if opts.no_fingerprint {
            "no FINGERPRINT"
        } else {
            "with FINGERPRINT"
        },
    );
}
