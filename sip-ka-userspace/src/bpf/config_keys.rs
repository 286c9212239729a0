//! The operator's names for the fields of `Config`, their values as
//! words, and the config file format (`key = value` lines, `#` comments).

use anyhow::{anyhow, bail, Context as _, Result};
use sip_ka_common::{
    config::{ACL_ALLOW_ONLY, ACL_DENY, ACL_OFF},
    Action, Config,
};

/// Every key `sip-ka config get/set` knows, with what it accepts.
pub const KEYS: &[(&str, &str)] = &[
    ("udp_crlf", "pong | drop | pass: UDP \\r\\n\\r\\n pings"),
    ("lone_crlf", "drop | pass: a UDP \\r\\n on its own"),
    (
        "stun",
        "answer | drop | pass: STUN Binding requests the fast path can serve",
    ),
    (
        "stun_classic",
        "answer | pass: RFC 3489 Binding requests (no magic cookie)",
    ),
    ("sip_classify", "on | off: count SIP requests and responses"),
    (
        "verify_checksums",
        "on | off: check IPv4 and UDP checksums before answering",
    ),
    (
        "track_peers",
        "on | off: keep the PEERS table of keep-alive sources",
    ),
    (
        "acl",
        "off | deny | allow-only: use the ACL_DENY / ACL_ALLOW tries",
    ),
    (
        "rate_limit_pps",
        "N: answers per second per source address (0 = no limit)",
    ),
    (
        "rate_limit_burst",
        "N: answers a source may send in a burst",
    ),
];

fn action_word(v: u32, answer_word: &str) -> String {
    match Action::from_u32(v) {
        Action::Answer => answer_word.to_string(),
        Action::Drop => "drop".into(),
        Action::Pass => "pass".into(),
    }
}

fn on_off(v: u32) -> String {
    if v != 0 { "on" } else { "off" }.into()
}

pub fn get(cfg: &Config, key: &str) -> Result<String> {
    Ok(match key {
        "udp_crlf" => action_word(cfg.udp_crlf, "pong"),
        "lone_crlf" => action_word(cfg.lone_crlf, "drop"),
        "stun" => action_word(cfg.stun, "answer"),
        "stun_classic" => action_word(cfg.stun_classic, "answer"),
        "sip_classify" => on_off(cfg.sip_classify),
        "verify_checksums" => on_off(cfg.verify_checksums),
        "track_peers" => on_off(cfg.track_peers),
        "acl" => match cfg.acl {
            ACL_DENY => "deny".into(),
            ACL_ALLOW_ONLY => "allow-only".into(),
            _ => "off".into(),
        },
        "rate_limit_pps" => cfg.rate_limit_pps.to_string(),
        "rate_limit_burst" => cfg.rate_limit_burst.to_string(),
        _ => bail!("unknown key {key:?}; known keys: {}", key_list()),
    })
}

fn key_list() -> String {
    KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

fn parse_action(value: &str, allowed: &[(&str, Action)]) -> Result<u32> {
    allowed
        .iter()
        .find(|(w, _)| *w == value)
        .map(|(_, a)| *a as u32)
        .ok_or_else(|| {
            anyhow!(
                "{value:?} is not one of {}",
                allowed
                    .iter()
                    .map(|(w, _)| *w)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        })
}

fn parse_on_off(value: &str) -> Result<u32> {
    match value {
        "on" | "yes" | "true" | "1" => Ok(1),
        "off" | "no" | "false" | "0" => Ok(0),
        _ => bail!("{value:?} is not on | off"),
    }
}

/// Sets `key` to `value` in `cfg`.
pub fn set(cfg: &mut Config, key: &str, value: &str) -> Result<()> {
    let value = value.trim();
    let err = || format!("config key {key}");
    match key {
        "udp_crlf" => {
            cfg.udp_crlf = parse_action(
                value,
                &[
                    ("pong", Action::Answer),
                    ("drop", Action::Drop),
                    ("pass", Action::Pass),
                ],
            )
            .with_context(err)?
        }
        "lone_crlf" => {
            cfg.lone_crlf = parse_action(value, &[("drop", Action::Drop), ("pass", Action::Pass)])
                .with_context(err)?
        }
        "stun" => {
            cfg.stun = parse_action(
                value,
                &[
                    ("answer", Action::Answer),
                    ("drop", Action::Drop),
                    ("pass", Action::Pass),
                ],
            )
            .with_context(err)?
        }
        "stun_classic" => {
            cfg.stun_classic =
                parse_action(value, &[("answer", Action::Answer), ("pass", Action::Pass)])
                    .with_context(err)?
        }
        "sip_classify" => cfg.sip_classify = parse_on_off(value).with_context(err)?,
        "verify_checksums" => cfg.verify_checksums = parse_on_off(value).with_context(err)?,
        "track_peers" => cfg.track_peers = parse_on_off(value).with_context(err)?,
        "acl" => {
            cfg.acl = match value {
                "off" => ACL_OFF,
                "deny" => ACL_DENY,
                "allow-only" => ACL_ALLOW_ONLY,
                _ => bail!("config key acl: {value:?} is not off | deny | allow-only"),
            }
        }
        "rate_limit_pps" => cfg.rate_limit_pps = value.parse().with_context(err)?,
        "rate_limit_burst" => {
            let burst: u32 = value.parse().with_context(err)?;
            if burst == 0 {
                bail!("config key rate_limit_burst: must be at least 1");
            }
            cfg.rate_limit_burst = burst;
        }
        _ => bail!("unknown key {key:?}; known keys: {}", key_list()),
    }
    cfg.initialised = 1;
    Ok(())
}

/// Applies a config file's `key = value` lines on top of `cfg`.
pub fn apply_file(cfg: &mut Config, text: &str) -> Result<()> {
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("line {}: expected `key = value`", n + 1))?;
        set(cfg, k.trim(), v.trim()).with_context(|| format!("line {}", n + 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips() {
        let mut cfg = Config::DEFAULT;
        for (key, _) in KEYS {
            let v = get(&cfg, key).unwrap();
            set(&mut cfg, key, &v).unwrap();
            assert_eq!(get(&cfg, key).unwrap(), v, "{key}");
        }
        assert_eq!(cfg, Config::DEFAULT);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let mut cfg = Config::DEFAULT;
        let e = set(&mut cfg, "udp_crlf", "answer").unwrap_err();
        assert!(format!("{e:#}").contains("pong | drop | pass"));
        assert!(set(&mut cfg, "no_such_key", "1").is_err());
        assert!(set(&mut cfg, "rate_limit_pps", "-1").is_err());
        assert_eq!(cfg, Config::DEFAULT);
    }

    #[test]
    fn file_lines_apply_in_order() {
        let mut cfg = Config::DEFAULT;
        apply_file(
            &mut cfg,
            "# comment\nudp_crlf = drop\n\nrate_limit_pps=5 # five\n",
        )
        .unwrap();
        assert_eq!(cfg.udp_crlf, Action::Drop as u32);
        assert_eq!(cfg.rate_limit_pps, 5);
        assert!(apply_file(&mut cfg, "garbage").is_err());
    }
}
