//! The clients of the idle-connection part: TCP, TLS and WSS connections
//! from the client namespace, each held by a task of one runtime thread
//! that sends a CRLF ping when a round asks for it and times the pong.
//! The orchestrating thread drives it with commands, so that it can read
//! the servers' memory between the phases while every connection stays
//! open.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    sync::{mpsc, oneshot, watch, Semaphore},
};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest as _, http::HeaderValue, Message},
    WebSocketStream,
};

/// How long a pong (or a connection and its first pong) may take.
const PONG_WAIT: Duration = Duration::from_secs(5);
/// Connections being opened at once.
const OPENING: usize = 256;

/// A transport of the part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Tcp,
    Tls,
    Wss,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "TCP",
            Kind::Tls => "TLS",
            Kind::Wss => "WSS",
        }
    }
}

/// Where one server takes each transport.
#[derive(Clone, Copy, Debug)]
pub(super) struct Targets {
    pub(super) tcp: SocketAddr,
    pub(super) tls: SocketAddr,
    pub(super) wss: SocketAddr,
    /// Plain WebSocket, for the pong-rate load.
    pub(super) ws: SocketAddr,
}

impl Targets {
    fn of(&self, kind: Kind) -> SocketAddr {
        match kind {
            Kind::Tcp => self.tcp,
            Kind::Tls => self.tls,
            Kind::Wss => self.wss,
        }
    }
}

/// What one round of pings found.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// Pong latencies, microseconds, by transport.
    pub(super) micros: Vec<(Kind, u64)>,
    pub(super) lost: u64,
}

/// The figures of the WS pong-rate load.
#[derive(Debug, Default)]
pub(super) struct PongLoad {
    pub(super) pongs: u64,
    pub(super) seconds: f64,
    pub(super) lost: u64,
}

enum Cmd {
    Open(Kind, u64, oneshot::Sender<Result<u64>>),
    Ping(Duration, oneshot::Sender<Round>),
    WsLoad(u32, Duration, oneshot::Sender<Result<PongLoad>>),
    Close(oneshot::Sender<()>),
}

/// The client thread, in the client namespace.
pub(super) struct Clients {
    cmds: mpsc::UnboundedSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    targets: Targets,
    sources: Vec<Ipv4Addr>,
    tls: TlsConnector,
    /// (round number, spread in ms, connections) of the round asked for.
    rounds: watch::Sender<(u64, u64, u64)>,
    reports: mpsc::UnboundedSender<(Kind, Option<u64>)>,
}

impl Clients {
    /// Starts the thread in `ns`; `cert` is the servers' certificate.
    pub(super) fn start(
        ns: &str,
        sources: Vec<Ipv4Addr>,
        targets: Targets,
        cert: &std::path::Path,
    ) -> Result<Clients> {
        let tls = tls_connector(cert)?;
        let path = format!("/run/netns/{ns}");
        let (cmds, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let joined = (|| -> Result<tokio::runtime::Runtime> {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on this thread only.
                if unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                } != 0
                {
                    bail!("setns({path}): {}", std::io::Error::last_os_error());
                }
                Ok(tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?)
            })();
            let rt = match joined {
                Ok(rt) => {
                    let _ = ready_tx.send(Ok(()));
                    rt
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(serve(rx, sources, targets, tls));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the client thread did not start")??;
        Ok(Clients {
            cmds,
            thread: Some(thread),
        })
    }

    fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(cmd(tx))
            .map_err(|_| anyhow::anyhow!("the client thread is gone"))?;
        rx.blocking_recv().context("the client thread is gone")
    }

    /// Opens `n` connections of `kind`, each answered one ping; how many
    /// made it.
    pub(super) fn open(&self, kind: Kind, n: u64) -> Result<u64> {
        self.ask(|tx| Cmd::Open(kind, n, tx))?
    }

    /// One ping on every open connection, spread evenly over `spread`.
    pub(super) fn ping_round(&self, spread: Duration) -> Result<Round> {
        self.ask(|tx| Cmd::Ping(spread, tx))
    }

    /// `conns` WebSocket connections, each with one CRLF frame
    /// outstanding, for `secs`.
    pub(super) fn ws_load(&self, conns: u32, secs: Duration) -> Result<PongLoad> {
        self.ask(|tx| Cmd::WsLoad(conns, secs, tx))?
    }

    /// Closes every connection.
    pub(super) fn close(mut self) -> Result<()> {
        self.ask(Cmd::Close)?;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

fn tls_connector(cert: &std::path::Path) -> Result<TlsConnector> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).context("reading the lab certificate")? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // No session cache: the load's memory is its connections'.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn serve(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    sources: Vec<Ipv4Addr>,
    targets: Targets,
    tls: TlsConnector,
) {
    let (rounds, _) = watch::channel((0, 0, 0));
    let (reports, mut reported) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        targets,
        sources,
        tls,
        rounds,
        reports,
    });
    let mut open = 0u64;
    let mut round = 0u64;
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Open(kind, n, reply) => {
                let r = open_many(&shared, kind, n, open).await;
                if let Ok(made) = r {
                    open += made;
                }
                let _ = reply.send(r);
            }
            Cmd::Ping(spread, reply) => {
                round += 1;
                let _ = shared.rounds.send((round, spread.as_millis() as u64, open));
                let mut r = Round::default();
                let until = tokio::time::Instant::now() + spread + PONG_WAIT * 2;
                while (r.micros.len() as u64 + r.lost) < open {
                    match tokio::time::timeout_at(until, reported.recv()).await {
                        Ok(Some((kind, Some(us)))) => r.micros.push((kind, us)),
                        Ok(Some((_, None))) => r.lost += 1,
                        _ => break,
                    }
                }
                r.lost = open - r.micros.len() as u64;
                let _ = reply.send(r);
            }
            Cmd::WsLoad(conns, secs, reply) => {
                let _ = reply.send(ws_load(&shared, conns, secs).await);
            }
            Cmd::Close(reply) => {
                // Dropping the rounds' sender ends every holder.
                drop(shared);
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// Opens `n` connections of `kind` (numbered from `first`), each holding
/// on in a task of its own once its first ping is answered.
async fn open_many(shared: &Arc<Shared>, kind: Kind, n: u64, first: u64) -> Result<u64> {
    let gate = Arc::new(Semaphore::new(OPENING));
    let (done_tx, mut done) = mpsc::unbounded_channel::<Result<(), String>>();
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let shared = shared.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let idx = first + i;
            let source = shared.sources[(idx % shared.sources.len() as u64) as usize];
            let opened = tokio::time::timeout(PONG_WAIT, async {
                let mut c = Conn::connect(&shared, kind, source).await?;
                c.ping().await?;
                anyhow::Ok(c)
            })
            .await;
            drop(permit);
            match opened {
                Ok(Ok(c)) => {
                    let _ = done_tx.send(Ok(()));
                    drop(done_tx);
                    hold(c, idx, shared).await;
                }
                Ok(Err(e)) => {
                    let _ = done_tx.send(Err(format!("{e:#}")));
                }
                Err(_) => {
                    let _ = done_tx.send(Err("no first pong within 5 s".into()));
                }
            }
        });
    }
    drop(done_tx);
    // Counted, not waited for the channel's end: the holders keep it.
    let (mut made, mut first_err) = (0, None);
    for _ in 0..n {
        match done.recv().await {
            Some(Ok(())) => made += 1,
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => break,
        }
    }
    if let Some(e) = first_err {
        println!(
            "  {} of {n} {} connections failed, the first: {e}",
            n - made,
            kind.name()
        );
    }
    Ok(made)
}

/// Holds a connection: answers what the server sends (WebSocket Pings),
/// pings when a round asks, until the client closes.
async fn hold(mut c: Conn, idx: u64, shared: Arc<Shared>) {
    let mut rounds = shared.rounds.subscribe();
    rounds.borrow_and_update();
    loop {
        tokio::select! {
            changed = rounds.changed() => if changed.is_err() { return },
            alive = c.idle() => if !alive { break },
        }
        let (_, spread, total) = *rounds.borrow_and_update();
        let at = Duration::from_millis(spread.saturating_mul(idx) / total.max(1));
        tokio::time::sleep(at).await;
        let t0 = Instant::now();
        let ok = matches!(tokio::time::timeout(PONG_WAIT, c.ping()).await, Ok(Ok(())));
        let _ = shared
            .reports
            .send((c.kind(), ok.then(|| t0.elapsed().as_micros() as u64)));
        if !ok {
            break;
        }
    }
    // Gone: lost in every later round.
    while rounds.changed().await.is_ok() {
        let _ = shared.reports.send((c.kind(), None));
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Wss(Box<WebSocketStream<TlsStream<TcpStream>>>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

async fn tcp_from(source: Ipv4Addr, to: SocketAddr) -> Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((source, 0)))?;
    let s = s
        .connect(to)
        .await
        .with_context(|| format!("connecting to {to}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn ws_over<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    to: SocketAddr,
    scheme: &str,
) -> Result<WebSocketStream<S>> {
    let mut req = format!("{scheme}://{to}/").into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let (ws, _) = tokio_tungstenite::client_async(req, s)
        .await
        .context("WebSocket upgrade")?;
    Ok(ws)
}

impl Conn {
    fn kind(&self) -> Kind {
        match self {
            Conn::Plain(_) => Kind::Tcp,
            Conn::Tls(_) => Kind::Tls,
            Conn::Wss(_) | Conn::Ws(_) => Kind::Wss,
        }
    }

    async fn connect(shared: &Shared, kind: Kind, source: Ipv4Addr) -> Result<Conn> {
        let to = shared.targets.of(kind);
        let s = tcp_from(source, to).await?;
        if kind == Kind::Tcp {
            return Ok(Conn::Plain(s));
        }
        let name = rustls::pki_types::ServerName::IpAddress(to.ip().into());
        let tls = shared.tls.connect(name, s).await.context("TLS handshake")?;
        if kind == Kind::Tls {
            return Ok(Conn::Tls(Box::new(tls)));
        }
        Ok(Conn::Wss(Box::new(ws_over(tls, to, "wss").await?)))
    }

    /// Sends a CRLF ping and waits for its pong.
    async fn ping(&mut self) -> Result<()> {
        match self {
            Conn::Plain(s) => stream_ping(s).await,
            Conn::Tls(s) => stream_ping(s.as_mut()).await,
            Conn::Wss(ws) => ws_ping(ws.as_mut()).await,
            Conn::Ws(ws) => ws_ping(ws.as_mut()).await,
        }
    }

    /// Waits for the server to send something; false once the
    /// connection is gone. A WebSocket Ping is answered by tungstenite.
    async fn idle(&mut self) -> bool {
        let mut junk = [0u8; 64];
        match self {
            Conn::Plain(s) => matches!(s.read(&mut junk).await, Ok(n) if n > 0),
            Conn::Tls(s) => matches!(s.read(&mut junk).await, Ok(n) if n > 0),
            Conn::Wss(ws) => ws_idle(ws.as_mut()).await,
            Conn::Ws(ws) => ws_idle(ws.as_mut()).await,
        }
    }
}

async fn stream_ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<()> {
    s.write_all(b"\r\n\r\n").await?;
    s.flush().await?;
    let mut pong = [0u8; 2];
    s.read_exact(&mut pong).await?;
    if &pong != b"\r\n" {
        bail!("answered {pong:02x?}");
    }
    Ok(())
}

async fn ws_ping<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> Result<()> {
    ws.send(Message::text("\r\n\r\n")).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "\r\n" => return Ok(()),
            Some(Ok(Message::Binary(b))) if &b[..] == b"\r\n" => return Ok(()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => ws.flush().await?,
            Some(Ok(m)) => bail!("answered {m:?}"),
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed"),
        }
    }
}

async fn ws_idle<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> bool {
    match ws.next().await {
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
        Some(Ok(_)) => ws.flush().await.is_ok(),
    }
}

/// The WS pong-rate load: `conns` plain WebSocket connections, each with
/// one CRLF frame outstanding, for `secs`.
async fn ws_load(shared: &Arc<Shared>, conns: u32, secs: Duration) -> Result<PongLoad> {
    let to = shared.targets.ws;
    let mut ws = Vec::new();
    for i in 0..conns.max(1) {
        let source = shared.sources[i as usize % shared.sources.len()];
        let mut c = Conn::Ws(Box::new(
            ws_over(tcp_from(source, to).await?, to, "ws").await?,
        ));
        tokio::time::timeout(PONG_WAIT, c.ping())
            .await
            .context("no pong to a CRLF frame within 5 s")??;
        ws.push(c);
    }
    let start = Instant::now();
    let end = tokio::time::Instant::now() + secs;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in ws {
        tasks.spawn(async move {
            let (mut pongs, mut lost) = (0u64, 0u64);
            while tokio::time::Instant::now() < end {
                match tokio::time::timeout(PONG_WAIT, c.ping()).await {
                    Ok(Ok(())) => pongs += 1,
                    _ => {
                        lost += 1;
                        break;
                    }
                }
            }
            (pongs, lost)
        });
    }
    let mut load = PongLoad::default();
    while let Some(r) = tasks.join_next().await {
        let (p, l) = r?;
        load.pongs += p;
        load.lost += l;
    }
    load.seconds = start.elapsed().as_secs_f64();
    Ok(load)
}
