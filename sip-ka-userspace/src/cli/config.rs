//! `sip-ka config get [KEY]` / `set KEY VALUE` / `check FILE`. While a
//! daemon runs they go through its control socket (every key, live
//! changes); with none, through the pinned CONFIG map (the fast-path
//! keys): the next packet sees the change.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::{
    args::PinDir,
    control::{self, Request},
    run_args, settings,
};
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
    /// Print one key's value, or every key as `key = value    # source`
    /// (default, file, flag, live, pinned, interface). With no daemon
    /// running: the fast-path keys the pinned map holds.
    Get {
        /// The key to print; all of them when omitted.
        key: Option<String>,
    },
    /// Set a key (e.g. `udp_crlf drop`, `options_pbx forward`); a list
    /// is comma-separated (`sip_port 5060,5080`). With a daemon running
    /// every live key can change (the others need a restart); with none,
    /// the fast-path keys in the pinned map.
    Set {
        /// The key to change.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Check a configuration file without starting: prints every key's
    /// effective value, or what is wrong (exit status 1).
    Check {
        /// The TOML file (`sip-ka run --config FILE`).
        file: PathBuf,
    },
}

pub fn config(args: ConfigArgs) -> Result<()> {
    let pin_dir = &args.pin.pin_dir;
    match args.action {
        ConfigAction::Check { file } => check(&file),
        ConfigAction::Get { key } => match control::request(pin_dir, &Request::Get)? {
            Some(reply) => {
                let values = answered(reply)?.values;
                match key.as_deref() {
                    None => settings::print_entries(&values),
                    Some(k) => {
                        let k = if k == "sip_ports" { "sip_port" } else { k };
                        match values.iter().find(|e| e.key == k) {
                            Some(e) => println!("{}", bare(&e.value)),
                            None => bail!("unknown key {k:?}"),
                        }
                    }
                }
                Ok(())
            }
            None => {
                let pins = pins::Pins::attached(pin_dir)?;
                eprintln!(
                    "no sip-ka daemon is attached to pin dir {} (no control socket at {}): \
                     the pinned CONFIG map holds",
                    pin_dir.display(),
                    control::socket_path(pin_dir).display()
                );
                get_pinned(&pins, key.as_deref())
            }
        },
        ConfigAction::Set { key, value } => {
            let req = Request::Set {
                key: key.clone(),
                value: value.clone(),
            };
            match control::request(pin_dir, &req)? {
                Some(reply) => {
                    answered(reply)?;
                }
                None => set_pinned(&pins::Pins::attached(pin_dir)?, &key, &value)?,
            }
            println!("{key} = {value}");
            Ok(())
        }
    }
}

fn answered(reply: control::Reply) -> Result<control::Reply> {
    if reply.ok {
        Ok(reply)
    } else {
        bail!("{}", reply.error.as_deref().unwrap_or("the daemon refused"))
    }
}

/// A value without TOML's quotes, a list comma-separated (as `config get
/// KEY` always printed them).
fn bare(v: &str) -> String {
    let word = |j: &serde_json::Value| match j {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(serde_json::Value::Array(items)) => items.iter().map(word).collect::<Vec<_>>().join(","),
        Ok(j) => word(&j),
        Err(_) => v.to_string(),
    }
}

fn check(file: &std::path::Path) -> Result<()> {
    let cmd = run_args::command();
    let values = run_args::read_file(&cmd, file)?;
    let flags = Default::default();
    let (_, derived) = run_args::resolve(&cmd, &flags, &values, &Default::default())
        .map_err(|e| anyhow::anyhow!("config file {}: {e:#}", file.display()))?;
    settings::print_entries(&derived.entries);
    for (key, _) in config_keys::KEYS {
        match values.fast.get(*key) {
            Some(v) => println!("{key} = {}    # file", settings::toml_scalar(v)),
            None => println!(
                "{key} = {}    # default (or what the pinned map holds)",
                settings::toml_scalar(&config_keys::get(&sip_ka_common::Config::DEFAULT, key)?)
            ),
        }
    }
    Ok(())
}

fn get_pinned(pins: &pins::Pins, key: Option<&str>) -> Result<()> {
    let cfg = pins::read_config(&pins.config()?)?;
    match key {
        Some("sip_ports" | "sip_port") => println!("{}", ports_string(pins)?),
        Some(k) => println!("{}", config_keys::get(&cfg, k)?),
        None => {
            for (k, help) in config_keys::KEYS {
                println!("{k} = {}    # {help}", config_keys::get(&cfg, k)?);
            }
            println!("sip_ports = {}", ports_string(pins)?);
        }
    }
    Ok(())
}

fn set_pinned(pins: &pins::Pins, key: &str, value: &str) -> Result<()> {
    let mut map = pins.config()?;
    let mut cfg = pins::read_config(&map)?;
    if key == "sip_ports" || key == "sip_port" {
        let ports = value
            .split(',')
            .map(|p| p.trim().parse::<u16>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("sip_ports: {e}: expected e.g. 5060,5080"))?;
        pins::set_sip_ports(&mut pins.sip_ports()?, &mut cfg, &ports)?;
    } else if settings::is_fast_key(key) {
        config_keys::set(&mut cfg, key, value)?;
    } else if run_args::command()
        .get_arguments()
        .any(|a| a.get_long().is_some_and(|l| l.replace('-', "_") == key))
    {
        bail!(
            "{key} is a setting of the daemon, and no daemon is attached to pin dir {} \
             (no control socket at {}): put it in the file or on the command line",
            pins.dir.display(),
            control::socket_path(&pins.dir).display()
        );
    } else {
        config_keys::set(&mut cfg, key, value)?;
    }
    map.set(0, cfg, 0)?;
    Ok(())
}

fn ports_string(pins: &pins::Pins) -> Result<String> {
    Ok(pins::sip_ports(&pins::read_config(&pins.config()?)?)
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(","))
}
