//! Counter names, the two maps that hold the counters (the kernel's
//! per-CPU blocks in STATS, the daemon's slots in DAEMON_STATS, see
//! `sip_ka_common::counters`), and the daemon's own counters: the
//! responder's ([`user`]) and the edge's ([`edge`]).

pub mod edge;
pub mod user;

use std::borrow::Borrow;

use anyhow::Result;
use aya::maps::{Array, MapData, PerCpuArray};
use sip_ka_common::counters::{
    sip_request_slot, Stats, COUNTER_NAMES, EDGE_BASE, NAMED_COUNTERS, NUM_COUNTERS,
};

/// Both counter maps, opened together: every reader sums them.
pub struct StatsMaps {
    pub kernel: PerCpuArray<MapData, Stats>,
    pub daemon: Array<MapData, u64>,
}

impl StatsMaps {
    /// Every counter's total, indexed like `Counter` (`NUM_COUNTERS`).
    pub fn totals(&self) -> Result<Vec<u64>> {
        totals(&self.kernel, &self.daemon)
    }
}

/// Every CPU's block of `kernel` plus `daemon`, slot by slot.
pub fn totals<K: Borrow<MapData>, D: Borrow<MapData>>(
    kernel: &PerCpuArray<K, Stats>,
    daemon: &Array<D, u64>,
) -> Result<Vec<u64>> {
    let mut totals = vec![0u64; NUM_COUNTERS as usize];
    for block in kernel.get(&0, 0)?.iter() {
        let counted = &block.slots[..EDGE_BASE as usize];
        for (t, v) in totals.iter_mut().zip(counted) {
            *t = t.wrapping_add(*v);
        }
    }
    for (i, t) in totals.iter_mut().enumerate() {
        *t = t.wrapping_add(daemon.get(&(i as u32), 0)?);
    }
    Ok(totals)
}

/// The printed name of STATS slot `index`.
pub fn counter_name(index: u32) -> String {
    if (index as usize) < NAMED_COUNTERS {
        return COUNTER_NAMES[index as usize].to_string();
    }
    if index >= EDGE_BASE {
        return edge::names()
            .get((index - EDGE_BASE) as usize)
            .cloned()
            .unwrap_or_else(|| format!("edge_slot_{}", index - EDGE_BASE));
    }
    match sip_request_slot(index) {
        Some((method, in_dialog, body)) => format!(
            "req_{}_{}_{}",
            method.name().to_ascii_lowercase(),
            if in_dialog {
                "in_dialog"
            } else {
                "out_of_dialog"
            },
            if body { "body" } else { "no_body" }
        ),
        None => format!("slot_{index}"),
    }
}

/// `(name, total)` for every slot, in index order.
pub fn named_totals(totals: &[u64]) -> Vec<(String, u64)> {
    totals
        .iter()
        .enumerate()
        .take(NUM_COUNTERS as usize)
        .map(|(i, v)| (counter_name(i as u32), *v))
        .collect()
}

/// Writes `values` into consecutive DAEMON_STATS slots from `base`, for
/// counters the daemon owns.
pub fn publish_block(stats: &mut StatsMaps, base: u32, values: &[u64]) -> Result<()> {
    for (i, value) in values.iter().enumerate() {
        stats.daemon.set(base + i as u32, *value, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ka_common::{counters::sip_request_index, sip::Method, Counter};

    #[test]
    fn edge_block_fits_its_reserved_slots() {
        let names = edge::names();
        assert!(names.len() <= sip_ka_common::counters::EDGE_SLOTS as usize);
        assert_eq!(counter_name(EDGE_BASE), names[0]);
        assert_eq!(
            counter_name(EDGE_BASE + names.len() as u32 - 1),
            "edge_pbx_rtt_us"
        );
    }

    #[test]
    fn names_cover_every_slot_once() {
        let mut names: Vec<String> = (0..NUM_COUNTERS).map(counter_name).collect();
        assert_eq!(counter_name(Counter::CrlfPongSent as u32), "crlf_pong_sent");
        assert_eq!(
            counter_name(sip_request_index(Method::Info as u32, true, false)),
            "req_info_in_dialog_no_body"
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), NUM_COUNTERS as usize);
    }
}
