//! `cargo xtask`: setting up a machine, testing, the demo, the benchmark,
//! fuzzing and the book.
//!
//! Stable Rust only and no eBPF dependencies: everything that touches BPF
//! lives in the `sip-ka` and `sip-ka-bench` binaries this tool builds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod docs;
mod fuzz;
mod layout;
mod package;
mod proc;
mod setup;
mod tasks;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "sip-ka developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install what building and testing need (idempotent): Debian
    /// packages, the nightly toolchain with rust-src, bpf-linker 0.13
    /// built against LLVM 22, a bpffs on /sys/fs/bpf, and mdbook (for
    /// `cargo xtask docs`).
    Setup,
    /// Setup, then the layout check, the docs check (`docs --check`),
    /// build, rustfmt check, clippy, and the tests (as root).
    Test {
        /// Stop the whole run after this many minutes.
        #[arg(long, default_value_t = 55)]
        timeout_min: u64,
    },
    /// Check the source layout of sip-ka-userspace, sip-ka-ebpf,
    /// sip-ka-common and xtask (their src/): (a) no import cycle between
    /// module files: an edge A -> B when file A names a path into module
    /// file B (`use`, an inline `crate::`/`super::`/`self::` path, or a
    /// path through a child module), parent to child and child to parent
    /// alike, `#[cfg(test)]` modules left out; (b) no file over 600 lines
    /// of non-test code (the lines before the `#[cfg(test)]` that opens
    /// its test module; tests.rs and *_tests.rs are all test code).
    /// Prints each cycle as its files, with one way around it, and each
    /// file too long with its count; fails when there is any.
    Layout,
    /// Setup, release build, then `sip-ka lab`: the demonstration in
    /// network namespaces.
    Demo,
    /// Setup, release build, then `sip-ka-bench`, whose parts run in turn:
    /// (a) the XDP program's ns per packet through BPF_PROG_TEST_RUN
    /// (`--test-run-only`); (b) the veth lab, XDP vs the userspace
    /// responder vs coturn (`--lab-only`); (c) the edge vs Kamailio 5.6,
    /// OPTIONS over UDP from sipp and CRLF pings over TCP (`--kamailio`);
    /// (d) 1,000,000 dialogs: the session timer wheel (`--timers`) and the
    /// edge's dialog table with its journal (`--dialogs`); (f) the STUN
    /// sweep, answered share against offered rate for sip-ka XDP, its
    /// userspace responder, Kamailio and coturn, with its chart (`--sweep`,
    /// `--chart`).
    Bench {
        /// Arguments passed to sip-ka-bench (see `sip-ka-bench --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, release build, then `sip-ka-soak` (root): the edge in a
    /// network-namespace lab for 10 minutes (less with `--secs`) under
    /// sipp calls with session timers, in-dialog keep-alives and UPDATE
    /// refreshes, sipp registrations of fresh Contacts, and CRLF/STUN
    /// pings; the daemon's RSS every 10 s and its slope; fails if a call,
    /// registration or keep-alive went unanswered or a dialog or binding
    /// is left at the end. Not part of `cargo xtask test`.
    Soak {
        /// Seconds of load.
        #[arg(long, default_value_t = 600)]
        secs: u64,
        /// More arguments for sip-ka-soak (see `sip-ka-soak --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The Debian package (after `cargo xtask setup`): the release build,
    /// then target/debian/sip-ka_VERSION_ARCH.deb built with dpkg-deb:
    /// the binary, both systemd units, the commented default
    /// /etc/sip-ka/sip-ka.toml (a conffile), a man page per subcommand,
    /// bash/zsh/fish completions, and the maintainer scripts that create
    /// and remove the sip-ka system user.
    Package,
    /// Setup, then fuzzing, bounded in time (about 5 minutes by default):
    /// (a) the libFuzzer targets of fuzz/ (cargo-fuzz on nightly, installed
    /// when missing): the SIP parser and its 400, the stream framer, the
    /// userspace STUN responder, the journal replay and the flow-token
    /// decoder, 90 s each for the two SIP ones and 30 s for the others;
    /// (b) the XDP mutation fuzzer (`sip-ka-xdp-fuzz`, root): random and
    /// mutated frames through the program with BPF_PROG_TEST_RUN, every
    /// outcome checked against design.md's never-answer rules. Prints per
    /// target executions, exec/s, corpus size and crashes; fails on a
    /// crash or a rule violation. Not part of `cargo xtask test`.
    Fuzz {
        /// Seconds per libFuzzer target (instead of the defaults above).
        #[arg(long)]
        seconds: Option<u64>,
        /// Only this target: sip_parse, stream_framer, stun_responder,
        /// journal_replay, flow_token, or xdp.
        #[arg(long)]
        target: Option<String>,
        /// Frames for the XDP mutation fuzzer.
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
    },
    /// The book (docs/, mdBook): setup (which installs mdbook), the
    /// `sip-ka` build, the command-line and configuration references
    /// regenerated from it (`sip-ka assets --reference docs/src/reference`),
    /// the link check, then `mdbook build docs` into target/book/.
    Docs {
        /// Only check, building nothing (a step of `cargo xtask test`):
        /// every relative link in README.md and docs/**/*.md names a file
        /// and heading that exist, every file of docs/src is reachable from
        /// SUMMARY.md, the reference pages are there. Prints each problem
        /// as file:line.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::setup().map(|()| 0),
        Task::Test { timeout_min } => tasks::test(timeout_min),
        Task::Layout => layout::run(&proc::root_dir()),
        Task::Demo => tasks::demo(),
        Task::Bench { args } => tasks::bench(&args),
        Task::Soak { secs, args } => tasks::soak(secs, &args),
        Task::Package => package::package(),
        Task::Fuzz {
            seconds,
            target,
            packets,
        } => fuzz::fuzz(seconds, target.as_deref(), packets),
        Task::Docs { check } => docs::docs(check),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
