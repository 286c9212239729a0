//! (b) The veth lab: in one run, answered keep-alives per second and CPU
//! time per answer for sip-ka's XDP program, the daemon's userspace
//! responder (`--xdp off`), and coturn answering the same STUN load.

mod load;
pub(crate) mod scaling;
pub(crate) mod servers;

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{Lab, SERVER_V4};

use self::load::{run_load, Kind, Load, LoadSpec};
use self::servers::{attached_prog_id, counter, prog_stats, xdp_attached, Coturn, Server};
use crate::cpu::{machine_busy, threaded_napi};
use crate::opts::Opts;

struct Row {
    server: Server,
    kind: Kind,
    load: Load,
    /// Answers sip-ka's own counters saw (None for coturn).
    counted: Option<u64>,
    /// The attached program's own run time per packet and its run count
    /// over the row (BPF_ENABLE_STATS), for the XDP rows.
    prog: Option<(f64, u64)>,
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.1}x", v / b),
        _ => "n/a".into(),
    }
}

fn ns_or_na(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

/// Runs part (b), a row per server and keep-alive kind, and prints the
/// table.
pub(crate) fn lab_bench(opts: &Opts) -> Result<()> {
    println!("== (b) veth lab: answered keep-alives per second and CPU per answer");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lab = Lab::new()?;
    let (server_napi, client_napi) = if opts.no_threaded_napi {
        (None, None)
    } else {
        let s = threaded_napi(&lab.server_ns, &lab.server_if)?;
        let c = threaded_napi(&lab.client_ns, &lab.client_if)?;
        if s.is_empty() || c.is_empty() {
            println!(
                "warning: the NAPI threads of the veth pair were not found; the server-side \
                 column is left out"
            );
            (None, None)
        } else {
            (Some(s), Some(c))
        }
    };
    let target = SocketAddr::from((SERVER_V4, 5060));
    // The kernel times every BPF program run while this fd is open (all
    // rows alike: the client veth runs an XDP program in every row).
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    // Background: busy CPU over one idle second, for reference.
    let b0 = machine_busy()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = machine_busy()? - b0;

    let mut rows = Vec::new();
    let plan = [
        (Server::Xdp, vec![Kind::Stun, Kind::Crlf]),
        (Server::User, vec![Kind::Stun, Kind::Crlf]),
        (Server::Coturn, vec![Kind::Stun]),
    ];
    for (server, kinds) in plan {
        let coturn = match server {
            Server::Xdp => {
                lab.start_daemon(&["--xdp-mode", "native"])?;
                None
            }
            Server::User => {
                lab.start_daemon(&["--xdp", "off", "--listen", "198.18.0.1:5060"])?;
                if xdp_attached(&lab)? {
                    bail!(
                        "an XDP program is attached to {} with sip-ka's XDP off: the \
                         userspace row would measure XDP",
                        lab.server_if
                    );
                }
                None
            }
            Server::Coturn => Some(Coturn::start(&lab)?),
        };
        if coturn.is_none() {
            // The load comes from one source address: the per-source answer
            // limit (on by default) would measure drops, not answers.
            for key in ["rate_limit_pps", "rate_limit_addr_pps"] {
                sip_ka::lab::run(&mut lab.sip_ka(&["config", "set", key, "0"])?)?;
            }
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        let server_pid = match &coturn {
            Some(b) => b.pid(),
            None => lab.daemon_pid().context("daemon pid")?,
        };
        for kind in kinds {
            let name = match (server, kind) {
                (Server::Xdp, Kind::Stun) => Some("stun_resp"),
                (Server::Xdp, Kind::Crlf) => Some("crlf_pong_sent"),
                (Server::User, Kind::Stun) => Some("user_stun_resp"),
                (Server::User, Kind::Crlf) => Some("user_crlf_pong_sent"),
                (Server::Coturn, _) => None,
            };
            let before = match name {
                Some(n) => Some(counter(&lab, n)?),
                None => None,
            };
            print!("{} / {} ... ", server.name(), kind.name());
            use std::io::Write as _;
            std::io::stdout().flush().ok();
            let spec = LoadSpec {
                kind,
                target,
                count: opts.count,
                seconds: opts.seconds,
                window: opts.window,
                fingerprint: !opts.no_fingerprint,
                server_tasks: server_napi.as_ref().map(|n| {
                    let mut t = n.clone();
                    t.push(server_pid);
                    t
                }),
                client_napi: client_napi.clone(),
            };
            let prog_id = (server == Server::Xdp && stats_fd.is_some())
                .then(|| attached_prog_id(&lab))
                .flatten();
            let prog0 = prog_id.and_then(prog_stats);
            let load = run_load(&lab, spec)
                .with_context(|| format!("{} / {}", server.name(), kind.name()))?;
            let prog = match (prog0, prog_id.and_then(prog_stats)) {
                (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => {
                    Some(((t1 - t0).as_nanos() as f64 / (n1 - n0) as f64, n1 - n0))
                }
                _ => None,
            };
            println!(
                "{} answered of {} sent in {:.2} s",
                load.answered, load.sent, load.elapsed
            );
            let counted = match (name, before) {
                (Some(n), Some(b)) => {
                    // The userspace responder publishes its counters every 0.5 s.
                    std::thread::sleep(Duration::from_millis(1200));
                    Some(counter(&lab, n)?.saturating_sub(b))
                }
                _ => None,
            };
            rows.push(Row {
                server,
                kind,
                load,
                counted,
                prog,
            });
        }
        match coturn {
            Some(b) => drop(b),
            None => {
                lab.stop_daemon()?;
            }
        }
    }
    drop(lab);
    drop(stats_fd);

    println!();
    println!(
        "{:<29} {:<12} {:>8} {:>10} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "", "", "", "answers", "", "CPU ns per", "", "server CPU", ""
    );
    println!(
        "{:<29} {:<12} {:>8} {:>10} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "server",
        "keep-alive",
        "answered",
        "per s",
        "÷ XDP",
        "answer",
        "÷ XDP",
        "ns/answer",
        "÷ XDP"
    );
    for r in &rows {
        let xdp = rows
            .iter()
            .find(|x| x.server == Server::Xdp && x.kind == r.kind)
            .map(|x| &x.load);
        println!(
            "{:<29} {:<12} {:>8} {:>10.0} {:>7} | {:>10.0} {:>7} | {:>10} {:>7}",
            r.server.name(),
            r.kind.name(),
            r.load.answered,
            r.load.rate(),
            ratio(Some(r.load.rate()), xdp.map(|x| x.rate())).replace(".0x", "x"),
            r.load.machine_per_answer(),
            ratio(
                Some(r.load.machine_per_answer()),
                xdp.map(|x| x.machine_per_answer())
            ),
            ns_or_na(r.load.server_per_answer()),
            ratio(
                r.load.server_per_answer(),
                xdp.and_then(|x| x.server_per_answer())
            ),
        );
    }
    println!();
    for r in &rows {
        let l = &r.load;
        println!(
            "  {} / {}: {} sent, {} answered in {:.2} s, {} bad replies; CPU s: machine busy \
             {:.3}, load generator {:.3}, server {}, client NAPI {}{}",
            r.server.name(),
            r.kind.name(),
            l.sent,
            l.answered,
            l.elapsed,
            l.bad,
            l.busy_cpu,
            l.gen_cpu,
            l.server_cpu.map_or("n/a".into(), |c| format!("{c:.3}")),
            l.client_napi_cpu
                .map_or("n/a".into(), |c| format!("{c:.3}")),
            match r.counted {
                Some(c) => format!(
                    "; sip-ka counted {c} answers ({} readiness probes included)",
                    l.probes
                ),
                None => String::new(),
            }
        );
        if let Some(c) = r.counted {
            if c < l.answered {
                println!(
                    "    warning: sip-ka counted fewer answers than the client received: \
                     something else answered"
                );
            }
        }
        if let Some((ns, runs)) = r.prog {
            println!(
                "    the attached XDP program itself: {ns:.0} ns per run over {runs} runs \
                 (kernel run-time statistics)"
            );
        }
    }
    if background > 0.1 {
        println!(
            "warning: the machine was busy before the run ({:.0} ms of CPU per second): the \
             whole-machine column includes that work, the server column does not",
            background * 1000.0
        );
    }
    println!(
        "notes: one UDP socket in the client namespace keeps up to {window} requests in \
         flight, {count} requests and {seconds} s at most per row; STUN requests {fp} \
         FINGERPRINT. \"CPU ns per answer\" = (busy CPU time of the whole machine from \
         /proc/stat over the row - the load generator thread's own CPU time from getrusage) / \
         answers: it includes receiving the answers in the client namespace and anything \
         else running on the machine (busy before the run: {bg:.0} ms per second over {ncpu} \
         CPUs). \"server CPU\" = CPU time (schedstat) of the server process and of the server \
         veth's NAPI thread only. {napi}",
        window = opts.window,
        count = opts.count,
        seconds = opts.seconds,
        fp = if opts.no_fingerprint {
            "without"
        } else {
            "with"
        },
        bg = background * 1000.0,
        napi = if server_napi.is_some() {
            "Both veths run threaded NAPI (GRO on), so receive work runs in each side's NAPI \
             thread rather than in the softirq of whichever thread sent the packet; without it \
             the XDP program would run in the load generator's softirq and its cost would be \
             subtracted with the generator's."
        } else {
            "NAPI is not threaded (--no-threaded-napi): receive work runs in the sender's \
             softirq and is charged to it."
        },
    );
    Ok(())
}
