//! Sockets in the lab's namespaces: a thread that joins one, and waiting
//! for a socket to become readable.

use std::os::fd::AsRawFd as _;

use anyhow::{bail, Context as _, Result};

/// Runs `f` on a thread that joined network namespace `ns`, so its sockets
/// live there.
pub(crate) fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on this thread only; the thread ends with `f`.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
}

/// Waits until `fd` is readable or `ms` pass.
pub(crate) fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Asks the kernel for socket buffers of `bytes` whatever the sysctl
/// limits (root), so the generator's own socket is not where requests or
/// answers are lost.
pub(crate) fn force_buffers(fd: i32, bytes: i32) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: an int option on a socket this thread owns.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
    }
}
