//! Browser phones through the edge, with the real WebSocket SIP stacks
//! from npm (`cargo xtask setup` installs them in /opt/sip-ka-node):
//! SIP.js and JsSIP in Node register over WS and over WSS through the
//! edge to Kamailio (registrar with Path, the PBX) and send each other a
//! MESSAGE; SIP.js in headless Chromium (Debian's, fake media devices)
//! makes a call to another browser through haproxy, which closes
//! connections idle for 10 s, and holds it past that: the edge's Pings
//! keep both WebSockets open, Kamailio sees no keep-alive.
//!
//! Needs root, Node, the npm packages, chromium, haproxy and Kamailio;
//! fails and says which is missing. Every wait is bounded.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    edge::{lab_certificate, start_edge, EDGE_PORT},
    kamailio::{Kamailio, TempDir},
    sip_text::counter_reaches,
};
use sip_ka::lab::{self, Lab, SERVER_V4};

/// Where `cargo xtask setup` installs sip.js, jssip, ws and playwright-core.
const NODE_MODULES: &str = "/opt/sip-ka-node/node_modules";
const WS_PORT: u16 = 8080;
const WSS_PORT: u16 = 8443;

/// The scripts beside this file.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ws")
        .join(name)
}

/// Node and the packages, or a failure naming what is missing.
fn require_node(packages: &[&str]) -> PathBuf {
    let node = lab::on_path("node").expect("`node` not found: `cargo xtask setup` installs Node");
    for p in packages {
        let dir = Path::new(NODE_MODULES).join(p);
        assert!(
            dir.join("package.json").is_file(),
            "{} missing: `cargo xtask setup` installs it",
            dir.display()
        );
    }
    node
}

/// The edge with WS and WSS listeners (a lab certificate), `extra` flags.
fn browser_lab(dir: &Path, extra: &[&str]) -> Lab {
    let (cert, key) = lab_certificate(dir);
    let ws = format!("{SERVER_V4}:{WS_PORT}");
    let wss = format!("{SERVER_V4}:{WSS_PORT}");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec![
        "--ws-listen",
        ws.as_str(),
        "--wss-listen",
        wss.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    args.extend_from_slice(extra);
    start_edge(&args)
}

/// Runs a Node script in the client namespace under `timeout`; its
/// output.
fn node_in_client(
    lab: &Lab,
    node: &Path,
    script: &Path,
    env: &[(&str, String)],
    secs: u64,
) -> Output {
    let mut cmd = lab.client("timeout");
    cmd.arg("-k")
        .arg("5")
        .arg(secs.to_string())
        .arg(node)
        .arg(script)
        .env("SIPKA_NODE_MODULES", NODE_MODULES)
        .env("SIP_DOMAIN", SERVER_V4.to_string())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run_capture(&mut cmd)
}

/// The JSON line a script printed last.
fn result_of(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result from the script: {}", common::text(out)))
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn sipjs_and_jssip_register_over_ws_and_wss_and_message_each_other() {
    let started = Instant::now();
    let node = require_node(&["sip.js", "jssip", "ws"]);
    let dir = TempDir::new("ws-node");
    let lab = browser_lab(&dir.0, &["--ws-ping-interval", "1"]);
    let kam = Kamailio::start(&lab, &dir.0);
    kam.wait_for(
        "SKA-REQ OPTIONS vias=1",
        1,
        Duration::from_secs(10),
        &String::new,
    );
    // Both ways round: each stack once on WS and once on WSS.
    for (sipjs, jssip) in [
        (
            format!("ws://{SERVER_V4}:{WS_PORT}"),
            format!("wss://{SERVER_V4}:{WSS_PORT}"),
        ),
        (
            format!("wss://{SERVER_V4}:{WSS_PORT}"),
            format!("ws://{SERVER_V4}:{WS_PORT}"),
        ),
    ] {
        let before = kam.count("SKA-REQ MESSAGE");
        let out = node_in_client(
            &lab,
            &node,
            &script("node_phones.mjs"),
            &[
                ("SIPJS_URL", sipjs.clone()),
                ("JSSIP_URL", jssip.clone()),
                ("HOLD_MS", "3000".into()),
                // The lab's certificate is self-signed.
                ("NODE_TLS_REJECT_UNAUTHORIZED", "0".into()),
            ],
            60,
        );
        let r = result_of(&out);
        assert!(
            out.status.success() && r["ok"] == true,
            "SIP.js on {sipjs}, JsSIP on {jssip}: {r}\n{}\nKamailio:\n{}",
            common::text(&out),
            kam.events().join("\n")
        );
        assert_eq!(
            r["jssip"]["disconnects"], 0,
            "JsSIP's WebSocket dropped: {r}"
        );
        // Both MESSAGEs went through Kamailio (it found each phone by the
        // Path of its REGISTER).
        assert_eq!(
            kam.count("SKA-REQ MESSAGE") - before,
            2,
            "{}",
            kam.events().join("\n")
        );
    }
    assert!(kam.count("SKA-REGISTERED alice") >= 2 && kam.count("SKA-REGISTERED bob") >= 2);
    // The keep-alives stayed at the edge: SIP.js's CRLF frames, the Pings
    // the edge sent JsSIP and SIP.js (answered by `ws`, as a browser does).
    for (name, want) in [
        ("ws_upgrades", 4),
        ("ws_crlf_pings", 2),
        ("ws_pings_sent", 4),
        ("ws_pongs_received", 4),
        ("registers_outbound", 4),
    ] {
        let (ok, n) = counter_reaches(&lab, name, want);
        assert!(ok, "edge_{name} {n}, want at least {want}");
    }
    assert_eq!(
        kam.count("SKA-REQ OPTIONS vias=2"),
        0,
        "a phone's keep-alive reached Kamailio: {}",
        kam.events().join("\n")
    );
    eprintln!(
        "sipjs_and_jssip_register_over_ws_and_wss_and_message_each_other: {:?}",
        started.elapsed()
    );
}

/// haproxy in the server namespace, in TCP mode, closing connections idle
/// for `idle_secs`: `listen` forwards to `backend`.
struct Haproxy {
    child: std::process::Child,
}

impl Haproxy {
    fn start(lab: &Lab, dir: &Path, idle_secs: u64, routes: &[(String, String)]) -> Haproxy {
        let haproxy =
            lab::on_path("haproxy").expect("`haproxy` not found: `cargo xtask setup` installs it");
        let mut cfg = format!(
            "global\n    maxconn 1000\ndefaults\n    mode tcp\n    timeout connect 3s\n    \
             timeout client {idle_secs}s\n    timeout server {idle_secs}s\n"
        );
        for (i, (listen, backend)) in routes.iter().enumerate() {
            cfg.push_str(&format!(
                "listen p{i}\n    bind {listen}\n    server s{i} {backend}\n"
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("writing haproxy.cfg");
        let check = common::run_capture(Command::new(&haproxy).arg("-c").arg("-f").arg(&path));
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            common::text(&check)
        );
        let child = lab
            .server(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting haproxy");
        Haproxy { child }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn browsers_call_each_other_over_wss_through_a_proxy_that_drops_idle_connections() {
    let started = Instant::now();
    let node = require_node(&["sip.js", "playwright-core"]);
    let chromium = lab::on_path("chromium")
        .expect("`chromium` not found: `cargo xtask setup` installs Debian's");
    let dir = TempDir::new("ws-browser");
    const IDLE: u64 = 10;
    const PING: u64 = 4;
    const HOLD: u64 = 25;
    let ping = PING.to_string();
    let lab = browser_lab(&dir.0, &["--ws-ping-interval", ping.as_str()]);
    let kam = Kamailio::start(&lab, &dir.0);
    kam.wait_for(
        "SKA-REQ OPTIONS vias=1",
        1,
        Duration::from_secs(10),
        &String::new,
    );
    // The browsers reach the edge's WSS through the proxy; a plain TCP
    // connection through it to the edge's SIP port shows the proxy does
    // close what stays idle.
    let proxy_wss = format!("{SERVER_V4}:9443");
    let proxy_tcp = format!("{SERVER_V4}:9060");
    let _haproxy = Haproxy::start(
        &lab,
        &dir.0,
        IDLE,
        &[
            (proxy_wss.clone(), format!("{SERVER_V4}:{WSS_PORT}")),
            (proxy_tcp.clone(), format!("{SERVER_V4}:{EDGE_PORT}")),
        ],
    );
    let idle_probe = {
        let to: std::net::SocketAddr = proxy_tcp.parse().unwrap();
        let client_ns = lab.client_ns.clone();
        std::thread::spawn(move || {
            let mut s = common::in_ns(&client_ns, move || {
                let mut last = None;
                for _ in 0..50 {
                    match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                        Ok(s) => return s,
                        Err(e) => last = Some(e),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                panic!("connecting through haproxy to {to}: {last:?}")
            });
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let t0 = Instant::now();
            let mut b = [0u8; 64];
            let _ = std::io::Read::read(&mut s, &mut b);
            t0.elapsed()
        })
    };
    let out = node_in_client(
        &lab,
        &node,
        &script("browser_call.mjs"),
        &[
            ("CHROMIUM", chromium.display().to_string()),
            ("WSS_URL", format!("wss://{proxy_wss}")),
            ("HOLD_MS", (HOLD * 1000).to_string()),
        ],
        HOLD + 90,
    );
    let r = result_of(&out);
    assert!(
        out.status.success() && r["ok"] == true,
        "the browser call: {r}\n{}\nKamailio:\n{}",
        common::text(&out),
        kam.events().join("\n")
    );
    let idle_closed = idle_probe.join().expect("the idle probe");
    assert!(
        idle_closed >= Duration::from_secs(IDLE - 1)
            && idle_closed < Duration::from_secs(IDLE + 10),
        "haproxy closed an idle connection after {idle_closed:?}, its timeout is {IDLE} s"
    );
    // The call went through Kamailio: INVITE, 200, ACK, BYE, 200.
    for ev in [
        "SKA-REQ INVITE",
        "SKA-REPLY 200 INVITE",
        "SKA-REQ ACK",
        "SKA-REQ BYE",
        "SKA-REPLY 200 BYE",
    ] {
        assert!(
            kam.count(ev) >= 1,
            "Kamailio did not see {ev}: {}",
            kam.events().join("\n")
        );
    }
    // Held for longer than the proxy lets a connection idle, on the same
    // two WebSockets: no reconnection, kept by the edge's Pings.
    assert_eq!(r["reconnects"], 0, "{r}");
    for (name, want) in [
        ("ws_upgrades", 2),
        ("ws_pings_sent", 2 * (HOLD / PING - 1)),
        ("ws_pongs_received", 2 * (HOLD / PING - 1)),
    ] {
        let (ok, n) = counter_reaches(&lab, name, want);
        assert!(ok, "edge_{name} {n}, want at least {want}");
    }
    let (_, upgrades) = counter_reaches(&lab, "ws_upgrades", 2);
    assert_eq!(upgrades, 2, "a browser reconnected");
    assert_eq!(
        kam.count("SKA-REQ OPTIONS vias=2"),
        0,
        "{}",
        kam.events().join("\n")
    );
    eprintln!(
        "browsers_call_each_other_over_wss_through_a_proxy_that_drops_idle_connections: {:?}",
        started.elapsed()
    );
}
