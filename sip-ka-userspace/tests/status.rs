//! `sip-ka status` against a running edge in a lab: every field of the
//! screen checked against the kernel (XDP program id), the process (pid)
//! and what the test sent (pings, a TCP connection, a PBX that answers
//! its qualify); and `stats --watch` bounded by `--count`. Without a
//! daemon, `status` says so and exits 1.
//!
//! Needs root and sipp (`cargo xtask setup`); fails and says so otherwise.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    time::Duration,
};

use common::{
    client_socket,
    edge::{edge_addr, sipp_in, start_edge, Sipp, PBX_PORT},
    exchange, in_ns, text, wait_until, ANSWER_WAIT,
};
use sip_ka::lab::{
    self,
    packet::{CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

fn status_json(lab: &Lab) -> serde_json::Value {
    let out = lab::run(&mut lab.sip_ka(&["status", "--json"]).expect("sip-ka"))
        .unwrap_or_else(|e| panic!("sip-ka status --json: {e:#}"));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The id of the XDP program the kernel has on the lab's interface.
fn kernel_prog_id(lab: &Lab) -> u64 {
    let out = lab::run(
        lab.server("ip")
            .args(["-d", "-j", "link", "show", "dev"])
            .arg(&lab.server_if),
    )
    .expect("ip -d -j link show");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip JSON");
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {}: {v}", lab.server_if))
}

/// The value after `label` at the start of a line of the screen.
fn field<'a>(screen: &'a str, label: &str) -> &'a str {
    screen
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} line on the screen:\n{screen}"))
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn status_screen_matches_the_running_edge() {
    let lab = start_edge(&[]);
    let dir = std::env::temp_dir().join(format!("{}-status", lab.name));
    std::fs::create_dir_all(&dir).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edge");
    std::fs::copy(here.join("pbx_uas.xml"), dir.join("pbx_uas.xml")).unwrap();
    let mut pbx = sipp_in(&lab, false, &dir, 60);
    pbx.args(["-sf", "pbx_uas.xml"])
        .args(["-i", &SERVER_V4.to_string(), "-p", &PBX_PORT.to_string()])
        .args(["-recv_timeout", "20000"]);
    let mut pbx = Sipp::spawn(pbx, "PBX");

    // The PBX answered a qualify, and the daemon has a first sample: the
    // pings below all fall inside the rates' window.
    let mut st = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            st = status_json(&lab);
            st["pbx_up"] == true && st["window_secs"].is_f64()
        }),
        "PBX never up or no history: {st}"
    );
    const CRLF: u64 = 25;
    let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    for i in 0..CRLF {
        let r = exchange(&sock, edge_addr(), CRLF_PING, ANSWER_WAIT);
        assert_eq!(r.map(|r| r.0), Some(CRLF_PONG.to_vec()), "ping {i}");
    }
    let to = edge_addr();
    let mut tcp = in_ns(&lab.client_ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("TCP to the edge")
    });
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(CRLF_PING).unwrap();
    let mut pong = [0u8; 2];
    tcp.read_exact(&mut pong).expect("pong on TCP");
    // Every ping answered is in the daemon's next sample (every 0.5 s).
    assert!(
        wait_until(Duration::from_secs(5), || {
            st = status_json(&lab);
            st["keepalives"]["crlf"]["answered"] == CRLF + 1
        }),
        "crlf answered in the window: {st}"
    );
    let secs = st["window_secs"].as_f64().unwrap();
    let rate = st["keepalives"]["crlf"]["per_second"].as_f64().unwrap();
    assert!(
        secs > 0.0 && secs <= 61.0 && ((rate * secs) - (CRLF + 1) as f64).abs() < 1e-6,
        "rate {rate}/s over {secs} s: {st}"
    );
    assert_eq!(st["keepalives"]["stun"]["answered"], 0, "{st}");

    let out = lab::run(&mut lab.sip_ka(&["status"]).expect("sip-ka")).expect("sip-ka status");
    let screen = String::from_utf8(out.stdout).unwrap();
    eprintln!("{screen}");
    // pid: a `sip-ka run` with this lab's pin dir.
    let head = screen.lines().next().unwrap_or_default();
    let pid: u32 = head
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {head:?}"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the pid's cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(" run ") && cmdline.contains(&*lab.pin_dir.to_string_lossy()),
        "pid {pid} is not this lab's daemon: {cmdline}"
    );
    assert!(
        head.contains(": running, ") && head.contains(", up "),
        "{head}"
    );
    assert_eq!(
        field(&screen, "interface"),
        format!(
            "{} (XDP native, program id {})",
            lab.server_if,
            kernel_prog_id(&lab)
        )
    );
    assert_eq!(field(&screen, "pin dir"), lab.pin_dir.to_string_lossy());
    assert_eq!(field(&screen, "mode"), "edge");
    let pbx_line = field(&screen, "PBX");
    let rtt: f64 = pbx_line
        .strip_prefix("up, RTT ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("PBX line {pbx_line:?}"));
    assert!(rtt > 0.0 && rtt < 1000.0, "RTT {rtt} ms");
    assert_eq!(field(&screen, "dialogs"), "0 live");
    assert_eq!(
        field(&screen, "connections"),
        "1 TCP, 0 TLS, 0 WS, 0 WSS, 0 in handshake"
    );
    assert!(
        screen.contains("keep-alives answered per second, last "),
        "{screen}"
    );
    let crlf = field(&screen, "  crlf");
    assert!(crlf.ends_with(&format!("/s  ({})", CRLF + 1)), "{crlf:?}");
    drop(tcp);

    // stats --watch: three screens a second apart; pings sent while it
    // runs show in the per-second column as the change over the interval.
    let watch = lab
        .sip_ka(&["stats", "--watch", "--count", "3"])
        .expect("sip-ka")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sip-ka stats --watch");
    std::thread::sleep(Duration::from_millis(300));
    const MORE: u64 = 10;
    for i in 0..MORE {
        let r = exchange(&sock, edge_addr(), CRLF_PING, ANSWER_WAIT);
        assert_eq!(r.map(|r| r.0), Some(CRLF_PONG.to_vec()), "ping {i}");
    }
    let out = watch.wait_with_output().expect("stats --watch");
    assert!(out.status.success(), "{}", text(&out));
    let watch = String::from_utf8(out.stdout).unwrap();
    eprintln!("{watch}");
    let headers = watch.lines().filter(|l| l.starts_with("counter ")).count();
    assert_eq!(headers, 3, "{watch}");
    let pongs: Vec<(u64, Option<f64>)> = watch
        .lines()
        .filter(|l| l.starts_with("crlf_pong_sent "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].parse().expect("total"), f[2].parse().ok())
        })
        .collect();
    assert_eq!(pongs.len(), 3, "{watch}");
    assert_eq!(pongs[0].1, None, "no rate on the first screen: {watch}");
    assert_eq!(pongs[2].0 - pongs[0].0, MORE, "{watch}");
    for w in pongs.windows(2) {
        let (change, rate) = (w[1].0 - w[0].0, w[1].1.expect("a rate"));
        // The interval is the 1 s sleep plus a read of STATS.
        assert!(
            rate <= change as f64 && rate >= change as f64 / 1.5,
            "rate {rate}/s for a change of {change} in about 1 s: {watch}"
        );
    }
    assert!(
        watch
            .lines()
            .filter(|l| l.starts_with("edge_pbx_rtt_us "))
            .all(|l| l.trim_end().ends_with(" -")),
        "a gauge has no rate: {watch}"
    );
    pbx.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a daemon `status` says so and exits 1; `sip-ka status`'s
/// control socket is not there.
#[test]
fn status_without_a_daemon_says_so_and_exits_1() {
    let pin_dir = std::env::temp_dir().join(format!("sip-ka-status-none-{}", std::process::id()));
    let out = Command::new(lab::sip_ka_exe().expect("sip-ka binary"))
        .arg("status")
        .arg("--pin-dir")
        .arg(&pin_dir)
        .output()
        .expect("sip-ka status");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("no sip-ka daemon") && msg.contains(&*pin_dir.to_string_lossy()),
        "{msg}"
    );
    assert!(out.stdout.is_empty());
}
