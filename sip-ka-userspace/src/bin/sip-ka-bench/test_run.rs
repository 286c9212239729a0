//! (a) Nanoseconds per packet of the XDP program through
//! BPF_PROG_TEST_RUN, for each fast path, with the kernel's own per-call
//! timer overhead measured on an empty program and taken off.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use sip_ka::bpf::test_run::{Harness, XDP_DROP, XDP_PASS, XDP_TX};
use sip_ka_common::{
    callid_hash,
    maps::{v4_mapped, BanReason, BanValue, DialogValue, BAN_FOREVER, DIALOG_CONFIRMED},
    stun::ATTR_FINGERPRINT,
    Action, Config, Counter,
};

use crate::opts::Opts;
use crate::packets::{
    binding_request, sip_options, udp4, udp4_banned, BANNED_V4, CALL_ID, CRLF_PING,
};

struct Case {
    name: String,
    packet: Vec<u8>,
    action: u32,
    /// The program leaves the packet as it was, so `repeat` runs the same
    /// path every time.
    fixed_point: bool,
}

/// The action the configuration gives an answering path, and whether the
/// packet then stays as it was (so `repeat` times the same path).
fn answer_action(configured: u32) -> (u32, bool) {
    match Action::from_u32(configured) {
        Action::Answer => (XDP_TX, false),
        Action::Drop => (XDP_DROP, true),
        Action::Pass => (XDP_PASS, true),
    }
}

/// The cases; with `--set udp_crlf=pass` (or `stun=drop`...) the answering
/// paths stop at their decision, which times everything before the
/// answer is written.
fn cases(cfg: &Config) -> Vec<Case> {
    let crlf = answer_action(cfg.udp_crlf);
    let stun = answer_action(cfg.stun);
    let tx = |n: &str, p, (action, fixed_point): (u32, bool)| Case {
        name: n.to_string(),
        packet: p,
        action,
        fixed_point,
    };
    let pass = |n: String, p| Case {
        name: n,
        packet: p,
        action: XDP_PASS,
        fixed_point: true,
    };
    let txid = *b"bench-txid-1";
    vec![
        tx("CRLF ping -> pong", udp4(40000, 5060, CRLF_PING), crlf),
        tx(
            "STUN Binding -> success",
            udp4(40000, 5060, &binding_request(txid, false)),
            stun,
        ),
        tx(
            "STUN Binding + FINGERPRINT -> success + FP",
            udp4(40000, 5060, &binding_request(txid, true)),
            stun,
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
        Case {
            name: "CRLF ping from a banned source -> dropped".into(),
            packet: udp4_banned(40000, 5060, CRLF_PING),
            action: XDP_DROP,
            fixed_point: true,
        },
        Case {
            name: format!(
                "SIP OPTIONS, {} B, from a banned source -> dropped",
                sip_options(false).len()
            ),
            packet: udp4_banned(40000, 5060, &sip_options(false)),
            action: XDP_DROP,
            fixed_point: true,
        },
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

/// One of the object's reference programs, loaded on its own: `xdp_pass`
/// (returns XDP_PASS at once: the floor of a BPF_PROG_TEST_RUN run on
/// this machine) or `xdp_echo` (swaps addresses and ports and returns
/// XDP_TX: the least an answer costs).
struct RefProgram {
    bpf: aya::Ebpf,
    name: &'static str,
    pin_dir: PathBuf,
}

impl RefProgram {
    fn load(name: &'static str) -> Result<RefProgram> {
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/ska{}{name}", std::process::id()));
        let mut bpf = sip_ka::bpf::load::load(&pin_dir, 0)?;
        let prog: &mut Xdp = bpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from the object"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        Ok(RefProgram { bpf, name, pin_dir })
    }

    /// ns per run over `repeat` runs, and the action.
    fn run(&self, packet: &[u8], repeat: u32) -> Result<(f64, u32)> {
        let prog: &Xdp = self.bpf.program(self.name).context(self.name)?.try_into()?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })?;
        Ok((r.duration.as_nanos() as f64, r.return_value))
    }

    /// The median ns of `calls` repeat=1 runs.
    fn single_median(&self, packet: &[u8], calls: u32) -> Result<f64> {
        Ok(median(
            (0..calls)
                .map(|_| self.run(packet, 1).map(|r| r.0))
                .collect::<Result<Vec<_>>>()?,
        ))
    }
}

impl Drop for RefProgram {
    fn drop(&mut self) {
        let _ = sip_ka::bpf::pins::unpin_all(&self.pin_dir);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs part (a) on every case and prints the table.
pub(crate) fn test_run_bench(opts: &Opts) -> Result<()> {
    println!("== (a) XDP program, ns per packet (BPF_PROG_TEST_RUN)");
    let calls = opts.calls.max(1);
    let repeat = opts.repeat.max(1);
    let mut h = Harness::new().context("loading the XDP program for BPF_PROG_TEST_RUN")?;
    // Every run comes from one source: the per-source answer limit (on by
    // default) would time the drop path after the first burst.
    let mut cfg = sip_ka_common::Config {
        rate_limit_pps: 0,
        rate_limit_addr_pps: 0,
        ..sip_ka_common::Config::DEFAULT
    };
    for kv in &opts.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        sip_ka::bpf::config_keys::set(&mut cfg, k.trim(), v.trim())
            .with_context(|| format!("--set {kv}"))?;
    }
    h.set_config(cfg)?;
    println!(
        "configuration changed from the defaults: rate_limit_pps=0 rate_limit_addr_pps=0 {}",
        opts.set.join(" ")
    );
    h.insert_dialog(
        callid_hash(CALL_ID.as_bytes()),
        DialogValue {
            state: DIALOG_CONFIRMED,
            ..Default::default()
        },
    )?;
    // One source banned (without end), as the shield bans a scanner.
    h.ban(
        128,
        v4_mapped(BANNED_V4.octets()),
        BanValue {
            expires_ns: BAN_FOREVER,
            reason: BanReason::Scanner as u32,
            ..BanValue::default()
        },
    )?;
    let cases = cases(&cfg);

    // What the kernel's timer adds to a repeat=1 call (ktime_get_ns, bh
    // disable/enable, a cold start): an empty program timed both ways.
    let empty = RefProgram::load("xdp_pass")?;
    let probe = &cases[0].packet;
    for _ in 0..2000 {
        empty.run(probe, 1)?;
    }
    let empty_single = empty.single_median(probe, calls)?;
    let empty_repeat = empty.run(probe, repeat)?.0;
    drop(empty);
    let overhead = (empty_single - empty_repeat).max(0.0);
    // The echo does the same work whatever the frame's direction, so it
    // is timed both ways: cold like the answers, and warm with `repeat`.
    let echo = RefProgram::load("xdp_echo")?;
    if echo.run(probe, 1)?.1 != XDP_TX {
        bail!("xdp_echo did not return XDP_TX");
    }
    for _ in 0..2000 {
        echo.run(probe, 1)?;
    }
    let echo_single = echo.single_median(probe, calls)?;
    let echo_repeat = echo.run(probe, repeat)?.0;
    drop(echo);

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
    let echo_estimate = (echo_single - overhead).max(0.0);
    println!(
        "{:<48} {:>9.0} {:>9} {:>9.1} {:>10.1} {:>10.1}",
        "(XDP echo: swap, XDP_TX; cold / warm)",
        echo_single,
        "",
        echo_repeat,
        echo_estimate,
        (echo_estimate - empty_repeat).max(0.0)
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>10} {:>10.1}",
        "",
        "",
        "",
        "",
        "warm",
        (echo_repeat - empty_repeat).max(0.0)
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
        } else if case.action == XDP_PASS && first.packet != case.packet {
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
         empty XDP program on this machine. The echo row is a program that only swaps the \
         addresses and returns XDP_TX, timed cold (repeat=1, as the answers) and warm \
         (repeat): the floor of an answer here. Times in ns. The answers were checked (a CRLF pong, a Binding success, with \
         FINGERPRINT when asked) and the passed packets left unchanged. The banned rows come \
         from a source in the BANS map (one entry): the drop the shield puts a scanner's \
         packets to."
    );
    Ok(())
}
