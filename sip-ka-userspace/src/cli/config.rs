//! `sip-ka config get [KEY]` / `sip-ka config set KEY VALUE`, through the
//! pinned CONFIG map: the next packet sees the change.

use anyhow::Result;
use clap::{Args, Subcommand};

use super::args::PinDir;
use crate::{bpf::config_keys, bpf::pins};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
    #[command(flatten)]
    pub pin: PinDir,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print one key, or every key with its value (and `sip_ports`).
    Get {
        /// The key to print; all of them when omitted.
        key: Option<String>,
    },
    /// Set a key (e.g. `udp_crlf drop`); `sip_ports 5060,5080` sets the ports.
    Set {
        /// The key to change.
        key: String,
        /// Its new value.
        value: String,
    },
}

pub fn config(args: ConfigArgs) -> Result<()> {
    let pins = pins::Pins::attached(&args.pin.pin_dir)?;
    match args.action {
        ConfigAction::Get { key } => {
            let cfg = pins::read_config(&pins.config()?)?;
            match key.as_deref() {
                Some("sip_ports") => println!("{}", ports_string(&pins)?),
                Some(k) => println!("{}", config_keys::get(&cfg, k)?),
                None => {
                    for (k, help) in config_keys::KEYS {
                        println!("{k} = {}    # {help}", config_keys::get(&cfg, k)?);
                    }
                    println!("sip_ports = {}", ports_string(&pins)?);
                }
            }
        }
        ConfigAction::Set { key, value } => {
            if key == "sip_ports" {
                let ports = value
                    .split(',')
                    .map(|p| p.trim().parse::<u16>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("sip_ports: {e}: expected e.g. 5060,5080"))?;
                let mut map = pins.config()?;
                let mut cfg = pins::read_config(&map)?;
                pins::set_sip_ports(&mut pins.sip_ports()?, &mut cfg, &ports)?;
                map.set(0, cfg, 0)?;
            } else {
                let mut map = pins.config()?;
                let mut cfg = pins::read_config(&map)?;
                config_keys::set(&mut cfg, &key, &value)?;
                map.set(0, cfg, 0)?;
            }
            println!("{key} = {value}");
        }
    }
    Ok(())
}

fn ports_string(pins: &pins::Pins) -> Result<String> {
    Ok(pins::sip_ports(&pins::read_config(&pins.config()?)?)
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(","))
}
