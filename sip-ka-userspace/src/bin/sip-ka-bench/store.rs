//! (f) The shared store (`--store`): what `--state-store` costs an edge.
//! A redis-server of the bench's own on a free loopback port; the edge is
//! the daemon's edge without its sockets (messages go in through
//! `Edge::handle`, the store's tasks run as in the daemon).
//!
//! Figures: store changes queued and Redis commands run per call set-up
//! (INVITE, 200) and per session refresh (UPDATE, 200), with the calls
//! paced so that nothing coalesces (as on a real edge, where a call's
//! messages are seconds apart); bytes per confirmed dialog in Redis
//! (`MEMORY USAGE` of its key, and `used_memory` over the set); and calls
//! per second through the edge (set-up, refresh, BYE: six messages) with
//! the store off and on, in alternating rounds of one run, the store's
//! figure taken when Redis has caught up with the last change.
//!
//! Needs Debian's redis-server, not root. Bounded: fixed call counts,
//! and every wait has a deadline.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::{
    edge::{
        config::{DialogOptions, EdgeConfig},
        dialog::NoSink,
        store::{self, Store, StoreConfig},
        Edge,
    },
    sip::{parse_message, Framing, Limits, Method, SipMessage},
    util::clock::now_ms,
};

use crate::dialogs::calls::{message, Call};

const EDGE: &str = "192.0.2.1:5060";
const PBX: &str = "192.0.2.10:5080";
/// Calls whose changes are counted one by one (paced).
const PACED: u64 = 200;
/// Calls per round of the throughput figure, and rounds per side.
const ROUND: u64 = 4_000;
const ROUNDS: u32 = 3;

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Result<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (Debian package redis-server; `cargo xtask setup`)")?;
    let r = Redis(child, port);
    let end = Instant::now() + Duration::from_secs(10);
    while conn(&r).is_err() {
        if Instant::now() > end {
            bail!("redis-server did not answer within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(r)
}

fn url(r: &Redis) -> String {
    format!("redis://127.0.0.1:{}/0", r.1)
}

fn conn(r: &Redis) -> Result<redis::Connection> {
    Ok(redis::Client::open(url(r))?.get_connection()?)
}

/// A field of `INFO section` as a number.
fn info(r: &Redis, section: &str, field: &str) -> Result<u64> {
    let text: String = redis::cmd("INFO").arg(section).query(&mut conn(r)?)?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            // commandstats lines: `cmdstat_evalsha:calls=12,usec=...`
            let v = rest.trim_start_matches([':', '=']);
            let v = v.strip_prefix("calls=").unwrap_or(v);
            let n: String = v.chars().take_while(char::is_ascii_digit).collect();
            return Ok(n.parse()?);
        }
    }
    Ok(0)
}

/// Commands Redis has run for the edge's writes (scripts and the
/// bindings' SET/DEL/PUBLISH), the lease's excluded.
fn write_commands(r: &Redis) -> Result<u64> {
    Ok(info(r, "commandstats", "cmdstat_evalsha")?
        + info(r, "commandstats", "cmdstat_publish")?
        + info(r, "commandstats", "cmdstat_del")?)
}

struct Node {
    edge: Arc<Edge>,
    rt: tokio::runtime::Runtime,
}

fn edge(r: Option<&Redis>) -> Result<Node> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cfg = EdgeConfig::new(EDGE.parse()?, PBX.parse()?);
    let sc = match r {
        Some(r) => Some(StoreConfig::new(&url(r), "bench")?),
        None => None,
    };
    let opts = DialogOptions {
        store: sc.clone(),
        ..DialogOptions::default()
    };
    let mut e = Edge::with_options(cfg, &opts, Box::new(NoSink), None, now_ms())?;
    let attached = match &sc {
        Some(sc) => Some(rt.block_on(store::start::attach(&mut e, sc, None))?),
        None => None,
    };
    let edge = Arc::new(e);
    if let Some((client, st)) = attached {
        let _in = rt.enter();
        store::watch::spawn(edge.clone(), st, client);
        let end = Instant::now() + Duration::from_secs(5);
        while !edge.store.as_ref().is_some_and(|s| s.is_up()) {
            if Instant::now() > end {
                bail!("the edge did not connect to the bench's redis-server");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(Node { edge, rt })
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

fn parse(b: &[u8]) -> Result<SipMessage> {
    parse_message(b, Framing::Datagram, &Limits::default()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A request from call `c`'s UA through the edge and the PBX's 200 back.
fn transaction(e: &Edge, c: &Call, req: &SipMessage, method: Method) -> Result<()> {
    let now = now_ms();
    let Some((fwd, _)) = e.handle(&req.to_bytes(), c.ua, addr(EDGE), now) else {
        bail!("the edge forwarded no {method}");
    };
    let fwd = parse(&fwd)?;
    let mut ok = fwd
        .response(200, "OK", Some(&c.to_tag))
        .context("a 200 for the forwarded request")?;
    ok.push_header("Contact", c.callee_contact.clone());
    if method != Method::Bye {
        ok.push_header("Require", "timer");
        ok.push_header("Session-Expires", "1800;refresher=uac");
    }
    if e.handle(&ok.to_bytes(), addr(PBX), addr(EDGE), now)
        .is_none()
    {
        bail!("the edge did not pass the PBX's 200 to a {method} on");
    }
    Ok(())
}

fn setup(e: &Edge, i: u64) -> Result<Call> {
    let c = Call::new(i);
    transaction(
        e,
        &c,
        &message(c.request(Method::Invite, 1, false)?),
        Method::Invite,
    )?;
    Ok(c)
}

fn refresh(e: &Edge, c: &Call) -> Result<()> {
    transaction(
        e,
        c,
        &message(c.request(Method::Update, 2, true)?),
        Method::Update,
    )
}

fn bye(e: &Edge, c: &Call) -> Result<()> {
    transaction(
        e,
        c,
        &message(c.request(Method::Bye, 3, true)?),
        Method::Bye,
    )
}

fn the_store(e: &Edge) -> Result<&Store> {
    e.store.as_deref().context("no store")
}

/// Waits until the store has written everything queued.
fn caught_up(e: &Edge, within: Duration) -> Result<()> {
    let s = the_store(e)?;
    let end = Instant::now() + within;
    loop {
        let written = s.stats.writes.load(std::sync::atomic::Ordering::Relaxed);
        if s.backlog() == 0 {
            std::thread::sleep(Duration::from_millis(5));
            let again = s.stats.writes.load(std::sync::atomic::Ordering::Relaxed);
            if s.backlog() == 0 && again == written {
                return Ok(());
            }
        }
        if Instant::now() > end {
            bail!("the store did not catch up within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn queued(e: &Edge) -> Result<u64> {
    Ok(the_store(e)?
        .stats
        .queued
        .load(std::sync::atomic::Ordering::Relaxed))
}

pub(crate) fn store_bench() -> Result<()> {
    let r = redis()?;
    let on = edge(Some(&r))?;
    let off = edge(None)?;
    println!("Shared store (--state-store, Debian redis-server on loopback, one edge)");

    // Changes per set-up and per refresh, paced: each call's messages
    // reach the store before the next.
    let (q0, c0) = (queued(&on.edge)?, write_commands(&r)?);
    let mut calls = Vec::new();
    for i in 0..PACED {
        calls.push(setup(&on.edge, i)?);
        caught_up(&on.edge, Duration::from_secs(5))?;
    }
    let (q1, c1) = (queued(&on.edge)?, write_commands(&r)?);
    for c in &calls {
        refresh(&on.edge, c)?;
        caught_up(&on.edge, Duration::from_secs(5))?;
    }
    let (q2, c2) = (queued(&on.edge)?, write_commands(&r)?);
    let per = |a: u64, b: u64| (b - a) as f64 / PACED as f64;
    println!(
        "  per call set-up (INVITE, 200): {:.2} changes queued, {:.2} Redis commands \
         (script + PUBLISH inside it counted once each)",
        per(q0, q1),
        per(c0, c1)
    );
    println!(
        "  per session refresh (UPDATE, 200): {:.2} changes queued, {:.2} Redis commands",
        per(q1, q2),
        per(c1, c2)
    );

    // Bytes per confirmed dialog in Redis.
    let mut usage = 0u64;
    let mut con = conn(&r)?;
    let sample: String = redis::cmd("HGET")
        .arg(store::dialog_key(&calls[0].call_id))
        .arg("rec")
        .query(&mut con)?;
    println!("  a dialog's record ({} bytes): {sample}", sample.len());
    for c in &calls {
        let n: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store::dialog_key(&c.call_id))
            .query(&mut con)?;
        usage += n.context("a confirmed dialog missing from the store")?;
    }
    let used_before = info(&r, "memory", "used_memory")?;
    for c in &calls {
        bye(&on.edge, c)?;
    }
    caught_up(&on.edge, Duration::from_secs(10))?;
    let used_after = info(&r, "memory", "used_memory")?;
    println!(
        "  bytes per confirmed dialog in Redis: {} (MEMORY USAGE of its key, mean of {PACED}); \
         {} (used_memory freed when they ended, per dialog)",
        usage / PACED,
        used_before.saturating_sub(used_after) / PACED
    );

    // Calls per second, store off and on, alternating rounds.
    let mut secs = [0f64; 2];
    let mut next = 1_000_000u64;
    for _ in 0..ROUNDS {
        for (side, node) in [&off, &on].iter().enumerate() {
            let t = Instant::now();
            for i in next..next + ROUND {
                let c = setup(&node.edge, i)?;
                refresh(&node.edge, &c)?;
                bye(&node.edge, &c)?;
            }
            if side == 1 {
                caught_up(&node.edge, Duration::from_secs(60))?;
            }
            secs[side] += t.elapsed().as_secs_f64();
            next += ROUND;
        }
    }
    let n = (ROUND * u64::from(ROUNDS)) as f64;
    let (off_cps, on_cps) = (n / secs[0], n / secs[1]);
    println!(
        "  calls per second through the edge (set-up, refresh, BYE; {} rounds of {ROUND}): \
         store off {off_cps:.0}, store on {on_cps:.0} (Redis caught up): {:.2}x",
        ROUNDS,
        on_cps / off_cps
    );
    let s = the_store(&on.edge)?;
    let dropped = s
        .stats
        .queue_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("  changes dropped (queue full): {dropped}");
    drop(on.rt);
    drop(off.rt);
    Ok(())
}
