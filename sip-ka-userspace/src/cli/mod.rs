//! The `sip-ka` command line: one module per subcommand; [`args`] holds
//! the clap types several of them share. Clap stays in this folder.

use anyhow::Result;
use clap::{CommandFactory as _, Parser, Subcommand};

mod acl;
pub mod args;
mod assets;
mod bans;
mod config;
mod control;
mod detach;
mod dialogs;
mod doctor;
mod history;
mod lab;
pub mod peers;
mod run;
mod run_args;
mod settings;
mod stats;
mod status;
mod xdp_pass;

/// `sip-ka --version`: the crate's version and the commit it was built
/// from (build.rs: `unknown` outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SIP_KA_COMMIT"),
    ")"
);

/// sip-ka: SIP keep-alives answered in the XDP path, stats in BPF maps.
#[derive(Parser, Debug)]
#[command(name = "sip-ka", version = VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load and attach the XDP program and run the daemon until SIGINT/SIGTERM.
    Run(Box<run_args::RunArgs>),
    /// Print the counters (summed over CPUs) from the pinned STATS map.
    Stats(stats::StatsArgs),
    /// List the sources that sent keep-alives (the PEERS map: NAT bindings).
    Peers(peers::PeersArgs),
    /// One screen on the running daemon: interface, XDP mode and program,
    /// pid and uptime, mode, PBX health, dialogs and connections, and the
    /// last minute's keep-alive rates.
    Status(status::StatusArgs),
    /// Read or change the configuration: through the running daemon (every
    /// key, with where its value came from), or the pinned fast-path map
    /// when no daemon runs; `check` checks a file.
    Config(config::ConfigArgs),
    /// List the live dialogs (edge mode's DIALOGS map): Call-ID hash,
    /// state, age, and the in-dialog keep-alives XDP counted.
    Dialogs(dialogs::DialogsArgs),
    /// Edit the ACL prefix lists (used when `config set acl deny|allow-only`).
    Acl(acl::AclArgs),
    /// List the banned sources (reason, evidence, since, expiry: the BANS
    /// map the fast path drops by), or ban and lift one by hand.
    Bans(bans::BansArgs),
    /// Detach the program from an interface and remove the pins.
    Detach(detach::DetachArgs),
    /// Check this host before `sip-ka run`: kernel and BTF, bpffs, the
    /// capabilities, the interface's driver (native XDP or SKB mode), MTU
    /// and queues, rp_filter and accept_local, ip_nonlocal_bind, the SIP
    /// ports, the PBX, the state directory, Redis and a config file; each
    /// ok, warn or fail with its fix. Exit status 1 when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Attach a pass-through XDP program (lab use: native XDP_TX on a veth
    /// needs an XDP program on the peer device).
    #[command(hide = true)]
    XdpPass(xdp_pass::XdpPassArgs),
    /// A self-contained demonstration in network namespaces: real clients
    /// send CRLF, STUN and SIP to sip-ka; prints the stats and the peers.
    Lab(lab::LabArgs),
    /// Write the man pages, shell completions and the commented default
    /// configuration file into a directory (used to build the package).
    #[command(hide = true)]
    Assets(assets::AssetsArgs),
}

/// Runs the command `cli` was parsed from `matches` into (`run` reads
/// which flags were typed: they override its file).
pub fn dispatch(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Run(_) => run::run(
            matches
                .subcommand_matches("run")
                .ok_or_else(|| anyhow::anyhow!("no `run` arguments"))?,
        ),
        Command::Stats(a) => stats::stats(a),
        Command::Peers(a) => peers::peers(a),
        Command::Status(a) => status::status(a),
        Command::Config(a) => config::config(a),
        Command::Dialogs(a) => dialogs::dialogs(a),
        Command::Acl(a) => acl::acl(a),
        Command::Bans(a) => bans::bans(a),
        Command::Detach(a) => detach::detach(a),
        Command::Doctor(a) => doctor::doctor(a),
        Command::XdpPass(a) => xdp_pass::xdp_pass(a),
        Command::Lab(a) => lab::lab(a),
        Command::Assets(a) => assets::assets(a, Cli::command()),
    }
}
