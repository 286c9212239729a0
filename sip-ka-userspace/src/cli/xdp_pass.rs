//! Hidden `sip-ka xdp-pass`: attaches the object's pass-through program
//! and pins its link, for the far end of a lab veth pair.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{bpf::attach, bpf::load};

#[derive(Args, Debug)]
pub struct XdpPassArgs {
    /// The interface.
    #[arg(long)]
    pub iface: String,
    /// Where to pin the link (a file path on bpffs).
    #[arg(long)]
    pub pin: PathBuf,
}

pub fn xdp_pass(args: XdpPassArgs) -> Result<()> {
    let dir = args
        .pin
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf"));
    load::ensure_bpffs(&args.pin)?;
    std::fs::create_dir_all(&dir)?;
    // Pinned maps of this load go into a scratch directory next to the link
    // and are removed right away; only the program and its link stay.
    let maps_dir = dir.join(format!("pass-maps-{}", std::process::id()));
    let mut bpf = load::load(&maps_dir, 0)?;
    let how = attach::attach(
        &mut bpf,
        "xdp_pass",
        &args.iface,
        attach::XdpModeChoice::Native,
        &args.pin,
    )?;
    drop(bpf);
    crate::bpf::pins::unpin_all(&maps_dir)?;
    println!("xdp_pass on {}: {how}", args.iface);
    Ok(())
}
