//! `sip-ka detach`: what `run` does on exit, for a daemon that left with
//! --keep-attached or died.

use anyhow::{bail, Result};
use clap::Args;
use sip_ka_common::maps::PINNED_MAPS;

use super::args::PinDir;
use crate::{bpf::attach, bpf::pins};

#[derive(Args, Debug)]
pub struct DetachArgs {
    /// The interface to detach from.
    #[arg(long)]
    pub iface: String,
    /// Keep the maps pinned (counters, peers, dialogs survive).
    #[arg(long)]
    pub keep_maps: bool,
    #[command(flatten)]
    pub pin: PinDir,
}

pub fn detach(args: DetachArgs) -> Result<()> {
    let pins = pins::Pins::new(&args.pin.pin_dir);
    if !pins.link_path(&args.iface).exists() {
        // A wrong --iface must not unpin the maps a program attached
        // elsewhere still uses.
        let others = pins.linked_ifaces();
        if !others.is_empty() {
            bail!(
                "nothing is attached to {} from pin dir {}: its link is for {}; nothing was \
                 changed (give that --iface)",
                args.iface,
                pins.dir.display(),
                others.join(", ")
            );
        }
        if !PINNED_MAPS.iter().any(|m| pins.dir.join(m).exists()) {
            bail!("{}", pins::not_attached(&pins.dir));
        }
    }
    let had = attach::detach(&pins.link_path(&args.iface))?;
    if had {
        println!("detached from {}", args.iface);
    } else {
        println!(
            "no pinned link for {} in {}",
            args.iface,
            pins.dir.display()
        );
    }
    if !args.keep_maps {
        crate::bpf::pins::unpin_all(&pins.dir)?;
    }
    Ok(())
}
