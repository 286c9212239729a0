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

    let b = common::delta(&b_before, &lab.counters(1));
    assert_eq!(b.get("edge_ka_unknown_dialog"), 0, "481s from B: {:?}", b.0);
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
    assert_eq!(b.get("edge_sessions_reaped"), 1, "{:?}", b.0);
    let keys = lab.redis_keys("sipka:dlg:*");
    assert!(keys.is_empty(), "dialogs left in Redis: {keys:?}");
    drop(scratch);
    eprintln!(
        "failover_to_the_standby_edge_keeps_every_call: {:?} (VIPs moved in {vip_took:?}, \
         keep-alive outage {gap:?}, short session ended {expired_after:?} after confirmation)",
        started.elapsed()
    );
}
