//! SIP over WebSocket (RFC 7118) from browser phones, on `--ws-listen`
//! (`ws://`) and `--wss-listen` (`wss://`, TLS first).
//!
//! The handshake and the framing are tungstenite's. The edge checks the
//! upgrade (the `sip` subprotocol; the Origin against `--ws-origin`),
//! takes one SIP message per text or binary frame, and keeps the
//! connection alive itself:
//! * a CRLFCRLF frame (what SIP.js sends) gets a CRLF frame;
//! * a client's Ping gets its Pong (tungstenite sends it);
//! * after `--ws-ping-interval` of silence the edge sends a Ping, which
//!   browsers answer on their own: JsSIP sends no keep-alive at all, and
//!   load balancers close connections idle for 60 s. Three unanswered
//!   Pings close the connection.
//!
//! The PBX sees none of it: it keeps seeing UDP from the edge.

use std::{
    cell::Cell,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{timeout, Instant},
};
use tokio_tungstenite::{
    tungstenite::{
        self,
        handshake::server::{ErrorResponse, Request, Response},
        http::{self, HeaderValue},
        protocol::WebSocketConfig,
        Message,
    },
    WebSocketStream,
};

use super::{
    stream::{accept_loop, Accepted, Registered, HANDSHAKE_TIMEOUT, WRITE_TIMEOUT},
    Flow, StreamKind,
};
use crate::{
    edge::state::{Counters, Edge},
    sip::{Framing, Limits},
    util::clock,
};

/// The subprotocol of SIP over WebSocket (RFC 7118 4.1).
pub const SUBPROTOCOL: &str = "sip";
/// Pings left unanswered before the connection is closed.
pub const PINGS_UNANSWERED: u32 = 3;
/// The CRLF keep-alive of RFC 5626 in a frame, and its answer.
const CRLF_PING: &[u8] = b"\r\n\r\n";
const CRLF_PONG: &str = "\r\n";
/// What tungstenite reads at a time. It keeps this much per connection
/// for as long as the connection lives (its read buffer never shrinks),
/// so it is small: a larger message takes a few reads, cheap next to the
/// memory of thousands of idle browser phones, and a keep-alive frame
/// fits in one.
const READ_CHUNK: usize = 512;
/// Bytes of a masked control frame around its payload (a client's frames
/// are always masked; a control payload is at most 125 bytes).
const CONTROL_FRAME_OVERHEAD: usize = 6;

/// Accepts WebSocket connections on one listener until the task is
/// dropped; `secure`: TLS first (`wss://`).
pub async fn serve_ws(listener: TcpListener, local: SocketAddr, edge: Arc<Edge>, secure: bool) {
    accept_loop(listener, local, edge, move |sock, conn, edge| {
        accept_ws(sock, conn, edge, secure)
    })
    .await
}

async fn accept_ws(sock: TcpStream, conn: Accepted, edge: Arc<Edge>, secure: bool) {
    let _registered = Registered::new(&edge, conn.id);
    if !secure {
        return upgrade(sock, conn, &edge, StreamKind::Ws).await;
    }
    // The configuration is checked at start: no --wss-listen without a
    // certificate.
    let Some(acceptor) = edge.tls.clone() else {
        return;
    };
    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
        Ok(Ok(tls)) => upgrade(tls, conn, &edge, StreamKind::Wss).await,
        Ok(Err(e)) => {
            Counters::bump(&edge.counters.ws_handshake_failed);
            log::debug!("edge: TLS handshake with {} (wss): {e}", conn.peer);
        }
        Err(_) => {
            Counters::bump(&edge.counters.ws_handshake_failed);
            log::debug!("edge: TLS handshake with {} (wss) timed out", conn.peer);
        }
    }
}

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `sip` among the offered subprotocols: 400.
    NoSipSubprotocol,
    /// An Origin not in the allowlist: 403.
    Origin,
}

/// The edge's verdict on an upgrade request: `Ok` to accept it (the
/// response then names the `sip` subprotocol), or why not.
pub fn check_upgrade(req: &Request, origins: &[String]) -> Result<(), Refusal> {
    let offers_sip = req
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offers_sip {
        return Err(Refusal::NoSipSubprotocol);
    }
    if !origins.is_empty() {
        if let Some(origin) = req.headers().get(http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
            if !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err(Refusal::Origin);
            }
        }
    }
    Ok(())
}

fn refusal_response(r: Refusal) -> ErrorResponse {
    let (status, text) = match r {
        Refusal::NoSipSubprotocol => (
            http::StatusCode::BAD_REQUEST,
            "This endpoint speaks SIP over WebSocket: offer the \"sip\" subprotocol (RFC 7118).\n",
        ),
        Refusal::Origin => (
            http::StatusCode::FORBIDDEN,
            "This Origin may not open a SIP session here.\n",
        ),
    };
    let mut resp = ErrorResponse::new(Some(text.to_string()));
    *resp.status_mut() = status;
    resp
}

/// tungstenite's settings from the edge's message limits.
fn ws_config(limits: &Limits) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = READ_CHUNK;
    // Each message is written when sent: nothing waits in a buffer.
    c.write_buffer_size = 0;
    c.max_write_buffer_size = 4 * limits.max_message_size + READ_CHUNK;
    c.max_message_size = Some(limits.max_message_size);
    c.max_frame_size = Some(limits.max_message_size);
    c
}

/// Runs the HTTP upgrade on a (TLS) connection, then serves it.
async fn upgrade<S>(sock: S, conn: Accepted, edge: &Arc<Edge>, kind: StreamKind)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = conn.peer;
    let refused = std::sync::OnceLock::new();
    let origins = &edge.cfg.ws.origins;
    // The signature is tungstenite's: its error is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| match check_upgrade(req, origins) {
        Ok(()) => {
            resp.headers_mut().insert(
                http::header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(resp)
        }
        Err(r) => {
            let _ = refused.set(r);
            Err(refusal_response(r))
        }
    };
    let config = ws_config(&edge.tun().limits);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(Metered::new(sock), callback, Some(config));
    let c = &edge.counters;
    match timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => {
            Counters::bump(&c.ws_upgrades);
            // What the handshake read is not part of a frame.
            ws.get_ref().framed_all();
            serve(ws, conn, edge, kind).await
        }
        Ok(Err(e)) => {
            match refused.get().copied() {
                Some(Refusal::NoSipSubprotocol) => Counters::bump(&c.ws_refused_protocol),
                Some(Refusal::Origin) => Counters::bump(&c.ws_refused_origin),
                None => Counters::bump(&c.ws_handshake_failed),
            }
            log::debug!("edge: WebSocket upgrade from {peer} refused: {e}");
        }
        Err(_) => {
            Counters::bump(&c.ws_handshake_failed);
            log::debug!("edge: WebSocket upgrade from {peer} timed out");
        }
    }
}

/// A frame that goes out: text when the message is UTF-8 (RFC 7118 5.1:
/// nearly every SIP message), binary otherwise.
fn frame_of(bytes: Vec<u8>) -> Message {
    match String::from_utf8(bytes) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    }
}

/// What came in, for the serving loop.
enum Inbound {
    /// A SIP message, or a CRLF keep-alive, in a data frame.
    Data(Vec<u8>),
    /// A control frame of this many payload bytes (the Pong to a client's
    /// Ping is already queued by tungstenite).
    Control { ping: bool, len: usize },
    /// The client's Close; tungstenite answers it.
    Close,
}

/// Serves an upgraded connection until it closes, fails, idles out or
/// stops answering Pings.
async fn serve<S>(
    mut ws: WebSocketStream<Metered<S>>,
    conn: Accepted,
    edge: &Arc<Edge>,
    kind: StreamKind,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Accepted {
        peer,
        local,
        id,
        mut rx,
        idle_ms,
    } = conn;
    let flow = Flow::Stream { id, peer, kind };
    let local = sip_address(&edge.cfg.listen, local);
    let _serving = edge.transports.serving(kind);
    let c = &edge.counters;
    let ping_every = edge.cfg.ws.ping_interval;
    let msg_limit = edge.tun().streams.message_timeout;
    let idle_for = || Duration::from_millis(idle_ms.load(Ordering::Relaxed));
    let mut last = Instant::now();
    let mut unanswered = 0u32;
    // One timer for silence (a Ping due, or the idle limit), moved on
    // only when it fires early.
    let next_wake = |last: Instant, unanswered: u32| {
        let idle = last + idle_for();
        if ping_every.is_zero() {
            idle
        } else {
            idle.min(last + ping_every * (unanswered + 1))
        }
    };
    let wake = tokio::time::sleep_until(next_wake(last, 0));
    tokio::pin!(wake);
    let msg_due = tokio::time::sleep_until(last + msg_limit);
    tokio::pin!(msg_due);
    let mut msg_armed = false;
    loop {
        let mut out: Option<Message> = None;
        tokio::select! {
            read = ws.next() => {
                let inbound = match read {
                    None => break,
                    Some(Ok(Message::Text(t))) => Inbound::Data(Vec::from(t.as_bytes())),
                    Some(Ok(Message::Binary(b))) => Inbound::Data(Vec::from(b)),
                    Some(Ok(Message::Ping(p))) => Inbound::Control { ping: true, len: p.len() },
                    Some(Ok(Message::Pong(p))) => Inbound::Control { ping: false, len: p.len() },
                    Some(Ok(Message::Close(_))) => Inbound::Close,
                    Some(Ok(Message::Frame(_))) => continue,
                    Some(Err(e)) => {
                        if !matches!(
                            e,
                            tungstenite::Error::ConnectionClosed
                                | tungstenite::Error::AlreadyClosed
                                | tungstenite::Error::Io(_)
                                // A tab closed, a phone gone off the
                                // network: not a framing fault.
                                | tungstenite::Error::Protocol(
                                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
                                )
                        ) {
                            // Oversized, unmasked, malformed: framing lost.
                            Counters::bump(&c.stream_errors);
                        }
                        log::debug!("edge: closing {flow}: {e}");
                        break;
                    }
                };
                last = Instant::now();
                unanswered = 0;
                match inbound {
                    Inbound::Data(bytes) => {
                        ws.get_ref().framed_all();
                        out = on_data(bytes, flow, local, edge);
                    }
                    Inbound::Control { ping, len } => {
                        ws.get_ref().framed(CONTROL_FRAME_OVERHEAD + len);
                        Counters::bump(if ping { &c.ws_pings_answered } else { &c.ws_pongs_received });
                    }
                    // Read on until tungstenite has answered it and ends.
                    Inbound::Close => {}
                }
            }
            queued = rx.recv() => match queued {
                Some(bytes) => out = Some(frame_of(bytes)),
                None => break,
            },
            () = &mut wake => {
                let now = Instant::now();
                if now >= last + idle_for() {
                    Counters::bump(&c.conns_idle_closed);
                    log::debug!("edge: closing idle {flow}");
                    break;
                }
                if ping_every.is_zero() || now < last + ping_every * (unanswered + 1) {
                    wake.as_mut().reset(next_wake(last, unanswered));
                    continue;
                }
                if unanswered >= PINGS_UNANSWERED {
                    Counters::bump(&c.ws_ping_timeouts);
                    log::debug!("edge: closing {flow}: {unanswered} Pings unanswered");
                    break;
                }
                unanswered += 1;
                Counters::bump(&c.ws_pings_sent);
                out = Some(Message::Ping(Default::default()));
                wake.as_mut().reset(next_wake(last, unanswered));
            }
            () = &mut msg_due, if msg_armed => {
                Counters::bump(&c.conns_message_timeout);
                log::debug!(
                    "edge: closing {flow}: a frame took longer than {} s",
                    msg_limit.as_secs()
                );
                break;
            }
        }
        if let Some(m) = out {
            match timeout(WRITE_TIMEOUT, ws.send(m)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::debug!("edge: write to {flow}: {e}");
                    break;
                }
                Err(_) => {
                    log::debug!("edge: write to {flow} timed out");
                    break;
                }
            }
        }
        // Bytes read that are not yet a whole frame bound how long the
        // rest may take.
        match ws.get_ref().partial_since() {
            Some(since) if !msg_armed => {
                msg_armed = true;
                msg_due.as_mut().reset(since + msg_limit);
            }
            None => msg_armed = false,
            Some(_) => {}
        }
        let due = next_wake(last, unanswered);
        if due < wake.deadline() {
            wake.as_mut().reset(due);
        }
    }
    let _ = timeout(WRITE_TIMEOUT, ws.close(None)).await;
}

/// The `--listen` address the edge names itself by for what arrives on
/// the WebSocket listener `ws`: the PBX answers and calls by UDP, so its
/// Via, Record-Route and Path must name a UDP socket of the edge (the
/// browser sends everything over its WebSocket, whatever they say).
/// One on the same IP, else of the same family, else the first.
pub fn sip_address(listen: &[SocketAddr], ws: SocketAddr) -> SocketAddr {
    listen
        .iter()
        .find(|a| a.ip() == ws.ip())
        .or_else(|| listen.iter().find(|a| a.is_ipv4() == ws.is_ipv4()))
        .or_else(|| listen.first())
        .copied()
        .unwrap_or(ws)
}

/// A data frame: a CRLF keep-alive answered here, or a SIP message for
/// the proxy. What goes back on this connection, if anything.
fn on_data(bytes: Vec<u8>, flow: Flow, local: SocketAddr, edge: &Edge) -> Option<Message> {
    if bytes == CRLF_PING {
        Counters::bump(&edge.counters.ws_crlf_pings);
        return Some(Message::text(CRLF_PONG));
    }
    // A pong nobody asked for, or an empty frame: nothing to do.
    if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) {
        return None;
    }
    match edge.handle_message(&bytes, Framing::Datagram, flow, local, clock::now_ms()) {
        Some((out, dest)) if dest == flow => Some(frame_of(out)),
        Some((out, dest)) => {
            if let Err(e) = edge.transports.send(out, &dest, local) {
                log::debug!("edge: to {dest}: {e}");
            }
            None
        }
        None => None,
    }
}

/// The connection under tungstenite, noting bytes read that no frame
/// delivered yet accounts for: the frame they begin must be whole within
/// the message time, or a client could hold its slot for ever by
/// dribbling one.
pub struct Metered<S> {
    inner: S,
    unframed: Cell<usize>,
    since: Cell<Option<Instant>>,
}

impl<S> Metered<S> {
    fn new(inner: S) -> Metered<S> {
        Metered {
            inner,
            unframed: Cell::new(0),
            since: Cell::new(None),
        }
    }

    /// A data frame was delivered: what was read is accounted for (bytes
    /// of a next frame read with it restart the clock with the next read).
    fn framed_all(&self) {
        self.unframed.set(0);
        self.since.set(None);
    }

    /// A control frame of `n` bytes was delivered.
    fn framed(&self, n: usize) {
        let left = self.unframed.get().saturating_sub(n);
        self.unframed.set(left);
        if left == 0 {
            self.since.set(None);
        }
    }

    /// Since when bytes wait to become a frame.
    fn partial_since(&self) -> Option<Instant> {
        self.since.get()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.unframed.set(self.unframed.get() + n);
            if self.since.get().is_none() {
                self.since.set(Some(Instant::now()));
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut b = Request::builder().uri("/").method("GET");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_upgrade_needs_the_sip_subprotocol() {
        assert_eq!(
            check_upgrade(&req(&[]), &[]),
            Err(Refusal::NoSipSubprotocol)
        );
        assert_eq!(
            check_upgrade(&req(&[("Sec-WebSocket-Protocol", "chat, superchat")]), &[]),
            Err(Refusal::NoSipSubprotocol)
        );
        assert_eq!(
            check_upgrade(&req(&[("Sec-WebSocket-Protocol", "chat, SIP")]), &[]),
            Ok(())
        );
        assert_eq!(
            check_upgrade(
                &req(&[
                    ("Sec-WebSocket-Protocol", "chat"),
                    ("Sec-WebSocket-Protocol", "sip")
                ]),
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let allowed = vec!["https://phone.example.com".to_string()];
        let sip = ("Sec-WebSocket-Protocol", "sip");
        assert_eq!(
            check_upgrade(&req(&[sip, ("Origin", "https://evil.example")]), &allowed),
            Err(Refusal::Origin)
        );
        assert_eq!(
            check_upgrade(
                &req(&[sip, ("Origin", "https://Phone.Example.com/")]),
                &allowed
            ),
            Ok(())
        );
        // Not a browser: nothing to protect against.
        assert_eq!(check_upgrade(&req(&[sip]), &allowed), Ok(()));
        assert_eq!(
            check_upgrade(&req(&[sip, ("Origin", "https://evil.example")]), &[]),
            Ok(())
        );
    }

    #[test]
    fn the_edge_names_itself_by_a_udp_address_toward_the_pbx() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listen = [
            a("10.0.0.1:5060"),
            a("10.0.0.2:5060"),
            a("[2001:db8::1]:5060"),
        ];
        assert_eq!(sip_address(&listen, a("10.0.0.2:443")), a("10.0.0.2:5060"));
        assert_eq!(sip_address(&listen, a("10.0.0.9:443")), a("10.0.0.1:5060"));
        assert_eq!(
            sip_address(&listen, a("[2001:db8::9]:443")),
            a("[2001:db8::1]:5060")
        );
        assert_eq!(
            sip_address(&listen[..1], a("[2001:db8::9]:443")),
            a("10.0.0.1:5060")
        );
    }

    #[test]
    fn frames_are_text_when_the_message_is_utf8() {
        assert!(matches!(
            frame_of(b"OPTIONS sip:x SIP/2.0\r\n".to_vec()),
            Message::Text(_)
        ));
        assert!(matches!(frame_of(vec![0xff, 0xfe]), Message::Binary(_)));
    }

    #[test]
    fn partial_bytes_are_timed_until_a_frame_accounts_for_them() {
        let m = Metered::new(());
        assert!(m.partial_since().is_none());
        m.unframed.set(10);
        m.since.set(Some(Instant::now()));
        // A Pong of 4 bytes payload read alone: all accounted for.
        m.framed(CONTROL_FRAME_OVERHEAD + 4);
        assert!(m.partial_since().is_none());
        // A control frame amid a dribbled data frame: still timed.
        m.unframed.set(100);
        m.since.set(Some(Instant::now()));
        m.framed(CONTROL_FRAME_OVERHEAD);
        assert!(m.partial_since().is_some());
        m.framed_all();
        assert!(m.partial_since().is_none());
    }
}
