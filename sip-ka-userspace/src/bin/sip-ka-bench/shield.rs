//! (h) The shield (`--shield`), in one run:
//!
//! 1. The edge under a 20,000/s INVITE flood from one source (the lab's
//!    client), once with `--shield off` and once with its defaults: the
//!    daemon's CPU time (all its threads, schedstat) over the flood, the
//!    INVITEs that reached the PBX (a sink in the server namespace that
//!    drains and never answers), and with the shield when the ban fell
//!    and what XDP dropped after it (`drop_ban_flood`).
//! 2. A flood of CRLF pings from one source, as fast as one sender goes,
//!    at the XDP program on the veth lab: banned (`sip-ka bans add`,
//!    `drop_ban_manual` per second), then with the ban lifted and the
//!    per-source answer budgets off (`crlf_pong_sent` per second).
//!
//! Bounded: fixed counts and seconds, every wait has a deadline.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

use crate::cpu::{tasks_cpu, threaded_napi};
use crate::netns::{force_buffers, in_netns, wait_readable};
use crate::opts::Opts;
use crate::packets::{options_probe, CRLF_PING};

/// INVITEs per second of the flood, and its seconds.
const FLOOD_RATE: u64 = 20_000;
const FLOOD_SECONDS: u64 = 3;
/// After the flood, the daemon's CPU is still counted this long (what it
/// had queued).
const TAIL: Duration = Duration::from_millis(500);
/// Where the edge listens, the PBX sink, and the edge's metrics (on the
/// server namespace's loopback).
const EDGE: &str = "198.18.0.1:5060";
const SINK_PORT: u16 = 5080;
const METRICS: &str = "127.0.0.1:9560";
/// `--ban-time` given to the edge (its default): the moment of the ban is
/// its expiry less this.
const BAN_TIME_SECS: u64 = 600;
/// Seconds of each CRLF flood of part 2, and datagrams per `sendmmsg`.
const BLAST_SECONDS: u64 = 3;
const BATCH: usize = 64;

/// INVITE number `n` of the flood: its own Call-ID, branch and From tag,
/// with an SDP offer (about 560 bytes).
fn invite(n: u64) -> Vec<u8> {
    let c = CLIENT_V4;
    let body = format!(
        "v=0\r\no=flood {n} 1 IN IP4 {c}\r\ns=-\r\nc=IN IP4 {c}\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    );
    format!(
        "INVITE sip:{ext}@{SERVER_V4}:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {c}:5060;branch=z9hG4bK-flood-{n:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Flood\" <sip:2000@{SERVER_V4}>;tag=fl{n:x}\r\n\
         To: <sip:{ext}@{SERVER_V4}>\r\n\
         Call-ID: flood-{n:x}@{c}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:2000@{c}:5060>\r\n\
         User-Agent: Bench-Flood/1.0\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        ext = 1000 + n % 1000,
        len = body.len(),
    )
    .into_bytes()
}

/// Sends `reqs` (cycling) on `sock` in `sendmmsg` batches, paced to
/// `rate` per second when it is given (else as fast as the socket takes
/// them), until `total` left or `seconds` passed. (sent, seconds taken).
fn send(
    sock: &UdpSocket,
    reqs: &[Vec<u8>],
    rate: Option<u64>,
    total: u64,
    seconds: u64,
) -> (u64, f64) {
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut sent: u64 = 0;
    while sent < total {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = match rate {
            Some(r) => (((now - start).as_secs_f64() * r as f64) as u64).min(total),
            None => total,
        };
        if sent >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let n = (due - sent).min(BATCH as u64) as usize;
        iov.clear();
        for i in 0..n {
            let r = &reqs[((sent as usize) + i) % reqs.len()];
            iov.push(libc::iovec {
                iov_base: r.as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            });
        }
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: n headers, each with one iovec into a live request; the
        // socket is connected, so no addresses.
        let done = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        if done > 0 {
            sent += done as u64;
        } else if rate.is_some() {
            // A full queue on the client's side: retry shortly.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    (sent, start.elapsed().as_secs_f64())
}

/// A socket in the client namespace's thread, connected to `target`,
/// after `probe` was answered (10 s at most): the server is up and the
/// neighbour entries exist. `answer` tells an answer.
fn ready_socket(target: SocketAddr, probe: &[u8], answer: fn(&[u8]) -> bool) -> Result<UdpSocket> {
    let sock = UdpSocket::bind((CLIENT_V4, 0))?;
    sock.connect(target)?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = sock.send(probe);
        if wait_readable(fd, 100) {
            while let Ok(n) = sock.recv(&mut buf) {
                if answer(&buf[..n]) {
                    std::thread::sleep(Duration::from_millis(50));
                    while sock.recv(&mut buf).is_ok() {}
                    sock.set_nonblocking(false)?;
                    sock.set_write_timeout(Some(Duration::from_millis(100)))?;
                    force_buffers(fd, 8 << 20);
                    return Ok(sock);
                }
            }
        }
    }
    bail!("no answer from {target} within 10 s")
}

/// What the PBX sink of part 1 returns: INVITEs received, and when the
/// last came.
type SinkThread = std::thread::JoinHandle<(u64, Option<Instant>)>;

/// The PBX of part 1: drains udp/198.18.0.1:5080 in the server namespace
/// and never answers, until the flag is set.
fn sink(lab: &Lab) -> Result<(Arc<AtomicBool>, SinkThread)> {
    // A socket stays in the namespace it was made in.
    let sock = in_netns(&lab.server_ns, || {
        let sock = UdpSocket::bind((SERVER_V4, SINK_PORT))?;
        force_buffers(sock.as_raw_fd(), 16 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(sock)
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let (mut invites, mut last) = (0u64, None);
        let mut buf = [0u8; 4096];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                if buf[..n].starts_with(b"INVITE ") {
                    invites += 1;
                    last = Some(Instant::now());
                }
            }
        }
        (invites, last)
    });
    Ok((stop, thread))
}

/// The edge's Prometheus metrics, fetched in the server namespace.
fn scrape(lab: &Lab) -> Result<String> {
    in_netns(&lab.server_ns, || {
        let mut s = TcpStream::connect(METRICS)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })
}

/// The value of the series `series` (name and labels as printed).
fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The flood ban in force: (its evidence count, how many ms ago it fell).
fn flood_ban(lab: &Lab) -> Result<Option<(u64, u64)>> {
    let out = lab::run(&mut lab.sip_ka(&["bans", "--json"])?)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().and_then(|bans| {
        bans.iter().find(|b| b["reason"] == "flood").map(|b| {
            let left = b["expires_in_ms"].as_u64().unwrap_or(0);
            let evidence = b["evidence"].as_u64().unwrap_or(0);
            (evidence, (BAN_TIME_SECS * 1000).saturating_sub(left))
        })
    }))
}

/// Datagrams the server namespace's UDP sockets dropped for a full
/// receive buffer (RcvbufErrors in its /proc/net/snmp).
fn rcvbuf_errors(lab: &Lab) -> Result<u64> {
    let out = lab::run(lab.server("cat").arg("/proc/net/snmp"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values] = udp[..] else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find_map(|(n, v)| (n == "RcvbufErrors").then(|| v.parse().ok())?)
        .context("no RcvbufErrors in /proc/net/snmp")
}

fn counter(lab: &Lab, name: &str) -> Result<u64> {
    Ok(lab.counters()?.get(name).copied().unwrap_or(0))
}

/// One flood of part 1.
struct FloodRow {
    shield: bool,
    sent: u64,
    seconds: f64,
    /// Daemon CPU seconds over the flood and [`TAIL`].
    cpu: f64,
    reached: u64,
    /// ms from the flood's start to the last INVITE at the sink.
    last_ms: Option<f64>,
    /// (evidence, ms into the flood) of the ban.
    ban: Option<(u64, f64)>,
    xdp_dropped: u64,
    edge_dropped: Option<u64>,
    /// Datagrams lost to full socket buffers in the server namespace.
    overflows: u64,
}

fn flood_row(lab: &mut Lab, shield: bool) -> Result<FloodRow> {
    let (stop_sink, sink) = sink(lab)?;
    let upstream = format!("{SERVER_V4}:{SINK_PORT}");
    let fixed =
        format!("--mode edge --xdp-mode native --metrics {METRICS} --ban-time {BAN_TIME_SECS}");
    let mut args: Vec<&str> = fixed.split(' ').collect();
    args.extend(["--listen", EDGE, "--upstream", &upstream]);
    if !shield {
        args.extend(["--shield", "off"]);
    }
    lab.start_daemon(&args)?;
    let pid = lab.daemon_pid().context("daemon pid")?;
    let dropped0 = counter(lab, "drop_ban_flood")?;
    let overflows0 = rcvbuf_errors(lab)?;
    let edge0 = metric(&scrape(lab)?, "sipka_edge_dropped_total{reason=\"banned\"}").unwrap_or(0);
    let target: SocketAddr = EDGE.parse()?;
    let total = FLOOD_RATE * FLOOD_SECONDS;
    let reqs: Vec<Vec<u8>> = (0..total).map(invite).collect();
    let (sent, seconds, start, cpu) = in_netns(&lab.client_ns, move || {
        let probe = options_probe(target, SocketAddr::from((CLIENT_V4, 0)), CLIENT_V4, 1);
        let sock = ready_socket(target, probe.as_bytes(), |a| a.starts_with(b"SIP/2.0 200"))?;
        let c0 = tasks_cpu(&[pid]);
        let start = Instant::now();
        let (sent, secs) = send(&sock, &reqs, Some(FLOOD_RATE), total, FLOOD_SECONDS);
        std::thread::sleep(TAIL);
        Ok((sent, secs, start, tasks_cpu(&[pid]) - c0))
    })?;
    let ban = flood_ban(lab)?;
    let now_ms = start.elapsed().as_secs_f64() * 1e3;
    let ban = ban.map(|(evidence, ago)| (evidence, now_ms - ago as f64));
    let xdp_dropped = counter(lab, "drop_ban_flood")?.saturating_sub(dropped0);
    let edge_dropped = scrape(lab)
        .ok()
        .and_then(|t| metric(&t, "sipka_edge_dropped_total{reason=\"banned\"}"))
        .map(|v| v.saturating_sub(edge0));
    let overflows = rcvbuf_errors(lab)?.saturating_sub(overflows0);
    lab.stop_daemon()?;
    stop_sink.store(true, Ordering::Relaxed);
    let (reached, last) = sink.join().unwrap_or((0, None));
    Ok(FloodRow {
        shield,
        sent,
        seconds,
        cpu,
        reached,
        last_ms: last.map(|l| l.saturating_duration_since(start).as_secs_f64() * 1e3),
        ban,
        xdp_dropped,
        edge_dropped,
        overflows,
    })
}

/// One flood of part 2.
struct BlastRow {
    banned: bool,
    sent: u64,
    seconds: f64,
    /// `drop_ban_manual` (banned) or `crlf_pong_sent` over the flood.
    counted: u64,
    /// CPU seconds of the server veth's NAPI thread(s) (where XDP runs).
    napi_cpu: Option<f64>,
    /// Frames the program saw, and answers the veth failed to send back
    /// (its `xdp_packets` and `xdp_tx_errors`).
    at_xdp: u64,
    tx_errors: u64,
}

/// A receive statistic of the server veth summed over its queues
/// (`ethtool -S`: `rx_queue_N_<name>`).
fn veth_stat(lab: &Lab, name: &str) -> u64 {
    let Ok(out) = lab::run(lab.server("ethtool").args(["-S", &lab.server_if])) else {
        return 0;
    };
    let suffix = format!("_{name}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.starts_with("rx_queue_") && k.ends_with(&suffix))
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .sum()
}

fn blast_counter(banned: bool) -> &'static str {
    ["crlf_pong_sent", "drop_ban_manual"][usize::from(banned)]
}

impl BlastRow {
    fn rate(&self) -> f64 {
        self.counted as f64 / self.seconds.max(1e-9)
    }

    /// ns of the server NAPI thread's CPU per packet at XDP.
    fn ns(&self) -> Option<f64> {
        self.napi_cpu.map(|c| c * 1e9 / self.at_xdp.max(1) as f64)
    }
}

fn blast_row(lab: &Lab, banned: bool, napi: &Option<Vec<u32>>) -> Result<BlastRow> {
    let name = blast_counter(banned);
    let target = SocketAddr::from((SERVER_V4, 5060));
    // Answered before the ban (or after its lift): the path is up.
    let sock = in_netns(&lab.client_ns, move || {
        ready_socket(target, CRLF_PING, |a| a == b"\r\n")
    })?;
    let client = CLIENT_V4.to_string();
    if banned {
        lab::run(&mut lab.sip_ka(&["bans", "add", &client])?)?;
    }
    let before = counter(lab, name)?;
    let xdp0 = veth_stat(lab, "xdp_packets");
    let err0 = veth_stat(lab, "xdp_tx_errors");
    let napi0 = napi.as_deref().map(tasks_cpu);
    // A socket keeps working in the namespace it was made in.
    let reqs = vec![CRLF_PING.to_vec()];
    let (sent, seconds) = send(&sock, &reqs, None, u64::MAX, BLAST_SECONDS);
    let napi_cpu = napi.as_deref().zip(napi0).map(|(t, c0)| tasks_cpu(t) - c0);
    std::thread::sleep(Duration::from_millis(200));
    let counted = counter(lab, name)?.saturating_sub(before);
    let at_xdp = veth_stat(lab, "xdp_packets").saturating_sub(xdp0);
    let tx_errors = veth_stat(lab, "xdp_tx_errors").saturating_sub(err0);
    if banned {
        lab::run(&mut lab.sip_ka(&["bans", "remove", &client])?)?;
    }
    Ok(BlastRow {
        banned,
        sent,
        seconds,
        counted,
        napi_cpu,
        at_xdp,
        tx_errors,
    })
}

fn blast_rows(opts: &Opts) -> Result<(Vec<BlastRow>, bool)> {
    let mut lab = Lab::new()?;
    let napi = if opts.no_threaded_napi {
        None
    } else {
        let s = threaded_napi(&lab.server_ns, &lab.server_if)?;
        let c = threaded_napi(&lab.client_ns, &lab.client_if)?;
        (!s.is_empty() && !c.is_empty()).then_some(s)
    };
    lab.start_daemon(&["--xdp-mode", "native"])?;
    // One source: its answer budgets would measure drops, not answers.
    for key in ["rate_limit_pps", "rate_limit_addr_pps"] {
        lab::run(&mut lab.sip_ka(&["config", "set", key, "0"])?)?;
    }
    std::thread::sleep(Duration::from_millis(600));
    let mut rows = Vec::new();
    for banned in [true, false] {
        print!(
            "CRLF flood, {} source ... ",
            ["allowed", "banned"][usize::from(banned)]
        );
        std::io::stdout().flush().ok();
        let row = blast_row(&lab, banned, &napi)?;
        let (n, c, t) = (row.sent, row.counted, row.seconds);
        println!("{n} sent, {c} counted in {t:.2} s");
        rows.push(row);
    }
    lab.stop_daemon()?;
    Ok((rows, napi.is_some()))
}

fn on_off(on: bool) -> &'static str {
    ["off", "on"][usize::from(on)]
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

/// Runs part (h) and prints its tables.
pub(crate) fn shield_bench(opts: &Opts) -> Result<()> {
    println!("== (h) shield: the edge under an INVITE flood, and a banned source's flood at XDP");
    let mut floods = Vec::new();
    {
        let mut lab = Lab::new()?;
        for shield in [false, true] {
            print!("INVITE flood, shield {} ... ", on_off(shield));
            std::io::stdout().flush().ok();
            let row = flood_row(&mut lab, shield)
                .with_context(|| format!("the INVITE flood with the shield {shield}"))?;
            let (n, t, r) = (row.sent, row.seconds, row.reached);
            println!("{n} sent in {t:.2} s, {r} reached the PBX");
            floods.push(row);
        }
    }
    let (blasts, threaded) = blast_rows(opts)?;

    println!();
    println!(
        "INVITE flood from one source, {FLOOD_RATE}/s for {FLOOD_SECONDS} s, into the edge \
         (--mode edge, XDP native):"
    );
    println!("shield     sent reached PBX  daemon CPU s  daemon ms/s     ban after   ban at ms  XDP drops");
    for r in &floods {
        let per_s = |c: f64| c * 1e3 / r.seconds.max(1e-9);
        println!(
            "{:<7} {:>7} {:>11} {:>13.3} {:>12.1} {:>13} {:>11} {:>10}",
            on_off(r.shield),
            r.sent,
            r.reached,
            r.cpu,
            per_s(r.cpu),
            r.ban
                .map_or("no ban".into(), |(n, _)| format!("{n} requests")),
            opt_ms(r.ban.map(|(_, ms)| ms)),
            r.xdp_dropped,
        );
    }
    for r in &floods {
        let edge = r.edge_dropped.unwrap_or(0);
        let lost = r.sent as i64 - (r.reached + edge + r.xdp_dropped + r.overflows) as i64;
        println!(
            "  shield {}: of {} sent, reached the PBX {}, dropped as banned by the edge {} and \
             by XDP {}, lost to full socket buffers in the server namespace {}, unaccounted {}",
            on_off(r.shield),
            r.sent,
            r.reached,
            r.edge_dropped.map_or("n/a".into(), |v| v.to_string()),
            r.xdp_dropped,
            r.overflows,
            lost,
        );
    }
    if let [off, on] = &floods[..] {
        // XDP dropped every INVITE sent after its first drop (the flood
        // is paced): the ones before it were sent in this many ms.
        let xdp_from = on.sent.saturating_sub(on.xdp_dropped) as f64 * 1e3 / FLOOD_RATE as f64;
        println!(
            "  shield on: the last INVITE reached the PBX {} ms into the flood, XDP dropped \
             from about {xdp_from:.0} ms on",
            opt_ms(on.last_ms),
        );
        println!(
            "daemon CPU, shield off / on: {:.1}x",
            off.cpu / on.cpu.max(1e-3)
        );
    }
    println!();
    println!(
        "CRLF pings from one source as fast as one sender thread goes, {BLAST_SECONDS} s each, \
         at the XDP program (native, veth):"
    );
    println!("source       sent/s   at XDP/s          counter   counted     per s  tx errors  NAPI ns/packet");
    for r in &blasts {
        println!(
            "{:<9} {:>9.0} {:>10.0} {:>16} {:>9} {:>9.0} {:>10} {:>15}",
            if r.banned { "banned" } else { "allowed" },
            r.sent as f64 / r.seconds.max(1e-9),
            r.at_xdp as f64 / r.seconds.max(1e-9),
            blast_counter(r.banned),
            r.counted,
            r.rate(),
            r.tx_errors,
            opt_ms(r.ns()),
        );
    }
    if let [drop, answer] = &blasts[..] {
        let delivered = answer.counted.saturating_sub(answer.tx_errors) as f64;
        println!(
            "drops per s / answers per s: {:.2}x (/ answers the veth delivered: {:.2}x)",
            drop.rate() / answer.rate().max(1e-9),
            drop.rate() / (delivered / answer.seconds.max(1e-9)).max(1e-9)
        );
        if let (Some(d), Some(a)) = (drop.ns(), answer.ns()) {
            println!(
                "NAPI CPU per packet, answer / drop: {:.2}x; one CPU at these costs drops {:.2} \
                 M/s or answers {:.2} M/s",
                a / d,
                1e3 / d,
                1e3 / a
            );
        }
    }
    println!(
        "notes: part 1 floods the edge from the lab's client namespace with INVITEs (each a \
         new Call-ID, branch and From tag, {len} bytes with SDP) paced in sendmmsg batches; \
         the PBX is a socket that drains and never answers. \"daemon CPU\" is the CPU time \
         of every thread of the sip-ka process (schedstat: utime + stime in ns) from the \
         flood's start to {tail} ms after it; \"daemon ms/s\" divides it by the flood's \
         seconds (the kernel's receive work runs in the sender's softirq or ksoftirqd, not in it). \"ban after\" is the ban's evidence (requests in the flood window); \"ban at\" \
         its time into the flood, from its expiry (sip-ka bans --json) less --ban-time. The \
         edge: --ban-time {BAN_TIME_SECS} and every other shield setting at its default. Part \
         2: one blocking UDP socket sends 64 pings per sendmmsg for {BLAST_SECONDS} s; the \
         counters are the XDP program's (sip-ka stats), divided by the sender's seconds; \
         \"at XDP\" and \"tx errors\" are the server veth's xdp_packets and xdp_tx_errors \
         (ethtool -S: answers written but not sent back, the client's queue full); sent but \
         not at XDP were lost on the veth before the program; \
         rate_limit_pps and rate_limit_addr_pps are 0, the ban added and lifted with sip-ka \
         bans. When at XDP/s is close to sent/s the sender, not XDP, set both rates, and the \
         NAPI ns/packet compare the paths' costs. The answers go back to the client namespace, whose stack takes them (unread): \
         that work shares the machine with the sender in the answer row only. {napi}",
        len = invite(0).len(),
        tail = TAIL.as_millis(),
        napi = if threaded {
            "Both veths run threaded NAPI: \"NAPI ns/packet\" is the CPU time of the server \
             veth's NAPI thread (the veth's receive, XDP and the XDP_TX) per packet at XDP."
        } else {
            "NAPI is not threaded: XDP runs in the sender's softirq and its CPU is not shown."
        },
    );
    Ok(())
}
