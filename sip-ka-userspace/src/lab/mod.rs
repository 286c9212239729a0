//! A lab in network namespaces: a server namespace where sip-ka runs on
//! one end of a veth pair, a client namespace on the other end where real
//! clients (sipp, stun, turnutils_stunclient, sipsak, or a test's own
//! sockets) send keep-alives. Used by `sip-ka lab`, the end-to-end tests
//! and the benchmark.
//!
//! Every name carries the creating process id, so labs run in parallel and
//! `Lab::sweep_stale` can remove what a crashed run left behind.

use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub mod packet;

pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5a, 0, 1, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5a, 0, 1, 0, 0, 0, 2);
/// Name prefix of everything a lab creates.
const PREFIX: &str = "ska";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    /// Unique tag: `ska<pid>x<seq>`.
    pub name: String,
    pub server_ns: String,
    pub client_ns: String,
    /// veth end in the server namespace (where XDP runs).
    pub server_if: String,
    pub client_if: String,
    /// Pin directory of this lab's sip-ka.
    pub pin_dir: PathBuf,
    daemon: Option<Child>,
}

/// Waits until a `sip-ka run` started with its stdout piped prints its
/// readiness line; an error when it exits first, or (killed) when it is
/// not ready `within`.
pub fn wait_ready(child: &mut Child, within: Duration) -> Result<()> {
    let stdout = child.stdout.take().context("daemon stdout (not piped)")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + within;
    loop {
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("sip-ka run exited before it was ready: {status}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("sip-ka run was not ready within {} s", within.as_secs());
        }
    }
}

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is it installed? `cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

impl Lab {
    /// Creates the namespaces, the veth pair and the addresses (IPv4 and
    /// IPv6), with TX checksum offload off on the client side so frames
    /// reach XDP with complete checksums, as from a real wire.
    pub fn new() -> Result<Lab> {
        if unsafe { libc::geteuid() } != 0 {
            bail!("the lab needs root (network namespaces, XDP, bpffs)");
        }
        Lab::sweep_stale();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}x{seq}", std::process::id());
        let lab = Lab {
            server_ns: format!("{name}s"),
            client_ns: format!("{name}c"),
            server_if: format!("{name}a"),
            client_if: format!("{name}b"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{name}")),
            name,
            daemon: None,
        };
        if lab.server_if.len() > 15 {
            bail!("interface name {} too long", lab.server_if);
        }
        lab.build().context("building the lab")?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        ip(&["netns", "add", &self.server_ns])?;
        ip(&["netns", "add", &self.client_ns])?;
        ip(&[
            "link",
            "add",
            &self.server_if,
            "netns",
            &self.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_if,
            "netns",
            &self.client_ns,
        ])?;
        for (ns, dev, v4, v6) in [
            (&self.server_ns, &self.server_if, SERVER_V4, SERVER_V6),
            (&self.client_ns, &self.client_if, CLIENT_V4, CLIENT_V6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        run(Command::new("ip").args([
            "netns",
            "exec",
            &self.client_ns,
            "ethtool",
            "-K",
            &self.client_if,
            "tx",
            "off",
        ]))
        .context("turning TX checksum offload off needs ethtool")?;
        // Native XDP_TX on a veth needs an XDP program on the peer.
        std::fs::create_dir_all(&self.pin_dir).ok();
        let exe = sip_ka_exe()?;
        run(self.in_net(&self.client_ns, &exe).args([
            "xdp-pass",
            "--iface",
            &self.client_if,
            "--pin",
            &self.pin_dir.join("pass_link").to_string_lossy(),
        ]))?;
        Ok(())
    }

    /// A command run in `ns`'s network namespace with nsenter, which (unlike
    /// `ip netns exec`) keeps the host's /sys and so its bpffs.
    fn in_net(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program);
        c
    }

    /// A command in the client namespace.
    pub fn client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.in_net(&self.client_ns, program)
    }

    /// A command in the server namespace.
    pub fn server(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.in_net(&self.server_ns, program)
    }

    /// `sip-ka <args> --pin-dir <lab pins>` (for stats, peers, config).
    pub fn sip_ka(&self, args: &[&str]) -> Result<Command> {
        let mut c = Command::new(sip_ka_exe()?);
        c.args(args).arg("--pin-dir").arg(&self.pin_dir);
        Ok(c)
    }

    /// `sip-ka stats --json` parsed into (name -> total).
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = run(&mut self.sip_ka(&["stats", "--json"])?)?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut m = std::collections::BTreeMap::new();
        if let Some(obj) = v["counters"].as_object() {
            for (k, val) in obj {
                m.insert(k.clone(), val.as_u64().unwrap_or(0));
            }
        }
        Ok(m)
    }

    /// Starts `sip-ka run --iface <server_if> --pin-dir <pins> <extra>` in
    /// the server namespace and waits (30 s at most) for it to be ready.
    pub fn start_daemon(&mut self, extra: &[&str]) -> Result<()> {
        if self.daemon.is_some() {
            bail!("daemon already running");
        }
        let exe = sip_ka_exe()?;
        let mut cmd = self.server(&exe);
        cmd.args(["run", "--iface", &self.server_if, "--pin-dir"])
            .arg(&self.pin_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("spawning sip-ka run")?;
        wait_ready(&mut child, Duration::from_secs(30))?;
        self.daemon = Some(child);
        Ok(())
    }

    /// Stops the daemon with SIGTERM (it detaches and unpins) and waits.
    pub fn stop_daemon(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.daemon.take().context("no daemon running")?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("sip-ka run did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id, if one runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// Removes namespaces and pins left by lab processes that are gone.
    pub fn sweep_stale() {
        let alive = |tag: &str| -> bool {
            let digits: String = tag
                .trim_start_matches(PREFIX)
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            match digits.parse::<u32>() {
                Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
                Err(_) => true,
            }
        };
        if let Ok(rd) = std::fs::read_dir("/run/netns") {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with(PREFIX) && !alive(&n) {
                    let _ = ip(&["netns", "del", &n]);
                }
            }
        }
        for dir in ["/sys/fs/bpf", "/run/sip-ka"] {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with(PREFIX) && !alive(&n) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            let _ = self.stop_daemon();
        }
        // Deleting the namespaces destroys the veth pair, which detaches
        // every XDP program on it; the pins go with the directory.
        let _ = ip(&["netns", "del", &self.client_ns]);
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        // The edge's default state directory is named after the pins.
        let _ = std::fs::remove_dir_all(crate::edge::persist::default_state_dir(&self.pin_dir));
    }
}

/// The tools a lab and its clients need, with their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("nsenter", "util-linux"),
    ("timeout", "coreutils"),
    ("sysctl", "procps"),
    ("sipp", "sip-tester"),
    ("sipsak", "sipsak"),
    ("stun", "stun-client"),
    ("turnutils_stunclient", "coturn"),
    ("openssl", "openssl"),
];

/// `tool` on PATH (an executable file of that name).
pub fn on_path(tool: &str) -> Option<PathBuf> {
    which::which(tool).ok()
}

/// The `TOOLS` not on PATH, as "tool (Debian package pkg)".
pub fn missing_tools() -> Vec<String> {
    TOOLS
        .iter()
        .filter(|(tool, _)| on_path(tool).is_none())
        .map(|(tool, pkg)| format!("{tool} (Debian package {pkg})"))
        .collect()
}

/// How the kernel reports XDP on the lab's server interface: "native",
/// "skb" or "none".
pub fn attached_mode(lab: &Lab) -> Result<&'static str> {
    let out = run(lab
        .server("ip")
        .args(["-d", "link", "show", "dev", &lab.server_if]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(if text.contains("xdpgeneric") {
        "skb"
    } else if text.contains(" xdp ") || text.contains("prog/xdp") {
        "native"
    } else {
        "none"
    })
}

/// The address a client printed after `marker` (e.g. `MappedAddress = `):
/// `a.b.c.d:port`, `[v6]:port` or a bare `v6:port`.
pub fn addr_after(output: &str, marker: &str) -> Option<std::net::SocketAddr> {
    let rest = &output[output.find(marker)? + marker.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    if let Ok(a) = token.parse() {
        return Some(a);
    }
    let (ip, port) = token.rsplit_once(':')?;
    Some(std::net::SocketAddr::new(
        ip.parse().ok()?,
        port.parse().ok()?,
    ))
}

/// A sipp scenario for the lab: an OPTIONS out of dialog, then an INFO
/// without a body inside a dialog (To has a tag), expecting nothing back.
/// sipp as the PBX behind the edge: answers calls (100, 180, 200, then
/// the BYE) and the edge's qualify OPTIONS; anything else in a call, an
/// in-dialog keep-alive that should have been answered by the edge for
/// one, fails the call.
pub const EDGE_PBX_SCENARIO: &str = include_str!("../../tests/edge/pbx_uas.xml");

/// sipp as a phone calling through the edge: INVITE, ACK, one in-dialog
/// request without a body per entry of `methods` (each answered 200), a
/// pause of `hold_ms`, BYE.
pub fn edge_ua_scenario(methods: &[&str], hold_ms: u32) -> String {
    let base = include_str!("../../tests/edge/ua_call.xml");
    let ka = include_str!("../../tests/edge/keepalive.xml");
    let blocks: String = methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            ka.replace("CSEQ", &(2 + i).to_string())
                .replace("METHOD", m)
        })
        .collect();
    base.replace("<!-- IN_DIALOG -->", &blocks)
        .replace("HOLD_MS", &hold_ms.to_string())
}

pub const SIPP_KEEPALIVE_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="sip-ka keep-alives">
  <send>
    <![CDATA[

      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="20"/>
  <send>
    <![CDATA[

      INFO sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[remote_ip]:[remote_port]>;tag=sip-ka-lab
      Call-ID: [call_id]
      CSeq: 2 INFO
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// The sip-ka binary: this process when it is sip-ka, otherwise
/// `SIP_KA_BIN`, otherwise `sip-ka` next to the current executable (how
/// cargo lays out tests and binaries in target/<profile>/).
pub fn sip_ka_exe() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SIP_KA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "sip-ka") {
        return Ok(me);
    }
    for dir in me.ancestors().skip(1).take(3) {
        let cand = dir.join("sip-ka");
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!("cannot find the sip-ka binary; set SIP_KA_BIN")
}
