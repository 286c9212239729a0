//! `sip-ka acl`: the allow and deny prefix lists the fast path checks when
//! `config set acl deny|allow-only` is on.

use anyhow::{Context as _, Result};
use aya::maps::lpm_trie::Key;
use clap::{Args, Subcommand, ValueEnum};

use super::args::PinDir;
use crate::{bpf::pins, shield::Prefix};

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

/// Parses `addr[/len]` into the 128-bit key form (IPv4 mapped): the
/// shield's prefix parser, which the ban list shares.
pub fn parse_prefix(s: &str) -> Result<(u32, [u8; 16])> {
    let p = Prefix::parse(s)?;
    Ok((u32::from(p.len()), p.addr()))
}

fn show(len: u32, bytes: &[u8; 16]) -> String {
    Prefix::new(*bytes, len.min(128) as u8).to_string()
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
    use sip_ka_common::maps::v4_mapped;

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
