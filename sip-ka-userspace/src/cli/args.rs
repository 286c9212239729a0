//! Arguments several subcommands share.

use std::path::PathBuf;

use clap::Args;

use crate::bpf::attach::XdpModeChoice;

/// Where the maps and the XDP link are pinned; every command that talks to
/// a running daemon takes it.
#[derive(Args, Debug, Clone)]
pub struct PinDir {
    /// Directory on a bpffs where maps and the link are pinned.
    #[arg(long, global = true, default_value = crate::bpf::load::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// `--xdp-mode`: the clap face of [`XdpModeChoice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to SKB (generic) mode.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// SKB (generic) mode only.
    Skb,
}

impl From<XdpModeArg> for XdpModeChoice {
    fn from(m: XdpModeArg) -> Self {
        match m {
            XdpModeArg::Auto => XdpModeChoice::Auto,
            XdpModeArg::Native => XdpModeChoice::Native,
            XdpModeArg::Skb => XdpModeChoice::Skb,
        }
    }
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what an operator should look at.
    Warn,
    /// Starts, stops, changes, and each ended call.
    Info,
    /// Every refused or dropped message.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}
