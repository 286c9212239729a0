//! The shield against real scanners (issue 18): SIPVicious (svmap, svwar,
//! svcrack, from PyPI, installed by `cargo xtask setup` into the project's
//! own virtual environment) from one address of the client namespace
//! against `sip-ka run --mode edge` with its defaults, in front of an
//! authenticating PBX stand-in (`common::pbx_auth`); a phone on another
//! address of the same subnet keeps its keep-alives answered and its
//! REGISTER challenged throughout. And no false ban: an office of 200
//! phones behind one address registering at once with digest
//! authentication (sipp).
//!
//! The lab tests need root; `cargo xtask test` (or `-- --include-ignored`)
//! runs them. Every wait and loop is bounded; each test builds its own lab,
//! which removes its namespaces and processes when dropped, pass or fail.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Output,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{
    client_socket, counters, delta,
    edge::{edge_addr, pbx_addr, sipp_in, start_edge, Sipp},
    pbx_auth::{self, PbxAuth},
    text, wait_until, ANSWER_WAIT, SILENCE_WAIT,
};
use sip_ka::lab::{
    self,
    packet::{CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

/// Where `cargo xtask setup` installs SIPVicious (`SIP_KA_VENV`
/// overrides it).
const VENV: &str = "/opt/sip-ka-venv";
/// The scanner: the client namespace's own address.
const SCANNER: Ipv4Addr = CLIENT_V4;
/// A phone on another address of the same /24.
const PHONE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// A second scanner (the brute force alone), same /24.
const CRACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);
/// The most of one scanner's requests that may reach the PBX.
const MOST_AT_PBX: u64 = 20;
/// The extension the phone registers (it exists at the stand-in).
const PHONE_USER: u32 = 1050;

/// A SIPVicious tool, or a loud failure saying how to get it.
fn sipvicious(tool: &str) -> PathBuf {
    let venv = std::env::var_os("SIP_KA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(VENV));
    let path = venv.join("bin").join(format!("sipvicious_{tool}"));
    assert!(
        path.is_file(),
        "{} is missing: the shield tests run the real SIPVicious scanners; \
         `cargo xtask setup` installs them (PyPI package sipvicious) into {}",
        path.display(),
        venv.display()
    );
    path
}

/// Adds `ip`/24 to the client namespace's interface.
fn add_client_address(lab: &Lab, ip: Ipv4Addr) {
    lab::run(
        lab.client("ip")
            .args(["addr", "add", &format!("{ip}/24"), "dev", &lab.client_if]),
    )
    .unwrap_or_else(|e| panic!("adding {ip} to the client namespace: {e:#}"));
}

/// A lab with the edge (its defaults) in front of the stand-in, the
/// phone's and the second scanner's addresses added, and the edge's
/// qualify seen at the stand-in (so the upstream is up).
fn shield_lab() -> (Lab, PbxAuth) {
    let lab = start_edge(&[]);
    add_client_address(&lab, PHONE);
    add_client_address(&lab, CRACKER);
    let pbx = PbxAuth::start(&lab, pbx_addr());
    assert!(
        wait_until(Duration::from_secs(5), || pbx.tally().own > 0),
        "the edge's qualify OPTIONS never reached the PBX stand-in at {}",
        pbx_addr()
    );
    (lab, pbx)
}

/// Makes `ip` the source the client namespace picks for packets to the
/// edge from sockets bound to no address (a host route with `src`).
fn send_from(lab: &Lab, ip: Ipv4Addr) {
    lab::run(lab.client("ip").args([
        "route",
        "replace",
        &format!("{SERVER_V4}/32"),
        "dev",
        &lab.client_if,
        "src",
        &ip.to_string(),
    ]))
    .unwrap_or_else(|e| panic!("routing to the edge from {ip}: {e:#}"));
}

/// Runs a SIPVicious tool from `from` in the client namespace against the
/// edge, killed after `secs`; its output and how long it ran.
///
/// svwar and svcrack 0.3.8 read `-b` (the address to bind) but never use
/// it: they bind to any address, so the namespace's route picks `from`
/// as the source ([`send_from`]); `-x` puts it in their Via.
fn scan(lab: &Lab, secs: u32, tool: &str, from: Ipv4Addr, args: &[&str]) -> (Output, Duration) {
    let exe = sipvicious(tool);
    send_from(lab, from);
    let from = from.to_string();
    let port = edge_addr().port().to_string();
    let target = SERVER_V4.to_string();
    let mut all: Vec<&str> = vec!["-b", &from, "-x", &from, "-p", &port];
    all.extend(args);
    all.push(&target);
    let started = Instant::now();
    let out = common::client_run(lab, secs, &exe.to_string_lossy(), &all);
    let took = started.elapsed();
    // `timeout` says 124 when it had to stop the tool: a hung scanner is a
    // failure of the test's bounds, not a pass.
    assert_ne!(
        out.status.code(),
        Some(124),
        "{tool} {} did not end within {secs} s:\n{}",
        all.join(" "),
        text(&out)
    );
    println!(
        "{tool} {} from {}: {} in {took:.1?}",
        args.join(" "),
        all[1],
        out.status
    );
    (out, took)
}

/// `sip-ka bans --json`.
fn bans(lab: &Lab) -> Vec<serde_json::Value> {
    let out = lab::run(&mut lab.sip_ka(&["bans", "--json"]).expect("sip-ka"))
        .unwrap_or_else(|e| panic!("sip-ka bans --json: {e:#}"));
    match serde_json::from_slice(&out.stdout) {
        Ok(serde_json::Value::Array(a)) => a,
        other => panic!(
            "sip-ka bans --json is not a JSON array: {other:?} ({})",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

/// The ban of `ip` in `sip-ka bans --json`, once it shows (3 s at most).
fn ban_of(lab: &Lab, ip: Ipv4Addr) -> serde_json::Value {
    let names = [ip.to_string(), format!("{ip}/32")];
    let mut last = Vec::new();
    let found = wait_until(Duration::from_secs(3), || {
        last = bans(lab);
        last.iter()
            .any(|b| names.iter().any(|n| b["prefix"].as_str() == Some(n)))
    });
    assert!(found, "{ip} is not in `sip-ka bans --json`: {last:?}");
    last.into_iter()
        .find(|b| names.iter().any(|n| b["prefix"].as_str() == Some(n)))
        .expect("found above")
}

/// Sends `n` CRLF pings from a fresh socket on `from` and counts the
/// pongs that come back (each waited for at most `SILENCE_WAIT`).
fn pongs_to(lab: &Lab, from: Ipv4Addr, port: u16, n: u32) -> u32 {
    let sock = client_socket(lab, SocketAddr::new(from.into(), port));
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut pongs = 0;
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        sock.send_to(CRLF_PING, edge_addr()).expect("send_to");
        let deadline = Instant::now() + SILENCE_WAIT;
        for _ in 0..100 {
            if Instant::now() >= deadline {
                break;
            }
            if let Ok((len, src)) = sock.recv_from(&mut buf) {
                if src == edge_addr() && &buf[..len] == CRLF_PONG {
                    pongs += 1;
                    break;
                }
            }
        }
    }
    pongs
}

/// What the phone saw.
#[derive(Debug, Default)]
struct PhoneLog {
    pings: u32,
    pongs: u32,
    registers: u32,
    challenged: u32,
    /// The first few things that went wrong.
    failures: Vec<String>,
}

/// A phone on [`PHONE`]: a CRLF keep-alive every 100 ms, each waited for;
/// a REGISTER without credentials every 2 s, which must get the PBX's 401.
/// Runs until stopped, at most `MAX_ROUNDS` rounds or 150 s.
struct Phone {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<PhoneLog>>,
}

impl Phone {
    const MAX_ROUNDS: u32 = 1500;
    const MAX_TIME: Duration = Duration::from_secs(150);

    fn start(lab: &Lab) -> Phone {
        let sock = client_socket(lab, SocketAddr::new(PHONE.into(), 5070));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || phone_loop(&sock, &stop))
        };
        Phone {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> PhoneLog {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("phone thread")
            .join()
            .expect("the phone's thread panicked")
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn phone_register(call_id: &str) -> String {
    format!(
        "REGISTER sip:{SERVER_V4} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PHONE}:5070;branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{PHONE_USER}@{SERVER_V4}>;tag=ph{call_id}\r\n\
         To: <sip:{PHONE_USER}@{SERVER_V4}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{PHONE_USER}@{PHONE}:5070>\r\n\
         Expires: 600\r\n\
         User-Agent: Office Phone 1.0\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Waits (`ANSWER_WAIT` at most) for a datagram from the edge that `want`
/// accepts; others are skipped.
fn await_from_edge(sock: &UdpSocket, want: impl Fn(&[u8]) -> bool) -> bool {
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 65_536];
    for _ in 0..1000 {
        if Instant::now() >= deadline {
            return false;
        }
        if let Ok((n, src)) = sock.recv_from(&mut buf) {
            if src == edge_addr() && want(&buf[..n]) {
                return true;
            }
        }
    }
    false
}

fn phone_loop(sock: &UdpSocket, stop: &AtomicBool) -> PhoneLog {
    let mut log = PhoneLog::default();
    let started = Instant::now();
    let fail = |log: &mut PhoneLog, what: String| {
        if log.failures.len() < 10 {
            log.failures
                .push(format!("{what} at {:.1?}", started.elapsed()));
        }
    };
    for round in 0..Phone::MAX_ROUNDS {
        if stop.load(Ordering::SeqCst) || started.elapsed() > Phone::MAX_TIME {
            break;
        }
        log.pings += 1;
        if sock.send_to(CRLF_PING, edge_addr()).is_err() {
            fail(&mut log, format!("ping {round}: send failed"));
        } else if await_from_edge(sock, |d| d == CRLF_PONG) {
            log.pongs += 1;
        } else {
            fail(&mut log, format!("ping {round} unanswered"));
        }
        if round % 20 == 0 {
            let call_id = format!("phone-{round}");
            log.registers += 1;
            let want = format!("Call-ID: {call_id}\r\n");
            let challenged = sock
                .send_to(phone_register(&call_id).as_bytes(), edge_addr())
                .is_ok()
                && await_from_edge(sock, |d| {
                    let t = String::from_utf8_lossy(d);
                    t.starts_with("SIP/2.0 401 ")
                        && t.contains(&want)
                        && t.contains("WWW-Authenticate: Digest ")
                });
            if challenged {
                log.challenged += 1;
            } else {
                fail(&mut log, format!("REGISTER {call_id} not challenged"));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    log
}

/// The phone kept every keep-alive answered and every REGISTER challenged.
#[track_caller]
fn assert_phone_unharmed(log: &PhoneLog) {
    println!("phone {PHONE}: {log:?}");
    assert!(
        log.pings >= 20 && log.registers >= 2,
        "the phone ran too little: {log:?}"
    );
    assert!(
        log.failures.is_empty() && log.pongs == log.pings && log.challenged == log.registers,
        "the phone on {PHONE} was harmed: {log:?}"
    );
}

fn ban_drops(c: &std::collections::BTreeMap<String, u64>) -> u64 {
    c.iter()
        .filter(|(k, _)| k.starts_with("drop_ban_"))
        .map(|(_, v)| v)
        .sum()
}

/// Runs svmap, svwar over 1,000 extensions, then svcrack over 3,000
/// passwords from [`SCANNER`] (`extra` flags for each), checking after
/// each that at most [`MOST_AT_PBX`] of its requests reached the PBX in
/// all; returns the output of svwar.
fn scan_sequence(lab: &Lab, pbx: &PbxAuth, extra: &[&str]) -> String {
    let scanner: IpAddr = SCANNER.into();
    let mut phases = Vec::new();
    let mut at_pbx = |phase: &str, c: &std::collections::BTreeMap<String, u64>| {
        let n = pbx.tally().from(scanner);
        phases.push(format!(
            "{phase}: {n} at the PBX, {} dropped by ban at XDP",
            ban_drops(c)
        ));
        println!("{}", phases.last().expect("pushed"));
        assert!(
            n <= MOST_AT_PBX,
            "{n} of the scanner's requests reached the PBX (at most {MOST_AT_PBX}); {phases:?}; \
             the PBX saw {:?}",
            pbx.tally()
        );
    };
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = extra.to_vec();
        v.extend(args);
        v
    };
    scan(lab, 20, "svmap", SCANNER, &with(&[]));
    at_pbx("after svmap", &counters(lab));
    let (war, _) = scan(
        lab,
        45,
        "svwar",
        SCANNER,
        &with(&["-e100-1099", "-m", "REGISTER"]),
    );
    at_pbx("after svwar", &counters(lab));
    let (crack, _) = scan(lab, 30, "svcrack", SCANNER, &with(&["-u1000", "-r1-3000"]));
    at_pbx("after svcrack", &counters(lab));
    let crack = text(&crack);
    assert!(
        !crack.contains("The password for"),
        "svcrack found a password:\n{crack}"
    );
    text(&war)
}

/// svwar named no extension.
#[track_caller]
fn assert_nothing_listed(svwar: &str) {
    assert!(
        !svwar.contains("exists") && !svwar.contains("we have") && svwar.contains("found nothing"),
        "svwar listed extensions:\n{svwar}"
    );
}

#[test]
#[ignore = "needs root, BPF, network namespaces and SIPVicious; `cargo xtask test` runs it"]
fn sipvicious_is_cut_off_at_xdp() {
    let (lab, pbx) = shield_lab();
    let before = counters(&lab);
    let phone = Phone::start(&lab);
    let svwar = scan_sequence(&lab, &pbx, &[]);
    assert_nothing_listed(&svwar);
    // Later packets from the scanner: dropped at XDP before anything
    // answers them, not even a keep-alive.
    let mid = counters(&lab);
    assert_eq!(
        pongs_to(&lab, SCANNER, 5999, 5),
        0,
        "the banned scanner's keep-alives were answered"
    );
    let after = counters(&lab);
    let d = delta(&before, &after);
    println!("counter changes: {:?}", d.0);
    assert!(
        delta(&mid, &after).get("drop_ban_scanner") >= 5,
        "the scanner's pings were not dropped as banned at XDP: {:?}",
        delta(&mid, &after).0
    );
    assert!(d.get("edge_scanners_dropped") >= 1, "{:?}", d.0);
    let ban = ban_of(&lab, SCANNER);
    assert_eq!(ban["reason"], "scanner", "{ban}");
    assert_phone_unharmed(&phone.finish());
    let t = pbx.tally();
    println!(
        "PBX: {} requests from the scanner, {} from the phone, {} of the edge's own; answers {:?}",
        t.from(SCANNER.into()),
        t.from(PHONE.into()),
        t.own,
        t.answers
    );
    assert!(
        bans(&lab).iter().all(|b| b["prefix"]
            .as_str()
            .is_some_and(|p| !p.starts_with(&PHONE.to_string()))),
        "the phone is banned: {:?}",
        bans(&lab)
    );
}

/// SIPVicious in compact mode (`-c`) sends no User-Agent at all (the
/// tools have no option to set one): the failures, not the name, ban it.
/// Then svcrack alone from a fresh address: its wrong passwords ban it.
#[test]
#[ignore = "needs root, BPF, network namespaces and SIPVicious; `cargo xtask test` runs it"]
fn sipvicious_without_its_user_agent_is_cut_off_by_its_failures() {
    let (lab, pbx) = shield_lab();
    let before = counters(&lab);
    let phone = Phone::start(&lab);
    let svwar = scan_sequence(&lab, &pbx, &["-c"]);
    assert_nothing_listed(&svwar);
    let t = pbx.tally();
    assert!(
        t.answered(SCANNER.into(), 404) >= 1,
        "the disguised svwar never reached the PBX, so no evidence was tested: {t:?}"
    );
    let ban = ban_of(&lab, SCANNER);
    assert_eq!(ban["reason"], "auth", "{ban}");
    let d = delta(&before, &counters(&lab));
    assert_eq!(d.get("edge_scanners_dropped"), 0, "{:?}", d.0);
    assert!(d.get("drop_ban_auth") >= 1, "no drop at XDP: {:?}", d.0);
    // The brute force alone, from an address with no history.
    let mid = counters(&lab);
    let (crack, _) = scan(&lab, 30, "svcrack", CRACKER, &["-c", "-u1000", "-r1-3000"]);
    let t = pbx.tally();
    let (n, refused) = (t.from(CRACKER.into()), t.answered(CRACKER.into(), 403));
    let d = delta(&mid, &counters(&lab));
    println!(
        "svcrack alone: {n} requests at the PBX ({refused} refused 403, {} challenged 401); \
         changes {:?}",
        t.answered(CRACKER.into(), 401),
        d.0
    );
    assert!(
        !text(&crack).contains("The password for"),
        "{}",
        text(&crack)
    );
    assert!(refused >= 1, "svcrack never had a password refused: {t:?}");
    // 10 failures ban (the default); a 401 to a guess's fresh REGISTER
    // without credentials is no evidence, so each guess costs the PBX two
    // requests until then.
    assert!(
        refused <= 12,
        "{refused} wrong passwords reached the PBX (the 10th bans): {t:?}"
    );
    assert!(
        n <= MOST_AT_PBX + 4,
        "{n} of the brute force's requests reached the PBX ({refused} refused): {t:?}"
    );
    assert!(d.get("drop_ban_auth") >= 1, "no drop at XDP: {:?}", d.0);
    assert_eq!(ban_of(&lab, CRACKER)["reason"], "auth");
    assert_phone_unharmed(&phone.finish());
}

/// 200 phones behind one address (sipp, a socket per phone) register at
/// once, 100 per second, each REGISTER, 401, REGISTER with credentials,
/// 200: all succeed and nothing is banned.
#[test]
#[ignore = "needs root, BPF, network namespaces and sipp; `cargo xtask test` runs it"]
fn an_office_behind_one_address_registers_without_a_ban() {
    const PHONES: u32 = 200;
    let (lab, pbx) = shield_lab();
    let dir = std::env::temp_dir().join(format!("{}-office", lab.name));
    std::fs::create_dir_all(&dir).expect("scenario dir");
    std::fs::write(dir.join("office.xml"), OFFICE_SCENARIO).expect("scenario");
    let users: String = (0..PHONES)
        .map(|i| {
            let u = pbx_auth::FIRST_USER + i;
            format!(
                "{u};[authentication username={u} password={}]\n",
                pbx_auth::password(u)
            )
        })
        .collect();
    std::fs::write(dir.join("users.csv"), format!("SEQUENTIAL\n{users}")).expect("users");
    let before = counters(&lab);
    let mut cmd = sipp_in(&lab, true, &dir, 40);
    cmd.args(["-sf", "office.xml", "-inf", "users.csv", "-t", "un"])
        .args(["-i", &CLIENT_V4.to_string()])
        .args([
            "-r",
            "100",
            "-m",
            &PHONES.to_string(),
            "-l",
            &PHONES.to_string(),
        ])
        .args(["-timeout", "30", "-timeout_error", "-max_socket", "1000"])
        .arg(edge_addr().to_string());
    let out = Sipp::spawn(cmd, "office").wait();
    let t = pbx.tally();
    let d = delta(&before, &counters(&lab));
    println!(
        "office: sipp {}; PBX answers to {CLIENT_V4}: 401 x{}, 200 x{}, 403 x{}, 404 x{}; \
         {} registered; changes {:?}",
        out.status,
        t.answered(CLIENT_V4.into(), 401),
        t.answered(CLIENT_V4.into(), 200),
        t.answered(CLIENT_V4.into(), 403),
        t.answered(CLIENT_V4.into(), 404),
        t.registered.len(),
        d.0
    );
    assert!(
        out.status.success(),
        "sipp: not every phone registered ({}):\n{}\nits errors (in {}):\n{}",
        out.status,
        text(&out),
        dir.display(),
        sipp_errors(&dir)
    );
    assert_eq!(
        t.registered.len(),
        PHONES as usize,
        "registered at the PBX: {t:?}"
    );
    assert_eq!(t.answered(CLIENT_V4.into(), 403), 0, "{t:?}");
    let banned = bans(&lab);
    assert!(banned.is_empty(), "banned: {banned:?}");
    assert_eq!(ban_drops(&d.0), 0, "drops by ban: {:?}", d.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The start of sipp's `*_errors.log` files in `dir`.
fn sipp_errors(dir: &std::path::Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with("_errors.log") {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    all.chars().take(4000).collect()
}

/// One phone of the office: REGISTER, the 401, REGISTER with credentials,
/// 200. [field0] is the extension, [field1] its `[authentication ...]`
/// keyword (sipp 3.6 does not expand fields inside that keyword in a
/// scenario, but does take the whole keyword from an injection file).
const OFFICE_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="office phone: REGISTER with digest">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
      User-Agent: Office Phone 1.0
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field1]
      Max-Forwards: 70
      Expires: 3600
      User-Agent: Office Phone 1.0
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// The stand-in itself (no root): a phone's digest handshake, a scan's
/// 404, a wrong password's 403, unreadable input ignored.
#[test]
fn the_pbx_stand_in_answers_like_a_pbx() {
    let register = |user: u32, auth: &str| {
        format!(
            "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bKedge\r\n\
             v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=5070;received=198.18.0.3\r\n\
             f: <sip:{user}@198.18.0.1>;tag=a\r\n\
             t: <sip:{user}@198.18.0.1>\r\n\
             i: c1\r\n\
             CSeq: 1 REGISTER\r\n\
             m: <sip:{user}@10.0.0.5:5060>\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    let (nonce, ours) = ("0000000a00000001", "0000000a");
    let answer = |m: &str| pbx_auth::answer_to(m.as_bytes(), nonce, ours);
    let plain = register(1050, "");
    assert_eq!(
        pbx_auth::source_of(plain.as_bytes()),
        Some("198.18.0.3".parse().unwrap())
    );
    let (code, text) = answer(&plain).expect("an answer");
    assert_eq!(code, 401);
    assert!(
        text.starts_with(
            "SIP/2.0 401 Unauthorized\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bKedge\r\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=5070;received=198.18.0.3\r\n\
             From: <sip:1050@198.18.0.1>;tag=a\r\nTo: <sip:1050@198.18.0.1>;tag=pbx"
        ) && text
            .contains("WWW-Authenticate: Digest realm=\"sip-ka-lab\", nonce=\"0000000a00000001\""),
        "{text}"
    );
    let hex = |s: String| format!("{:x}", md5::compute(s.as_bytes()));
    let ha1 = hex(format!(
        "1050:{}:{}",
        pbx_auth::REALM,
        pbx_auth::password(1050)
    ));
    let ha2 = hex("REGISTER:sip:198.18.0.1".to_string());
    let creds = |response: &str| {
        format!(
            "Authorization: Digest username=\"1050\", realm=\"sip-ka-lab\", nonce=\"{nonce}\", \
             uri=\"sip:198.18.0.1\", response=\"{response}\", algorithm=MD5\r\n"
        )
    };
    let good = hex(format!("{ha1}:{nonce}:{ha2}"));
    let (code, text) = answer(&register(1050, &creds(&good))).expect("an answer");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("Contact: <sip:1050@10.0.0.5:5060>;expires=3600\r\nExpires: 3600\r\n"),
        "{text}"
    );
    assert_eq!(
        answer(&register(1050, &creds("0badc0de"))).map(|a| a.0),
        Some(403)
    );
    assert_eq!(answer(&register(100, "")).map(|a| a.0), Some(404));
    let qualify = "OPTIONS sip:198.18.0.1:5080 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bKq;rport\r\n\
        From: <sip:sip-ka@198.18.0.1:5060>;tag=q\r\nTo: <sip:198.18.0.1:5080>\r\n\
        Call-ID: q1\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(answer(qualify).map(|a| a.0), Some(200));
    for bad in [
        "",
        "\r\n\r\n",
        "hello",
        "REGISTER sip:x SIP/2.0\r\n\r\n",
        "SIP/2.0 200 OK\r\n\r\n",
        "REGISTER sip:x SIP/2.0\r\nVia SIP/2.0/UDP x\r\n\r\n",
    ] {
        assert_eq!(answer(bad), None, "{bad:?}");
    }
}
