//! `sip-ka run`: load, attach, serve, and clean up on SIGINT/SIGTERM.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use clap::{Args, ValueEnum};
use sip_ka_common::{
    maps::{MAP_CONFIG, MAP_DIALOGS, MAP_SIP_PORTS, MAP_STATS, PROGRAM_NAME},
    Config,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use super::args::{PinDir, XdpModeArg};
use crate::{
    bpf::attach,
    bpf::config_keys,
    bpf::load,
    bpf::pins,
    edge,
    responder::{self, Shared},
};

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
    /// The PBX's address (edge mode).
    #[arg(long)]
    pub upstream: Option<SocketAddr>,
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
    /// Most TCP/TLS connections open at once from one IP address (edge
    /// mode).
    #[arg(long, value_name = "N", default_value_t = 64)]
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
    /// PEM certificate chain: the edge also serves TLS on its TCP ports
    /// (a connection starting with a TLS handshake is TLS). Needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Lab use: allows a Min-SE below 90 s.
    #[arg(long)]
    pub lab: bool,
    /// Config file of `key = value` lines (the keys of `sip-ka config get`).
    #[arg(long)]
    pub config: Option<PathBuf>,
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
    #[command(flatten)]
    pub pin: PinDir,
}

pub fn run(args: RunArgs) -> Result<()> {
    init_logging();
    let edge_cfg = match (args.mode, args.upstream) {
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
            };
            cfg.check()?;
            Some(cfg)
        }
        (Mode::Edge, None) => bail!("edge mode needs --upstream PBX_ADDR"),
        (Mode::Offload, Some(_)) => bail!("--upstream only applies to edge mode"),
        (Mode::Offload, None) => None,
    };
    // With --xdp off nothing is attached, even if --iface is given.
    let iface = match (&args.iface, args.xdp) {
        (_, OnOff::Off) => None,
        (Some(i), OnOff::On) => Some(i.clone()),
        (None, OnOff::On) => bail!("--iface is required (or --xdp off)"),
    };
    let file_cfg = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?,
        ),
        None => None,
    };

    let pin_dir = args.pin.pin_dir.clone();
    // Before any map or link is touched: one daemon per pin directory (a
    // second one would replace the running one's program and unpin its
    // maps on its way out), and an interface that exists.
    let _lock = pins::PinLock::acquire(&pin_dir)?;
    if let Some(iface) = &iface {
        attach::check_iface(iface)?;
    }
    // Until the daemon is ready, a failure removes the pins this start
    // created and nothing else.
    let mut start_pins = pins::StartPins::record(
        &pin_dir,
        iface
            .as_ref()
            .map(|i| pins::Pins::new(&pin_dir).link_path(i)),
    );
    let mut bpf = load::load(&pin_dir, load::aya_log_level())?;

    // Configuration: keep what a previous run left in the pinned map
    // (operators' `config set` survives a restart) unless a file is given.
    let mut config_map: Array<MapData, Config> =
        Array::try_from(bpf.take_map(MAP_CONFIG).context("CONFIG map missing")?)?;
    let mut cfg = pins::read_config(&config_map)?;
    if let Some(text) = &file_cfg {
        config_keys::apply_file(&mut cfg, text)?;
    }
    cfg.initialised = 1;

    // Ports: the command line, else what a previous run left, else 5060.
    let mut ports_map: Array<MapData, u8> = Array::try_from(
        bpf.take_map(MAP_SIP_PORTS)
            .context("SIP_PORTS map missing")?,
    )?;
    let ports = if !args.sip_ports.is_empty() {
        args.sip_ports.clone()
    } else {
        match pins::sip_ports(&cfg) {
            p if p.is_empty() => vec![5060],
            p => p,
        }
    };
    pins::set_sip_ports(&mut ports_map, &mut cfg, &ports)?;
    if let Some(iface) = &iface {
        configure_identity(&mut cfg, iface)?;
    }
    config_map.set(0, cfg, 0)?;
    let ports = pins::sip_ports(&cfg);

    let mut stats_map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(bpf.take_map(MAP_STATS).context("STATS map missing")?)?;

    let pins = pins::Pins::new(&pin_dir);
    let link_path = iface.as_ref().map(|i| pins.link_path(i));
    if let (Some(iface), Some(link_path)) = (&iface, &link_path) {
        let how = attach::attach(
            &mut bpf,
            PROGRAM_NAME,
            iface,
            args.xdp_mode.into(),
            link_path,
        )?;
        log::info!("XDP program on {iface}: {how}; SIP ports {ports:?}");
    } else {
        log::info!(
            "XDP off: maps pinned in {}, nothing attached",
            pin_dir.display()
        );
    }

    // Edge mode owns the DIALOGS map: it mirrors its live dialogs there.
    // What an earlier run left is reconciled with the state directory
    // when the edge starts (entries of restored dialogs kept with their
    // keep-alive counts, the others removed).
    let dialogs_sink: Option<Box<dyn edge::dialog::DialogSink>> = match &edge_cfg {
        Some(_) => {
            let map = HashMap::try_from(bpf.take_map(MAP_DIALOGS).context("DIALOGS map missing")?)?;
            Some(Box::new(edge::dialog::BpfDialogs(map)))
        }
        None => None,
    };
    let dialog_opts = edge::DialogOptions {
        state_dir: Some(
            args.state_dir
                .clone()
                .unwrap_or_else(|| edge::persist::default_state_dir(&pin_dir)),
        ),
        idle_timeout: (args.dialog_idle_timeout > 0)
            .then(|| Duration::from_secs(args.dialog_idle_timeout)),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shared = Shared::new(cfg);
    let result = rt.block_on(async {
        let logger = aya_log::EbpfLogger::init(&mut bpf);
        match logger {
            Ok(logger) => {
                tokio::spawn(forward_logs(logger));
            }
            Err(e) => log::warn!("aya-log: {e}; XDP program logs are not forwarded"),
        }
        let edge = match (edge_cfg, dialogs_sink) {
            (Some(cfg), Some(sink)) => {
                Some(edge::start_with(cfg, dialog_opts, sink, Some(shared.clone())).await?)
            }
            _ => {
                for addr in &args.listen {
                    let (local, socks) = responder::spawn(*addr, shared.clone())
                        .with_context(|| format!("binding the UDP responder to {addr}"))?;
                    log::info!("userspace responder on udp/{local} ({socks} sockets)");
                }
                None
            }
        };
        // Handlers first: a SIGTERM right after "ready" must run the exit
        // path, not kill the daemon with its pins in place.
        let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
        start_pins.keep();
        println!("sip-ka: ready (pins in {})", pin_dir.display());
        use std::io::Write as _;
        std::io::stdout().flush().ok();

        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    housekeeping(&config_map, &mut stats_map, &shared);
                    publish_edge(edge.as_ref(), &mut stats_map);
                }
            }
        }
        housekeeping(&config_map, &mut stats_map, &shared);
        publish_edge(edge.as_ref(), &mut stats_map);
        if let Some(edge) = &edge {
            edge::log_counters(edge);
        }
        anyhow::Ok(())
    });
    drop(rt);
    if !start_pins.kept() {
        // A failed start: `start_pins` takes back what it pinned.
        return result;
    }

    if args.keep_attached {
        log::info!(
            "leaving the program attached and the maps pinned in {}",
            pin_dir.display()
        );
        return result;
    }
    if let Some(link_path) = &link_path {
        attach::detach(link_path)?;
    }
    drop(bpf);
    pins::unpin_all(&pin_dir)?;
    log::info!("detached and unpinned");
    result
}

/// The interface's MAC and IPv4 directed broadcasts into CONFIG, so the
/// program answers only frames sent to this host and never a broadcast.
fn configure_identity(cfg: &mut Config, iface: &str) -> Result<()> {
    let id = crate::bpf::iface::Identity::read(iface)
        .with_context(|| format!("reading the addresses of {iface}"))?;
    let left_out = id.apply(cfg);
    if id.mac.is_none() {
        log::warn!("{iface} has no Ethernet address: the fast path answers nothing");
    }
    if !left_out.is_empty() {
        log::warn!("{iface}: broadcast addresses not refused by the fast path: {left_out:?}");
    }
    log::info!(
        "{iface}: answering frames to {} only; broadcasts {}",
        config_keys::get(cfg, "own_mac")?,
        config_keys::get(cfg, "broadcast_v4")?
    );
    Ok(())
}

/// Refreshes the responder's view of CONFIG and publishes its counters.
fn housekeeping(
    config_map: &Array<MapData, Config>,
    stats: &mut PerCpuArray<MapData, u64>,
    shared: &Arc<Shared>,
) {
    match pins::read_config(config_map) {
        Ok(cfg) => {
            if let Ok(mut c) = shared.config.write() {
                *c = cfg;
            }
        }
        Err(e) => log::warn!("reading CONFIG: {e:#}"),
    }
    if let Err(e) = shared.counters.publish(stats) {
        log::warn!("publishing responder counters: {e:#}");
    }
}

/// Edge mode: its counters and the PBX's state and RTT into STATS, where
/// `sip-ka stats` shows them (`edge_*`).
fn publish_edge(edge: Option<&std::sync::Arc<edge::Edge>>, stats: &mut PerCpuArray<MapData, u64>) {
    if let Some(edge) = edge {
        let values = edge::stats_values(edge);
        if let Err(e) =
            crate::bpf::stats::publish_block(stats, sip_ka_common::counters::EDGE_BASE, &values)
        {
            log::warn!("publishing edge counters: {e:#}");
        }
    }
}

async fn forward_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd for as long as the
    // AsyncFd owns the logger.
    let mut fd = match unsafe { AsyncFd::register(logger) } {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("aya-log: {e}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .try_init();
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
