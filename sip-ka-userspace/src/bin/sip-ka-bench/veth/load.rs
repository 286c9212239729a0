//! The lab's load generator: one UDP socket in the client namespace keeps
//! a window of STUN Binding requests or CRLF pings in flight, counts the
//! answers, and takes the CPU time of the machine, of itself and of the
//! server's tasks around the run.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::Lab;
use sip_ka_common::stun::MAGIC_COOKIE_BYTES;

use crate::cpu::{machine_busy, tasks_cpu, thread_cpu};
use crate::netns::wait_readable;
use crate::packets::{numbered_binding_request, CRLF_PING};

/// What the load sends: keep-alives of one kind.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Stun,
    Crlf,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Stun => "STUN Binding",
            Kind::Crlf => "CRLF ping",
        }
    }
}

/// What one row's load measured.
#[derive(Default, Debug, Clone)]
pub(super) struct Load {
    pub(super) sent: u64,
    pub(super) answered: u64,
    pub(super) bad: u64,
    /// Readiness probes sent before the measured run.
    pub(super) probes: u64,
    pub(super) elapsed: f64,
    /// CPU time of the load generator thread.
    pub(super) gen_cpu: f64,
    /// Busy CPU time of the whole machine (/proc/stat).
    pub(super) busy_cpu: f64,
    /// CPU time of the server's tasks: its process(es) and the server
    /// veth's NAPI thread (None when that thread was not found).
    pub(super) server_cpu: Option<f64>,
    /// CPU time of the client veth's NAPI thread (receiving the answers).
    pub(super) client_napi_cpu: Option<f64>,
}

impl Load {
    pub(super) fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.max(1e-9)
    }

    /// ns of CPU per answer: the whole machine's busy time minus the load
    /// generator's own.
    pub(super) fn machine_per_answer(&self) -> f64 {
        (self.busy_cpu - self.gen_cpu).max(0.0) * 1e9 / (self.answered.max(1) as f64)
    }

    /// ns of the server's own CPU per answer.
    pub(super) fn server_per_answer(&self) -> Option<f64> {
        self.server_cpu
            .map(|c| c * 1e9 / (self.answered.max(1) as f64))
    }
}

/// One row's load: what to send where, how much, and whose CPU to count.
pub(super) struct LoadSpec {
    pub(super) kind: Kind,
    pub(super) target: SocketAddr,
    pub(super) count: u64,
    pub(super) seconds: u64,
    pub(super) window: u32,
    pub(super) fingerprint: bool,
    /// Processes and kernel threads that make up the server side.
    pub(super) server_tasks: Option<Vec<u32>>,
    pub(super) client_napi: Option<Vec<u32>>,
}

fn request(spec: &LoadSpec, seq: u64) -> Vec<u8> {
    match spec.kind {
        Kind::Crlf => CRLF_PING.to_vec(),
        Kind::Stun => numbered_binding_request(seq, spec.fingerprint),
    }
}

fn is_answer(kind: Kind, msg: &[u8]) -> bool {
    match kind {
        Kind::Crlf => msg == b"\r\n",
        Kind::Stun => msg.len() >= 20 && msg[..2] == [1, 1] && msg[4..8] == MAGIC_COOKIE_BYTES,
    }
}

/// Runs the load from a thread that joined the client namespace.
pub(super) fn run_load(lab: &Lab, spec: LoadSpec) -> Result<Load> {
    let ns = format!("/run/netns/{}", lab.client_ns);
    std::thread::spawn(move || -> Result<Load> {
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        // SAFETY: setns on this thread only; the thread ends with the load.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.connect(spec.target)?;
        sock.set_nonblocking(true)?;
        generate(&sock, &spec)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
}

/// Keeps `spec.window` requests in flight on `sock` (connected to the
/// target) until the count or the time is reached.
pub(super) fn generate(sock: &UdpSocket, spec: &LoadSpec) -> Result<Load> {
    let fd = sock.as_raw_fd();
    let mut buf = [0u8; 2048];
    let mut load = Load::default();
    // Readiness: one request every 100 ms until one is answered (10 s).
    let ready_by = Instant::now() + Duration::from_secs(10);
    let mut ready = false;
    while !ready && Instant::now() < ready_by {
        let _ = sock.send(&request(spec, 0));
        load.probes += 1;
        if wait_readable(fd, 100) {
            while let Ok(n) = sock.recv(&mut buf) {
                ready |= is_answer(spec.kind, &buf[..n]);
            }
        }
    }
    if !ready {
        bail!(
            "no answer to a {} sent to {} within 10 s",
            spec.kind.name(),
            spec.target
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    while sock.recv(&mut buf).is_ok() {}

    let server0 = spec.server_tasks.as_deref().map(tasks_cpu);
    let client0 = spec.client_napi.as_deref().map(tasks_cpu);
    let busy0 = machine_busy()?;
    let cpu0 = thread_cpu();
    let start = Instant::now();
    let end = start + Duration::from_secs(spec.seconds);
    let mut in_flight: u64 = 0;
    let mut quiet_since = Instant::now();
    let mut seq = 1u64;
    loop {
        let now = Instant::now();
        if now >= end || (load.sent >= spec.count && in_flight == 0) {
            break;
        }
        while in_flight < u64::from(spec.window) && load.sent < spec.count {
            match sock.send(&request(spec, seq)) {
                Ok(_) => {
                    load.sent += 1;
                    in_flight += 1;
                    seq += 1;
                }
                // A full socket buffer or an ICMP error: retry later.
                Err(_) => break,
            }
        }
        let mut got = 0;
        if wait_readable(fd, 5) {
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        if is_answer(spec.kind, &buf[..n]) {
                            load.answered += 1;
                        } else {
                            load.bad += 1;
                        }
                        got += 1;
                        in_flight = in_flight.saturating_sub(1);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                }
            }
        }
        if got > 0 {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(50) {
            // Nothing for 50 ms: what is in flight is lost.
            in_flight = 0;
            quiet_since = Instant::now();
        }
    }
    load.elapsed = start.elapsed().as_secs_f64();
    load.gen_cpu = thread_cpu() - cpu0;
    load.busy_cpu = machine_busy()? - busy0;
    load.server_cpu = spec
        .server_tasks
        .as_deref()
        .zip(server0)
        .map(|(t, c0)| tasks_cpu(t) - c0);
    load.client_napi_cpu = spec
        .client_napi
        .as_deref()
        .zip(client0)
        .map(|(t, c0)| tasks_cpu(t) - c0);
    Ok(load)
}
