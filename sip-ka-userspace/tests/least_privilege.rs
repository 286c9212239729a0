//! The systemd units' least privilege, shown in the lab: the daemon runs
//! as a non-root uid holding exactly the capabilities the unit file names
//! (parsed from packaging/sip-ka@.service, so the test and the unit cannot
//! drift), inside a mount namespace made the way systemd makes the
//! service's: a fresh bpffs on /sys/fs/bpf with mode 0700 (as systemd
//! mounts it), /run/sip-ka a tmpfs owned by the user (RuntimeDirectory),
//! the unit's `ExecStartPre=+` commands run as root, then /, /sys and the
//! bpffs read-only except the unit's ReadWritePaths (ProtectSystem=strict,
//! ProtectKernelTunables), no new privileges and a 64 KiB memlock limit.
//! It shows every feature works, readiness reported through
//! $NOTIFY_SOCKET, and that each capability of the set is needed.

#[allow(unused_imports)] // the helpers re-export more than this suite uses
mod common;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{edge::edge_addr, exchange, ANSWER_WAIT};
use sip_ka::lab::{
    self,
    packet::{CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

/// The uid and gid the daemon runs as (no name needed: setpriv takes
/// numbers, and the files it creates show the number).
const UID: u32 = 61_234;

/// What the test takes from the unit file.
#[derive(Debug)]
struct Unit {
    /// Capability names as setpriv spells them (`bpf`, `net_admin`, ...).
    caps: Vec<String>,
    user: String,
    group: String,
    /// `ExecStartPre=+...` command lines, `+` removed.
    pre: Vec<String>,
    exec_start: String,
    read_write: Vec<String>,
    runtime_dir: String,
}

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/sip-ka@.service")
}

fn parse_unit(text: &str) -> Unit {
    let values = |key: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    let one = |key: &str| -> String {
        match values(key).as_slice() {
            [v] => v.clone(),
            other => panic!("the unit must set {key}= once, it has {other:?}"),
        }
    };
    let caps = |key: &str| -> Vec<String> {
        let mut c: Vec<String> = one(key)
            .split_whitespace()
            .map(|c| {
                c.strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("{key}: {c} is not a CAP_ name"))
                    .to_ascii_lowercase()
            })
            .collect();
        c.sort();
        c
    };
    let bounding = caps("CapabilityBoundingSet");
    let ambient = caps("AmbientCapabilities");
    assert_eq!(
        bounding, ambient,
        "the unit's CapabilityBoundingSet and AmbientCapabilities differ"
    );
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("Type"), "notify");
    let pre = values("ExecStartPre")
        .into_iter()
        .map(|p| {
            p.strip_prefix('+')
                .unwrap_or_else(|| {
                    panic!("ExecStartPre={p} runs without `+`: this test runs it as root")
                })
                .to_string()
        })
        .collect();
    Unit {
        caps: bounding,
        user: one("User"),
        group: one("Group"),
        pre,
        exec_start: one("ExecStart"),
        read_write: values("ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect(),
        runtime_dir: one("RuntimeDirectory"),
    }
}

/// `%i` replaced by the instance, the user and group by the test's uid.
fn expand(unit: &Unit, line: &str, iface: &str) -> Vec<String> {
    let line = line.replace("%i", iface);
    line.split_whitespace()
        .map(|w| {
            if w == format!("{}:{}", unit.user, unit.group) {
                format!("{UID}:{UID}")
            } else if w == unit.user || w == unit.group {
                UID.to_string()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// A mount namespace standing in for systemd's view of the host: a
/// process that holds it (so pins outlive a daemon, as on a host), with a
/// fresh bpffs on /sys/fs/bpf and the runtime directory. Killed on drop,
/// which frees that bpffs and with it every pin and the link.
struct Host {
    holder: Child,
}

impl Host {
    fn new(lab: &Lab, unit: &Unit) -> Host {
        let run_dir = format!("/run/{}", unit.runtime_dir);
        let script = format!(
            "set -e; mount -t bpf -o mode=0700 bpf /sys/fs/bpf; mkdir -p {run_dir}; \
             mount -t tmpfs -o mode=0755,uid={UID},gid={UID} tmpfs {run_dir}; \
             echo mounted; exec sleep 600"
        );
        let mut holder = lab
            .server("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the mount namespace holder");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("holder stdout"))
            .read_line(&mut line)
            .expect("reading the holder");
        assert_eq!(line.trim(), "mounted", "the mount namespace holder failed");
        Host { holder }
    }

    fn mnt(&self) -> String {
        format!("--mount=/proc/{}/ns/mnt", self.holder.id())
    }

    /// The unit's ExecStartPre=+ lines, as root in this namespace.
    fn prepare(&self, unit: &Unit, iface: &str) {
        for line in &unit.pre {
            let argv = expand(unit, line, iface);
            lab::run(
                Command::new("nsenter")
                    .arg(self.mnt())
                    .arg("--")
                    .args(&argv),
            )
            .unwrap_or_else(|e| panic!("ExecStartPre={line}: {e:#}"));
        }
    }

    /// `argv` as the service user holding `caps` only, in this namespace
    /// and the server's network namespace, under the unit's read-only
    /// view of the file system.
    fn as_service(&self, lab: &Lab, unit: &Unit, iface: &str, caps: &[String]) -> Command {
        let set: String = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{c}")))
            .collect::<Vec<_>>()
            .join(",");
        let mut script = String::from("set -e; ");
        for p in &unit.read_write {
            let p = p.replace("%i", iface);
            script.push_str(&format!("mount --bind {p} {p}; "));
        }
        script.push_str(
            "mount -o remount,bind,ro /sys/fs/bpf; mount -o remount,bind,ro /sys; \
             mount -o remount,bind,ro /; exec \"$@\"",
        );
        let mut c = Command::new("nsenter");
        c.arg(self.mnt())
            .arg(format!("--net=/run/netns/{}", lab.server_ns))
            .args(["--", "unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", &script, "sh"])
            .args(["prlimit", "--memlock=65536:65536", "--"])
            .args([
                "setpriv",
                &format!("--reuid={UID}"),
                &format!("--regid={UID}"),
            ])
            .args(["--clear-groups", "--no-new-privs"])
            .arg(format!("--inh-caps={set}"))
            .arg(format!("--ambient-caps={set}"))
            .arg(format!("--bounding-set={set}"))
            .arg("--");
        c
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The $NOTIFY_SOCKET the daemon reports to, in a directory of its own.
struct Notify {
    dir: PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    fn new(lab: &Lab) -> Notify {
        let dir = std::env::temp_dir().join(format!("{}-notify", lab.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("notify dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).expect("binding the notify socket");
        // The daemon is not root: it must be allowed to send.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Notify { dir, sock }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("notify")
    }

    /// The next message, or None when `wait` passes or `alive` says the
    /// sender is gone.
    fn recv(&self, wait: Duration, mut alive: impl FnMut() -> bool) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            match self.sock.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) if Instant::now() < deadline && alive() => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon started from the unit's ExecStart; its stderr is kept for
/// the failure messages.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn tail(&self) -> String {
        let lines = self.stderr.lock().expect("stderr lines");
        lines[lines.len().saturating_sub(6)..].join("\n")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    /// Its exit status, killed after 10 s.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}

/// The packaged default configuration, written by `sip-ka assets`.
fn default_config(lab: &Lab) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{}-assets", lab.name));
    let _ = std::fs::remove_dir_all(&dir);
    lab::run(
        Command::new(lab::sip_ka_exe().expect("sip-ka binary"))
            .arg("assets")
            .arg(&dir),
    )
    .expect("sip-ka assets");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir.join("sip-ka.toml")
}

struct Setup {
    lab: Lab,
    unit: Unit,
    config: PathBuf,
}

impl Setup {
    fn iface(&self) -> &str {
        &self.lab.server_if
    }

    /// Starts the unit's ExecStart (the binary under test for
    /// /usr/bin/sip-ka, the test's copy of the default configuration)
    /// plus the edge's lab flags, and waits for READY=1.
    fn start(&self, host: &Host, notify: &Notify, caps: &[String]) -> Result<Daemon, String> {
        let iface = self.iface().to_string();
        let mut argv = expand(&self.unit, &self.unit.exec_start, &iface);
        assert!(argv[0].ends_with("/sip-ka"), "ExecStart runs {}", argv[0]);
        argv.remove(0);
        let cfg = argv
            .iter()
            .position(|a| a == "--config")
            .expect("ExecStart passes --config");
        argv[cfg + 1] = self.config.to_string_lossy().into_owned();
        let edge = edge_addr().to_string();
        let pbx = common::edge::pbx_addr().to_string();
        argv.extend(
            [
                "--mode",
                "edge",
                "--xdp-mode",
                "native",
                "--listen",
                &edge,
                "--upstream",
                &pbx,
                "--metrics",
                METRICS,
            ]
            .map(String::from),
        );
        let mut cmd = host.as_service(&self.lab, &self.unit, &iface, caps);
        let mut child = cmd
            .arg(lab::sip_ka_exe().expect("sip-ka binary"))
            .args(&argv)
            .env("NOTIFY_SOCKET", notify.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the daemon");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("stderr lines").push(l);
            }
        });
        let mut d = Daemon { child, stderr };
        let msg = notify.recv(Duration::from_secs(60), || d.alive());
        match msg {
            Some(m) if m.lines().any(|l| l == "READY=1") => Ok(d),
            Some(m) => Err(format!("first notification was {m:?}, not READY=1")),
            None => {
                let status = d.child.try_wait().ok().flatten();
                // Let the stderr reader finish.
                std::thread::sleep(Duration::from_millis(200));
                Err(format!("no READY=1 (exit status {status:?}): {}", d.tail()))
            }
        }
    }

    /// `sip-ka stats --json` as the service user with `caps`.
    fn stats(&self, host: &Host, caps: &[String]) -> Result<serde_json::Value, String> {
        let iface = self.iface().to_string();
        let argv = expand(&self.unit, &self.unit.exec_start, &iface);
        let pin_dir = argv
            .iter()
            .position(|a| a == "--pin-dir")
            .and_then(|i| argv.get(i + 1))
            .expect("ExecStart passes --pin-dir")
            .clone();
        let out = host
            .as_service(&self.lab, &self.unit, &iface, caps)
            .arg(lab::sip_ka_exe().expect("sip-ka binary"))
            .args(["stats", "--json", "--pin-dir", &pin_dir])
            .output()
            .map_err(|e| format!("running sip-ka stats: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sip-ka stats failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("stats JSON: {e}"))
    }
}

fn pong(lab: &Lab) -> Result<(), String> {
    let sock = common::client_socket(lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let to = SocketAddr::new(SERVER_V4.into(), 5060);
    match exchange(&sock, to, CRLF_PING, ANSWER_WAIT) {
        Some((got, _)) if got == CRLF_PONG => Ok(()),
        other => Err(format!("CRLF ping to {to}: {other:02x?}, want a pong")),
    }
}

fn options_200(lab: &Lab) -> Result<(), String> {
    let sock = common::client_socket(lab, SocketAddr::new(CLIENT_V4.into(), 0));
    let local = sock.local_addr().expect("local addr");
    let to = edge_addr();
    let msg = format!(
        "OPTIONS sip:{SERVER_V4}:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKlp1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ua@{CLIENT_V4}>;tag=lp1\r\n\
         To: <sip:{SERVER_V4}:5060>\r\n\
         Call-ID: lp1@{CLIENT_V4}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match exchange(&sock, to, msg.as_bytes(), ANSWER_WAIT) {
        Some((got, _)) if got.starts_with(b"SIP/2.0 200 ") => Ok(()),
        other => Err(format!(
            "OPTIONS to the edge on {to}: {:?}, want 200",
            other.map(|(b, _)| String::from_utf8_lossy(&b).into_owned())
        )),
    }
}

/// Where the daemon serves /metrics (no capability needed for it).
const METRICS: &str = "198.18.0.1:9561";

/// The /metrics page, fetched from the phones' side.
fn metrics_page(lab: &Lab) -> Result<String, String> {
    let out = lab
        .client("curl")
        .args(["-sS", "--fail", "--max-time", "5"])
        .arg(format!("http://{METRICS}/metrics"))
        .output()
        .map_err(|e| format!("running curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl http://{METRICS}/metrics: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every feature of a started daemon: the XDP pong, the edge's 200 to
/// OPTIONS on port 5060, `sip-ka stats` run as the service counting
/// both, and /metrics showing the pong.
fn features(s: &Setup, host: &Host, caps: &[String]) -> Result<(), String> {
    pong(&s.lab)?;
    options_200(&s.lab)?;
    let mode = common::attached_mode(&s.lab);
    if mode != "native" {
        return Err(format!("XDP attached in mode {mode}, want native"));
    }
    let mut last = serde_json::Value::Null;
    let counted = common::wait_until(Duration::from_secs(3), || {
        let Ok(v) = s.stats(host, caps) else {
            return false;
        };
        last = v;
        last["counters"]["crlf_pong_sent"].as_u64() >= Some(1)
            && last["counters"]["edge_options_edge"].as_u64() >= Some(1)
    });
    if !counted {
        s.stats(host, caps)?;
        return Err(format!(
            "stats did not count the pong and the OPTIONS: crlf_pong_sent {}, \
             edge_options_edge {}",
            last["counters"]["crlf_pong_sent"], last["counters"]["edge_options_edge"]
        ));
    }
    let page = metrics_page(&s.lab)?;
    let answered = page.lines().any(|l| {
        l.starts_with("sipka_keepalives_total{")
            && l.contains("kind=\"crlf\"")
            && l.contains("path=\"xdp\"")
            && l.contains("action=\"answered\"")
            && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
    });
    if !answered || !page.contains("sipka_pbx_up") {
        return Err(format!(
            "/metrics does not show the pong or the PBX:\n{page}"
        ));
    }
    Ok(())
}

/// Starts the unit in a fresh host view with `caps` and checks every
/// feature; the daemon is stopped before returning.
fn run_with(s: &Setup, caps: &[String]) -> Result<(), String> {
    let host = Host::new(&s.lab, &s.unit);
    let notify = Notify::new(&s.lab);
    host.prepare(&s.unit, s.iface());
    let mut d = s.start(&host, &notify, caps)?;
    let r = features(s, &host, caps).map_err(|e| format!("{e} (daemon: {})", d.tail()));
    d.stop();
    r
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn the_unit_capability_set_runs_every_feature_and_each_capability_is_needed() {
    let text = std::fs::read_to_string(unit_path())
        .unwrap_or_else(|e| panic!("reading {}: {e}", unit_path().display()));
    let unit = parse_unit(&text);
    assert!(!unit.caps.is_empty(), "the unit names no capability");
    // The single-instance unit must not grant more (or less) than the
    // template this test runs.
    let single = unit_path().with_file_name("sip-ka.service");
    let single = parse_unit(&std::fs::read_to_string(&single).expect("sip-ka.service"));
    assert_eq!(
        (&single.caps, &single.user, single.pre.len()),
        (&unit.caps, &unit.user, unit.pre.len()),
        "sip-ka.service and sip-ka@.service differ in privilege"
    );
    for tool in [
        "setpriv", "prlimit", "unshare", "nsenter", "install", "chown", "chmod",
    ] {
        assert!(
            lab::on_path(tool).is_some(),
            "{tool} is not on PATH (util-linux, coreutils: `cargo xtask setup`)"
        );
    }
    let lab = common::lab();
    let config = default_config(&lab);
    let s = Setup { lab, unit, config };
    let caps = s.unit.caps.clone();

    // The full set: every feature, READY and STOPPING, and a restart that
    // keeps the fast path answering.
    {
        let host = Host::new(&s.lab, &s.unit);
        let notify = Notify::new(&s.lab);
        host.prepare(&s.unit, s.iface());
        let mut d = s
            .start(&host, &notify, &caps)
            .unwrap_or_else(|e| panic!("with the unit's capabilities {caps:?}: {e}"));
        features(&s, &host, &caps)
            .unwrap_or_else(|e| panic!("with the unit's capabilities {caps:?}: {e}\n{}", d.tail()));
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        let msg = notify.recv(Duration::from_secs(10), || true);
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.lines().any(|l| l == "STOPPING=1")),
            "after SIGTERM the daemon sent {msg:?}, want STOPPING=1"
        );
        let status = d.wait_exit();
        assert!(
            status.success(),
            "the daemon exited with {status}: {}",
            d.tail()
        );
        // --keep-attached: no daemon, the fast path still answers.
        pong(&s.lab).unwrap_or_else(|e| panic!("with the daemon stopped (--keep-attached): {e}"));
        // The restart systemd does: ExecStartPre again, then a daemon that
        // replaces the program behind the pinned link.
        host.prepare(&s.unit, s.iface());
        let mut d = s
            .start(&host, &notify, &caps)
            .unwrap_or_else(|e| panic!("restarting with {caps:?}: {e}"));
        pong(&s.lab).unwrap_or_else(|e| panic!("after the restart: {e}"));
        options_200(&s.lab).unwrap_or_else(|e| panic!("after the restart: {e}"));
        assert!(d.stop().success(), "the restarted daemon: {}", d.tail());
    }
    // The pins (and link) went with that host's bpffs.

    // Each capability is needed: without it something fails.
    let mut why = Vec::new();
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        match run_with(&s, &fewer) {
            Ok(()) => panic!(
                "without CAP_{} every feature still works: the unit's set {caps:?} is not minimal",
                cap.to_ascii_uppercase()
            ),
            Err(e) => {
                // A refusal by the kernel, not some other breakage.
                assert!(
                    ["Operation not permitted", "Permission denied", "prohibited"]
                        .iter()
                        .any(|w| e.contains(w)),
                    "without CAP_{} the run failed, but not for want of privilege: {e}",
                    cap.to_ascii_uppercase()
                );
                why.push(format!("without CAP_{}: {e}", cap.to_ascii_uppercase()))
            }
        }
    }
    eprintln!("each capability is needed:\n{}", why.join("\n"));
}
