//! What the daemon tells `sip-ka status`: who it is (pid, uptime,
//! interface, XDP mode, program id, mode) and the last minute of STATS.
//! The daemon keeps the minute because a client that sampled STATS
//! itself would have to wait that minute before it could print a rate.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// How far back the rates look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Totals of every STATS slot, oldest first, spanning at most [`WINDOW`]
/// (plus one sample at or beyond it, the baseline).
#[derive(Default)]
pub struct History {
    samples: VecDeque<(Instant, Vec<u64>)>,
}

impl History {
    pub fn push(&mut self, at: Instant, totals: Vec<u64>) {
        self.samples.push_back((at, totals));
        // Keep the newest sample that is at least WINDOW old: it is the
        // baseline of a full minute.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| at.duration_since(*t) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The oldest and the newest sample, and the time between them.
    pub fn span(&self) -> Option<Span> {
        let (t0, first) = self.samples.front()?;
        let (t1, last) = self.samples.back()?;
        Some(Span {
            secs: t1.duration_since(*t0).as_secs_f64(),
            first: first.clone(),
            last: last.clone(),
        })
    }
}

/// Two samples of every STATS slot `secs` apart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Span {
    pub secs: f64,
    pub first: Vec<u64>,
    pub last: Vec<u64>,
}

/// What does not change while the daemon runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    /// None with `--xdp off`.
    pub iface: Option<String>,
    /// native, skb, inherited (a pinned link's) or off.
    pub xdp_mode: String,
    pub prog_id: Option<u32>,
    /// offload or edge.
    pub mode: String,
}

/// The control socket's answer to `status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusInfo {
    #[serde(flatten)]
    pub identity: Identity,
    pub uptime_secs: f64,
    /// Edge mode only.
    pub dialogs: Option<u64>,
    /// Edge mode only: open TCP, TLS, WS, WSS, and still in a TLS or
    /// WebSocket handshake.
    pub connections: Option<[u64; 5]>,
    pub history: Option<Span>,
    /// Edge mode with `--state-store` only.
    #[serde(default)]
    pub store: Option<StoreStatus>,
}

/// The shared store as `status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    pub url: String,
    pub node_id: String,
    pub up: bool,
    /// Dialogs other edges own, replicated here.
    pub replicas: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_one_baseline_a_minute_old() {
        let t0 = Instant::now();
        let mut h = History::default();
        assert!(h.span().is_none());
        for s in 0..=90u64 {
            h.push(t0 + Duration::from_secs(s), vec![s * 10]);
        }
        let span = h.span().unwrap();
        assert_eq!(span.secs, 60.0);
        assert_eq!((span.first[0], span.last[0]), (300, 900));
        // Samples further apart than the window: the last two are kept.
        h.push(t0 + Duration::from_secs(200), vec![5000]);
        let span = h.span().unwrap();
        assert_eq!((span.secs, span.first[0]), (110.0, 900));
    }
}
