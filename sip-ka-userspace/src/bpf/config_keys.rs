//! The operator's names for the fields of `Config`, their values as
//! words (the config file's fast-path keys: `cli/settings.rs`).

use anyhow::{anyhow, bail, Context as _, Result};
use std::net::Ipv4Addr;

use sip_ka_common::{
    config::{ACL_ALLOW_ONLY, ACL_DENY, ACL_OFF, MAX_BROADCAST_V4, RATE_LIMIT_MAX},
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
        "N: answers per second per source address and port, one phone (0 = no limit)",
    ),
    (
        "rate_limit_burst",
        "N: answers a source (address and port) may get in a burst",
    ),
    (
        "rate_limit_addr_pps",
        "N: answers per second per source address, all its ports: a NAT's ceiling (0 = no limit)",
    ),
    (
        "rate_limit_addr_burst",
        "N: answers one address may get in a burst",
    ),
    (
        "own_mac",
        "MAC: only frames to this address are answered (the daemon writes the interface's)",
    ),
    (
        "broadcast_v4",
        "A,B,... | none: the interface's directed broadcasts, never answered (the daemon writes them)",
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
        "rate_limit_addr_pps" => cfg.rate_limit_addr_pps.to_string(),
        "rate_limit_addr_burst" => cfg.rate_limit_addr_burst.to_string(),
        "own_mac" => mac_string(&cfg.own_mac),
        "broadcast_v4" => {
            let list: Vec<String> = cfg
                .broadcast_v4
                .iter()
                .filter(|a| **a != [0; 4])
                .map(|a| Ipv4Addr::from(*a).to_string())
                .collect();
            if list.is_empty() {
                "none".into()
            } else {
                list.join(",")
            }
        }
        _ => bail!("unknown key {key:?}; known keys: {}", key_list()),
    })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(value: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = value.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        bail!("{value:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| anyhow!("{value:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

fn parse_broadcasts(value: &str) -> Result<[[u8; 4]; MAX_BROADCAST_V4]> {
    let mut out = [[0u8; 4]; MAX_BROADCAST_V4];
    if value == "none" || value.is_empty() {
        return Ok(out);
    }
    let addrs = value
        .split(',')
        .map(|a| a.trim().parse::<Ipv4Addr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{value:?}: {e}: expected e.g. 198.18.0.255,10.0.0.255"))?;
    if addrs.len() > MAX_BROADCAST_V4 {
        bail!("at most {MAX_BROADCAST_V4} addresses");
    }
    for (slot, a) in out.iter_mut().zip(addrs) {
        *slot = a.octets();
    }
    Ok(out)
}

/// A rate or burst: more than `RATE_LIMIT_MAX` is refused rather than
/// left to overflow the token bucket.
fn parse_rate(value: &str) -> Result<u32> {
    let v: u32 = value.parse()?;
    if v > RATE_LIMIT_MAX {
        bail!("{v} is more than {RATE_LIMIT_MAX}");
    }
    Ok(v)
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
        "rate_limit_pps" => cfg.rate_limit_pps = parse_rate(value).with_context(err)?,
        "rate_limit_burst" => {
            let burst = parse_rate(value).with_context(err)?;
            if burst == 0 {
                bail!("config key rate_limit_burst: must be at least 1");
            }
            cfg.rate_limit_burst = burst;
        }
        "rate_limit_addr_pps" => cfg.rate_limit_addr_pps = parse_rate(value).with_context(err)?,
        "rate_limit_addr_burst" => {
            let burst = parse_rate(value).with_context(err)?;
            if burst == 0 {
                bail!("config key rate_limit_addr_burst: must be at least 1");
            }
            cfg.rate_limit_addr_burst = burst;
        }
        "own_mac" => cfg.own_mac = parse_mac(value).with_context(err)?,
        "broadcast_v4" => cfg.broadcast_v4 = parse_broadcasts(value).with_context(err)?,
        _ => bail!("unknown key {key:?}; known keys: {}", key_list()),
    }
    cfg.initialised = 1;
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
        assert!(set(&mut cfg, "own_mac", "02:00:00:00:00").is_err());
        assert!(set(&mut cfg, "broadcast_v4", "198.18.0.256").is_err());
        assert_eq!(cfg, Config::DEFAULT);
    }

    #[test]
    fn rates_that_would_overflow_the_bucket_are_refused() {
        let mut cfg = Config::DEFAULT;
        for key in ["rate_limit_pps", "rate_limit_burst"] {
            let e = set(&mut cfg, key, "4294967295").unwrap_err();
            assert!(format!("{e:#}").contains("more than"), "{key}: {e:#}");
            set(&mut cfg, key, &RATE_LIMIT_MAX.to_string()).unwrap();
        }
    }

    #[test]
    fn rate_limit_is_on_by_default() {
        assert_eq!(get(&Config::DEFAULT, "rate_limit_pps").unwrap(), "200");
        assert_eq!(get(&Config::DEFAULT, "rate_limit_burst").unwrap(), "400");
    }

    #[test]
    fn interface_identity_round_trips() {
        let mut cfg = Config::DEFAULT;
        set(&mut cfg, "own_mac", "02:aB:00:00:00:01").unwrap();
        assert_eq!(cfg.own_mac, [2, 0xab, 0, 0, 0, 1]);
        assert_eq!(get(&cfg, "own_mac").unwrap(), "02:ab:00:00:00:01");
        set(&mut cfg, "broadcast_v4", "198.18.0.255, 10.1.255.255").unwrap();
        assert_eq!(
            get(&cfg, "broadcast_v4").unwrap(),
            "198.18.0.255,10.1.255.255"
        );
        set(&mut cfg, "broadcast_v4", "none").unwrap();
        assert_eq!(cfg.broadcast_v4, Config::DEFAULT.broadcast_v4);
    }
}
