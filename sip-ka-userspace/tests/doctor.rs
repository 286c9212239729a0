//! `sip-ka doctor` in a lab, run in the server namespace as an operator
//! runs it before `sip-ka run`: every check ok on a prepared namespace
//! (an edge's file, the PBX behind its own interface answering OPTIONS,
//! Redis up; exit status 0), then each failure the issue names on its
//! own, reported with its fix and exit status 1: no bpffs, a missing
//! capability, the PBX on the phones' side, a port taken, a loose
//! rp_filter, Redis down; and an HA pair's VIP without ip_nonlocal_bind.
//!
//! The assertions read `--json` (name, status, finding, fix per check);
//! each run's text is checked to print the same fix, and printed.
//!
//! Needs root (network namespaces, bpffs); fails and says so otherwise.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{in_ns, wait_until};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

/// The PBX's network, behind the server on an interface of its own.
const PBX_NET_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 1);
const PBX_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
const PBX_PORT: u16 = 5080;
/// Where the edge listens, on the phones' interface.
const EDGE_PORT: u16 = 5060;
/// Longest a doctor run may take (its own waits are 1 s for the PBX and
/// 3 s for Redis).
const DOCTOR_LIMIT_SECS: &str = "30";

fn pbx() -> SocketAddr {
    SocketAddr::new(PBX_V4.into(), PBX_PORT)
}

fn edge() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), EDGE_PORT)
}

/// One check as `--json` gives it.
#[derive(Debug)]
struct Check {
    name: String,
    status: String,
    finding: String,
    fix: Option<String>,
}

/// A doctor run: its exit status, its checks (from `--json`) and its
/// text (from a second run without it).
#[derive(Debug)]
struct Doctor {
    code: Option<i32>,
    checks: Vec<Check>,
    text: String,
    stderr: String,
}

impl Doctor {
    /// `sip-ka doctor ARGS` in the lab's server namespace, under
    /// `prefix` (e.g. setpriv), killed after [`DOCTOR_LIMIT_SECS`].
    fn run(lab: &Lab, prefix: &[&str], args: &[String]) -> Doctor {
        let exe = lab::sip_ka_exe().expect("sip-ka binary");
        let once = |json: bool| {
            let mut cmd = lab.server("timeout");
            cmd.args(["-k", "2", DOCTOR_LIMIT_SECS])
                .args(prefix)
                .arg(&exe)
                .arg("doctor")
                .args(args);
            if json {
                cmd.arg("--json");
            }
            common::run_capture(&mut cmd)
        };
        let mut json = once(true);
        let mut text = once(false);
        // The host can change between the two runs (another test's lab
        // coming or going on the same machine): a mismatch is looked at
        // again once, and only one that repeats is --json's doing.
        if json.status.code() != text.status.code() {
            eprintln!(
                "doctor: --json exited {:?}, text {:?}; again, once:\n{}\n{}",
                json.status.code(),
                text.status.code(),
                String::from_utf8_lossy(&json.stdout),
                String::from_utf8_lossy(&text.stdout)
            );
            json = once(true);
            text = once(false);
        }
        assert_eq!(
            json.status.code(),
            text.status.code(),
            "the exit status depends on --json:\n{}\n{}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&text.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&json.stdout),
                String::from_utf8_lossy(&json.stderr)
            )
        });
        let checks = v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| Check {
                name: c["name"].as_str().expect("name").to_string(),
                status: c["status"].as_str().expect("status").to_string(),
                finding: c["finding"].as_str().expect("finding").to_string(),
                fix: c["fix"].as_str().map(str::to_string),
            })
            .collect();
        let d = Doctor {
            code: text.status.code(),
            checks,
            text: String::from_utf8_lossy(&text.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&text.stderr).into_owned(),
        };
        eprintln!("$ sip-ka doctor {}\n{}{}", args.join(" "), d.text, d.stderr);
        for c in &d.checks {
            match &c.fix {
                Some(fix) => assert!(
                    d.text.contains(&format!("fix: {fix}")),
                    "the text does not print the fix of {c:?}"
                ),
                None => assert_eq!(c.status, "ok", "{c:?} has no fix"),
            }
        }
        d
    }

    fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c.status == "fail")
            .map(|c| c.name.as_str())
            .collect()
    }

    fn get(&self, name: &str) -> &Check {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {:#?}", self.checks))
    }

    /// Exit status 1, only `name` failed, and its fix says `fix_has`.
    #[track_caller]
    fn expect_only_failure(&self, name: &str, fix_has: &str) -> &Check {
        assert_eq!(self.code, Some(1), "exit status: {self:#?}");
        assert!(
            self.stderr.contains("1 check failed"),
            "stderr: {}",
            self.stderr
        );
        assert_eq!(self.failed(), vec![name], "{:#?}", self.checks);
        let c = self.get(name);
        let fix = c.fix.as_deref().unwrap_or("");
        assert!(fix.contains(fix_has), "fix of {c:?} lacks {fix_has:?}");
        c
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn pin_args(lab: &Lab) -> Vec<String> {
    vec!["--pin-dir".into(), lab.pin_dir.display().to_string()]
}

/// A lab's server namespace as an operator prepares it: strict rp_filter
/// and no accept_local on the phones' interface, ip_nonlocal_bind off.
fn prepared_lab() -> Lab {
    let lab = common::lab();
    let phones = lab.server_if.clone();
    for key in [
        "net.ipv4.conf.all.rp_filter=1".to_string(),
        format!("net.ipv4.conf.{phones}.rp_filter=1"),
        "net.ipv4.conf.all.accept_local=0".to_string(),
        format!("net.ipv4.conf.{phones}.accept_local=0"),
        "net.ipv4.ip_nonlocal_bind=0".to_string(),
    ] {
        sysctl(&lab, &key);
    }
    lab
}

fn sysctl(lab: &Lab, key: &str) {
    lab::run(lab.server("sysctl").args(["-q", "-w", key]))
        .unwrap_or_else(|e| panic!("sysctl {key}: {e:#}"));
}

/// The PBX behind the server: a namespace of its own on a veth pair
/// (198.18.7.1 on the server's end, the PBX at 198.18.7.2), with a
/// stand-in answering OPTIONS with 200. Removed on drop.
struct PbxSide {
    ns: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PbxSide {
    fn new(lab: &Lab) -> PbxSide {
        // Named after the lab, so `Lab::sweep_stale` removes what a
        // crashed run left.
        let ns = format!("{}p", lab.name);
        let (server_end, pbx_end) = (format!("{}d", lab.name), format!("{}e", lab.name));
        lab::run(Command::new("ip").args(["netns", "add", &ns])).expect("ip netns add");
        let mut side = PbxSide {
            ns: ns.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        let ip = |a: &[&str]| {
            lab::run(Command::new("ip").args(a)).unwrap_or_else(|e| panic!("ip {a:?}: {e:#}"));
        };
        ip(&[
            "link",
            "add",
            &server_end,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &pbx_end,
            "netns",
            &ns,
        ]);
        let server_addr = format!("{PBX_NET_SERVER}/24");
        let pbx_addr = format!("{PBX_V4}/24");
        ip(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            &server_addr,
            "dev",
            &server_end,
        ]);
        ip(&["-n", &lab.server_ns, "link", "set", &server_end, "up"]);
        ip(&["-n", &ns, "addr", "add", &pbx_addr, "dev", &pbx_end]);
        ip(&["-n", &ns, "link", "set", &pbx_end, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let sock = in_ns(&ns, || {
            UdpSocket::bind(pbx()).expect("binding the PBX socket")
        });
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let stop = side.stop.clone();
        side.thread = Some(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = ok_to_options(&String::from_utf8_lossy(&buf[..n])) {
                    let _ = sock.send_to(answer.as_bytes(), from);
                }
            }
        }));
        side
    }
}

impl Drop for PbxSide {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // The veth pair goes with the namespace.
        let _ = lab::run(Command::new("ip").args(["netns", "del", &self.ns]));
    }
}

/// `200 OK` to an OPTIONS, its dialog headers copied.
fn ok_to_options(req: &str) -> Option<String> {
    if !req.starts_with("OPTIONS ") {
        return None;
    }
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in req.lines().skip(1) {
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["via", "v", "from", "f", "call-id", "i", "cseq"].contains(&name.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name == "to" || name == "t" {
            out.push_str(line);
            if !line.contains("tag=") {
                out.push_str(";tag=pbx");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out)
}

/// redis-server on the server namespace's loopback; killed on drop.
struct Redis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Redis {
    fn start(lab: &Lab) -> Redis {
        let port = 6379;
        let dir = std::env::temp_dir().join(format!("{}-doctor-redis", lab.name));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = lab
            .server("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (Debian package redis-server)");
        let redis = Redis { child, dir, port };
        let ns = lab.server_ns.clone();
        let up = wait_until(Duration::from_secs(10), || {
            let ns = ns.clone();
            in_ns(&ns, move || {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
        });
        assert!(up, "redis-server did not listen within 10 s");
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn every_check_is_ok_on_a_prepared_namespace() {
    let lab = prepared_lab();
    let _pbx = PbxSide::new(&lab);
    let redis = Redis::start(&lab);
    // An edge's file: the doctor takes its settings from it.
    let file = TempFile(std::env::temp_dir().join(format!("{}-doctor.toml", lab.name)));
    std::fs::write(
        &file.0,
        format!(
            "mode = \"edge\"\n\
             iface = \"{}\"\n\
             upstream = \"{}\"\n\
             listen = [\"{}\"]\n\
             state_store = \"{}\"\n\
             xdp_mode = \"native\"\n",
            lab.server_if,
            pbx(),
            edge(),
            redis.url()
        ),
    )
    .expect("writing the config file");
    let mut a = args(&["--config", &file.0.display().to_string()]);
    a.extend(pin_args(&lab));
    let d = Doctor::run(&lab, &[], &a);
    assert_eq!(d.code, Some(0), "{d:#?}");
    let bad: Vec<&Check> = d.checks.iter().filter(|c| c.status != "ok").collect();
    assert!(bad.is_empty(), "not ok: {bad:#?}");
    for name in [
        "config",
        "kernel",
        "btf",
        "capabilities",
        "bpffs",
        "state dir",
        "interface",
        "xdp driver",
        "mtu",
        "queues",
        "rp_filter",
        "accept_local",
        "upstream",
        "pbx",
        "port",
        "redis",
    ] {
        d.get(name);
    }
    assert!(d.get("xdp driver").finding.contains("veth"));
    assert!(
        d.get("upstream")
            .finding
            .contains(&format!("{}d", lab.name)),
        "the PBX is reached through its own interface: {:?}",
        d.get("upstream")
    );
    assert!(d.get("pbx").finding.contains("answered OPTIONS with 200"));
    // Edge mode: the edge's address is free on UDP and on TCP.
    let ports: Vec<&str> = d
        .checks
        .iter()
        .filter(|c| c.name == "port")
        .map(|c| c.finding.as_str())
        .collect();
    assert_eq!(
        ports,
        vec![
            format!("UDP {} is free", edge()),
            format!("TCP {} is free", edge())
        ],
    );
    assert!(
        d.text.contains("0 failures: ready for `sip-ka run`"),
        "{}",
        d.text
    );
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_pin_dir_off_the_bpffs_fails() {
    let lab = prepared_lab();
    let dir = std::env::temp_dir().join(format!("{}-no-bpffs", lab.name));
    let pins = dir.join("sip-ka");
    let d = Doctor::run(
        &lab,
        &[],
        &args(&["--pin-dir", &pins.display().to_string()]),
    );
    let c = d.expect_only_failure("bpffs", "mount -t bpf bpf /sys/fs/bpf");
    assert!(c.finding.contains("is not on a bpf filesystem"), "{c:?}");
    assert!(!dir.exists(), "the doctor created {}", dir.display());
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_missing_capability_fails() {
    let lab = prepared_lab();
    // Not root, and no capability in any set.
    let prefix = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
    ];
    let state = std::env::temp_dir().join(format!("{}-doctor-state", lab.name));
    let mut a = pin_args(&lab);
    a.extend(args(&["--state-dir", &state.display().to_string()]));
    let d = Doctor::run(&lab, &prefix, &a);
    assert_eq!(d.code, Some(1), "{d:#?}");
    assert!(d.failed().contains(&"capabilities"), "{:#?}", d.checks);
    let c = d.get("capabilities");
    assert!(
        c.finding
            .starts_with("uid 65534 without CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON"),
        "{c:?}"
    );
    assert!(
        c.fix
            .as_deref()
            .unwrap_or("")
            .contains("CAP_BPF CAP_NET_ADMIN CAP_PERFMON"),
        "{c:?}"
    );
    // Everything else this uid can do is fine, but /run/sip-ka (the
    // pin-dir lock's directory) is root's here.
    for f in d.failed() {
        assert!(
            ["capabilities", "state dir"].contains(&f),
            "{:#?}",
            d.checks
        );
    }
    // As root, the same command passes.
    let d = Doctor::run(&lab, &[], &a);
    assert_eq!(d.code, Some(0), "{d:#?}");
    assert_eq!(d.get("capabilities").status, "ok");
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_pbx_on_the_phones_side_fails() {
    let lab = prepared_lab();
    let phones_pbx = SocketAddr::new(CLIENT_V4.into(), PBX_PORT).to_string();
    let mut a = args(&["--iface", &lab.server_if, "--upstream", &phones_pbx]);
    a.extend(pin_args(&lab));
    let d = Doctor::run(&lab, &[], &a);
    let c = d.expect_only_failure("upstream", "--trust-upstream-source");
    assert!(
        c.finding
            .contains(&format!("reached through {}", lab.server_if)),
        "{c:?}"
    );
    // Nothing answers there: a warning, not a failure.
    assert_eq!(d.get("pbx").status, "warn");
    // The operator vouches for a firewall: a warning.
    a.push("--trust-upstream-source".into());
    let d = Doctor::run(&lab, &[], &a);
    assert_eq!(d.code, Some(0), "{d:#?}");
    assert_eq!(d.get("upstream").status, "warn");
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_port_taken_fails_naming_its_holder() {
    let lab = prepared_lab();
    let held = in_ns(&lab.server_ns, || {
        UdpSocket::bind(edge()).expect("binding 5060")
    });
    let mut a = args(&["--listen", &edge().to_string()]);
    a.extend(pin_args(&lab));
    let d = Doctor::run(&lab, &[], &a);
    let c = d.expect_only_failure("port", "--listen elsewhere");
    assert!(
        c.finding.contains(&format!("UDP {} is taken by", edge())),
        "{c:?}"
    );
    assert!(
        c.finding.contains(&format!("(pid {})", std::process::id())),
        "ss names this test as the holder: {c:?}"
    );
    drop(held);
    let d = Doctor::run(&lab, &[], &a);
    assert_eq!(d.code, Some(0), "{d:#?}");
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_loose_rp_filter_fails_when_the_pbx_is_behind_another_interface() {
    let lab = prepared_lab();
    let _pbx = PbxSide::new(&lab);
    sysctl(&lab, "net.ipv4.conf.all.rp_filter=2");
    let mut a = args(&["--iface", &lab.server_if, "--upstream", &pbx().to_string()]);
    a.extend(pin_args(&lab));
    let d = Doctor::run(&lab, &[], &a);
    let c = d.expect_only_failure("rp_filter", "net.ipv4.conf.all.rp_filter=1");
    assert!(c.finding.starts_with("loose (2)"), "{c:?}");
    assert_eq!(
        d.get("pbx").status,
        "ok",
        "the PBX answers: {:?}",
        d.get("pbx")
    );
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn redis_down_fails() {
    let lab = prepared_lab();
    // A port nothing listens on: bound, then released.
    let port = in_ns(&lab.server_ns, || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port()
    });
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut a = args(&["--state-store", &url]);
    a.extend(pin_args(&lab));
    let started = Instant::now();
    let d = Doctor::run(&lab, &[], &a);
    let c = d.expect_only_failure("redis", "start Redis");
    assert!(c.finding.contains("unreachable"), "{c:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "two runs took {:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root: network namespaces and bpffs; `cargo xtask test` runs it"]
fn a_vip_needs_ip_nonlocal_bind() {
    let lab = prepared_lab();
    let vip = SocketAddr::from(([198, 18, 0, 10], EDGE_PORT)).to_string();
    let mut a = args(&["--listen", &vip]);
    a.extend(pin_args(&lab));
    let d = Doctor::run(&lab, &[], &a);
    d.expect_only_failure("nonlocal_bind", "net.ipv4.ip_nonlocal_bind=1");
    sysctl(&lab, "net.ipv4.ip_nonlocal_bind=1");
    let d = Doctor::run(&lab, &[], &a);
    assert_eq!(d.code, Some(0), "{d:#?}");
    assert_eq!(d.get("nonlocal_bind").status, "ok");
    assert_eq!(d.get("port").finding, format!("UDP {vip} is free"));
}
