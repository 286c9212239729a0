//! What sip-ka talks to: the PBX (which side of the host it is on, and
//! whether it answers an OPTIONS) and the Redis of an HA pair.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::{net::Pbx, report::Check};
use crate::{
    bpf::route::{self, Side},
    edge::{store, upstream::qualify_request},
    sip::{parse_message, Framing, Limits},
};

/// How long the PBX and Redis get to answer.
pub const PING_WAIT: Duration = Duration::from_secs(1);

/// Which side the PBX is on, refused on the phones' side as `run` refuses
/// it (`route::check_upstream`, unless --trust-upstream-source).
pub fn upstream(upstream: SocketAddr, iface: Option<&str>, trust: bool) -> (Check, Pbx) {
    let side = match route::side_of(upstream.ip()) {
        Ok(s) => s,
        Err(e) => {
            return (
                Check::fail(
                    "upstream",
                    format!("{e:#}"),
                    format!("add a route to {} (`ip route`)", upstream.ip()),
                ),
                Pbx::Elsewhere,
            )
        }
    };
    let pbx = match (&side, iface) {
        (Side::Local, _) => Pbx::Local,
        (Side::Iface(i), Some(phones)) if i != phones => Pbx::Behind(i.clone()),
        (Side::Iface(i), None) => Pbx::Behind(i.clone()),
        _ => Pbx::Elsewhere,
    };
    let through = match &side {
        Side::Local => "on this host".to_string(),
        Side::Iface(i) => format!("reached through {i}"),
        Side::Unknown => "reached from an address no interface holds".to_string(),
    };
    let Some(phones) = iface else {
        return (
            Check::ok(
                "upstream",
                format!("{upstream} is {through} (give --iface to compare with the phones' side)"),
            ),
            pbx,
        );
    };
    let check = match route::check_upstream(upstream, phones) {
        Err(_) if trust => Check::warn(
            "upstream",
            format!(
                "{upstream} is {through}, the phones' side, trusted with \
                 --trust-upstream-source"
            ),
            format!(
                "make sure a firewall drops packets from {} arriving on {phones}",
                upstream.ip()
            ),
        ),
        Err(_) => Check::fail(
            "upstream",
            format!(
                "{upstream} is {through}, the interface the phones come from: anyone there \
                 could send as the PBX (the edge knows it by its source address)"
            ),
            format!(
                "put the PBX behind another interface (a route to {} not via {phones}), or \
                 with a firewall dropping its address on {phones} pass --trust-upstream-source",
                upstream.ip()
            ),
        ),
        Ok(_) if side == Side::Unknown => Check::warn(
            "upstream",
            format!("{upstream}: cannot tell which interface reaches it"),
            format!(
                "make sure packets with {} as source cannot arrive on {phones}",
                upstream.ip()
            ),
        ),
        // Its other warnings are the rp_filter and accept_local checks.
        Ok(_) => Check::ok(
            "upstream",
            format!("{upstream} is {through}, not the phones' side ({phones})"),
        ),
    };
    (check, pbx)
}

/// An OPTIONS to the PBX, as the edge's qualify sends it: answered
/// (any final response) within [`PING_WAIT`], or a warning.
pub fn ping(upstream: SocketAddr) -> Check {
    let fix = format!(
        "start the PBX, or check --upstream {upstream}: it must answer SIP OPTIONS over UDP \
         from this host (its ACLs, a firewall)"
    );
    let answer = || -> std::io::Result<Option<(u16, Duration)>> {
        let any: IpAddr = match upstream {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let sock = UdpSocket::bind(SocketAddr::new(any, 0))?;
        sock.connect(upstream)?;
        let local = sock.local_addr()?;
        let call_id = format!("skaq-{:x}-1@", std::process::id());
        let sent = Instant::now();
        sock.send(&qualify_request(local, upstream, 1))?;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = PING_WAIT.saturating_sub(sent.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            sock.set_read_timeout(Some(left))?;
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            let Ok(msg) = parse_message(&buf[..n], Framing::Datagram, &Limits::default()) else {
                continue;
            };
            if let Some(code) = msg.status_code().filter(|&c| c >= 200) {
                if msg.call_id().is_some_and(|c| c.starts_with(&call_id)) {
                    return Ok(Some((code, sent.elapsed())));
                }
            }
        }
    };
    match answer() {
        Ok(Some((code, rtt))) => Check::ok(
            "pbx",
            format!(
                "{upstream} answered OPTIONS with {code} in {} ms",
                rtt.as_millis()
            ),
        ),
        Ok(None) => Check::warn(
            "pbx",
            format!(
                "{upstream} did not answer OPTIONS within {} s (the edge marks it down, and \
                 answers 503 for it)",
                PING_WAIT.as_secs()
            ),
            fix,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Check::warn(
            "pbx",
            format!("{upstream}: nothing listens there (ICMP port unreachable)"),
            fix,
        ),
        Err(e) => Check::warn("pbx", format!("{upstream}: {e}"), fix),
    }
}

/// Connects to the store (`--state-store`) and PINGs it.
pub fn redis(url: &str) -> Check {
    let fix = format!(
        "start Redis, or correct --state-store {url}: without it the pair shares no dialogs, \
         and the other edge cannot carry this one's calls"
    );
    if let Err(e) = store::StoreConfig::new(url, &store::default_node_id()) {
        return Check::fail("redis", format!("{e:#}"), fix);
    }
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return Check::fail("redis", format!("--state-store {url}: {e}"), fix),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Check::warn("redis", format!("cannot start a runtime: {e}"), fix),
    };
    let started = Instant::now();
    let pinged: Result<String, String> = rt.block_on(async {
        let wait = store::sync::CONNECT_TIMEOUT + PING_WAIT;
        match tokio::time::timeout(wait, async {
            let mut conn = store::sync::connect(&client)
                .await
                .map_err(|e| format!("{e}"))?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(pong)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", wait.as_secs())),
        }
    });
    match pinged {
        Ok(pong) => Check::ok(
            "redis",
            format!(
                "{url} answered PING ({pong}) in {} ms",
                started.elapsed().as_millis()
            ),
        ),
        Err(e) => Check::fail("redis", format!("{url} unreachable: {e}"), fix),
    }
}
