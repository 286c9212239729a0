//! Counter names and the daemon's own (userspace) counters, which live in
//! slots of the same STATS map that the kernel never writes.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use sip_ka_common::{
    counters::{sip_request_slot, COUNTER_NAMES, NAMED_COUNTERS, NUM_COUNTERS},
    Counter,
};

/// The printed name of STATS slot `index`.
pub fn counter_name(index: u32) -> String {
    if (index as usize) < NAMED_COUNTERS {
        return COUNTER_NAMES[index as usize].to_string();
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

/// Counters of the userspace responder, published into STATS.
#[derive(Default)]
pub struct UserCounters {
    slots: [AtomicU64; USER_SLOTS.len()],
}

const USER_SLOTS: [Counter; 7] = [
    Counter::UserCrlfPing,
    Counter::UserCrlfPongSent,
    Counter::UserStunReq,
    Counter::UserStunResp,
    Counter::UserStunError,
    Counter::UserStunBadFp,
    Counter::UserIgnored,
];

impl UserCounters {
    pub fn bump(&self, c: Counter) {
        if let Some(i) = USER_SLOTS.iter().position(|s| *s == c) {
            self.slots[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        USER_SLOTS
            .iter()
            .position(|s| *s == c)
            .map(|i| self.slots[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Writes the totals into STATS (CPU 0's slot carries the total, the
    /// others zero), so `sip-ka stats` sums them like any counter.
    pub fn publish(&self, stats: &mut PerCpuArray<MapData, u64>) -> Result<()> {
        let ncpu = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for (i, c) in USER_SLOTS.iter().enumerate() {
            let mut v = vec![0u64; ncpu];
            v[0] = self.slots[i].load(Ordering::Relaxed);
            stats.set(*c as u32, PerCpuValues::try_from(v)?, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ka_common::{counters::sip_request_index, sip::Method};

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
