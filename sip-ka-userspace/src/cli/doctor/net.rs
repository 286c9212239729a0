//! The network side of the checks: the phones' interface (its driver and
//! whether that runs XDP natively, its MTU and queues), the sysctls that
//! decide which sources reach the daemon's sockets, and the SIP ports.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    process::Command,
};

use super::report::Check;
use crate::bpf::{attach, iface::Identity};

/// `struct ifreq`: a name and a union of which these checks use the
/// pointer (SIOCETHTOOL), the MTU and the flags.
#[repr(C)]
union IfrData {
    ptr: *mut libc::c_void,
    int: libc::c_int,
    flags: libc::c_short,
    _size: [u8; 24],
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: IfrData,
}

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// The interface as the kernel reports it through ioctls, which answer
/// for this network namespace (/sys/class/net may show another: `nsenter
/// --net` keeps the host's /sys).
#[derive(Debug, Default)]
pub struct Link {
    pub up: bool,
    pub mtu: Option<u32>,
    /// `ethtool -i`'s driver.
    pub driver: Option<String>,
    /// `ethtool -l`: RX and TX queues in use (combined counted in both).
    pub queues: Option<(u32, u32)>,
}

fn ioctl(fd: &OwnedFd, iface: &str, request: libc::c_ulong, data: IfrData) -> Option<IfReq> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data,
    };
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a struct ifreq; for SIOCETHTOOL its pointer names
    // a buffer the caller sized for the command.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut req as *mut IfReq) };
    (r == 0).then_some(req)
}

impl Link {
    pub fn read(iface: &str) -> Link {
        // SAFETY: a plain socket(2); the descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Link::default();
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut link = Link::default();
        if let Some(r) = ioctl(&fd, iface, libc::SIOCGIFFLAGS as _, IfrData { int: 0 }) {
            link.up = unsafe { r.data.flags } as i32 & libc::IFF_UP != 0;
        }
        if let Some(r) = ioctl(&fd, iface, libc::SIOCGIFMTU as _, IfrData { int: 0 }) {
            link.mtu = u32::try_from(unsafe { r.data.int }).ok();
        }
        // struct ethtool_drvinfo: cmd, then driver[32] at byte 4.
        let mut info = [0u32; 49];
        info[0] = ETHTOOL_GDRVINFO;
        let ptr = info.as_mut_ptr().cast();
        if ioctl(&fd, iface, libc::SIOCETHTOOL as _, IfrData { ptr }).is_some() {
            let bytes: Vec<u8> = info[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            link.driver =
                Some(String::from_utf8_lossy(&bytes[..end]).into_owned()).filter(|d| !d.is_empty());
        }
        if link.driver.is_none() {
            link.driver = std::fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        // struct ethtool_channels: cmd, max_rx, max_tx, max_other,
        // max_combined, rx_count, tx_count, other_count, combined_count.
        let mut ch = [0u32; 9];
        ch[0] = ETHTOOL_GCHANNELS;
        let ptr = ch.as_mut_ptr().cast();
        if ioctl(&fd, iface, libc::SIOCETHTOOL as _, IfrData { ptr }).is_some() {
            link.queues = Some((ch[5] + ch[8], ch[6] + ch[8])).filter(|&(rx, tx)| rx + tx > 0);
        }
        if link.queues.is_none() {
            link.queues = sysfs_queues(iface);
        }
        link
    }
}

/// RX and TX queues as /sys/class/net/IF/queues lists them, when that
/// /sys is this network namespace's (the same index for the name).
fn sysfs_queues(iface: &str) -> Option<(u32, u32)> {
    let dir = Path::new("/sys/class/net").join(iface);
    let index: u32 = std::fs::read_to_string(dir.join("ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } != index {
        return None;
    }
    let (mut rx, mut tx) = (0, 0);
    for e in std::fs::read_dir(dir.join("queues")).ok()?.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("rx-") {
            rx += 1;
        } else if n.starts_with("tx-") {
            tx += 1;
        }
    }
    Some((rx, tx)).filter(|&(rx, tx)| rx + tx > 0)
}

/// Drivers that run XDP in the driver (native mode), as `ethtool -i`
/// names them.
pub const NATIVE_XDP: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "mlx4_en",
    "mlx5_core",
    "i40e",
    "ice",
    "idpf",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "gve",
    "hv_netvsc",
    "nfp",
    "qede",
    "sfc",
    "ionic",
    "mvneta",
    "mvpp2",
    "fec",
    "st_gmac",
    "bonding",
    "netdevsim",
];

/// The phones' interface: that it exists here, is up, and its addresses.
pub fn interface(iface: &str, link: &Link) -> Check {
    if let Err(e) = attach::check_iface(iface) {
        let e = format!("{e:#}");
        let e = e.split(';').next().unwrap_or(&e).to_string();
        return Check::fail(
            "interface",
            e,
            "name an interface of `ip link` (in the network namespace sip-ka runs in)",
        );
    }
    let addrs: Vec<String> = Identity::read(iface)
        .map(|id| {
            id.v4
                .iter()
                .map(|(a, m, _)| format!("{a}/{}", u32::from(*m).count_ones()))
                .collect()
        })
        .unwrap_or_default();
    let addrs = if addrs.is_empty() {
        "no IPv4 address".to_string()
    } else {
        addrs.join(", ")
    };
    if link.up {
        Check::ok("interface", format!("{iface} is up ({addrs})"))
    } else {
        Check::warn(
            "interface",
            format!("{iface} is down ({addrs}): the program attaches but nothing arrives"),
            format!("ip link set {iface} up"),
        )
    }
}

/// Whether the driver runs XDP natively; `native_only`: the configuration
/// says `xdp_mode = "native"`, so `run` refuses to fall back.
pub fn xdp_driver(iface: &str, link: &Link, native_only: bool) -> Check {
    let Some(driver) = &link.driver else {
        return Check::warn(
            "xdp driver",
            format!("cannot read {iface}'s driver (ethtool -i)"),
            format!("`ethtool -i {iface}`: see whether its driver runs XDP natively"),
        );
    };
    if NATIVE_XDP.contains(&driver.as_str()) {
        let note = match driver.as_str() {
            "veth" => ": XDP_TX on a veth needs an XDP program on its peer too",
            "virtio_net" => ": if attaching falls back, the host's guest offloads (GRO/LRO) are on",
            "bonding" => " when every slave's driver does",
            _ => "",
        };
        return Check::ok(
            "xdp driver",
            format!("{iface}: driver {driver} runs XDP natively{note}"),
        );
    }
    let below = matches!(
        driver.as_str(),
        "802.1Q VLAN Support" | "bridge" | "macvlan" | "ipvlan"
    );
    let fix = if below {
        format!("attach to the physical interface under {iface} instead")
    } else {
        "a NIC whose driver runs XDP natively (mlx5, i40e, ice, ixgbe, bnxt, ena, virtio_net, \
         ...), or accept SKB mode (`--xdp-mode skb` says so)"
            .to_string()
    };
    Check::bad(
        !native_only,
        "xdp driver",
        format!(
            "{iface}: driver {driver} does not run XDP natively{}: `sip-ka run` attaches in SKB \
             (generic) mode, where the kernel builds an skb for each packet before the program \
             sees it: it still answers, at several times the cost per packet",
            if native_only {
                ", and the configuration says xdp_mode = \"native\""
            } else {
                ""
            }
        ),
        fix,
    )
}

/// Above this MTU most drivers refuse native XDP to a program without
/// multi-buffer support (sip-ka's has none): the frame must fit one page
/// with XDP's headroom (mlx5: 3498; i40e less).
pub const XDP_MAX_MTU: u32 = 3498;

pub fn mtu(iface: &str, link: &Link) -> Check {
    match link.mtu {
        None => Check::warn(
            "mtu",
            format!("cannot read {iface}'s MTU"),
            format!("`ip link show {iface}`: keep the MTU at {XDP_MAX_MTU} or below"),
        ),
        Some(m) if m <= XDP_MAX_MTU => Check::ok("mtu", format!("{m} on {iface}")),
        Some(m) => Check::warn(
            "mtu",
            format!(
                "{m} on {iface}: native XDP on most drivers takes a frame in one page, so above \
                 ~{XDP_MAX_MTU} they refuse a program without multi-buffer support (sip-ka's) \
                 and `run` falls back to SKB mode"
            ),
            format!(
                "ip link set {iface} mtu 1500 (SIP keep-alives need no jumbo frames), or \
                 accept SKB mode"
            ),
        ),
    }
}

pub fn queues(iface: &str, link: &Link) -> Check {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let virtual_dev = matches!(link.driver.as_deref(), Some("veth" | "tun" | "netdevsim"));
    match link.queues {
        None => Check::ok(
            "queues",
            format!("{iface}: the driver does not report its queues (ethtool -l)"),
        ),
        Some((1, _)) if cpus > 1 && link.driver.is_some() && !virtual_dev => Check::warn(
            "queues",
            format!(
                "{iface}: 1 RX queue for {cpus} CPUs: every packet is handled by the CPU \
                 serving it"
            ),
            format!("ethtool -L {iface} combined {cpus} (if the NIC has the queues)"),
        ),
        Some((rx, tx)) => Check::ok(
            "queues",
            format!("{iface}: {rx} RX, {tx} TX queues ({cpus} CPUs)"),
        ),
    }
}

/// `net.ipv4.conf.<iface>.<key>` (`None` when unreadable).
pub fn conf(iface: &str, key: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/{key}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Where the PBX is, for the sysctl checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pbx {
    /// No --upstream: offload mode.
    None,
    /// On this host.
    Local,
    /// Behind this interface (not the phones').
    Behind(String),
    /// On the phones' side, or nowhere to tell.
    Elsewhere,
}

/// The reverse-path filter on the phones' interface. The kernel uses the
/// larger of `all` and the interface's value.
///
/// Strict (1) is what sip-ka wants; loose (2) or off (0) fails when the
/// edge trusts a PBX behind another interface (and warns otherwise): XDP
/// answers its keep-alives before the filter, but everything it passes
/// to the daemon (the edge's SIP, the userspace responder's keep-alives)
/// meets it, and a loose filter accepts from the phones' side any source
/// the host routes somewhere, the PBX's address included. The edge knows
/// the PBX by its source address alone, so a phone could then answer for
/// the PBX, or send it requests the edge takes as the PBX's. Without such
/// a PBX (offload mode, a PBX on this host: the martian check guards it)
/// spoofed sources only get answers sent to other networks: a warning.
/// With `--trust-upstream-source` the operator says a firewall does this
/// filtering: a warning too.
pub fn rp_filter(iface: &str, pbx: &Pbx, trust: bool) -> Check {
    let (all, dev) = (conf("all", "rp_filter"), conf(iface, "rp_filter"));
    let show = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
    let values = format!("all={}, {iface}={}", show(all), show(dev));
    let eff = all.max(dev);
    let fix = format!(
        "sysctl -w net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.{iface}.rp_filter=1 (and the \
         same in /etc/sysctl.d/)"
    );
    match eff {
        Some(1) => Check::ok(
            "rp_filter",
            format!(
                "strict on {iface} ({values}): a packet from the phones' side with a source \
                 routed through another interface is dropped"
            ),
        ),
        Some(v @ (0 | 2)) => {
            let mode = if v == 2 { "loose (2)" } else { "off (0)" };
            match pbx {
                Pbx::Behind(other) if !trust => Check::fail(
                    "rp_filter",
                    format!(
                        "{mode} on {iface} ({values}): a phone can send with the address of \
                         the PBX behind {other}, and the edge takes it as the PBX"
                    ),
                    fix,
                ),
                _ => Check::warn(
                    "rp_filter",
                    format!(
                        "{mode} on {iface} ({values}): packets from the phones' side with \
                         sources of other networks reach the daemon, which answers them there"
                    ),
                    fix,
                ),
            }
        }
        _ => Check::warn(
            "rp_filter",
            format!("cannot read rp_filter for {iface} ({values})"),
            fix,
        ),
    }
}

/// `accept_local` on the phones' interface: set, the kernel takes packets
/// with this host's own addresses as source from there, so a PBX on this
/// host can be impersonated (fails for the edge then).
pub fn accept_local(iface: &str, pbx: &Pbx, trust: bool) -> Check {
    let (all, dev) = (conf("all", "accept_local"), conf(iface, "accept_local"));
    let fix =
        format!("sysctl -w net.ipv4.conf.all.accept_local=0 net.ipv4.conf.{iface}.accept_local=0");
    match all.max(dev) {
        Some(0) => Check::ok(
            "accept_local",
            format!(
                "off on {iface}: packets from there with this host's addresses as source are \
                 dropped (martians)"
            ),
        ),
        Some(_) => Check::bad(
            *pbx != Pbx::Local || trust,
            "accept_local",
            format!(
                "on for {iface}: the kernel takes packets from the phones' side with this \
                 host's addresses as source{}",
                if *pbx == Pbx::Local {
                    ", so a phone can send as the PBX on this host"
                } else {
                    ""
                }
            ),
            fix,
        ),
        None => Check::warn(
            "accept_local",
            format!("cannot read accept_local for {iface}"),
            fix,
        ),
    }
}

/// `--listen` addresses this host does not have: bindable only with
/// `ip_nonlocal_bind` (an HA pair's VIP, held by one node at a time).
/// Returns the check (when some address is not local) and whether those
/// addresses can be bound now.
pub fn nonlocal_bind(listen: &[SocketAddr]) -> (Option<Check>, bool) {
    let host = crate::bpf::iface::host_addresses();
    let foreign: Vec<IpAddr> = listen
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback() && !host.contains(ip))
        .fold(Vec::new(), |mut v, ip| {
            if !v.contains(&ip) {
                v.push(ip);
            }
            v
        });
    if foreign.is_empty() {
        return (None, true);
    }
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    for (family, key) in [("ipv4", false), ("ipv6", true)] {
        if !foreign.iter().any(|ip| ip.is_ipv6() == key) {
            continue;
        }
        let path = format!("/proc/sys/net/{family}/ip_nonlocal_bind");
        let v = std::fs::read_to_string(Path::new(&path))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if v != Some(1) {
            bad.push(format!(
                "net.{family}.ip_nonlocal_bind is {}",
                v.map_or("unreadable".to_string(), |v| v.to_string())
            ));
            fixes.push(format!("net.{family}.ip_nonlocal_bind=1"));
        }
    }
    let addrs: Vec<String> = foreign.iter().map(IpAddr::to_string).collect();
    let addrs = addrs.join(", ");
    if bad.is_empty() {
        (
            Some(Check::ok(
                "nonlocal_bind",
                format!(
                    "{addrs} not on this host (an HA pair's VIP?): ip_nonlocal_bind=1 lets the \
                     daemon bind it before it arrives"
                ),
            )),
            true,
        )
    } else {
        (
            Some(Check::fail(
                "nonlocal_bind",
                format!(
                    "--listen {addrs} is not on this host and {}: the daemon cannot bind it \
                     while the other node of the pair holds it",
                    bad.join(", ")
                ),
                format!(
                    "sysctl -w {} (and in /etc/sysctl.d/), or --listen an address this host has",
                    fixes.join(" ")
                ),
            )),
            false,
        )
    }
}

/// Whether `addr` can be bound (UDP, or TCP), released at once; `soft`:
/// taken is a warning (the default 5060 of offload mode, where the PBX
/// beside sip-ka holds it).
pub fn port(addr: SocketAddr, tcp: bool, soft: bool) -> Check {
    let proto = if tcp { "TCP" } else { "UDP" };
    let bound = if tcp {
        TcpListener::bind(addr).map(drop)
    } else {
        UdpSocket::bind(addr).map(drop)
    };
    match bound {
        Ok(()) => Check::ok("port", format!("{proto} {addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let who = holder(tcp, addr.port()).unwrap_or_else(|| {
                "a socket `ss` does not show (another network namespace, or run as root to see \
                 the process)"
                    .to_string()
            });
            if soft {
                Check::warn(
                    "port",
                    format!(
                        "{proto} {addr} is taken by {who}: fine for offload mode beside that PBX \
                         (the daemon binds no SIP port), not for the edge"
                    ),
                    "for edge mode, stop it or move it (the PBX behind the edge listens \
                     elsewhere, e.g. 5080); check the edge's address with --listen",
                )
            } else {
                Check::fail(
                    "port",
                    format!("{proto} {addr} is taken by {who}"),
                    "stop it, move it to another port (a PBX behind the edge: e.g. 5080), or \
                     --listen elsewhere",
                )
            }
        }
        Err(e) => Check::fail(
            "port",
            format!("{proto} {addr} cannot be bound: {e}"),
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                "use a port above 1023 (5060 is), or give the daemon CAP_NET_BIND_SERVICE"
            } else {
                "--listen an address of this host (`ip addr`)"
            },
        ),
    }
}

/// Who holds a listening port, as `ss -p` tells: `asterisk (pid 812)`.
fn holder(tcp: bool, port: u16) -> Option<String> {
    let out = Command::new("ss")
        .arg(if tcp { "-Hltnp" } else { "-Hlunp" })
        .args(["sport", "=", &format!(":{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut who: Vec<String> = Vec::new();
    for users in text.lines().filter_map(|l| l.split("users:((").nth(1)) {
        for proc_ in users.trim_end_matches("))").split("),(") {
            let mut fields = proc_.split(',');
            let name = fields.next().unwrap_or("").trim_matches('"');
            let pid = fields.find_map(|f| f.strip_prefix("pid="));
            let one = match pid {
                Some(pid) => format!("{name} (pid {pid})"),
                None => name.to_string(),
            };
            if !name.is_empty() && !who.contains(&one) {
                who.push(one);
            }
        }
    }
    (!who.is_empty()).then(|| who.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::report::Status;
    use super::*;

    #[test]
    fn loopback_is_read_through_ioctls() {
        let link = Link::read("lo");
        assert!(link.up);
        assert_eq!(link.mtu, Some(65536));
        let c = interface("lo", &link);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(
            interface("no-such-if0", &Link::default()).status,
            Status::Fail
        );
    }

    #[test]
    fn drivers_and_mtus() {
        let link = |driver: &str, mtu: u32| Link {
            up: true,
            mtu: Some(mtu),
            driver: Some(driver.to_string()),
            queues: Some((4, 4)),
        };
        assert_eq!(
            xdp_driver("eth0", &link("mlx5_core", 1500), false).status,
            Status::Ok
        );
        assert_eq!(
            xdp_driver("eth0", &link("e1000e", 1500), false).status,
            Status::Warn
        );
        assert_eq!(
            xdp_driver("eth0", &link("e1000e", 1500), true).status,
            Status::Fail
        );
        assert_eq!(mtu("eth0", &link("ice", 1500)).status, Status::Ok);
        assert_eq!(mtu("eth0", &link("ice", 9000)).status, Status::Warn);
    }

    #[test]
    fn a_taken_port_fails_and_a_free_one_passes() {
        let held = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let c = port(addr, false, false);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.finding.contains("taken by"), "{c:?}");
        drop(held);
        assert_eq!(port(addr, false, false).status, Status::Ok);
    }
}
