//! Attaching the program to an interface, with a pinned link so the fast
//! path outlives the daemon; native mode first, SKB mode as the fallback.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        Xdp, XdpMode,
    },
    Ebpf,
};

/// Which XDP attach mode to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeChoice {
    /// Native (driver) mode, falling back to SKB (generic) mode.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// SKB (generic) mode only.
    Skb,
}

/// Fails unless `iface` names an interface in this network namespace: a
/// start checks it before it loads or pins anything.
pub fn check_iface(iface: &str) -> Result<()> {
    let c = std::ffi::CString::new(iface)
        .map_err(|_| anyhow!("interface name {iface:?} contains a NUL byte"))?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
        return Err(anyhow!(
            "no interface named {iface} in this network namespace ({}); nothing was loaded \
             or pinned",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Loads program `name` and attaches it to `iface`. If a link is already
/// pinned at `link_path` (a restart, or --keep-attached earlier), the
/// program behind it is replaced atomically and no packet goes
/// unanswered; otherwise a new link is created and pinned there.
/// Returns how it was attached, for the log.
pub fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    iface: &str,
    mode: XdpModeChoice,
    link_path: &Path,
) -> Result<String> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?;
    prog.load()
        .context("loading the XDP program into the kernel (verifier)")?;

    if link_path.exists() {
        let pinned = PinnedLink::from_pin(link_path)
            .with_context(|| format!("opening pinned link {}", link_path.display()))?;
        let fd_link: FdLink = pinned.into();
        let xdp_link = fd_link
            .try_into()
            .context("pinned link is not an XDP link")?;
        prog.attach_to_link(xdp_link)
            .context("replacing the program behind the pinned link")?;
        return Ok("replaced the program behind the existing pinned link".into());
    }

    let (link_id, used) = match mode {
        XdpModeChoice::Native => (attach_mode(prog, iface, XdpMode::Driver)?, "native"),
        XdpModeChoice::Skb => (attach_mode(prog, iface, XdpMode::Skb)?, "skb"),
        XdpModeChoice::Auto => match attach_mode(prog, iface, XdpMode::Driver) {
            Ok(id) => (id, "native"),
            Err(e) => {
                log::warn!("native XDP on {iface} failed ({e:#}); falling back to SKB mode");
                (attach_mode(prog, iface, XdpMode::Skb)?, "skb")
            }
        },
    };
    let link = prog.take_link(link_id)?;
    let fd_link: FdLink = link
        .try_into()
        .context("the kernel attached XDP without a bpf_link; cannot pin it")?;
    fd_link
        .pin(link_path)
        .with_context(|| format!("pinning the link at {}", link_path.display()))?;
    Ok(format!("attached in {used} mode"))
}

fn attach_mode(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId> {
    prog.attach(iface, mode)
        .with_context(|| format!("attaching XDP to {iface} in {mode:?} mode"))
}

/// Removes the pinned link: the program detaches when the last reference
/// goes. Returns whether there was one.
pub fn detach(link_path: &Path) -> Result<bool> {
    if !link_path.exists() {
        return Ok(false);
    }
    let pinned = PinnedLink::from_pin(link_path)
        .with_context(|| format!("opening pinned link {}", link_path.display()))?;
    let fd_link = pinned.unpin()?;
    drop(fd_link);
    Ok(true)
}
