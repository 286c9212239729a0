//! Edge mode: a SIP edge proxy in front of the PBX.
//!
//! * [`transport`]: flows (UDP sockets, connections) and flow tokens.
//! * [`stream`]: TCP connections from UAs: framing, CRLF pongs, limits.
//! * [`proxy`]: what happens to one message (answer, forward, drop).
//! * [`forward`]: stateless forwarding rules (RFC 3261 16.11, RFC 3581).
//! * [`keepalive`]: the requests the edge answers itself.
//! * [`dialog`]: INVITE dialogs, mirrored into the DIALOGS map.
//! * [`persist`]: the dialog table on disk, for a restart.
//! * [`upstream`]: OPTIONS pings to the PBX, up/down and RTT.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};

use crate::{
    responder::Shared,
    session_timer::{SessionTimers, TimerConfig},
    sip::Limits,
};

pub mod bindings;
pub mod dialog;
pub mod forward;
pub mod keepalive;
pub mod persist;
pub mod proxy;
pub mod retransmit;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod upstream;

#[cfg(test)]
mod timer_tests;

use dialog::{DialogSink, Dialogs};
use upstream::Health;

/// What `sip-ka run --mode edge` was told.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// UDP addresses the edge listens on (specific IPs: they go into Via
    /// and Record-Route).
    pub listen: Vec<SocketAddr>,
    /// The PBX.
    pub upstream: SocketAddr,
    /// Seconds between OPTIONS pings to the PBX.
    pub qualify_frequency: Duration,
    pub limits: Limits,
    /// RFC 4028 settings (Min-SE floor, Session-Expires to insert).
    pub timers: TimerConfig,
    /// Send BYE to both sides when a session expires.
    pub reap_expired: bool,
    /// Connection limits, keep-alive timers.
    pub streams: StreamConfig,
    /// What happens to OPTIONS outside a dialog meant for the PBX.
    pub options_pbx: OptionsPolicy,
    /// Certificate chain and key (PEM): TLS on the TCP ports.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// OPTIONS outside a dialog, addressed to the PBX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OptionsPolicy {
    /// The edge answers for the PBX: 200 while it is up, 503 while down.
    #[default]
    Answer,
    /// Forwarded to the PBX like any request.
    Forward,
}

/// TCP/TLS connections from UAs.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_conns: usize,
    /// Most connections open at once from one IP address.
    pub max_conns_per_ip: usize,
    /// `timeout=` in an ms-keep-alive answer, in seconds.
    pub ms_keepalive_timeout: u32,
    /// Flow-Timer put on a 2xx to an outbound REGISTER over TCP/TLS.
    pub flow_timer_stream: u32,
    /// Flow-Timer for an outbound REGISTER over UDP (NAT bindings are
    /// short-lived).
    pub flow_timer_udp: u32,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            idle_timeout: Duration::from_secs(300),
            max_conns: 10_000,
            max_conns_per_ip: 64,
            ms_keepalive_timeout: 120,
            flow_timer_stream: 120,
            flow_timer_udp: 29,
        }
    }
}

/// A configuration for unit tests: one listen address, defaults
/// elsewhere (every field is named here once, not in each test).
#[cfg(test)]
pub(crate) fn test_config(listen: SocketAddr, upstream: SocketAddr) -> EdgeConfig {
    EdgeConfig {
        listen: vec![listen],
        upstream,
        qualify_frequency: Duration::from_secs(1),
        limits: Limits::default(),
        timers: TimerConfig::default(),
        reap_expired: false,
        streams: StreamConfig::default(),
        options_pbx: OptionsPolicy::default(),
        tls: None,
    }
}

impl EdgeConfig {
    pub fn check(&self) -> Result<()> {
        if self.listen.is_empty() {
            bail!("edge mode needs at least one --listen ADDR");
        }
        if let Some(a) = self
            .listen
            .iter()
            .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            bail!("--listen {a}: edge mode needs a specific IP and port (they go into Via and Record-Route)");
        }
        if self.qualify_frequency.is_zero() {
            bail!("--qualify-frequency must be at least 1 second");
        }
        if self.limits.max_message_size < 512 || self.limits.max_headers < 8 {
            bail!("--max-message-size must be at least 512 and --max-headers at least 8");
        }
        let st = &self.streams;
        if st.idle_timeout.is_zero() || st.max_conns == 0 || st.max_conns_per_ip == 0 {
            bail!("--tcp-idle-timeout, --max-connections and --max-connections-per-ip must be at least 1");
        }
        if st.idle_timeout.as_secs() <= u64::from(st.flow_timer_stream) {
            bail!(
                "--tcp-idle-timeout ({} s) must be longer than --flow-timer-tcp ({} s): \
                 outbound UAs send a keep-alive only every Flow-Timer seconds",
                st.idle_timeout.as_secs(),
                st.flow_timer_stream
            );
        }
        if st.ms_keepalive_timeout == 0 || st.flow_timer_stream == 0 || st.flow_timer_udp == 0 {
            bail!("--ms-keep-alive-timeout and --flow-timer-* must be at least 1 second");
        }
        Ok(())
    }

    /// Retry-After for a 503 while the PBX is down: the next ping.
    pub fn retry_after(&self) -> u64 {
        self.qualify_frequency.as_secs().max(1)
    }
}

macro_rules! counters {
    ($($name:ident: $doc:literal,)*) => {
        /// What the edge did, for the logs.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Counter names in order (`sip-ka stats` prints them with an
            /// `edge_` prefix, after them `edge_pbx_up` and `edge_pbx_rtt_us`).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    requests_forwarded: "Requests sent on (either direction).",
    responses_forwarded: "Responses sent on (either direction).",
    ka_in_dialog_ok: "In-dialog keep-alives answered 200.",
    ka_unknown_dialog: "In-dialog keep-alives answered 481.",
    options_edge: "OPTIONS to the edge answered 200.",
    options_pbx_up: "OPTIONS for the PBX answered 200 (PBX up).",
    options_pbx_down: "OPTIONS for the PBX answered 503 (PBX down).",
    bad_requests: "Malformed requests answered 400 (or 505/513).",
    too_many_hops: "Requests answered 483.",
    loops: "Requests answered 482.",
    unroutable: "Requests from the PBX with no UA address (answered 404).",
    dropped: "Datagrams dropped: unanswerable garbage, responses not ours.",
    acks_absorbed: "ACKs for final responses the edge generated (not forwarded).",
    other: "CRLF/STUN datagrams handed to the keep-alive responder.",
    crlf_pings: "CRLFCRLF pings on connections, answered CRLF.",
    conns_accepted: "TCP/TLS connections accepted.",
    conns_refused: "Connections refused (--max-connections, per IP).",
    conns_idle_closed: "Connections closed after their idle time.",
    stream_errors: "Connections closed because framing was lost (bad Content-Length, oversize).",
    flow_failed: "Requests answered 430 or responses dropped: the UA's connection is gone.",
    ms_keepalive_negotiated: "ms-keep-alive offers accepted on a connection.",
    ms_keepalive_bad: "ms-keep-alive headers repeated or malformed (not negotiated).",
    registers_outbound: "Outbound REGISTERs given a Path with a flow token.",
    timer_rejects: "Refresh requests answered 422 (Min-SE) or 481 (session expired).",
    sessions_expired: "Dialogs whose session timer expired (dropped).",
    sessions_reaped: "Expired dialogs ended with a BYE to both sides (--reap-expired).",
    dialogs_idle_ended: "Confirmed dialogs ended after --dialog-idle-timeout without in-dialog traffic.",
    dialogs_restored: "Dialogs read back from the state directory at start.",
    retransmissions: "Requests from TCP/TLS UAs retransmitted to the PBX over UDP.",
}

/// What the edge keeps about dialogs beyond the proxy settings.
#[derive(Clone, Debug, Default)]
pub struct DialogOptions {
    /// Where the dialog table is journaled (`--state-dir`); `None` keeps
    /// it in memory only.
    pub state_dir: Option<PathBuf>,
    /// `--dialog-idle-timeout`: a confirmed dialog with no in-dialog
    /// traffic for this long is ended; `None` never.
    pub idle_timeout: Option<Duration>,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The edge's shared state.
pub struct Edge {
    pub cfg: EdgeConfig,
    pub dialogs: Mutex<Dialogs>,
    pub health: Health,
    pub counters: Counters,
    /// UDP sockets and connections.
    pub transports: transport::Transports,
    /// Requests from stream UAs retransmitted on the UDP leg.
    pub retransmits: retransmit::Retransmits,
    /// Registered Contacts and the flows they registered by.
    pub bindings: bindings::Bindings,
    /// Set when the edge serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Answers CRLF and STUN that reach the SIP sockets.
    pub responder: Option<Arc<Shared>>,
}

impl Edge {
    pub fn new(cfg: EdgeConfig, sink: Box<dyn DialogSink>, responder: Option<Arc<Shared>>) -> Edge {
        let timers = SessionTimers::new(cfg.timers, cfg.reap_expired, dialog::now_ms());
        Edge {
            cfg,
            dialogs: Mutex::new(Dialogs::with_timers(sink, timers)),
            health: Health::default(),
            counters: Counters::default(),
            transports: transport::Transports::default(),
            tls: None,
            retransmits: retransmit::Retransmits::default(),
            bindings: bindings::Bindings::default(),
            responder,
        }
    }

    /// [`Edge::new`] with an idle limit and a state directory: the
    /// dialogs a previous run journaled there are restored (their session
    /// timers resumed from their absolute expiries, the mirror
    /// reconciled) before the edge handles anything.
    pub fn with_options(
        cfg: EdgeConfig,
        opts: &DialogOptions,
        sink: Box<dyn DialogSink>,
        responder: Option<Arc<Shared>>,
    ) -> Result<Edge> {
        let mut edge = Edge::new(cfg, sink, responder);
        let now = dialog::now_ms();
        // Connection ids never repeat across restarts, so a token of a
        // connection an earlier process had never names a new one.
        edge.transports.first_id(now.saturating_mul(1024));
        {
            let mut d = edge.dialogs();
            d.set_idle_timeout(opts.idle_timeout, now);
            if let Some(dir) = &opts.state_dir {
                let (journal, loaded) = persist::Journal::open(dir)?;
                let (restored, refused, stale) = d.restore(loaded.dialogs, now);
                d.set_journal(journal);
                // A fresh snapshot, and no partial line left to append to.
                d.compact();
                edge.counters
                    .dialogs_restored
                    .store(restored as u64, Ordering::Relaxed);
                log::info!(
                    "edge: state in {}: {restored} dialog(s) restored, {} line(s) skipped, \
                     {refused} refused, {stale} stale DIALOGS entr(ies) removed",
                    dir.display(),
                    loaded.skipped
                );
            }
        }
        if let Some(dir) = &opts.state_dir {
            // Path and Record-Route tokens stored by the PBX must still
            // decode after a restart: the key lives with the dialogs.
            edge.transports.tokens = transport::FlowToken::load_or_create(dir)
                .with_context(|| format!("flow-token key in {}", dir.display()))?;
        }
        Ok(edge)
    }

    pub fn dialogs(&self) -> std::sync::MutexGuard<'_, Dialogs> {
        match self.dialogs.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// Binds the listening sockets and starts the edge's tasks; returns once
/// every socket is bound.
pub async fn start(
    cfg: EdgeConfig,
    sink: Box<dyn DialogSink>,
    responder: Option<Arc<Shared>>,
) -> Result<Arc<Edge>> {
    start_with(cfg, DialogOptions::default(), sink, responder).await
}

/// [`start`] with [`DialogOptions`] (state directory, idle limit).
pub async fn start_with(
    cfg: EdgeConfig,
    opts: DialogOptions,
    sink: Box<dyn DialogSink>,
    responder: Option<Arc<Shared>>,
) -> Result<Arc<Edge>> {
    cfg.check()?;
    let mut socks = Vec::new();
    let mut listeners = Vec::new();
    for addr in &cfg.listen {
        let sock = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding the edge to udp/{addr}"))?;
        socks.push(sock);
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the edge to tcp/{addr}"))?;
        listeners.push((tcp, *addr));
    }
    let bind_any: SocketAddr = if cfg.upstream.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let qualify_sock = UdpSocket::bind(bind_any)
        .await
        .context("binding the qualify socket")?;
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let mut edge = Edge::with_options(cfg, &opts, sink, responder)?;
    edge.tls = tls;
    let edge = Arc::new(edge);
    let socks: Vec<Arc<UdpSocket>> = socks.into_iter().map(Arc::new).collect();
    for sock in &socks {
        let local = sock.local_addr()?;
        log::info!("edge on udp/{local} -> upstream {}", edge.cfg.upstream);
        edge.transports.add_udp(sock.clone(), local);
        tokio::spawn(transport::serve_udp(sock.clone(), edge.clone()));
    }
    for (tcp, local) in listeners {
        let tls = if edge.tls.is_some() { " and tls" } else { "" };
        log::info!("edge on tcp{tls}/{local}");
        tokio::spawn(stream::serve_tcp(tcp, local, edge.clone()));
    }
    if let Some(sock) = socks.first() {
        tokio::spawn(session_expiry(sock.local_addr()?, edge.clone()));
    }
    tokio::spawn(retransmit_loop(edge.clone()));
    {
        let edge = edge.clone();
        tokio::spawn(async move {
            upstream::qualify(
                qualify_sock,
                edge.cfg.upstream,
                edge.cfg.qualify_frequency,
                &edge.health,
            )
            .await
        });
    }
    {
        let edge = edge.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let swept = edge.dialogs().sweep(Instant::now());
                if swept > 0 {
                    log::info!("edge: {swept} stale dialog(s) dropped");
                }
                let expired = edge.bindings.sweep(dialog::now_ms());
                if expired > 0 {
                    log::debug!("edge: {expired} registration binding(s) expired");
                }
            }
        });
    }
    Ok(edge)
}

/// Longest sleep between two looks at the session timers.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Expires sessions when due (at most [`EXPIRY_TICK`] late) and, with
/// `--reap-expired`, sends the BYEs from `sock`.
async fn session_expiry(local: SocketAddr, edge: Arc<Edge>) {
    loop {
        let now = dialog::now_ms();
        for (bytes, dest) in edge.expire(now, local) {
            if let Err(e) = edge.transports.send(bytes, &dest, local) {
                log::debug!("edge: BYE to {dest:?}: {e:?}");
            }
        }
        let next = edge.dialogs().next_deadline_ms();
        let wait = next.map_or(EXPIRY_TICK, |at| {
            Duration::from_millis(at.saturating_sub(dialog::now_ms())).min(EXPIRY_TICK)
        });
        tokio::time::sleep(wait).await;
    }
}

/// Sends the retransmissions of [`retransmit`] when due (at most
/// [`EXPIRY_TICK`] late; T1 is 500 ms).
async fn retransmit_loop(edge: Arc<Edge>) {
    loop {
        for (bytes, dest, local) in edge.retransmits.due(dialog::now_ms()) {
            Counters::bump(&edge.counters.retransmissions);
            if let Err(e) = edge
                .transports
                .send(bytes, &transport::Flow::Udp(dest), local)
            {
                log::debug!("edge: retransmission to {dest}: {e:?}");
            }
        }
        let wait = edge.retransmits.next_due_ms().map_or(EXPIRY_TICK, |at| {
            Duration::from_millis(at.saturating_sub(dialog::now_ms())).min(EXPIRY_TICK)
        });
        tokio::time::sleep(wait).await;
    }
}

impl Edge {
    /// Expires the sessions due at `now_ms`: counted, logged, and with
    /// `--reap-expired` the BYEs to send (with our Via) are returned.
    pub fn expire(&self, now_ms: u64, local: SocketAddr) -> Vec<(Vec<u8>, transport::Flow)> {
        let (ended, idle) = {
            let mut d = self.dialogs();
            let ended = d.expire(now_ms, self.cfg.upstream, local);
            let idle = d.expire_idle(
                now_ms,
                crate::clock::monotonic_ns(),
                self.cfg.reap_expired,
                self.cfg.upstream,
                local,
            );
            (ended, idle)
        };
        let mut out = Vec::new();
        for e in idle {
            Counters::bump(&self.counters.dialogs_idle_ended);
            log::info!(
                "edge: dialog idle for {} s, ended{}: Call-ID {}",
                e.interval,
                if e.byes.is_empty() {
                    ""
                } else {
                    " with a BYE to both sides"
                },
                e.call_id
            );
            for (bye, dest) in e.byes {
                out.push((bye.to_bytes(), dest));
            }
        }
        for e in ended {
            Counters::bump(&self.counters.sessions_expired);
            log::info!(
                "edge: session expired ({} s without refresh): Call-ID {}",
                e.interval,
                e.call_id
            );
            if !self.cfg.reap_expired {
                continue;
            }
            Counters::bump(&self.counters.sessions_reaped);
            log::info!(
                "edge: reaping expired call {}: BYE to both sides",
                e.call_id
            );
            for (bye, dest) in e.byes {
                out.push((bye.to_bytes(), dest));
            }
        }
        out
    }
}

/// Logs the counters (at exit).
/// The values of the edge block of STATS, in the order of `stats_names`:
/// the counters, then the PBX's state (1 up, 0 down or not yet known) and
/// its last round-trip time in microseconds (0 when unknown).
pub fn stats_values(edge: &Edge) -> Vec<u64> {
    let mut v: Vec<u64> = edge
        .counters
        .snapshot()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let st = edge.health.status();
    v.push(u64::from(st.up == Some(true)));
    v.push(st.rtt.map_or(0, |d| d.as_micros() as u64));
    v
}

/// Names of the edge block of STATS (`edge_` + counter, `edge_pbx_up`,
/// `edge_pbx_rtt_us`).
pub fn stats_names() -> Vec<String> {
    Counters::NAMES
        .iter()
        .map(|n| format!("edge_{n}"))
        .chain(["edge_pbx_up".to_string(), "edge_pbx_rtt_us".to_string()])
        .collect()
}

pub fn log_counters(edge: &Edge) {
    let parts: Vec<String> = edge
        .counters
        .snapshot()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let st = edge.health.status();
    log::info!(
        "edge: {} live dialog(s); upstream up={:?} rtt={:?}; {}",
        edge.dialogs().len(),
        st.up,
        st.rtt,
        parts.join(" ")
    );
}
