//! What a scrape reads, when it is scraped: STATS summed over CPUs, the
//! PEERS map, the responder's and the edge's counters, the edge's tables
//! and the PBX's health. Nothing is copied in the background.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData};
use sip_ka_common::{
    counters::EDGE_BASE,
    maps::{PeerKey, PeerValue, PEERS_MAX},
};

use super::{
    families::{self, Kind, BANNED, BANS, BUILD, CONNECTIONS, DIALOGS, EVIDENCE, PBX_RTT, PEERS},
    mapping::{edge_series, stats_series, Labels, Series},
};
use crate::{
    bpf::{
        pins,
        stats::{edge as edge_stats, StatsMaps},
    },
    edge::{self, Edge},
    responder::Shared,
};

/// The XDP side: the pinned STATS and PEERS maps, or a stand-in.
pub trait FastPath: Send + Sync {
    /// Every STATS slot, summed over CPUs.
    fn totals(&self) -> Result<Vec<u64>>;
    /// Entries in PEERS.
    fn peers(&self) -> Result<u64>;
}

/// STATS and PEERS opened from their pins.
pub struct PinnedMaps {
    stats: StatsMaps,
    peers: HashMap<MapData, PeerKey, PeerValue>,
}

impl PinnedMaps {
    pub fn open(pin_dir: &Path) -> Result<PinnedMaps> {
        let pins = pins::Pins::new(pin_dir);
        Ok(PinnedMaps {
            stats: pins.stats().context("STATS for the metrics")?,
            peers: pins.peers().context("PEERS for the metrics")?,
        })
    }
}

impl FastPath for PinnedMaps {
    fn totals(&self) -> Result<Vec<u64>> {
        pins::counter_totals(&self.stats)
    }

    fn peers(&self) -> Result<u64> {
        // A key evicted under the walk restarts it from the first key:
        // bounded by the map's size, so churn cannot keep a scrape going.
        Ok(self
            .peers
            .keys()
            .take(PEERS_MAX as usize)
            .filter(Result::is_ok)
            .count() as u64)
    }
}

/// `sipka_build_info`'s labels.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub version: String,
    pub xdp_mode: String,
    pub iface: String,
}

/// Everything a scrape reads.
pub struct Sources {
    pub fast_path: Option<Box<dyn FastPath>>,
    /// The userspace responder (its counters are read from it, fresher
    /// than their STATS copy).
    pub responder: Option<Arc<Shared>>,
    /// Edge mode only: without it the edge families are absent.
    pub edge: Option<Arc<Edge>>,
    /// The bans and their evidence.
    pub shield: Option<Arc<crate::shield::Shield>>,
    pub build: BuildInfo,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
}

/// One series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub family: &'static str,
    pub labels: Labels,
    pub value: Value,
}

fn sample(s: Series, raw: u64) -> Sample {
    let counter = families::find(s.family).is_some_and(|f| f.kind == Kind::Counter);
    Sample {
        family: s.family,
        value: if counter {
            Value::Counter(raw)
        } else {
            Value::Gauge(raw as f64 / s.divisor)
        },
        labels: s.labels,
    }
}

fn gauge(family: &'static str, labels: &[(&'static str, &str)], v: f64) -> Sample {
    Sample {
        family,
        labels: labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        value: Value::Gauge(v),
    }
}

/// Reads every source now. Blocking: the map reads are system calls (a
/// full PEERS walk is 65,536 of them).
pub fn gather(src: &Sources) -> Result<Vec<Sample>> {
    let b = &src.build;
    let mut out = vec![gauge(
        BUILD,
        &[
            ("version", &b.version),
            ("xdp_mode", &b.xdp_mode),
            ("iface", &b.iface),
        ],
        1.0,
    )];
    let mut slots: Vec<Option<u64>> = vec![None; EDGE_BASE as usize];
    if let Some(fp) = &src.fast_path {
        let totals = fp.totals().context("reading STATS")?;
        for (slot, v) in slots.iter_mut().zip(totals) {
            *slot = Some(v);
        }
    }
    if let Some(r) = &src.responder {
        for (i, v) in r.counters.values() {
            if let Some(slot) = slots.get_mut(i as usize) {
                *slot = Some(v);
            }
        }
    }
    for (i, v) in slots.into_iter().enumerate() {
        if let (Some(v), Some(s)) = (v, stats_series(i as u32)) {
            out.push(sample(s, v));
        }
    }
    if let Some(fp) = &src.fast_path {
        out.push(gauge(
            PEERS,
            &[],
            fp.peers().context("reading PEERS")? as f64,
        ));
    }
    if let Some(e) = &src.edge {
        out.extend(edge_samples(e));
    }
    if let Some(s) = &src.shield {
        out.extend(shield_samples(s));
    }
    Ok(out)
}

fn shield_samples(s: &crate::shield::Shield) -> Vec<Sample> {
    use sip_ka_common::maps::BanReason;
    let now = crate::util::clock::now_ms();
    let in_force = s.table.by_reason(now);
    let mut out = Vec::new();
    for r in BanReason::ALL {
        out.push(Sample {
            family: BANS,
            labels: vec![("reason", r.name().to_string())],
            value: Value::Counter(s.bans_of(r)),
        });
        out.push(gauge(
            BANNED,
            &[("reason", r.name())],
            in_force[r as usize] as f64,
        ));
    }
    out.push(gauge(EVIDENCE, &[], s.evidence_size().0 as f64));
    out
}

fn edge_samples(e: &Edge) -> Vec<Sample> {
    let names = edge_stats::names();
    let values = edge::stats_values(e);
    let up = names
        .iter()
        .zip(&values)
        .any(|(n, v)| n == "edge_pbx_up" && *v == 1);
    let mut out: Vec<Sample> = names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| edge_series(n).map(|s| sample(s, v)))
        // No round trip is known while the PBX is down: absent, not 0.
        .filter(|s| up || s.family != PBX_RTT)
        .collect();
    out.push(gauge(DIALOGS, &[], e.dialogs().len() as f64));
    let open = e.transports.open_counts();
    for (t, n) in [
        ("tcp", open.tcp),
        ("tls", open.tls),
        ("ws", open.ws),
        ("wss", open.wss),
        ("handshake", open.handshaking()),
    ] {
        out.push(gauge(CONNECTIONS, &[("transport", t)], n as f64));
    }
    out
}
