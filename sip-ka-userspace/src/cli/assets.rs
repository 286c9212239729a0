//! `sip-ka assets DIR` (hidden): the files the Debian package ships that
//! are derived from the command line itself, so they cannot drift from
//! it: a man page per subcommand, bash/zsh/fish completions, and the
//! commented default configuration file. `--reference DIR`: the book's
//! command-line and configuration references ([`reference`]).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::{ArgAction, ArgGroup, Args};
use clap_complete::Shell;
use sip_ka_common::Config;

use reference::{toml_value, DAEMON_WRITTEN, NOT_KEYS};

use crate::bpf::config_keys;

mod reference;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("into").args(["out", "reference"]).required(true).multiple(true)))]
pub struct AssetsArgs {
    /// Directory to write into: man/ (sip-ka*.1), completions/ (sip-ka.bash,
    /// _sip-ka, sip-ka.fish) and sip-ka.toml.
    pub out: Option<PathBuf>,
    /// Directory to write the book's references into: cli.md (every
    /// command and flag) and config.md (every key of the configuration
    /// file); `cargo xtask docs` passes docs/src/reference.
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
}

pub fn assets(args: AssetsArgs, cmd: clap::Command) -> Result<()> {
    if let Some(dir) = &args.reference {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write(&dir.join("cli.md"), &reference::cli_md(&cmd))?;
        write(&dir.join("config.md"), &reference::config_md(&cmd)?)?;
    }
    let Some(out) = args.out else { return Ok(()) };
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "sip-ka", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    let toml = out.join("sip-ka.toml");
    write(&toml, &default_config(&cmd)?)?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `# ` before every line of `text`, wrapped at about 72 columns.
fn comment(out: &mut String, text: &str) {
    for para in text.lines() {
        let mut line = String::from("#");
        for word in para.split_whitespace() {
            if line.len() + word.len() > 72 && line.len() > 1 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// The default /etc/sip-ka/sip-ka.toml: every `sip-ka run` flag and every
/// fast-path key, commented out, with its default.
pub fn default_config(cmd: &clap::Command) -> Result<String> {
    let mut run = cmd
        .find_subcommand("run")
        .context("the command line has no `run` subcommand")?
        .clone();
    run.build();
    let mut out = String::new();
    comment(
        &mut out,
        "sip-ka configuration (TOML). `sip-ka run --config FILE` reads it; the \
         sip-ka.service unit reads /etc/sip-ka/sip-ka.toml, an instance \
         sip-ka@IFACE.service reads /etc/sip-ka/IFACE.toml.\n\
         Every key is shown commented out with its default. A flag on the \
         command line overrides the key (the units pass --keep-attached and \
         --pin-dir, and the instances --iface).",
    );
    out.push_str("\n# ---- the daemon: the flags of `sip-ka run` ----\n");
    for arg in run.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_KEYS.contains(&long) {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        comment(&mut out, &help);
        let key = long.replace('-', "_");
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let line = match arg.get_action() {
            ArgAction::SetTrue => format!("#{key} = false"),
            ArgAction::Append => format!(
                "#{key} = [{}]",
                defaults
                    .iter()
                    .map(|v| toml_value(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => match defaults.first() {
                Some(v) => format!("#{key} = {}", toml_value(v)),
                None => {
                    let name = arg
                        .get_value_names()
                        .and_then(|n| n.first())
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| long.to_uppercase());
                    out.push_str("# (no default)\n");
                    format!("#{key} = \"{name}\"")
                }
            },
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("\n# ---- the fast path: the keys of `sip-ka config get` ----\n");
    comment(
        &mut out,
        &format!(
            "{} are not offered: the daemon writes them from the interface at every start.",
            DAEMON_WRITTEN.join(" and ")
        ),
    );
    for (key, what) in config_keys::KEYS {
        if DAEMON_WRITTEN.contains(key) {
            continue;
        }
        out.push('\n');
        comment(&mut out, what);
        let v = config_keys::get(&Config::DEFAULT, key)?;
        let _ = writeln!(out, "#{key} = {}", toml_value(&v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_default_config_offers_every_run_flag_and_fast_path_key_commented_out() {
        let cmd = crate::cli::Cli::command();
        let text = default_config(&cmd).expect("default config");
        assert!(
            text.lines().all(|l| l.is_empty() || l.starts_with('#')),
            "a line is not commented out:\n{text}"
        );
        let mut run = cmd.find_subcommand("run").expect("run").clone();
        run.build();
        let keys: Vec<String> = run
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !NOT_KEYS.contains(l))
            .map(|l| l.replace('-', "_"))
            .chain(
                config_keys::KEYS
                    .iter()
                    .map(|(k, _)| k.to_string())
                    .filter(|k| !DAEMON_WRITTEN.contains(&k.as_str())),
            )
            .collect();
        assert!(keys.len() > 30, "only {} keys", keys.len());
        for key in &keys {
            let n = text
                .lines()
                .filter(|l| l.starts_with(&format!("#{key} = ")))
                .count();
            assert_eq!(n, 1, "{key}: {n} lines in\n{text}");
        }
        for want in [
            "#qualify_frequency = 60\n",
            "#mode = \"offload\"\n",
            "#listen = []\n",
            "#reap_expired = false\n",
            "#keep_attached = false\n",
            "#pin_dir = \"/sys/fs/bpf/sip-ka\"\n",
            "#udp_crlf = \"pong\"\n",
            "#rate_limit_pps = 200\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }
}
