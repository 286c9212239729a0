//! Upstream health: an OPTIONS to the PBX every `--qualify-frequency`
//! seconds (seed 000 device keep-alive); up with the round-trip time on
//! an answer, down after [`MISSES_FOR_DOWN`] unanswered ones in a row.

use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

use crate::logs::millis;
use crate::sip::{parse_message, Framing, Limits, Method, NameAddr, RequestBuilder, Uri, Via};
use crate::util::lock::lock;

/// Unanswered qualify requests in a row that make the PBX down.
pub const MISSES_FOR_DOWN: u32 = 2;
/// Longest wait for one answer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// `None` until the first answer or the first down verdict.
    pub up: Option<bool>,
    pub rtt: Option<Duration>,
    pub misses: u32,
}

/// The PBX's health as the qualify task last saw it.
#[derive(Debug, Default)]
pub struct Health {
    status: Mutex<Status>,
}

impl Health {
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// Up only once an answer came (unknown counts as down).
    pub fn is_up(&self) -> bool {
        self.status().up == Some(true)
    }

    fn update(&self, f: impl FnOnce(&mut Status)) -> Status {
        let mut g = lock(&self.status);
        f(&mut g);
        *g
    }

    /// Records an answer after `rtt`.
    pub fn answered(&self, upstream: SocketAddr, rtt: Duration) {
        let before = self.status();
        self.update(|s| {
            s.up = Some(true);
            s.rtt = Some(rtt);
            s.misses = 0;
        });
        if before.up != Some(true) {
            log::info!("upstream {upstream} up, rtt={}", millis(Some(rtt)));
        } else {
            log::debug!("upstream {upstream} answered, rtt={}", millis(Some(rtt)));
        }
    }

    /// Records a request that got no answer in time.
    pub fn missed(&self, upstream: SocketAddr) {
        let s = self.update(|s| {
            s.misses = s.misses.saturating_add(1);
        });
        if s.misses >= MISSES_FOR_DOWN && s.up != Some(false) {
            self.update(|s| {
                s.up = Some(false);
                s.rtt = None;
            });
            log::warn!(
                "upstream {upstream} down: {} OPTIONS in a row unanswered",
                s.misses
            );
        }
    }
}

/// The qualify OPTIONS number `seq` from `local` to `upstream`.
pub fn qualify_request(local: SocketAddr, upstream: SocketAddr, seq: u32) -> Vec<u8> {
    let pid = std::process::id();
    let lh = super::forward::uri_host(local.ip());
    let uh = super::forward::uri_host(upstream.ip());
    let pbx = Uri::sip(None, &uh, Some(upstream.port()));
    let me = Uri::sip(Some("sip-ka"), &lh, Some(local.port()));
    let branch = format!("z9hG4bKskaq{pid:x}x{seq:x}");
    RequestBuilder::new(Method::Options, pbx.clone())
        .via(Via::new("UDP", &lh, Some(local.port()), &branch).with_rport())
        .max_forwards(70)
        .from_addr(NameAddr::new(me), Some(&format!("skaq{pid:x}")))
        .to_addr(NameAddr::new(pbx), None)
        .call_id(format!("skaq-{pid:x}-{seq:x}@{lh}"))
        .cseq(seq)
        .header("User-Agent", "sip-ka")
        .build()
        .to_bytes()
}

/// Timeout for one qualify request: the frequency, at most [`MAX_TIMEOUT`].
pub fn timeout_for(frequency: Duration) -> Duration {
    frequency.clamp(Duration::from_millis(100), MAX_TIMEOUT)
}

/// Pings the PBX forever from its own socket (connected to the PBX, so
/// an ICMP port unreachable ends the wait at once).
/// `frequency` is read before each ping: a live change takes effect at the
/// next one.
pub async fn qualify(
    sock: UdpSocket,
    upstream: SocketAddr,
    frequency: impl Fn() -> Duration,
    health: &Health,
) {
    if let Err(e) = sock.connect(upstream).await {
        log::warn!("qualify: connecting to {upstream}: {e}");
    }
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => {
            log::warn!("qualify socket: {e}");
            return;
        }
    };
    let mut every = frequency();
    let mut timeout = timeout_for(every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65_536];
    let mut seq: u32 = 0;
    loop {
        tick.tick().await;
        if frequency() != every {
            every = frequency();
            timeout = timeout_for(every);
            tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        seq = seq.wrapping_add(1);
        let call_id = format!("skaq-{:x}-{seq:x}@", std::process::id());
        let sent = Instant::now();
        if let Err(e) = sock.send(&qualify_request(local, upstream, seq)).await {
            log::debug!("qualify: send to {upstream}: {e}");
        }
        let deadline = sent + timeout;
        let answered = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sock.recv(&mut buf)).await {
                Err(_) => break false,
                Ok(Err(e)) => {
                    log::debug!("qualify: {upstream}: {e}");
                    // Port unreachable: no answer this round; wait out the
                    // timeout so the next request keeps the frequency.
                    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
                    break false;
                }
                Ok(Ok(n)) => {
                    let ok = buf
                        .get(..n)
                        .and_then(|b| parse_message(b, Framing::Datagram, &Limits::default()).ok());
                    if ok.is_some_and(|m| {
                        m.status_code().is_some_and(|c| c >= 200)
                            && m.call_id().is_some_and(|c| c.starts_with(&call_id))
                    }) {
                        break true;
                    }
                }
            }
        };
        if answered {
            health.answered(upstream, sent.elapsed());
        } else {
            health.missed(upstream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_misses_make_it_down_one_answer_up() {
        let h = Health::default();
        let pbx = "198.18.0.1:5080".parse().unwrap();
        assert!(!h.is_up());
        h.answered(pbx, Duration::from_millis(1));
        assert!(h.is_up());
        h.missed(pbx);
        assert!(h.is_up());
        h.missed(pbx);
        assert!(!h.is_up());
        assert_eq!(h.status().up, Some(false));
        h.answered(pbx, Duration::from_millis(2));
        assert_eq!(h.status().rtt, Some(Duration::from_millis(2)));
    }

    #[test]
    fn qualify_request_parses() {
        let m = parse_message(
            &qualify_request(
                "198.18.0.1:5060".parse().unwrap(),
                "198.18.0.1:5080".parse().unwrap(),
                3,
            ),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(m.cseq().unwrap().seq, 3);
        assert!(m.top_via().unwrap().has_rfc3261_branch());
    }

    #[test]
    fn qualify_request_wire_form() {
        let pid = std::process::id();
        let expected = format!(
            "OPTIONS sip:[2001:db8::9]:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.18.0.1:40000;branch=z9hG4bKskaq{pid:x}x1f;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:sip-ka@198.18.0.1:40000>;tag=skaq{pid:x}\r\n\
             To: <sip:[2001:db8::9]:5080>\r\n\
             Call-ID: skaq-{pid:x}-1f@198.18.0.1\r\n\
             CSeq: 31 OPTIONS\r\n\
             User-Agent: sip-ka\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let got = qualify_request(
            "198.18.0.1:40000".parse().unwrap(),
            "[2001:db8::9]:5080".parse().unwrap(),
            31,
        );
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }
}
