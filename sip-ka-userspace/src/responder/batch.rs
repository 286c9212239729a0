//! Datagrams by the batch: `recvmmsg` and `sendmmsg` over buffers that a
//! socket's loop allocates once, so that a datagram costs neither a
//! system call of its own nor an allocation.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::RawFd,
};

/// Datagrams per system call, at most.
pub const BATCH: usize = 32;
/// Room for one received datagram: the largest UDP payload. Only the pages
/// a datagram touches become resident, so small keep-alives cost a page
/// per slot, not 64 KiB.
pub const SLOT: usize = 65_536;

// SAFETY (for the `zeroed` calls below): these are C structs of integers
// and pointers, for which all-zero is a valid (empty) value.

/// A socket address in the C form the kernel reads and writes.
pub fn sockaddr_c(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for
            // sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The address the kernel wrote, if it is IPv4 or IPv6.
fn from_c(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

fn last_error<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

/// Up to [`BATCH`] received datagrams and their sources.
pub struct RecvBatch {
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
}

// SAFETY: the raw pointers in the headers point into the batch's own
// buffers, and are written afresh before every system call; moving the
// batch to another thread moves what they point to with it.
unsafe impl Send for RecvBatch {}
unsafe impl Send for SendBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0u8; BATCH * SLOT],
            addrs: vec![unsafe { zeroed() }; BATCH],
            iov: Vec::with_capacity(BATCH),
            hdrs: vec![unsafe { zeroed() }; BATCH],
            len: 0,
        }
    }
}

impl RecvBatch {
    /// One `recvmmsg` on `fd` with `flags` (`MSG_DONTWAIT` never waits;
    /// `MSG_WAITFORONE` on a blocking socket waits for the first datagram
    /// only). Returns how many datagrams it holds now.
    pub fn recv(&mut self, fd: RawFd, flags: i32) -> io::Result<usize> {
        self.len = 0;
        // The pointers are set for every call: the batch may have moved.
        self.iov.clear();
        self.iov
            .extend(self.bufs.chunks_exact_mut(SLOT).map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: SLOT,
            }));
        for ((h, v), a) in self
            .hdrs
            .iter_mut()
            .zip(self.iov.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: BATCH headers, each naming a live address slot and one
        // iovec over its own SLOT bytes of `bufs`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return last_error();
        }
        self.len = n as usize;
        Ok(self.len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` and its source; `None` when it was cut short (larger
    /// than a slot) or came from an address family other than IP.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.len {
            return None;
        }
        let h = self.hdrs.get(i)?;
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let src = from_c(self.addrs.get(i)?, h.msg_hdr.msg_namelen)?;
        let start = i * SLOT;
        let data = self
            .bufs
            .get(start..start + (h.msg_len as usize).min(SLOT))?;
        Some((data, src))
    }
}

/// Up to [`BATCH`] datagrams to send, each in a buffer kept from batch to
/// batch.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            iov: Vec::with_capacity(BATCH),
            hdrs: vec![unsafe { zeroed() }; BATCH],
            len: 0,
        }
    }
}

/// What one flush did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    /// Datagrams the kernel refused (full buffer, unreachable, ...): UDP
    /// may lose them, and so may we, rather than hold up the batch.
    pub failed: usize,
    pub last_error: Option<io::ErrorKind>,
}

impl SendBatch {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next free buffer, emptied, to write a datagram into; `None`
    /// when the batch is full (flush first). The datagram counts only once
    /// [`SendBatch::commit`] names its destination.
    pub fn next_buf(&mut self) -> Option<&mut Vec<u8>> {
        let b = self.bufs.get_mut(self.len)?;
        b.clear();
        Some(b)
    }

    /// Queues the datagram written into the buffer [`SendBatch::next_buf`]
    /// gave, to `dest`.
    pub fn commit(&mut self, dest: SocketAddr) {
        if let Some(a) = self.addrs.get_mut(self.len) {
            self.addr_lens[self.len] = sockaddr_c(dest, a);
            self.len += 1;
        }
    }

    /// Queues a copy of `bytes` to `dest`; false when the batch is full.
    pub fn push(&mut self, bytes: &[u8], dest: SocketAddr) -> bool {
        let Some(b) = self.next_buf() else {
            return false;
        };
        b.extend_from_slice(bytes);
        self.commit(dest);
        true
    }

    /// Sends what is queued with `sendmmsg` (never waiting) and empties the
    /// batch. A datagram the kernel refuses is skipped, and the rest still
    /// go.
    pub fn flush(&mut self, fd: RawFd) -> Flushed {
        let mut done = Flushed::default();
        let n = std::mem::take(&mut self.len);
        self.iov.clear();
        self.iov
            .extend(self.bufs.iter_mut().take(n).map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            }));
        for (((h, v), a), l) in self
            .hdrs
            .iter_mut()
            .zip(self.iov.iter_mut())
            .zip(self.addrs.iter_mut())
            .zip(&self.addr_lens)
        {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = *l;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let mut off = 0;
        while off < n {
            // SAFETY: headers off..n each name a live address and one
            // iovec over a live buffer, set just above.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(off),
                    (n - off) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                done.sent += r as usize;
                off += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The datagram at `off` is refused: skip it.
            done.failed += 1;
            done.last_error = Some(e.kind());
            off += 1;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::UdpSocket, os::fd::AsRawFd as _};

    #[test]
    fn addresses_round_trip_through_the_c_form() {
        for a in [
            "192.0.2.7:5060",
            "[2001:db8::7]:5061",
            "[::ffff:192.0.2.9]:40000",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            let len = sockaddr_c(a, &mut s);
            assert_eq!(from_c(&s, len), Some(a));
        }
        let s: libc::sockaddr_storage = unsafe { zeroed() };
        assert_eq!(from_c(&s, 0), None, "AF_UNSPEC is no address");
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_in_one_call_each() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut tx = SendBatch::default();
        for i in 0..BATCH {
            assert!(tx.push(format!("datagram {i}").as_bytes(), to));
        }
        assert!(!tx.push(b"one too many", to), "the batch holds BATCH");
        let done = tx.flush(a.as_raw_fd());
        assert_eq!((done.sent, done.failed), (BATCH, 0));
        assert!(tx.is_empty());

        b.set_nonblocking(true).unwrap();
        let mut rx = RecvBatch::default();
        let mut got = Vec::new();
        for _ in 0..100 {
            match rx.recv(b.as_raw_fd(), libc::MSG_DONTWAIT) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, src) = rx.get(i).expect("a whole IPv4 datagram");
                        assert_eq!(src, a.local_addr().unwrap());
                        got.push(String::from_utf8(d.to_vec()).unwrap());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if got.len() == BATCH {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        let want: Vec<String> = (0..BATCH).map(|i| format!("datagram {i}")).collect();
        assert_eq!(got, want);
        assert!(rx.get(BATCH).is_none());
    }

    #[test]
    fn a_refused_datagram_is_skipped_and_the_rest_still_go() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut tx = SendBatch::default();
        assert!(tx.push(b"first", to));
        // An IPv6 destination from an IPv4 socket: EAFNOSUPPORT/EINVAL.
        assert!(tx.push(b"refused", "[2001:db8::1]:5060".parse().unwrap()));
        assert!(tx.push(b"third", to));
        let done = tx.flush(a.as_raw_fd());
        assert_eq!((done.sent, done.failed), (2, 1), "{done:?}");
        let mut buf = [0u8; 64];
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"first");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"third");
    }
}
