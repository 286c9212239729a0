//! What the edge is told: listen addresses, the PBX, limits, timers.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Result};

use super::session_timer::TimerConfig;
use crate::sip::Limits;

/// What `sip-ka run --mode edge` was told.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// UDP addresses the edge listens on (specific IPs: they go into Via
    /// and Record-Route).
    pub listen: Vec<SocketAddr>,
    /// The PBX.
    pub upstream: SocketAddr,
    /// Seconds between OPTIONS pings to the PBX.
    pub qualify_frequency: Duration,
    pub limits: Limits,
    /// RFC 4028 settings (Min-SE floor, Session-Expires to insert).
    pub timers: TimerConfig,
    /// Send BYE to both sides when a session expires.
    pub reap_expired: bool,
    /// Connection limits, keep-alive timers.
    pub streams: StreamConfig,
    /// What happens to OPTIONS outside a dialog meant for the PBX.
    pub options_pbx: OptionsPolicy,
    /// Certificate chain and key (PEM): TLS on the TCP ports.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// Caps on what unauthenticated requests can make the edge keep.
    pub state: StateLimits,
    /// Evidence thresholds, never-ban prefixes, blocklists.
    pub shield: crate::shield::Settings,
    /// SIP over WebSocket: listeners, Origins, Pings.
    pub ws: WsConfig,
}

/// SIP over WebSocket (RFC 7118), for browser phones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// Plain WebSocket listeners (`ws://`).
    pub listen: Vec<SocketAddr>,
    /// Secure WebSocket listeners (`wss://`, with the TLS certificate).
    pub listen_secure: Vec<SocketAddr>,
    /// Origins a browser's upgrade may come from (`https://phone.example.com`);
    /// empty: any. A request without Origin (not from a browser) passes:
    /// the check is against a page of another site driving a browser's
    /// session, which always sends its Origin.
    pub origins: Vec<String>,
    /// An idle connection gets a Ping after this long; zero: never.
    pub ping_interval: Duration,
}

impl Default for WsConfig {
    /// 25 s: under the 30 to 60 s after which load balancers and NATs
    /// drop an idle connection.
    fn default() -> Self {
        WsConfig {
            listen: Vec::new(),
            listen_secure: Vec::new(),
            origins: Vec::new(),
            ping_interval: Duration::from_secs(25),
        }
    }
}

/// Caps on the tables any sender can grow: INVITEs the PBX has not
/// answered yet and REGISTERs waiting for the registrar. Past a cap the
/// oldest entry goes (and is counted); the request itself is still
/// forwarded, so a flood costs the victims only the edge's bookkeeping of
/// the oldest calls, never memory without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Unanswered dialogs (INVITE sent, no To tag back yet).
    pub pending_dialogs: usize,
    /// Their bytes (Call-ID, From, Contact and bookkeeping).
    pub pending_dialog_bytes: usize,
    /// REGISTERs waiting for their final response.
    pub pending_registers: usize,
    /// Their bytes (branch, Contacts and bookkeeping).
    pub pending_register_bytes: usize,
}

impl Default for StateLimits {
    /// A large PBX sets up a few hundred calls per second, each pending
    /// for seconds: 100,000 unanswered INVITEs is minutes of that at the
    /// worst, and 64 MiB lets every one of them carry a 640-byte From. A
    /// REGISTER waits a round trip to the registrar: 65,536 pending (the
    /// earlier fixed cap) and 32 MiB are far above what a million phones
    /// re-registering every hour need.
    fn default() -> Self {
        StateLimits {
            pending_dialogs: 100_000,
            pending_dialog_bytes: 64 << 20,
            pending_registers: 65_536,
            pending_register_bytes: 32 << 20,
        }
    }
}

/// OPTIONS outside a dialog, addressed to the PBX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptionsPolicy {
    /// The edge answers for the PBX: 200 while it is up, 503 while down.
    #[default]
    Answer,
    /// Forwarded to the PBX like any request.
    Forward,
}

impl std::str::FromStr for OptionsPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "answer" => Ok(OptionsPolicy::Answer),
            "forward" => Ok(OptionsPolicy::Forward),
            _ => Err(format!("{s:?}: expected answer or forward")),
        }
    }
}

/// TCP/TLS connections from UAs.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_conns: usize,
    /// Most connections open at once from one source (IPv4 address, IPv6
    /// /64); 0 = no fixed cap, a fair share near `max_conns` instead
    /// (`transport::admit`).
    pub max_conns_per_ip: usize,
    /// `timeout=` in an ms-keep-alive answer, in seconds.
    pub ms_keepalive_timeout: u32,
    /// Flow-Timer put on a 2xx to an outbound REGISTER over TCP/TLS.
    pub flow_timer_stream: u32,
    /// Flow-Timer for an outbound REGISTER over UDP (NAT bindings are
    /// short-lived).
    pub flow_timer_udp: u32,
    /// Longest a message may take from its first byte to its last; a
    /// connection that is slower is closed (a sender dribbling bytes would
    /// otherwise hold its slot for ever, each byte resetting the idle
    /// time).
    pub message_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            idle_timeout: Duration::from_secs(300),
            max_conns: 10_000,
            max_conns_per_ip: 0,
            ms_keepalive_timeout: 120,
            flow_timer_stream: 120,
            flow_timer_udp: 29,
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// A configuration for unit tests: one listen address, defaults
/// elsewhere (every field is named here once, not in each test).
#[cfg(test)]
pub(crate) fn test_config(listen: SocketAddr, upstream: SocketAddr) -> EdgeConfig {
    EdgeConfig {
        qualify_frequency: Duration::from_secs(1),
        ..EdgeConfig::new(listen, upstream)
    }
}

/// Longest timer a flag may set: far beyond any use, and far from where
/// adding it to the monotonic clock would overflow (and panic a task).
pub const MAX_TIMER: Duration = Duration::from_secs(10 * 365 * 86_400);

impl EdgeConfig {
    /// An edge on `listen` in front of `upstream`, every other setting at
    /// its default (qualify every 60 s, as `--qualify-frequency`).
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> EdgeConfig {
        EdgeConfig {
            listen: vec![listen],
            upstream,
            qualify_frequency: Duration::from_secs(60),
            limits: Limits::default(),
            timers: TimerConfig::default(),
            reap_expired: false,
            streams: StreamConfig::default(),
            options_pbx: OptionsPolicy::default(),
            tls: None,
            state: StateLimits::default(),
            shield: crate::shield::Settings::default(),
            ws: WsConfig::default(),
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.listen.is_empty() {
            bail!("edge mode needs at least one --listen ADDR");
        }
        if let Some(a) = self
            .listen
            .iter()
            .find(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            bail!("--listen {a}: edge mode needs a specific IP and port (they go into Via and Record-Route)");
        }
        for (flag, addrs) in [
            ("--ws-listen", &self.ws.listen),
            ("--wss-listen", &self.ws.listen_secure),
        ] {
            if let Some(a) = addrs
                .iter()
                .find(|a| a.ip().is_unspecified() || a.port() == 0)
            {
                bail!(
                    "{flag} {a}: needs a specific IP and port (they go into Via and Record-Route)"
                );
            }
        }
        if !self.ws.listen_secure.is_empty() && self.tls.is_none() {
            bail!("--wss-listen needs --tls-cert and --tls-key");
        }
        if self.ws.ping_interval > MAX_TIMER {
            bail!(
                "--ws-ping-interval is too long: at most {} s",
                MAX_TIMER.as_secs()
            );
        }
        if self.qualify_frequency.is_zero() {
            bail!("--qualify-frequency must be at least 1 second");
        }
        for (flag, d) in [
            ("--qualify-frequency", self.qualify_frequency),
            ("--tcp-idle-timeout", self.streams.idle_timeout),
            ("--tcp-message-timeout", self.streams.message_timeout),
        ] {
            if d > MAX_TIMER {
                bail!(
                    "{flag} {} s is too long: at most {} s (ten years)",
                    d.as_secs(),
                    MAX_TIMER.as_secs()
                );
            }
        }
        if self.streams.message_timeout.is_zero() {
            bail!("--tcp-message-timeout must be at least 1 second");
        }
        let s = &self.state;
        if s.pending_dialogs == 0
            || s.pending_dialog_bytes == 0
            || s.pending_registers == 0
            || s.pending_register_bytes == 0
        {
            bail!("--max-pending-dialogs, --max-pending-registers and their -bytes must be at least 1");
        }
        if self.limits.max_message_size < 512 || self.limits.max_headers < 8 {
            bail!("--max-message-size must be at least 512 and --max-headers at least 8");
        }
        let st = &self.streams;
        if st.idle_timeout.is_zero() || st.max_conns == 0 {
            bail!("--tcp-idle-timeout and --max-connections must be at least 1");
        }
        if st.idle_timeout.as_secs() <= u64::from(st.flow_timer_stream) {
            bail!(
                "--tcp-idle-timeout ({} s) must be longer than --flow-timer-tcp ({} s): \
                 outbound UAs send a keep-alive only every Flow-Timer seconds",
                st.idle_timeout.as_secs(),
                st.flow_timer_stream
            );
        }
        if st.ms_keepalive_timeout == 0 || st.flow_timer_stream == 0 || st.flow_timer_udp == 0 {
            bail!("--ms-keep-alive-timeout and --flow-timer-* must be at least 1 second");
        }
        Ok(())
    }

    /// Retry-After for a 503 while the PBX is down: the next ping.
    pub fn retry_after(&self) -> u64 {
        self.qualify_frequency.as_secs().max(1)
    }
}

/// The values read per use, so that `sip-ka config set` and SIGHUP
/// change them while the edge runs (a connection keeps the timers and
/// the framing limits it started with).
#[derive(Clone, Copy, Debug)]
pub struct Tunables {
    pub limits: Limits,
    pub streams: StreamConfig,
    pub options_pbx: OptionsPolicy,
    pub qualify_frequency: Duration,
    pub reap_expired: bool,
}

impl Tunables {
    /// Retry-After for a 503 while the PBX is down: the next ping.
    pub fn retry_after(&self) -> u64 {
        self.qualify_frequency.as_secs().max(1)
    }
}

impl EdgeConfig {
    pub fn tunables(&self) -> Tunables {
        Tunables {
            limits: self.limits,
            streams: self.streams,
            options_pbx: self.options_pbx,
            qualify_frequency: self.qualify_frequency,
            reap_expired: self.reap_expired,
        }
    }
}

/// What the edge keeps about dialogs beyond the proxy settings.
#[derive(Clone, Debug, Default)]
pub struct DialogOptions {
    /// Where the dialog table is journaled (`--state-dir`); `None` keeps
    /// it in memory only.
    pub state_dir: Option<PathBuf>,
    /// `--dialog-idle-timeout`: a confirmed dialog with no in-dialog
    /// traffic for this long is ended; `None` never.
    pub idle_timeout: Option<Duration>,
    /// `--state-store` and `--node-id`: dialogs, bindings and the
    /// flow-token key shared with other edges.
    pub store: Option<super::store::StoreConfig>,
    /// The shield the edge feeds evidence to and checks sources against
    /// (`None`: no evidence, no bans).
    pub shield: Option<std::sync::Arc<crate::shield::Shield>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> EdgeConfig {
        test_config(
            "198.18.0.1:5060".parse().unwrap(),
            "198.18.0.1:5080".parse().unwrap(),
        )
    }

    #[test]
    fn timers_past_the_clock_are_refused_at_start() {
        cfg().check().unwrap();
        let huge = Duration::from_secs(u64::MAX);
        let mut c = cfg();
        c.streams.idle_timeout = huge;
        let e = c.check().unwrap_err().to_string();
        assert!(
            e.contains("--tcp-idle-timeout") && e.contains("too long"),
            "{e}"
        );
        let mut c = cfg();
        c.qualify_frequency = huge;
        let e = c.check().unwrap_err().to_string();
        assert!(
            e.contains("--qualify-frequency") && e.contains("too long"),
            "{e}"
        );
        let mut c = cfg();
        c.streams.message_timeout = huge;
        assert!(c.check().is_err());
        // The longest allowed still fits on the clocks the tasks use.
        let mut c = cfg();
        c.streams.idle_timeout = MAX_TIMER;
        c.qualify_frequency = MAX_TIMER;
        c.check().unwrap();
        let _ = std::time::Instant::now() + MAX_TIMER;
        let _ = tokio::time::Instant::now() + MAX_TIMER;
    }

    #[test]
    fn zero_caps_are_refused() {
        let mut c = cfg();
        c.state.pending_dialogs = 0;
        assert!(c.check().is_err());
        let mut c = cfg();
        c.streams.message_timeout = Duration::ZERO;
        assert!(c.check().is_err());
    }
}
