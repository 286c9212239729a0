//! sip-ka-bench: the figures behind `cargo xtask bench`.
//!
//! (a) Nanoseconds per packet of the XDP program, from BPF_PROG_TEST_RUN,
//!     for each fast path.
//! (b) In a veth lab, in one run: answered keep-alives per second and CPU
//!     time per answer for XDP, the daemon's userspace responder
//!     (`--xdp off`), and coturn answering the same STUN load.
//! (c) In the same kind of lab: sip-ka's edge against Kamailio 5.6, SIP
//!     OPTIONS from sipp and CRLF pings over TCP (`versus.rs`).
//! (d) 1,000,000 dialogs: the session timer wheel alone (`--timers`), and
//!     the edge's whole dialog table with its journal (`--dialogs`,
//!     `dialogs.rs`); neither needs root.
//!
//! Needs root. Every loop is bounded in count and in time, and the lab
//! only uses the addresses of the namespaces it creates.

mod dialogs;
mod versus;

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use clap::Parser;
use sip_ka::{
    bpf::test_run::{Harness, XDP_PASS, XDP_TX},
    lab::{self, Lab, SERVER_V4},
};
use sip_ka_common::{
    callid_hash,
    maps::{DialogValue, DIALOG_CONFIRMED},
    stun::{crc32, ATTR_FINGERPRINT, FINGERPRINT_XOR, MAGIC_COOKIE_BYTES},
    Counter,
};

/// Benchmarks of sip-ka's fast path (run as root).
#[derive(Parser, Debug)]
#[command(name = "sip-ka-bench")]
struct Opts {
    /// BPF_PROG_TEST_RUN calls (repeat=1 each) per answering path.
    #[arg(long, default_value_t = 50_000)]
    calls: u32,
    /// Repeat count for the paths that leave the packet unchanged.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Requests per lab row, at most.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Seconds per lab row, at most.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once in the lab load.
    #[arg(long, default_value_t = 128)]
    window: u32,
    /// Send STUN requests without FINGERPRINT in the lab load.
    #[arg(long)]
    no_fingerprint: bool,
    /// Leave NAPI of the lab's veth pair in softirq context (see the notes).
    #[arg(long)]
    no_threaded_napi: bool,
    /// Only the BPF_PROG_TEST_RUN part.
    #[arg(long)]
    test_run_only: bool,
    /// A configuration key for the BPF_PROG_TEST_RUN part, as `key=value`
    /// (the keys of `sip-ka config get`; repeatable), e.g. to see what
    /// `verify_checksums=off` or `track_peers=off` saves.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Only the lab part.
    #[arg(long)]
    lab_only: bool,
    /// Only the session timer bench (no root needed): memory per dialog
    /// and refreshes per second with 1,000,000 dialogs on one timer wheel.
    #[arg(long)]
    timers: bool,
    /// Only the dialog table bench (no root needed): the edge's dialog
    /// table filled through its INVITE/200 handling, memory per dialog,
    /// refreshes and expiries per second, and the journal's bytes and
    /// write cost with a state directory (100,000 dialogs).
    #[arg(long)]
    dialogs: bool,
    /// Dialogs in the dialog table bench.
    #[arg(long, default_value_t = 1_000_000)]
    dialog_count: u64,
    /// Only the comparison with Kamailio: sip-ka's edge and Kamailio 5.6
    /// answering the same SIP OPTIONS (sipp) and TCP CRLF loads.
    #[arg(long)]
    kamailio: bool,
    /// OPTIONS per server in the Kamailio comparison (sipp -m).
    #[arg(long, default_value_t = 50_000)]
    options_count: u64,
    /// OPTIONS sipp offers per second (sipp -r).
    #[arg(long, default_value_t = 100_000)]
    options_rate: u32,
    /// OPTIONS in flight at once, at most (sipp -l).
    #[arg(long, default_value_t = 100)]
    options_window: u32,
    /// Rounds of the Kamailio comparison (each runs both servers; the table
    /// pools them).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// TCP CRLF pings per server in the Kamailio comparison.
    #[arg(long, default_value_t = 100_000)]
    crlf_count: u64,
    /// TCP connections carrying those pings, one ping outstanding on each
    /// (all from one address: above 64 the edge is told to allow them).
    #[arg(long, default_value_t = 32)]
    tcp_conns: u32,
}

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
    if opts.timers || opts.dialogs {
        if opts.timers {
            timers_bench()?;
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
    let all = !(opts.test_run_only || opts.lab_only || opts.kamailio);
    let mut parts: Vec<fn(&Opts) -> Result<()>> = Vec::new();
    if all || opts.test_run_only {
        parts.push(test_run_bench);
    }
    if all || opts.lab_only {
        parts.push(lab_bench);
    }
    if all || opts.kamailio {
        parts.push(versus::kamailio_bench);
    }
    if all {
        parts.push(|_| timers_bench());
        parts.push(|o| dialogs::dialogs_bench(o.dialog_count));
    }
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        part(opts)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT4: [u8; 4] = [198, 18, 0, 2];
const SERVER4: [u8; 4] = [198, 18, 0, 1];

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Ethernet + IPv4 + UDP around `payload`, checksums correct.
fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = Vec::with_capacity(34 + udp_len);
    p.extend(SERVER_MAC);
    p.extend(CLIENT_MAC);
    p.extend(0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&CLIENT4);
    ip[16..20].copy_from_slice(&SERVER4);
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend(sport.to_be_bytes());
    udp.extend(dport.to_be_bytes());
    udp.extend((udp_len as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend(CLIENT4);
    pseudo.extend(SERVER4);
    pseudo.extend([0, 17]);
    pseudo.extend((udp_len as u16).to_be_bytes());
    pseudo.extend(&udp);
    let c = match fold(sum16(&pseudo)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    p.extend(udp);
    p
}

/// A STUN Binding request (RFC 5389) with no attributes, or only a
/// FINGERPRINT.
fn binding_request(txid: [u8; 12], fingerprint: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(28);
    m.extend(1u16.to_be_bytes());
    m.extend((if fingerprint { 8u16 } else { 0 }).to_be_bytes());
    m.extend(MAGIC_COOKIE_BYTES);
    m.extend(txid);
    if fingerprint {
        let fp = crc32(&m) ^ FINGERPRINT_XOR;
        m.extend(ATTR_FINGERPRINT.to_be_bytes());
        m.extend(4u16.to_be_bytes());
        m.extend(fp.to_be_bytes());
    }
    m
}

const CALL_ID: &str = "a84b4c76e66710-3f1c@198.18.0.2";

/// A realistic OPTIONS (about 450 bytes): out of dialog, or in dialog
/// (To tag) for a dialog the DIALOGS map knows.
fn sip_options(in_dialog: bool) -> Vec<u8> {
    let to_tag = if in_dialog { ";tag=as5f2c1a9e" } else { "" };
    format!(
        "OPTIONS sip:pbx@198.18.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK-524287-1---7c2f4a9d0e1b;rport\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:pbx@198.18.0.1:5060>{to_tag}\r\n\
         From: \"Alice\" <sip:alice@198.18.0.2:5060>;tag=1928301774\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: 63104 OPTIONS\r\n\
         Contact: <sip:alice@198.18.0.2:5060;ob>\r\n\
         Accept: application/sdp\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
         User-Agent: Bench-Phone/4.2\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------
// (a) BPF_PROG_TEST_RUN
// ---------------------------------------------------------------------

struct Case {
    name: String,
    packet: Vec<u8>,
    action: u32,
    /// The program leaves the packet as it was, so `repeat` runs the same
    /// path every time.
    fixed_point: bool,
}

fn cases() -> Vec<Case> {
    let tx = |n: &str, p| Case {
        name: n.to_string(),
        packet: p,
        action: XDP_TX,
        fixed_point: false,
    };
    let pass = |n: String, p| Case {
        name: n,
        packet: p,
        action: XDP_PASS,
        fixed_point: true,
    };
    let txid = *b"bench-txid-1";
    vec![
        tx("CRLF ping -> pong", udp4(40000, 5060, b"\r\n\r\n")),
        tx(
            "STUN Binding -> success",
            udp4(40000, 5060, &binding_request(txid, false)),
        ),
        tx(
            "STUN Binding + FINGERPRINT -> success + FP",
            udp4(40000, 5060, &binding_request(txid, true)),
        ),
        pass(
            format!(
                "SIP OPTIONS, {} B, counted (out of dialog)",
                sip_options(false).len()
            ),
            udp4(40000, 5060, &sip_options(false)),
        ),
        pass(
            format!(
                "SIP OPTIONS, {} B, counted (in dialog, DIALOGS)",
                sip_options(true).len()
            ),
            udp4(40000, 5060, &sip_options(true)),
        ),
        pass(
            "non-SIP UDP to port 53, 64 B, passed".into(),
            udp4(40000, 53, &[0x5a; 64]),
        ),
    ]
}

struct Timing {
    median: f64,
    mean: f64,
}

/// `calls` separate runs with repeat=1, each on a fresh copy of the packet
/// (the kernel copies data_in for every call).
fn single_runs(h: &Harness, case: &Case, calls: u32) -> Result<Timing> {
    let mut ns = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let o = h.run(&case.packet)?;
        if o.action != case.action {
            bail!(
                "{}: the program returned {} (expected {})",
                case.name,
                o.action,
                case.action
            );
        }
        ns.push(o.duration.as_nanos() as f64);
    }
    let mean = ns.iter().sum::<f64>() / ns.len() as f64;
    Ok(Timing {
        median: median(ns),
        mean,
    })
}

fn check_answer(case: &Case, out: &[u8]) -> Result<()> {
    let payload = out.get(42..).unwrap_or(&[]);
    let ok = match case.name.as_str() {
        n if n.starts_with("CRLF") => payload == b"\r\n",
        n if n.contains("FINGERPRINT") => {
            payload.len() >= 28
                && payload[..2] == [1, 1]
                && payload[payload.len() - 8..payload.len() - 6] == ATTR_FINGERPRINT.to_be_bytes()
        }
        _ => payload.len() >= 20 && payload[..2] == [1, 1],
    };
    if !ok {
        bail!("{}: unexpected answer {:02x?}", case.name, payload);
    }
    Ok(())
}

/// The object's empty program (`xdp_pass`, which returns XDP_PASS at
/// once), loaded on its own: the floor of a BPF_PROG_TEST_RUN run on this
/// machine.
struct EmptyProgram {
    bpf: aya::Ebpf,
    pin_dir: PathBuf,
}

impl EmptyProgram {
    fn load() -> Result<EmptyProgram> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/ska{}p", std::process::id()));
        let mut bpf = sip_ka::bpf::load::load(&pin_dir, 0)?;
        let prog: &mut Xdp = bpf
            .program_mut("xdp_pass")
            .context("xdp_pass missing from the object")?
            .try_into()?;
        prog.load().context("loading xdp_pass")?;
        Ok(EmptyProgram { bpf, pin_dir })
    }

    /// Mean ns per run over `repeat` runs.
    fn run(&self, packet: &[u8], repeat: u32) -> Result<f64> {
        let prog: &Xdp = self
            .bpf
            .program("xdp_pass")
            .context("xdp_pass")?
            .try_into()?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })?;
        Ok(r.duration.as_nanos() as f64)
    }
}

impl Drop for EmptyProgram {
    fn drop(&mut self) {
        let _ = sip_ka::bpf::pins::unpin_all(&self.pin_dir);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn test_run_bench(opts: &Opts) -> Result<()> {
    println!("== (a) XDP program, ns per packet (BPF_PROG_TEST_RUN)");
    let calls = opts.calls.max(1);
    let repeat = opts.repeat.max(1);
    let mut h = Harness::new().context("loading the XDP program for BPF_PROG_TEST_RUN")?;
    if !opts.set.is_empty() {
        let mut cfg = sip_ka_common::Config::DEFAULT;
        for kv in &opts.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
            sip_ka::bpf::config_keys::set(&mut cfg, k.trim(), v.trim())
                .with_context(|| format!("--set {kv}"))?;
        }
        h.set_config(cfg)?;
        println!(
            "configuration changed from the defaults: {}",
            opts.set.join(" ")
        );
    }
    h.insert_dialog(
        callid_hash(CALL_ID.as_bytes()),
        DialogValue {
            state: DIALOG_CONFIRMED,
            ..Default::default()
        },
    )?;
    let cases = cases();

    // What the kernel's timer adds to a repeat=1 call (ktime_get_ns, bh
    // disable/enable, a cold start): an empty program timed both ways.
    let empty = EmptyProgram::load()?;
    let probe = &cases[0].packet;
    for _ in 0..2000 {
        empty.run(probe, 1)?;
    }
    let empty_single = median(
        (0..calls)
            .map(|_| empty.run(probe, 1))
            .collect::<Result<Vec<_>>>()?,
    );
    let empty_repeat = empty.run(probe, repeat)?;
    drop(empty);
    let overhead = (empty_single - empty_repeat).max(0.0);

    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "path", "repeat=1", "repeat=1", "repeat=N", "estimate", "above"
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "", "median", "mean", "mean", "ns/packet", "empty prog"
    );
    println!(
        "{:<48} {:>9.0} {:>9} {:>9.1} {:>10.1} {:>10}",
        "(empty XDP program, for reference)", empty_single, "", empty_repeat, empty_repeat, "0"
    );
    for case in &cases {
        let in_dialog_before = h.counters()?[Counter::KaInDialog as usize];
        let first = h.run(&case.packet)?;
        if case.name.contains("in dialog")
            && h.counters()?[Counter::KaInDialog as usize] == in_dialog_before
        {
            bail!("{}: the dialog was not found in DIALOGS", case.name);
        }
        if first.action != case.action {
            bail!(
                "{}: the program returned {} (expected {})",
                case.name,
                first.action,
                case.action
            );
        }
        if case.action == XDP_TX {
            check_answer(case, &first.packet)?;
        } else if first.packet != case.packet {
            bail!("{}: a passed packet was changed", case.name);
        }
        for _ in 0..1000 {
            h.run(&case.packet)?;
        }
        let single = single_runs(&h, case, calls)?;
        let (repeat_col, estimate) = if case.fixed_point {
            let r = h.run_repeat(&case.packet, repeat)?;
            if r.action != case.action {
                bail!("{}: repeat run returned {}", case.name, r.action);
            }
            let ns = r.duration.as_nanos() as f64;
            (format!("{ns:.1}"), ns)
        } else {
            ("n/a".to_string(), (single.median - overhead).max(0.0))
        };
        println!(
            "{:<48} {:>9.0} {:>9.1} {:>9} {:>10.1} {:>10.1}",
            case.name,
            single.median,
            single.mean,
            repeat_col,
            estimate,
            (estimate - empty_repeat).max(0.0)
        );
    }
    println!(
        "per-call timer overhead: {overhead:.1} ns (empty program: repeat=1 median \
         {empty_single:.0} ns minus repeat={repeat} mean {empty_repeat:.1} ns)"
    );
    println!(
        "notes: BPF_PROG_TEST_RUN reuses one buffer for all `repeat` runs of a call, and \
         XDP_TX rewrites the packet in place (a pong becomes a lone CRLF to the sender, a \
         STUN success is no request), so `repeat` would time an answer once and then another \
         path. Answering paths are therefore timed with {calls} separate calls of repeat=1, \
         each on a fresh copy of the request (the kernel copies data_in per call); their \
         estimate is the median minus the per-call timer overhead. Paths that leave the \
         packet unchanged (XDP_PASS) are timed with repeat={repeat} and the estimate is the \
         kernel's mean. \"above empty prog\" subtracts what the kernel's run loop costs an \
         empty XDP program on this machine. Times in ns. The answers were checked (a CRLF pong, a Binding success, with \
         FINGERPRINT when asked) and the passed packets left unchanged."
    );
    Ok(())
}

// ---------------------------------------------------------------------
// (b) veth lab
// ---------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Stun,
    Crlf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Stun => "STUN Binding",
            Kind::Crlf => "CRLF ping",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Xdp,
    User,
    Coturn,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Xdp => "sip-ka XDP (native)",
            Server::User => "sip-ka userspace (--xdp off)",
            Server::Coturn => "coturn turnserver",
        }
    }
}

#[derive(Default, Debug, Clone)]
struct Load {
    sent: u64,
    answered: u64,
    bad: u64,
    /// Readiness probes sent before the measured run.
    probes: u64,
    elapsed: f64,
    /// CPU time of the load generator thread.
    gen_cpu: f64,
    /// Busy CPU time of the whole machine (/proc/stat).
    busy_cpu: f64,
    /// CPU time of the server's tasks: its process(es) and the server
    /// veth's NAPI thread (None when that thread was not found).
    server_cpu: Option<f64>,
    /// CPU time of the client veth's NAPI thread (receiving the answers).
    client_napi_cpu: Option<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.max(1e-9)
    }

    /// ns of CPU per answer: the whole machine's busy time minus the load
    /// generator's own.
    fn machine_per_answer(&self) -> f64 {
        (self.busy_cpu - self.gen_cpu).max(0.0) * 1e9 / (self.answered.max(1) as f64)
    }

    /// ns of the server's own CPU per answer.
    fn server_per_answer(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| c * 1e9 / (self.answered.max(1) as f64))
    }
}

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

/// Busy CPU seconds of the whole machine: user + nice + system + irq +
/// softirq from the first line of /proc/stat.
fn machine_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() < 7 {
        bail!("unexpected /proc/stat line {line:?}");
    }
    let ticks = f[0] + f[1] + f[2] + f[5] + f[6];
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into `ru` only.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds the scheduler counted for every thread of `pids`
/// (/proc/PID/task/TID/schedstat, nanoseconds on CPU).
fn tasks_cpu(pids: &[u32]) -> f64 {
    let mut ns: u64 = 0;
    for pid in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// Kernel threads of threaded NAPI ("napi/<dev>-<id>").
fn napi_threads() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                let comm = comm.trim_end().to_string();
                if comm.starts_with("napi/") {
                    out.push((pid, comm));
                }
            }
        }
    }
    out
}

/// Switches `dev` in namespace `ns` to threaded NAPI (with GRO on, so the
/// device uses NAPI even without XDP) and returns the NAPI threads that
/// appeared.
fn threaded_napi(ns: &str, dev: &str) -> Result<Vec<u32>> {
    let before: Vec<u32> = napi_threads().into_iter().map(|(p, _)| p).collect();
    let script =
        format!("ethtool -K {dev} gro on >/dev/null && echo 1 > /sys/class/net/{dev}/threaded");
    // `ip netns exec` mounts the namespace's own /sys for the command.
    lab::run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &script]))
        .with_context(|| format!("enabling threaded NAPI on {dev}"))?;
    // Recent kernels show the whole name; older ones cut it at 15 characters.
    let want = format!("napi/{dev}-");
    let matches =
        |comm: &str| comm.starts_with(&want) || (comm.len() == 15 && want.starts_with(comm));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let new: Vec<u32> = napi_threads()
            .into_iter()
            .filter(|(p, comm)| !before.contains(p) && matches(comm))
            .map(|(p, _)| p)
            .collect();
        if !new.is_empty() || Instant::now() > deadline {
            return Ok(new);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct LoadSpec {
    kind: Kind,
    target: SocketAddr,
    count: u64,
    seconds: u64,
    window: u32,
    fingerprint: bool,
    /// Processes and kernel threads that make up the server side.
    server_tasks: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
}

fn request(spec: &LoadSpec, seq: u64) -> Vec<u8> {
    match spec.kind {
        Kind::Crlf => b"\r\n\r\n".to_vec(),
        Kind::Stun => {
            let mut txid = [0u8; 12];
            txid[..4].copy_from_slice(b"skab");
            txid[4..].copy_from_slice(&seq.to_be_bytes());
            binding_request(txid, spec.fingerprint)
        }
    }
}

fn is_answer(kind: Kind, msg: &[u8]) -> bool {
    match kind {
        Kind::Crlf => msg == b"\r\n",
        Kind::Stun => msg.len() >= 20 && msg[..2] == [1, 1] && msg[4..8] == MAGIC_COOKIE_BYTES,
    }
}

/// Waits until `fd` is readable or `ms` pass.
fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Runs the load from a thread that joined the client namespace.
fn run_load(lab: &Lab, spec: LoadSpec) -> Result<Load> {
    let ns = format!("/run/netns/{}", lab.client_ns);
    std::thread::spawn(move || -> Result<Load> {
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        // SAFETY: setns on this thread only; the thread ends with the load.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(spec.target)?;
        sock.set_nonblocking(true)?;
        generate(&sock, &spec)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

fn generate(sock: &UdpSocket, spec: &LoadSpec) -> Result<Load> {
    let fd = sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    let mut load = Load::default();
    // Readiness: one request every 100 ms until one is answered (10 s).
    let ready_by = Instant::now() + Duration::from_secs(10);
    let mut ready = false;
    while !ready && Instant::now() < ready_by {
        let _ = sock.send(&request(spec, 0));
        load.probes += 1;
        if wait_readable(fd, 100) {
            while let Ok(n) = sock.recv(&mut buf) {
                ready |= is_answer(spec.kind, &buf[..n]);
            }
        }
    }
    if !ready {
        bail!(
            "no answer to a {} sent to {} within 10 s",
            spec.kind.name(),
            spec.target
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    while sock.recv(&mut buf).is_ok() {}

    let server0 = spec.server_tasks.as_deref().map(tasks_cpu);
    let client0 = spec.client_napi.as_deref().map(tasks_cpu);
    let busy0 = machine_busy()?;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs(spec.seconds);
    let mut in_flight: u64 = 0;
    let mut quiet_since = Instant::now();
    let mut seq = 1u64;
    loop {
        let now = Instant::now();
        if now >= end || (load.sent >= spec.count && in_flight == 0) {
            break;
        }
        while in_flight < u64::from(spec.window) && load.sent < spec.count {
            match sock.send(&request(spec, seq)) {
                Ok(_) => {
                    load.sent += 1;
                    in_flight += 1;
                    seq += 1;
                }
                // A full socket buffer or an ICMP error: retry later.
                Err(_) => break,
            }
        }
        let mut got = 0;
        if wait_readable(fd, 5) {
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if is_answer(spec.kind, &buf[..n]) {
                            load.answered += 1;
                        } else {
                            load.bad += 1;
                        }
                        got += 1;
                        in_flight = in_flight.saturating_sub(1);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                }
            }
        }
        if got > 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(50) {
            // Nothing for 50 ms: what is in flight is lost.
            in_flight = 0;
            quiet_since = Instant::now();
        }
    }
    load.elapsed = start.elapsed().as_secs_f64();
    load.gen_cpu = thread_cpu() - cpu0;
    load.busy_cpu = machine_busy()? - busy0;
    load.server_cpu = spec
        .server_tasks
        .as_deref()
        .zip(server0)
        .map(|(t, c0)| tasks_cpu(t) - c0);
    load.client_napi_cpu = spec
        .client_napi
        .as_deref()
        .zip(client0)
        .map(|(t, c0)| tasks_cpu(t) - c0);
    Ok(load)
}

/// coturn, started in the lab's server namespace by the benchmark itself
/// and stopped with SIGTERM when dropped.
struct Coturn(Child);

impl Coturn {
    /// coturn's `turnserver`, answering STUN on 198.18.0.1:5060 (UDP only,
    /// STUN only, no authentication for Binding).
    fn start(lab: &Lab) -> Result<Coturn> {
        if lab::run(Command::new("sh").args(["-c", "command -v turnserver"])).is_err() {
            bail!("turnserver not found: apt-get install coturn (`cargo xtask setup`)");
        }
        let child = lab
            .server("turnserver")
            .args([
                "-n",
                "--listening-ip=198.18.0.1",
                "--listening-port=5060",
                "--no-tcp",
                "--no-tls",
                "--no-dtls",
                "--stun-only",
                "--no-cli",
                "--no-rfc5780",
                "--no-software-attribute",
                "--log-file=stdout",
                "--simple-log",
                "--no-stdout-log",
                "--pidfile=/dev/null",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnserver in the server namespace")?;
        Ok(Coturn(child))
    }

    fn pid(&self) -> u32 {
        // nsenter execs the program, so this pid is the server's own.
        self.0.id()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xdp_attached(lab: &Lab) -> Result<bool> {
    let out = lab::run(
        lab.server("ip")
            .args(["link", "show", "dev", &lab.server_if]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.contains("prog/xdp") || text.contains(" xdp"))
}

/// The id of the XDP program attached to the server veth, from
/// `ip link show` ("prog/xdp id N").
fn attached_prog_id(lab: &Lab) -> Option<u32> {
    let out = lab::run(
        lab.server("ip")
            .args(["link", "show", "dev", &lab.server_if]),
    )
    .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// (run time, run count) the kernel accumulated for program `id` while
/// BPF_ENABLE_STATS is held.
fn prog_stats(id: u32) -> Option<(Duration, u64)> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .map(|p| (p.run_time(), p.run_count()))
}

fn counter(lab: &Lab, name: &str) -> Result<u64> {
    Ok(lab.counters()?.get(name).copied().unwrap_or(0))
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

fn lab_bench(opts: &Opts) -> Result<()> {
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

// ---------------------------------------------------------------------
// Session timers at scale (--timers)
// ---------------------------------------------------------------------

/// 1,000,000 dialogs on one [`sip_ka::util::timer_wheel::TimerWheel`]: memory per
/// dialog (resident set from /proc/self/statm before and after, and by the
/// structure sizes), then refreshes per second (each moves one dialog's
/// expiry by one session interval, as a re-INVITE/UPDATE 2xx does), then
/// expiring them all. Bounded: a fixed number of operations, 10 s at most
/// for the refresh loop.
fn timers_bench() -> Result<()> {
    use sip_ka::edge::session_timer::{Session, SessionRecord, SessionTimers, TimerConfig};
    use sip_ka::sip::Refresher;
    use sip_ka::util::timer_wheel::{bytes_per_timer, TimerWheel, ENTRY_BYTES, MAP_ENTRY_BYTES};

    const DIALOGS: u64 = 1_000_000;
    const REFRESHES: u64 = 10_000_000;
    const INTERVAL_MS: u64 = 1_800_000;

    // Dialog ids as the daemon makes them: hashes of Call-IDs.
    let id = |i: u64| callid_hash(format!("{i:016x}@bench.invalid").as_bytes());
    let ids: Vec<u64> = (0..DIALOGS).map(id).collect();
    let t0: u64 = 1_700_000_000_000;

    let before = rss_bytes()?;
    let mut wheel = TimerWheel::new(1, t0);
    let start = Instant::now();
    for (i, &d) in ids.iter().enumerate() {
        // Spread the expiries over one interval.
        wheel.set(d, t0 + INTERVAL_MS / 2 + (i as u64 * 1_799) % INTERVAL_MS);
    }
    let insert_s = start.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    let measured = after.saturating_sub(before) as f64 / DIALOGS as f64;

    // Refreshes: dialogs in a scattered order, the clock moving forward.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    let mut done = 0u64;
    let mut now = t0;
    let mut expired_during = 0usize;
    while done < REFRESHES && Instant::now() < deadline {
        for k in 0..100_000u64 {
            let i = (done + k).wrapping_mul(2_654_435_761) % DIALOGS;
            if let Some(&d) = ids.get(i as usize) {
                wheel.set(d, now + INTERVAL_MS);
            }
        }
        done += 100_000;
        now += 10; // 10 ms of virtual time per 100,000 refreshes
        expired_during += wheel.expire(now).count();
    }
    let refresh_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let expired = wheel.expire(now + 2 * INTERVAL_MS).count();
    let expire_s = start.elapsed().as_secs_f64();

    drop(wheel);

    // The whole session tracker (wheel + per-dialog session record), filled
    // the way a restart restores it.
    let before_st = rss_bytes()?;
    let mut sessions = SessionTimers::new(TimerConfig::default(), false, t0);
    sessions.restore(ids.iter().enumerate().map(|(i, &d)| SessionRecord {
        dialog: d,
        session: Session {
            interval: 1800,
            refresher: Some(Refresher::Uac),
        },
        expires_at_ms: Some(t0 + INTERVAL_MS / 2 + (i as u64 * 1_799) % INTERVAL_MS),
    }));
    let tracker = rss_bytes()?.saturating_sub(before_st) as f64 / DIALOGS as f64;
    let tracked = sessions.len();
    drop(sessions);

    println!("== (d) session timers: {DIALOGS} dialogs on one timer wheel (1 ms ticks)");
    println!("{:<44} {:>16}", "figure", "value");
    println!("{:<44} {:>16}", "timer node (slab), bytes", ENTRY_BYTES);
    println!(
        "{:<44} {:>16}",
        "id map entry (+1 control byte), bytes", MAP_ENTRY_BYTES
    );
    println!(
        "{:<44} {:>16.1}",
        "by sizes, bytes/dialog (id map 7/8 full)",
        bytes_per_timer(7.0 / 8.0)
    );
    println!(
        "{:<44} {:>16.1}",
        "by sizes, bytes/dialog (id map 7/16 full)",
        bytes_per_timer(7.0 / 16.0)
    );
    println!(
        "{:<44} {:>16.1}",
        "measured (RSS delta / dialogs), bytes/dialog", measured
    );
    println!(
        "{:<44} {:>16.1}",
        "measured, whole SessionTimers, bytes/dialog", tracker
    );
    println!(
        "{:<44} {:>16.0}",
        "inserts per second",
        DIALOGS as f64 / insert_s
    );
    println!(
        "{:<44} {:>16.0}",
        "refreshes per second",
        done as f64 / refresh_s
    );
    println!(
        "{:<44} {:>16.0}",
        "expiries per second (all at once)",
        expired as f64 / expire_s.max(1e-9)
    );
    println!(
        "notes: {done} refreshes in {refresh_s:.2} s (each moves one dialog's expiry to now + \
         1800 s; the clock advances 10 ms per 100,000, {expired_during} expired meanwhile); \
         {expired} expired at the end; {tracked} sessions restored into the tracker; RSS from /proc/self/statm before and after inserting \
         (includes allocator slack and the doubling of the slab and the maps)."
    );
    Ok(())
}

/// Resident memory of this process in bytes (/proc/self/statm).
fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("/proc/self/statm: no resident field")?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}
