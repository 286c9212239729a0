//! (k) Idle connections (`--idle`): many TCP, TLS and secure WebSocket
//! connections held open against sip-ka's edge and then Kamailio 5.6 in
//! the same run, each sending a CRLF ping (a CRLF frame on WebSocket)
//! once per ping interval. For each transport: the server's memory per
//! connection (the edge's RSS; Kamailio's shared memory, where it keeps
//! connections, and the PSS of all its processes), and the pongs'
//! latency. Then the CRLF pong rate of a few plain WebSocket connections
//! and the server CPU per pong.
//!
//! The connections come from several addresses of the client namespace:
//! one address has at most 64 k source ports toward one server port.

mod client;
mod kamailio;
mod report;

use std::{net::Ipv4Addr, path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, SERVER_V4};

use self::client::{Clients, Kind, Targets};
use self::report::{Figures, PeerRun};
use super::{
    measure::Peer,
    servers::{kamailio_modules, kamailio_version, Pbx},
    WorkDir,
};
use crate::cpu::tasks_cpu;
use crate::opts::Opts;

use kamailio::{KAM_TLS_PORT, SIP_PORT, WSS_PORT, WS_PORT};

/// Source ports one client address offers (ip_local_port_range is
/// widened to 1024-65535 in the client namespace).
const PORTS_PER_SOURCE: u64 = 60_000;

/// Runs part (k) and prints its table.
pub(crate) fn idle_bench(opts: &Opts) -> Result<()> {
    let version = kamailio_version();
    let (tcp, tls, wss) = (opts.idle_tcp, opts.idle_tls, opts.idle_wss);
    let total = tcp + tls + wss;
    println!(
        "== (k) idle connections: sip-ka edge vs {version}: {tcp} TCP, {tls} TLS, {wss} WSS, a \
         CRLF ping each every {} s",
        opts.idle_ping_interval
    );
    for tool in ["kamailio", "kamcmd", "openssl"] {
        if lab::on_path(tool).is_none() {
            bail!("{tool} not found: `cargo xtask setup` installs it");
        }
    }
    raise_nofile(total + 1024)?;
    let modules = kamailio_modules()?;
    let dir = WorkDir::new()?;
    let (cert, key) = certificate(&dir.0)?;
    let mut lab = Lab::new()?;
    let sources = client_sources(&lab, total)?;
    let mut runs = Vec::new();
    for peer in [Peer::SipKa, Peer::Kamailio] {
        // A server that fails leaves the other's figures standing.
        match run_peer(
            &mut lab, &dir.0, &modules, &cert, &key, &sources, opts, peer,
        ) {
            Ok(run) => runs.push(run),
            Err(e) => println!("  {}: no figures: {e:#}", peer.name()),
        }
    }
    drop(lab);
    report::print(opts, &runs, sources.len());
    Ok(())
}

/// Lifts this process's descriptor limit to what `need` connections
/// take (the client holds every one of them; so does the edge, one
/// process): a hard limit below it fails the part rather than its
/// figures.
fn raise_nofile(need: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim` only.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let want = (need as libc::rlim_t).max(lim.rlim_cur);
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: want.max(lim.rlim_max),
    };
    // SAFETY: a plain struct argument.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(());
    }
    bail!(
        "{need} descriptors needed, the hard limit is {} and cannot be raised here (no \
         CAP_SYS_RESOURCE?): ask for fewer connections (--idle-tcp, --idle-tls, --idle-wss) \
         or raise it (ulimit -Hn) before the run; the edge, one process, needs as many",
        lim.rlim_max
    )
}

/// The lab's certificate (P-256, for the server address), as the tests
/// make it.
fn certificate(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    lab::run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=sip-ka-bench"])
            .args(["-addext", &format!("subjectAltName=IP:{SERVER_V4}")])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    Ok((cert, key))
}

/// Enough client addresses for `conns` connections, added to the client
/// end of the veth, and the whole port range opened to them.
fn client_sources(lab: &Lab, conns: u64) -> Result<Vec<Ipv4Addr>> {
    // Two at least, so that the spreading over addresses is exercised
    // by small runs too.
    let n = conns.div_ceil(PORTS_PER_SOURCE).max(2);
    if n > 200 {
        bail!("{conns} connections need too many client addresses");
    }
    let mut out = Vec::new();
    for i in 0..n {
        let ip = Ipv4Addr::new(198, 18, 0, 10 + i as u8);
        lab::run(
            Command::new("ip")
                .args(["-n", &lab.client_ns, "addr", "add"])
                .arg(format!("{ip}/24"))
                .args(["dev", &lab.client_if]),
        )?;
        out.push(ip);
    }
    lab::run(
        lab.client("sysctl")
            .args(["-qw", "net.ipv4.ip_local_port_range=1024 65535"]),
    )?;
    for s in [
        "net.core.somaxconn=65535",
        "net.ipv4.tcp_max_syn_backlog=65535",
    ] {
        lab::run(lab.server("sysctl").args(["-qw", s]))?;
    }
    Ok(out)
}

/// The server's memory: its resident set (sip-ka), its shared memory in
/// use (Kamailio), and the proportional set of all its processes.
fn memory(pids: &[u32], kam: Option<&kamailio::Kamailio>) -> Result<(u64, u64)> {
    let pss: u64 = pids.iter().map(|p| pss_bytes(*p)).sum();
    let main = match kam {
        Some(k) => k.shm_used()?,
        None => rss_bytes(pids.first().copied().context("no server process")?)?,
    };
    Ok((main, pss))
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("statm: no resident field")?;
    Ok(pages * 4096)
}

fn pss_bytes(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Starts `peer`, opens the connections kind by kind (memory read after
/// each), runs the ping rounds and the WS pong load, stops it.
#[allow(clippy::too_many_arguments)]
fn run_peer(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    cert: &Path,
    key: &Path,
    sources: &[Ipv4Addr],
    opts: &Opts,
    peer: Peer,
) -> Result<PeerRun> {
    let total = opts.idle_tcp + opts.idle_tls + opts.idle_wss;
    let at = |port| std::net::SocketAddr::from((SERVER_V4, port));
    let mut pbx = None;
    let mut kam = None;
    let targets = match peer {
        Peer::SipKa => {
            pbx = Some(Pbx::start(lab)?);
            let s = |p: &Path| p.display().to_string();
            let (ws, wss, max) = (
                at(WS_PORT).to_string(),
                at(WSS_PORT).to_string(),
                // Past nine tenths of it the largest sources are refused.
                (total * 2 + 1000).to_string(),
            );
            let (cert, key) = (s(cert), s(key));
            crate::versus::servers::start_edge(
                lab,
                &[
                    "--shield",
                    "off",
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--ws-listen",
                    &ws,
                    "--wss-listen",
                    &wss,
                    "--max-connections",
                    &max,
                ],
            )?;
            Targets {
                tcp: at(SIP_PORT),
                tls: at(SIP_PORT),
                wss: at(WSS_PORT),
                ws: at(WS_PORT),
            }
        }
        _ => {
            kam = Some(kamailio::Kamailio::start(
                lab, dir, modules, cert, key, total,
            )?);
            Targets {
                tcp: at(SIP_PORT),
                tls: at(KAM_TLS_PORT),
                wss: at(WSS_PORT),
                ws: at(WS_PORT),
            }
        }
    };
    let pids = || -> Result<Vec<u32>> {
        Ok(match &kam {
            Some(k) => k.pids(),
            None => vec![lab.daemon_pid().context("daemon pid")?],
        })
    };
    let settle = || std::thread::sleep(Duration::from_secs(2));
    // Why Kamailio stopped answering, if it did.
    let kam_log = || {
        kam.as_ref()
            .map(|k| format!("Kamailio's log:\n{}", k.log_tail()))
            .unwrap_or_default()
    };
    let clients = Clients::start(&lab.client_ns, sources.to_vec(), targets, cert)?;
    let mut run = PeerRun::new(peer);
    settle();
    let mut before = memory(&pids()?, kam.as_ref()).with_context(kam_log)?;
    // The WS pong rate first, over plain WebSocket: a server that falls
    // over under the TLS connections (Kamailio 5.6 with OpenSSL 3 here)
    // still gets this row.
    let cpu0 = tasks_cpu(&pids()?);
    run.ws_load =
        match clients.ws_load(opts.ws_load_conns, Duration::from_secs(opts.seconds.max(1))) {
            Ok(l) => Ok((l.pongs, l.seconds, tasks_cpu(&pids()?) - cpu0)),
            Err(e) => Err(format!("{e:#}")),
        };
    settle();
    before = memory(&pids()?, kam.as_ref())
        .with_context(kam_log)?
        .max(before);
    let mut alive = true;
    let spread = Duration::from_secs(opts.idle_ping_interval.max(1));
    for (kind, n) in [
        (Kind::Tcp, opts.idle_tcp),
        (Kind::Tls, opts.idle_tls),
        (Kind::Wss, opts.idle_wss),
    ] {
        if n == 0 {
            continue;
        }
        let t0 = std::time::Instant::now();
        let open = clients.open(kind, n)?;
        settle();
        let after = match memory(&pids()?, kam.as_ref()).with_context(kam_log) {
            Ok(m) => m,
            Err(e) => {
                println!(
                    "  {}: gone after the {} connections: {e:#}",
                    peer.name(),
                    kind.name()
                );
                alive = false;
                break;
            }
        };
        let f = Figures::new(kind, n, open, before, after);
        println!(
            "  {}: {open} of {n} {} connections open in {:.1} s, {}",
            peer.name(),
            kind.name(),
            t0.elapsed().as_secs_f64(),
            f.describe()
        );
        run.kinds.push(f);
        // A round after each kind, over every connection open: a server
        // that falls over under the next kind has its pongs timed too.
        let round = clients.ping_round(spread)?;
        println!(
            "  {}: ping round: {} pongs, {} lost",
            peer.name(),
            round.micros.len(),
            round.lost
        );
        run.add_round(round);
        before = memory(&pids()?, kam.as_ref()).with_context(kam_log)?;
    }
    if alive {
        run.after_pings = memory(&pids()?, kam.as_ref()).with_context(kam_log)?;
    }
    clients.close()?;
    if let Some(k) = &kam {
        if run.kinds.iter().any(|f| f.open < f.asked) {
            println!("  Kamailio's log:\n{}", k.log_tail());
        }
    }
    drop(kam);
    if peer == Peer::SipKa {
        lab.stop_daemon()?;
    }
    drop(pbx);
    Ok(run)
}
