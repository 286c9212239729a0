//! The edge's UDP sockets: one task per socket, each datagram handled to
//! completion before the next.

use std::sync::Arc;

use tokio::net::UdpSocket;

use super::Flow;
use crate::{edge::state::Edge, util::clock};

/// Serves one UDP socket until the task is dropped.
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
        match edge.handle(datagram, src, local, clock::now_ms()) {
            Some((out, Flow::Udp(dest))) => {
                // Never wait on a full send buffer: that would stall every
                // datagram behind this one. UDP may lose it; so may we.
                if let Err(e) = sock.try_send_to(&out, dest) {
                    log::debug!("send from udp/{local} to {dest}: {e}");
                }
            }
            Some((out, flow)) => {
                if let Err(e) = edge.transports.send(out, &flow, local) {
                    log::debug!("edge: to {flow:?}: {e:?}");
                }
            }
            None => {}
        }
    }
}
