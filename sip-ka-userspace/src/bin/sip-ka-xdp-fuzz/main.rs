//! `sip-ka-xdp-fuzz`: pushes random and mutated frames through the real
//! XDP program with BPF_PROG_TEST_RUN and checks every outcome against
//! the rules of design.md (see `rules.rs`): never XDP_ABORTED; no answer
//! to a multicast, broadcast, loopback, unspecified, port-0 or
//! ACL-denied source, nor to a request whose checksum is wrong; no answer
//! more than 24 bytes longer than its request; answers with right IPv4
//! and UDP checksums, going back to where the request came from.
//!
//! A run is determined by its seed (printed; `--seed` repeats it). Each
//! violation is printed with its frame in hex and written to
//! `--artifacts`; the exit status is 1 when there was one. Needs root.

use std::{
    io::Write as _,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Parser;
use sip_ka::{
    bpf::test_run::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    lab::packet::SIP_CALL_ID,
};
use sip_ka_common::{
    callid_hash,
    config::ACL_DENY,
    maps::{v4_mapped, DialogValue, DIALOG_CONFIRMED},
    Config,
};

mod mutate;
mod rules;

use mutate::{Rng, DENIED_V4, DENIED_V6};
use rules::Prefix;

#[derive(Parser, Debug)]
#[command(
    name = "sip-ka-xdp-fuzz",
    about = "Mutation fuzzer for the XDP program"
)]
struct Opts {
    /// Frames to run through the program.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// The run's seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Where each violating frame is written as hex.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("sip-ka-xdp-fuzz"))]
    artifacts: PathBuf,
    /// Stop after this many violations.
    #[arg(long, default_value_t = 20)]
    max_violations: u64,
}

#[derive(Default)]
struct Tally {
    tx: u64,
    pass: u64,
    drop: u64,
    other: u64,
    /// Frames the kernel would not run (shorter than an Ethernet header).
    refused: u64,
    violations: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The program as the fuzzer wants it, whatever the defaults become: rate
/// limit off (every frame is a fresh chance to answer), checksums
/// verified, the deny list on; a confirmed dialog for the SIP seeds'
/// Call-ID so in-dialog keep-alives reach the DIALOGS update.
fn harness() -> Result<(Harness, Vec<Prefix>)> {
    let mut h = Harness::new()?;
    h.set_config(Config {
        rate_limit_pps: 0,
        rate_limit_addr_pps: 0,
        verify_checksums: 1,
        acl: ACL_DENY,
        ..Config::DEFAULT
    })?;
    h.acl_insert(false, 96 + 24, v4_mapped(DENIED_V4.octets()))?;
    h.acl_insert(false, 48, DENIED_V6.octets())?;
    h.insert_dialog(
        callid_hash(SIP_CALL_ID.as_bytes()),
        DialogValue {
            state: DIALOG_CONFIRMED,
            ..DialogValue::default()
        },
    )?;
    let deny = vec![
        Prefix {
            addr: DENIED_V4.into(),
            len: 24,
        },
        Prefix {
            addr: DENIED_V6.into(),
            len: 48,
        },
    ];
    Ok((h, deny))
}

fn frame(rng: &mut Rng) -> Vec<u8> {
    match rng.below(100) {
        0..=9 => mutate::random(rng),
        10..=54 => mutate::structured(rng).build(),
        _ => {
            let b = mutate::structured(rng);
            let f = b.build();
            mutate::bytes(rng, &b, f)
        }
    }
}

fn run(opts: &Opts) -> Result<bool> {
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "xdp-fuzz: seed {seed} (repeat with --seed {seed}), {} packets",
        opts.packets
    );
    let (h, deny) = harness().context("loading the XDP program (needs root)")?;
    let mut rng = Rng::new(seed);
    let mut t = Tally::default();
    let start = Instant::now();
    let mut last_report = start;
    // Frames the kernel refuses to run do not count toward `--packets`.
    let mut i = 0u64;
    while t.tx + t.pass + t.drop + t.other < opts.packets {
        i += 1;
        let f = frame(&mut rng);
        let out = match h.run(&f) {
            Ok(o) => o,
            Err(_) if f.len() < 14 => {
                t.refused += 1;
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("test run of {}", hex(&f))),
        };
        match out.action {
            XDP_TX => t.tx += 1,
            XDP_PASS => t.pass += 1,
            XDP_DROP => t.drop += 1,
            _ => t.other += 1,
        }
        let broken = rules::check(&f, out.action, &out.packet, &deny);
        if !broken.is_empty() {
            t.violations += 1;
            report(opts, seed, i, &f, out.action, &out.packet, &broken)?;
            if t.violations >= opts.max_violations {
                println!("xdp-fuzz: stopping after {} violations", t.violations);
                break;
            }
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!("xdp-fuzz: {i} packets, {} violations so far", t.violations);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ran = t.tx + t.pass + t.drop + t.other;
    println!(
        "xdp-fuzz: {ran} packets in {secs:.1} s ({:.0} packets/s): {} answered (XDP_TX), \
         {} passed, {} dropped, {} other; {} too short to run",
        ran as f64 / secs.max(1e-9),
        t.tx,
        t.pass,
        t.drop,
        t.other,
        t.refused
    );
    println!("xdp-fuzz: {} violations", t.violations);
    Ok(t.violations == 0)
}

fn report(
    opts: &Opts,
    seed: u64,
    i: u64,
    req: &[u8],
    action: u32,
    out: &[u8],
    broken: &[String],
) -> Result<()> {
    println!("xdp-fuzz: VIOLATION at packet {i} (seed {seed}), action {action}:");
    for b in broken {
        println!("  - {b}");
    }
    println!("  request: {}", hex(req));
    if action == XDP_TX {
        println!("  answer:  {}", hex(out));
    }
    std::fs::create_dir_all(&opts.artifacts)
        .with_context(|| format!("creating {}", opts.artifacts.display()))?;
    let path = opts.artifacts.join(format!("violation-{seed}-{i}.hex"));
    let mut f = std::fs::File::create(&path)?;
    writeln!(f, "# {}", broken.join("; "))?;
    writeln!(f, "{}", hex(req))?;
    println!("  written to {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    // The harness is dropped (its pins removed) before the exit status.
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("xdp-fuzz: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
