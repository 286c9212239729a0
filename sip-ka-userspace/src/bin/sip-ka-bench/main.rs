//! sip-ka-bench: the figures behind `cargo xtask bench`.
//!
//! (a) Nanoseconds per packet of the XDP program, from BPF_PROG_TEST_RUN,
//!     for each fast path (`test_run.rs`).
//! (b) In a veth lab, in one run: answered keep-alives per second and CPU
//!     time per answer for XDP, the daemon's userspace responder
//!     (`--xdp off`), and coturn answering the same STUN load (`veth/`).
//! (c) In the same kind of lab: sip-ka's edge against Kamailio 5.6, SIP
//!     OPTIONS from sipp and CRLF pings over TCP (`versus/`).
//! (d) 1,000,000 dialogs: the session timer wheel alone (`--timers`,
//!     `timers.rs`), and the edge's whole dialog table with its journal
//!     (`--dialogs`, `dialogs/`); neither needs root.
//! (e) The XDP program on a two-queue veth, on one CPU and on two
//!     (`--scaling`, `veth/scaling.rs`).
//! (g) The shared store (`--store`, `store.rs`): Redis writes per call
//!     set-up and refresh, bytes per dialog in Redis, calls per second
//!     with the store on and off; needs redis-server, not root.
//! (f) The STUN load of (c) at a series of offered rates against sip-ka's
//!     XDP program, its userspace responder, Kamailio and coturn, with a
//!     chart (`--sweep`, `versus/sweep.rs`).
//! (i) CPU per call in the edge, sans IO (`--call-path`, `callpath.rs`):
//!     the six messages of a call through `Edge::handle`; no root.
//! (j) Calls through the proxy (`--proxy-calls`, `versus/calls.rs`): sipp
//!     UAC -> proxy -> sipp UAS at a series of rates, sip-ka's edge and
//!     Kamailio 5.6 as a stateful record-routing proxy: calls completed
//!     and proxy CPU per call.
//! (h) The shield (`--shield`, `shield.rs`): the edge's CPU under a
//!     20,000/s INVITE flood from one source with the shield off and on,
//!     and a banned source's flood dropped at XDP beside the answer rate.
//! (k) Idle connections (`--idle`, `versus/idle/`): memory per idle TCP,
//!     TLS and WSS connection and CRLF pong latency, sip-ka's edge against
//!     Kamailio, and the WebSocket CRLF pong rate with its CPU per pong.
//!
//! Shared by the parts: the command line (`opts.rs`), the packets they
//! send (`packets.rs`), CPU and memory accounting (`cpu.rs`, `memory.rs`)
//! and sockets in the lab's namespaces (`netns.rs`).
//!
//! Needs root. Every loop is bounded in count and in time, and the lab
//! only uses the addresses of the namespaces it creates.

mod callpath;
mod cpu;
mod dialogs;
mod memory;
mod netns;
mod opts;
mod packets;
mod shield;
mod store;
mod test_run;
mod timers;
mod versus;
mod veth;

use anyhow::{bail, Result};
use clap::Parser as _;

use crate::opts::Opts;

fn main() -> std::process::ExitCode {
    let opts = Opts::parse();
    match bench(&opts) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-ka-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(opts: &Opts) -> Result<()> {
    // The parts that need no root run on their own when asked for.
    if opts.timers || opts.dialogs || opts.store || opts.call_path {
        if opts.call_path {
            callpath::call_path_bench(opts.call_count)?;
        }
        if opts.store {
            store::store_bench()?;
        }
        if opts.timers {
            timers::timers_bench()?;
        }
        if opts.dialogs {
            if opts.timers {
                println!();
            }
            dialogs::dialogs_bench(opts.dialog_count)?;
        }
        return Ok(());
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (BPF_PROG_TEST_RUN, network namespaces, XDP)");
    }
    // With no part chosen, every part runs, one after the other.
    let all = !(opts.test_run_only
        || opts.lab_only
        || opts.kamailio
        || opts.scaling
        || opts.sweep
        || opts.shield
        || opts.proxy_calls
        || opts.idle);
    let mut parts: Vec<fn(&Opts) -> Result<()>> = Vec::new();
    if all || opts.test_run_only {
        parts.push(test_run::test_run_bench);
    }
    if all || opts.lab_only {
        parts.push(veth::lab_bench);
    }
    if all || opts.scaling {
        parts.push(veth::scaling::scaling_bench);
    }
    if all || opts.kamailio {
        parts.push(versus::kamailio_bench);
    }
    if all || opts.sweep {
        parts.push(versus::sweep::sweep_bench);
    }
    if all || opts.shield {
        parts.push(shield::shield_bench);
    }
    if all || opts.proxy_calls {
        parts.push(versus::calls::calls_bench);
    }
    if all || opts.idle {
        parts.push(versus::idle::idle_bench);
    }
    if all {
        parts.push(|_| timers::timers_bench());
        parts.push(|o| dialogs::dialogs_bench(o.dialog_count));
        parts.push(|_| store::store_bench());
        parts.push(|o| callpath::call_path_bench(o.call_count));
    }
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        part(opts)?;
    }
    Ok(())
}
