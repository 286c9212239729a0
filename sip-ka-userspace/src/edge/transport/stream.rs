//! TCP (and TLS) connections from UAs: one task per connection that cuts
//! the byte stream into messages and CRLF keep-alives (RFC 5626 4.4.1),
//! writes what the edge sends on the connection, and closes it when it
//! stays idle past its limit or loses framing.

use std::{
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::{timeout, Instant},
};

use super::{tls::HANDSHAKE_RECORD, Admission, Conn, Flow, StreamKind};
use crate::sip::{CrlfRole, Framing, StreamEvent, StreamFramer};
use crate::{
    edge::state::{Counters, Edge},
    util::clock,
};

/// Messages queued for one connection; past this the sender's message is
/// lost (and counted by the sender) rather than the edge waiting.
const QUEUE: usize = 256;
/// A write that the peer does not take within this long closes the
/// connection: a UA that stops reading must not hold anything up.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pong for a CRLFCRLF ping.
const PONG: &[u8] = b"\r\n";

/// Accepts connections on one `--listen` address until the task is dropped.
pub async fn serve_tcp(listener: TcpListener, local: SocketAddr, edge: Arc<Edge>) {
    accept_loop(listener, local, edge, accept_conn).await
}

/// Accepts connections on `listener` until the task is dropped: drops
/// banned sources, applies the connection limits, registers each
/// connection and hands it to `serve` in a task of its own.
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    local: SocketAddr,
    edge: Arc<Edge>,
    serve: F,
) where
    F: Fn(TcpStream, Accepted, Arc<Edge>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, for one: back off, keep serving.
                log::warn!("accept on tcp/{local}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if edge.drops_banned(peer, crate::util::clock::now_ms()) {
            drop(sock);
            continue;
        }
        let st = edge.tun().streams;
        match edge
            .transports
            .admit(peer.ip(), st.max_conns, st.max_conns_per_ip)
        {
            Admission::Accept => {}
            Admission::Refuse => {
                Counters::bump(&edge.counters.conns_refused);
                log::debug!("edge: connection from {peer} refused (its source holds its share)");
                drop(sock);
                continue;
            }
            Admission::Evict(id) => {
                Counters::bump(&edge.counters.conns_evicted);
                log::debug!("edge: connection {id} of the largest source closed to let {peer} in");
            }
        }
        Counters::bump(&edge.counters.conns_accepted);
        // Small messages, answered at once: no Nagle delay on pongs.
        let _ = sock.set_nodelay(true);
        // Registered now, before any byte is read, so that connections
        // still silent or in their TLS handshake count toward the limits.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUE);
        let idle_ms = Arc::new(AtomicU64::new(st.idle_timeout.as_millis() as u64));
        let id = edge.transports.add_conn(Conn {
            tx,
            peer,
            local,
            idle_ms: idle_ms.clone(),
        });
        let conn = Accepted {
            peer,
            local,
            id,
            rx,
            idle_ms,
        };
        tokio::spawn(serve(sock, conn, edge.clone()));
    }
}

/// A TLS handshake, and the first byte of a connection when TLS is on,
/// must come within this long.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered connection, before it is served.
pub struct Accepted {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub id: u64,
    /// What the edge queued for the connection.
    pub rx: mpsc::Receiver<Vec<u8>>,
    /// Its idle limit (ms-keep-alive changes it).
    pub idle_ms: Arc<AtomicU64>,
}

/// Serves a new connection as TLS when the edge has a certificate and the
/// first byte is a TLS handshake record, as TCP otherwise.
async fn accept_conn(sock: TcpStream, conn: Accepted, edge: Arc<Edge>) {
    let _registered = Registered::new(&edge, conn.id);
    let Some(acceptor) = edge.tls.clone() else {
        let (rd, wr) = sock.into_split();
        return serve_conn(rd, wr, conn, &edge, StreamKind::Tcp).await;
    };
    let mut first = [0u8; 1];
    match timeout(HANDSHAKE_TIMEOUT, sock.peek(&mut first)).await {
        // Boxed: the handshake's and rustls's state would otherwise make
        // every connection's task, TCP ones too, as large as a TLS one's.
        Ok(Ok(1)) if first[0] == HANDSHAKE_RECORD => {
            Box::pin(serve_tls(sock, conn, &edge, acceptor)).await
        }
        Ok(Ok(1)) => {
            let (rd, wr) = sock.into_split();
            serve_conn(rd, wr, conn, &edge, StreamKind::Tcp).await
        }
        // Closed, failed, or silent for the handshake time before a byte.
        _ => {}
    }
}

/// Runs the TLS handshake on a new connection and serves it.
async fn serve_tls(
    sock: TcpStream,
    conn: Accepted,
    edge: &Arc<Edge>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    let peer = conn.peer;
    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
        Ok(Ok(tls)) => {
            let (rd, wr) = tokio::io::split(tls);
            serve_conn(rd, wr, conn, edge, StreamKind::Tls).await
        }
        Ok(Err(e)) => {
            Counters::bump(&edge.counters.stream_errors);
            log::debug!("edge: TLS handshake with {peer}: {e}");
        }
        Err(_) => {
            Counters::bump(&edge.counters.stream_errors);
            log::debug!("edge: TLS handshake with {peer} timed out");
        }
    }
}

/// Removes the connection from the registry however its task ends.
pub(super) struct Registered<'a> {
    edge: &'a Edge,
    id: u64,
}

impl<'a> Registered<'a> {
    pub(super) fn new(edge: &'a Edge, id: u64) -> Registered<'a> {
        Registered { edge, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.edge.transports.remove_conn(self.id);
    }
}

/// What one read or one queued message makes due on the connection.
#[derive(Default)]
struct Due {
    /// Pongs owed while nothing else is: written from a constant, so a
    /// keep-alive costs no allocation.
    pongs: usize,
    /// Anything else (answers, queued messages, pongs after them), in
    /// order; allocated only when there is such a thing.
    out: Vec<u8>,
    /// A framing error: close once what is due is written.
    lost: bool,
    /// A message or keep-alive ended in the read.
    ended: bool,
}

impl Due {
    fn pong(&mut self) {
        if self.out.is_empty() {
            self.pongs += 1;
        } else {
            self.out.extend_from_slice(PONG);
        }
    }

    fn push(&mut self, bytes: Vec<u8>) {
        if self.out.is_empty() && self.pongs == 0 {
            self.out = bytes;
            return;
        }
        for _ in 0..std::mem::take(&mut self.pongs) {
            self.out.extend_from_slice(PONG);
        }
        self.out.extend_from_slice(&bytes);
    }
}

/// Pongs written in one go.
const PONGS: &[u8] = b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";

/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The room reads land in, one per runtime thread rather than one per
    /// connection: the framer copies out only what is left of a partial
    /// message, so an idle connection holds no read buffer.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// Reads what `rd` has into the thread's scratch room and frames it at
/// once, handing each event to `on`: `Ok(0)` at the end of the stream.
async fn read_framed<R: AsyncRead + Unpin>(
    rd: &mut R,
    framer: &mut StreamFramer,
    mut on: impl FnMut(StreamEvent),
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(scratch);
            match Pin::new(&mut *rd).poll_read(cx, &mut rb) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    framer.push_each(got, &mut on);
                    Poll::Ready(Ok(got.len()))
                }
            }
        })
    })
    .await
}

/// Serves one connection (its two halves: TCP splits without a lock,
/// TLS with one) until it closes, fails or idles out.
async fn serve_conn<R, W>(mut rd: R, mut wr: W, conn: Accepted, edge: &Arc<Edge>, kind: StreamKind)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Accepted {
        peer,
        local,
        id,
        mut rx,
        idle_ms,
    } = conn;
    let flow = Flow::Stream { id, peer, kind };
    let _serving = edge.transports.serving(kind);
    let mut framer = StreamFramer::new(CrlfRole::Server, edge.tun().limits);
    let mut last = Instant::now();
    let c = &edge.counters;
    let idle_for = || Duration::from_millis(idle_ms.load(Ordering::Relaxed));
    // One timer for the connection's life, moved on only when it fires
    // early (traffic came since it was set): no timer to set and cancel
    // for every message.
    let idle = tokio::time::sleep_until(last + idle_for());
    tokio::pin!(idle);
    // Armed while a message is under way: any byte moves the idle timer
    // on, so only this bounds a sender that dribbles a message.
    let msg_limit = edge.tun().streams.message_timeout;
    let mut msg_started = false;
    let msg_due = tokio::time::sleep_until(last + msg_limit);
    tokio::pin!(msg_due);
    loop {
        let mut due = Due::default();
        tokio::select! {
            read = read_framed(&mut rd, &mut framer, |ev| on_event(ev, &mut due, edge, flow, local)) => {
                match read {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("edge: read from {peer}: {e}");
                        break;
                    }
                };
                last = Instant::now();
                if due.lost {
                    // Answers already due still go out before the close.
                    let _ = write_due(&mut wr, &due).await;
                    break;
                }
                // Bytes left over began a message in this read if one
                // ended in it, or if none was under way. The start of a CRLF
                // keep-alive (a lone CRLF waits for a second one) is not a
                // message: only the idle time bounds it.
                if !framer.mid_message() {
                    msg_started = false;
                } else if !msg_started || due.ended {
                    msg_started = true;
                    msg_due.as_mut().reset(last + msg_limit);
                }
            }
            () = &mut msg_due, if msg_started => {
                Counters::bump(&c.conns_message_timeout);
                log::debug!(
                    "edge: closing {peer}: a message took longer than {} s",
                    msg_limit.as_secs()
                );
                break;
            }
            queued = rx.recv() => match queued {
                Some(bytes) => due.push(bytes),
                None => break,
            },
            () = &mut idle => {
                let deadline = last + idle_for();
                if Instant::now() < deadline {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                Counters::bump(&c.conns_idle_closed);
                log::debug!("edge: closing idle connection from {peer}");
                break;
            }
        }
        if write_due(&mut wr, &due).await.is_err() {
            break;
        }
        // A negotiated ms-keep-alive may have shortened the limit.
        let deadline = last + idle_for();
        if deadline < idle.deadline() {
            idle.as_mut().reset(deadline);
        }
    }
    let _ = timeout(WRITE_TIMEOUT, wr.shutdown()).await;
}

/// Acts on one event the framer found on `flow`.
fn on_event(ev: StreamEvent, due: &mut Due, edge: &Edge, flow: Flow, local: SocketAddr) {
    let c = &edge.counters;
    due.ended |= !matches!(ev, StreamEvent::Error(_));
    match ev {
        StreamEvent::Ping => {
            Counters::bump(&c.crlf_pings);
            due.pong();
        }
        // A pong nobody asked for: nothing to do.
        StreamEvent::Pong => {}
        StreamEvent::Message(raw) => {
            let now = clock::now_ms();
            match edge.handle_message(&raw, Framing::Stream, flow, local, now) {
                Some((bytes, dest)) if dest == flow => due.push(bytes),
                Some((bytes, dest)) => {
                    if let Err(e) = edge.transports.send(bytes, &dest, local) {
                        log::debug!("edge: to {dest}: {e}");
                    }
                }
                None => {}
            }
        }
        StreamEvent::Error(e) => {
            Counters::bump(&c.stream_errors);
            log::debug!("edge: closing {}: {e}", flow.peer());
            due.lost = true;
        }
    }
}

/// Writes what is due: the pongs from a constant, the rest as it is.
async fn write_due<W: AsyncWrite + Unpin>(wr: &mut W, due: &Due) -> Result<(), ()> {
    if due.out.is_empty() {
        let mut left = due.pongs;
        while left > 0 {
            let n = left.min(PONGS.len() / PONG.len());
            write_all(wr, PONGS.get(..n * PONG.len()).unwrap_or_default()).await?;
            left -= n;
        }
        return Ok(());
    }
    write_all(wr, &due.out).await
}

/// Writes what is due in one go and flushes it: TLS keeps written records
/// in its own buffer until flushed, and a pong must leave at once.
async fn write_all<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8]) -> Result<(), ()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let write = async {
        wr.write_all(bytes).await?;
        wr.flush().await
    };
    let mut write = std::pin::pin!(write);
    // Tried once before the timer is armed: nearly every write (a pong
    // into a connection's empty send buffer) is done at once, and setting
    // and cancelling a timer for each would cost more than the write.
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    let done = match first {
        Poll::Ready(r) => r,
        Poll::Pending => match timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => return Err(()),
        },
    };
    done.map_err(|_| ())
}
