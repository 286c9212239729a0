//! A fixed-rate STUN Binding load: one thread in the client namespace
//! sends `--stun-rate` requests per second in `sendmmsg` batches for
//! `--stun-seconds`, whatever comes back; another counts the answers. An
//! open loop, unlike the lab's windowed load: a server that falls behind
//! loses requests instead of slowing the generator down, which is what a
//! flood of keep-alives from many phones does.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{Lab, CLIENT_V4, SERVER_V4};
use sip_ka_common::stun::MAGIC_COOKIE_BYTES;

use super::measure::{Measure, Meter};
use super::servers::SIP_PORT;
use crate::cpu::thread_cpu;
use crate::netns::{force_buffers, in_netns, wait_readable};
use crate::opts::Opts;
use crate::packets::numbered_binding_request;

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// Distinct requests the generator cycles through (transaction ids).
const POOL: usize = 4096;
/// After the last request, answers still count for this long.
const GRACE: Duration = Duration::from_millis(500);
/// Source ports the load comes from, in turn by batch: keep-alives come
/// from many phones, and a server may spread sources over its sockets
/// (SO_REUSEPORT hashes them).
const SOURCES: usize = 8;

fn is_answer(msg: &[u8]) -> bool {
    msg.len() >= 20 && msg[..2] == [1, 1] && msg[4..8] == MAGIC_COOKIE_BYTES
}

/// One request every 100 ms until one is answered (10 s): the server is
/// up and the neighbour entries exist before the measured load.
fn wait_ready(sock: &UdpSocket, req: &[u8]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send(req);
        if wait_readable(sock.as_raw_fd(), 100) {
            while let Ok(n) = sock.recv(&mut buf) {
                if is_answer(&buf[..n]) {
                    std::thread::sleep(Duration::from_millis(100));
                    while sock.recv(&mut buf).is_ok() {}
                    return Ok(());
                }
            }
        }
    }
    bail!("no answer to a STUN Binding request within 10 s")
}

/// Waits until the server answers a STUN Binding request from the client
/// namespace (10 s at most): Kamailio forks its workers while it starts,
/// and their pids are taken after this.
pub(super) fn wait_stun_ready(lab: &Lab) -> Result<()> {
    let target = SocketAddr::from((SERVER_V4, SIP_PORT));
    in_netns(&lab.client_ns, move || {
        let sock = UdpSocket::bind((CLIENT_V4, 0))?;
        sock.connect(target)?;
        sock.set_nonblocking(true)?;
        wait_ready(&sock, &numbered_binding_request(0, true))
    })
}

/// What the receiving thread counted.
struct Received {
    answered: u64,
    bad: u64,
    cpu: f64,
}

/// Counts answers on `socks` until `stop` is set and then [`GRACE`] has
/// passed.
fn receive(socks: Vec<UdpSocket>, stop: Arc<AtomicBool>) -> Received {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let cpu0 = thread_cpu();
    let mut bufs = vec![[0u8; 256]; BATCH];
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut r = Received {
        answered: 0,
        bad: 0,
        cpu: 0.0,
    };
    let mut stopped_at: Option<Instant> = None;
    loop {
        if stopped_at.is_none() && stop.load(Ordering::Relaxed) {
            stopped_at = Some(Instant::now());
        }
        if stopped_at.is_some_and(|t| t.elapsed() >= GRACE) {
            break;
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
        if ready <= 0 {
            continue;
        }
        for p in fds.iter().filter(|p| p.revents != 0) {
            let fd = p.fd;
            iov.clear();
            iov.extend(bufs.iter_mut().map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            }));
            for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_len = 0;
            }
            // SAFETY: BATCH headers, each with one iovec into a live buffer.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            for (h, b) in hdrs.iter().zip(&bufs).take(n.max(0) as usize) {
                let len = (h.msg_len as usize).min(b.len());
                if is_answer(&b[..len]) {
                    r.answered += 1;
                } else {
                    r.bad += 1;
                }
            }
        }
    }
    r.cpu = thread_cpu() - cpu0;
    r
}

/// Sends `rate` requests per second for `seconds`; returns how many left
/// the socket and the seconds it took.
fn send(socks: &[UdpSocket], reqs: &[Vec<u8>], rate: u64, seconds: u64) -> (u64, f64) {
    let mut turn = 0;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    // SAFETY: mmsghdr is plain data; zero is a valid empty header.
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let total = rate * seconds;
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let mut sent: u64 = 0;
    let mut next: usize = 0;
    while sent < total {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = ((now - start).as_secs_f64() * rate as f64) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let n = (due - sent).min(BATCH as u64) as usize;
        iov.clear();
        for i in 0..n {
            let r = &reqs[(next + i) % reqs.len()];
            iov.push(libc::iovec {
                iov_base: r.as_ptr() as *mut libc::c_void,
                iov_len: r.len(),
            });
        }
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let fd = socks[turn % socks.len()].as_raw_fd();
        turn += 1;
        // SAFETY: n headers, each with one iovec into a live request; the
        // socket is connected, so no addresses.
        let done = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
        if done > 0 {
            sent += done as u64;
            next = (next + done as usize) % reqs.len();
        } else {
            // A full queue on the client's side: those are not offered.
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    (sent, start.elapsed().as_secs_f64())
}

/// The fixed-rate STUN load against the server's udp/5060, with CPU
/// measured around it.
pub(super) fn stun_load(
    lab: &Lab,
    opts: &Opts,
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
) -> Result<Measure> {
    let target = SocketAddr::from((SERVER_V4, SIP_PORT));
    let rate = u64::from(opts.stun_rate.max(1));
    let seconds = opts.stun_seconds.max(1);
    let fingerprint = !opts.no_fingerprint;
    in_netns(&lab.client_ns, move || {
        let mut socks = Vec::with_capacity(SOURCES);
        for _ in 0..SOURCES {
            let sock = UdpSocket::bind((CLIENT_V4, 0))?;
            sock.connect(target)?;
            force_buffers(sock.as_raw_fd(), 8 << 20);
            socks.push(sock);
        }
        let reqs: Vec<Vec<u8>> = (0..POOL as u64)
            .map(|s| numbered_binding_request(s, fingerprint))
            .collect();
        for sock in &socks {
            sock.set_nonblocking(true)?;
            wait_ready(sock, &reqs[0])?;
            sock.set_nonblocking(false)?;
        }
        let rx = socks
            .iter()
            .map(|s| s.try_clone().context("cloning a load socket"))
            .collect::<Result<Vec<_>>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let meter = Meter::start(procs, server_napi, client_napi)?;
        let receiver = std::thread::spawn(move || receive(rx, stopped));
        let cpu0 = thread_cpu();
        let (sent, elapsed) = send(&socks, &reqs, rate, seconds);
        let send_cpu = thread_cpu() - cpu0;
        stop.store(true, Ordering::Relaxed);
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))?;
        let mut m = Measure::default();
        meter.stop(&mut m)?;
        m.sent = sent;
        m.answered = got.answered;
        m.bad = got.bad;
        m.elapsed = elapsed;
        m.gen_cpu = send_cpu + got.cpu;
        Ok(m)
    })
}
