//! An HA pair of edges (tests/common/ha.rs): keepalived moves the VIPs,
//! Redis holds the shared state.
//!
//! * The failover: calls with session timers set up through edge A; its
//!   host dies (`kill -9` of sip-ka and keepalived, links down); the VIPs
//!   move to B, which answers the calls' keep-alives, forwards their
//!   refreshes, reaps the one left to expire (once), routes the PBX's
//!   request by A's Record-Route token, and carries every BYE. The
//!   keep-alive pinger's outage is the VRRP failover time.
//! * Redis down under load: SIP never waits on it, nothing is lost, and
//!   the store is whole again once Redis is back.
//!
//! Needs root, sipp, keepalived and redis-server; fails and says so
//! otherwise. A plain `cargo test` ignores these tests; `cargo xtask test`
//! (or `-- --include-ignored`) runs them.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{
    edge::Sipp,
    ha::{self, HaLab, PHONES},
    text, wait_until,
};

/// Calls held across the failover.
const CALLS: usize = 50;
const UA_PORT: u16 = 5062;
const SHORT_UA_PORT: u16 = 5064;
/// Session-Expires the edge inserts into the held calls (s).
const LONG_SE: u64 = 1800;
/// Session-Expires of the call left to expire after the failover (s).
const SHORT_SE: u64 = 14;
/// The held calls' pause between their first keep-alive and the rest:
/// the failover happens in it.
const HOLD_MS: u64 = 11_000;
/// The pinger's pace.
const PING_EVERY: Duration = Duration::from_millis(5);

/// A scratch directory for scenarios and traces, removed however the test
/// ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scenario(f: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(f);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The flags both edges run with: the shared store, their node ids, the
/// session timers of the lab.
fn edge_flags(node: &str) -> Vec<String> {
    [
        "--lab",
        "--timers-min-se",
        "2",
        "--timers-sess-expires",
        &LONG_SE.to_string(),
        "--reap-expired",
        "--state-store",
        &ha::store_url(),
        "--node-id",
        node,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts Redis, both edges (A first) and both keepalived; A ends up
/// holding the VIPs.
fn start_pair(lab: &mut HaLab) {
    lab.start_redis();
    for (i, node) in [(0, "edge-a"), (1, "edge-b")] {
        let flags = edge_flags(node);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        lab.start_edge(i, &flags);
    }
    lab.start_keepalived(0);
    lab.start_keepalived(1);
    let took = lab.wait_vip(0, Duration::from_secs(15));
    assert!(
        took.is_some(),
        "edge A did not take the VIPs within 15 s; keepalived A: {}",
        std::fs::read_to_string(lab.run_dir.join("keepalived-A.log")).unwrap_or_default()
    );
}

/// The SIP messages a sipp `-trace_msg` file shows received: (first line,
/// Call-ID).
fn received(log: &Path) -> Vec<(String, String)> {
    let t = std::fs::read_to_string(log).unwrap_or_default();
    t.split("message received")
        .skip(1)
        .filter_map(|m| {
            let mut lines = m.lines().skip(2).map(str::trim);
            let first = lines.find(|l| !l.is_empty())?.to_string();
            let call_id = m
                .lines()
                .map(str::trim)
                .find_map(|l| {
                    l.strip_prefix("Call-ID:")
                        .or_else(|| l.strip_prefix("i:"))
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default();
            Some((first, call_id))
        })
        .collect()
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn failover_to_the_standby_edge_keeps_every_call() {
    let started = Instant::now();
    let mut lab = HaLab::new();
    let scratch = Scratch(std::env::temp_dir().join(format!("{}-ha", lab.tag)));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    start_pair(&mut lab);

    let ka = |cseq: u32| {
        scenario("edge/keepalive.xml")
            .replace("CSEQ", &cseq.to_string())
            .replace("METHOD", "INFO")
    };
    let held = scenario("ha/ua_held.xml")
        .replace("<!-- KEEPALIVE_2 -->", &ka(2))
        .replace("<!-- KEEPALIVE_3 -->", &ka(3))
        .replace("HOLD_MS", &HOLD_MS.to_string())
        .replace("LONG_SE", &LONG_SE.to_string());
    assert!(held.matches("INFO sip:").count() == 2 && !held.contains("HOLD_MS"));
    std::fs::write(scratch.0.join("ua_held.xml"), held).expect("writing ua_held.xml");
    let short = scenario("edge/ua_expire.xml")
        .replace(
            "CSeq: 1 INVITE\n",
            &format!("CSeq: 1 INVITE\n      Supported: timer\n      Session-Expires: {SHORT_SE}\n"),
        )
        .replace("timeout=\"15000\"", "timeout=\"40000\"");
    assert!(short.contains("Session-Expires: ") && short.contains("40000"));
    std::fs::write(scratch.0.join("ua_short.xml"), short).expect("writing ua_short.xml");
    std::fs::write(scratch.0.join("pbx.xml"), scenario("ha/pbx.xml")).expect("writing pbx.xml");

    let mut cmd = lab.sipp(false, &scratch.0, 80);
    cmd.args(["-sf", "pbx.xml", "-i", &ha::PBX.to_string()])
        .args(["-p", &ha::PBX_PORT.to_string(), "-recv_timeout", "60000"])
        .args(["-trace_msg", "-message_file", "pbx_msgs.log"]);
    let pbx = Sipp::spawn(cmd, "PBX");
    std::thread::sleep(Duration::from_millis(300));

    let mut cmd = lab.sipp(true, &scratch.0, 60);
    cmd.args(["-sf", "ua_held.xml", "-s", "service"])
        .args(["-m", &CALLS.to_string(), "-r", "100", "-l", "200"])
        .args(["-i", &PHONES.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "30000", "-timeout", "60s"])
        .arg(ha::vip().to_string());
    let uas = Sipp::spawn(cmd, "held phones");

    // The calls are up on A, with the inserted timer and their first INFO
    // counted by A's XDP.
    let mut on_a = BTreeMap::new();
    let up = wait_until(Duration::from_secs(10), || {
        on_a = lab.dialogs(0);
        on_a.len() == CALLS
            && on_a.values().all(|d| {
                d["state"] == "confirmed"
                    && d["session_interval_secs"] == LONG_SE
                    && d["ka_count"] == 1
            })
    });
    assert!(
        up,
        "want {CALLS} confirmed dialogs on A with SE {LONG_SE} and one keep-alive each, got {}: {:?}",
        on_a.len(),
        on_a.values().take(3).collect::<Vec<_>>()
    );

    let mut cmd = lab.sipp(true, &scratch.0, 60);
    cmd.args(["-sf", "ua_short.xml", "-s", "service", "-m", "1"])
        .args(["-i", &PHONES.to_string(), "-p", &SHORT_UA_PORT.to_string()])
        .args(["-cid_str", "short-%u-%p@%s"])
        .args(["-recv_timeout", "40000", "-timeout", "60s"])
        .arg(ha::vip().to_string());
    let short_ua = Sipp::spawn(cmd, "short phone");
    let short_up = wait_until(Duration::from_secs(5), || {
        on_a = lab.dialogs(0);
        on_a.len() == CALLS + 1
            && on_a
                .values()
                .any(|d| d["session_interval_secs"] == SHORT_SE && d["state"] == "confirmed")
    });
    let confirmed = Instant::now();
    assert!(
        short_up,
        "the short call (SE {SHORT_SE}) is not confirmed on A"
    );

    // The standby's view before the failover (asserted after the VRRP
    // part, which holds without shared state).
    std::thread::sleep(Duration::from_millis(500));
    let standby = lab.dialogs(1);
    let b_before = lab.counters(1);

    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let sock = lab.phone_socket(
            "198.18.10.2:0".parse().expect("addr"),
            Duration::from_millis(10),
        );
        let stop = stop.clone();
        std::thread::spawn(move || ha::pinger(sock, PING_EVERY, stop))
    };
    std::thread::sleep(Duration::from_millis(700));

    let killed = Instant::now();
    lab.kill_edge_host(0);
    let moved = lab.wait_vip(1, Duration::from_secs(15));
    let keepalived_b =
        std::fs::read_to_string(lab.run_dir.join("keepalived-B.log")).unwrap_or_default();
    let vip_took = moved.unwrap_or_else(|| {
        panic!("the VIPs did not move to B within 15 s of A's death; keepalived B: {keepalived_b}")
    });
    // The short session expires SHORT_SE after its confirmation on A,
    // reaped by B.
    let short_out = short_ua.wait();
    let expired_after = confirmed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let pings = pinger.join().expect("pinger thread");
    let (gap, lost) = ha::ping_gap(&pings, killed).unwrap_or((Duration::ZERO, 0));
    let tail = &pings[pings.len().saturating_sub(200)..];
    assert!(
        pings.len() >= 1000 && tail.iter().all(|p| p.answered),
        "keep-alives not answered again after the failover: {} of the last {} unanswered ({} sent)",
        tail.iter().filter(|p| !p.answered).count(),
        tail.len(),
        pings.len()
    );
    assert!(
        pings.iter().filter(|p| p.at < killed).all(|p| p.answered),
        "keep-alives went unanswered before the failover"
    );
    let stun_after = pings
        .iter()
        .filter(|p| p.at > killed + gap && p.stun && p.answered)
        .count();
    assert!(stun_after >= 100, "only {stun_after} STUN answers from B");
    // A dead master is noticed after 3 adverts plus B's skew.
    let vrrp_down = Duration::from_millis(3000 * ha::ADVERT_INT as u64 + 1000);
    assert!(
        gap >= Duration::from_millis(2000) && gap <= vrrp_down + Duration::from_secs(2),
        "keep-alive outage {gap:?} ({lost} lost), want about the VRRP failover time \
         {vrrp_down:?}; keepalived B: {keepalived_b}"
    );
    eprintln!(
        "failover: VIPs on B {vip_took:?} after A's death; keep-alive outage {gap:?} \
         ({lost} of {} pings lost)",
        pings.len()
    );

    // Warm standby: B held every dialog before the failover.
    assert_eq!(
        standby.keys().collect::<Vec<_>>(),
        on_a.keys().collect::<Vec<_>>(),
        "B's DIALOGS map before the failover differs from A's"
    );

    assert!(
        short_out.status.success(),
        "the short call's phone got no BYE after the failover: {}",
        text(&short_out)
    );
    assert!(
        expired_after >= Duration::from_secs(SHORT_SE - 1)
            && expired_after <= Duration::from_secs(SHORT_SE + 3),
        "the short session ended {expired_after:?} after its confirmation (SE {SHORT_SE} s)"
    );

    // Every held call: INFO answered 200 by B, UPDATE to the PBX and back,
    // the PBX's INFO by A's Record-Route token through B, BYE.
    let uas_out = uas.wait();
    assert!(
        uas_out.status.success(),
        "held phones after the failover: {}\nedge B: {}",
        text(&uas_out),
        lab.edge_log(1)
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut left = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            left = lab.dialogs(1);
            left.is_empty()
        }),
        "after the BYEs: {} dialogs left on B",
        left.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let pbx_out = pbx.finish();
    assert!(pbx_out.status.success(), "PBX: {}", text(&pbx_out));

    let msgs = received(&scratch.0.join("pbx_msgs.log"));
    let short_byes = msgs
        .iter()
        .filter(|(l, c)| l.starts_with("BYE ") && c.starts_with("short-"))
        .count();
    assert_eq!(short_byes, 1, "BYEs the PBX got for the expired call");
    let updates = msgs
        .iter()
        .filter(|(l, _)| l.starts_with("UPDATE "))
        .count();
    assert_eq!(updates, CALLS, "refreshes that reached the PBX");
    // The only responses the PBX gets: the phones' 200s to its INFOs.
    let info_ok: BTreeSet<&String> = msgs
        .iter()
        .filter(|(l, _)| l.starts_with("SIP/2.0 200"))
        .map(|(_, c)| c)
        .collect();
    assert_eq!(
        info_ok.len(),
        CALLS,
        "calls whose phone answered the PBX's INFO"
    );

    // STATS is published every 500 ms: the reap may be that recent.
    let mut b = common::delta(&b_before, &lab.counters(1));
    wait_until(Duration::from_secs(2), || {
        b = common::delta(&b_before, &lab.counters(1));
        b.get("edge_sessions_reaped") > 0
    });
    assert_eq!(b.get("edge_ka_unknown_dialog"), 0, "481s from B: {:?}", b.0);
    // A's Record-Route tokens decoded on B (a token B could not decode
    // gets 403 and fails the PBX's INFO).
    assert_eq!(b.get("edge_flow_failed"), 0, "{:?}", b.0);
    assert!(
        b.get("edge_ka_in_dialog_ok") >= CALLS as u64,
        "in-dialog keep-alives B answered: {:?}",
        b.0
    );
    assert!(
        b.get("ka_in_dialog") >= CALLS as u64,
        "in-dialog keep-alives B's XDP found in DIALOGS: {:?}",
        b.0
    );
    assert_eq!(
        (
            b.get("edge_sessions_expired"),
            b.get("edge_sessions_reaped")
        ),
        (1, 1),
        "sessions B expired and reaped: {:?}; B's log: {}",
        b.0,
        lab.edge_log(1)
            .lines()
            .filter(|l| l.contains("expire") || l.contains("reap") || l.contains("store"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let keys = lab.live_dialog_keys();
    assert!(keys.is_empty(), "dialogs left in Redis: {keys:?}");
    drop(scratch);
    eprintln!(
        "failover_to_the_standby_edge_keeps_every_call: {:?} (VIPs moved in {vip_took:?}, \
         keep-alive outage {gap:?}, short session ended {expired_after:?} after confirmation)",
        started.elapsed()
    );
}

/// Held calls through the Redis outage.
const HELD: usize = 30;
/// Their in-dialog INFOs, one every [`HELD_KA_EVERY_MS`]: they last
/// (36 s) until the store has been checked after the outage.
const HELD_KAS: usize = 72;
const HELD_KA_EVERY_MS: u64 = 500;

/// One timed transaction of the prober.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    /// INVITE, INFO or BYE.
    method: &'static str,
    /// Request sent to final response; None: no answer within a second.
    took: Option<Duration>,
}

/// A phone of the test's own in the phones' namespace: calls through the
/// edge pair one after another (INVITE, ACK, an in-dialog INFO the edge
/// answers, BYE), timing each transaction, until `stop` (or 60 s, or 3000
/// calls).
fn prober(sock: std::net::UdpSocket, stop: Arc<AtomicBool>) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let local = sock.local_addr().expect("local addr");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    // Sends `req` and waits for its final response (the status line's
    // code >= 200 for this CSeq); returns the response.
    let mut transact = |req: String, method: &'static str, cseq: &str, out: &mut Vec<Sample>| {
        let at = Instant::now();
        sock.send_to(req.as_bytes(), ha::vip()).expect("send_to");
        while at.elapsed() < Duration::from_secs(1) {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let r = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = r
                .strip_prefix("SIP/2.0 ")
                .and_then(|s| s.get(..3))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if code >= 200 && r.contains(cseq) {
                out.push(Sample {
                    at,
                    method,
                    took: Some(at.elapsed()),
                });
                return (code == 200).then_some(r);
            }
        }
        out.push(Sample {
            at,
            method,
            took: None,
        });
        None
    };
    for n in 0..3000u32 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let call_id = format!("probe-{n}-{}@{PHONES}", std::process::id());
        let head = |method: &str, cseq: u32, to: &str| {
            format!(
                "{method} sip:service@{vip} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bKprobe{n}x{cseq}{method};rport\r\n\
                 From: <sip:probe@{local}>;tag=probe{n}\r\n\
                 To: {to}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {cseq} {method}\r\n\
                 Contact: <sip:probe@{local}>\r\n\
                 Max-Forwards: 70\r\n",
                vip = ha::vip()
            )
        };
        let sdp = format!(
            "v=0\r\no=probe 1 1 IN IP4 {PHONES}\r\ns=-\r\nc=IN IP4 {PHONES}\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\n"
        );
        let invite = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            head("INVITE", 1, &format!("<sip:service@{}>", ha::vip())),
            sdp.len()
        );
        let Some(ok) = transact(invite, "INVITE", "1 INVITE", &mut out) else {
            continue;
        };
        let Some(to) = ok
            .lines()
            .find_map(|l| l.strip_prefix("To:").map(|v| v.trim().to_string()))
        else {
            continue;
        };
        let ack = format!("{}Content-Length: 0\r\n\r\n", head("ACK", 1, &to));
        sock.send_to(ack.as_bytes(), ha::vip()).expect("send_to");
        let info = format!("{}Content-Length: 0\r\n\r\n", head("INFO", 2, &to));
        transact(info, "INFO", "2 INFO", &mut out);
        let bye = format!("{}Content-Length: 0\r\n\r\n", head("BYE", 3, &to));
        transact(bye, "BYE", "3 BYE", &mut out);
        std::thread::sleep(Duration::from_millis(5));
    }
    out
}

/// (median, 99th percentile, max, unanswered) of the samples of `method`
/// sent in `[from, to)`.
fn latency(
    s: &[Sample],
    method: &str,
    from: Instant,
    to: Instant,
) -> (Duration, Duration, Duration, usize, usize) {
    let mut t: Vec<Duration> = s
        .iter()
        .filter(|x| x.method == method && x.at >= from && x.at < to)
        .filter_map(|x| x.took)
        .collect();
    let lost = s
        .iter()
        .filter(|x| x.method == method && x.at >= from && x.at < to && x.took.is_none())
        .count();
    t.sort();
    let at = |q: f64| t.get(((t.len() as f64 * q) as usize).min(t.len().saturating_sub(1)));
    (
        at(0.5).copied().unwrap_or_default(),
        at(0.99).copied().unwrap_or_default(),
        t.last().copied().unwrap_or_default(),
        t.len(),
        lost,
    )
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn redis_down_under_load_delays_nothing_and_the_store_is_whole_again() {
    let started = Instant::now();
    let mut lab = HaLab::new();
    let scratch = Scratch(std::env::temp_dir().join(format!("{}-redis", lab.tag)));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    start_pair(&mut lab);

    // Held calls: an INFO every HELD_KA_EVERY_MS (answered by the edge:
    // a 481 or no answer fails the call), then BYE.
    let blocks: String = (0..HELD_KAS)
        .map(|i| {
            format!(
                "<pause milliseconds=\"{HELD_KA_EVERY_MS}\"/>\n{}",
                scenario("edge/keepalive.xml")
                    .replace("CSEQ", &(2 + i).to_string())
                    .replace("METHOD", "INFO")
            )
        })
        .collect();
    let held = scenario("edge/ua_call.xml")
        .replace("<!-- IN_DIALOG -->", &blocks)
        .replace("HOLD_MS", "0");
    std::fs::write(scratch.0.join("ua_held.xml"), held).expect("writing ua_held.xml");
    std::fs::write(scratch.0.join("pbx.xml"), scenario("edge/pbx_uas.xml"))
        .expect("writing pbx.xml");
    let mut cmd = lab.sipp(false, &scratch.0, 80);
    cmd.args(["-sf", "pbx.xml", "-i", &ha::PBX.to_string()])
        .args(["-p", &ha::PBX_PORT.to_string(), "-recv_timeout", "60000"]);
    let pbx = Sipp::spawn(cmd, "PBX");
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = lab.sipp(true, &scratch.0, 60);
    cmd.args(["-sf", "ua_held.xml", "-s", "service"])
        .args(["-m", &HELD.to_string(), "-r", "100", "-l", "100"])
        .args(["-i", &PHONES.to_string(), "-p", &UA_PORT.to_string()])
        .args(["-recv_timeout", "10000", "-timeout", "60s"])
        .arg(ha::vip().to_string());
    let uas = Sipp::spawn(cmd, "held phones");
    assert!(
        wait_until(Duration::from_secs(10), || lab.dialogs(0).len() == HELD
            && lab.live_dialog_keys().len() == HELD),
        "want {HELD} dialogs on A and in Redis: {} and {}",
        lab.dialogs(0).len(),
        lab.live_dialog_keys().len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let sock = lab.phone_socket(
            "198.18.10.2:0".parse().expect("addr"),
            Duration::from_millis(10),
        );
        let stop = stop.clone();
        std::thread::spawn(move || prober(sock, stop))
    };
    let phase = Duration::from_secs(4);
    let t0 = Instant::now();
    std::thread::sleep(phase);
    // Frozen: the connection stays open, nothing answers.
    let t1 = Instant::now();
    lab.signal_redis(libc::SIGSTOP);
    std::thread::sleep(phase);
    lab.signal_redis(libc::SIGCONT);
    let t2 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // What the frozen Redis missed has been written since: the held
    // calls, and of the ~100 probe calls a second made meanwhile, at most
    // the one in progress.
    let thawed = lab.live_dialog_keys();
    // Gone, then back empty (no persistence).
    let t3 = Instant::now();
    lab.kill_redis();
    let down = wait_until(Duration::from_secs(3), || {
        lab.counters(0).get("edge_store_up") == Some(&0)
    });
    std::thread::sleep(phase.saturating_sub(t3.elapsed()));
    lab.start_redis();
    let t4 = Instant::now();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let samples = probe.join().expect("prober thread");
    let t5 = Instant::now();

    let mut rows = Vec::new();
    for (name, from, to) in [
        ("up", t0, t1),
        ("frozen (SIGSTOP)", t1, t2),
        ("up again", t2, t3),
        ("killed", t3, t4),
        ("restarted", t4, t5),
    ] {
        for m in ["INVITE", "INFO", "BYE"] {
            rows.push((name, m, latency(&samples, m, from, to)));
        }
    }
    let mut table =
        String::from("Redis        request  n     median     p99       max       lost\n");
    for (name, m, (med, p99, max, n, lost)) in &rows {
        table.push_str(&format!(
            "{name:<18} {m:<7} {n:>5} {med:>9.2?} {p99:>9.2?} {max:>9.2?} {lost:>4}\n"
        ));
    }
    eprintln!("{table}");
    assert!(down, "A's store_up did not drop to 0 with Redis killed");
    for (i, (name, m, (med, p99, _, n, lost))) in rows.iter().enumerate() {
        assert!(*n >= 20, "{name} {m}: only {n} answered\n{table}");
        assert_eq!(*lost, 0, "{name} {m}: unanswered\n{table}");
        // Against the same request while Redis was up: a request that
        // waited on Redis would take its timeout, not a few ms more.
        let (up_med, up_p99) = (rows[i % 3].2 .0, rows[i % 3].2 .1);
        assert!(
            *med <= up_med + Duration::from_millis(3)
                && *p99 <= up_p99 * 2 + Duration::from_millis(10),
            "{name} {m}: slower than with Redis up\n{table}"
        );
    }
    let probes = thawed.iter().filter(|k| k.contains("probe-")).count();
    assert!(
        thawed.len() - probes == HELD && probes <= 1,
        "after SIGCONT Redis holds {} held and {probes} probe dialogs, want {HELD} and at most 1",
        thawed.len() - probes
    );

    // The store holds every live dialog again: A's re-publish. (A probe
    // call just ended may linger in DIALOGS as terminating.)
    let mut keys = Vec::new();
    let mut live = BTreeSet::new();
    let whole = wait_until(Duration::from_secs(10), || {
        keys = lab.live_dialog_keys();
        live = lab
            .dialogs(0)
            .into_iter()
            .filter(|(_, d)| d["state"] != "terminating")
            .map(|(h, _)| h)
            .collect();
        let hashes: BTreeSet<String> = keys
            .iter()
            .map(|k| {
                let id = k.strip_prefix("sipka:dlg:").unwrap_or(k);
                format!("{:016x}", sip_ka_common::callid::callid_hash(id.as_bytes()))
            })
            .collect();
        hashes == live
    });
    assert!(
        whole,
        "Redis holds {} dialogs, A {} live: {:?}; A's store_up {:?}; A's log: {}",
        keys.len(),
        live.len(),
        lab.dialogs(0),
        lab.counters(0).get("edge_store_up"),
        lab.edge_log(0)
            .lines()
            .filter(|l| l.contains("store"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        live.len(),
        HELD,
        "live dialogs on A after the outage; A's log: {}",
        lab.edge_log(0)
            .lines()
            .filter(|l| l.contains("store") || l.contains("WARN") || l.contains("expired"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(lab.counters(0).get("edge_store_up"), Some(&1));

    let uas_out = uas.wait();
    assert!(uas_out.status.success(), "held phones: {}", text(&uas_out));
    assert!(
        wait_until(Duration::from_secs(5), || lab.live_dialog_keys().is_empty()),
        "dialogs left in Redis after the BYEs"
    );
    let mut left = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            left = lab.dialogs(0);
            left.is_empty()
        }),
        "dialogs left on A after the BYEs: {left:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let pbx_out = pbx.finish();
    assert!(pbx_out.status.success(), "PBX: {}", text(&pbx_out));
    drop(scratch);
    eprintln!(
        "redis_down_under_load_delays_nothing_and_the_store_is_whole_again: {:?}",
        started.elapsed()
    );
}

/// The operator's examples (packaging/ha/): the sip-ka files pass `sip-ka
/// config check` with the shared store and distinct node ids, and the
/// keepalived file reads as A's and as B's the way the lab runs it
/// (keepalived itself runs it in the tests above).
#[test]
fn the_ha_examples_are_what_the_lab_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ha");
    let exe = sip_ka::lab::sip_ka_exe().expect("sip-ka binary");
    let mut nodes = BTreeSet::new();
    for f in ["sip-ka-a.toml", "sip-ka-b.toml"] {
        let out = common::run_capture(
            std::process::Command::new(&exe)
                .args(["config", "check"])
                .arg(dir.join(f)),
        );
        let t = text(&out);
        assert!(out.status.success(), "sip-ka config check {f}: {t}");
        assert!(
            t.contains("state_store = \"redis://10.0.0.5:6379/0\"    # file")
                && t.contains("listen = [\"203.0.113.10:5060\"]    # file")
                && t.contains("mode = \"edge\"    # file"),
            "{f}: {t}"
        );
        let node = t
            .lines()
            .find(|l| l.starts_with("node_id = ") && l.contains("# file"))
            .unwrap_or_else(|| panic!("{f} sets no node_id: {t}"));
        nodes.insert(node.to_string());
    }
    assert_eq!(
        nodes.len(),
        2,
        "the two edges need distinct node ids: {nodes:?}"
    );

    let example = std::fs::read_to_string(dir.join("keepalived.conf")).expect("keepalived.conf");
    let (a, b) = (
        ha::example_for(&example, false),
        ha::example_for(&example, true),
    );
    for (conf, want) in [
        (
            &a,
            [
                "router_id sip-ka-a",
                "state MASTER",
                "priority 150",
                "unicast_src_ip 203.0.113.11",
            ],
        ),
        (
            &b,
            [
                "router_id sip-ka-b",
                "state BACKUP",
                "priority 100",
                "unicast_src_ip 203.0.113.12",
            ],
        ),
    ] {
        for w in want {
            assert!(conf.lines().any(|l| l.trim() == w), "want `{w}` in\n{conf}");
        }
        assert!(
            conf.lines()
                .any(|l| l.trim() == format!("advert_int {}", ha::ADVERT_INT)),
            "the lab's failover bound assumes advert_int {}:\n{conf}",
            ha::ADVERT_INT
        );
        assert!(!conf.contains('#'), "{conf}");
    }
    let peers = |c: &str| {
        let l: Vec<&str> = c.lines().map(str::trim).collect();
        let at = l
            .iter()
            .position(|x| x.starts_with("unicast_peer"))
            .expect("unicast_peer");
        l[at + 1].to_string()
    };
    assert_eq!(
        (peers(&a).as_str(), peers(&b).as_str()),
        ("203.0.113.12", "203.0.113.11")
    );
}
