//! (c) sip-ka's edge against Kamailio 5.6, one after the other in the same
//! lab and the same run: SIP OPTIONS from sipp over UDP, and RFC 5626 CRLF
//! pings over TCP from the bench's own load generator.
//!
//! Both servers get the same request, `OPTIONS sip:198.18.0.1:5060`: a
//! Request-URI without a user part naming the server, which sip-ka's edge
//! answers itself (whatever the PBX's state) and Kamailio's
//! `options_reply()` answers with 200.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

use super::{machine_busy, tasks_cpu, thread_cpu, threaded_napi, wait_readable, Opts};

const SIP_PORT: u16 = 5060;
/// The edge's PBX: [`Pbx`], which only answers the edge's qualify pings.
/// The OPTIONS of the load name the edge itself, which the edge answers
/// without asking the PBX; the stand-in keeps the edge in its ordinary
/// state (PBX up) while it does.
const UPSTREAM_PORT: u16 = 5080;
/// sipp's own port in the client namespace.
const SIPP_PORT: u16 = 5070;
/// How long sipp waits for an answer before it counts the request failed.
/// The rate is taken from the answers' own times, so this only bounds how
/// long a row waits at its end.
const RECV_TIMEOUT_MS: u64 = 500;

/// sipp UAC: one OPTIONS to the server itself, expecting 200. The response
/// time distribution (rtd) is what `-trace_rtt` logs, one line per answer
/// with the time it arrived.
const SIPP_OPTIONS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="OPTIONS to the server itself">
  <send start_rtd="true">
    <![CDATA[

      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:bench@[local_ip]:[local_port]>;tag=[pid]b[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Accept: application/sdp
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" rtd="true"/>
</scenario>
"#;

/// The smallest Kamailio configuration that answers OPTIONS: `sl` sends
/// the stateless reply, `siputils` has `options_reply`, `textops` has
/// `is_method`, and `pv` is there because siputils will not initialise
/// without it (its rpid AVP parameter). Two UDP workers and two TCP
/// readers, like sip-ka's two runtime threads.
fn kamailio_cfg(modules: &Path) -> String {
    format!(
        r#"#!KAMAILIO
# Written by sip-ka-bench for one run: answers OPTIONS and nothing else.
debug=0
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{ip}:{port}
listen=tcp:{ip}:{port}
tcp_crlf_ping=yes
mpath="{modules}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "siputils.so"

request_route {{
    if (is_method("OPTIONS")) {{
        options_reply();
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
    exit;
}}
"#,
        ip = SERVER_V4,
        port = SIP_PORT,
        modules = modules.display(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    SipKa,
    Kamailio,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::SipKa => "sip-ka edge (XDP native)",
            Peer::Kamailio => "Kamailio",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Load {
    Options,
    TcpCrlf,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Options => "OPTIONS/UDP",
            Load::TcpCrlf => "CRLF/TCP",
        }
    }
}

/// What one load against one server measured.
#[derive(Debug, Default, Clone)]
struct Measure {
    sent: u64,
    answered: u64,
    bad: u64,
    /// Seconds over which the answers arrived.
    elapsed: f64,
    /// Wall time of the whole row, waiting for losses included.
    wall: f64,
    /// CPU time of the load generator (sipp and its wrappers, or the
    /// generator thread).
    gen_cpu: f64,
    /// Busy CPU time of the whole machine (/proc/stat).
    busy_cpu: f64,
    /// The server's processes and the server veth's NAPI thread (None when
    /// that thread was not found).
    server_cpu: Option<f64>,
    /// The server's processes alone.
    proc_cpu: f64,
    /// How many processes the server had (Kamailio forks its workers).
    procs: usize,
    client_napi_cpu: Option<f64>,
}

impl Measure {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.max(1e-9)
    }

    fn per_answer(&self, cpu: f64) -> f64 {
        cpu * 1e9 / self.answered.max(1) as f64
    }

    fn server_per_answer(&self) -> Option<f64> {
        self.server_cpu.map(|c| self.per_answer(c))
    }

    fn machine_per_answer(&self) -> f64 {
        self.per_answer((self.busy_cpu - self.gen_cpu).max(0.0))
    }

    /// Pools another round into this one: counts, times and CPU add up, so
    /// rates and CPU per answer are over all rounds together.
    fn add(&mut self, o: &Measure) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.bad += o.bad;
        self.elapsed += o.elapsed;
        self.wall += o.wall;
        self.gen_cpu += o.gen_cpu;
        self.busy_cpu += o.busy_cpu;
        self.proc_cpu += o.proc_cpu;
        self.procs = self.procs.max(o.procs);
        self.server_cpu = self.server_cpu.zip(o.server_cpu).map(|(a, b)| a + b);
        self.client_napi_cpu = self
            .client_napi_cpu
            .zip(o.client_napi_cpu)
            .map(|(a, b)| a + b);
    }
}

/// A row's outcome: figures, or why there are none.
enum Outcome {
    Measured(Measure),
    NotAvailable(String),
}

struct Row {
    /// 1-based; 0 for the rounds pooled.
    round: u32,
    peer: Peer,
    load: Load,
    outcome: Outcome,
}

/// One row per server and load, the rounds pooled; a load a server could
/// not take in some round has no figures.
fn pool(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        let Some(p) = out
            .iter_mut()
            .find(|p| p.peer == r.peer && p.load == r.load)
        else {
            out.push(Row {
                round: 0,
                peer: r.peer,
                load: r.load,
                outcome: match &r.outcome {
                    Outcome::Measured(m) => Outcome::Measured(m.clone()),
                    Outcome::NotAvailable(why) => Outcome::NotAvailable(why.clone()),
                },
            });
            continue;
        };
        match (&mut p.outcome, &r.outcome) {
            (Outcome::Measured(a), Outcome::Measured(b)) => a.add(b),
            (Outcome::NotAvailable(_), _) => {}
            (Outcome::Measured(_), Outcome::NotAvailable(why)) => {
                p.outcome = Outcome::NotAvailable(format!("round {}: {why}", r.round));
            }
        }
    }
    out.sort_by_key(|r| (r.peer != Peer::SipKa, r.load != Load::Options));
    out
}

/// CPU counters read before a load and again after it.
struct Meter {
    /// The server's processes (all their threads).
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
    procs0: f64,
    server_napi0: Option<f64>,
    client_napi0: Option<f64>,
    busy0: f64,
    start: Instant,
}

impl Meter {
    fn start(
        procs: Vec<u32>,
        server_napi: Option<Vec<u32>>,
        client_napi: Option<Vec<u32>>,
    ) -> Result<Meter> {
        Ok(Meter {
            procs0: tasks_cpu(&procs),
            server_napi0: server_napi.as_deref().map(tasks_cpu),
            client_napi0: client_napi.as_deref().map(tasks_cpu),
            busy0: machine_busy()?,
            start: Instant::now(),
            procs,
            server_napi,
            client_napi,
        })
    }

    /// Fills the CPU fields and the wall time of `m`.
    fn stop(self, m: &mut Measure) -> Result<()> {
        m.wall = self.start.elapsed().as_secs_f64();
        m.busy_cpu = machine_busy()? - self.busy0;
        m.proc_cpu = tasks_cpu(&self.procs) - self.procs0;
        m.procs = self.procs.len();
        m.server_cpu = self
            .server_napi
            .as_deref()
            .zip(self.server_napi0)
            .map(|(t, c0)| m.proc_cpu + tasks_cpu(t) - c0);
        m.client_napi_cpu = self
            .client_napi
            .as_deref()
            .zip(self.client_napi0)
            .map(|(t, c0)| tasks_cpu(t) - c0);
        Ok(())
    }
}

/// CPU seconds of the children this process has waited for (sipp, through
/// nsenter and timeout, which wait for theirs).
fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into `ru` only.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `f` on a thread that joined network namespace `ns`, so its sockets
/// live there.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on this thread only; the thread ends with `f`.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
}

/// A directory for this run's Kamailio configuration and sipp files,
/// removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("sip-ka-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kamailio's module directory (Debian puts it under the multiarch path).
fn kamailio_modules() -> Result<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/kamailio/modules"),
        PathBuf::from("/usr/lib64/kamailio/modules"),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("kamailio/modules"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("sl.so").is_file() && d.join("siputils.so").is_file())
        .context("Kamailio's modules (sl.so, siputils.so) not found: apt-get install kamailio")
}

/// `kamailio -v`'s first line, e.g. "kamailio 5.6.3 (x86_64/linux)".
fn kamailio_version() -> String {
    lab::run(Command::new("kamailio").arg("-v"))
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("version:").trim().to_string())
        })
        .unwrap_or_else(|| "kamailio (version unknown)".into())
}

/// Kamailio in the server namespace, in the foreground (`-DD`: the main
/// process stays the one started, its workers are its children), logging
/// to a file. Stopped with SIGTERM when dropped.
struct Kamailio {
    child: Child,
    log: PathBuf,
}

impl Kamailio {
    fn start(lab: &Lab, dir: &Path, modules: &Path) -> Result<Kamailio> {
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg(modules))?;
        lab::run(Command::new("kamailio").arg("-c").arg("-f").arg(&cfg))
            .context("kamailio -c rejected the generated configuration")?;
        let log = dir.join("kamailio.log");
        let child = lab
            .server("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .arg("-w")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting kamailio in the server namespace")?;
        Ok(Kamailio { child, log })
    }

    /// The main process (nsenter execs kamailio, so the child's pid is
    /// Kamailio's) and every process it forked.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        descendants(self.child.id(), &mut pids);
        pids
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let workers = self.pids();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Only the processes this Kamailio forked, by pid.
        for pid in workers {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Adds the descendants of `pid` to `out` (/proc/*/stat parent pids).
fn descendants(pid: u32, out: &mut Vec<u32>) {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut children = Vec::new();
    for e in rd.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(p);
        }
    }
    for c in children {
        if !out.contains(&c) {
            out.push(c);
            descendants(c, out);
        }
    }
}

/// A stand-in PBX in the server namespace: a thread answering every SIP
/// request on udp/198.18.0.1:5080 with 200, so the edge's qualify pings
/// find the PBX up. Stops when dropped.
struct Pbx {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pbx {
    fn start(lab: &Lab) -> Result<Pbx> {
        let path = format!("/run/netns/{}", lab.server_ns);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> Result<UdpSocket> {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns({path}): {}", std::io::Error::last_os_error());
                }
                let sock = UdpSocket::bind((SERVER_V4, UPSTREAM_PORT))?;
                // Wakes up to look at the stop flag.
                sock.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(sock)
            })();
            let sock = match bound {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(ok) = ok_response(&buf[..n]) {
                        let _ = sock.send_to(&ok, from);
                    }
                }
            }
        });
        let pbx = Pbx {
            stop,
            thread: Some(thread),
        };
        rx.recv_timeout(Duration::from_secs(5))
            .context("the stand-in PBX did not start")??;
        Ok(pbx)
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

/// A 200 to a SIP request (None for anything else): its Via, From, To
/// (tagged), Call-ID and CSeq, no body.
fn ok_response(req: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(req).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    if start.starts_with("SIP/2.0") || !start.ends_with("SIP/2.0") {
        return None;
    }
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" if !value.contains(";tag=") => {
                out.push_str(line);
                out.push_str(";tag=bench-pbx\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// One OPTIONS to the server every 100 ms from the client namespace until a
/// 200 comes back (15 s at most): the server is up, and the neighbour
/// entries exist before the measured load.
fn wait_options_200(lab: &Lab) -> Result<()> {
    in_netns(&lab.client_ns, || {
        let sock = UdpSocket::bind((CLIENT_V4, 0))?;
        let local = sock.local_addr()?;
        sock.connect((SERVER_V4, SIP_PORT))?;
        sock.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::from("nothing");
        let mut buf = [0u8; 4096];
        let mut n = 0u32;
        while Instant::now() < deadline {
            n += 1;
            let req = format!(
                "OPTIONS sip:{SERVER_V4}:{SIP_PORT} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-probe-{n};rport\r\n\
                 From: <sip:bench@{local}>;tag=probe\r\n\
                 To: <sip:{SERVER_V4}:{SIP_PORT}>\r\n\
                 Call-ID: probe-{n}@{CLIENT_V4}\r\n\
                 CSeq: {n} OPTIONS\r\n\
                 Max-Forwards: 70\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            let _ = sock.send(req.as_bytes());
            if wait_readable(sock.as_raw_fd(), 100) {
                while let Ok(len) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]);
                    let status = text.lines().next().unwrap_or("").to_string();
                    if status.starts_with("SIP/2.0 200") {
                        return Ok(());
                    }
                    last = status;
                }
            }
        }
        bail!("no 200 to OPTIONS within 15 s (last answer: {last})")
    })
}

/// The cumulative value of a counter on sipp's statistics screen, e.g.
/// "  Successful call        |        0                  |    29984".
fn sipp_counter(screen: &str, name: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The arrival times (ms since sipp started) of the first and the last
/// answer, and how many there were, from sipp's `-trace_rtt` file.
fn rtt_span(dir: &Path) -> Result<Option<(f64, f64, u64)>> {
    let mut span: Option<(f64, f64, u64)> = None;
    for e in std::fs::read_dir(dir)?.flatten() {
        let path = e.path();
        if !path.to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let _ = std::fs::remove_file(&path);
        for line in text.lines().skip(1) {
            let Some(t) = line.split(';').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            span = Some(match span {
                None => (t, t, 1),
                Some((a, b, n)) => (a.min(t), b.max(t), n + 1),
            });
        }
    }
    Ok(span)
}

/// The OPTIONS load: sipp in the client namespace, `count` requests with
/// `window` in flight at most, `seconds` at most.
fn options_load(
    lab: &Lab,
    dir: &Path,
    opts: &Opts,
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
) -> Result<Measure> {
    let scenario = dir.join("options.xml");
    std::fs::write(&scenario, SIPP_OPTIONS)?;
    let seconds = opts.seconds.max(1);
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .args(["-k", "2", &(seconds + 10).to_string(), "sipp"])
        .arg(format!("{SERVER_V4}:{SIP_PORT}"))
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", &opts.options_count.to_string()])
        .args(["-r", &opts.options_rate.to_string(), "-rp", "1000"])
        .args(["-l", &opts.options_window.max(1).to_string()])
        .args(["-t", "u1", "-nostdin"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &SIPP_PORT.to_string()])
        .args(["-timeout", &format!("{seconds}s")])
        .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()])
        .args(["-trace_rtt", "-rtt_freq", "1"]);
    let gen0 = children_cpu();
    let meter = Meter::start(procs, server_napi, client_napi)?;
    let out = cmd.output().context("running sipp")?;
    let mut m = Measure::default();
    meter.stop(&mut m)?;
    m.gen_cpu = children_cpu() - gen0;
    let screen = String::from_utf8_lossy(&out.stdout);
    // sipp exits 1 when some calls failed: still a measurement.
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!(
            "sipp failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            screen.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        );
    }
    let ok = sipp_counter(&screen, "Successful call").context("no statistics from sipp")?;
    let failed = sipp_counter(&screen, "Failed call").unwrap_or(0);
    m.sent = ok + failed;
    m.answered = ok;
    m.elapsed = match rtt_span(dir)? {
        Some((first, last, n)) if n >= 2 && last > first => {
            // n answers arrived over (last - first): the rate between the
            // first and the last answer, without the wait for losses at the
            // end.
            (last - first) / 1000.0 * n as f64 / (n - 1) as f64
        }
        _ => m.wall,
    };
    Ok(m)
}

/// One TCP connection of the CRLF load.
struct Conn {
    stream: TcpStream,
    /// Bytes of pongs received: each pong is "\r\n".
    rx: u64,
    waiting: bool,
    open: bool,
}

/// The TCP CRLF load from the client namespace: `conns` connections, each
/// with one `\r\n\r\n` ping outstanding at a time, `count` pings and
/// `seconds` at most. A refused connection or no pong to a first ping
/// within 3 s is reported, not failed: the server has no TCP keep-alive.
fn crlf_load(
    lab: &Lab,
    opts: &Opts,
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
) -> Result<Outcome> {
    let target = SocketAddr::from((SERVER_V4, SIP_PORT));
    let conns = opts.tcp_conns.max(1);
    let count = opts.crlf_count;
    let seconds = opts.seconds.max(1);
    in_netns(&lab.client_ns, move || {
        let mut streams = Vec::new();
        for i in 0..conns {
            let s = match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
                Ok(s) => s,
                Err(e) if i == 0 && e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Ok(Outcome::NotAvailable(format!(
                        "connection to tcp/{target} refused: no TCP listener"
                    )));
                }
                Err(e) => bail!("connecting to tcp/{target}: {e}"),
            };
            s.set_nodelay(true)?;
            if i == 0 {
                // One ping and its pong before the others connect.
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                (&s).write_all(b"\r\n\r\n")?;
                let mut pong = [0u8; 2];
                if let Err(e) = (&s).read_exact(&mut pong) {
                    return Ok(Outcome::NotAvailable(format!(
                        "no CRLF pong on tcp/{target} within 3 s ({e})"
                    )));
                }
                if &pong != b"\r\n" {
                    return Ok(Outcome::NotAvailable(format!(
                        "tcp/{target} answered a CRLF ping with {pong:02x?}"
                    )));
                }
            }
            s.set_nonblocking(true)?;
            streams.push(Conn {
                stream: s,
                rx: 0,
                waiting: false,
                open: true,
            });
        }
        let mut m = Measure::default();
        let cpu0 = thread_cpu();
        let meter = Meter::start(procs, server_napi, client_napi)?;
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let ping = |c: &mut Conn, m: &mut Measure| {
            match (&c.stream).write(b"\r\n\r\n") {
                Ok(4) => {
                    c.waiting = true;
                    m.sent += 1;
                }
                // Four bytes into an idle connection's empty send buffer
                // go whole or not at all; anything else ends it.
                _ => c.open = false,
            }
        };
        for c in streams.iter_mut() {
            if m.sent < count {
                ping(c, &mut m);
            }
        }
        let mut buf = [0u8; 4096];
        let mut last_answer = Instant::now();
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(streams.len());
        loop {
            let now = Instant::now();
            let waiting = streams.iter().filter(|c| c.open && c.waiting).count();
            if now >= end || waiting == 0 {
                break;
            }
            // Answers stopped for a second: what is outstanding is lost.
            if now.duration_since(last_answer) > Duration::from_secs(1) {
                break;
            }
            fds.clear();
            fds.extend(streams.iter().map(|c| libc::pollfd {
                fd: if c.open && c.waiting {
                    c.stream.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `fds` is a live array of `fds.len()` pollfds.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            if ready <= 0 {
                continue;
            }
            for (c, p) in streams.iter_mut().zip(&fds) {
                if p.revents == 0 {
                    continue;
                }
                match (&c.stream).read(&mut buf) {
                    Ok(0) => c.open = false,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            let want = if c.rx % 2 == 0 { b'\r' } else { b'\n' };
                            if b != want {
                                m.bad += 1;
                                continue;
                            }
                            c.rx += 1;
                            if c.rx % 2 == 0 {
                                m.answered += 1;
                                c.waiting = false;
                                last_answer = Instant::now();
                            }
                        }
                        if !c.waiting && m.sent < count && Instant::now() < end {
                            ping(c, &mut m);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => c.open = false,
                }
            }
        }
        m.elapsed = start.elapsed().as_secs_f64();
        m.gen_cpu = thread_cpu() - cpu0;
        meter.stop(&mut m)?;
        Ok(Outcome::Measured(m))
    })
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "n/a".into(),
    }
}

fn ns(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

pub(crate) fn kamailio_bench(opts: &Opts) -> Result<()> {
    let version = kamailio_version();
    println!(
        "== (c) sip-ka edge vs {version}: SIP OPTIONS over UDP (sipp) and CRLF pings over TCP"
    );
    for tool in ["kamailio", "sipp"] {
        if lab::on_path(tool).is_none() {
            bail!("{tool} not found: `cargo xtask setup` installs it");
        }
    }
    let modules = kamailio_modules()?;
    let dir = WorkDir::new()?;
    let mut lab = Lab::new()?;
    let (server_napi, client_napi) = if opts.no_threaded_napi {
        (None, None)
    } else {
        let s = threaded_napi(&lab.server_ns, &lab.server_if)?;
        let c = threaded_napi(&lab.client_ns, &lab.client_if)?;
        if s.is_empty() || c.is_empty() {
            println!("warning: the NAPI threads of the veth pair were not found");
            (None, None)
        } else {
            (Some(s), Some(c))
        }
    };

    // Busy CPU over one idle second: work the machine-wide column includes
    // that is neither server nor load.
    let b0 = machine_busy()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = machine_busy()? - b0;

    let rounds = opts.rounds.max(1);
    let mut rows = Vec::new();
    for round in 1..=rounds {
        // Every other round Kamailio goes first, so that a change in what
        // else the machine does during the run is spread over both.
        let order = if round % 2 == 1 {
            [Peer::SipKa, Peer::Kamailio]
        } else {
            [Peer::Kamailio, Peer::SipKa]
        };
        for peer in order {
            measure_peer(
                &mut lab,
                &dir.0,
                &modules,
                opts,
                round,
                peer,
                &server_napi,
                &client_napi,
                &mut rows,
            )?;
        }
    }
    drop(lab);
    print_table(opts, &rows, server_napi.is_some());
    if background > 0.1 {
        println!(
            "warning: the machine was busy before the run ({:.0} ms of CPU per second): the \
             machine column includes that work, the server column does not",
            background * 1000.0
        );
    }
    Ok(())
}

/// Starts `peer` in the lab, runs both loads against it, stops it.
#[allow(clippy::too_many_arguments)]
fn measure_peer(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    opts: &Opts,
    round: u32,
    peer: Peer,
    server_napi: &Option<Vec<u32>>,
    client_napi: &Option<Vec<u32>>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut pbx = None;
    let kamailio = match peer {
        Peer::SipKa => {
            pbx = Some(Pbx::start(lab)?);
            let listen = format!("{SERVER_V4}:{SIP_PORT}");
            let upstream = format!("{SERVER_V4}:{UPSTREAM_PORT}");
            let per_ip = opts.tcp_conns.to_string();
            let mut args = vec![
                "--mode",
                "edge",
                "--listen",
                &listen,
                "--upstream",
                &upstream,
                "--qualify-frequency",
                "1",
                "--xdp-mode",
                "native",
            ];
            // All the load's connections come from one address, which
            // the edge limits (64 by default).
            if opts.tcp_conns > 64 {
                args.extend(["--max-connections-per-ip", per_ip.as_str()]);
            }
            lab.start_daemon(&args)?;
            None
        }
        Peer::Kamailio => Some(Kamailio::start(lab, dir, modules)?),
    };
    let pids = || -> Result<Vec<u32>> {
        Ok(match &kamailio {
            Some(k) => k.pids(),
            None => vec![lab.daemon_pid().context("daemon pid")?],
        })
    };
    let ready = wait_options_200(lab).with_context(|| {
        let log = kamailio.as_ref().map(|k| k.log_tail()).unwrap_or_default();
        format!("{} is not answering OPTIONS\n{log}", peer.name())
    });
    if let Err(e) = ready {
        // Stop what runs before the lab goes.
        drop(kamailio);
        return Err(e);
    }
    for load in [Load::Options, Load::TcpCrlf] {
        print!(
            "round {round}/{}: {} / {} ... ",
            opts.rounds.max(1),
            peer.name(),
            load.name()
        );
        std::io::stdout().flush().ok();
        let procs = pids()?;
        let outcome = match load {
            Load::Options => Outcome::Measured(
                options_load(
                    lab,
                    dir,
                    opts,
                    procs,
                    server_napi.clone(),
                    client_napi.clone(),
                )
                .with_context(|| format!("{} / {}", peer.name(), load.name()))?,
            ),
            Load::TcpCrlf => crlf_load(lab, opts, procs, server_napi.clone(), client_napi.clone())
                .with_context(|| format!("{} / {}", peer.name(), load.name()))?,
        };
        match &outcome {
            Outcome::Measured(m) => println!(
                "{} answered of {} sent in {:.2} s",
                m.answered, m.sent, m.elapsed
            ),
            Outcome::NotAvailable(why) => println!("n/a: {why}"),
        }
        rows.push(Row {
            round,
            peer,
            load,
            outcome,
        });
    }
    match kamailio {
        Some(k) => drop(k),
        None => {
            lab.stop_daemon()?;
        }
    }
    drop(pbx);
    Ok(())
}

fn print_table(opts: &Opts, per_round: &[Row], napi: bool) {
    let pooled = pool(per_round);
    let rows = &pooled;
    let measured = |peer: Peer, load: Load| {
        rows.iter()
            .find(|r| r.peer == peer && r.load == load)
            .and_then(|r| match &r.outcome {
                Outcome::Measured(m) => Some(m),
                Outcome::NotAvailable(_) => None,
            })
    };
    println!();
    println!(
        "{:<25} {:<12} {:>8} {:>6} {:>9} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "", "", "", "", "answers", "", "server CPU", "", "machine", ""
    );
    println!(
        "{:<25} {:<12} {:>8} {:>6} {:>9} {:>7} | {:>10} {:>7} | {:>10} {:>7}",
        "server",
        "load",
        "answered",
        "lost",
        "per s",
        "÷ Kam.",
        "ns/answer",
        "÷ Kam.",
        "ns/answer",
        "÷ Kam."
    );
    for r in rows {
        let m = match &r.outcome {
            Outcome::Measured(m) => m,
            Outcome::NotAvailable(why) => {
                println!("{:<25} {:<12} n/a: {why}", r.peer.name(), r.load.name());
                continue;
            }
        };
        let k = measured(Peer::Kamailio, r.load);
        println!(
            "{:<25} {:<12} {:>8} {:>6} {:>9.0} {:>7} | {:>10} {:>7} | {:>10.0} {:>7}",
            r.peer.name(),
            r.load.name(),
            m.answered,
            m.sent.saturating_sub(m.answered),
            m.rate(),
            ratio(Some(m.rate()), k.map(|k| k.rate())),
            ns(m.server_per_answer()),
            ratio(m.server_per_answer(), k.and_then(|k| k.server_per_answer())),
            m.machine_per_answer(),
            ratio(
                Some(m.machine_per_answer()),
                k.map(|k| k.machine_per_answer())
            ),
        );
    }
    println!();
    for r in per_round {
        let Outcome::Measured(m) = &r.outcome else {
            continue;
        };
        println!(
            "  round {}: {} / {}: {} sent, {} answered, {} bad bytes; answers over {:.2} s, row {:.2} s; \
             CPU s: server processes ({}) {:.3}, server processes + NAPI {}, client NAPI {}, load \
             generator {:.3}, machine busy {:.3}",
            r.round,
            r.peer.name(),
            r.load.name(),
            m.sent,
            m.answered,
            m.bad,
            m.elapsed,
            m.wall,
            m.procs,
            m.proc_cpu,
            m.server_cpu.map_or("n/a".into(), |c| format!("{c:.3}")),
            m.client_napi_cpu
                .map_or("n/a".into(), |c| format!("{c:.3}")),
            m.gen_cpu,
            m.busy_cpu,
        );
    }
    for load in [Load::Options, Load::TcpCrlf] {
        match (measured(Peer::SipKa, load), measured(Peer::Kamailio, load)) {
            (Some(s), Some(k)) => println!(
                "sip-ka vs Kamailio, {}: {} the answers per second, {} the server CPU per \
                 answer ({} the machine's)",
                load.name(),
                ratio(Some(s.rate()), Some(k.rate())),
                ratio(s.server_per_answer(), k.server_per_answer()),
                ratio(Some(s.machine_per_answer()), Some(k.machine_per_answer())),
            ),
            _ => println!(
                "sip-ka vs Kamailio, {}: no ratio (a row has no figures)",
                load.name()
            ),
        }
    }
    println!(
        "notes: the same lab, one server after the other, {rounds} round(s) (Kamailio first \
         in every second round); the table pools the rounds (answers and times and CPU \
         added up). OPTIONS: sipp in the client \
         namespace sends {count} OPTIONS sip:{SERVER_V4}:{SIP_PORT} over UDP (offered rate \
         {rate}/s, {window} in flight at most, {seconds} s at most, an answer not back within \
         {RECV_TIMEOUT_MS} ms is lost); answers per second are counted between the first and \
         the last answer (sipp -trace_rtt). sip-ka runs `--mode edge` with native XDP (the \
         program counts each OPTIONS, the edge answers it) in front of a stand-in PBX \
         that answers its qualify pings; Kamailio 2 UDP workers and 2 TCP \
         readers answering with options_reply(). CRLF/TCP: {conns} connections from the \
         client namespace, each with one \\r\\n\\r\\n ping outstanding, {pings} pings and \
         {seconds} s at most. \"server CPU\" = CPU time (schedstat) of every thread of the \
         server's processes{napi}; \"machine\" = busy CPU of the whole machine (/proc/stat) \
         less the load generator's own CPU time. When both servers keep up with the load \
         generator, answers per second show the generator's limit and the CPU columns are \
         the comparison.",
        rounds = opts.rounds.max(1),
        count = opts.options_count,
        rate = opts.options_rate,
        window = opts.options_window.max(1),
        seconds = opts.seconds.max(1),
        conns = opts.tcp_conns.max(1),
        pings = opts.crlf_count,
        napi = if napi {
            " and of the server veth's NAPI thread (threaded NAPI on both veths)"
        } else {
            " (NAPI not threaded: the server column is left out)"
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipp_statistics_screen() {
        let screen = "\
  Successful call        |        0                  |    29984                 \n\
  Failed call            |        0                  |       16                 \n";
        assert_eq!(sipp_counter(screen, "Successful call"), Some(29984));
        assert_eq!(sipp_counter(screen, "Failed call"), Some(16));
        assert_eq!(sipp_counter(screen, "Retransmissions"), None);
        assert_eq!(
            sipp_counter("Successful call | x | y", "Successful call"),
            None
        );
    }

    #[test]
    fn stand_in_pbx_answers_requests_only() {
        let req = b"OPTIONS sip:198.18.0.1:5080 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\n\
            From: <sip:198.18.0.1:5060>;tag=e1\r\n\
            To: <sip:198.18.0.1:5080>\r\n\
            Call-ID: q1\r\n\
            CSeq: 7 OPTIONS\r\n\
            Max-Forwards: 70\r\n\
            Content-Length: 0\r\n\r\n";
        let ok = String::from_utf8(ok_response(req).expect("a 200")).expect("text");
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        for h in [
            "Via: SIP/2.0/UDP 198.18.0.1:5060;branch=z9hG4bK1\r\n",
            "From: <sip:198.18.0.1:5060>;tag=e1\r\n",
            "To: <sip:198.18.0.1:5080>;tag=bench-pbx\r\n",
            "Call-ID: q1\r\n",
            "CSeq: 7 OPTIONS\r\n",
        ] {
            assert!(ok.contains(h), "{h:?} missing from {ok:?}");
        }
        assert!(!ok.contains("Max-Forwards"));
        assert!(ok.ends_with("Content-Length: 0\r\n\r\n"));
        assert_eq!(
            ok_response(b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n"),
            None
        );
        assert_eq!(ok_response(b"\r\n\r\n"), None);
        assert_eq!(ok_response(&[0xff, 0xfe, 0x00]), None);
    }

    #[test]
    fn kamailio_configuration_listens_where_the_edge_does() {
        let cfg = kamailio_cfg(Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules"));
        assert!(cfg.contains("listen=udp:198.18.0.1:5060\n"));
        assert!(cfg.contains("listen=tcp:198.18.0.1:5060\n"));
        assert!(cfg.contains("options_reply();"));
        assert!(cfg.contains("tcp_crlf_ping=yes\n"));
    }
}
