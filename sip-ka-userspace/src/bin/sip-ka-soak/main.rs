//! sip-ka-soak: the edge under a steady mixed load for a bounded time,
//! to show nothing grows and nothing is left behind.
//!
//! In a lab of two network namespaces: sip-ka runs as an edge (XDP on
//! the server's veth) in front of sipp as the PBX; from the phones'
//! namespace, sipp places calls with session timers (an in-dialog OPTIONS
//! and INFO the edge answers, an UPDATE refresh the PBX answers), a
//! second sipp registers fresh Contacts and unregisters them, and a
//! pinger sends CRLF and STUN keep-alives at a fixed rate, each waiting
//! for its answer. The daemon's resident memory is sampled on a fixed
//! period; at the end the calls and registrations are over, and the
//! soak checks that no dialog and no binding is left and that every
//! keep-alive was answered.
//!
//! Needs root. Every loop is bounded in count and time; traffic stays in
//! the namespaces the lab creates.

mod load;
mod opts;
mod rss;

use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser as _;
use sip_ka::lab::{self, Lab, SERVER_V4};

use crate::opts::{Opts, EDGE_PORT, PBX_PORT};

fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    match soak(&opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-ka-soak: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The daemon, killed if the soak fails before it stops it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(lab: &Lab, scratch: &std::path::Path) -> Result<Daemon> {
        let log = scratch.join("sip-ka.log");
        let edge = format!("{SERVER_V4}:{EDGE_PORT}");
        let pbx = format!("{SERVER_V4}:{PBX_PORT}");
        let mut cmd = lab.server(lab::sip_ka_exe()?);
        cmd.args(["run", "--iface", &lab.server_if, "--pin-dir"])
            .arg(&lab.pin_dir)
            .args(["--mode", "edge", "--listen", &edge, "--upstream", &pbx])
            .args(["--qualify-frequency", "5", "--state-dir"])
            .arg(scratch.join("state"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut child = cmd.spawn().context("starting sip-ka run")?;
        let stdout = child.stdout.take().context("daemon stdout")?;
        let ready = load::wait_for_line(stdout, "ready", Duration::from_secs(30));
        if !ready {
            let _ = child.kill();
            bail!(
                "sip-ka run was not ready within 30 s (log: {})",
                log.display()
            );
        }
        Ok(Daemon { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then the counters it logs on its way out.
    fn stop(mut self) -> Result<String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("sip-ka run did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(std::fs::read_to_string(&self.log)?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn soak(o: &Opts) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, XDP)");
    }
    let missing = lab::missing_tools();
    if !missing.is_empty() {
        bail!("missing tools: {} (cargo xtask setup)", missing.join(", "));
    }
    Lab::sweep_stale();
    let lab = Lab::new()?;
    let scratch = std::env::temp_dir().join(format!("{}-soak", lab.name));
    std::fs::create_dir_all(&scratch)?;
    let result = run(o, &lab, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn run(o: &Opts, lab: &Lab, scratch: &std::path::Path) -> Result<()> {
    let daemon = Daemon::start(lab, scratch)?;
    let pid = daemon.pid();
    let calls = u64::from(o.call_rate) * o.secs;
    let registrations = u64::from(o.register_rate) * o.secs;
    println!(
        "soak: {} s; {calls} calls ({}/s, ~{} s each, session timer 90 s, 2 keep-alives \
         the edge answers + 1 UPDATE refresh each), {registrations} registrations ({}/s), \
         {} CRLF/STUN pings/s; RSS of sip-ka every {} s",
        o.secs,
        o.call_rate,
        4 * u64::from(o.pause_ms) / 1000,
        o.register_rate,
        o.ping_rate,
        o.sample_secs
    );
    // Calls and registrations are done by the end of the load plus the
    // length of one call, plus sipp's own slack.
    let finish = Duration::from_secs(o.secs) + Duration::from_millis(4 * u64::from(o.pause_ms));
    let sipp_limit = finish + Duration::from_secs(30);
    let pbx = load::pbx(lab, scratch, sipp_limit)?;
    let phones = load::phones(lab, scratch, o, calls, sipp_limit)?;
    let registrar = load::registrations(lab, scratch, o, registrations, sipp_limit)?;
    let pinger = load::pinger(lab, o.ping_rate, Duration::from_secs(o.secs))?;

    let started = Instant::now();
    let mut samples = vec![(0.0, rss::rss_kib(pid)?)];
    while started.elapsed() < finish {
        std::thread::sleep(Duration::from_secs(o.sample_secs).min(finish - started.elapsed()));
        let t = started.elapsed().as_secs_f64();
        let kib = rss::rss_kib(pid)?;
        println!("  t={t:>6.0} s  rss={kib} KiB");
        samples.push((t, kib));
    }

    let phones = load::finish(phones, "the phones (sipp)", sipp_limit)?;
    let registrar = load::finish(registrar, "the registrations (sipp)", sipp_limit)?;
    let pings = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("the pinger thread panicked"))??;
    // The PBX runs until it is told to stop: its exit status then says
    // whether any call failed on its side (a keep-alive reaching it).
    let pbx_ok = pbx.stop()?;

    // Dialogs end at their BYE; give the edge's publishing a moment.
    std::thread::sleep(Duration::from_secs(2));
    let dialogs_left = load::dialogs_left(lab)?;
    let counters = lab.counters()?;
    let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
    let in_dialog_answered = counter("edge_ka_in_dialog_ok");
    let expired = counter("edge_sessions_expired");
    let log = daemon.stop()?;
    let (dialogs_at_exit, bindings_at_exit) =
        rss::table_sizes(&log).context("the daemon's exit log has no `live dialog(s)` line")?;

    // The first minute is the allocator and the tables warming up.
    let warm: Vec<(f64, u64)> = samples.iter().copied().filter(|s| s.0 >= 60.0).collect();
    let slope = rss::slope_kib_per_min(&samples);
    let warm_slope = rss::slope_kib_per_min(&warm);
    let first = samples.first().map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!();
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| calls completed (phones' sipp) | {} of {calls} |",
        phones.successful
    );
    println!("| calls failed | {} |", phones.failed);
    println!(
        "| registrations completed | {} of {registrations} |",
        registrar.successful
    );
    println!(
        "| PBX saw only what it should | {} |",
        if pbx_ok { "yes" } else { "NO" }
    );
    println!(
        "| CRLF/STUN pings answered | {} of {} (late or lost: {}) |",
        pings.answered,
        pings.sent,
        pings.sent - pings.answered
    );
    println!("| RSS first / last / peak | {first} / {last} / {peak} KiB |");
    println!("| RSS slope, whole run | {slope:+.1} KiB/min |");
    println!(
        "| RSS slope after the first minute ({} samples) | {warm_slope:+.1} KiB/min |",
        warm.len()
    );
    println!(
        "| in-dialog keep-alives answered by the edge | {in_dialog_answered} (want {}) |",
        2 * phones.successful
    );
    println!("| sessions expired | {expired} |");
    println!("| dialogs left (DIALOGS map / table at exit) | {dialogs_left} / {dialogs_at_exit} |");
    println!("| bindings left at exit | {bindings_at_exit} |");

    let mut problems = Vec::new();
    if phones.failed > 0 || phones.successful < calls {
        problems.push(format!("{} of {calls} calls completed", phones.successful));
    }
    if registrar.failed > 0 || registrar.successful < registrations {
        problems.push(format!(
            "{} of {registrations} registrations completed",
            registrar.successful
        ));
    }
    if !pbx_ok {
        problems.push("the PBX saw a failed call".into());
    }
    if in_dialog_answered < 2 * phones.successful {
        problems.push(format!(
            "{in_dialog_answered} in-dialog keep-alives answered, want {}",
            2 * phones.successful
        ));
    }
    if expired > 0 {
        problems.push(format!(
            "{expired} sessions expired despite their refreshes"
        ));
    }
    if pings.answered < pings.sent {
        problems.push(format!("{} pings unanswered", pings.sent - pings.answered));
    }
    if dialogs_left > 0 || dialogs_at_exit > 0 || bindings_at_exit > 0 {
        problems.push("state left at the end".into());
    }
    if !problems.is_empty() {
        bail!("soak failed: {}", problems.join("; "));
    }
    Ok(())
}
