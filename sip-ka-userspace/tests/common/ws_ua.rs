//! A browser phone's WebSocket, played by tungstenite's client: the
//! upgrade with the `sip` subprotocol, text frames out, data frames in
//! (the edge's Pings answered on the way).

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest as _, http::HeaderValue, stream::MaybeTlsStream, Message,
    WebSocket,
};

/// A browser phone's connection: upgraded with the `sip` subprotocol.
pub struct WsUa {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// Pings the edge sent (tungstenite answers each as it reads).
    pub pings: u32,
}

impl WsUa {
    /// Upgrades `tcp` (connected to `to`), offering `sip` and `origin`.
    pub fn connect(tcp: TcpStream, to: SocketAddr, origin: Option<&str>) -> WsUa {
        let mut req = format!("ws://{to}/")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
        if let Some(o) = origin {
            req.headers_mut()
                .insert("Origin", HeaderValue::from_str(o).expect("origin"));
        }
        let (ws, resp) = tungstenite::client(req, MaybeTlsStream::Plain(tcp))
            .unwrap_or_else(|e| panic!("the WebSocket upgrade failed: {e}"));
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("sip"),
            "the edge's 101 names the sip subprotocol: {resp:?}"
        );
        WsUa { ws, pings: 0 }
    }

    pub fn send(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .expect("writing a frame to the edge");
    }

    /// The next data frame within `wait` (Pings are answered on the way),
    /// or `None`; `Err` once the edge closed the connection.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<String>, String> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Ok(Some(t.to_string())),
                Ok(Message::Binary(b)) => return Ok(Some(String::from_utf8_lossy(&b).into())),
                Ok(Message::Ping(_)) => self.pings += 1,
                Ok(Message::Close(c)) => return Err(format!("closed by the edge: {c:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(None)
    }

    /// The next data frame that is a SIP message (not a CRLF).
    #[track_caller]
    pub fn message(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now()) {
                Ok(Some(t)) if t.trim().is_empty() => continue,
                Ok(Some(t)) => return t,
                Ok(None) => break,
                Err(e) => panic!("waiting for a SIP message: {e}"),
            }
        }
        panic!("no SIP message over the WebSocket within {wait:?}")
    }
}
