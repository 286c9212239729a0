//! The configuration file and live changes, end to end: an edge started
//! with a TOML file and a flag, `sip-ka config get` showing where each
//! value came from, `config set` and SIGHUP changing what the next
//! message sees on the wire, restart-only keys and bad values refused with
//! nothing changed, and the control socket refusing non-root clients.
//!
//! Needs root (`cargo xtask test` runs it); fails and says so otherwise.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    client_socket,
    edge::{edge_addr, pbx_addr, start_edge},
    exchange, text, wait_until, ANSWER_WAIT,
};
use sip_ka::lab::{self, Lab, CLIENT_V4};

/// `sip-ka config get`: key -> (value, source).
fn config_get(lab: &Lab) -> BTreeMap<String, (String, String)> {
    let out = common::run_capture(&mut lab.sip_ka(&["config", "get"]).unwrap());
    assert!(out.status.success(), "config get: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (kv, source) = l.split_once("    # ")?;
            let (k, v) = kv.split_once(" = ")?;
            let source = source.split(',').next().unwrap_or("").to_string();
            Some((k.to_string(), (v.to_string(), source)))
        })
        .collect()
}

fn want(cfg: &BTreeMap<String, (String, String)>, key: &str, value: &str, source: &str) {
    assert_eq!(
        cfg.get(key),
        Some(&(value.to_string(), source.to_string())),
        "config get {key}: {cfg:?}"
    );
}

/// `sip-ka config set KEY VALUE`, its output and whether it succeeded.
fn config_set(lab: &Lab, key: &str, value: &str) -> (bool, String) {
    let out = common::run_capture(&mut lab.sip_ka(&["config", "set", key, value]).unwrap());
    (out.status.success(), text(&out))
}

/// An OPTIONS for the PBX (a user part: not the edge's own), `pad` bytes
/// of an extra header making it large.
fn options(call_id: &str, local: SocketAddr, pad: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:100@{edge} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
         From: <sip:test@{local}>;tag=t1\r\n\
         To: <sip:100@{edge}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         X-Pad: {}\r\n\
         Content-Length: 0\r\n\r\n",
        "p".repeat(pad),
        edge = edge_addr(),
    )
    .into_bytes()
}

fn ask(sock: &UdpSocket, req: &[u8]) -> String {
    exchange(sock, edge_addr(), req, ANSWER_WAIT)
        .map(|(r, _)| String::from_utf8_lossy(&r).into_owned())
        .unwrap_or_default()
}

fn status(resp: &str) -> Option<u16> {
    resp.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The PBX: a UDP socket behind the edge that answers every OPTIONS with
/// a 200 carrying `Server: test-pbx` (so the UA can tell it from the
/// edge's own answer) and records the Call-IDs it saw.
struct Pbx {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pbx {
    fn start(lab: &Lab) -> Pbx {
        let sock = common::in_ns(&lab.server_ns, || UdpSocket::bind(pbx_addr()))
            .expect("binding the PBX socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !req.starts_with("OPTIONS ") {
                    continue;
                }
                let header = |name: &str| {
                    req.lines()
                        .filter(|l| l.split(':').next() == Some(name))
                        .map(|l| format!("{l}\r\n"))
                        .collect::<String>()
                };
                if let Some(cid) = header("Call-ID").strip_prefix("Call-ID: ") {
                    v.lock().unwrap().push(cid.trim().to_string());
                }
                let to = header("To");
                let resp = format!(
                    "SIP/2.0 200 OK\r\n{}{}{};tag=pbx\r\n{}{}Server: test-pbx\r\nContent-Length: 0\r\n\r\n",
                    header("Via"),
                    header("From"),
                    to.trim_end(),
                    header("Call-ID"),
                    header("CSeq"),
                );
                let _ = sock.send_to(resp.as_bytes(), from);
            }
        });
        Pbx {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn saw(&self, call_id: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|c| c == call_id)
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_dir_path(lab: &Lab, ext: &str) -> PathBuf {
    let name = lab
        .pin_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    Path::new("/run/sip-ka").join(format!("{name}.{ext}"))
}

/// SIGHUP to the daemon (its pid is in the pin-dir lock).
fn sighup(lab: &Lab) {
    let pid: i32 = std::fs::read_to_string(run_dir_path(lab, "lock"))
        .expect("the pin-dir lock")
        .trim()
        .parse()
        .expect("a pid in the lock");
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGHUP) },
        0,
        "kill -HUP {pid}"
    );
}

/// `sip-ka ARGS --pin-dir P` as uid/gid 65534.
fn as_nobody(lab: &Lab, args: &[&str]) -> std::process::Output {
    common::run_capture(
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(lab::sip_ka_exe().unwrap())
            .args(args)
            .arg("--pin-dir")
            .arg(&lab.pin_dir),
    )
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_file_a_flag_and_live_changes_show_on_the_wire() {
    let started = Instant::now();
    common::require_env();
    let dir = std::env::temp_dir().join(format!("sip-ka-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sip-ka.toml");
    std::fs::write(
        &file,
        "# the edge's settings\n\
         options_pbx = \"answer\"\n\
         max_headers = 64\n\
         tcp_idle_timeout = 400\n\
         rate_limit_pps = 300\n",
    )
    .unwrap();
    let file_s = file.to_string_lossy().into_owned();
    let mut lab = start_edge(&["--config", &file_s, "--max-headers", "100"]);

    // Where each value came from.
    let cfg = config_get(&lab);
    want(&cfg, "options_pbx", "\"answer\"", "file");
    want(&cfg, "tcp_idle_timeout", "400", "file");
    want(&cfg, "max_headers", "100", "flag");
    want(&cfg, "qualify_frequency", "1", "flag");
    want(&cfg, "timers_min_se", "90", "default");
    want(&cfg, "rate_limit_pps", "300", "file");
    want(&cfg, "udp_crlf", "\"pong\"", "default");
    want(&cfg, "listen", &format!("[\"{}\"]", edge_addr()), "flag");

    // The socket: next to the lock, root's, 0600.
    let sock_path = run_dir_path(&lab, "sock");
    let meta = std::fs::metadata(&sock_path).expect("the control socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let pbx = Pbx::start(&lab);
    let local = SocketAddr::new(CLIENT_V4.into(), 5070);
    let ua = client_socket(&lab, local);

    // answer: the edge answers OPTIONS for the PBX itself.
    let mut last = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = ask(&ua, &options("cfg-opt-1", local, 0));
            status(&last) == Some(200)
        }),
        "OPTIONS for the PBX with options_pbx answer: {last:?}"
    );
    assert!(!last.contains("test-pbx"), "answered by the PBX: {last}");
    assert!(
        !pbx.saw("cfg-opt-1"),
        "options_pbx answer forwarded an OPTIONS"
    );

    // A live change: the next OPTIONS goes to the PBX, whose 200 comes back.
    let (ok, out) = config_set(&lab, "options_pbx", "forward");
    assert!(ok, "config set options_pbx forward: {out}");
    let r = ask(&ua, &options("cfg-opt-2", local, 0));
    assert!(
        status(&r) == Some(200) && r.contains("Server: test-pbx"),
        "after options_pbx forward: {r:?}"
    );
    assert!(pbx.saw("cfg-opt-2"));
    want(&config_get(&lab), "options_pbx", "\"forward\"", "live");

    // Bad live values and restart-only keys change nothing.
    for (key, value, says) in [
        ("max_message_size", "100", "--max-message-size"),
        ("max_headers", "many", "invalid value 'many'"),
        ("options_pbx", "maybe", "answer | forward"),
        ("listen", "198.18.0.1:5070", "restart"),
        ("upstream", "198.18.0.1:5090", "restart"),
        ("no_such_key", "1", "unknown key"),
        ("rate_limit_burst", "0", "at least 1"),
    ] {
        let (ok, out) = config_set(&lab, key, value);
        assert!(!ok, "config set {key} {value} was taken: {out}");
        assert!(out.contains(says), "config set {key} {value}: {out}");
    }
    let cfg = config_get(&lab);
    want(&cfg, "max_message_size", "65535", "default");
    want(&cfg, "max_headers", "100", "flag");
    want(&cfg, "options_pbx", "\"forward\"", "live");
    want(&cfg, "listen", &format!("[\"{}\"]", edge_addr()), "flag");
    want(&cfg, "rate_limit_burst", "400", "default");

    // A large OPTIONS goes through while max_message_size allows it.
    let r = ask(&ua, &options("cfg-big-1", local, 1100));
    assert!(r.contains("Server: test-pbx"), "large OPTIONS: {r:?}");

    // The file changes and SIGHUP: the live keys it changed apply, the
    // restart-only one is left, a key changed live keeps its live value.
    std::fs::write(
        &file,
        "options_pbx = \"answer\"\n\
         max_headers = 64\n\
         tcp_idle_timeout = 400\n\
         rate_limit_pps = 150\n\
         max_message_size = 1000\n\
         keep_attached = true\n",
    )
    .unwrap();
    sighup(&lab);
    let mut cfg = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            cfg = config_get(&lab);
            cfg.get("max_message_size") == Some(&("1000".into(), "file".into()))
        }),
        "after SIGHUP: {cfg:?}"
    );
    want(&cfg, "rate_limit_pps", "150", "file");
    want(&cfg, "keep_attached", "false", "default");
    want(&cfg, "options_pbx", "\"forward\"", "live");
    let r = ask(&ua, &options("cfg-big-2", local, 1100));
    assert_eq!(
        status(&r),
        Some(513),
        "large OPTIONS after the reload: {r:?}"
    );
    assert!(!pbx.saw("cfg-big-2"));
    let r = ask(&ua, &options("cfg-opt-3", local, 0));
    assert!(r.contains("Server: test-pbx"), "small OPTIONS: {r:?}");

    // A bad file on SIGHUP changes nothing.
    std::fs::write(&file, "max_message_size = \"big\"\nrate_limit_pps = 10\n").unwrap();
    sighup(&lab);
    std::thread::sleep(Duration::from_secs(1));
    let cfg = config_get(&lab);
    want(&cfg, "max_message_size", "1000", "file");
    want(&cfg, "rate_limit_pps", "150", "file");
    let r = ask(&ua, &options("cfg-big-3", local, 1100));
    assert_eq!(status(&r), Some(513), "after a bad reload: {r:?}");

    // Root only: the socket's mode keeps other users out, and the daemon
    // checks its peer's uid itself.
    let out = as_nobody(&lab, &["config", "get"]);
    assert!(
        !out.status.success(),
        "config get as uid 65534: {}",
        text(&out)
    );
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    let out = as_nobody(&lab, &["config", "set", "options_pbx", "answer"]);
    assert!(!out.status.success() && text(&out).contains("permission denied"));
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&lab, &["config", "set", "options_pbx", "answer"]);
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("uid 65534") && text(&out).contains("root only"),
        "the daemon's own check: {}",
        text(&out)
    );
    want(&config_get(&lab), "options_pbx", "\"forward\"", "live");

    drop(pbx);
    let status = lab.stop_daemon().expect("stopping the daemon");
    assert!(status.success());
    assert!(!sock_path.exists(), "the socket outlived the daemon");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "a_file_a_flag_and_live_changes_show_on_the_wire: {:?}",
        started.elapsed()
    );
}

/// Needs no root: the file is read before anything is touched.
#[test]
fn a_bad_file_is_refused_at_start_and_by_config_check() {
    let dir = std::env::temp_dir().join(format!("sip-ka-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "mode = \"edge\"\nqualify_frequency = \"soon\"\nkeep_attached = 1\n",
    )
    .unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "options_pbx = \"forward\"\nudp_crlf = \"drop\"\n").unwrap();
    let pins = format!("/sys/fs/bpf/sip-ka-never-{}", std::process::id());
    let exe = lab::sip_ka_exe().unwrap();
    let run = common::run_capture(
        Command::new(&exe)
            .args(["run", "--xdp", "off", "--config"])
            .arg(&bad)
            .args(["--pin-dir", &pins]),
    );
    let check = common::run_capture(Command::new(&exe).args(["config", "check"]).arg(&bad));
    for (what, out) in [("run", &run), ("config check", &check)] {
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(out));
        let t = text(out);
        assert!(
            t.contains("line 2: qualify_frequency = \"soon\": bad value")
                && t.contains("line 3: keep_attached = 1: wrong type")
                && t.contains("(allowed: true | false)"),
            "{what}: {t}"
        );
    }
    assert!(
        !Path::new(&pins).exists(),
        "a refused start pinned something"
    );
    let lock = Path::new("/run/sip-ka").join(format!("sip-ka-never-{}.lock", std::process::id()));
    assert!(!lock.exists(), "a refused start took the pin-dir lock");
    let out = common::run_capture(Command::new(&exe).args(["config", "check"]).arg(&good));
    assert!(out.status.success(), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(t.contains("options_pbx = \"forward\"    # file"), "{t}");
    assert!(t.contains("udp_crlf = \"drop\"    # file"), "{t}");
    assert!(t.contains("qualify_frequency = 60    # default"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}
