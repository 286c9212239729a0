//! `sip-ka acl`: the allow and deny prefix lists the fast path checks when
//! `config set acl deny|allow-only` is on.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::lpm_trie::Key;
use clap::{Args, Subcommand, ValueEnum};
use sip_ka_common::maps::{as_v4, v4_mapped};

use super::args::PinDir;
use crate::{bpf::pins, cli::peers::addr_of};

#[derive(Args, Debug)]
pub struct AclArgs {
    #[command(subcommand)]
    pub action: AclAction,
    #[command(flatten)]
    pub pin: PinDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum List {
    /// Sources always refused (when `acl` is `deny` or `allow-only`).
    Deny,
    /// The only sources served when `acl` is `allow-only`.
    Allow,
}

#[derive(Subcommand, Debug)]
pub enum AclAction {
    /// Add a prefix (e.g. `203.0.113.0/24`, `2001:db8::/32`, or one address).
    Add {
        /// Which list.
        list: List,
        /// The prefix.
        prefix: String,
    },
    /// Remove a prefix.
    Del {
        /// Which list.
        list: List,
        /// The prefix, as it was added.
        prefix: String,
    },
    /// Print both lists.
    List,
}

/// Parses `addr[/len]` into the 128-bit key form (IPv4 mapped).
pub fn parse_prefix(s: &str) -> Result<(u32, [u8; 16])> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .with_context(|| format!("{addr:?} is not an IP address"))?;
    let (bytes, max, offset) = match ip {
        IpAddr::V4(v4) => (v4_mapped(v4.octets()), 32, 96),
        IpAddr::V6(v6) => (v6.octets(), 128, 0),
    };
    let len: u32 = match len {
        Some(l) => l
            .trim()
            .parse()
            .map_err(|_| anyhow!("{l:?} is not a prefix length"))?,
        None => max,
    };
    if len > max {
        bail!("prefix length {len} is longer than {max}");
    }
    Ok((len + offset, bytes))
}

fn show(len: u32, bytes: &[u8; 16]) -> String {
    let ip = addr_of(bytes, 0).ip();
    match as_v4(bytes) {
        Some(_) => format!("{ip}/{}", len.saturating_sub(96)),
        None => format!("{ip}/{len}"),
    }
}

pub fn acl(args: AclArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    match args.action {
        AclAction::Add { list, prefix } => {
            let (len, bytes) = parse_prefix(&prefix)?;
            let mut trie = pins.acl(list == List::Allow)?;
            trie.insert(&Key::new(len, bytes), 1, 0)?;
            println!("{list:?} {}", show(len, &bytes));
        }
        AclAction::Del { list, prefix } => {
            let (len, bytes) = parse_prefix(&prefix)?;
            let mut trie = pins.acl(list == List::Allow)?;
            trie.remove(&Key::new(len, bytes))
                .with_context(|| format!("{prefix} is not in the {list:?} list"))?;
            println!("removed {}", show(len, &bytes));
        }
        AclAction::List => {
            for (name, allow) in [("deny", false), ("allow", true)] {
                let trie = pins.acl(allow)?;
                for key in trie.keys() {
                    let key = key?;
                    println!("{name} {}", show(key.prefix_len(), &key.data()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_into_the_mapped_form() {
        let (len, bytes) = parse_prefix("203.0.113.0/24").unwrap();
        assert_eq!(len, 120);
        assert_eq!(bytes, v4_mapped([203, 0, 113, 0]));
        assert_eq!(show(len, &bytes), "203.0.113.0/24");
        assert_eq!(parse_prefix("2001:db8::1").unwrap().0, 128);
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("nonsense/8").is_err());
    }
}
