//! `sip-ka run`: load, attach, serve, and clean up on SIGINT/SIGTERM.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray};
use sip_ka_common::{
    maps::{
        MAP_BANS, MAP_BANS_GEN, MAP_CONFIG, MAP_DAEMON_STATS, MAP_DIALOGS, MAP_SIP_PORTS,
        MAP_STATS, PROGRAM_NAME,
    },
    Config,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use super::{
    control,
    run_args::{command, read_file, resolve, shield_settings, OnOff},
    settings,
};
use crate::{
    bpf::attach,
    bpf::config_keys,
    bpf::load,
    bpf::pins,
    bpf::stats::StatsMaps,
    edge,
    responder::{self, Shared},
    shield::{self, Prefix, Shield},
    util::lock::lock,
};

/// `sip-ka run`, from its command line (which flags were typed matters:
/// they override the file).
pub fn run(matches: &clap::ArgMatches) -> Result<()> {
    let cmd = command();
    let flags = settings::flags_given(&cmd, matches);
    let file_path = matches.get_one::<PathBuf>("config").cloned();
    let file = match &file_path {
        Some(path) => read_file(&cmd, path)?,
        None => settings::FileValues::default(),
    };
    let (args, derived) = resolve(&cmd, &flags, &file, &Default::default())?;
    let rust_log = crate::logs::init(args.log_level.into(), args.log_format);
    let edge_cfg = derived.edge;
    if let Some(cfg) = &edge_cfg {
        raise_file_limit(cfg.streams.max_conns);
    }
    // With --xdp off nothing is attached, even if --iface is given.
    let iface = match (&args.iface, args.xdp) {
        (_, OnOff::Off) => None,
        (Some(i), OnOff::On) => Some(i.clone()),
        (None, OnOff::On) => bail!("--iface is required (or --xdp off)"),
    };

    let pin_dir = args.pin.pin_dir.clone();
    // Before any map or link is touched: one daemon per pin directory (a
    // second one would replace the running one's program and unpin its
    // maps on its way out), and an interface that exists.
    let _lock = pins::PinLock::acquire(&pin_dir)?;
    if let Some(iface) = &iface {
        attach::check_iface(iface)?;
        if let (Some(upstream), false) = (args.upstream, args.trust_upstream_source) {
            for warning in crate::bpf::route::check_upstream(upstream, iface)? {
                log::warn!("{warning}");
            }
        }
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
    let pinned = cfg;
    for (k, v) in &file.fast {
        config_keys::set(&mut cfg, k, v)?;
    }
    cfg.initialised = 1;
    cfg.tick_ns = crate::util::clock::tick_ns();

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

    let mut stats_map = StatsMaps {
        kernel: PerCpuArray::try_from(bpf.take_map(MAP_STATS).context("STATS map missing")?)?,
        daemon: Array::try_from(
            bpf.take_map(MAP_DAEMON_STATS)
                .context("DAEMON_STATS map missing")?,
        )?,
    };

    let pins = pins::Pins::new(&pin_dir);
    let link_path = iface.as_ref().map(|i| pins.link_path(i));
    let mut attached = None;
    if let (Some(iface), Some(link_path)) = (&iface, &link_path) {
        let how = attach::attach(
            &mut bpf,
            PROGRAM_NAME,
            iface,
            args.xdp_mode.into(),
            link_path,
        )?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        log::info!(
            "XDP program on {iface}: {how}; SIP ports {}",
            ports.join(", ")
        );
        attached = Some(how);
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
    // The shield: bans for every mode (lists, by hand, other edges'),
    // evidence in edge mode. Never the PBX or this host.
    let bans_map = shield::writer::BansMap::new(
        LpmTrie::try_from(bpf.take_map(MAP_BANS).context("BANS map missing")?)?,
        Array::try_from(bpf.take_map(MAP_BANS_GEN).context("BANS_GEN map missing")?)?,
    );
    let settings = match &edge_cfg {
        Some(c) => c.shield.clone(),
        None => shield_settings(&args)?,
    };
    let mut spared: Vec<Prefix> = crate::bpf::iface::host_addresses()
        .into_iter()
        .chain(args.listen.iter().map(|a| a.ip()))
        .chain(args.upstream.map(|a| a.ip()))
        .map(Prefix::host)
        .collect();
    spared.dedup();
    let shield = Shield::new(settings.policy.clone(), spared);
    shield.configure(&settings);
    let dialog_opts = edge::DialogOptions {
        shield: edge_cfg.is_some().then(|| shield.clone()),
        state_dir: Some(
            args.state_dir
                .clone()
                .unwrap_or_else(|| edge::persist::default_state_dir(&pin_dir)),
        ),
        idle_timeout: (args.dialog_idle_timeout > 0)
            .then(|| Duration::from_secs(args.dialog_idle_timeout)),
        store: match &args.state_store {
            Some(url) => Some(edge::store::StoreConfig::new(
                url,
                &args
                    .node_id
                    .clone()
                    .unwrap_or_else(edge::store::default_node_id),
            )?),
            None => None,
        },
    };

    let prog_id = attached
        .as_ref()
        .and_then(|_| bpf.program(PROGRAM_NAME)?.info().ok())
        .map(|i| i.id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let shared = Shared::with_bans(cfg, shield.table.clone());
    let state = control::State {
        fast_src: config_keys::KEYS
            .iter()
            .map(|(k, _)| {
                let src = control::fast_source(k, &file, &pinned, iface.is_some());
                (k.to_string(), src)
            })
            .collect(),
        flags,
        file,
        live: Default::default(),
        entries: derived.entries,
        dialog_idle_timeout: args.dialog_idle_timeout,
    };
    let result = rt.block_on(async {
        let logger = aya_log::EbpfLogger::init(&mut bpf);
        match logger {
            Ok(logger) => {
                tokio::spawn(forward_logs(logger));
            }
            Err(e) => log::warn!("aya-log: {e}; XDP program logs are not forwarded"),
        }
        // Bans a previous run left in BANS and the lists, before serving.
        // With a store, bans are shared: the announcer takes the edge's
        // store once the edge has started.
        let announcer = Arc::new(edge::store::bans::Announcer::default());
        let announce = (edge_cfg.is_some() && dialog_opts.store.is_some())
            .then(|| announcer.clone() as Arc<dyn shield::writer::Announce>);
        let mut writer = shield::writer::Writer::new(shield.clone(), Some(bans_map), announce);
        writer.start();
        if let Some(changes) = shield.take_changes() {
            tokio::spawn(shield::writer::run(writer, changes));
        }
        log::info!(
            "shield: {} ban(s) in force; evidence {}",
            shield.table.len(),
            if settings.policy.enabled { "on" } else { "off" }
        );
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
        if let Some(store) = edge.as_ref().and_then(|e| e.store.clone()) {
            announcer.attach(store);
        }
        if let Some(addr) = args.metrics {
            let sources = crate::metrics::Sources {
                fast_path: Some(Box::new(crate::metrics::PinnedMaps::open(&pin_dir)?)),
                responder: Some(shared.clone()),
                edge: edge.clone(),
                shield: Some(shield.clone()),
                build: crate::metrics::BuildInfo {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    xdp_mode: crate::metrics::xdp_mode_label(attached.as_deref()).to_string(),
                    iface: iface.clone().unwrap_or_default(),
                },
            };
            let local = crate::metrics::start(addr, Arc::new(sources)).await?;
            log::info!("metrics on http://{local}/metrics");
        }
        let daemon = Arc::new(control::Daemon {
            cmd,
            resolve: |cmd, flags, file, live| Ok(resolve(cmd, flags, file, live)?.1),
            file_path,
            rust_log,
            config_map: std::sync::Mutex::new(config_map),
            ports_map: std::sync::Mutex::new(ports_map),
            edge: edge.clone(),
            shield: shield.clone(),
            state: std::sync::Mutex::new(state),
            identity: super::history::Identity {
                pid: std::process::id(),
                iface: iface.clone(),
                xdp_mode: crate::metrics::xdp_mode_label(attached.as_deref()).to_string(),
                prog_id,
                mode: if edge.is_some() { "edge" } else { "offload" }.to_string(),
            },
            started: std::time::Instant::now(),
            history: Default::default(),
        });
        let sock = control::bind(&pin_dir)?;
        tokio::spawn(control::serve(sock, daemon.clone()));
        // Handlers first: a SIGTERM right after "ready" must run the exit
        // path, not kill the daemon with its pins in place.
        let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut hup = tokio::signal::unix::signal(SignalKind::hangup())?;
        start_pins.keep();
        println!("sip-ka: ready (pins in {})", pin_dir.display());
        use std::io::Write as _;
        std::io::stdout().flush().ok();
        // The program is attached and the edge's sockets are bound: a
        // Type=notify unit starts its dependants from here.
        let status = format!("ready (pins in {})", pin_dir.display());
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);

        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    shield.reload_lists();
                    let d = daemon.clone();
                    let _ = tokio::task::spawn_blocking(move || d.reload()).await;
                }
                _ = tick.tick() => {
                    housekeeping(&lock(&daemon.config_map), &mut stats_map, &shared);
                    publish_edge(edge.as_ref(), &mut stats_map);
                    daemon.sample(&stats_map);
                }
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        housekeeping(&lock(&daemon.config_map), &mut stats_map, &shared);
        publish_edge(edge.as_ref(), &mut stats_map);
        let _ = std::fs::remove_file(control::socket_path(&pin_dir));
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

/// Descriptors the edge needs beside its connections: sockets, maps, the
/// journal, the control and metrics listeners.
const FD_MARGIN: u64 = 256;

/// Raises the soft limit on open files to the hard one (systemd's default
/// soft limit, 1024, would stop the edge far below --max-connections:
/// accept fails with EMFILE and the phones' handshakes hang), and says so
/// when even the hard limit is below what `max_conns` needs.
fn raise_file_limit(max_conns: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::warn!(
            "reading the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let want = max_conns as u64 + FD_MARGIN;
    if lim.rlim_cur < want {
        log::warn!(
            "open-file limit {} is below --max-connections {max_conns} + {FD_MARGIN}: \
             connections past it are not accepted; raise LimitNOFILE (systemd) or ulimit -n",
            lim.rlim_cur
        );
    } else {
        log::info!("open-file limit {}", lim.rlim_cur);
    }
}

/// Tells the service manager (systemd's $NOTIFY_SOCKET, when set) how the
/// daemon is doing. A manager that cannot be told is no reason to stop
/// answering keep-alives: the failure is logged only.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("telling the service manager (NOTIFY_SOCKET): {e}");
    }
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
        let left_out: Vec<String> = left_out.iter().map(|a| a.to_string()).collect();
        log::warn!(
            "{iface}: broadcast addresses not refused by the fast path: {}",
            left_out.join(", ")
        );
    }
    log::info!(
        "{iface}: answering frames to {} only; broadcasts {}",
        config_keys::get(cfg, "own_mac")?,
        config_keys::get(cfg, "broadcast_v4")?
    );
    Ok(())
}

/// Refreshes the responder's view of CONFIG and publishes its counters.
fn housekeeping(config_map: &Array<MapData, Config>, stats: &mut StatsMaps, shared: &Arc<Shared>) {
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
fn publish_edge(edge: Option<&std::sync::Arc<edge::Edge>>, stats: &mut StatsMaps) {
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
