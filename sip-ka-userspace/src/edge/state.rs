//! The edge's shared state: configuration, dialog table, flows,
//! retransmissions, bindings, the PBX's health and the counters.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
};

use anyhow::{Context as _, Result};

use super::{
    bindings::Bindings,
    config::{DialogOptions, EdgeConfig},
    dialog::{DialogSink, Dialogs},
    persist,
    session_timer::SessionTimers,
    store::Store,
    transport::{retransmit::Retransmits, Flow, FlowToken, Transports},
    upstream::Health,
};
pub use crate::bpf::stats::edge::Counters;
use crate::{responder::Shared, util::lock::lock};

/// The edge's shared state.
pub struct Edge {
    /// As started; the values that change live are read from `live`.
    pub cfg: EdgeConfig,
    pub live: std::sync::RwLock<super::config::Tunables>,
    pub dialogs: Mutex<Dialogs>,
    pub health: Health,
    pub counters: Counters,
    /// UDP sockets and connections.
    pub transports: Transports,
    /// Requests from stream UAs retransmitted on the UDP leg.
    pub retransmits: Retransmits,
    /// Registered Contacts and the flows they registered by.
    pub bindings: Bindings,
    /// Set when the edge serves TLS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Answers CRLF and STUN that reach the SIP sockets.
    pub responder: Option<Arc<Shared>>,
    /// The state shared with other edges (`--state-store`).
    pub store: Option<Arc<Store>>,
    /// Evidence against sources and the bans in force (`--shield`).
    pub shield: Option<Arc<crate::shield::Shield>>,
}

impl Edge {
    /// An edge whose clocks start at `now_ms`.
    pub fn new(
        cfg: EdgeConfig,
        sink: Box<dyn DialogSink>,
        responder: Option<Arc<Shared>>,
        now_ms: u64,
    ) -> Edge {
        let timers = SessionTimers::new(cfg.timers, cfg.reap_expired, now_ms);
        let mut dialogs = Dialogs::with_timers(sink, timers);
        dialogs.set_pending_limits(cfg.state.pending_dialogs, cfg.state.pending_dialog_bytes);
        let bindings = Bindings::with_limits(
            cfg.state.pending_registers,
            cfg.state.pending_register_bytes,
        );
        Edge {
            live: std::sync::RwLock::new(cfg.tunables()),
            cfg,
            dialogs: Mutex::new(dialogs),
            health: Health::default(),
            counters: Counters::default(),
            transports: Transports::default(),
            tls: None,
            retransmits: Retransmits::default(),
            bindings,
            responder,
            store: None,
            shield: None,
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
        now: u64,
    ) -> Result<Edge> {
        let mut edge = Edge::new(cfg, sink, responder, now);
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
        edge.transports.tokens = match &opts.state_dir {
            // Path and Record-Route tokens stored by the PBX must still
            // decode after a restart: the key lives with the dialogs.
            Some(dir) => FlowToken::load_or_create(dir)
                .with_context(|| format!("flow-token key in {}", dir.display()))?,
            None => FlowToken::with_key(&FlowToken::random_key()?),
        };
        Ok(edge)
    }

    pub fn dialogs(&self) -> std::sync::MutexGuard<'_, Dialogs> {
        lock(&self.dialogs)
    }

    /// Copies the tables' eviction totals into the counters: the tables
    /// count under their own locks, which the hot path already holds, so
    /// the counters are brought up to date only when they are read.
    pub fn sync_table_counters(&self) {
        let dialogs = self.dialogs().pending_evicted();
        self.counters
            .dialogs_pending_evicted
            .store(dialogs, Ordering::Relaxed);
        self.counters
            .registers_pending_evicted
            .store(self.bindings.pending_evicted(), Ordering::Relaxed);
        if let Some(store) = &self.store {
            let c = &self.counters;
            let s = &store.stats;
            let replicas = self.dialogs().replicas_len() as u64;
            for (to, from) in [
                (&c.store_writes, &s.writes),
                (&c.store_write_failures, &s.write_failures),
                (&c.store_queue_dropped, &s.queue_dropped),
                (&c.store_disconnects, &s.disconnects),
                (&c.dialogs_claimed, &s.claimed),
                (&c.dialogs_released, &s.released),
                (&c.dialogs_replicated, &s.replicated),
            ] {
                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            c.store_up
                .store(u64::from(store.is_up()), Ordering::Relaxed);
            c.dialog_replicas.store(replicas, Ordering::Relaxed);
        }
    }

    /// Bindings a REGISTER's answer changed, for the other edges.
    pub fn share_bindings(&self, changes: Vec<super::bindings::Change>) {
        if let Some(store) = &self.store {
            store.send_bindings(changes);
        }
    }

    /// A message of a dialog another edge owned arrived here: the dialog
    /// is this edge's from now on (see [`Dialogs::take_over`]).
    pub fn take_over(&self, msg: &crate::sip::SipMessage, now_ms: u64) {
        if self.store.is_none() {
            return;
        }
        if self.dialogs().take_over(msg, now_ms) {
            tracing::info!(
                target: "sip_ka::edge::store",
                call_id = msg.call_id(),
                "edge: dialog taken over from another edge (its traffic came here)"
            );
        }
    }
}

impl Edge {
    /// Expires the sessions due at `now_ms`: counted, logged, and with
    /// `--reap-expired` the BYEs to send (with our Via) are returned.
    /// `mono_ns` is CLOCK_MONOTONIC at the same instant (the XDP
    /// program's keep-alive times are on it).
    pub fn expire(&self, now_ms: u64, mono_ns: u64, local: SocketAddr) -> Vec<(Vec<u8>, Flow)> {
        let (ended, idle) = {
            let mut d = self.dialogs();
            let ended = d.expire(now_ms, self.cfg.upstream, local);
            let idle = d.expire_idle(
                now_ms,
                mono_ns,
                self.tun().reap_expired,
                self.cfg.upstream,
                local,
            );
            (ended, idle)
        };
        let mut out = Vec::new();
        for e in idle {
            Counters::bump(&self.counters.dialogs_idle_ended);
            tracing::info!(
                call_id = %e.call_id,
                "edge: dialog idle for {} s, ended{}",
                e.interval,
                if e.byes.is_empty() {
                    ""
                } else {
                    " with a BYE to both sides"
                },
            );
            for (bye, dest) in e.byes {
                out.push((bye.to_bytes(), dest));
            }
        }
        for e in ended {
            Counters::bump(&self.counters.sessions_expired);
            tracing::info!(
                call_id = %e.call_id,
                "edge: session expired ({} s without refresh)",
                e.interval
            );
            if !self.tun().reap_expired {
                continue;
            }
            Counters::bump(&self.counters.sessions_reaped);
            tracing::info!(
                call_id = %e.call_id,
                "edge: reaping expired call: BYE to both sides"
            );
            for (bye, dest) in e.byes {
                out.push((bye.to_bytes(), dest));
            }
        }
        out
    }
}

/// The values of the edge block of STATS, in the order of `stats_names`:
/// the counters, then the PBX's state (1 up, 0 down or not yet known) and
/// its last round-trip time in microseconds (0 when unknown).
pub fn stats_values(edge: &Edge) -> Vec<u64> {
    edge.sync_table_counters();
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

/// Logs the counters (at exit).
pub fn log_counters(edge: &Edge) {
    edge.sync_table_counters();
    let parts: Vec<String> = edge
        .counters
        .snapshot()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let st = edge.health.status();
    log::info!(
        "edge: {} live dialog(s), {} binding(s); upstream {} rtt={}; {}",
        edge.dialogs().len(),
        edge.bindings.len(),
        crate::logs::up_down(st.up),
        crate::logs::millis(st.rtt),
        parts.join(" ")
    );
}
