//! The userspace UDP keep-alive responder: answers CRLF pings and STUN
//! Binding requests that reach a socket, i.e. what XDP passed, or
//! everything when XDP is off. It is the fallback where XDP cannot attach
//! and the baseline the benchmark compares XDP against.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, RwLock},
};

pub mod batch;
pub mod limit;
pub mod stun;

use sip_ka_common::{Action, Config, Counter};

use crate::{
    bpf::stats::user::UserCounters,
    responder::{
        batch::{RecvBatch, SendBatch},
        limit::Limiter,
        stun::Outcome,
    },
    shield::BanTable,
    util::clock,
};

/// What all responder sockets share.
pub struct Shared {
    pub counters: UserCounters,
    /// The configuration in force, refreshed from the CONFIG map.
    pub config: RwLock<Config>,
    /// Per-source answer buckets (`rate_limit_pps`, `rate_limit_burst`).
    pub limiter: Limiter,
    /// The bans in force: a banned source gets no answer.
    pub bans: Arc<BanTable>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        Shared::with_bans(config, Arc::default())
    }

    /// A responder that drops what comes from sources banned in `bans`.
    pub fn with_bans(config: Config, bans: Arc<BanTable>) -> Arc<Shared> {
        Arc::new(Shared {
            counters: UserCounters::default(),
            config: RwLock::new(config),
            limiter: Limiter::default(),
            bans,
        })
    }

    fn config(&self) -> Config {
        *crate::util::lock::read(&self.config)
    }
}

/// The XDP program's never-answer rule, less loopback: on a NIC a
/// loopback source is forged, but a socket only sees loopback traffic that
/// this host really sent.
pub fn answerable(src: &SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(a) => !(a.octets()[0] == 0 || a.octets()[0] >= 224),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

/// The user counters in STATS order (one block of indices).
const USER_COUNTERS: [Counter; 7] = [
    Counter::UserCrlfPing,
    Counter::UserCrlfPongSent,
    Counter::UserStunReq,
    Counter::UserStunResp,
    Counter::UserStunError,
    Counter::UserStunBadFp,
    Counter::UserIgnored,
];

/// Counts one socket loop keeps over a batch and adds to the shared
/// counters once per batch: two threads bumping the same atomics for
/// every datagram would pass their cache line back and forth.
#[derive(Default)]
pub struct Tally {
    counts: [u64; USER_COUNTERS.len()],
    rate_limited: u64,
    banned: u64,
}

impl Tally {
    fn bump(&mut self, c: Counter) {
        let i = (c as usize).wrapping_sub(Counter::UserCrlfPing as usize);
        if let Some(n) = self.counts.get_mut(i) {
            *n += 1;
        }
    }

    /// Adds the batch's counts to `counters` and starts again from zero.
    pub fn flush(&mut self, counters: &UserCounters) {
        for (c, n) in USER_COUNTERS.iter().zip(self.counts.iter_mut()) {
            if *n > 0 {
                counters.add(*c, std::mem::take(n));
            }
        }
        if self.rate_limited > 0 {
            counters.add_rate_limited(std::mem::take(&mut self.rate_limited));
        }
        if self.banned > 0 {
            counters.add(Counter::UserDropBanned, std::mem::take(&mut self.banned));
        }
    }
}

/// Writes the answer to one datagram from `src` into `out` (emptied
/// first); false when there is none. `cfg` and `now_ns` (CLOCK_MONOTONIC)
/// are read once per batch by the caller. An answer takes a token from
/// its source's bucket; a source over its rate gets nothing, counted.
pub fn answer_into(
    shared: &Shared,
    cfg: &Config,
    now_ns: u64,
    tally: &mut Tally,
    msg: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    if !shared.bans.is_empty() && shared.bans.is_banned(src.ip(), clock::now_ms()) {
        tally.banned += 1;
        return false;
    }
    let sent = if msg == b"\r\n\r\n" {
        tally.bump(Counter::UserCrlfPing);
        if Action::from_u32(cfg.udp_crlf) == Action::Drop || !answerable(&src) {
            return false;
        }
        out.extend_from_slice(b"\r\n");
        Counter::UserCrlfPongSent
    } else if msg.first().is_some_and(|b| b & 0xC0 == 0) && msg.len() >= 20 {
        tally.bump(Counter::UserStunReq);
        if !answerable(&src) {
            return false;
        }
        match stun::respond_into(msg, src, out) {
            Outcome::Success => Counter::UserStunResp,
            Outcome::Error(code) => {
                log::debug!("STUN {code} to {src}");
                Counter::UserStunError
            }
            Outcome::BadFingerprint => {
                tally.bump(Counter::UserStunBadFp);
                return false;
            }
            Outcome::Ignore => {
                tally.bump(Counter::UserIgnored);
                return false;
            }
        }
    } else {
        tally.bump(Counter::UserIgnored);
        return false;
    };
    // Last, as in the fast path: only an answer about to go takes a token.
    if !shared.limiter.allow(cfg, src, now_ns) {
        tally.rate_limited += 1;
        out.clear();
        return false;
    }
    tally.bump(sent);
    true
}

/// What to send back for one datagram, if anything (for callers that take
/// datagrams one at a time: the edge's keep-alives).
pub fn answer(shared: &Shared, msg: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut tally = Tally::default();
    let cfg = shared.config();
    let answered = answer_into(
        shared,
        &cfg,
        clock::monotonic_ns(),
        &mut tally,
        msg,
        src,
        &mut out,
    );
    tally.flush(&shared.counters);
    answered.then_some(out)
}

/// A UDP socket bound to `addr` with SO_REUSEPORT, blocking.
fn reuseport_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: a new socket, owned at once by `fd`.
    let raw = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a socket nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: an int option on our socket.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = batch::sockaddr_c(addr, &mut storage);
    // SAFETY: `storage` holds a sockaddr of `len` bytes.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(fd))
}

/// Binds the responder on `addr`: one SO_REUSEPORT socket per CPU, each
/// served by its own thread (the kernel spreads sources over them), for
/// the life of the process. Returns the bound address and the number of
/// sockets.
///
/// The address is first bound alone, without SO_REUSEPORT: an address
/// some other socket holds fails here as it did with one socket (a second
/// daemon on the same `--listen` must not share its traffic), and once
/// the group is bound, such a plain bind by anyone else fails too.
pub fn spawn(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<(SocketAddr, usize)> {
    let probe = std::net::UdpSocket::bind(addr)?;
    let local = probe.local_addr()?;
    drop(probe);
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut socks = Vec::with_capacity(n);
    for _ in 0..n {
        socks.push(reuseport_socket(local)?);
    }
    for (i, sock) in socks.into_iter().enumerate() {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("sip-ka-udp{i}"))
            .spawn(move || serve(sock, shared))?;
    }
    Ok((local, n))
}

/// Serves one socket for the life of the process: a batch in with one
/// `recvmmsg` (waiting for its first datagram), the answers out with one
/// `sendmmsg`, the same buffers every time.
fn serve(sock: std::net::UdpSocket, shared: Arc<Shared>) {
    let fd = sock.as_raw_fd();
    let mut rx = RecvBatch::default();
    let mut tx = SendBatch::default();
    let mut tally = Tally::default();
    loop {
        let n = match rx.recv(fd, libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep going.
                log::debug!("recv on {:?}: {e}", sock.local_addr().ok());
                continue;
            }
        };
        let cfg = shared.config();
        let now = clock::monotonic_ns();
        for i in 0..n {
            let Some((msg, src)) = rx.get(i) else {
                // Cut short or from no IP address: nothing to answer.
                tally.bump(Counter::UserIgnored);
                continue;
            };
            let Some(out) = tx.next_buf() else {
                break;
            };
            if answer_into(&shared, &cfg, now, &mut tally, msg, src, out) {
                tx.commit(src);
            }
        }
        if !tx.is_empty() {
            let done = tx.flush(fd);
            if done.failed > 0 {
                log::debug!(
                    "responder: {} answer(s) not sent: {:?}",
                    done.failed,
                    done.last_error
                );
            }
        }
        tally.flush(&shared.counters);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ka_common::stun::MAGIC_COOKIE_BYTES;

    fn src() -> SocketAddr {
        "198.18.0.2:40000".parse().unwrap()
    }

    #[test]
    fn crlf_ping_gets_a_pong_unless_configured_to_drop() {
        let shared = Shared::new(Config::DEFAULT);
        assert_eq!(answer(&shared, b"\r\n\r\n", src()), Some(b"\r\n".to_vec()));
        assert_eq!(
            answer(&shared, b"\r\n", src()),
            None,
            "a pong is never answered"
        );
        if let Ok(mut c) = shared.config.write() {
            c.udp_crlf = Action::Drop as u32;
        }
        assert_eq!(answer(&shared, b"\r\n\r\n", src()), None);
        assert_eq!(shared.counters.get(Counter::UserCrlfPing), 2);
        assert_eq!(shared.counters.get(Counter::UserCrlfPongSent), 1);
        assert_eq!(shared.counters.get(Counter::UserIgnored), 1);
    }

    #[test]
    fn stun_request_gets_a_success_and_bad_sources_get_nothing() {
        let shared = Shared::new(Config::DEFAULT);
        let mut req = vec![0x00, 0x01, 0x00, 0x00];
        req.extend_from_slice(&MAGIC_COOKIE_BYTES);
        req.extend_from_slice(&[9u8; 12]);
        let reply = answer(&shared, &req, src()).expect("answered");
        assert_eq!(&reply[..2], &[0x01, 0x01]);
        assert_eq!(answer(&shared, &req, "198.18.0.2:0".parse().unwrap()), None);
        assert_eq!(
            answer(&shared, &req, "224.0.0.1:5060".parse().unwrap()),
            None
        );
        assert_eq!(shared.counters.get(Counter::UserStunResp), 1);
        assert_eq!(shared.counters.get(Counter::UserStunReq), 3);
    }
}
