//! The HA lab: an edge pair behind virtual IPs moved by keepalived (VRRP),
//! sharing state in Redis, between sipp phones and a sipp PBX.
//!
//! ```text
//!  phones ──┐ public segment (bridge)   internal segment (bridge) ┌── PBX
//!           ├── edge A (XDP, keepalived) ──────────────────────────┤
//!           └── edge B (XDP, keepalived) ──────────────────────────┼── Redis
//!     VIP_pub 198.18.10.10                 VIP_int 198.18.20.10
//! ```
//!
//! Seven network namespaces: phones, edge A, edge B, PBX, Redis, and a
//! switch holding the two bridges. keepalived moves both VIPs together;
//! each edge's `sip-ka run --mode edge` listens on VIP_pub whether it
//! holds it or not (`ip_nonlocal_bind`), its XDP on its public veth, and
//! reaches the PBX on the internal segment (the daemon refuses a PBX
//! reached through --iface). The PBX reaches VIP_pub through VIP_int.
//!
//! Names are `skh<pid>x<seq>` plus a suffix (the pid of the test process,
//! as `sip_ka::lab::Lab` names its own, under another prefix so that its
//! sweep, which deletes namespaces without stopping what runs in them,
//! leaves these alone): [`HaLab::sweep_stale`] kills what a crashed run
//! left running in its namespaces (Redis, keepalived, sip-ka, sipp), then
//! deletes them, its pins and its run directory. Drop stops everything.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sip_ka::lab;

/// The public segment's VIP: where the phones send.
pub const VIP_PUB: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 10);
/// The internal segment's VIP: the PBX's route to VIP_PUB.
pub const VIP_INT: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 10);
pub const PHONES: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
pub const PBX: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
pub const REDIS: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 3);
pub const REDIS_PORT: u16 = 6379;
/// Each edge's own addresses: (public, internal).
pub const EDGE_IPS: [(Ipv4Addr, Ipv4Addr); 2] = [
    (
        Ipv4Addr::new(198, 18, 10, 11),
        Ipv4Addr::new(198, 18, 20, 11),
    ),
    (
        Ipv4Addr::new(198, 18, 10, 12),
        Ipv4Addr::new(198, 18, 20, 12),
    ),
];
pub const EDGE_PORT: u16 = 5060;
pub const PBX_PORT: u16 = 5080;
/// VRRP advertisement interval (s): the packaged example's.
pub const ADVERT_INT: u32 = 1;

static SEQ: AtomicU32 = AtomicU32::new(0);
/// Name prefix of everything an HA lab creates.
const PREFIX: &str = "skh";

pub fn vip() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP_PUB, EDGE_PORT))
}

pub fn pbx() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(PBX, PBX_PORT))
}

/// The `--state-store` URL of the lab's Redis.
pub fn store_url() -> String {
    format!("redis://{REDIS}:{REDIS_PORT}/0")
}

/// One edge host.
pub struct EdgeHost {
    pub name: &'static str,
    pub ns: String,
    /// The phones' side, where XDP runs.
    pub pub_if: String,
    pub int_if: String,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    daemon: Option<Child>,
    keepalived: Option<Child>,
}

pub struct HaLab {
    pub tag: String,
    pub phones_ns: String,
    pub pbx_ns: String,
    pub redis_ns: String,
    switch_ns: String,
    pub edges: [EdgeHost; 2],
    /// Configuration, pid files, logs, state directories.
    pub run_dir: PathBuf,
    /// The switch side's xdp-pass pins.
    pass_pins: PathBuf,
    redis: Option<Child>,
}

/// `ip args...`, panicking with its stderr.
fn ip(args: &[&str]) {
    lab::run(Command::new("ip").args(args)).unwrap_or_else(|e| panic!("{e:#}"));
}

/// `program` in the network namespace `ns` by nsenter (which, unlike `ip
/// netns exec`, keeps the host's /sys and so its bpffs pins).
pub fn in_net(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

/// The tools the HA lab needs beyond the lab's own, with their packages.
const HA_TOOLS: &[(&str, &str)] = &[
    ("keepalived", "keepalived"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
];

impl HaLab {
    /// Builds the namespaces, bridges, veths, addresses and routes; starts
    /// nothing.
    pub fn new() -> HaLab {
        super::require_env();
        let missing: Vec<String> = HA_TOOLS
            .iter()
            .filter(|(t, _)| lab::on_path(t).is_none())
            .map(|(t, p)| format!("{t} (Debian package {p})"))
            .collect();
        assert!(
            missing.is_empty(),
            "the HA lab needs {}; install them with `cargo xtask setup`",
            missing.join(", ")
        );
        HaLab::sweep_stale();
        let tag = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        assert!(
            tag.len() <= 12,
            "lab tag {tag} too long for interface names"
        );
        let run_dir = PathBuf::from(format!("/run/sip-ka/{tag}h"));
        let edge = |name: &'static str, c: char| EdgeHost {
            name,
            ns: format!("{tag}h{c}"),
            pub_if: format!("{tag}{c}p"),
            int_if: format!("{tag}{c}i"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{tag}{c}")),
            state_dir: run_dir.join(format!("state-{c}")),
            daemon: None,
            keepalived: None,
        };
        let lab = HaLab {
            phones_ns: format!("{tag}hp"),
            pbx_ns: format!("{tag}hx"),
            redis_ns: format!("{tag}hr"),
            switch_ns: format!("{tag}hw"),
            edges: [edge("A", 'a'), edge("B", 'b')],
            pass_pins: PathBuf::from(format!("/sys/fs/bpf/{tag}w")),
            run_dir,
            tag,
            redis: None,
        };
        lab.build();
        lab
    }

    fn build(&self) {
        std::fs::create_dir_all(&self.run_dir).expect("run dir");
        let sw = &self.switch_ns;
        for ns in [
            &self.phones_ns,
            &self.pbx_ns,
            &self.redis_ns,
            sw,
            &self.edges[0].ns,
            &self.edges[1].ns,
        ] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for br in ["brpub", "brint"] {
            ip(&["-n", sw, "link", "add", br, "type", "bridge"]);
            ip(&["-n", sw, "link", "set", br, "up"]);
        }
        // (namespace, its interface, bridge, address/prefix)
        let mut ports: Vec<(String, String, &str, String)> = vec![
            (
                self.phones_ns.clone(),
                format!("{}p", self.tag),
                "brpub",
                format!("{PHONES}/24"),
            ),
            (
                self.pbx_ns.clone(),
                format!("{}x", self.tag),
                "brint",
                format!("{PBX}/24"),
            ),
            (
                self.redis_ns.clone(),
                format!("{}r", self.tag),
                "brint",
                format!("{REDIS}/24"),
            ),
        ];
        for (e, (p, i)) in self.edges.iter().zip(EDGE_IPS) {
            ports.push((e.ns.clone(), e.pub_if.clone(), "brpub", format!("{p}/24")));
            ports.push((e.ns.clone(), e.int_if.clone(), "brint", format!("{i}/24")));
        }
        for (ns, dev, br, addr) in &ports {
            let peer = format!("{dev}w");
            ip(&[
                "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", &peer, "netns", sw,
            ]);
            ip(&["-n", sw, "link", "set", &peer, "master", br]);
            ip(&["-n", sw, "link", "set", &peer, "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The PBX answers the phones' side through whichever edge holds
        // VIP_int.
        ip(&[
            "-n",
            &self.pbx_ns,
            "route",
            "add",
            "198.18.10.0/24",
            "via",
            &VIP_INT.to_string(),
        ]);
        // Frames reach XDP with complete checksums, as from a real wire.
        let phones_if = format!("{}p", self.tag);
        lab::run(in_net(&self.phones_ns, "ethtool").args(["-K", &phones_if, "tx", "off"]))
            .unwrap_or_else(|e| panic!("ethtool: {e:#}"));
        for e in &self.edges {
            for key in [
                // The standby binds the VIP it does not hold yet.
                "net.ipv4.ip_nonlocal_bind=1",
                "net.ipv4.icmp_ratelimit=0",
            ] {
                lab::run(in_net(&e.ns, "sysctl").args(["-q", "-w", key]))
                    .unwrap_or_else(|err| panic!("sysctl {key}: {err:#}"));
            }
            // Native XDP_TX on a veth needs an XDP program on its peer.
            std::fs::create_dir_all(&self.pass_pins).expect("pin dir");
            let peer = format!("{}w", e.pub_if);
            let exe = lab::sip_ka_exe().expect("sip-ka binary");
            lab::run(in_net(sw, &exe).args([
                "xdp-pass",
                "--iface",
                &peer,
                "--pin",
                &self.pass_pins.join(&peer).to_string_lossy(),
            ]))
            .unwrap_or_else(|err| panic!("xdp-pass on {peer}: {err:#}"));
        }
    }

    /// Removes what crashed HA labs (of processes gone) left: kills what
    /// runs in their namespaces, deletes them, their pins and run
    /// directories.
    pub fn sweep_stale() {
        let stale = |name: &str| -> bool {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                return false;
            };
            let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            pid.parse::<u32>()
                .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        };
        let names = |dir: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| stale(n))
                        .collect()
                })
                .unwrap_or_default()
        };
        for ns in names("/run/netns") {
            kill_all_in(&ns);
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        // Pins, run directories, and the daemons' lock files and control
        // sockets (/run/sip-ka/<pin dir name>.lock, .sock).
        for dir in ["/sys/fs/bpf", "/run/sip-ka"] {
            for n in names(dir) {
                let p = Path::new(dir).join(n);
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(p);
                } else {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    /// Starts Redis (no persistence: a restarted one is empty) in its
    /// namespace and waits for its PING.
    pub fn start_redis(&mut self) {
        assert!(self.redis.is_none(), "Redis already running");
        let child = in_net(&self.redis_ns, "redis-server")
            .args(["--bind", &REDIS.to_string()])
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.run_dir)
            .args(["--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server (Debian package redis-server)");
        self.redis = Some(child);
        let up = super::wait_until(Duration::from_secs(10), || {
            self.redis_try(&["PING"])
                .is_some_and(|s| s.trim() == "PONG")
        });
        assert!(up, "redis-server did not answer PING within 10 s");
    }

    /// Sends `sig` to Redis (SIGSTOP/SIGCONT to freeze it).
    pub fn signal_redis(&self, sig: i32) {
        let pid = self.redis.as_ref().expect("Redis running").id();
        assert_eq!(
            unsafe { libc::kill(pid as i32, sig) },
            0,
            "kill -{sig} redis"
        );
    }

    /// `kill -9` Redis; everything it held is gone.
    pub fn kill_redis(&mut self) {
        let mut c = self.redis.take().expect("Redis running");
        let _ = c.kill();
        let _ = c.wait();
    }

    /// `redis-cli` against the lab's Redis; None when it fails.
    pub fn redis_try(&self, args: &[&str]) -> Option<String> {
        let out = in_net(&self.redis_ns, "timeout")
            .args(["5", "redis-cli", "-h", &REDIS.to_string()])
            .args(["-p", &REDIS_PORT.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis-cli --scan --pattern PATTERN`: the keys.
    pub fn redis_keys(&self, pattern: &str) -> Vec<String> {
        let out = self
            .redis_try(&["--scan", "--pattern", pattern])
            .unwrap_or_else(|| panic!("redis-cli --scan --pattern {pattern} failed"));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The dialogs in the store: `sipka:dlg:*` keys holding a record (an
    /// ended dialog leaves a tombstone without one for 32 s). One
    /// redis-cli call: the lab polls this.
    pub fn live_dialog_keys(&self) -> Vec<String> {
        const LIVE: &str = "local out = {} \
            for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
            if redis.call('HEXISTS', k, 'rec') == 1 then out[#out + 1] = k end end \
            return out";
        let out = self
            .redis_try(&["EVAL", LIVE, "0", "sipka:dlg:*"])
            .unwrap_or_else(|| panic!("redis-cli EVAL (live dialog keys) failed"));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Starts edge `i`'s `sip-ka run --mode edge` (then `extra`) and waits
    /// for its readiness line.
    pub fn start_edge(&mut self, i: usize, extra: &[&str]) {
        let e = &self.edges[i];
        assert!(e.daemon.is_none(), "edge {} already running", e.name);
        let exe = lab::sip_ka_exe().expect("sip-ka binary");
        let log = std::fs::File::create(self.run_dir.join(format!("sip-ka-{}.log", e.name)))
            .expect("daemon log");
        let args = self.edge_args(i, extra);
        let mut child = in_net(&e.ns, exe)
            .arg("run")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning sip-ka run");
        if let Err(err) = lab::wait_ready(&mut child, Duration::from_secs(30)) {
            panic!(
                "edge {}: `sip-ka run {}`: {err:#}: {}",
                e.name,
                args.join(" "),
                self.edge_log(i)
            );
        }
        self.edges[i].daemon = Some(child);
    }

    /// The daemon's command line for edge `i`.
    pub fn edge_args(&self, i: usize, extra: &[&str]) -> Vec<String> {
        let e = &self.edges[i];
        let mut args: Vec<String> = [
            "--mode",
            "edge",
            "--iface",
            &e.pub_if,
            "--xdp-mode",
            "native",
            "--listen",
            &vip().to_string(),
            "--upstream",
            &pbx().to_string(),
            "--qualify-frequency",
            "1",
            "--pin-dir",
            &e.pin_dir.to_string_lossy(),
            "--state-dir",
            &e.state_dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// What edge `i`'s daemon wrote on stderr (its log).
    pub fn edge_log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.run_dir
                .join(format!("sip-ka-{}.log", self.edges[i].name)),
        )
        .unwrap_or_default()
    }

    /// Starts keepalived in edge `i`'s namespace: one VRRP instance moving
    /// both VIPs, unicast adverts to the other edge.
    pub fn start_keepalived(&mut self, i: usize) {
        let e = &self.edges[i];
        let conf = self.run_dir.join(format!("keepalived-{}.conf", e.name));
        std::fs::write(&conf, self.keepalived_conf(i)).expect("writing keepalived.conf");
        let pid = |what: &str| self.run_dir.join(format!("{what}-{}.pid", e.name));
        let log = std::fs::File::create(self.run_dir.join(format!("keepalived-{}.log", e.name)))
            .expect("keepalived log");
        let child = in_net(&e.ns, "keepalived")
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            .args(["--no-syslog", "--dont-respawn"])
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(pid("keepalived"))
            .arg("--vrrp_pid")
            .arg(pid("vrrp"))
            .arg("--checkers_pid")
            .arg(pid("checkers"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting keepalived (Debian package keepalived)");
        self.edges[i].keepalived = Some(child);
    }

    /// keepalived.conf for edge `i`: the packaged example
    /// (packaging/ha/keepalived.conf), B's lines as it marks them, the
    /// lab's interfaces and addresses in place of the example's.
    pub fn keepalived_conf(&self, i: usize) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ha/keepalived.conf");
        let example = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        example_for(&example, i == 1)
            .replace("203.0.113.10/", &format!("{VIP_PUB}/"))
            .replace("10.0.0.10/", &format!("{VIP_INT}/"))
            .replace("203.0.113.11", &EDGE_IPS[0].0.to_string())
            .replace("203.0.113.12", &EDGE_IPS[1].0.to_string())
            .replace(" eth0", &format!(" {}", self.edges[i].pub_if))
            .replace(" eth1", &format!(" {}", self.edges[i].int_if))
    }

    /// Which edge holds VIP_pub and VIP_int (both on the same edge), if any.
    pub fn vip_holder(&self) -> Option<usize> {
        let holds = |i: usize| {
            let e = &self.edges[i];
            let out = lab::run(in_net(&e.ns, "ip").args(["-4", "-o", "addr", "show"]))
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.contains(&format!("{VIP_PUB}/32")) && out.contains(&format!("{VIP_INT}/32"))
        };
        (0..2).find(|&i| self.edges[i].daemon.is_some() && holds(i))
    }

    /// Waits until edge `i` holds both VIPs; the time it took.
    pub fn wait_vip(&self, i: usize, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        super::wait_until(limit, || self.vip_holder() == Some(i)).then(|| t.elapsed())
    }

    /// The host of edge `i` dies: `kill -9` of its sip-ka and keepalived
    /// (every process in its namespace), then its links go down, as a
    /// dead host's do (its pinned XDP program and the VIPs keepalived had
    /// no time to remove would otherwise keep answering).
    pub fn kill_edge_host(&mut self, i: usize) {
        let e = &mut self.edges[i];
        // All at once: keepalived's VRRP child, outliving its parent by a
        // moment, would resign with a priority-0 advert (a clean handover,
        // not a death).
        signal_all_in(&e.ns, libc::SIGSTOP);
        signal_all_in(&e.ns, libc::SIGKILL);
        for c in [e.daemon.take(), e.keepalived.take()].iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dev in [&e.pub_if, &e.int_if] {
            ip(&["-n", &e.ns, "link", "set", dev, "down"]);
        }
    }

    /// `sip-ka stats --json` of edge `i`: counter -> total.
    pub fn counters(&self, i: usize) -> BTreeMap<String, u64> {
        let out = lab::run(
            Command::new(lab::sip_ka_exe().expect("sip-ka"))
                .args(["stats", "--json", "--pin-dir"])
                .arg(&self.edges[i].pin_dir),
        )
        .unwrap_or_else(|e| panic!("sip-ka stats on edge {}: {e:#}", self.edges[i].name));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
        v["counters"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `sip-ka dialogs --json` of edge `i` (its DIALOGS map), by Call-ID
    /// hash.
    pub fn dialogs(&self, i: usize) -> BTreeMap<String, serde_json::Value> {
        let out = lab::run(
            Command::new(lab::sip_ka_exe().expect("sip-ka"))
                .args(["dialogs", "--json", "--pin-dir"])
                .arg(&self.edges[i].pin_dir),
        )
        .unwrap_or_else(|e| panic!("sip-ka dialogs on edge {}: {e:#}", self.edges[i].name));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dialogs JSON");
        v.as_array()
            .expect("dialogs JSON is an array")
            .iter()
            .map(|d| {
                (
                    d["call_id_hash"].as_str().unwrap_or("").to_string(),
                    d.clone(),
                )
            })
            .collect()
    }

    /// sipp under `timeout` in the phones' (`phones`) or the PBX's
    /// namespace, run from `dir`.
    pub fn sipp(&self, phones: bool, dir: &Path, secs: u64) -> Command {
        let ns = if phones {
            &self.phones_ns
        } else {
            &self.pbx_ns
        };
        let mut cmd = in_net(ns, "timeout");
        cmd.current_dir(dir)
            .args(["-k", "2", &secs.to_string(), "sipp"])
            .args(["-nostdin", "-trace_err"]);
        cmd
    }

    /// A UDP socket in the phones' namespace, bound to `bind`, with a
    /// receive timeout of `timeout`.
    pub fn phone_socket(&self, bind: SocketAddr, timeout: Duration) -> UdpSocket {
        super::in_ns(&self.phones_ns, move || {
            let s = UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"));
            s.set_read_timeout(Some(timeout)).expect("read timeout");
            s
        })
    }
}

/// The packaged keepalived.conf's configuration lines (comments
/// dropped), as edge A's, or as edge B's: on a line marked `# B: VALUE`
/// the last word before the mark becomes VALUE.
pub fn example_for(example: &str, b: bool) -> String {
    let mut out = String::new();
    for line in example.lines() {
        let (conf, comment) = line.split_once('#').unwrap_or((line, ""));
        if conf.trim().is_empty() {
            continue;
        }
        let mut conf = conf.trim_end().to_string();
        if let Some(value) = comment.trim().strip_prefix("B:").filter(|_| b) {
            let cut = conf.rfind(char::is_whitespace).map_or(0, |p| p + 1);
            conf.replace_range(cut.., value.trim());
        }
        out.push_str(&conf);
        out.push('\n');
    }
    out
}

/// SIGKILL to every process in the namespace `ns`.
fn kill_all_in(ns: &str) {
    signal_all_in(ns, libc::SIGKILL);
}

/// `sig` to every process in the namespace `ns`.
fn signal_all_in(ns: &str, sig: i32) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for e in &mut self.edges {
            // SIGTERM first: the daemon detaches and unpins.
            if let Some(mut c) = e.daemon.take() {
                super::terminate(&mut c, Duration::from_secs(5));
            }
            if let Some(mut c) = e.keepalived.take() {
                super::terminate(&mut c, Duration::from_secs(3));
            }
        }
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let all = [
            &self.phones_ns,
            &self.pbx_ns,
            &self.redis_ns,
            &self.switch_ns,
            &self.edges[0].ns,
            &self.edges[1].ns,
        ];
        for ns in all {
            kill_all_in(ns);
        }
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for e in &self.edges {
            let _ = std::fs::remove_dir_all(&e.pin_dir);
            if let Some(name) = e.pin_dir.file_name() {
                let name = name.to_string_lossy();
                for ext in ["lock", "sock"] {
                    let _ = std::fs::remove_file(format!("/run/sip-ka/{name}.{ext}"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.pass_pins);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// One keep-alive the pinger sent and whether its answer came.
pub struct Ping {
    pub at: Instant,
    pub stun: bool,
    pub answered: bool,
}

/// How long the pinger waits for each answer: short, so that the gap it
/// measures is sharp.
pub const PING_WAIT: Duration = Duration::from_millis(100);

/// Sends a CRLF ping and a STUN Binding request in turn to the VIP every
/// `every` from `sock` until `stop` (or 90 s, or 20000 pings).
pub fn pinger(
    sock: UdpSocket,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Ping> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pings = Vec::new();
    let mut n = 0u32;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 20_000 {
        n += 1;
        let at = Instant::now();
        let stun = n.is_multiple_of(2);
        let id = super::txid(n);
        let req = if stun {
            sip_ka::lab::packet::Stun::binding_request(id)
                .software("sip-ka HA test")
                .fingerprint()
                .build()
        } else {
            b"\r\n\r\n".to_vec()
        };
        // Errors (an unreachable neighbour mid-failover) are no answer.
        let mut answered = false;
        if sock.send_to(&req, vip()).is_ok() {
            while at.elapsed() < PING_WAIT {
                let Ok((len, src)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let r = &buf[..len];
                // A late answer to an earlier ping is skipped.
                if src == vip()
                    && if stun {
                        super::parse_success(r).is_ok_and(|s| s.id == super::full_id(id))
                    } else {
                        r == b"\r\n"
                    }
                {
                    answered = true;
                    break;
                }
            }
        }
        pings.push(Ping { at, stun, answered });
        std::thread::sleep(every.saturating_sub(at.elapsed()));
    }
    pings
}

/// The outage the pings saw after `from`: (from the last answered ping
/// before the first unanswered one to the first answered after it, the
/// pings unanswered in between), or None when none went unanswered.
pub fn ping_gap(pings: &[Ping], from: Instant) -> Option<(Duration, usize)> {
    let first_lost = pings.iter().position(|p| p.at >= from && !p.answered)?;
    let before = pings[..first_lost].iter().rev().find(|p| p.answered)?;
    let back = first_lost + pings[first_lost..].iter().position(|p| p.answered)?;
    let lost = pings[first_lost..back].len();
    Some((pings[back].at - before.at, lost))
}
