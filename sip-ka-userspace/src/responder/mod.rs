//! The userspace UDP keep-alive responder: answers CRLF pings and STUN
//! Binding requests that reach a socket, i.e. what XDP passed, or
//! everything when XDP is off. It is the fallback where XDP cannot attach
//! and the baseline the benchmark compares XDP against.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
};

pub mod stun;

use sip_ka_common::{Action, Config, Counter};
use tokio::net::UdpSocket;

use crate::{bpf::stats::user::UserCounters, responder::stun::Reply};

/// What all responder sockets share.
pub struct Shared {
    pub counters: UserCounters,
    /// The configuration in force, refreshed from the CONFIG map.
    pub config: RwLock<Config>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        Arc::new(Shared {
            counters: UserCounters::default(),
            config: RwLock::new(config),
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

/// What to send back for one datagram, if anything.
pub fn answer(shared: &Shared, msg: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let c = &shared.counters;
    if msg == b"\r\n\r\n" {
        c.bump(Counter::UserCrlfPing);
        if Action::from_u32(shared.config().udp_crlf) == Action::Drop || !answerable(&src) {
            return None;
        }
        c.bump(Counter::UserCrlfPongSent);
        return Some(b"\r\n".to_vec());
    }
    if msg.first().is_some_and(|b| b & 0xC0 == 0) && msg.len() >= 20 {
        c.bump(Counter::UserStunReq);
        if !answerable(&src) {
            return None;
        }
        return match stun::respond(msg, src) {
            Reply::Success(bytes) => {
                c.bump(Counter::UserStunResp);
                Some(bytes)
            }
            Reply::Error(bytes, code) => {
                log::debug!("STUN {code} to {src}");
                c.bump(Counter::UserStunError);
                Some(bytes)
            }
            Reply::BadFingerprint => {
                c.bump(Counter::UserStunBadFp);
                None
            }
            Reply::Ignore => {
                c.bump(Counter::UserIgnored);
                None
            }
        };
    }
    c.bump(Counter::UserIgnored);
    None
}

/// Serves one socket until the task is dropped.
pub async fn serve(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep going.
                log::debug!("recv on {:?}: {e}", sock.local_addr().ok());
                continue;
            }
        };
        if let Some(reply) = answer(&shared, &buf[..n], src) {
            if let Err(e) = sock.send_to(&reply, src).await {
                log::debug!("send to {src}: {e}");
            }
        }
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
