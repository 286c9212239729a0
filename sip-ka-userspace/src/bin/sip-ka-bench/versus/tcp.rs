//! RFC 5626 CRLF pings over TCP from the bench's own client: a number of
//! connections, each with one ping outstanding.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use sip_ka::lab::{Lab, SERVER_V4};

use super::measure::{Measure, Meter, Outcome};
use super::servers::SIP_PORT;
use crate::cpu::thread_cpu;
use crate::netns::in_netns;
use crate::opts::Opts;
use crate::packets::CRLF_PING;

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
pub(super) fn crlf_load(
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
                (&s).write_all(CRLF_PING)?;
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
            match (&c.stream).write(CRLF_PING) {
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
