//! The clock of the answer path. `bpf_jiffies64` is inlined by the
//! verifier (a load of `jiffies`, no helper call, where the coarse clock
//! is a call through the kernel's return thunk); the daemon writes the
//! tick's length into CONFIG (`tick_ns`, the resolution of
//! CLOCK_MONOTONIC_COARSE), which makes it nanoseconds. It has the coarse
//! clock's grain, a tick, but not CLOCK_MONOTONIC's origin: it only
//! times intervals (token buckets, the peer cache's second) and is never
//! stored where userspace reads a time.

use aya_ebpf::helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns};
use sip_ka_common::Config;

/// Nanoseconds on the program's interval clock; the coarse clock while
/// CONFIG has no tick length (written by a version without one).
#[inline(always)]
pub fn now(cfg: &Config) -> u64 {
    let tick = cfg.tick_ns as u64;
    if tick != 0 {
        unsafe { bpf_jiffies64() }.wrapping_mul(tick)
    } else {
        monotonic()
    }
}

/// CLOCK_MONOTONIC to the tick, for times userspace reads (PEERS).
#[inline(always)]
pub fn monotonic() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}
