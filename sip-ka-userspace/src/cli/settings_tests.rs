#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory as _;

use super::*;
use crate::cli::{run_args, Cli};

fn cmd() -> Command {
    run_args::command()
}

fn refusal(text: &str) -> Refused {
    let e = parse_file(&cmd(), text).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    e.0.into_iter().next().unwrap()
}

fn entry<'a>(entries: &'a [Entry], key: &str) -> &'a Entry {
    entries.iter().find(|e| e.key == key).unwrap()
}

/// A file setting every run key, each to a value other than its default.
const EVERY_KEY: &str = r#"
iface = "eth1"
mode = "edge"
listen = ["198.18.0.1:5060", "198.18.0.1:5062"]
upstream = "198.18.0.2:5060"
trust_upstream_source = true
metrics = "127.0.0.1:9560"
qualify_frequency = 30
timers_min_se = 120
timers_sess_expires = 900
reap_expired = true
options_pbx = "forward"
tcp_idle_timeout = 400
tcp_message_timeout = 20
max_pending_dialogs = 1000
max_pending_dialog_bytes = 1048576
max_pending_registers = 2000
max_pending_register_bytes = 2097152
max_message_size = 4096
max_headers = 64
max_connections = 100
max_connections_per_ip = 8
ms_keep_alive_timeout = 60
flow_timer_tcp = 100
flow_timer_udp = 25
dialog_idle_timeout = 7200
state_dir = "/var/lib/sip-ka"
state_store = "redis://10.0.0.5:6379/0"
node_id = "edge-a"
tls_cert = "/etc/sip-ka/cert.pem"
tls_key = "/etc/sip-ka/key.pem"
ws_listen = ["10.0.0.1:8080"]
wss_listen = ["10.0.0.1:8443"]
ws_origin = ["https://phone.example.com"]
ws_ping_interval = 20
lab = true
log_level = "debug"
log_format = "json"
xdp_mode = "skb"
xdp = "off"
sip_port = [5060, 5080]
keep_attached = true
pin_dir = "/sys/fs/bpf/edge1"
udp_crlf = "drop"
rate_limit_pps = 50
shield = "off"
ban_max_retry = 5
ban_find_time = 300
ban_time = 120
ban_time_max = 3600
ban_flood_requests = 500
ban_flood_window = 1
ban_user_agent = ["friendly-scanner", "evil"]
ban_ipv6_prefix = 56
ban_max_sources = 5000
never_ban = ["198.51.100.0/24"]
blocklist = ["/etc/sip-ka/apiban.list"]
"#;

#[test]
fn every_run_flag_is_a_key() {
    // The run command as the binary parses it, not the copy the keys
    // come from.
    let cli = Cli::command();
    let run_cmd = cli.find_subcommand("run").unwrap();
    let flags: BTreeSet<String> = run_cmd
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "config" | "help" | "version"))
        .map(|l| l.replace('-', "_"))
        .collect();
    let keys: BTreeSet<String> = run_keys(&cmd()).into_iter().map(|k| k.name).collect();
    assert_eq!(keys, flags);
    for k in [
        "upstream",
        "listen",
        "sip_port",
        "pin_dir",
        "log_level",
        "keep_attached",
    ] {
        assert!(keys.contains(k), "{k}");
    }
    for k in LIVE_KEYS {
        assert!(keys.contains(*k), "live key {k} is no flag of run");
    }
}

#[test]
fn every_key_is_settable_from_the_file() {
    let file = parse_file(&cmd(), EVERY_KEY).unwrap();
    let eff = resolve(&cmd(), &BTreeMap::new(), &file, &BTreeMap::new()).unwrap();
    for e in &eff.entries {
        assert_eq!(
            e.source,
            Source::File,
            "{} is not in the sample file",
            e.key
        );
    }
    let args = <run_args::RunArgs as clap::FromArgMatches>::from_arg_matches(&eff.matches).unwrap();
    assert_eq!(args.iface.as_deref(), Some("eth1"));
    assert_eq!(args.listen.len(), 2);
    assert_eq!(args.qualify_frequency, 30);
    assert!(args.reap_expired && args.lab && args.keep_attached);
    assert_eq!(args.sip_ports, vec![5060, 5080]);
    assert_eq!(
        args.pin.pin_dir,
        std::path::PathBuf::from("/sys/fs/bpf/edge1")
    );
    assert_eq!(entry(&eff.entries, "options_pbx").value, "\"forward\"");
    assert_eq!(file.fast["udp_crlf"], "drop");
    assert_eq!(file.fast["rate_limit_pps"], "50");
}

#[test]
fn precedence_is_default_file_flag_live() {
    let file = parse_file(
        &cmd(),
        "qualify_frequency = 30\ntimers_min_se = 120\nmax_headers = 64\n",
    )
    .unwrap();
    let flags: BTreeMap<String, Raw> = [
        ("timers_min_se".into(), Raw::Values(vec!["150".into()])),
        ("max_headers".into(), Raw::Values(vec!["32".into()])),
    ]
    .into();
    let live: BTreeMap<String, Raw> = [(
        "max_headers".into(),
        parse_live(&cmd(), "max_headers", "16").unwrap(),
    )]
    .into();
    let eff = resolve(&cmd(), &flags, &file, &live).unwrap();
    let got = |k: &str| {
        let e = entry(&eff.entries, k);
        (e.value.clone(), e.source)
    };
    assert_eq!(got("tcp_idle_timeout"), ("300".into(), Source::Default));
    assert_eq!(got("qualify_frequency"), ("30".into(), Source::File));
    assert_eq!(got("timers_min_se"), ("150".into(), Source::Flag));
    assert_eq!(got("max_headers"), ("16".into(), Source::Live));
    // A switch the command line turned on, turned off live.
    let flags: BTreeMap<String, Raw> = [("reap_expired".into(), Raw::Flag(true))].into();
    let live = [(
        "reap_expired".into(),
        parse_live(&cmd(), "reap_expired", "false").unwrap(),
    )]
    .into();
    let eff = resolve(&cmd(), &flags, &FileValues::default(), &live).unwrap();
    assert_eq!(got_of(&eff, "reap_expired"), ("false".into(), Source::Live));
}

fn got_of(eff: &Effective, k: &str) -> (String, Source) {
    let e = entry(&eff.entries, k);
    (e.value.clone(), e.source)
}

#[test]
fn an_unknown_key_names_its_line_and_the_keys() {
    let r = refusal("mode = \"edge\"\n\nqualify_frequncy = 30\n");
    assert_eq!(r.line, Some(3));
    assert_eq!(
        (r.key.as_str(), r.value.as_str()),
        ("qualify_frequncy", "30")
    );
    assert_eq!(r.reason, "unknown key");
    assert!(r.allowed.contains("qualify_frequency") && r.allowed.contains("udp_crlf"));
    let shown = r.to_string();
    assert!(
        shown.starts_with("line 3: qualify_frequncy = 30: unknown key (allowed: "),
        "{shown}"
    );
}

#[test]
fn a_wrong_type_names_the_type_wanted() {
    let r = refusal("# switches\nreap_expired = \"yes\"\n");
    assert_eq!(
        (r.line, r.key.as_str(), r.value.as_str()),
        (Some(2), "reap_expired", "\"yes\"")
    );
    assert!(r.reason.contains("wrong type: a boolean"), "{r}");
    assert_eq!(r.allowed, "true | false");
    let r = refusal("listen = \"198.18.0.1:5060\"\n");
    assert!(r.reason.contains("an array"), "{r}");
    assert!(r.allowed.starts_with("an array of ADDR"), "{r}");
    let r = refusal("qualify_frequency = 1.5\n");
    assert!(r.reason.contains("a string or an integer"), "{r}");
    let r = refusal("udp_crlf = true\n");
    assert!(r.reason.contains("wrong type"), "{r}");
}

#[test]
fn a_bad_value_gets_the_flags_own_message() {
    let r = refusal("\noptions_pbx = \"maybe\"\n");
    assert_eq!(
        (r.line, r.key.as_str(), r.value.as_str()),
        (Some(2), "options_pbx", "\"maybe\"")
    );
    assert!(r.reason.contains("invalid value 'maybe'"), "{r}");
    assert_eq!(r.allowed, "answer | forward");
    let r = refusal("qualify_frequency = -5\n");
    assert!(r.reason.starts_with("bad value"), "{r}");
    assert!(r.allowed.starts_with("SECS: "), "{r}");
    let r = refusal("sip_port = [5060, 70000]\n");
    assert!(r.reason.contains("70000"), "{r}");
    let r = refusal("rate_limit_burst = 0\n");
    assert!(r.reason.contains("at least 1"), "{r}");
    assert!(r.allowed.contains("burst"), "{r}");
}

#[test]
fn every_wrong_key_is_reported_in_line_order() {
    let e = parse_file(&cmd(), "zzz = 1\nmode = \"x\"\nudp_crlf = \"answer\"\n").unwrap_err();
    let lines: Vec<Option<usize>> = e.0.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![Some(1), Some(2), Some(3)]);
    assert_eq!(e.to_string().lines().count(), 3);
}

#[test]
fn a_file_that_is_not_toml_names_its_line() {
    // The old `key = value` format: bare words are not TOML strings.
    let e = parse_file(&cmd(), "# old format\nudp_crlf = drop\n").unwrap_err();
    assert_eq!(e.0[0].line, Some(2));
    assert!(e.0[0].reason.starts_with("not TOML"), "{e}");
    assert!(parse_file(&cmd(), "garbage").is_err());
    let e = parse_file(&cmd(), "[edge]\nmode = \"edge\"\n").unwrap_err();
    assert_eq!(e.0[0].reason, "unknown key", "tables are not keys: {e}");
}

#[test]
fn fast_path_keys_in_a_file_apply() {
    let file = parse_file(
        &cmd(),
        "# comment\nudp_crlf = \"drop\"\n\nrate_limit_pps=5 # five\n",
    )
    .unwrap();
    let mut cfg = Config::DEFAULT;
    for (k, v) in &file.fast {
        config_keys::set(&mut cfg, k, v).unwrap();
    }
    assert_eq!(cfg.udp_crlf, sip_ka_common::Action::Drop as u32);
    assert_eq!(cfg.rate_limit_pps, 5);
}

#[test]
fn rules_between_flags_hold_for_the_file_too() {
    let file = parse_file(&cmd(), "tls_cert = \"/etc/c.pem\"\n").unwrap();
    let e = resolve(&cmd(), &BTreeMap::new(), &file, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("--tls-key"), "{e}");
}

#[test]
fn live_values_are_checked_like_flags() {
    let e = parse_live(&cmd(), "max_message_size", "big").unwrap_err();
    assert!(e.reason.contains("invalid value 'big'"), "{e}");
    assert!(parse_live(&cmd(), "no_such", "1").unwrap_err().reason == "unknown key");
    assert_eq!(
        parse_live(&cmd(), "sip_port", "5060, 5080").unwrap(),
        Raw::Values(vec!["5060".into(), "5080".into()])
    );
    assert_eq!(parse_live(&cmd(), "lab", "on").unwrap(), Raw::Flag(true));
    assert!(!LIVE_KEYS.contains(&"listen") && !LIVE_KEYS.contains(&"iface"));
}
