//! Helpers for the end-to-end tests: preconditions, sockets inside a lab's
//! client namespace, an independent STUN decoder (so the tests do not
//! trust the code under test to read its own answers), counter deltas and
//! bounded waits. Requests are built with `sip_ka::lab::packet`.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use sip_ka::lab::{
    self,
    packet::{CRLF_PING, CRLF_PONG},
    Lab,
};

pub mod edge;
pub mod ha;
pub mod kamailio;
pub mod pbx_auth;
pub mod sip_text;
pub mod ws_ua;

/// Fails the test (never skips it) when it cannot run here: it needs root
/// and the real clients.
pub fn require_env() {
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the end-to-end tests need root (network namespaces, XDP, bpffs); \
             run them as root, e.g. `cargo xtask test`"
        );
    }
    let missing = lab::missing_tools();
    if !missing.is_empty() {
        panic!(
            "the end-to-end tests need these tools, which are not on PATH: {}; \
             install them with `cargo xtask setup`",
            missing.join(", ")
        );
    }
    if !Path::new("/sys/fs/bpf").join(".").exists()
        || !std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        panic!(
            "/sys/fs/bpf is not mounted: `mount -t bpf bpf /sys/fs/bpf` (or `cargo xtask setup`)"
        );
    }
}

/// A new lab with the preconditions checked and ICMP errors unthrottled
/// in the server namespace (so a client whose request nothing answers
/// learns it at once, every time).
pub fn lab() -> Lab {
    require_env();
    let lab = Lab::new().expect("creating the lab");
    for key in ["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"] {
        lab::run(lab.server("sysctl").args(["-q", "-w", key])).expect("sysctl in the server ns");
    }
    lab
}

/// Starts the daemon, with a clear panic message.
pub fn start(lab: &mut Lab, extra: &[&str]) {
    lab.start_daemon(extra)
        .unwrap_or_else(|e| panic!("starting `sip-ka run {}`: {e:#}", extra.join(" ")));
}

/// Which XDP mode the kernel reports on the server interface: "native",
/// "skb", or "none".
pub fn attached_mode(lab: &Lab) -> String {
    lab::attached_mode(lab).expect("ip link show").to_string()
}

/// Runs `f` on a thread that joined the namespace `ns` (sockets it makes
/// stay in that namespace wherever they are used).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns({path}): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A UDP socket created in the lab's client namespace, bound to `bind`,
/// with a receive timeout.
pub fn client_socket(lab: &Lab, bind: SocketAddr) -> UdpSocket {
    in_ns(&lab.client_ns, move || {
        let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        s
    })
}

/// Sends `payload` to `to` and returns the first datagram that comes back
/// within `wait` (with its source), or None. Earlier stray datagrams are
/// drained first; ICMP errors (connection refused) count as no answer.
pub fn exchange(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<(Vec<u8>, SocketAddr)> {
    drain(sock);
    sock.send_to(payload, to).expect("send_to");
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    for _ in 0..1000 {
        if Instant::now() >= deadline {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => return Some((buf[..n].to_vec(), src)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
    None
}

/// Sends `payload` that must go unanswered, then a CRLF ping as a fence
/// (same flow, so handled after it), and returns what came back before
/// the fence's pong: None when the payload got no answer. Quicker and
/// sharper than waiting for silence; the fence adds one `crlf_ping`.
pub fn exchange_fenced(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
) -> Option<(Vec<u8>, SocketAddr)> {
    drain(sock);
    sock.send_to(payload, to).expect("send_to");
    sock.send_to(CRLF_PING, to).expect("send_to");
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 2048];
    let mut answer = None;
    for _ in 0..1000 {
        if Instant::now() >= deadline {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, src)) if src == to && &buf[..n] == CRLF_PONG => return answer,
            Ok((n, src)) => {
                answer.get_or_insert((buf[..n].to_vec(), src));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
    panic!(
        "no pong to the fence ping to {to} within {ANSWER_WAIT:?} (answer so far: {answer:02x?})"
    );
}

fn drain(sock: &UdpSocket) {
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        match sock.recv_from(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => break,
        }
    }
    sock.set_nonblocking(false).expect("blocking");
}

/// How long to wait for an answer that must come (veth, same host).
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long to wait before concluding that no answer comes.
pub const SILENCE_WAIT: Duration = Duration::from_millis(600);

/// Runs `program args...` in the client namespace under `timeout` (killed
/// after `secs` + 2 s) and returns its output, whatever its exit status.
pub fn client_run(lab: &Lab, secs: u32, program: &str, args: &[&str]) -> Output {
    let mut cmd = lab.client("timeout");
    cmd.args(["-k", "2", &secs.to_string(), program]).args(args);
    run_capture(&mut cmd)
}

/// Runs a command and returns its output (panics only if it cannot start).
pub fn run_capture(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The daemon's counters.
pub fn counters(lab: &Lab) -> BTreeMap<String, u64> {
    lab.counters().expect("sip-ka stats --json")
}

/// `after - before` for every counter that changed.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Delta {
    Delta(
        after
            .iter()
            .filter_map(|(k, v)| {
                let d = v.wrapping_sub(*before.get(k).unwrap_or(&0));
                (d != 0).then(|| (k.clone(), d))
            })
            .collect(),
    )
}

#[derive(Debug)]
pub struct Delta(pub BTreeMap<String, u64>);

impl Delta {
    pub fn get(&self, name: &str) -> u64 {
        *self.0.get(name).unwrap_or(&0)
    }

    /// Asserts each (counter, change) pair, showing every change on failure.
    #[track_caller]
    pub fn expect(&self, what: &str, want: &[(&str, u64)]) {
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| self.get(k) != *v)
            .map(|(k, v)| format!("{k}: want +{v}, got +{}", self.get(k)))
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: {}; all changes: {:?}",
            wrong.join(", "),
            self.0
        );
    }
}

/// SIGTERM to `child`, then its exit status; killed when it has not
/// exited after `grace`.
pub fn terminate(child: &mut std::process::Child, grace: Duration) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `sip-ka peers --json` as (source -> entry).
pub fn peers(lab: &Lab) -> BTreeMap<String, serde_json::Value> {
    let out = lab::run(&mut lab.sip_ka(&["peers", "--json"]).expect("sip-ka"))
        .expect("sip-ka peers --json");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peers JSON");
    v.as_array()
        .expect("peers JSON is an array")
        .iter()
        .map(|e| (e["source"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect()
}

/// Runs `sip-ka config --pin-dir <lab pins> set KEY VALUE`.
pub fn config_set(lab: &Lab, key: &str, value: &str) {
    lab::run(
        Command::new(lab::sip_ka_exe().expect("sip-ka binary"))
            .arg("config")
            .arg("--pin-dir")
            .arg(&lab.pin_dir)
            .args(["set", key, value]),
    )
    .unwrap_or_else(|e| panic!("sip-ka config set {key} {value}: {e:#}"));
}

/// A `sip-ka run` started by the test itself (for command lines the lab's
/// `start_daemon` does not build, e.g. without `--iface`), in the server
/// namespace; stopped with SIGTERM, then killed, on drop.
pub struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    pub fn start(lab: &Lab, args: &[&str]) -> Daemon {
        let exe = lab::sip_ka_exe().expect("sip-ka binary");
        let mut child = lab
            .server(exe)
            .arg("run")
            .args(args)
            .arg("--pin-dir")
            .arg(&lab.pin_dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawning sip-ka run");
        if let Err(e) = lab::wait_ready(&mut child, Duration::from_secs(30)) {
            panic!("`sip-ka run {}`: {e:#}", args.join(" "));
        }
        Daemon { child }
    }

    /// SIGTERM, then the exit status (killed after 10 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------
// Reading STUN answers, written here from RFC 8489 / RFC 3489 rather than
// taken from the crates under test.

pub const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const FINGERPRINT: u16 = 0x8028;

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn fingerprint_of(msg: &[u8]) -> u32 {
    crc32(msg) ^ 0x5354_554E
}

/// A deterministic 12-byte transaction id from `seed`.
pub fn txid(seed: u32) -> [u8; 12] {
    let mut id = [0u8; 12];
    for (i, b) in id.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 5) >> 3) as u8 ^ i as u8;
    }
    id
}

/// A decoded Binding success response.
#[derive(Debug)]
pub struct Success {
    pub id: [u8; 16],
    /// XOR-MAPPED-ADDRESS (decoded) or, for a classic answer, MAPPED-ADDRESS.
    pub mapped: SocketAddr,
    pub xor_mapped: bool,
    /// Some(valid?) when the answer carries FINGERPRINT.
    pub fingerprint: Option<bool>,
    pub attr_types: Vec<u16>,
}

/// Decodes a Binding success, checking framing as a client would.
pub fn parse_success(msg: &[u8]) -> Result<Success, String> {
    if msg.len() < 20 {
        return Err(format!("{} bytes: shorter than a STUN header", msg.len()));
    }
    let ty = u16::from_be_bytes([msg[0], msg[1]]);
    if ty != 0x0101 {
        return Err(format!("message type {ty:#06x}, want 0x0101"));
    }
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    if len + 20 != msg.len() || !len.is_multiple_of(4) {
        return Err(format!("length field {len} for {} bytes", msg.len()));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&msg[4..20]);
    let mut off = 20;
    let mut mapped = None;
    let mut xor_mapped = false;
    let mut fingerprint = None;
    let mut attr_types = Vec::new();
    while off + 4 <= msg.len() {
        let at = u16::from_be_bytes([msg[off], msg[off + 1]]);
        let al = u16::from_be_bytes([msg[off + 2], msg[off + 3]]) as usize;
        let v = msg
            .get(off + 4..off + 4 + al)
            .ok_or_else(|| format!("attribute {at:#06x} overruns the message"))?;
        attr_types.push(at);
        match at {
            XOR_MAPPED_ADDRESS | MAPPED_ADDRESS => {
                let xor = at == XOR_MAPPED_ADDRESS;
                let port_raw = u16::from_be_bytes([v[2], v[3]]);
                let port = if xor { port_raw ^ 0x2112 } else { port_raw };
                let ip: IpAddr = match (v[1], al) {
                    (1, 8) => {
                        let mut a = [0u8; 4];
                        for i in 0..4 {
                            a[i] = v[4 + i] ^ if xor { id[i] } else { 0 };
                        }
                        a.into()
                    }
                    (2, 20) => {
                        let mut a = [0u8; 16];
                        for i in 0..16 {
                            a[i] = v[4 + i] ^ if xor { id[i] } else { 0 };
                        }
                        a.into()
                    }
                    (f, l) => return Err(format!("address family {f} with length {l}")),
                };
                if mapped.is_none() || xor {
                    mapped = Some(SocketAddr::new(ip, port));
                    xor_mapped = xor;
                }
            }
            FINGERPRINT => {
                if off + 8 != msg.len() {
                    return Err("FINGERPRINT is not the last attribute".into());
                }
                let got = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                fingerprint = Some(got == fingerprint_of(&msg[..off]));
            }
            _ => {}
        }
        off += 4 + al.div_ceil(4) * 4;
    }
    if off != msg.len() {
        return Err("trailing bytes after the attributes".into());
    }
    let mapped = mapped.ok_or("no (XOR-)MAPPED-ADDRESS")?;
    Ok(Success {
        id,
        mapped,
        xor_mapped,
        fingerprint,
        attr_types,
    })
}

/// The id a modern request's answer must carry (cookie + transaction id).
pub fn full_id(id: [u8; 12]) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[..4].copy_from_slice(&COOKIE);
    f[4..].copy_from_slice(&id);
    f
}

pub use sip_ka::lab::addr_after;
