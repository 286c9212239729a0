//! The soak's command line, and what its parts share.

use std::{process::Command, time::Duration};

use clap::Parser;

/// Soak of sip-ka's edge (run as root): calls with session timers and
/// in-dialog keep-alives, registrations, CRLF/STUN pings; RSS sampled,
/// nothing left at the end.
#[derive(Parser, Debug)]
pub struct Opts {
    /// Seconds of load (calls and registrations start during this time;
    /// the last ones then finish).
    #[arg(long, default_value_t = 600)]
    pub secs: u64,
    /// New calls per second.
    #[arg(long, default_value_t = 5)]
    pub call_rate: u32,
    /// Milliseconds between the steps of a call (four pauses: a call
    /// lasts about four times this).
    #[arg(long, default_value_t = 2_500)]
    pub pause_ms: u32,
    /// New registrations per second (each unregistered after --pause-ms).
    #[arg(long, default_value_t = 5)]
    pub register_rate: u32,
    /// CRLF and STUN keep-alives per second (alternating), each waiting
    /// for its answer; below the fast path's per-source rate limit.
    #[arg(long, default_value_t = 50)]
    pub ping_rate: u32,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
}

/// The edge's SIP port in the lab.
pub const EDGE_PORT: u16 = 5060;
/// Where sipp, the PBX, listens behind the edge.
pub const PBX_PORT: u16 = 5080;

/// A command in the lab, stopped by `timeout` after `limit` at the latest.
pub fn bounded(cmd: Command, limit: Duration) -> Command {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &limit.as_secs().to_string()])
        .arg(program)
        .args(args);
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    c
}
