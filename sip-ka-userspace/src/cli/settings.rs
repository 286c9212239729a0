//! The settings of `sip-ka run`: the TOML file (`--config`), the command
//! line and live changes, merged key by key: default < file < flag < live.
//!
//! The key set is clap's own: every long flag of `run` is a key (`-`
//! spelled `_`), its value checked by that flag's own parser, so a flag
//! added to `run` is a file key with the same validation at once. The
//! fast-path keys of `sip-ka config get` are keys too.

use std::{collections::BTreeMap, fmt};

use anyhow::{anyhow, Result};
use clap::{parser::ValueSource, Arg, ArgAction, ArgMatches, Command};
use serde::{Deserialize, Serialize};
use sip_ka_common::Config;

use crate::bpf::config_keys;

/// Where an effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in default.
    Default,
    /// Left in the pinned CONFIG map by an earlier run or `config set`.
    Pinned,
    /// Written by the daemon from the interface (own_mac, broadcast_v4).
    Interface,
    File,
    Flag,
    /// `sip-ka config set` while the daemon runs.
    Live,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::Pinned => "pinned",
            Source::Interface => "interface",
            Source::File => "file",
            Source::Flag => "flag",
            Source::Live => "live",
        })
    }
}

/// `run` flags that are not keys: the file names itself.
const NOT_KEYS: &[&str] = &["config"];

/// The run keys that change while the daemon runs; every other run key
/// needs a restart (so a flag added later is restart-only until it is
/// made live here). Every fast-path key is live.
pub const LIVE_KEYS: &[&str] = &[
    "timers_min_se",
    "timers_sess_expires",
    "reap_expired",
    "qualify_frequency",
    "options_pbx",
    "max_message_size",
    "max_headers",
    "max_pending_dialogs",
    "max_pending_dialog_bytes",
    "max_pending_registers",
    "max_pending_register_bytes",
    "max_connections",
    "max_connections_per_ip",
    "tcp_idle_timeout",
    "tcp_message_timeout",
    "ms_keep_alive_timeout",
    "flow_timer_tcp",
    "flow_timer_udp",
    "dialog_idle_timeout",
    "log_level",
    "sip_port",
    "shield",
    "ban_max_retry",
    "ban_find_time",
    "ban_time",
    "ban_time_max",
    "ban_flood_requests",
    "ban_flood_window",
    "ban_user_agent",
    "ban_ipv6_prefix",
    "ban_max_sources",
    "never_ban",
    "blocklist",
];

/// A flag's values as the command line would carry them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Raw {
    /// A switch (`--reap-expired`).
    Flag(bool),
    /// One value, or each of a repeatable flag's.
    Values(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Switch,
    One,
    Many,
}

/// A run key: the flag behind it.
#[derive(Clone, Debug)]
pub struct RunKey {
    pub name: String,
    id: String,
    long: String,
    kind: Kind,
}

/// Every key a file may hold for `run`, derived from its flags.
pub fn run_keys(cmd: &Command) -> Vec<RunKey> {
    cmd.get_arguments()
        .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let name = long.replace('-', "_");
            (!NOT_KEYS.contains(&name.as_str())).then(|| RunKey {
                name,
                id: a.get_id().to_string(),
                long,
                kind: match a.get_action() {
                    ArgAction::SetTrue => Kind::Switch,
                    ArgAction::Append => Kind::Many,
                    _ => Kind::One,
                },
            })
        })
        .collect()
}

fn arg<'c>(cmd: &'c Command, key: &RunKey) -> Option<&'c Arg> {
    cmd.get_arguments().find(|a| a.get_id() == key.id.as_str())
}

/// Whether `key` is one of the fast-path keys (the CONFIG map's).
pub fn is_fast_key(key: &str) -> bool {
    config_keys::KEYS.iter().any(|(k, _)| *k == key)
}

/// A value refused: where it was, and what would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub line: Option<usize>,
    pub key: String,
    pub value: String,
    pub reason: String,
    pub allowed: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{} = {}: ", self.key, self.value)?;
        }
        write!(f, "{} (allowed: {})", self.reason, self.allowed)
    }
}

/// Every value a file or a request had wrong, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusals(pub Vec<Refused>);

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for Refusals {}

/// Clap's message up to its usage lines, on one line, without `error: `.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = lines.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

/// What a run key accepts, from its flag's definition.
fn allowed(arg: &Arg, kind: Kind) -> String {
    if kind == Kind::Switch {
        return "true | false".into();
    }
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_string())
        .collect();
    let what = if possible.is_empty() {
        let name = arg
            .get_value_names()
            .and_then(|n| n.first())
            .map_or_else(|| "VALUE".to_string(), |n| n.to_string());
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        format!("{name}: {help}")
    } else {
        possible.join(" | ")
    };
    match kind {
        Kind::Many => format!("an array of {what}"),
        _ => what,
    }
}

fn type_wanted(kind: Kind) -> &'static str {
    match kind {
        Kind::Switch => "a boolean",
        Kind::One => "a string or an integer",
        Kind::Many => "an array of strings or integers",
    }
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn toml_raw(kind: Kind, v: &toml::Value) -> Option<Raw> {
    match (kind, v) {
        (Kind::Switch, toml::Value::Boolean(b)) => Some(Raw::Flag(*b)),
        (Kind::Many, toml::Value::Array(items)) => items
            .iter()
            .map(scalar)
            .collect::<Option<_>>()
            .map(Raw::Values),
        (Kind::One, v) => scalar(v).map(|s| Raw::Values(vec![s])),
        _ => None,
    }
}

/// A TOML value as the operator wrote it (for messages).
fn shown(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            format!("[{}]", a.iter().map(shown).collect::<Vec<_>>().join(", "))
        }
        toml::Value::Table(_) => "{ ... }".into(),
    }
}

/// One value of `key` checked as the command line would check it.
fn check_run(cmd: &Command, key: &RunKey, raw: &Raw) -> Result<(), String> {
    let (Raw::Values(values), Some(arg)) = (raw, arg(cmd, key)) else {
        return Ok(());
    };
    if key.kind == Kind::One && values.len() != 1 {
        return Err("one value expected".into());
    }
    // The flag alone (what it requires of others is checked on the
    // merged whole), parsed as the command line would parse it.
    let alone = Command::new("value").no_binary_name(true).arg(
        arg.clone()
            .requires(clap::builder::Resettable::<clap::Id>::Reset)
            .required(false)
            .global(false),
    );
    let argv = values.iter().map(|v| format!("--{}={v}", key.long));
    alone
        .try_get_matches_from(argv)
        .map(|_| ())
        .map_err(|e| clap_reason(&e))
}

fn check_fast(key: &str, value: &str) -> Result<(), String> {
    let mut scratch = Config::DEFAULT;
    config_keys::set(&mut scratch, key, value).map_err(|e| format!("{e:#}"))
}

fn fast_allowed(key: &str) -> String {
    config_keys::KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(String::new, |(_, h)| h.to_string())
}

fn all_keys(keys: &[RunKey]) -> String {
    let mut all: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    all.extend(config_keys::KEYS.iter().map(|(k, _)| *k));
    all.join(", ")
}

/// A configuration file, every key checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileValues {
    pub run: BTreeMap<String, Raw>,
    pub fast: BTreeMap<String, String>,
}

fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
}

/// Reads a file; every wrong key is reported with its line, its value and
/// what is allowed.
pub fn parse_file(cmd: &Command, text: &str) -> Result<FileValues, Refusals> {
    let not_toml = |e: toml::de::Error| {
        Refusals(vec![Refused {
            line: e.span().map(|s| line_of(text, s.start)),
            key: String::new(),
            value: String::new(),
            reason: format!("not TOML: {}", e.message().trim()),
            allowed: "`key = value` lines, strings in quotes, arrays in [ ]".into(),
        }])
    };
    let spans = toml::de::DeTable::parse(text).map_err(not_toml)?;
    let lines: BTreeMap<String, usize> = spans
        .get_ref()
        .iter()
        .map(|(k, _)| (k.get_ref().to_string(), line_of(text, k.span().start)))
        .collect();
    let table: toml::Table = text.parse().map_err(not_toml)?;
    let keys = run_keys(cmd);
    let mut out = FileValues::default();
    let mut refused = Vec::new();
    for (k, v) in &table {
        let mut refuse = |reason: String, allowed: String| {
            refused.push(Refused {
                line: lines.get(k).copied(),
                key: k.clone(),
                value: shown(v),
                reason,
                allowed,
            })
        };
        if let Some(key) = keys.iter().find(|key| key.name == *k) {
            let allowed = || arg(cmd, key).map_or_else(String::new, |a| allowed(a, key.kind));
            match toml_raw(key.kind, v) {
                None => refuse(
                    format!("wrong type: {} is expected", type_wanted(key.kind)),
                    allowed(),
                ),
                Some(raw) => match check_run(cmd, key, &raw) {
                    Err(reason) => refuse(format!("bad value: {reason}"), allowed()),
                    Ok(()) => {
                        out.run.insert(k.clone(), raw);
                    }
                },
            }
        } else if is_fast_key(k) {
            match scalar(v) {
                None => refuse(
                    "wrong type: a string or an integer is expected".into(),
                    fast_allowed(k),
                ),
                Some(s) => match check_fast(k, &s) {
                    Err(reason) => refuse(format!("bad value: {reason}"), fast_allowed(k)),
                    Ok(()) => {
                        out.fast.insert(k.clone(), s);
                    }
                },
            }
        } else {
            refuse("unknown key".into(), all_keys(&keys));
        }
    }
    refused.sort_by_key(|r| r.line);
    if refused.is_empty() {
        Ok(out)
    } else {
        Err(Refusals(refused))
    }
}

/// A run key's value from a live request (`config set KEY VALUE`):
/// `true|false` for a switch, a comma-separated list for a repeatable flag.
pub fn parse_live(cmd: &Command, key: &str, value: &str) -> Result<Raw, Refused> {
    let keys = run_keys(cmd);
    let refuse = |reason: String, allowed: String| Refused {
        line: None,
        key: key.to_string(),
        value: value.to_string(),
        reason,
        allowed,
    };
    let Some(k) = keys.iter().find(|k| k.name == key) else {
        return Err(refuse("unknown key".into(), all_keys(&keys)));
    };
    let allowed = || arg(cmd, k).map_or_else(String::new, |a| allowed(a, k.kind));
    let raw = match k.kind {
        Kind::Switch => match value {
            "true" | "on" | "yes" => Raw::Flag(true),
            "false" | "off" | "no" => Raw::Flag(false),
            _ => return Err(refuse("bad value: true or false".into(), allowed())),
        },
        Kind::Many => Raw::Values(value.split(',').map(|v| v.trim().to_string()).collect()),
        Kind::One => Raw::Values(vec![value.to_string()]),
    };
    check_run(cmd, k, &raw).map_err(|reason| refuse(format!("bad value: {reason}"), allowed()))?;
    Ok(raw)
}

/// The values the operator typed on the command line of `run`.
pub fn flags_given(cmd: &Command, m: &ArgMatches) -> BTreeMap<String, Raw> {
    let mut out = BTreeMap::new();
    for key in run_keys(cmd) {
        if m.value_source(&key.id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let raw = match key.kind {
            Kind::Switch => Raw::Flag(m.get_flag(&key.id)),
            _ => Raw::Values(
                m.get_raw(&key.id)
                    .into_iter()
                    .flatten()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect(),
            ),
        };
        out.insert(key.name, raw);
    }
    out
}

/// One key's effective value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    /// As it would be written in the file.
    pub value: String,
    pub source: Source,
    /// Whether it can change while the daemon runs.
    pub live: bool,
}

/// The merged arguments (for `FromArgMatches`), and each key's value and
/// origin.
#[derive(Debug)]
pub struct Effective {
    pub matches: ArgMatches,
    pub entries: Vec<Entry>,
}

/// A value as TOML: integers bare, the rest quoted.
pub fn toml_scalar(s: &str) -> String {
    if s.parse::<i64>().is_ok() {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

/// Merges the three layers over the defaults and parses the result as
/// clap would the command line (so rules between flags apply too).
pub fn resolve(
    cmd: &Command,
    flags: &BTreeMap<String, Raw>,
    file: &FileValues,
    live: &BTreeMap<String, Raw>,
) -> Result<Effective> {
    let keys = run_keys(cmd);
    let mut argv: Vec<String> = Vec::new();
    let mut sources = BTreeMap::new();
    for key in &keys {
        let picked = [
            (live.get(&key.name), Source::Live),
            (flags.get(&key.name), Source::Flag),
            (file.run.get(&key.name), Source::File),
        ]
        .into_iter()
        .find_map(|(raw, src)| raw.map(|r| (r, src)));
        let Some((raw, src)) = picked else { continue };
        sources.insert(key.name.clone(), src);
        match raw {
            Raw::Flag(true) => argv.push(format!("--{}", key.long)),
            Raw::Flag(false) => {}
            Raw::Values(vs) => argv.extend(vs.iter().map(|v| format!("--{}={v}", key.long))),
        }
    }
    let m = cmd
        .clone()
        .try_get_matches_from(&argv)
        .map_err(|e| anyhow!("{}", clap_reason(&e)))?;
    let entries = keys
        .iter()
        .map(|key| {
            let value = match key.kind {
                Kind::Switch => m.get_flag(&key.id).to_string(),
                _ => {
                    let vs: Vec<String> = m
                        .get_raw(&key.id)
                        .into_iter()
                        .flatten()
                        .map(|v| toml_scalar(&v.to_string_lossy()))
                        .collect();
                    match (key.kind, vs.as_slice()) {
                        (Kind::Many, _) => format!("[{}]", vs.join(", ")),
                        (_, [one]) => one.clone(),
                        _ => "(unset)".into(),
                    }
                }
            };
            Entry {
                key: key.name.clone(),
                value,
                source: sources.get(&key.name).copied().unwrap_or(Source::Default),
                live: LIVE_KEYS.contains(&key.name.as_str()),
            }
        })
        .collect();
    Ok(Effective {
        matches: m,
        entries,
    })
}

/// `key = value    # source` lines, as `config get` and `config check`
/// print them.
pub fn print_entries(entries: &[Entry]) {
    for e in entries {
        let restart = if e.live { "" } else { ", restart to change" };
        println!("{} = {}    # {}{restart}", e.key, e.value, e.source);
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
