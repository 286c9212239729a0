//! Edge mode: a SIP edge proxy in front of the PBX.
//!
//! * [`config`]: what the edge is told; [`state`]: the [`Edge`] itself.
//! * [`transport`]: flows (UDP sockets, connections) and flow tokens;
//!   [`transport::udp`] and [`transport::stream`] (TCP/TLS) serve the
//!   sockets, [`transport::ws`] browser phones over WebSocket,
//!   [`transport::retransmit`] the UDP leg of stream UAs.
//! * [`proxy`]: what happens to one message (answer, forward, drop).
//! * [`forward`]: stateless forwarding rules (RFC 3261 16.11, RFC 3581).
//! * [`keepalive`]: the requests the edge answers itself;
//!   [`options_fast`]: the answer to an OPTIONS ping to the edge, straight
//!   from the datagram's bytes;
//!   [`ms_keepalive`]: the ms-keep-alive negotiation on streams.
//! * [`dialog`]: INVITE dialogs, mirrored into the DIALOGS map.
//! * [`persist`]: the dialog table on disk, for a restart.
//! * [`upstream`]: OPTIONS pings to the PBX, up/down and RTT.
//! * [`session_timer`]: RFC 4028 in the proxy role.
//! * [`bindings`]: registered Contacts and their flows.
//! * [`store`]: dialogs, bindings and the flow-token key shared with
//!   other edges through Redis.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::net::{TcpListener, UdpSocket};

use crate::{responder::Shared, util::clock};

pub mod bindings;
pub mod config;
pub mod dialog;
pub mod evidence;
pub mod forward;
mod hop;
pub mod keepalive;
mod live;
pub mod ms_keepalive;
pub mod options_fast;
pub mod persist;
pub mod proxy;
pub mod session_timer;
pub mod state;
pub mod store;
pub mod transport;
pub mod upstream;

#[cfg(test)]
mod stamp_tests;
#[cfg(test)]
pub(crate) mod timer_tests;

pub use config::{
    DialogOptions, EdgeConfig, OptionsPolicy, StateLimits, StreamConfig, Tunables, WsConfig,
};
use dialog::DialogSink;
pub use state::{log_counters, stats_values, Counters, Edge};

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
    let mut ws_listeners = Vec::new();
    for (addrs, secure) in [(&cfg.ws.listen, false), (&cfg.ws.listen_secure, true)] {
        for addr in addrs {
            let scheme = if secure { "wss" } else { "ws" };
            let tcp = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the edge to {scheme}/{addr}"))?;
            ws_listeners.push((tcp, *addr, secure));
        }
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
        Some((cert, key)) => Some(transport::tls::acceptor(cert, key)?),
        None => None,
    };
    let mut edge = Edge::with_options(cfg, &opts, sink, responder, clock::now_ms())?;
    edge.tls = tls;
    edge.shield = opts.shield.clone();
    let store = match &opts.store {
        Some(sc) => Some(store::start::attach(&mut edge, sc, opts.state_dir.as_deref()).await?),
        None => None,
    };
    let edge = Arc::new(edge);
    if let Some((client, store)) = store {
        store::watch::spawn(edge.clone(), store, client);
    }
    let socks: Vec<Arc<UdpSocket>> = socks.into_iter().map(Arc::new).collect();
    for sock in &socks {
        let local = sock.local_addr()?;
        log::info!("edge on udp/{local} -> upstream {}", edge.cfg.upstream);
        edge.transports.add_udp(sock.clone(), local);
        tokio::spawn(transport::udp::serve_udp(sock.clone(), edge.clone()));
    }
    for (tcp, local) in listeners {
        let tls = if edge.tls.is_some() { " and tls" } else { "" };
        log::info!("edge on tcp{tls}/{local}");
        tokio::spawn(transport::stream::serve_tcp(tcp, local, edge.clone()));
    }
    for (tcp, local, secure) in ws_listeners {
        log::info!("edge on {}/{local}", if secure { "wss" } else { "ws" });
        tokio::spawn(transport::ws::serve_ws(tcp, local, edge.clone(), secure));
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
                || edge.tun().qualify_frequency,
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
                let swept = edge.dialogs().sweep(clock::now_ms());
                if swept > 0 {
                    log::info!("edge: {swept} stale dialog(s) dropped");
                }
                let expired = edge.bindings.sweep(clock::now_ms());
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
        let now = clock::now_ms();
        for (bytes, dest) in edge.expire(now, clock::monotonic_ns(), local) {
            if let Err(e) = edge.transports.send(bytes, &dest, local) {
                log::debug!("edge: BYE to {dest:?}: {e:?}");
            }
        }
        let next = edge.dialogs().next_deadline_ms();
        let wait = next.map_or(EXPIRY_TICK, |at| {
            Duration::from_millis(at.saturating_sub(clock::now_ms())).min(EXPIRY_TICK)
        });
        tokio::time::sleep(wait).await;
    }
}

/// Sends the retransmissions of [`retransmit`] when due (at most
/// [`EXPIRY_TICK`] late; T1 is 500 ms).
async fn retransmit_loop(edge: Arc<Edge>) {
    loop {
        for (bytes, dest, local) in edge.retransmits.due(clock::now_ms()) {
            Counters::bump(&edge.counters.retransmissions);
            if let Err(e) = edge
                .transports
                .send(bytes, &transport::Flow::Udp(dest), local)
            {
                log::debug!("edge: retransmission to {dest}: {e:?}");
            }
        }
        let wait = edge.retransmits.next_due_ms().map_or(EXPIRY_TICK, |at| {
            Duration::from_millis(at.saturating_sub(clock::now_ms())).min(EXPIRY_TICK)
        });
        tokio::time::sleep(wait).await;
    }
}
