//! `cargo xtask fuzz`: the libFuzzer targets of fuzz/ (cargo-fuzz, nightly)
//! for a bounded time each, then the XDP mutation fuzzer; a table of what
//! each did.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    proc::{self, is_root, root_dir, target_dir},
    setup,
};

/// The cargo-fuzz targets (fuzz/Cargo.toml), in the order they run.
pub const TARGETS: [&str; 5] = [
    "sip_parse",
    "stream_framer",
    "stun_responder",
    "journal_replay",
    "flow_token",
];

/// The XDP mutation fuzzer's name for `--target`.
pub const XDP: &str = "xdp";

/// Seconds per target when none are given: the two parsers every byte
/// from the network goes through get three times as long.
fn default_seconds(target: &str) -> u64 {
    match target {
        "sip_parse" | "stream_framer" => 90,
        _ => 30,
    }
}

/// The SIP parser and framer are safe Rust throughout (no `unsafe`), so
/// AddressSanitizer finds nothing there that a panic would not, and costs
/// them most of their executions: they run without it. The others go
/// through ring, serde_json and the file system, and keep it.
fn sanitizer(target: &str) -> &'static str {
    match target {
        "sip_parse" | "stream_framer" => "none",
        _ => "address",
    }
}

/// A target directory per sanitizer: the flags differ, and one directory
/// would rebuild everything at each switch. AddressSanitizer builds go
/// where cargo-fuzz puts them by default.
fn flavour_dir(sanitizer: &str) -> String {
    let dir = root_dir().join("fuzz/target");
    let dir = if sanitizer == "address" {
        dir
    } else {
        dir.join(sanitizer)
    };
    dir.to_string_lossy().into_owned()
}

/// What one target did, from libFuzzer's last stats line.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    execs: u64,
    execs_per_sec: u64,
    corpus: u64,
    crashes: u64,
}

/// Reads `#123456\tDONE   cov: 1 ft: 2 corp: 345/6789b ... exec/s: 999 ...`
/// (and the progress lines of the same form), keeping the last.
fn see_line(stats: &mut Stats, line: &str) {
    if line.contains("ERROR: libFuzzer")
        || line.contains("ERROR: AddressSanitizer")
        || line.contains("panicked at")
        || line.starts_with("SUMMARY: ")
    {
        // One crash ends a run; several lines say so.
        stats.crashes = 1;
    }
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        if let Ok(n) = n.trim().parse() {
            stats.execs = n;
        }
        return;
    }
    if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
        if let Ok(n) = n.trim().parse() {
            stats.execs_per_sec = n;
        }
        return;
    }
    let Some(rest) = line.strip_prefix('#') else {
        return;
    };
    let mut words = rest.split_whitespace();
    let Some(Ok(execs)) = words.next().map(str::parse::<u64>) else {
        return;
    };
    stats.execs = execs;
    let words: Vec<&str> = words.collect();
    for pair in words.windows(2) {
        match pair[0] {
            "corp:" => {
                if let Some(Ok(n)) = pair[1].split('/').next().map(str::parse) {
                    stats.corpus = n;
                }
            }
            "exec/s:" => {
                if let Ok(n) = pair[1].parse() {
                    stats.execs_per_sec = n;
                }
            }
            _ => {}
        }
    }
}

fn ensure_cargo_fuzz() -> Result<()> {
    let ok = proc::stdout_of(Command::new("cargo").args(["fuzz", "--version"])).is_some();
    if ok {
        return Ok(());
    }
    println!("xtask: installing cargo-fuzz");
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!("cargo install cargo-fuzz failed ({})", done.describe());
    }
    Ok(())
}

/// `cargo +nightly fuzz`, run in the workspace root. `-O` keeps the
/// parsers' speed close to a release build; debug assertions stay on.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root_dir())
        .arg("+nightly")
        .arg("fuzz")
        .args(args);
    // The nested eBPF build (sip-ka-userspace's build.rs) must not inherit
    // the toolchain of the cargo running xtask.
    cmd.env_remove("RUSTC").env_remove("CARGO");
    cmd
}

fn run_target(target: &str, seconds: u64) -> Result<Stats> {
    let root = root_dir();
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    if target == "sip_parse" || target == "stream_framer" {
        seed_sip(&corpus, target == "stream_framer")?;
    }
    let artifacts = root.join("fuzz/artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let total = format!("-max_total_time={seconds}");
    let art = format!("-artifact_prefix={}/", artifacts.display());
    let corpus_arg = corpus.to_string_lossy().to_string();
    let dir = flavour_dir(sanitizer(target));
    let mut cmd = cargo_fuzz(&[
        "run",
        "-O",
        "--sanitizer",
        sanitizer(target),
        "--target-dir",
        &dir,
        target,
        &corpus_arg,
        "--",
        &total,
        &art,
        "-print_final_stats=1",
        "-max_len=4096",
    ]);
    // Scratch files of the targets (the journal's state directory), on a
    // tmpfs when there is one, removed after the run.
    let base = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let scratch = base.join(format!("sip-ka-fuzz-{}-{target}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    cmd.env("TMPDIR", &scratch);
    let mut stats = Stats::default();
    let mut see = |line: &str| see_line(&mut stats, line);
    // The build is done before the runs; allow the run its time and some.
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    let done = proc::run(&mut cmd, Some(deadline), Some(&mut see));
    let _ = std::fs::remove_dir_all(&scratch);
    let done = done?;
    if !done.ok() && stats.crashes == 0 {
        bail!("{target}: {}", done.describe());
    }
    Ok(stats)
}

/// Gives the SIP targets the RFC 4475 torture messages as a start, once.
fn seed_sip(corpus: &Path, framer: bool) -> Result<()> {
    if std::fs::read_dir(corpus)?.next().is_some() {
        return Ok(());
    }
    let dir = root_dir().join("sip-ka-userspace/tests/rfc4475");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let mut bytes = std::fs::read(&path)?;
        if framer {
            // The framer's first byte picks its role and limits.
            bytes.insert(0, 0);
        }
        if let Some(name) = path.file_name() {
            std::fs::write(corpus.join(name), bytes)?;
        }
    }
    Ok(())
}

fn run_xdp(packets: u64) -> Result<i32> {
    if !is_root() {
        bail!("the XDP fuzzer needs root (BPF_PROG_TEST_RUN): run it as root");
    }
    let mut build = proc::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "sip-ka-userspace",
        "--bin",
        "sip-ka-xdp-fuzz",
    ]);
    let done = proc::run(&mut build, None, None)?;
    if !done.ok() {
        bail!("building sip-ka-xdp-fuzz failed ({})", done.describe());
    }
    let mut cmd = Command::new(target_dir().join("release/sip-ka-xdp-fuzz"));
    cmd.args(["--packets", &packets.to_string(), "--artifacts"])
        .arg(root_dir().join("fuzz/artifacts/xdp"));
    let done = proc::run(&mut cmd, None, None)?;
    Ok(done.code())
}

/// Runs every target (or the one named) and the XDP fuzzer; non-zero when
/// a target crashed or the XDP fuzzer found a violation.
pub fn fuzz(seconds: Option<u64>, target: Option<&str>, packets: u64) -> Result<i32> {
    if let Some(t) = target {
        if t != XDP && !TARGETS.contains(&t) {
            bail!(
                "no fuzz target {t}; the targets: {}, {XDP}",
                TARGETS.join(", ")
            );
        }
    }
    setup::setup()?;
    let wanted = |t: &str| target.is_none_or(|w| w == t);
    let mut results = Vec::new();
    if TARGETS.iter().any(|t| wanted(t)) {
        ensure_cargo_fuzz()?;
        let mut flavours: Vec<&str> = TARGETS
            .iter()
            .filter(|t| wanted(t))
            .map(|t| sanitizer(t))
            .collect();
        flavours.sort_unstable();
        flavours.dedup();
        for s in flavours {
            let dir = flavour_dir(s);
            let done = proc::run(
                &mut cargo_fuzz(&["build", "-O", "--sanitizer", s, "--target-dir", &dir]),
                None,
                None,
            )?;
            if !done.ok() {
                bail!("cargo fuzz build failed ({})", done.describe());
            }
        }
        for t in TARGETS.iter().filter(|t| wanted(t)) {
            let secs = seconds.unwrap_or_else(|| default_seconds(t));
            println!();
            println!("== fuzz {t} for {secs} s");
            results.push((*t, run_target(t, secs)?));
        }
    }
    let xdp = if wanted(XDP) {
        println!();
        println!("== XDP mutation fuzzer, {packets} packets");
        Some(run_xdp(packets)?)
    } else {
        None
    };
    println!();
    println!("== fuzz summary");
    println!(
        "  {:<16} {:>14} {:>10} {:>8} {:>8}",
        "target", "executions", "exec/s", "corpus", "crashes"
    );
    for (t, s) in &results {
        println!(
            "  {:<16} {:>14} {:>10} {:>8} {:>8}",
            t, s.execs, s.execs_per_sec, s.corpus, s.crashes
        );
    }
    let crashed = results.iter().any(|(_, s)| s.crashes > 0);
    if crashed {
        println!("  crash inputs are under fuzz/artifacts/<target>/");
    }
    if let Some(code) = xdp {
        println!(
            "  xdp: {}",
            if code == 0 {
                "no violations".to_string()
            } else {
                format!("exit {code} (see above; frames under fuzz/artifacts/xdp/)")
            }
        );
    }
    Ok(if crashed || xdp.is_some_and(|c| c != 0) {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::{see_line, Stats};

    #[test]
    fn reads_libfuzzer_stats_lines() {
        let mut s = Stats::default();
        see_line(
            &mut s,
            "#1048576\tpulse  cov: 1200 ft: 4000 corp: 310/22Kb lim: 4096 exec/s: 34952 rss: 80Mb",
        );
        see_line(
            &mut s,
            "#2097152\tDONE   cov: 1300 ft: 4100 corp: 320/23Kb lim: 4096 exec/s: 35000 rss: 81Mb",
        );
        see_line(&mut s, "Done 2097152 runs in 60 second(s)");
        see_line(&mut s, "stat::number_of_executed_units: 2097160");
        see_line(&mut s, "stat::average_exec_per_sec:     34952");
        assert_eq!(
            s,
            Stats {
                execs: 2_097_160,
                execs_per_sec: 34_952,
                corpus: 320,
                crashes: 0
            }
        );
        see_line(&mut s, "==1234== ERROR: libFuzzer: deadly signal");
        see_line(&mut s, "SUMMARY: libFuzzer: deadly signal");
        assert_eq!(s.crashes, 1);
    }
}
