//! The scaling lab (`--scaling`): sip-ka's XDP program on a veth pair
//! with two queues, answering the same STUN load once with everything on
//! one CPU and once spread over two, so two CPUs run the program at once.
//!
//! The lab's veth pair is remade with two queues each way. Each of two
//! load threads sends from its own socket (same address, other port: a
//! NAT with many phones) and is pinned to a CPU; XPS maps that CPU to the
//! client's transmit queue of the same number, veth hands the frame to the
//! server's receive queue of that number, and that queue's threaded NAPI
//! kthread, pinned to the same CPU, runs the program. With one CPU every
//! thread is pinned to CPU 0. The per-source answer limit stays on (at its
//! largest rate, so it never refuses): its bucket is then written on every
//! answer from both CPUs, which is what would serialise them if it were
//! shared.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};
use sip_ka_common::config::RATE_LIMIT_MAX;

use super::load::{generate, Kind, Load, LoadSpec};
use super::servers::{attached_prog_id, prog_stats};
use crate::cpu::{machine_busy, threaded_napi};
use crate::opts::Opts;

const QUEUES: usize = 2;

/// Remakes the lab's veth pair with `QUEUES` queues each way, with the
/// addresses, offloads and peer program `Lab::new` gave the old one.
fn multiqueue(lab: &Lab) -> Result<()> {
    let q = QUEUES.to_string();
    lab::run(Command::new("ip").args(["-n", &lab.server_ns, "link", "del", &lab.server_if]))?;
    lab::run(Command::new("ip").args([
        "link",
        "add",
        &lab.server_if,
        "netns",
        &lab.server_ns,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        &lab.client_if,
        "netns",
        &lab.client_ns,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
    ]))
    .context("a veth pair with two queues")?;
    for (ns, dev, v4) in [
        (&lab.server_ns, &lab.server_if, SERVER_V4),
        (&lab.client_ns, &lab.client_if, CLIENT_V4),
    ] {
        lab::run(Command::new("ip").args([
            "-n",
            ns,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            dev,
        ]))?;
        lab::run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
    }
    // Complete checksums, as from a wire; transmit queue i for CPU i.
    let mut script = format!("ethtool -K {} tx off >/dev/null", lab.client_if);
    for i in 0..QUEUES {
        script += &format!(
            " && echo {:x} > /sys/class/net/{}/queues/tx-{i}/xps_cpus",
            1u32 << i,
            lab.client_if
        );
    }
    lab::run(Command::new("ip").args(["netns", "exec", &lab.client_ns, "sh", "-c", &script]))
        .context("ethtool and XPS on the client veth")?;
    let pin = lab.pin_dir.join("pass_link");
    let _ = std::fs::remove_file(&pin);
    lab::run(lab.client(lab::sip_ka_exe()?).args([
        "xdp-pass",
        "--iface",
        &lab.client_if,
        "--pin",
        &pin.to_string_lossy(),
    ]))?;
    Ok(())
}

/// Pins a thread or process to the CPUs of `mask`.
fn pin(tid: u32, cpu: usize) -> Result<()> {
    // SAFETY: a cpu_set_t on the stack, filled by the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid as i32, std::mem::size_of_val(&set), &set) != 0 {
            bail!(
                "pinning task {tid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// XDP packets per receive queue of the server veth (`ethtool -S`).
fn queue_packets(lab: &Lab) -> Result<Vec<u64>> {
    let out = lab::run(lab.server("ethtool").args(["-S", &lab.server_if]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut per = vec![0u64; QUEUES];
    for line in text.lines() {
        let line = line.trim();
        for (i, slot) in per.iter_mut().enumerate() {
            if let Some(v) = line.strip_prefix(&format!("rx_queue_{i}_xdp_packets:")) {
                *slot = v.trim().parse().unwrap_or(0);
            }
        }
    }
    Ok(per)
}

struct Row {
    cpus: usize,
    loads: Vec<Load>,
    per_queue: Vec<u64>,
    /// The attached program's own ns per run and its runs.
    prog: Option<(f64, u64)>,
    /// Busy CPU seconds per second of the machine during the row.
    busy: f64,
}

impl Row {
    fn answered(&self) -> u64 {
        self.loads.iter().map(|l| l.answered).sum()
    }

    fn rate(&self) -> f64 {
        let elapsed = self.loads.iter().map(|l| l.elapsed).fold(0.0, f64::max);
        self.answered() as f64 / elapsed.max(1e-9)
    }
}

/// One row: a load thread per queue, pinned as `cpus` says, all at once.
fn run_row(lab: &Lab, opts: &Opts, cpus: usize, napi: &[Vec<u32>]) -> Result<Row> {
    for threads in napi {
        for (i, tid) in threads.iter().enumerate() {
            pin(*tid, i % cpus)?;
        }
    }
    let prog_id = attached_prog_id(lab);
    let prog0 = prog_id.and_then(prog_stats);
    let queues0 = queue_packets(lab)?;
    let busy0 = machine_busy()?;
    let start = std::time::Instant::now();
    let mut handles = Vec::new();
    for i in 0..QUEUES {
        let ns = format!("/run/netns/{}", lab.client_ns);
        let spec = LoadSpec {
            kind: Kind::Stun,
            target: SocketAddr::from((SERVER_V4, 5060)),
            count: opts.count,
            seconds: opts.seconds,
            window: opts.window,
            fingerprint: !opts.no_fingerprint,
            server_tasks: None,
            client_napi: None,
        };
        let cpu = i % cpus;
        handles.push(std::thread::spawn(move || -> Result<Load> {
            use std::os::fd::AsRawFd as _;
            pin(0, cpu)?;
            let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
            // SAFETY: setns on this thread only; the thread ends with the load.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns({ns}): {}", std::io::Error::last_os_error());
            }
            let sock = UdpSocket::bind(SocketAddr::from((CLIENT_V4, 0)))?;
            sock.connect(spec.target)?;
            sock.set_nonblocking(true)?;
            generate(&sock, &spec)
        }));
    }
    let mut loads = Vec::new();
    for h in handles {
        loads.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))??,
        );
    }
    let wall = start.elapsed().as_secs_f64();
    let busy = (machine_busy()? - busy0) / wall.max(1e-9);
    let queues1 = queue_packets(lab)?;
    let prog = match (prog0, prog_id.and_then(prog_stats)) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => {
            Some(((t1 - t0).as_nanos() as f64 / (n1 - n0) as f64, n1 - n0))
        }
        _ => None,
    };
    Ok(Row {
        cpus,
        loads,
        per_queue: queues1
            .iter()
            .zip(&queues0)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        prog,
        busy,
    })
}

/// Runs the scaling lab and prints its table.
pub(crate) fn scaling_bench(opts: &Opts) -> Result<()> {
    println!("== (e) scaling: the XDP program on a two-queue veth, 1 CPU and 2 CPUs");
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ncpu < 2 {
        bail!("the scaling lab needs two CPUs; this machine has {ncpu}");
    }
    let mut lab = Lab::new()?;
    multiqueue(&lab)?;
    let server_napi = threaded_napi(&lab.server_ns, &lab.server_if)?;
    let client_napi = threaded_napi(&lab.client_ns, &lab.client_if)?;
    if server_napi.len() < QUEUES || client_napi.len() < QUEUES {
        bail!(
            "expected {QUEUES} NAPI threads per veth, found {} (server) and {} (client)",
            server_napi.len(),
            client_napi.len()
        );
    }
    lab.start_daemon(&["--xdp-mode", "native"])?;
    let most = RATE_LIMIT_MAX.to_string();
    for (k, v) in [
        ("rate_limit_pps", &most),
        ("rate_limit_burst", &most),
        ("rate_limit_addr_pps", &most),
        ("rate_limit_addr_burst", &most),
    ] {
        lab::run(&mut lab.sip_ka(&["config", "set", k, v])?)?;
    }
    std::thread::sleep(Duration::from_millis(600));
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    let b0 = machine_busy()?;
    std::thread::sleep(Duration::from_secs(1));
    let background = machine_busy()? - b0;
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let napi = [server_napi, client_napi];
    let mut rows = Vec::new();
    for cpus in [1, 2] {
        print!("{cpus} CPU(s) ... ");
        use std::io::Write as _;
        std::io::stdout().flush().ok();
        let row = run_row(&lab, opts, cpus, &napi)?;
        println!(
            "{} answered of {} sent",
            row.answered(),
            row.loads.iter().map(|l| l.sent).sum::<u64>()
        );
        rows.push(row);
    }
    // Back to every CPU before the lab goes.
    for threads in &napi {
        for tid in threads {
            let _ = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for c in 0..ncpu {
                    libc::CPU_SET(c, &mut set);
                }
                libc::sched_setaffinity(*tid as i32, std::mem::size_of_val(&set), &set)
            };
        }
    }
    lab.stop_daemon()?;
    drop(lab);
    drop(stats_fd);

    println!();
    println!(
        "{:<6} {:>10} {:>12} {:>8} {:>22} {:>12} {:>10}",
        "CPUs", "answered", "answers/s", "factor", "XDP runs per queue", "XDP ns/run", "busy CPUs"
    );
    let base = rows[0].rate();
    for r in &rows {
        println!(
            "{:<6} {:>10} {:>12.0} {:>8} {:>22} {:>12} {:>10.2}",
            r.cpus,
            r.answered(),
            r.rate(),
            format!("{:.2}x", r.rate() / base.max(1e-9)),
            r.per_queue
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            r.prog.map_or("n/a".into(), |(ns, _)| format!("{ns:.0}")),
            r.busy,
        );
    }
    println!(
        "notes: {QUEUES} load threads, each with its own UDP socket (one source address, \
         two ports), {window} STUN requests in flight each, {count} requests and {seconds} s \
         at most per thread; each thread, its client transmit queue (XPS), the server \
         receive queue of that number and its NAPI kthread on CPU i (2 CPUs) or all on CPU 0 \
         (1 CPU). rate_limit_pps, rate_limit_burst and their per-address ceiling at {most}: \
         both buckets are charged on every answer but never refuse. \"XDP ns/run\" is the kernel's run-time \
         statistics of the attached program (a rise on 2 CPUs would show a shared cache line \
         written by both). The load generators, the client's NAPI and the server's run on the \
         same {ncpu} CPUs; busy before the run: {bg:.0} ms per second; load average at the \
         start: {la}.",
        window = opts.window,
        count = opts.count,
        seconds = opts.seconds,
        bg = background * 1000.0,
        la = load_avg.trim(),
    );
    Ok(())
}
