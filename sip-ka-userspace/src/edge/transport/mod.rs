//! Where messages come from and go to: UDP sockets on `--listen`, the
//! TCP/TLS connections that UAs open to the edge ([`stream`]), and the
//! WebSocket connections of browser phones ([`ws`], RFC 7118).
//!
//! A [`Flow`] names one of them. Responses and requests for a UA that
//! reached the edge over a connection must leave by that connection (RFC
//! 3261 18.2.2, RFC 5626 5.3): the UA may sit behind a NAT or a firewall
//! that lets nothing else in. The edge puts a [`FlowToken`] where the
//! message will bring it back: a parameter of its own Via (responses), the
//! user part of its Record-Route (in-dialog requests) and of its Path
//! (requests to a registered UA).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use tokio::{net::UdpSocket, sync::mpsc};

use crate::util::lock::lock;

mod admit;
pub use admit::{admit, near_limit, same_source, Admission};
pub mod retransmit;
pub mod stream;
pub mod tls;
pub mod udp;
pub mod ws;

/// Stream transports toward UAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Tcp,
    Tls,
    /// SIP over WebSocket (RFC 7118), one message per frame.
    Ws,
    /// SIP over secure WebSocket.
    Wss,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] = [
        StreamKind::Tcp,
        StreamKind::Tls,
        StreamKind::Ws,
        StreamKind::Wss,
    ];

    /// The Via transport token.
    pub fn via_transport(self) -> &'static str {
        match self {
            StreamKind::Tcp => "TCP",
            StreamKind::Tls => "TLS",
            StreamKind::Ws => "WS",
            StreamKind::Wss => "WSS",
        }
    }

    /// The `transport=` URI parameter value (also the metrics' label and
    /// the log's prefix).
    pub fn uri_transport(self) -> &'static str {
        match self {
            StreamKind::Tcp => "tcp",
            StreamKind::Tls => "tls",
            StreamKind::Ws => "ws",
            StreamKind::Wss => "wss",
        }
    }

    /// From a `transport=` URI parameter value (any case).
    pub fn from_uri_transport(t: &str) -> Option<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .find(|k| k.uri_transport().eq_ignore_ascii_case(t))
    }

    /// The letter of a flow token.
    fn token_letter(self) -> char {
        match self {
            StreamKind::Tcp => 't',
            StreamKind::Tls => 's',
            StreamKind::Ws => 'w',
            StreamKind::Wss => 'x',
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One way in or out of the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// UDP to or from this address, through the socket bound to the
    /// `--listen` address the message concerns.
    Udp(SocketAddr),
    /// A connection a UA opened: `id` is the edge's number for it, `peer`
    /// the UA's address as the connection sees it.
    Stream {
        id: u64,
        peer: SocketAddr,
        kind: StreamKind,
    },
}

/// For log lines: `udp:ADDR`, or `tcp:ADDR#ID` (`tls`, `ws`, `wss`) with
/// the connection's number.
impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flow::Udp(a) => write!(f, "udp:{a}"),
            Flow::Stream { id, peer, kind } => {
                write!(f, "{}:{peer}#{id}", kind.uri_transport())
            }
        }
    }
}

impl Flow {
    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        match *self {
            Flow::Udp(a) => a,
            Flow::Stream { peer, .. } => peer,
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Flow::Stream { .. })
    }

    /// The Via transport a message leaving by this flow carries.
    pub fn via_transport(&self) -> &'static str {
        match self {
            Flow::Udp(_) => "UDP",
            Flow::Stream { kind, .. } => kind.via_transport(),
        }
    }
}

/// Encodes a [`Flow`] into a token that only an edge holding the key can
/// have made (HMAC-SHA256 over the flow, truncated to 64 bits), so a token
/// forged or altered in a Route, Via or Path is refused rather than used
/// to reach another UA. The key is kept in the state directory, so tokens
/// a registrar stored in Path still decode after a restart.
#[derive(Clone)]
pub struct FlowToken {
    key: ring::hmac::Key,
}

/// Bytes of a flow-token key.
pub const KEY_LEN: usize = 32;

impl Default for FlowToken {
    /// A fresh random key (tokens die with the process). Only what
    /// [`crate::edge::Edge::new`] starts with: the daemon's edge gets its
    /// key from [`crate::edge::Edge::with_options`], which refuses to
    /// start when the random source fails, so the all-zero stand-in used
    /// then never signs a token on the wire.
    fn default() -> Self {
        FlowToken::with_key(&FlowToken::random_key().unwrap_or([0; KEY_LEN]))
    }
}

fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl FlowToken {
    pub fn with_key(key: &[u8]) -> FlowToken {
        FlowToken {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        }
    }

    /// A key from the system's random source. There is no fallback: a
    /// key anyone could guess would let them forge tokens naming other
    /// UAs' connections, so the edge refuses to start instead.
    pub fn random_key() -> std::io::Result<[u8; KEY_LEN]> {
        use ring::rand::SecureRandom as _;
        let rng = ring::rand::SystemRandom::new();
        Self::key_from(|k| rng.fill(k).map_err(|_| ()))
    }

    fn key_from(fill: impl FnOnce(&mut [u8]) -> Result<(), ()>) -> std::io::Result<[u8; KEY_LEN]> {
        let mut key = [0u8; KEY_LEN];
        fill(&mut key).map_err(|()| {
            std::io::Error::other(
                "the system's random source (getrandom) failed: no flow-token key, not starting",
            )
        })?;
        Ok(key)
    }

    /// The key in `dir/flow-key`, made (mode 0600) when absent or unusable.
    pub fn load_or_create(dir: &std::path::Path) -> std::io::Result<FlowToken> {
        if let Some(key) = FlowToken::load_key(dir)? {
            return Ok(FlowToken::with_key(&key));
        }
        let key = FlowToken::random_key()?;
        FlowToken::save_key(dir, &key)?;
        Ok(FlowToken::with_key(&key))
    }

    /// The key in `dir/flow-key`; `None` when absent or not a key.
    pub fn load_key(dir: &std::path::Path) -> std::io::Result<Option<[u8; KEY_LEN]>> {
        let path = dir.join("flow-key");
        match std::fs::read(&path) {
            Ok(key) => match <[u8; KEY_LEN]>::try_from(key.as_slice()) {
                Ok(k) => Ok(Some(k)),
                Err(_) => {
                    log::warn!(
                        "{}: not a {KEY_LEN}-byte key, making a new one",
                        path.display()
                    );
                    Ok(None)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // Unreadable is not absent: a new key would void every token
            // the PBX holds.
            Err(e) => Err(e),
        }
    }

    /// Writes `key` to `dir/flow-key` (mode 0600, replaced atomically).
    pub fn save_key(dir: &std::path::Path, key: &[u8; KEY_LEN]) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join("flow-key");
        let tmp = dir.join("flow-key.tmp");
        // Left by a crash, or planted: never written through. Removing a
        // symbolic link removes the link, not what it points at.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(key)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    fn mac(&self, body: &[u8]) -> u64 {
        let tag = ring::hmac::sign(&self.key, body);
        let mut first = [0u8; 8];
        first.copy_from_slice(tag.as_ref().get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(first)
    }

    /// A keyed 64-bit hash of `parts` for another use of the same key (our
    /// Via branches). The domain byte string keeps its values apart from
    /// token MACs (a token body never holds a NUL); each part is length
    /// prefixed so that moving bytes between parts changes the hash.
    pub fn keyed_hash(&self, domain: &[u8], parts: &[&[u8]]) -> u64 {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(domain);
        ctx.update(&[0]);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut first = [0u8; 8];
        first.copy_from_slice(tag.as_ref().get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(first)
    }

    /// The token: kind letter, fields in hex, and the keyed hash. Only
    /// characters allowed unescaped in a URI user part and a Via param.
    pub fn encode(&self, flow: &Flow) -> String {
        let (letter, id, peer) = match *flow {
            Flow::Udp(a) => ('u', 0, a),
            Flow::Stream { id, peer, kind } => (kind.token_letter(), id, peer),
        };
        let body = format!(
            "{letter}{id:x}-{}-{:x}",
            hex(&ip_bytes(peer.ip())),
            peer.port()
        );
        let mac = self.mac(body.as_bytes());
        format!("{body}-{mac:016x}")
    }

    /// The flow a token names, if this edge made it.
    pub fn decode(&self, token: &str) -> Option<Flow> {
        let (body, mac) = token.rsplit_once('-')?;
        if mac.len() != 16 || u64::from_str_radix(mac, 16).ok()? != self.mac(body.as_bytes()) {
            return None;
        }
        let mut parts = body.splitn(3, '-');
        let head = parts.next()?;
        let ip = unhex16(parts.next()?)?;
        let port = u16::from_str_radix(parts.next()?, 16).ok()?;
        let letter = head.chars().next()?;
        let id = u64::from_str_radix(head.get(1..)?, 16).ok()?;
        let v6 = std::net::Ipv6Addr::from(ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        let peer = SocketAddr::new(ip, port);
        if letter == 'u' {
            return Some(Flow::Udp(peer));
        }
        let kind = StreamKind::ALL
            .into_iter()
            .find(|k| k.token_letter() == letter)?;
        Some(Flow::Stream { id, peer, kind })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A live connection as the rest of the edge sees it.
pub struct Conn {
    /// Messages to write on the connection (its task writes them).
    pub tx: mpsc::Sender<Vec<u8>>,
    pub peer: SocketAddr,
    /// The `--listen` address it was accepted on.
    pub local: SocketAddr,
    /// Milliseconds without traffic after which the connection is closed
    /// (its task reads it before each wait; ms-keep-alive changes it).
    pub idle_ms: Arc<AtomicU64>,
}

/// The edge's ways out: UDP sockets by listen address, connections by id.
#[derive(Default)]
pub struct Transports {
    udp: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    pub tokens: FlowToken,
    /// Connections being served, by [`StreamKind::index`] (the others
    /// wait for their first byte or handshake): the metrics' connection
    /// gauges.
    open: [AtomicU64; 4],
}

/// Open connections, by how they are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenConns {
    pub all: u64,
    pub tcp: u64,
    pub tls: u64,
    pub ws: u64,
    pub wss: u64,
}

impl OpenConns {
    /// Accepted, not yet served: in their TLS or WebSocket handshake, or
    /// waiting for their first byte.
    pub fn handshaking(&self) -> u64 {
        self.all
            .saturating_sub(self.tcp + self.tls + self.ws + self.wss)
    }
}

/// Counts a connection as served over its transport while it lives.
pub struct Serving<'a>(&'a AtomicU64);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a message could not be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is gone (RFC 5626: 430 Flow Failed).
    FlowGone,
    /// The socket or the connection's queue is full; the message is lost
    /// (UDP semantics; a stream that cannot keep up is closed by its task).
    Full,
    /// No UDP socket on that listen address.
    NoSocket,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::FlowGone => "connection gone",
            SendError::Full => "queue full, message lost",
            SendError::NoSocket => "no socket on that listen address",
        })
    }
}

impl Transports {
    pub fn add_udp(&self, sock: Arc<UdpSocket>, local: SocketAddr) {
        lock(&self.udp).insert(local, sock);
    }

    pub fn udp(&self, local: SocketAddr) -> Option<Arc<UdpSocket>> {
        lock(&self.udp).get(&local).cloned()
    }

    /// A live connection from `peer` (to be used as `kind`): how a UA on
    /// TCP/TLS is reached when no flow token names its connection.
    pub fn find_conn(&self, peer: SocketAddr, kind: StreamKind) -> Option<Flow> {
        lock(&self.conns)
            .iter()
            .find(|(_, c)| c.peer == peer)
            .map(|(id, _)| Flow::Stream {
                id: *id,
                peer,
                kind,
            })
    }

    /// Where connection ids start (they only grow).
    pub fn first_id(&self, id: u64) {
        self.next_id.store(id, Ordering::Relaxed);
    }

    /// Registers a new connection; returns its id.
    pub fn add_conn(&self, conn: Conn) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.conns).insert(id, conn);
        id
    }

    /// Closes every connection whose peer is inside `prefix` (its source
    /// was banned): dropping its queue ends its task. How many.
    pub fn close_within(&self, prefix: &crate::shield::Prefix) -> usize {
        let mut conns = lock(&self.conns);
        let before = conns.len();
        conns.retain(|_, c| !prefix.contains(c.peer.ip()));
        before - conns.len()
    }

    pub fn remove_conn(&self, id: u64) {
        lock(&self.conns).remove(&id);
    }

    /// Marks a connection as served over `kind` until the guard drops.
    pub fn serving(&self, kind: StreamKind) -> Serving<'_> {
        let n = &self.open[kind.index()];
        n.fetch_add(1, Ordering::Relaxed);
        Serving(n)
    }

    /// Open connections: all of them, and those served over each kind
    /// (the rest are still in their handshake).
    pub fn open_counts(&self) -> OpenConns {
        let all = lock(&self.conns).len() as u64;
        let by = |k: StreamKind| self.open[k.index()].load(Ordering::Relaxed);
        OpenConns {
            all,
            tcp: by(StreamKind::Tcp),
            tls: by(StreamKind::Tls),
            ws: by(StreamKind::Ws),
            wss: by(StreamKind::Wss),
        }
    }

    /// Whether a new connection from `ip` gets a slot (see [`admit`]);
    /// a connection evicted to make room is closed here.
    pub fn admit(&self, ip: IpAddr, max_conns: usize, per_ip_cap: usize) -> Admission {
        let mut conns = lock(&self.conns);
        let open: Vec<(u64, IpAddr)> = if conns.len() >= near_limit(max_conns) || per_ip_cap > 0 {
            conns.iter().map(|(id, c)| (*id, c.peer.ip())).collect()
        } else {
            Vec::new()
        };
        let a = admit(&open, conns.len(), ip, max_conns, per_ip_cap);
        if let Admission::Evict(id) = a {
            conns.remove(&id);
        }
        a
    }

    /// Connections open now, and those from `ip`'s source (see
    /// [`same_source`]).
    pub fn conn_counts(&self, ip: IpAddr) -> (usize, usize) {
        let conns = lock(&self.conns);
        let from = conns
            .values()
            .filter(|c| same_source(c.peer.ip(), ip))
            .count();
        (conns.len(), from)
    }

    /// A negotiated ms-keep-alive: the connection lives while traffic
    /// comes within `timeout` seconds, plus a grace period of a tenth of
    /// it (at least 2 s) for a keep-alive in flight.
    pub fn keep_alive(&self, flow: &Flow, timeout: u32) {
        if let Flow::Stream { id, .. } = flow {
            if let Some(c) = lock(&self.conns).get(id) {
                let ms = u64::from(timeout) * 1_000;
                c.idle_ms
                    .store(ms + (ms / 10).max(2_000), Ordering::Relaxed);
            }
        }
    }

    /// Whether `flow` can still be used: a UDP flow always can, a
    /// connection while it is open (and still to the same peer).
    pub fn alive(&self, flow: &Flow) -> bool {
        match flow {
            Flow::Udp(_) => true,
            Flow::Stream { id, peer, .. } => {
                lock(&self.conns).get(id).is_some_and(|c| c.peer == *peer)
            }
        }
    }

    /// Sends `bytes` by `flow`; UDP leaves from the socket bound to
    /// `local`. Never waits: a full queue loses the message.
    pub fn send(&self, bytes: Vec<u8>, flow: &Flow, local: SocketAddr) -> Result<(), SendError> {
        match *flow {
            Flow::Udp(dest) => {
                let sock = self
                    .udp(local)
                    .or_else(|| lock(&self.udp).values().next().cloned())
                    .ok_or(SendError::NoSocket)?;
                match sock.try_send_to(&bytes, dest) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(SendError::Full),
                    Err(e) => {
                        // ICMP-driven errors (unreachable) are not ours to fix.
                        log::debug!("send to udp/{dest}: {e}");
                        Ok(())
                    }
                }
            }
            Flow::Stream { id, peer, .. } => {
                let conns = lock(&self.conns);
                let conn = conns
                    .get(&id)
                    .filter(|c| c.peer == peer)
                    .ok_or(SendError::FlowGone)?;
                conn.tx.try_send(bytes).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => SendError::Full,
                    mpsc::error::TrySendError::Closed(_) => SendError::FlowGone,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let t = FlowToken::with_key(&[7; KEY_LEN]);
        let flows = [
            Flow::Udp("198.18.0.2:5062".parse().unwrap()),
            Flow::Stream {
                id: 42,
                peer: "[fd00:5a:0:1::2]:40000".parse().unwrap(),
                kind: StreamKind::Tcp,
            },
            Flow::Stream {
                id: u64::MAX,
                peer: "10.0.0.1:1".parse().unwrap(),
                kind: StreamKind::Tls,
            },
            Flow::Stream {
                id: 7,
                peer: "10.0.0.1:443".parse().unwrap(),
                kind: StreamKind::Ws,
            },
            Flow::Stream {
                id: 8,
                peer: "[2001:db8::1]:443".parse().unwrap(),
                kind: StreamKind::Wss,
            },
        ];
        for f in flows {
            let tok = t.encode(&f);
            assert!(
                tok.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{tok}"
            );
            assert_eq!(t.decode(&tok), Some(f));
            // Another process (key) does not accept it.
            assert_eq!(FlowToken::with_key(&[8; KEY_LEN]).decode(&tok), None);
            // Any changed character is refused.
            for i in 0..tok.len() {
                let mut b = tok.clone().into_bytes();
                b[i] = if b[i] == b'1' { b'2' } else { b'1' };
                let s = String::from_utf8(b).unwrap();
                if s != tok {
                    assert_eq!(t.decode(&s), None, "{s}");
                }
            }
        }
        for junk in ["", "-", "t1--", "x", "t1-00-1-0000000000000000"] {
            assert_eq!(t.decode(junk), None, "{junk}");
        }
    }

    #[test]
    fn no_random_source_means_no_key() {
        assert!(FlowToken::key_from(|_| Err(())).is_err());
        assert_eq!(
            FlowToken::key_from(|k| {
                k.fill(3);
                Ok(())
            })
            .unwrap(),
            [3; KEY_LEN]
        );
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sip-ka-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_key_file_is_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = scratch("flowkey");
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("flow-key.tmp")).unwrap();
        // A permissive umask must not widen the key's mode.
        let old = unsafe { libc::umask(0) };
        let made = FlowToken::load_or_create(&dir);
        unsafe { libc::umask(old) };
        made.unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let key = std::fs::metadata(dir.join("flow-key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        assert_eq!(key.len(), KEY_LEN as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
