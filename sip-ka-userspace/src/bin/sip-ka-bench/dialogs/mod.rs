//! (d) The edge's dialog table at scale (`--dialogs`): what one live call
//! costs the edge in memory and on disk, and how many session refreshes
//! and expiries it handles per second, with 1,000,000 confirmed dialogs.
//!
//! Every dialog goes through the calls the proxy makes (`edge/proxy.rs`),
//! on messages of the edge's own type: the INVITE on its way to the
//! PBX (`timer_request`, then `on_request_from`), its 200 on the way back
//! (`timer_response`, then `on_response`). A refresh is an in-dialog
//! UPDATE and its 200 through the same four calls; expiries come from
//! `Dialogs::expire` on a clock stepped by 100 ms, as the edge's timer
//! task steps at most. The BPF mirror is `NoSink` (its cost is the
//! kernel's), so no root is needed.
//!
//! Session-timer times are virtual (the calls take `now_ms`): the 2xx of
//! the dialogs are spread over half a session interval, as if the calls
//! had been answered during the last 15 minutes, so none falls due while
//! refreshes are measured, and the expiry run covers the next 30 minutes
//! of virtual time in a few seconds.
//!
//! Bounded: a fixed number of dialogs, refreshes capped in count and in
//! wall time, and the memory the run needs is checked before it starts.

pub(crate) mod calls;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::util::clock::now_ms;
use sip_ka::{
    edge::session_timer::RequestAction,
    edge::{
        dialog::{Dialogs, NoSink},
        persist::{Journal, Record, COMPACT_FACTOR, COMPACT_SLACK},
        transport::Flow,
    },
    sip::{Method, SipMessage},
};

use self::calls::{check_parts, message, uri, Call};
use crate::memory::{mem_available, rss_bytes};

/// Dialogs with a state directory (journal figures): enough for stable
/// per-record figures without writing gigabytes.
const JOURNAL_DIALOGS: u64 = 100_000;
/// Session-Expires of every dialog (RFC 4028's recommended 1800 s).
const INTERVAL_MS: u64 = 1_800_000;
/// Messages made ahead of a timed run: making them (parsing, in the edge)
/// is the datagram's cost, not the table's, and is kept out of the
/// timings.
const BATCH: u64 = 10_000;
/// Refreshes at most, and wall-clock seconds at most for them (messages
/// made included).
const MAX_REFRESHES: u64 = 1_000_000;
const REFRESH_SECONDS: u64 = 5;
/// Refreshes with the journal: enough records for a stable figure.
const JOURNAL_REFRESHES: u64 = 20_000;
/// The edge's timer task sleeps at most this long between expiry checks.
const EXPIRY_STEP_MS: u64 = 100;

/// One transaction through the table: the request on its way to the PBX,
/// then its 200 on the way back, with the calls `edge/proxy.rs` makes.
struct Transaction {
    request: SipMessage,
    response: SipMessage,
    ua: Flow,
    to_tag: String,
}

impl Transaction {
    fn invite(i: u64) -> Result<Transaction> {
        let c = Call::new(i);
        Ok(Transaction {
            request: message(c.request(Method::Invite, 1, false)?),
            response: message(c.ok(Method::Invite, 1)),
            ua: Flow::Udp(c.ua),
            to_tag: c.to_tag,
        })
    }

    /// The `k`th refresh of a run over a table of `dialogs`.
    fn update(k: u64, dialogs: u64) -> Result<Transaction> {
        let (i, cseq) = refresh_of(k, dialogs);
        let c = Call::new(i);
        Ok(Transaction {
            request: message(c.request(Method::Update, cseq, true)?),
            response: message(c.ok(Method::Update, cseq)),
            ua: Flow::Udp(c.ua),
            to_tag: c.to_tag,
        })
    }

    fn run(&mut self, d: &mut Dialogs, now_ms: u64) -> Result<()> {
        if let RequestAction::Reject(r) = d.timer_request(&mut self.request, Some(&self.to_tag)) {
            bail!(
                "the edge refused a bench request: {:?}",
                r.status_code().unwrap_or(0)
            );
        }
        d.on_request_from(&self.request, self.ua, true, now_ms);
        d.timer_response(&mut self.response, now_ms);
        d.on_response(&self.response, now_ms);
        Ok(())
    }
}

/// Memory in use, two ways: the resident set (/proc/self/statm, as the
/// session timer part measures) and what malloc has handed out
/// (mallinfo2: arena bytes in use + mmapped chunks). Free heap memory is
/// returned to the kernel first (malloc_trim), so that memory freed by
/// earlier parts or by the message batches is not counted, and
/// the allocator's own rounding and the tables' spare capacity are.
fn memory() -> Result<(u64, u64)> {
    // SAFETY: plain glibc calls without pointers.
    let info = unsafe {
        libc::malloc_trim(0);
        libc::mallinfo2()
    };
    Ok((rss_bytes()?, (info.uordblks + info.hblkhd) as u64))
}

/// Runs `count` transactions made by `make(k)` through the table, in
/// batches: each batch is made first, then its table calls are timed,
/// then it is freed (making and freeing a message is the datagram's
/// cost, not the table's). In the
/// same thread: messages made in another would be freed across malloc
/// arenas, which slows the table's own allocations and leaves memory in
/// the other arena. The session clock moves by `step_us` per transaction
/// from `*now`. Stops early after `wall`. Returns (transactions run,
/// seconds spent in the table's calls).
fn timed(
    d: &mut Dialogs,
    count: u64,
    now: &mut u64,
    step_us: u64,
    wall: Option<Duration>,
    make: impl Fn(u64) -> Result<Transaction>,
) -> Result<(u64, f64)> {
    let start = Instant::now();
    let mut spent = Duration::ZERO;
    let mut done = 0;
    let mut clock_us = *now * 1_000;
    while done < count && wall.is_none_or(|w| start.elapsed() < w) {
        let n = BATCH.min(count - done);
        let mut batch = (done..done + n).map(&make).collect::<Result<Vec<_>>>()?;
        let t = Instant::now();
        for tx in &mut batch {
            tx.run(d, clock_us / 1_000)?;
            clock_us += step_us;
        }
        spent += t.elapsed();
        // Freeing the messages, like making them, is the datagram's cost.
        drop(batch);
        done += n;
    }
    *now = clock_us / 1_000;
    Ok((done, spent.as_secs_f64()))
}

/// Dialog `k` of a refresh run, scattered over the table (a multiplier
/// coprime with 2 and 5 permutes every run of `dialogs` consecutive k),
/// and its CSeq: one more for each pass over the table.
fn refresh_of(k: u64, dialogs: u64) -> (u64, u32) {
    (
        k.wrapping_mul(2_654_435_761) % dialogs,
        2 + (k / dialogs) as u32,
    )
}

/// Expires every session: the clock stepped by [`EXPIRY_STEP_MS`] up to
/// `until`. Returns (dialogs ended, seconds).
fn expire_all(d: &mut Dialogs, now: u64, until: u64) -> (u64, f64) {
    let upstream = SocketAddr::from(([192, 0, 2, 10], 5080));
    let local = SocketAddr::from(([192, 0, 2, 1], 5060));
    let start = Instant::now();
    let mut ended = 0;
    let mut t = now;
    while t <= until + EXPIRY_STEP_MS {
        ended += d.expire(t, upstream, local).len() as u64;
        t += EXPIRY_STEP_MS;
    }
    (ended, start.elapsed().as_secs_f64())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn lines(p: &Path) -> Result<u64> {
    let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(data.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// A state directory of our own, removed however the run ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("sip-ka-bench-dialogs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row(name: &str, value: String) {
    println!("{name:<52} {value:>16}");
}

/// Runs part (d) on the dialog table with `count` dialogs and prints its
/// figures.
pub(crate) fn dialogs_bench(count: u64) -> Result<()> {
    let n = count.max(1);
    // Measured around 1 KB per dialog plus the message batches: ask for
    // three times that, so the run never pushes the machine into swap or
    // the OOM killer.
    if let Some(avail) = mem_available() {
        if avail < n * 3_000 + (1 << 30) {
            bail!(
                "--dialogs with {n} dialogs needs about {} MiB free, {} MiB available",
                (n * 3_000 + (1 << 30)) >> 20,
                avail >> 20
            );
        }
    }
    println!("== (d) dialog table: {n} confirmed dialogs through the edge's code (no BPF mirror)");
    let sample = Call::new(0);
    for i in [0, n - 1] {
        let c = Call::new(i);
        check_parts(c.request(Method::Invite, 1, false)?)?;
        check_parts(c.ok(Method::Invite, 1))?;
        check_parts(c.request(Method::Update, 2, true)?)?;
        check_parts(c.ok(Method::Update, 2))?;
    }
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let wall = Instant::now();

    // 1. The whole table at scale, no state directory.
    let (rss0, heap0) = memory()?;
    let t0 = now_ms();
    let mut d = Dialogs::new(Box::new(NoSink), t0);
    let mut now = t0;
    // 2xx spread over half an interval: expiries in (t0 + 1800 s, t0 + 2700 s].
    let spread_us = INTERVAL_MS * 1_000 / 2 / n;
    let (built, build_s) = timed(&mut d, n, &mut now, spread_us, None, |i| {
        Transaction::invite(i)
    })?;
    let (rss1, heap1) = memory()?;
    if d.len() as u64 != n || d.timers().len() as u64 != n {
        bail!(
            "{} dialogs and {} session timers after {built} INVITE/200 (expected {n})",
            d.len(),
            d.timers().len()
        );
    }
    let rss_per = rss1.saturating_sub(rss0) as f64 / n as f64;
    let heap_per = heap1.saturating_sub(heap0) as f64 / n as f64;

    // 2. Refreshes: an UPDATE and its 200 for dialogs all over the table;
    //    each restarts the dialog's timer at now + 1800 s.
    let (refreshed, refresh_s) = timed(
        &mut d,
        MAX_REFRESHES,
        &mut now,
        1,
        Some(Duration::from_secs(REFRESH_SECONDS)),
        |k| Transaction::update(k, n),
    )?;
    let (i, _) = refresh_of(refreshed.saturating_sub(1), n);
    let left = d
        .session(&Call::new(i).call_id, now)
        .and_then(|(_, left)| left)
        .unwrap_or(0);
    if left + 1_000 < INTERVAL_MS {
        bail!("a refreshed session has {left} ms left (expected about {INTERVAL_MS})");
    }

    // 3. Every session expires.
    let (expired, expire_s) = expire_all(&mut d, now, now + INTERVAL_MS);
    if expired != n || !d.is_empty() {
        bail!(
            "{expired} sessions expired, {} dialogs left (expected {n} and 0)",
            d.len()
        );
    }
    drop(d);
    let big_s = wall.elapsed().as_secs_f64();

    // 4. With a state directory, fewer dialogs: the journal's size per
    //    set-up and per refresh, what one record costs to write, and a
    //    compaction (what the edge does at start and whenever the journal
    //    has grown to 4096 + 4 x live records).
    let jn = JOURNAL_DIALOGS.min(n);
    // Refreshes that stay under the compaction threshold (3 records per
    // set-up, 2 per refresh), so every record is still in the file.
    let jr = JOURNAL_REFRESHES.min((jn + COMPACT_SLACK) / 2 - 1);
    let jspread_us = INTERVAL_MS * 1_000 / 2 / jn;
    let dir = TempDir::new()?;
    let mut d = Dialogs::new(Box::new(NoSink), now_ms());
    let (journal, loaded) = Journal::open(&dir.0.join("edge"))?;
    if !loaded.dialogs.is_empty() {
        bail!("{} is not empty", dir.0.display());
    }
    d.set_journal(journal);
    d.compact();
    let journal_path = dir.0.join("edge/journal");
    let snapshot_path = dir.0.join("edge/snapshot");
    let mut jnow = now_ms();
    let (_, journal_build_s) = timed(&mut d, jn, &mut jnow, jspread_us, None, |i| {
        Transaction::invite(i)
    })?;
    let build_bytes = file_len(&journal_path);
    let build_records = lines(&journal_path)?;
    let (_, journal_refresh_s) = timed(&mut d, jr, &mut jnow, 1, None, |k| {
        Transaction::update(k, jn)
    })?;
    let all_bytes = file_len(&journal_path);
    let all_records = lines(&journal_path)?;
    if build_records != 3 * jn || all_records != 3 * jn + 2 * jr {
        bail!(
            "the journal holds {build_records} then {all_records} records (expected {} and {}: \
             3 per set-up, 2 per refresh)",
            3 * jn,
            3 * jn + 2 * jr
        );
    }
    let refresh_bytes = all_bytes - build_bytes;
    // What one change costs to record, alone: the records the table just
    // wrote, appended again to a journal of their own (JSON encoding and
    // one write() each, as the table does).
    let records = std::fs::read(&journal_path)?
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice::<Record>)
        .collect::<Result<Vec<_>, _>>()
        .context("reading back the journal")?;
    let (mut copy, _) = Journal::open(&dir.0.join("copy"))?;
    let t = Instant::now();
    for r in &records {
        copy.append(r);
    }
    let append_s = t.elapsed().as_secs_f64();
    if copy.records() != records.len() as u64 || file_len(&dir.0.join("copy/journal")) != all_bytes
    {
        bail!("the journal's records did not write back as they were");
    }
    drop(copy);
    let t = Instant::now();
    d.compact();
    let compact_s = t.elapsed().as_secs_f64();
    let snapshot_bytes = file_len(&snapshot_path);
    if file_len(&journal_path) != 0 || lines(&snapshot_path)? != jn {
        bail!("the compaction left an unexpected journal or snapshot");
    }
    let (jexpired, jexpire_s) = expire_all(&mut d, jnow, jnow + INTERVAL_MS);
    drop(d);
    drop(dir);

    // Records appended between two compactions at jn live dialogs.
    let between = COMPACT_SLACK + COMPACT_FACTOR * jn;
    println!("{:<52} {:>16}", "figure", "value");
    row(
        "memory, RSS delta / dialogs, bytes/dialog",
        format!("{rss_per:.0}"),
    );
    row(
        "memory, malloc in use delta / dialogs, bytes/dialog",
        format!("{heap_per:.0}"),
    );
    row(
        "dialog set-ups per second (INVITE + 200)",
        format!("{:.0}", built as f64 / build_s),
    );
    row(
        "refreshes per second (UPDATE + 200)",
        format!("{:.0}", refreshed as f64 / refresh_s),
    );
    row(
        "expiries per second (100 ms steps)",
        format!("{:.0}", expired as f64 / expire_s.max(1e-9)),
    );
    println!(
        "-- with a state directory ({jn} dialogs, in {})",
        std::env::temp_dir().display()
    );
    row(
        "journal bytes per record (upsert)",
        format!("{:.0}", all_bytes as f64 / all_records as f64),
    );
    row(
        "journal bytes per dialog set-up (3 records)",
        format!("{:.0}", build_bytes as f64 / jn as f64),
    );
    row(
        "journal bytes per refresh (2 records)",
        format!("{:.0}", refresh_bytes as f64 / jr as f64),
    );
    row(
        "snapshot bytes per dialog",
        format!("{:.0}", snapshot_bytes as f64 / jn as f64),
    );
    row(
        "journal write, µs per record (encode + write())",
        format!("{:.2}", append_s * 1e6 / records.len().max(1) as f64),
    );
    row(
        "snapshot of all dialogs (start; later: background merge), ms",
        format!("{:.1}", compact_s * 1e3),
    );
    row(
        "compaction amortised, µs per record",
        format!("{:.2}", compact_s * 1e6 / between as f64),
    );
    row(
        "dialog set-ups per second, journaled",
        format!("{:.0}", jn as f64 / journal_build_s),
    );
    row(
        "refreshes per second, journaled",
        format!("{:.0}", jr as f64 / journal_refresh_s),
    );
    row(
        "expiries per second, journaled",
        format!("{:.0}", jexpired as f64 / jexpire_s.max(1e-9)),
    );
    println!(
        "notes: table = Dialogs (one map by Call-ID hash: phase, CSeq, last activity inline; \
         Call-ID, UA flow, From of the INVITE, To of the 2xx, both Contact URIs, forks and \
         times packed in one heap block per dialog) with its SessionTimers (wheel + one map \
         of sessions and outstanding offers, measured alone in the session timer part), \
         idle clock off. Call-ID \
         {cid} chars, From {from} chars, To {to} chars with its tag, Contacts {cc}/{ce} \
         chars. Messages are built from their header fields (SipMessage::from_parts; the \
         first and last call's are checked equal to the edge's parse of the same datagram) \
         in batches of {BATCH} before each timed loop and freed after it; only the table's \
         calls are timed. \
         Memory: before and after the {n} set-ups, after malloc_trim; RSS includes the \
         hash tables' spare capacity. {refreshed} refreshes ({refresh_s:.2} s of table \
         time) over dialogs scattered across the table; {expired} expiries through \
         Dialogs::expire on a clock stepped by {EXPIRY_STEP_MS} ms over 30 min of session \
         time ({expire_s:.2} s). Journal: a JSON line per change, one write() each, no \
         fsync (page cache; {fs}); {jr} refreshes, so no compaction runs in the timed \
         loops; amortised compaction = its time / the {between} records between two \
         compactions at {jn} live dialogs. The part took {big_s:.1} s for the {n} dialogs, \
         {:.1} s in all; load average {load} at the start on {cpus} CPU(s) (a busy machine \
         slows every rate).",
        wall.elapsed().as_secs_f64(),
        cpus = std::thread::available_parallelism().map_or(1, |n| n.get()),
        cid = sample.call_id.len(),
        from = sample.from.len(),
        to = sample.to.len() + ";tag=".len() + sample.to_tag.len(),
        cc = uri(&sample.caller_contact).len(),
        ce = uri(&sample.callee_contact).len(),
        fs = std::env::temp_dir().display(),
    );
    Ok(())
}
