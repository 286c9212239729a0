//! The daemon's clocks, in one place: CLOCK_MONOTONIC (what the XDP
//! program stamps with: `bpf_ktime_get_ns`) and the edge's millisecond
//! clock. Only socket loops, timer tasks and the CLI read them; the edge's
//! tables take the time as an argument.

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The kernel's tick in ns: the resolution of CLOCK_MONOTONIC_COARSE
/// (`TICK_NSEC`), the scale of the XDP program's `bpf_jiffies64` clock
/// (`Config::tick_ns`); 0 if the kernel does not say.
pub fn tick_ns() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres only writes the timespec we pass.
    let r = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if r != 0 || ts.tv_sec != 0 {
        return 0;
    }
    u32::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Milliseconds on the edge's clock: unix time as read once, at the first
/// call, advanced by CLOCK_MONOTONIC since. Session expiries are absolute,
/// so they can be shown (and persisted) as unix times; but a step of the
/// wall clock while the edge runs (an NTP step, `date -s`) must not expire
/// sessions early or late, so only the start reads the wall clock.
pub fn now_ms() -> u64 {
    static ANCHOR: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (unix_ms, mono_ns) = *ANCHOR.get_or_init(|| {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (unix_ms, monotonic_ns())
    });
    unix_ms + monotonic_ns().saturating_sub(mono_ns) / 1_000_000
}

/// "3.2s ago" style age of a monotonic timestamp.
pub fn age(now_ns: u64, then_ns: u64) -> f64 {
    now_ns.saturating_sub(then_ns) as f64 / 1e9
}

/// A clock for unit tests: each test thread has its own, starting at a
/// fixed unix time and moving only when the test advances it, so tests of
/// timers need no real sleeps.
#[cfg(test)]
pub mod virtual_clock {
    use std::cell::Cell;

    /// 2023-11-14T22:13:20Z, in ms.
    pub const START_MS: u64 = 1_700_000_000_000;

    thread_local! {
        static NOW_MS: Cell<u64> = const { Cell::new(START_MS) };
    }

    /// The test's time, in ms.
    pub fn now() -> u64 {
        NOW_MS.with(Cell::get)
    }

    /// Moves the test's time on by `ms`.
    pub fn advance(ms: u64) {
        NOW_MS.with(|c| c.set(c.get() + ms));
    }
}
