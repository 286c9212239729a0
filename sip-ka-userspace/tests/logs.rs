//! The daemon's log as an operator reads it: `--log-format json` gives one
//! JSON object per stderr line, a refused request's line carries its
//! Call-ID, a live `log_level` change takes effect on the next message,
//! and the text format's lines carry no Rust debug forms.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::edge::{edge_addr, edge_args, pbx_addr};
use sip_ka::lab::{self, Lab, CLIENT_V4};

/// A daemon with its stderr lines collected.
struct Logged {
    child: Child,
    stderr: Option<JoinHandle<()>>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(lab: &Lab, extra: &[&str]) -> Logged {
        let exe = lab::sip_ka_exe().expect("sip-ka binary");
        let mut child = lab
            .server(exe)
            .args(["run", "--iface", &lab.server_if, "--pin-dir"])
            .arg(&lab.pin_dir)
            .args(edge_args(extra))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sip-ka run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let into = lines.clone();
        let stderr = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                into.lock().expect("lines").push(l);
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if l.contains("ready") {
                    let _ = tx.send(());
                }
            }
        });
        let mut d = Logged {
            child,
            stderr: Some(stderr),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.recv_timeout(Duration::from_millis(100)).is_err() {
            if let Some(status) = d.child.try_wait().expect("try_wait") {
                panic!(
                    "sip-ka run exited before it was ready: {status}\n{}",
                    d.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not ready within 30 s\n{}",
                d.text()
            );
        }
        d
    }

    fn text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// SIGTERM, then every stderr line up to the exit.
    fn stop(mut self) -> Vec<String> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the daemon did not stop within 10 s\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(t) = self.stderr.take() {
            t.join().expect("stderr reader");
        }
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An INVITE with no hop left: the edge answers 483 itself.
fn invite_without_hops(call_id: &str, port: u16) -> Vec<u8> {
    let branch = call_id.replace('@', "-");
    format!(
        "INVITE sip:bob@{edge} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CLIENT_V4}:{port};branch=z9hG4bK-{branch}\r\n\
         Max-Forwards: 0\r\n\
         From: <sip:alice@{CLIENT_V4}>;tag=a1\r\n\
         To: <sip:bob@{edge}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{CLIENT_V4}:{port}>\r\n\
         Content-Length: 0\r\n\r\n",
        edge = edge_addr().ip()
    )
    .into_bytes()
}

fn refused_483(sock: &UdpSocket, call_id: &str) {
    let port = sock.local_addr().expect("local addr").port();
    let answer = common::exchange(
        sock,
        edge_addr(),
        &invite_without_hops(call_id, port),
        Duration::from_secs(2),
    );
    let answer = answer.map(|(b, _)| String::from_utf8_lossy(&b).into_owned());
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("SIP/2.0 483")),
        "want a 483 for {call_id}, got {answer:?}"
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn json_lines_carry_the_call_id_and_follow_a_live_level_change() {
    let lab = common::lab();
    let d = Logged::start(&lab, &["--log-format", "json", "--log-level", "debug"]);
    let sock = common::client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), 0));
    refused_483(&sock, "log-one@client");
    common::config_set(&lab, "log_level", "warn");
    refused_483(&sock, "log-two@client");
    common::config_set(&lab, "log_level", "debug");
    refused_483(&sock, "log-three@client");
    let lines = d.stop();

    let mut objects = Vec::new();
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {e}: {l}"));
        for key in ["timestamp", "level", "target"] {
            assert!(v[key].is_string(), "no {key} in {l}");
        }
        assert!(
            v["fields"]["message"].is_string(),
            "no fields.message in {l}"
        );
        let bridged = v["fields"]
            .as_object()
            .is_some_and(|f| f.keys().any(|k| k.starts_with("log.")));
        assert!(!bridged, "the log bridge's fields in {l}");
        objects.push(v);
    }
    let all = lines.join("\n");
    let about = |cid: &str| {
        objects
            .iter()
            .filter(|v| v["fields"]["call_id"] == cid)
            .collect::<Vec<_>>()
    };
    for cid in ["log-one@client", "log-three@client"] {
        let found = about(cid);
        assert_eq!(found.len(), 1, "want one line with call_id {cid}:\n{all}");
        assert_eq!(found[0]["level"], "DEBUG", "{all}");
        assert_eq!(found[0]["target"], "sip_ka::edge::proxy", "{all}");
        let msg = found[0]["fields"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("edge: 483 ") && msg.contains(&CLIENT_V4.to_string()),
            "{msg}"
        );
    }
    // Sent while the level was `warn`: not logged.
    assert!(about("log-two@client").is_empty(), "{all}");
    // Lines from the `log` call sites come through the same format.
    assert!(
        objects.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(" live dialog(s), ")
                && v["target"] == "sip_ka::edge::state"
                && v["level"] == "INFO")),
        "no exit line from sip_ka::edge::state:\n{all}"
    );
}

/// A PBX that answers every OPTIONS with a 200 (so the upstream is up and
/// has an RTT), until `stop` is set.
fn pbx_answering_options(lab: &Lab, stop: Arc<std::sync::atomic::AtomicBool>) -> JoinHandle<()> {
    let sock = common::in_ns(&lab.server_ns, || {
        let s = UdpSocket::bind(pbx_addr()).expect("binding the PBX");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        s
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !req.starts_with("OPTIONS ") {
                continue;
            }
            let mut answer = String::from("SIP/2.0 200 OK\r\n");
            for l in req.lines() {
                let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
                if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"]
                    .contains(&name.trim())
                {
                    answer.push_str(l);
                    answer.push_str("\r\n");
                }
            }
            answer.push_str("Content-Length: 0\r\n\r\n");
            let _ = sock.send_to(answer.as_bytes(), from);
        }
    })
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn text_lines_carry_no_debug_forms() {
    let lab = common::lab();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pbx = pbx_answering_options(&lab, stop.clone());
    let d = Logged::start(&lab, &["--log-format", "text", "--log-level", "info"]);
    let up = common::wait_until(Duration::from_secs(10), || {
        d.text()
            .contains(&format!("upstream {} up, rtt=", pbx_addr()))
    });
    assert!(up, "the upstream never came up:\n{}", d.text());
    let lines = d.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pbx.join().expect("PBX thread");
    let all = lines.join("\n");
    assert!(lines.iter().any(|l| l.contains(" INFO ")), "{all}");
    for l in &lines {
        for bad in ["Some(", "None", "µs", "Udp("] {
            assert!(!l.contains(bad), "a debug form ({bad}) in: {l}");
        }
    }
    // The exit line, as the soak run parses it, in plain words.
    let exit = lines
        .iter()
        .find(|l| l.contains("edge: ") && l.contains(" live dialog(s), "))
        .unwrap_or_else(|| panic!("no exit line:\n{all}"));
    assert!(exit.contains("upstream up rtt="), "{exit}");
    assert!(exit.contains("ms;"), "{exit}");
}
