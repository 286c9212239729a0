//! The UDP transport: one task per `--listen` socket.

use std::sync::Arc;

use tokio::net::UdpSocket;

use super::Edge;

/// Serves one socket until the task is dropped.
pub async fn serve_udp(sock: Arc<UdpSocket>, edge: Arc<Edge>) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => {
            log::warn!("edge socket: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep going.
                log::debug!("recv on udp/{local}: {e}");
                continue;
            }
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        if let Some((out, dest)) = edge.handle(datagram, src, local) {
            if let Err(e) = sock.send_to(&out, dest).await {
                log::debug!("send from udp/{local} to {dest}: {e}");
            }
        }
    }
}
