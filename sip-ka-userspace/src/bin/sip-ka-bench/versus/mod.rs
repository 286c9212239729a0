//! (c) sip-ka's edge against Kamailio 5.6, one after the other in the same
//! lab and the same run: SIP OPTIONS from sipp over UDP, and RFC 5626 CRLF
//! pings over TCP from the bench's own load generator.
//!
//! Both servers get the same request, `OPTIONS sip:198.18.0.1:5060`: a
//! Request-URI without a user part naming the server, which sip-ka's edge
//! answers itself (whatever the PBX's state) and Kamailio's
//! `options_reply()` answers with 200.

pub(crate) mod calls;
pub(crate) mod idle;
mod measure;
mod options;
mod servers;
mod stun;
mod stun_load;
pub(crate) mod sweep;
mod sweep_chart;
mod tcp;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, SERVER_V4};

use self::measure::{ns, pool, ratio, Load, Outcome, Peer, Row};
use self::options::{options_load, wait_options_200, RECV_TIMEOUT_MS};
use self::servers::{kamailio_modules, kamailio_version, start_edge, Kamailio, Pbx, SIP_PORT};
use self::tcp::crlf_load;
use crate::cpu::{machine_busy, threaded_napi};
use crate::opts::Opts;

/// A directory for this run's Kamailio configuration and sipp files,
/// removed when dropped.
pub(super) struct WorkDir(pub(super) PathBuf);

impl WorkDir {
    pub(super) fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("sip-ka-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// NAPI kernel threads of the server's and the client's veth, threaded
/// unless `--no-threaded-napi` (None: receive work is not counted apart).
type Napi = Option<Vec<u32>>;

fn lab_napi(lab: &Lab, opts: &Opts) -> Result<(Napi, Napi)> {
    if opts.no_threaded_napi {
        return Ok((None, None));
    }
    let s = threaded_napi(&lab.server_ns, &lab.server_if)?;
    let c = threaded_napi(&lab.client_ns, &lab.client_if)?;
    if s.is_empty() || c.is_empty() {
        println!("warning: the NAPI threads of the veth pair were not found");
        return Ok((None, None));
    }
    Ok((Some(s), Some(c)))
}

/// What the comparison and the sweep run in.
struct Setup {
    modules: PathBuf,
    dir: WorkDir,
    lab: Lab,
    server_napi: Napi,
    client_napi: Napi,
    /// Busy CPU seconds per second of the idle machine before the run:
    /// work the machine-wide column includes that is neither server nor
    /// load.
    background: f64,
}

impl Setup {
    fn new(opts: &Opts) -> Result<Setup> {
        let modules = kamailio_modules()?;
        let dir = WorkDir::new()?;
        let lab = Lab::new()?;
        let (server_napi, client_napi) = lab_napi(&lab, opts)?;
        let b0 = machine_busy()?;
        std::thread::sleep(Duration::from_secs(1));
        let background = machine_busy()? - b0;
        Ok(Setup {
            modules,
            dir,
            lab,
            server_napi,
            client_napi,
            background,
        })
    }
}

/// Runs part (c), `--rounds` rounds of both servers under both loads, and
/// prints the pooled table.
pub(crate) fn kamailio_bench(opts: &Opts) -> Result<()> {
    let version = kamailio_version();
    println!(
        "== (c) sip-ka edge vs {version}: SIP OPTIONS over UDP (sipp) and CRLF pings over TCP"
    );
    for tool in ["kamailio", "sipp"] {
        if lab::on_path(tool).is_none() {
            bail!("{tool} not found: `cargo xtask setup` installs it");
        }
    }
    let Setup {
        modules,
        dir,
        mut lab,
        server_napi,
        client_napi,
        background,
    } = Setup::new(opts)?;

    let rounds = opts.rounds.max(1);
    let mut rows = Vec::new();
    for round in 1..=rounds {
        // Every other round Kamailio goes first, so that a change in what
        // else the machine does during the run is spread over both.
        let order = if round % 2 == 1 {
            [Peer::SipKa, Peer::Kamailio]
        } else {
            [Peer::Kamailio, Peer::SipKa]
        };
        for peer in order {
            measure_peer(
                &mut lab,
                &dir.0,
                &modules,
                opts,
                round,
                peer,
                &server_napi,
                &client_napi,
                &mut rows,
            )?;
        }
    }
    if opts.stun_rate > 0 {
        stun::stun_rows(
            &mut lab,
            &dir.0,
            &modules,
            opts,
            &server_napi,
            &client_napi,
            &mut rows,
        )?;
    }
    drop(lab);
    print_table(opts, &rows, server_napi.is_some());
    if opts.stun_rate > 0 {
        stun::print_stun_table(opts, &rows);
    }
    if background > 0.1 {
        println!(
            "warning: the machine was busy before the run ({:.0} ms of CPU per second): the \
             machine column includes that work, the server column does not",
            background * 1000.0
        );
    }
    Ok(())
}

/// Starts `peer` in the lab, runs both loads against it, stops it.
#[allow(clippy::too_many_arguments)]
fn measure_peer(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    opts: &Opts,
    round: u32,
    peer: Peer,
    server_napi: &Option<Vec<u32>>,
    client_napi: &Option<Vec<u32>>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut pbx = None;
    let kamailio = match peer {
        Peer::SipKa => {
            pbx = Some(Pbx::start(lab)?);
            // All the load's connections come from one address: no
            // per-address cap by default.
            start_edge(lab, &[])?;
            None
        }
        Peer::Kamailio => Some(Kamailio::start(lab, dir, modules, false)?),
        _ => bail!("{} is not a server of the SIP rows", peer.name()),
    };
    let pids = || -> Result<Vec<u32>> {
        Ok(match &kamailio {
            Some(k) => k.pids(),
            None => vec![lab.daemon_pid().context("daemon pid")?],
        })
    };
    let ready = wait_options_200(lab).with_context(|| {
        let log = kamailio.as_ref().map(|k| k.log_tail()).unwrap_or_default();
        format!("{} is not answering OPTIONS\n{log}", peer.name())
    });
    if let Err(e) = ready {
        // Stop what runs before the lab goes.
        drop(kamailio);
        return Err(e);
    }
    for load in [Load::Options, Load::TcpCrlf] {
        print!(
            "round {round}/{}: {} / {} ... ",
            opts.rounds.max(1),
            peer.name(),
            load.name()
        );
        std::io::stdout().flush().ok();
        let procs = pids()?;
        let outcome = match load {
            Load::Options => Outcome::Measured(
                options_load(
                    lab,
                    dir,
                    opts,
                    procs,
                    server_napi.clone(),
                    client_napi.clone(),
                )
                .with_context(|| format!("{} / {}", peer.name(), load.name()))?,
            ),
            Load::TcpCrlf => crlf_load(lab, opts, procs, server_napi.clone(), client_napi.clone())
                .with_context(|| format!("{} / {}", peer.name(), load.name()))?,
            Load::Stun => bail!("the STUN rows have their own servers (stun.rs)"),
        };
        match &outcome {
            Outcome::Measured(m) => println!(
                "{} answered of {} sent in {:.2} s",
                m.answered, m.sent, m.elapsed
            ),
            Outcome::NotAvailable(why) => println!("n/a: {why}"),
        }
        rows.push(Row {
            round,
            peer,
            load,
            outcome,
        });
    }
    match kamailio {
        Some(k) => drop(k),
        None => {
            lab.stop_daemon()?;
        }
    }
    drop(pbx);
    Ok(())
}

fn print_table(opts: &Opts, per_round: &[Row], napi: bool) {
    let per_round: Vec<&Row> = per_round.iter().filter(|r| r.load != Load::Stun).collect();
    let pooled: Vec<Row> = pool(per_round.iter().copied());
    let rows = &pooled;
    let measured = |peer: Peer, load: Load| {
        rows.iter()
            .find(|r| r.peer == peer && r.load == load)
            .and_then(|r| match &r.outcome {
                Outcome::Measured(m) => Some(m),
                Outcome::NotAvailable(_) => None,
            })
    };
    println!();
    println!(
        "{:<25} {:<12} {:>8} {:>6} {:>9} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "", "", "", "", "answers", "", "server CPU", "", "machine", ""
    );
    println!(
        "{:<25} {:<12} {:>8} {:>6} {:>9} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "server",
        "load",
        "answered",
        "lost",
        "per s",
        "÷ Kam.",
        "ns/answer",
        "÷ Kam.",
        "ns/answer",
        "÷ Kam."
    );
    for r in rows {
        let m = match &r.outcome {
            Outcome::Measured(m) => m,
            Outcome::NotAvailable(why) => {
                println!("{:<25} {:<12} n/a: {why}", r.peer.name(), r.load.name());
                continue;
            }
        };
        let k = measured(Peer::Kamailio, r.load);
        println!(
            "{:<25} {:<12} {:>8} {:>6} {:>9.0} {:>7} | {:>10} {:>7} | {:>10.0} {:>7}",
            r.peer.name(),
            r.load.name(),
            m.answered,
            m.sent.saturating_sub(m.answered),
            m.rate(),
            ratio(Some(m.rate()), k.map(|k| k.rate())),
            ns(m.server_per_answer()),
            ratio(m.server_per_answer(), k.and_then(|k| k.server_per_answer())),
            m.machine_per_answer(),
            ratio(
                Some(m.machine_per_answer()),
                k.map(|k| k.machine_per_answer())
            ),
        );
    }
    println!();
    for r in &per_round {
        let Outcome::Measured(m) = &r.outcome else {
            continue;
        };
        println!(
            "  round {}: {} / {}: {} sent, {} answered, {} bad bytes; answers over {:.2} s, row {:.2} s; \
             CPU s: server processes ({}) {:.3}, server processes + NAPI {}, client NAPI {}, load \
             generator {:.3}, machine busy {:.3}",
            r.round,
            r.peer.name(),
            r.load.name(),
            m.sent,
            m.answered,
            m.bad,
            m.elapsed,
            m.wall,
            m.procs,
            m.proc_cpu,
            m.server_cpu.map_or("n/a".into(), |c| format!("{c:.3}")),
            m.client_napi_cpu
                .map_or("n/a".into(), |c| format!("{c:.3}")),
            m.gen_cpu,
            m.busy_cpu,
        );
    }
    for load in [Load::Options, Load::TcpCrlf] {
        match (measured(Peer::SipKa, load), measured(Peer::Kamailio, load)) {
            (Some(s), Some(k)) => println!(
                "sip-ka vs Kamailio, {}: {} the answers per second, {} the server CPU per \
                 answer ({} the machine's)",
                load.name(),
                ratio(Some(s.rate()), Some(k.rate())),
                ratio(s.server_per_answer(), k.server_per_answer()),
                ratio(Some(s.machine_per_answer()), Some(k.machine_per_answer())),
            ),
            _ => println!(
                "sip-ka vs Kamailio, {}: no ratio (a row has no figures)",
                load.name()
            ),
        }
    }
    println!(
        "notes: the same lab, one server after the other, {rounds} round(s) (Kamailio first \
         in every second round); the table pools the rounds (answers and times and CPU \
         added up). OPTIONS: sipp in the client \
         namespace sends {count} OPTIONS sip:{SERVER_V4}:{SIP_PORT} over UDP (offered rate \
         {rate}/s, {window} in flight at most, {seconds} s at most, an answer not back within \
         {RECV_TIMEOUT_MS} ms is lost); answers per second are counted between the first and \
         the last answer (sipp -trace_rtt). sip-ka runs `--mode edge` with native XDP (the \
         program counts each OPTIONS, the edge answers it) in front of a stand-in PBX \
         that answers its qualify pings; Kamailio 2 UDP workers and 2 TCP \
         readers answering with options_reply(). CRLF/TCP: {conns} connections from the \
         client namespace, each with one \\r\\n\\r\\n ping outstanding, {pings} pings and \
         {seconds} s at most. \"server CPU\" = CPU time (schedstat) of every thread of the \
         server's processes{napi}; \"machine\" = busy CPU of the whole machine (/proc/stat) \
         less the load generator's own CPU time. When both servers keep up with the load \
         generator, answers per second show the generator's limit and the CPU columns are \
         the comparison.",
        rounds = opts.rounds.max(1),
        count = opts.options_count,
        rate = opts.options_rate,
        window = opts.options_window.max(1),
        seconds = opts.seconds.max(1),
        conns = opts.tcp_conns.max(1),
        pings = opts.crlf_count,
        napi = if napi {
            " and of the server veth's NAPI thread (threaded NAPI on both veths)"
        } else {
            " (NAPI not threaded: the server column is left out)"
        },
    );
}
