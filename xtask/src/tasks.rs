//! `cargo xtask test`, `demo` and `bench`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    proc::{self, is_root, target_dir},
    setup,
};

/// The packages built and tested: the workspace's default members. The
/// eBPF crate is not one of them (it only builds for bpfel-unknown-none,
/// through sip-ka-userspace's build.rs).
const NOT_HOST: [&str; 2] = ["--exclude", "sip-ka-ebpf"];

struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    /// Longest this step may take.
    limit: Duration,
}

pub fn test(timeout_min: u64) -> Result<i32> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(timeout_min * 60);
    setup::setup()?;
    if !is_root() {
        println!(
            "xtask: warning: not root; the BPF and network-namespace tests need root \
             and will fail"
        );
    }
    let ws = |cmd: &'static str, rest: &[&'static str]| {
        let mut v = vec![cmd, "--workspace"];
        v.extend(NOT_HOST);
        v.extend(rest);
        v
    };
    let steps = [
        // Quick, and independent of the build: first, so a broken rule
        // shows at once (the run still goes on, and fails at the end).
        Step {
            name: "layout",
            args: vec!["run", "--quiet", "--package", "xtask", "--", "layout"],
            limit: Duration::from_secs(5 * 60),
        },
        // As quick: the README's and the book's links, SUMMARY.md, the
        // reference pages.
        Step {
            name: "docs",
            args: vec![
                "run",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "docs",
                "--check",
            ],
            limit: Duration::from_secs(5 * 60),
        },
        Step {
            name: "build",
            args: ws("build", &[]),
            limit: Duration::from_secs(30 * 60),
        },
        Step {
            name: "rustfmt",
            args: vec!["fmt", "--all", "--", "--check"],
            limit: Duration::from_secs(5 * 60),
        },
        Step {
            name: "clippy",
            args: ws("clippy", &["--", "-D", "warnings"]),
            limit: Duration::from_secs(20 * 60),
        },
        // The suites that need root are `#[ignore]`d so that a plain
        // `cargo test` as a user passes and names them; here they run too.
        Step {
            name: "tests",
            args: ws(
                "test",
                &[
                    "--no-fail-fast",
                    "--",
                    "--include-ignored",
                    "--test-threads",
                    "2",
                ],
            ),
            limit: Duration::from_secs(40 * 60),
        },
    ];
    let mut results: Vec<(&str, String, bool, Findings)> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        println!();
        println!("== [{}/{}] {}", i + 1, steps.len(), step.name);
        let step_deadline = deadline.min(Instant::now() + step.limit);
        let mut cmd = proc::cargo();
        cmd.args(&step.args);
        let mut findings = Findings::default();
        let mut see = |line: &str| findings.see(step.name, line);
        let done = proc::run(&mut cmd, Some(step_deadline), Some(&mut see))?;
        findings.finish();
        println!("== {}: {}", step.name, done.describe());
        results.push((step.name, done.describe(), done.ok(), findings));
        if step.name == "build" && !done.ok() {
            println!("xtask: the build failed; clippy and the tests cannot run");
            break;
        }
        if Instant::now() > deadline {
            println!("xtask: the {timeout_min}-minute limit is reached; stopping");
            break;
        }
    }
    println!();
    println!("== summary ({:.0} s in all)", start.elapsed().as_secs_f64());
    for (name, how, ok, findings) in &results {
        println!("  {:<8} {:<4} {how}", name, if *ok { "ok" } else { "FAIL" });
        if !ok {
            const MAX: usize = 40;
            for l in findings.lines.iter().take(MAX) {
                println!("           {l}");
            }
            if findings.lines.len() > MAX {
                println!("           ... and {} more", findings.lines.len() - MAX);
            }
            if findings.lines.is_empty() {
                println!("           (see the output of this step above)");
            }
        }
    }
    for s in steps.iter().skip(results.len()) {
        println!("  {:<8} not run", s.name);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, _, ok, _)| !ok)
        .map(|(n, _, _, _)| *n)
        .collect();
    let (passed_tests, failed_tests) = results
        .iter()
        .fold((0, 0), |(p, f), (_, _, _, r)| (p + r.passed, f + r.failed));
    if failed.is_empty() && results.len() == steps.len() {
        println!("== all steps passed");
        // The closing line CI reads: every test runner's totals.
        println!("tests: {passed_tests} passed, {failed_tests} failed");
        Ok(0)
    } else {
        let mut what = failed.join(", ");
        if results.len() < steps.len() {
            if !what.is_empty() {
                what.push_str("; ");
            }
            what.push_str("not run: ");
            what.push_str(
                &steps[results.len()..]
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        println!("== FAILED: {what}");
        println!("tests: {passed_tests} passed, {failed_tests} failed");
        Ok(1)
    }
}

/// What a step's output says went wrong, for the summary: files rustfmt
/// would change, compiler and clippy errors with their locations, failing
/// tests and the test binaries cargo reports.
#[derive(Default)]
struct Findings {
    lines: Vec<String>,
    /// An `error...` line waiting for its `--> file:line:col`.
    pending: Option<String>,
    /// Totals of the test runners' `test result:` lines.
    passed: u64,
    failed: u64,
}

impl Findings {
    fn push(&mut self, line: String) {
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
    }

    fn see(&mut self, step: &str, line: &str) {
        let l = line.trim_end();
        if let Some(rest) = l.strip_prefix("test result: ") {
            // "ok. 9 passed; 0 failed; 0 ignored; ..."
            for part in rest.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                if let [.., n, kind] = words.as_slice() {
                    match (*kind, n.parse::<u64>()) {
                        ("passed", Ok(n)) => self.passed += n,
                        ("failed", Ok(n)) => self.failed += n,
                        _ => {}
                    }
                }
            }
        }
        if step == "layout" {
            if l.starts_with("cycle: ") || l.starts_with("too long: ") {
                self.push(l.to_string());
            }
            return;
        }
        if step == "docs" {
            if l.contains(": broken link ")
                || l.contains(": not listed in ")
                || l.contains(": linked from no page ")
                || l.contains(": missing")
                || l.contains(": a placeholder")
            {
                self.push(l.to_string());
            }
            return;
        }
        if step == "rustfmt" {
            if let Some(rest) = l.strip_prefix("Diff in ") {
                let rest = rest.trim_end_matches(':');
                let file = rest.rsplit_once(':').map_or(rest, |(f, _)| f);
                let file = file
                    .strip_prefix(&format!("{}/", proc::root_dir().display()))
                    .unwrap_or(file);
                self.push(format!("not formatted: {file}"));
            }
            return;
        }
        if let Some(name) = l
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.push(format!("failed test: {name}"));
        } else if l.starts_with("error: test failed")
            || l.starts_with("error: could not compile")
            || (l.starts_with("error: ") && l.contains("target(s) failed"))
        {
            self.push(l.to_string());
        } else if l.starts_with("error") && !l.starts_with("error: aborting") {
            if let Some(prev) = self.pending.replace(l.to_string()) {
                self.push(prev);
            }
        } else if let Some(loc) = l.trim_start().strip_prefix("--> ") {
            if let Some(e) = self.pending.take() {
                self.push(format!("{loc}: {e}"));
            }
        }
    }

    fn finish(&mut self) {
        if let Some(e) = self.pending.take() {
            self.push(e);
        }
    }
}

fn release_build(bins: &[&str]) -> Result<()> {
    let mut cmd = proc::cargo();
    cmd.args(["build", "--release", "-p", "sip-ka-userspace"]);
    for b in bins {
        cmd.args(["--bin", b]);
    }
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!("release build failed ({})", done.describe());
    }
    Ok(())
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, XDP, bpffs): run it as root");
    }
    Ok(())
}

pub fn demo() -> Result<i32> {
    setup::setup()?;
    require_root("the demo")?;
    release_build(&["sip-ka"])?;
    let exe = target_dir().join("release/sip-ka");
    let mut cmd = Command::new(&exe);
    cmd.arg("lab");
    let done = proc::run(&mut cmd, None, None)?;
    println!("== sip-ka lab: {}", done.describe());
    Ok(done.code())
}

/// Setup, release build, then `sip-ka-bench` with `args`. Without
/// arguments it runs every part in one go: BPF_PROG_TEST_RUN, the veth lab
/// (XDP, userspace, coturn), sip-ka's edge against Kamailio, and the
/// session timer bench.
pub fn bench(args: &[String]) -> Result<i32> {
    setup::setup()?;
    require_root("the benchmark")?;
    release_build(&["sip-ka", "sip-ka-bench"])?;
    let release = target_dir().join("release");
    let mut cmd = Command::new(release.join("sip-ka-bench"));
    cmd.args(args).env("SIP_KA_BIN", release.join("sip-ka"));
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    let done = proc::run(&mut cmd, None, None)?;
    println!("== sip-ka-bench: {}", done.describe());
    Ok(done.code())
}

pub fn soak(secs: u64, args: &[String]) -> Result<i32> {
    setup::setup()?;
    require_root("the soak")?;
    release_build(&["sip-ka", "sip-ka-soak"])?;
    let release = target_dir().join("release");
    let mut cmd = Command::new(release.join("sip-ka-soak"));
    cmd.arg("--secs")
        .arg(secs.to_string())
        .args(args)
        .env("SIP_KA_BIN", release.join("sip-ka"));
    let done = proc::run(&mut cmd, None, None)?;
    println!("== sip-ka-soak: {}", done.describe());
    Ok(done.code())
}

#[cfg(test)]
mod tests {
    use super::Findings;

    #[test]
    fn the_layout_step_reports_its_problems() {
        let mut f = Findings::default();
        for line in [
            "cycle: a/mod.rs, a/b.rs",
            "too long: a/c.rs: 700 lines of non-test code (at most 600)",
            "",
            "one way around the cycle through a/b.rs:",
            "  a/b.rs:3: super::X (-> a/mod.rs)",
            "layout: FAILED: 1 import cycle(s), 1 file(s) over 600 lines of non-test code",
        ] {
            f.see("layout", line);
        }
        f.finish();
        assert_eq!(
            f.lines,
            vec![
                "cycle: a/mod.rs, a/b.rs",
                "too long: a/c.rs: 700 lines of non-test code (at most 600)",
            ]
        );
    }

    #[test]
    fn the_docs_step_reports_its_problems() {
        let mut f = Findings::default();
        for line in [
            "docs/src/pbx.md:3: broken link `x.md`: docs/src/x.md does not exist",
            "docs/src/b.md:1: not listed in docs/src/SUMMARY.md",
            "docs: FAILED: 2 problem(s)",
        ] {
            f.see("docs", line);
        }
        f.finish();
        assert_eq!(
            f.lines,
            vec![
                "docs/src/pbx.md:3: broken link `x.md`: docs/src/x.md does not exist",
                "docs/src/b.md:1: not listed in docs/src/SUMMARY.md",
            ]
        );
    }
}
