//! (d) Session timers at scale (`--timers`): 1,000,000 dialogs on the
//! edge's timer wheel alone, and in the whole session tracker.

use std::time::{Duration, Instant};

use anyhow::Result;
use sip_ka_common::callid_hash;

use crate::memory::rss_bytes;

/// 1,000,000 dialogs on one [`sip_ka::util::timer_wheel::TimerWheel`]: memory per
/// dialog (resident set from /proc/self/statm before and after, and by the
/// structure sizes), then refreshes per second (each moves one dialog's
/// expiry by one session interval, as a re-INVITE/UPDATE 2xx does), then
/// expiring them all. Bounded: a fixed number of operations, 10 s at most
/// for the refresh loop.
pub(crate) fn timers_bench() -> Result<()> {
    use sip_ka::edge::session_timer::{Session, SessionRecord, SessionTimers, TimerConfig};
    use sip_ka::sip::Refresher;
    use sip_ka::util::timer_wheel::{bytes_per_timer, TimerWheel, ENTRY_BYTES, MAP_ENTRY_BYTES};

    const DIALOGS: u64 = 1_000_000;
    const REFRESHES: u64 = 10_000_000;
    const INTERVAL_MS: u64 = 1_800_000;

    // Dialog ids as the daemon makes them: hashes of Call-IDs.
    let id = |i: u64| callid_hash(format!("{i:016x}@bench.invalid").as_bytes());
    let ids: Vec<u64> = (0..DIALOGS).map(id).collect();
    let t0: u64 = 1_700_000_000_000;

    let before = rss_bytes()?;
    let mut wheel = TimerWheel::new(1, t0);
    let start = Instant::now();
    for (i, &d) in ids.iter().enumerate() {
        // Spread the expiries over one interval.
        wheel.set(d, t0 + INTERVAL_MS / 2 + (i as u64 * 1_799) % INTERVAL_MS);
    }
    let insert_s = start.elapsed().as_secs_f64();
    let after = rss_bytes()?;
    let measured = after.saturating_sub(before) as f64 / DIALOGS as f64;

    // Refreshes: dialogs in a scattered order, the clock moving forward.
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    let mut done = 0u64;
    let mut now = t0;
    let mut expired_during = 0usize;
    while done < REFRESHES && Instant::now() < deadline {
        for k in 0..100_000u64 {
            let i = (done + k).wrapping_mul(2_654_435_761) % DIALOGS;
            if let Some(&d) = ids.get(i as usize) {
                wheel.set(d, now + INTERVAL_MS);
            }
        }
        done += 100_000;
        now += 10; // 10 ms of virtual time per 100,000 refreshes
        expired_during += wheel.expire(now).count();
    }
    let refresh_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let expired = wheel.expire(now + 2 * INTERVAL_MS).count();
    let expire_s = start.elapsed().as_secs_f64();

    drop(wheel);

    // The whole session tracker (wheel + per-dialog session record), filled
    // the way a restart restores it.
    let before_st = rss_bytes()?;
    let mut sessions = SessionTimers::new(TimerConfig::default(), false, t0);
    sessions.restore(ids.iter().enumerate().map(|(i, &d)| SessionRecord {
        dialog: d,
        session: Session {
            interval: 1800,
            refresher: Some(Refresher::Uac),
        },
        expires_at_ms: Some(t0 + INTERVAL_MS / 2 + (i as u64 * 1_799) % INTERVAL_MS),
    }));
    let tracker = rss_bytes()?.saturating_sub(before_st) as f64 / DIALOGS as f64;
    let tracked = sessions.len();
    drop(sessions);

    println!("== (d) session timers: {DIALOGS} dialogs on one timer wheel (1 ms ticks)");
    println!("{:<44} {:>16}", "figure", "value");
    println!("{:<44} {:>16}", "timer node (slab), bytes", ENTRY_BYTES);
    println!(
        "{:<44} {:>16}",
        "id map entry (+1 control byte), bytes", MAP_ENTRY_BYTES
    );
    println!(
        "{:<44} {:>16.1}",
        "by sizes, bytes/dialog (id map 7/8 full)",
        bytes_per_timer(7.0 / 8.0)
    );
    println!(
        "{:<44} {:>16.1}",
        "by sizes, bytes/dialog (id map 7/16 full)",
        bytes_per_timer(7.0 / 16.0)
    );
    println!(
        "{:<44} {:>16.1}",
        "measured (RSS delta / dialogs), bytes/dialog", measured
    );
    println!(
        "{:<44} {:>16.1}",
        "measured, whole SessionTimers, bytes/dialog", tracker
    );
    println!(
        "{:<44} {:>16.0}",
        "inserts per second",
        DIALOGS as f64 / insert_s
    );
    println!(
        "{:<44} {:>16.0}",
        "refreshes per second",
        done as f64 / refresh_s
    );
    println!(
        "{:<44} {:>16.0}",
        "expiries per second (all at once)",
        expired as f64 / expire_s.max(1e-9)
    );
    println!(
        "notes: {done} refreshes in {refresh_s:.2} s (each moves one dialog's expiry to now + \
         1800 s; the clock advances 10 ms per 100,000, {expired_during} expired meanwhile); \
         {expired} expired at the end; {tracked} sessions restored into the tracker; RSS from /proc/self/statm before and after inserting \
         (includes allocator slack and the doubling of the slab and the maps)."
    );
    Ok(())
}
