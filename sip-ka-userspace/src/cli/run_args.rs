//! `sip-ka run`'s flags, and the configuration layers (default, file,
//! flag, live change) resolved into them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use super::{
    args::{LogLevel, PinDir, XdpModeArg},
    control, settings,
};
use crate::edge;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// XDP only, for a PBX on the same host: the daemon manages maps and
    /// stats and binds no SIP port (except --listen responder sockets).
    Offload,
    /// SIP edge proxy in front of the PBX: listens on --listen (UDP and
    /// TCP), forwards to --upstream (UDP), answers keep-alives and OPTIONS itself and
    /// mirrors dialogs into the DIALOGS map.
    Edge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to attach the XDP program to (required unless --xdp off).
    #[arg(long)]
    pub iface: Option<String>,
    /// What the daemon does besides the fast path.
    #[arg(long, value_enum, default_value = "offload")]
    pub mode: Mode,
    /// UDP address (repeatable). Offload mode: the userspace keep-alive
    /// responder, answering CRLF and STUN that XDP passes, or all of it with
    /// --xdp off. Edge mode: where the edge proxy listens for SIP, on UDP
    /// and TCP.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// The PBX's address (edge mode). Refused when it is reached through
    /// --iface, the phones' side: the edge knows the PBX by its source
    /// address alone.
    #[arg(long)]
    pub upstream: Option<SocketAddr>,
    /// Accept an --upstream reached through --iface: only with a firewall
    /// that drops packets from the PBX's address arriving from the phones.
    #[arg(long)]
    pub trust_upstream_source: bool,
    /// Seconds between OPTIONS pings to the PBX (edge mode); two unanswered
    /// pings in a row make it down.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub qualify_frequency: u64,
    /// RFC 4028 Min-SE floor in seconds (edge mode); below 90 only with
    /// --lab.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub timers_min_se: u32,
    /// Session-Expires inserted into INVITE/UPDATE that lack one (edge
    /// mode).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub timers_sess_expires: u32,
    /// Send BYE to both sides when a session expires (edge mode; RFC 4028
    /// 8.3 forbids a proxy to, hence off).
    #[arg(long)]
    pub reap_expired: bool,
    /// OPTIONS outside a dialog for the PBX (edge mode): answered by the
    /// edge (200 while the PBX is up, 503 while down) or forwarded.
    #[arg(long, value_enum, default_value = "answer")]
    pub options_pbx: OptionsPbx,
    /// Seconds a TCP/TLS connection may stay silent before the edge closes
    /// it (edge mode; an ms-keep-alive negotiation replaces it).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub tcp_idle_timeout: u64,
    /// Seconds a TCP/TLS message may take from its first byte to its last
    /// (edge mode): a slower sender's connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub tcp_message_timeout: u64,
    /// Most INVITE dialogs the PBX has not answered yet kept at once (edge
    /// mode); past it the oldest are forgotten.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_pending_dialogs: usize,
    /// Most bytes those pending dialogs may hold (edge mode).
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_pending_dialog_bytes: usize,
    /// Most REGISTERs awaiting the registrar's answer kept at once (edge
    /// mode); past it the oldest are forgotten.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub max_pending_registers: usize,
    /// Most bytes those pending REGISTERs may hold (edge mode).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_pending_register_bytes: usize,
    /// Largest SIP message the edge takes, in bytes (edge mode): a larger
    /// datagram gets 513, a larger message on a connection closes it.
    #[arg(long, value_name = "BYTES", default_value_t = 65_535)]
    pub max_message_size: usize,
    /// Most header fields in a SIP message (edge mode); more gets 400.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_headers: usize,
    /// Most TCP/TLS connections open at once (edge mode).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most TCP/TLS connections open at once from one IP address (an
    /// IPv6 /64; edge mode). 0, the default, sets no fixed cap: a whole
    /// office or carrier NAT may hold many; near --max-connections the
    /// sources holding the most are refused first, and at it a smaller
    /// source takes the largest one's oldest connection, so no source can
    /// keep another out.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// `timeout=` the edge answers to an ms-keep-alive offer: the
    /// connection then lives while keep-alives come within it (edge mode).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub ms_keep_alive_timeout: u32,
    /// Flow-Timer put on the 2xx to an outbound REGISTER over TCP/TLS
    /// (RFC 5626: how often the UA sends keep-alives).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub flow_timer_tcp: u32,
    /// Flow-Timer for an outbound REGISTER over UDP.
    #[arg(long, value_name = "SECS", default_value_t = 29)]
    pub flow_timer_udp: u32,
    /// Seconds without in-dialog traffic (requests through the edge,
    /// keep-alives it answers or XDP counts) after which a confirmed
    /// dialog is ended (edge mode; 0 = never). With --reap-expired both
    /// sides get a BYE.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub dialog_idle_timeout: u64,
    /// Where edge mode journals its dialogs so that a restarted daemon
    /// (even after kill -9) resumes them with their session timers
    /// (default: /run/sip-ka/<name of the pin directory>).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Redis URL (`redis://HOST:PORT/DB`) through which edges share their
    /// dialogs, session timers, bindings and flow-token key, so another
    /// edge (an HA pair behind a virtual IP) carries this one's calls
    /// (edge mode; default: none, the state stays in --state-dir).
    #[arg(long, value_name = "URL")]
    pub state_store: Option<String>,
    /// This edge's name in the shared store, unique per edge (default:
    /// the host name).
    #[arg(long, value_name = "NAME", requires = "state_store")]
    pub node_id: Option<String>,
    /// PEM certificate chain: the edge also serves TLS on its TCP ports
    /// (a connection starting with a TLS handshake is TLS). Needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Address where browser phones connect with SIP over WebSocket, `ws://`
    /// (RFC 7118; edge mode; repeatable). The upgrade is accepted on any
    /// path with the `sip` subprotocol.
    #[arg(long = "ws-listen", value_name = "ADDR")]
    pub ws_listen: Vec<SocketAddr>,
    /// Address for SIP over secure WebSocket, `wss://`, with the
    /// certificate of --tls-cert (edge mode; repeatable).
    #[arg(long = "wss-listen", value_name = "ADDR")]
    pub wss_listen: Vec<SocketAddr>,
    /// Origin a browser's WebSocket upgrade may come from, e.g.
    /// `https://phone.example.com` (repeatable; default: any). Another
    /// Origin is refused with 403, so a page of another site cannot drive
    /// a phone's session; a client sending no Origin (not a browser)
    /// passes.
    #[arg(long = "ws-origin", value_name = "ORIGIN")]
    pub ws_origin: Vec<String>,
    /// Seconds of silence on a WebSocket connection after which the edge
    /// sends a Ping (browsers answer it themselves); three unanswered
    /// close the connection (0 = no Pings). Keeps browser phones
    /// registered through load balancers and NATs that drop idle
    /// connections.
    #[arg(long, value_name = "SECS", default_value_t = 25)]
    pub ws_ping_interval: u64,
    /// Lab use: allows a Min-SE below 90 s.
    #[arg(long)]
    pub lab: bool,
    /// TOML configuration file: every flag of `run` as a key (its long
    /// name with `_` for `-`) and the fast-path keys of `sip-ka config
    /// get`; a flag given here overrides the file (`sip-ka config check
    /// FILE` checks one).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level (RUST_LOG, when set, wins); changes live.
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Log line format on stderr: `text`, or `json` (one object per
    /// line: timestamp, level, target, fields with the message and e.g.
    /// call_id); restart to change.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::logs::LogFormat,
    /// XDP attach mode: native first with SKB fallback, or one of them.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,
    /// `off` loads the maps but attaches nothing: the userspace responder
    /// answers everything (the fallback, and the benchmark's baseline).
    #[arg(long, value_enum, default_value = "on")]
    pub xdp: OnOff,
    /// UDP ports the fast path handles (repeatable; default 5060 when none
    /// was ever set).
    #[arg(long = "sip-port", value_name = "PORT")]
    pub sip_ports: Vec<u16>,
    /// Leave the program attached and the maps pinned on exit, so the fast
    /// path keeps answering while no daemon runs.
    #[arg(long)]
    pub keep_attached: bool,
    /// Serve Prometheus metrics on this TCP address (e.g.
    /// 127.0.0.1:9560): GET /metrics, read from the maps and the daemon
    /// at each scrape. Off unless given; bind it to an address only the
    /// monitoring network reaches.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Gather evidence against sources and ban them (edge mode): failed
    /// logins and unknown users the PBX answers, the edge's own refusals,
    /// scanners' User-Agents, floods. `off` keeps the bans by list, by
    /// hand and from other edges. Changes live.
    #[arg(long, value_enum, default_value = "on")]
    pub shield: OnOff,
    /// Failures (403; 404 for a user; 401/407 to a request with
    /// credentials; the edge's refusals) within --ban-find-time that ban
    /// a source (fail2ban's maxretry). Changes live.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub ban_max_retry: u32,
    /// The window failures are counted over, in seconds. Changes live.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub ban_find_time: u64,
    /// Length of a first ban in seconds; each further ban of the same
    /// source lasts twice as long, up to --ban-time-max. Changes live.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub ban_time: u64,
    /// Longest ban, in seconds. Changes live.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    pub ban_time_max: u64,
    /// SIP requests from one source within --ban-flood-window that ban
    /// it as a flood (keep-alives the edge or XDP answers do not count; 0
    /// = never). Far above an office NAT's registration storm. Changes live.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub ban_flood_requests: u32,
    /// The flood window, in seconds. Changes live.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub ban_flood_window: u64,
    /// A User-Agent substring (any case) that bans a source at its first
    /// request (repeatable; replaces the built-in list of scanners:
    /// friendly-scanner, sipvicious, sipcli, VaxSIPUserAgent, pplsip, ...;
    /// one empty value turns the check off). Changes live.
    #[arg(long = "ban-user-agent", value_name = "TEXT",
          default_values = crate::shield::evidence::SCANNER_USER_AGENTS)]
    pub ban_user_agents: Vec<String>,
    /// IPv6 sources are judged and banned per prefix of this length (a
    /// /64 is one subscriber). Changes live.
    #[arg(long = "ban-ipv6-prefix", value_name = "LEN", default_value_t = 64,
          value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ban_ipv6_prefix: u8,
    /// Most sources the shield keeps evidence on at once (about 120 bytes
    /// each; the oldest go first). Changes live.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub ban_max_sources: usize,
    /// An address or CIDR never banned (repeatable): an office NAT the
    /// operator trusts. The PBX, the host's addresses and loopback never
    /// are. Changes live.
    #[arg(long = "never-ban", value_name = "CIDR")]
    pub never_ban: Vec<crate::shield::Prefix>,
    /// A file of addresses or CIDRs to drop (repeatable; one per line,
    /// `#`/`;` comments, `ipset save` lines as the APIBAN client keeps):
    /// read again when it changes, on SIGHUP and on a live change.
    #[arg(long = "blocklist", value_name = "FILE")]
    pub blocklists: Vec<PathBuf>,
    #[command(flatten)]
    pub pin: PinDir,
}

/// The shield's settings from the arguments (edge mode gathers evidence
/// when `--shield on`; offload mode never does, its bans come from lists,
/// by hand and from other edges).
pub(super) fn shield_settings(args: &RunArgs) -> Result<crate::shield::Settings> {
    let secs = Duration::from_secs;
    if args.ban_time == 0 || args.ban_find_time == 0 || args.ban_flood_window == 0 {
        bail!("--ban-time, --ban-find-time and --ban-flood-window must be at least 1 second");
    }
    if args.ban_time_max < args.ban_time {
        bail!("--ban-time-max must be at least --ban-time");
    }
    Ok(crate::shield::Settings {
        policy: crate::shield::Policy {
            enabled: args.shield == OnOff::On && args.mode == Mode::Edge,
            max_retry: args.ban_max_retry,
            find_time: secs(args.ban_find_time),
            ban_time: secs(args.ban_time),
            ban_time_max: secs(args.ban_time_max),
            flood_requests: args.ban_flood_requests,
            flood_window: secs(args.ban_flood_window),
            user_agents: args
                .ban_user_agents
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            v6_prefix: args.ban_ipv6_prefix,
            max_sources: args.ban_max_sources.max(1),
        },
        never_ban: args.never_ban.clone(),
        blocklists: args.blocklists.clone(),
    })
}

/// The edge's configuration from the arguments (`None` in offload mode),
/// checked.
pub(super) fn edge_config(args: &RunArgs) -> Result<Option<edge::EdgeConfig>> {
    Ok(match (args.mode, args.upstream) {
        (Mode::Edge, Some(upstream)) => {
            let cfg = edge::EdgeConfig {
                listen: args.listen.clone(),
                upstream,
                qualify_frequency: Duration::from_secs(args.qualify_frequency),
                limits: crate::sip::Limits {
                    max_message_size: args.max_message_size,
                    max_headers: args.max_headers,
                },
                timers: crate::edge::session_timer::TimerConfig::new(
                    args.timers_min_se,
                    args.timers_sess_expires,
                    args.lab,
                )
                .map_err(|e| anyhow::anyhow!("--timers-min-se/--timers-sess-expires: {e}"))?,
                reap_expired: args.reap_expired,
                streams: edge::StreamConfig {
                    idle_timeout: Duration::from_secs(args.tcp_idle_timeout),
                    max_conns: args.max_connections,
                    max_conns_per_ip: args.max_connections_per_ip,
                    ms_keepalive_timeout: args.ms_keep_alive_timeout,
                    flow_timer_stream: args.flow_timer_tcp,
                    flow_timer_udp: args.flow_timer_udp,
                    message_timeout: Duration::from_secs(args.tcp_message_timeout),
                },
                options_pbx: args.options_pbx.into(),
                tls: args.tls_cert.clone().zip(args.tls_key.clone()),
                state: edge::StateLimits {
                    pending_dialogs: args.max_pending_dialogs,
                    pending_dialog_bytes: args.max_pending_dialog_bytes,
                    pending_registers: args.max_pending_registers,
                    pending_register_bytes: args.max_pending_register_bytes,
                },
                shield: shield_settings(args)?,
                ws: edge::WsConfig {
                    listen: args.ws_listen.clone(),
                    listen_secure: args.wss_listen.clone(),
                    origins: args
                        .ws_origin
                        .iter()
                        .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                        .filter(|o| !o.is_empty())
                        .collect(),
                    ping_interval: Duration::from_secs(args.ws_ping_interval),
                },
            };
            cfg.check()?;
            Some(cfg)
        }
        (Mode::Edge, None) => bail!("edge mode needs --upstream PBX_ADDR"),
        (Mode::Offload, Some(_)) => bail!("--upstream only applies to edge mode"),
        (Mode::Offload, None) => None,
    })
}

/// `run`'s flags as a command of their own: the configuration's keys.
pub fn command() -> clap::Command {
    let mut cmd = <RunArgs as Args>::augment_args(clap::Command::new("run").no_binary_name(true));
    cmd.build();
    cmd
}

/// The arguments from merged layers, and what the daemon takes from them.
pub(super) fn resolve(
    cmd: &clap::Command,
    flags: &BTreeMap<String, settings::Raw>,
    file: &settings::FileValues,
    live: &BTreeMap<String, settings::Raw>,
) -> Result<(RunArgs, control::Derived)> {
    let eff = settings::resolve(cmd, flags, file, live)?;
    let args = <RunArgs as clap::FromArgMatches>::from_arg_matches(&eff.matches)?;
    let derived = control::Derived {
        entries: eff.entries,
        edge: edge_config(&args)?,
        sip_ports: args.sip_ports.clone(),
        log_level: args.log_level.into(),
        dialog_idle_timeout: args.dialog_idle_timeout,
        shield: shield_settings(&args)?,
    };
    Ok((args, derived))
}

/// Reads and checks a configuration file.
pub(super) fn read_file(cmd: &clap::Command, path: &Path) -> Result<settings::FileValues> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    settings::parse_file(cmd, &text)
        .map_err(|e| anyhow::anyhow!("config file {}:\n{e}", path.display()))
}

/// `--options-pbx`: the clap face of [`edge::OptionsPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptionsPbx {
    /// The edge answers for the PBX: 200 while it is up, 503 while down.
    Answer,
    /// Forwarded to the PBX like any request.
    Forward,
}

impl From<OptionsPbx> for edge::OptionsPolicy {
    fn from(o: OptionsPbx) -> Self {
        match o {
            OptionsPbx::Answer => edge::OptionsPolicy::Answer,
            OptionsPbx::Forward => edge::OptionsPolicy::Forward,
        }
    }
}
