//! Edges sharing state through a real Redis (Debian's `redis-server`,
//! started on a free loopback port for each test): a dialog set up on one
//! edge is replicated on the other (and in its DIALOGS map), its traffic
//! moves it, its end removes it everywhere; a dead edge's dialogs are
//! claimed by exactly one survivor, whose session timer fires once; a
//! Redis that stops answering delays no message and is repopulated when
//! it is back.
//!
//! Each edge here is the daemon's edge without its sockets: messages go
//! in through [`Edge::handle`] and the store's own tasks run on the edge's
//! own tokio runtime (dropping the runtime is a `kill -9` of the edge as
//! far as the store can tell: its lease stops being renewed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use sip_ka_common::maps::DIALOG_CONFIRMED;

use super::{dialog_key, StoreConfig};
use crate::{
    edge::{
        config::{test_config, DialogOptions},
        session_timer::TimerConfig,
        timer_tests::FakeMap,
        transport::Flow,
        Edge,
    },
    shield::{
        writer::{Announce, Writer},
        Ban, Policy, Prefix, Shield, FOREVER,
    },
    sip::{parse_message, Framing, Limits, SipMessage},
    util::clock,
};

const VIP: &str = "198.18.0.10:5060";
const PBX: &str = "198.18.1.5:5080";
const UA: &str = "198.18.0.2:5062";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A redis-server of this test's own, killed however the test ends.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Redis::on(port)
    }

    fn on(port: u16) -> Redis {
        Redis::with(port, &[])
    }

    fn with(port: u16, extra: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting redis-server (Debian package redis-server): {e}"));
        let r = Redis { child, port };
        wait_for("redis-server to answer", Duration::from_secs(10), || {
            redis::Client::open(r.url())
                .and_then(|c| c.get_connection())
                .is_ok()
        });
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One edge with its own runtime and DIALOGS map.
struct Node {
    edge: Arc<Edge>,
    map: FakeMap,
    rt: Option<tokio::runtime::Runtime>,
}

impl Node {
    fn start(name: &str, redis: &Redis, session_expires: u32) -> Node {
        Node::start_with(name, redis, session_expires, false)
    }

    /// An edge with a shield and its writer (no BANS map), which
    /// announces through the store as the daemon's does.
    fn shielded(name: &str, redis: &Redis) -> Node {
        Node::start_with(name, redis, 1800, true)
    }

    fn start_with(name: &str, redis: &Redis, session_expires: u32, shielded: bool) -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut cfg = test_config(addr(VIP), addr(PBX));
        cfg.timers = TimerConfig::new(1, session_expires, true).unwrap();
        let store = StoreConfig::new(&redis.url(), name).unwrap();
        let opts = DialogOptions {
            store: Some(store.clone()),
            ..DialogOptions::default()
        };
        let map = FakeMap::default();
        let mut edge =
            Edge::with_options(cfg, &opts, Box::new(map.clone()), None, clock::now_ms()).unwrap();
        let shield = shielded.then(|| Shield::new(Policy::default(), Vec::new()));
        edge.shield = shield.clone();
        let (client, store) = rt
            .block_on(super::start::attach(&mut edge, &store, None))
            .unwrap();
        let edge = Arc::new(edge);
        {
            let _in = rt.enter();
            if let Some(shield) = shield {
                let announce: Arc<dyn Announce> = store.clone();
                let mut w = Writer::new(shield.clone(), None, Some(announce));
                w.start();
                tokio::spawn(crate::shield::writer::run(
                    w,
                    shield.take_changes().unwrap(),
                ));
            }
            super::watch::spawn(edge.clone(), store, client);
        }
        let n = Node {
            edge,
            map,
            rt: Some(rt),
        };
        wait_for("the store to connect", Duration::from_secs(5), || {
            n.store().is_up()
        });
        n
    }

    fn store(&self) -> &super::Store {
        self.edge.store.as_deref().unwrap()
    }

    /// The edge dies: its tasks stop, its lease is no longer renewed.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    fn handle(&self, raw: &[u8], from: &str) -> Option<(SipMessage, SocketAddr)> {
        self.edge
            .handle(raw, addr(from), addr(VIP), clock::now_ms())
            .map(|(b, d)| (parse(&b), d.peer()))
    }
}

fn parse(b: &[u8]) -> SipMessage {
    parse_message(b, Framing::Datagram, &Limits::default()).unwrap()
}

fn ua_request(call: &str, method: &str, cseq: u32, to_tag: bool) -> Vec<u8> {
    let to_tag = if to_tag { ";tag=pbx1" } else { "" };
    let branch: String = call.chars().filter(char::is_ascii_alphanumeric).collect();
    format!(
        "{method} sip:service@198.18.0.10:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.18.0.2:5062;branch=z9hG4bK{branch}{method}{cseq};rport\r\n\
         From: <sip:ua@198.18.0.2>;tag=ua1\r\n\
         To: <sip:service@198.18.0.10>{to_tag}\r\n\
         Call-ID: {call}\r\n\
         CSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:ua@198.18.0.2:5062>\r\n\
         Supported: timer\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// INVITE through `n`, the PBX's 200 back through it: a confirmed dialog
/// with a session timer.
fn call(n: &Node, call: &str) {
    let (fwd, dest) = n.handle(&ua_request(call, "INVITE", 1, false), UA).unwrap();
    assert_eq!(dest, addr(PBX));
    let mut ok = fwd.response(200, "OK", Some("pbx1")).unwrap();
    ok.push_header("Contact", "<sip:service@198.18.1.5:5080>");
    let (back, dest) = n.handle(&ok.to_bytes(), PBX).unwrap();
    assert_eq!((back.status_code(), dest), (Some(200), addr(UA)));
    assert!(n.edge.dialogs().known(call), "{call} confirmed");
}

fn owner(r: &Redis, call: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(dialog_key(call))
        .arg("owner")
        .query(&mut r.conn())
        .unwrap()
}

/// Dialogs in the store (tombstones of ended ones not counted).
fn dialog_keys(r: &Redis) -> usize {
    let mut c = r.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("sipka:dlg:*").query(&mut c).unwrap();
    keys.iter()
        .filter(|k| {
            let live: bool = redis::cmd("HEXISTS")
                .arg(k)
                .arg("rec")
                .query(&mut c)
                .unwrap();
            live
        })
        .count()
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn a_dialog_set_up_on_one_edge_is_carried_by_the_other() {
    let redis = Redis::start();
    let a = Node::start("a", &redis, 1800);
    let b = Node::start("b", &redis, 1800);
    let c1 = "ha1@198.18.0.2";
    call(&a, c1);

    // Replicated on B, with its DIALOGS entry (warm standby), and in the
    // store with a TTL bounded by the session's expiry.
    wait_for("B's replica", WAIT, || b.edge.dialogs().replicas_len() == 1);
    let hash = sip_ka_common::callid_hash(c1.as_bytes());
    let entry = b.map.0.lock().unwrap().get(&hash).copied().unwrap();
    assert_eq!(entry.state, DIALOG_CONFIRMED);
    assert!(
        entry.expires_unix > 0,
        "B's DIALOGS entry has the session expiry"
    );
    assert_eq!(owner(&redis, c1).as_deref(), Some("a"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(dialog_key(c1))
        .query(&mut redis.conn())
        .unwrap();
    assert!(ttl > 1_800_000 && ttl <= 1_800_000 + 32_000, "TTL {ttl} ms");
    // B does not run A's timers.
    assert!(!b.edge.dialogs().known(c1));

    // One flow-token key: a token A issued decodes on B.
    let flow = Flow::Udp(addr(UA));
    let token = a.edge.transports.tokens.encode(&flow);
    assert_eq!(b.edge.transports.tokens.decode(&token), Some(flow));

    // A request naming the Call-ID without the dialog's tags moves
    // nothing: 481, and the dialog stays A's.
    let forged = String::from_utf8(ua_request(c1, "OPTIONS", 2, true))
        .unwrap()
        .replace(";tag=ua1", ";tag=forged");
    let (ans, _) = b.handle(forged.as_bytes(), UA).unwrap();
    assert_eq!(ans.status_code(), Some(481));
    assert!(!b.edge.dialogs().known(c1));
    assert_eq!(owner(&redis, c1).as_deref(), Some("a"));

    // The call's traffic moves to B: its keep-alive gets 200 there, B
    // owns the dialog, A keeps it as a replica only.
    let (ans, dest) = b.handle(&ua_request(c1, "OPTIONS", 2, true), UA).unwrap();
    assert_eq!((ans.status_code(), dest), (Some(200), addr(UA)));
    assert!(b.edge.dialogs().known(c1));
    wait_for("B to own it in the store", WAIT, || {
        owner(&redis, c1).as_deref() == Some("b")
    });
    wait_for("A to let it go", WAIT, || {
        !a.edge.dialogs().known(c1) && a.edge.dialogs().replicas_len() == 1
    });
    assert_eq!(b.store().stats.claimed.load(Ordering::Relaxed), 1);
    assert_eq!(a.store().stats.released.load(Ordering::Relaxed), 1);
    // A late plain write of the old owner does not take it back.
    let rec = b.edge.dialogs().owned_records().pop().unwrap();
    let stale = super::Event::Dialog {
        node: "a".into(),
        take: false,
        call_id: c1.into(),
        rec: Box::new(super::pack(&rec)),
    };
    super::watch::apply(&b.edge, b.store(), stale);
    assert!(b.edge.dialogs().known(c1), "B still owns it");

    // BYE through B: gone from the store and from A.
    let (bye, dest) = b.handle(&ua_request(c1, "BYE", 3, true), UA).unwrap();
    assert_eq!(dest, addr(PBX));
    let ok = bye.response(200, "OK", None).unwrap();
    b.handle(&ok.to_bytes(), PBX).unwrap();
    assert!(!b.edge.dialogs().known(c1));
    // A tombstone stays for the grace period: no late write brings the
    // dialog back.
    wait_for("the dialog to leave the store", WAIT, || {
        let (rec, gone): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(dialog_key(c1))
            .arg("rec")
            .arg("gone")
            .query(&mut redis.conn())
            .unwrap();
        rec.is_none() && gone.is_some()
    });
    wait_for("A's replica to go", WAIT, || {
        a.edge.dialogs().replicas_len() == 0 && !a.map.0.lock().unwrap().contains_key(&hash)
    });
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn a_dead_edges_dialogs_are_claimed_once_and_expire_once() {
    let redis = Redis::start();
    // Sessions of 6 s: they fall due after A is dead and its lease gone.
    let mut a = Node::start("a", &redis, 6);
    let b = Node::start("b", &redis, 6);
    let c = Node::start("c", &redis, 6);
    let calls: Vec<String> = (0..5).map(|i| format!("dead{i}@198.18.0.2")).collect();
    for k in &calls {
        call(&a, k);
    }
    wait_for("the replicas", WAIT, || {
        b.edge.dialogs().replicas_len() == 5 && c.edge.dialogs().replicas_len() == 5
    });
    a.kill();
    // The survivors' session-expiry loops, as the daemon runs them.
    let mut ended = [0usize; 2];
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end && ended.iter().sum::<usize>() < 5 {
        for (i, n) in [&b, &c].iter().enumerate() {
            let now = clock::now_ms();
            ended[i] += n.edge.dialogs().expire(now, addr(PBX), addr(VIP)).len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let claimed: u64 = [&b, &c]
        .iter()
        .map(|n| n.store().stats.claimed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(claimed, 5, "each dialog claimed by exactly one survivor");
    assert_eq!(
        ended.iter().sum::<usize>(),
        5,
        "each session expired once: {ended:?}"
    );
    // Nothing fires later either, and the store forgets them.
    std::thread::sleep(Duration::from_millis(500));
    for n in [&b, &c] {
        assert!(n
            .edge
            .dialogs()
            .expire(clock::now_ms(), addr(PBX), addr(VIP))
            .is_empty());
    }
    wait_for("the store to forget them", WAIT, || {
        dialog_keys(&redis) == 0
    });
    wait_for("no replica left", WAIT, || {
        b.edge.dialogs().replicas_len() + c.edge.dialogs().replicas_len() == 0
    });
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn a_store_that_stops_answering_delays_nothing_and_is_filled_again() {
    let redis = Redis::start();
    let a = Node::start("a", &redis, 1800);
    let slowest = |from: usize, to: usize| {
        let mut worst = Duration::ZERO;
        for i in from..to {
            let t = Instant::now();
            call(&a, &format!("away{i}@198.18.0.2"));
            worst = worst.max(t.elapsed());
        }
        worst
    };
    let up = slowest(0, 20);
    wait_for("20 dialogs in the store", WAIT, || {
        dialog_keys(&redis) == 20
    });

    // Redis stops answering (SIGSTOP): calls go on at once, locally.
    redis.signal(libc::SIGSTOP);
    let away = slowest(20, 40);
    wait_for("the edge to notice", Duration::from_secs(10), || {
        !a.store().is_up()
    });
    let more = slowest(40, 50);
    eprintln!(
        "slowest call set-up through the edge: {up:?} with the store up, \
         {away:?} / {more:?} while it stopped answering"
    );
    // Not a speed check: a handler that waited on the store would take
    // its response timeout (2 s) at least.
    assert!(
        away < Duration::from_millis(500) && more < Duration::from_millis(500),
        "SIP handling waited on the store: {away:?} / {more:?}"
    );
    assert_eq!(a.edge.dialogs().len(), 50, "nothing lost locally");

    // Back: everything the edge owns is re-published.
    redis.signal(libc::SIGCONT);
    wait_for(
        "the store to be filled again",
        Duration::from_secs(15),
        || a.store().is_up() && dialog_keys(&redis) == 50,
    );

    // A Redis that comes back empty (restarted) is filled again too.
    let port = redis.port;
    drop(redis);
    let redis = Redis::on(port);
    assert_eq!(dialog_keys(&redis), 0);
    wait_for(
        "the new store to be filled",
        Duration::from_secs(15),
        || dialog_keys(&redis) == 50,
    );
    assert!(a.store().stats.disconnects.load(Ordering::Relaxed) >= 1);
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn a_store_that_refuses_writes_is_not_hammered_and_is_filled_later() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Room for a few hundred dialogs past Redis's own use, then "OOM
    // command not allowed".
    let redis = Redis::with(
        port,
        &["--maxmemory", "1500kb", "--maxmemory-policy", "noeviction"],
    );
    let a = Node::start("a", &redis, 1800);
    let failures = || a.store().stats.write_failures.load(Ordering::Relaxed);
    let mut n = 0;
    while failures() == 0 {
        assert!(n < 5_000, "Redis never refused a write");
        call(&a, &format!("full{n}@198.18.0.2"));
        n += 1;
        if n % 50 == 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Calls go on while Redis refuses; the connection is kept.
    for i in 0..20 {
        call(&a, &format!("more{i}@198.18.0.2"));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(a.store().is_up());
    assert_eq!(a.store().stats.disconnects.load(Ordering::Relaxed), 0);
    let live = a.edge.dialogs().len();
    assert_eq!(live, n + 20, "nothing lost locally");
    assert!(
        dialog_keys(&redis) < live,
        "Redis refused some: {}",
        dialog_keys(&redis)
    );
    // Room again: every dialog is written after the pause.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut redis.conn())
        .unwrap();
    wait_for(
        "the store to hold every dialog",
        Duration::from_secs(40),
        || dialog_keys(&redis) == live,
    );
}

impl Node {
    fn shield(&self) -> &Shield {
        self.edge.shield.as_deref().unwrap()
    }
}

const SCANNER: &str = "203.0.113.9";

fn scanner_ban(ms: u64) -> Ban {
    Ban {
        prefix: Prefix::parse(SCANNER).unwrap(),
        reason: sip_ka_common::maps::BanReason::Scanner,
        evidence: 1,
        strikes: 1,
        since_unix: clock::now_ms() / 1000,
        until_ms: if ms == 0 {
            FOREVER
        } else {
            clock::now_ms() + ms
        },
        note: String::new(),
    }
}

fn banned(n: &Node) -> bool {
    n.shield()
        .is_banned(SCANNER.parse().unwrap(), clock::now_ms())
}

/// The ban key's value and PTTL.
fn ban_key(r: &Redis) -> (Option<String>, i64) {
    let key = super::ban_key(&Prefix::parse(SCANNER).unwrap());
    let mut c = r.conn();
    let v: Option<String> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    let t: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
    (v, t)
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn a_ban_on_one_edge_is_in_force_on_every_edge_and_lifted_with_it() {
    let redis = Redis::start();
    let a = Node::shielded("a", &redis);
    let b = Node::shielded("b", &redis);

    // A decides a ban (as `observe` does: shared).
    let t = Instant::now();
    let ban = scanner_ban(60_000);
    assert!(a.shield().ban(ban.clone(), true));
    wait_for("B to ban the source", Duration::from_secs(1), || banned(&b));
    eprintln!("ban on A in force on B after {:?}", t.elapsed());
    let held = b.shield().table.get(&ban.prefix).unwrap();
    assert_eq!(
        (held.reason, held.evidence, held.strikes),
        (ban.reason, 1, 1)
    );
    assert!(held.until_ms.abs_diff(ban.until_ms) < 1_000, "{held:?}");

    // One key, A's record, its TTL the ban's remaining time.
    let (v, ttl) = ban_key(&redis);
    let rec: super::BanRecord = serde_json::from_str(&v.unwrap()).unwrap();
    assert_eq!((rec.node.as_str(), rec.reason.as_str()), ("a", "scanner"));
    assert!(
        ttl > 60_000 - 2_000 && ttl <= 60_000,
        "TTL {ttl} ms for a ban of 60 s"
    );
    // B applied it without announcing it back: B queued nothing.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.store().stats.queued.load(Ordering::Relaxed), 0);
    assert_eq!(b.store().stats.bans_applied.load(Ordering::Relaxed), 1);

    // An edge that starts later loads it.
    let c = Node::shielded("c", &redis);
    wait_for("C to load the ban", WAIT, || banned(&c));
    assert_eq!(c.store().stats.queued.load(Ordering::Relaxed), 0);

    // Lifted by hand on B (the writer announces it): lifted everywhere,
    // a tombstone in the store for what the ban had left.
    let t = Instant::now();
    b.shield().lift(&ban.prefix, true).unwrap();
    wait_for("A and C to lift it", Duration::from_secs(1), || {
        !banned(&a) && !banned(&c)
    });
    eprintln!("lift on B in force on A and C after {:?}", t.elapsed());
    let (v, ttl) = ban_key(&redis);
    assert!(v.unwrap().starts_with("lifted:"));
    assert!(ttl > 50_000 && ttl <= 60_000, "tombstone TTL {ttl}");
    // An edge that starts now does not take the lifted ban.
    let d = Node::shielded("d", &redis);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!banned(&d));
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn shared_bans_keep_their_end_and_a_ban_without_end_keeps_a_ttl() {
    let redis = Redis::start();
    let a = Node::shielded("a", &redis);
    let b = Node::shielded("b", &redis);
    // A short ban: the key's TTL is what it has left; it ends on both and
    // leaves the store.
    assert!(a.shield().ban(scanner_ban(1_500), true));
    wait_for("B to ban the source", Duration::from_secs(1), || banned(&b));
    let (_, ttl) = ban_key(&redis);
    assert!(ttl > 500 && ttl <= 1_500, "TTL {ttl} ms for a ban of 1.5 s");
    wait_for("the ban to end on both", Duration::from_secs(3), || {
        !banned(&a) && !banned(&b)
    });
    wait_for("the key to expire", Duration::from_secs(2), || {
        ban_key(&redis).0.is_none()
    });

    // By hand, without end: in force everywhere without end, the key
    // with the long TTL.
    let mut manual = scanner_ban(0);
    manual.reason = sip_ka_common::maps::BanReason::Manual;
    manual.note = "ticket 7".into();
    assert!(a.shield().ban(manual.clone(), true));
    wait_for("B to ban the source", Duration::from_secs(1), || banned(&b));
    let held = b.shield().table.get(&manual.prefix).unwrap();
    assert_eq!((held.until_ms, held.note.as_str()), (FOREVER, "ticket 7"));
    let (_, ttl) = ban_key(&redis);
    let long = super::FOREVER_BAN_TTL_MS as i64;
    assert!(ttl > long - 5_000 && ttl <= long, "TTL {ttl}");
}

#[test]
#[ignore = "needs Debian's redis-server; `cargo xtask test` runs it"]
fn bans_survive_a_store_restart_and_a_lift_while_it_is_away_holds() {
    let redis = Redis::start();
    let a = Node::shielded("a", &redis);
    let b = Node::shielded("b", &redis);
    let ban = scanner_ban(120_000);
    assert!(a.shield().ban(ban.clone(), true));
    wait_for("B to ban the source", Duration::from_secs(1), || banned(&b));

    // Redis restarts empty: the edges put the ban back, with its TTL.
    let port = redis.port;
    drop(redis);
    let redis = Redis::on(port);
    wait_for("the ban back in the store", Duration::from_secs(15), || {
        ban_key(&redis).0.is_some()
    });
    let (_, ttl) = ban_key(&redis);
    assert!(ttl > 100_000 && ttl <= 120_000, "TTL {ttl}");

    // Lifted on A while Redis does not answer: the lift waits, reaches B
    // when Redis is back, and nothing puts the ban back on A.
    redis.signal(libc::SIGSTOP);
    a.shield().lift(&ban.prefix, true).unwrap();
    assert!(!banned(&a));
    wait_for("A to notice", Duration::from_secs(10), || {
        !a.store().is_up()
    });
    redis.signal(libc::SIGCONT);
    wait_for("B to lift it", Duration::from_secs(15), || !banned(&b));
    wait_for("the tombstone", Duration::from_secs(5), || {
        ban_key(&redis).0.is_some_and(|v| v.starts_with("lifted:"))
    });
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(!banned(&a) && !banned(&b));
}
