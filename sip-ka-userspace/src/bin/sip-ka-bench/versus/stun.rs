//! The STUN rows of the comparison: sip-ka's userspace responder
//! (`--xdp off`), Kamailio's stun module and coturn, one after the other,
//! each under the same fixed-rate STUN Binding load ([`stun_load`]).

use std::{io::Write as _, path::Path, time::Duration};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{Lab, SERVER_V4};

use super::measure::{ns, pool, ratio, Load, Measure, Outcome, Peer, Row};
use super::servers::{Kamailio, SIP_PORT};
use super::stun_load::{stun_load, wait_stun_ready};
use crate::opts::Opts;
use crate::veth::servers::{xdp_attached, Coturn};

/// What runs while a STUN row is measured; stops it when dropped.
enum Running {
    SipKa,
    Kamailio(Kamailio),
    Coturn(Coturn),
}

/// Starts `peer` as a STUN server on udp/198.18.0.1:5060.
fn start(lab: &mut Lab, dir: &Path, modules: &Path, peer: Peer) -> Result<Running> {
    Ok(match peer {
        Peer::Kamailio => Running::Kamailio(Kamailio::start(lab, dir, modules, true)?),
        Peer::Coturn => Running::Coturn(Coturn::start(lab)?),
        Peer::SipKaXdp => {
            lab.start_daemon(&["--xdp-mode", "native"])?;
            if !xdp_attached(lab)? {
                let _ = lab.stop_daemon();
                bail!(
                    "no XDP program on {}: the row would measure userspace",
                    lab.server_if
                );
            }
            unlimit(lab)?;
            Running::SipKa
        }
        _ => {
            let listen = format!("{SERVER_V4}:{SIP_PORT}");
            lab.start_daemon(&["--xdp", "off", "--listen", &listen])?;
            unlimit(lab)?;
            Running::SipKa
        }
    })
}

/// The load comes from one source address: the per-source answer limit
/// (on by default) would measure refusals, not answers.
fn unlimit(lab: &Lab) -> Result<()> {
    sip_ka::lab::run(&mut lab.sip_ka(&["config", "set", "rate_limit_pps", "0"])?)?;
    sip_ka::lab::run(&mut lab.sip_ka(&["config", "set", "rate_limit_addr_pps", "0"])?)?;
    // The daemon reads CONFIG every 500 ms.
    std::thread::sleep(Duration::from_millis(600));
    Ok(())
}

/// Starts `peer`, waits for its first STUN answer, runs `load` with the
/// pids of the server's processes, and stops the server. The outer error
/// is a server that could not be started or stopped; the inner one, a
/// server that never answered or a load that failed.
pub(super) fn serve<T>(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    peer: Peer,
    load: impl FnOnce(&Lab, Vec<u32>) -> Result<T>,
) -> Result<Result<T>> {
    let running = start(lab, dir, modules, peer)?;
    let ready = wait_stun_ready(lab);
    let procs = match &running {
        Running::Kamailio(k) => k.pids(),
        Running::Coturn(c) => vec![c.pid()],
        Running::SipKa => vec![lab.daemon_pid().context("daemon pid")?],
    };
    let measured = ready.and_then(|()| load(lab, procs));
    match running {
        Running::SipKa => {
            lab.stop_daemon()?;
        }
        other => drop(other),
    }
    Ok(measured)
}

/// A load's outcome, said on the progress line.
pub(super) fn reported(measured: Result<Measure>) -> Outcome {
    match measured {
        Ok(m) => {
            println!(
                "{} answered of {} sent in {:.2} s",
                m.answered, m.sent, m.elapsed
            );
            Outcome::Measured(m)
        }
        Err(e) => {
            println!("n/a: {e:#}");
            Outcome::NotAvailable(format!("{e:#}"))
        }
    }
}

/// Every `--rounds` round runs the three servers (in a rotating order)
/// under the STUN load; adds a row per server and round to `rows`.
#[allow(clippy::too_many_arguments)]
pub(super) fn stun_rows(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    opts: &Opts,
    server_napi: &Option<Vec<u32>>,
    client_napi: &Option<Vec<u32>>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let peers = [Peer::SipKaUser, Peer::Kamailio, Peer::Coturn];
    let rounds = opts.rounds.max(1);
    for round in 1..=rounds {
        for i in 0..peers.len() {
            let peer = peers[(i + round as usize - 1) % peers.len()];
            print!("round {round}/{rounds}: {} / STUN/UDP ... ", peer.name());
            std::io::stdout().flush().ok();
            let measured = serve(lab, dir, modules, peer, |lab, procs| {
                stun_load(lab, opts, procs, server_napi.clone(), client_napi.clone())
            })?
            .with_context(|| format!("{} / STUN/UDP", peer.name()));
            // A server that never answers gets a row that says so; the
            // others are still measured.
            let outcome = reported(measured);
            rows.push(Row {
                round,
                peer,
                load: Load::Stun,
                outcome,
            });
        }
    }
    Ok(())
}

fn share(m: &Measure) -> f64 {
    100.0 * m.answered as f64 / m.sent.max(1) as f64
}

/// The STUN table: the rounds pooled, ratios to Kamailio and to coturn.
pub(super) fn print_stun_table(opts: &Opts, per_round: &[Row]) {
    let pooled = pool(per_round);
    let measured = |peer: Peer| {
        pooled
            .iter()
            .find(|r| r.peer == peer && r.load == Load::Stun)
            .and_then(|r| match &r.outcome {
                Outcome::Measured(m) => Some(m),
                Outcome::NotAvailable(_) => None,
            })
    };
    let (k, c) = (measured(Peer::Kamailio), measured(Peer::Coturn));
    println!();
    println!(
        "{:<29} {:>9} {:>9} {:>8} {:>8} {:>8} | {:>10} {:>7} {:>7} | {:>10}",
        "", "offered", "", "", "÷ Kam.", "÷ coturn", "server CPU", "÷ Kam.", "÷ coturn", "machine"
    );
    println!(
        "{:<29} {:>9} {:>9} {:>8} {:>8} {:>8} | {:>10} {:>7} {:>7} | {:>10}",
        "STUN server",
        "per s",
        "answered",
        "share",
        "share",
        "share",
        "ns/answer",
        "",
        "",
        "ns/answer"
    );
    for peer in [Peer::SipKaUser, Peer::Kamailio, Peer::Coturn] {
        let Some(m) = measured(peer) else {
            println!("{:<29} n/a (see the rounds above)", peer.name());
            continue;
        };
        let cpu = m.server_per_answer();
        println!(
            "{:<29} {:>9.0} {:>9} {:>7.1}% {:>8} {:>8} | {:>10} {:>7} {:>7} | {:>10.0}",
            peer.name(),
            m.sent as f64 / m.elapsed.max(1e-9),
            m.answered,
            share(m),
            ratio(Some(share(m)), k.map(share)),
            ratio(Some(share(m)), c.map(share)),
            ns(cpu),
            ratio(cpu, k.and_then(|k| k.server_per_answer())),
            ratio(cpu, c.and_then(|c| c.server_per_answer())),
            m.machine_per_answer(),
        );
    }
    println!();
    for r in per_round.iter().filter(|r| r.load == Load::Stun) {
        let Outcome::Measured(m) = &r.outcome else {
            continue;
        };
        println!(
            "  round {}: {} / STUN/UDP: {} sent over {:.2} s, {} answered, {} bad; CPU s: server \
             processes ({}) {:.3}, server processes + NAPI {}, client NAPI {}, load generator \
             {:.3}, machine busy {:.3}",
            r.round,
            r.peer.name(),
            m.sent,
            m.elapsed,
            m.answered,
            m.bad,
            m.procs,
            m.proc_cpu,
            m.server_cpu.map_or("n/a".into(), |c| format!("{c:.3}")),
            m.client_napi_cpu
                .map_or("n/a".into(), |c| format!("{c:.3}")),
            m.gen_cpu,
            m.busy_cpu,
        );
    }
    println!(
        "notes (STUN): each server in turn answers STUN on udp/{SERVER_V4}:{SIP_PORT}; a thread \
         in the client namespace offers {rate} Binding requests per second ({fp}) for {secs} s \
         in sendmmsg batches whatever comes back (an open loop: a server that falls behind \
         loses requests), another counts the Binding success answers until 0.5 s after the \
         last request. \"share\" = answered / sent. sip-ka: `run --xdp off` with the \
         per-source answer limits off (rate_limit_pps=0, rate_limit_addr_pps=0: the load has one source address); \
         Kamailio: 2 UDP workers with the stun module; coturn: `turnserver --stun-only`. \
         Server CPU as in the table above; {rounds} round(s) pooled, the order rotated each \
         round.",
        rate = opts.stun_rate,
        fp = if opts.no_fingerprint {
            "no FINGERPRINT"
        } else {
            "with FINGERPRINT"
        },
        secs = opts.stun_seconds.max(1),
        rounds = opts.rounds.max(1),
    );
}
