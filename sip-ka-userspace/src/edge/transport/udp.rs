//! The edge's UDP sockets: one task per socket, which takes in what is
//! queued with one `recvmmsg`, handles each datagram to completion, and
//! sends the answers that leave by this socket with one `sendmmsg`, over
//! buffers allocated once per socket. An OPTIONS ping to the edge is
//! answered straight into the send batch's buffer
//! ([`crate::edge::options_fast`]).

use std::{io, os::fd::AsRawFd as _, sync::Arc};

use tokio::{io::Interest, net::UdpSocket};

use super::Flow;
use crate::{
    edge::{options_fast::Fast, state::Edge},
    responder::batch::{RecvBatch, SendBatch, BATCH},
    util::clock,
};

/// Serves one UDP socket until the task is dropped.
pub async fn serve_udp(sock: Arc<UdpSocket>, edge: Arc<Edge>) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => {
            log::warn!("edge socket: {e}");
            return;
        }
    };
    let fd = sock.as_raw_fd();
    let mut rx = RecvBatch::default();
    let mut tx = SendBatch::default();
    loop {
        if let Err(e) = sock.readable().await {
            log::warn!("edge socket udp/{local}: {e}");
            return;
        }
        let mut got = 0;
        let read = sock.try_io(Interest::READABLE, || {
            got = rx.recv(fd, libc::MSG_DONTWAIT)?;
            if got < BATCH {
                // Less than a batch: the queue is empty now. Saying so lets
                // tokio wait for the next datagram instead of this loop
                // asking the kernel once more only to hear EAGAIN (a
                // datagram that came meanwhile sets readiness again).
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        if let Err(e) = read {
            if e.kind() != io::ErrorKind::WouldBlock {
                // ICMP errors from earlier sends surface here; keep going.
                log::debug!("recv on udp/{local}: {e}");
            }
        }
        // One clock read per batch for the ban check (a ban's end is
        // in milliseconds; the batch takes microseconds).
        let now_ms = clock::now_ms();
        for i in 0..got {
            let Some((datagram, src)) = rx.get(i) else {
                continue;
            };
            if tx.len() == BATCH {
                send(&mut tx, fd, &local);
            }
            // What XDP did not drop (`--xdp off`, a ban an instant old).
            if edge.drops_banned(src, now_ms) {
                continue;
            }
            // An OPTIONS ping is answered straight into the send batch.
            if let Some(buf) = tx.next_buf() {
                match edge.answer_options_fast(datagram, src, local, buf) {
                    Fast::Answered => {
                        tx.commit(src);
                        continue;
                    }
                    Fast::Dropped => continue,
                    Fast::Full => {}
                }
            }
            match edge.handle_full(datagram, src, local, clock::now_ms()) {
                Some((out, Flow::Udp(dest))) => {
                    if tx.len() == BATCH {
                        send(&mut tx, fd, &local);
                    }
                    tx.push(&out, dest);
                }
                Some((out, flow)) => {
                    if let Err(e) = edge.transports.send(out, &flow, local) {
                        log::debug!("edge: to {flow}: {e}");
                    }
                }
                None => {}
            }
        }
        send(&mut tx, fd, &local);
    }
}

/// Sends what is queued. Never waits on a full send buffer: that would
/// stall every datagram behind these. UDP may lose them; so may we.
fn send(tx: &mut SendBatch, fd: i32, local: &std::net::SocketAddr) {
    if tx.is_empty() {
        return;
    }
    let done = tx.flush(fd);
    if done.failed > 0 {
        log::debug!(
            "send from udp/{local}: {} datagram(s) lost: {:?}",
            done.failed,
            done.last_error
        );
    }
}
