//! Abuse of the XDP fast path, tried from an attacker on the wire (the
//! lab's client namespace, sending and capturing raw Ethernet frames on
//! its end of the veth pair): a CRLF ping to the subnet's directed
//! broadcast, and a CRLF ping in a frame addressed to another host's MAC
//! (as a switch floods or mirrors it). Neither may get a pong; the
//! counters say why. In native and SKB mode, like e2e.rs.

#[allow(unused_imports)] // common re-exports what other suites use
mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use common::{client_socket, config_set, counters, delta, ANSWER_WAIT, SILENCE_WAIT};
use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use sip_ka::lab::{
    self,
    packet::{PacketBuilder, CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

const DIRECTED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 255);
const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0x5a, 0, 0x99];

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = lab::run(
        std::process::Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", dev]),
    )
    .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {text:?}"));
    let mut mac = [0u8; 6];
    for (b, h) in mac.iter_mut().zip(hex.split(':')) {
        *b = u8::from_str_radix(h, 16).expect("MAC octet");
    }
    mac
}

/// An AF_PACKET socket on the attacker's interface: sends frames as
/// given, sees every frame that arrives.
struct Raw {
    fd: OwnedFd,
}

impl Raw {
    fn open(lab: &Lab) -> Raw {
        let ns = format!("/run/netns/{}", lab.client_ns);
        let dev = lab.client_if.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).unwrap_or_else(|e| panic!("opening {ns}: {e}"));
            assert_eq!(
                unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns"
            );
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(dev).unwrap();
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0, "no interface {name:?}");
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            Raw { fd }
        })
        .join()
        .expect("raw socket thread")
    }

    fn send(&self, frame: &[u8]) {
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Pongs (UDP from port 5060 to `port`, payload CRLF) that arrive
    /// within `wait`, as (source MAC, source IP); returns at the first
    /// when `first` is set.
    fn pongs(&self, port: u16, wait: Duration, first: bool) -> Vec<([u8; 6], Ipv4Addr)> {
        let deadline = Instant::now() + wait;
        let mut found = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..100_000 {
            if Instant::now() >= deadline || (first && !found.is_empty()) {
                break;
            }
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let Ok(h) = PacketHeaders::from_ethernet_slice(&buf[..n as usize]) else {
                continue;
            };
            let (Some(etherparse::LinkHeader::Ethernet2(eth)), Some(NetHeaders::Ipv4(ip, _))) =
                (&h.link, &h.net)
            else {
                continue;
            };
            if let Some(TransportHeader::Udp(udp)) = &h.transport {
                if udp.source_port == 5060
                    && udp.destination_port == port
                    && h.payload.slice() == CRLF_PONG
                {
                    found.push((eth.source, Ipv4Addr::from(ip.source)));
                }
            }
        }
        found
    }
}

fn broadcast_and_foreign_frames_get_no_pong(mode: &str) {
    let mut lab = common::lab();
    common::start(&mut lab, &["--mode", "offload", "--xdp-mode", mode]);
    assert_eq!(common::attached_mode(&lab), mode, "XDP mode");
    let server_mac = mac_of(&lab.server_ns, &lab.server_if);
    let client_mac = mac_of(&lab.client_ns, &lab.client_if);

    // The daemon wrote the interface's identity into CONFIG.
    let get = |key: &str| {
        let out = lab::run(&mut lab.sip_ka(&["config", "get", key]).unwrap()).expect("config get");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mac_text = server_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(get("own_mac"), mac_text, "{mode}: own_mac");
    assert_eq!(
        get("broadcast_v4"),
        DIRECTED.to_string(),
        "{mode}: broadcast_v4"
    );

    let raw = Raw::open(&lab);
    let ping = |sport: u16| {
        PacketBuilder::udp4(CLIENT_V4, sport, SERVER_V4, 5060, CRLF_PING)
            .macs(client_mac, server_mac)
    };
    // The control: the same ping to this host is answered and captured.
    raw.send(&ping(41000).build());
    let got = raw.pongs(41000, ANSWER_WAIT, true);
    assert_eq!(got, vec![(server_mac, SERVER_V4)], "{mode}: control ping");

    let cases: [(&str, Option<Vec<u8>>, u16, &str); 4] = [
        (
            "a UDP socket's ping to the directed broadcast",
            None,
            41001,
            "pass_eth_group",
        ),
        (
            "directed broadcast in an Ethernet broadcast frame",
            Some(
                ping(41002)
                    .dst_ip(DIRECTED)
                    .macs(client_mac, [0xff; 6])
                    .build(),
            ),
            41002,
            "pass_eth_group",
        ),
        (
            "directed broadcast in a frame to this host's MAC",
            Some(ping(41003).dst_ip(DIRECTED).build()),
            41003,
            "pass_bad_address",
        ),
        (
            "a frame for another host's MAC",
            Some(ping(41004).macs(client_mac, OTHER_HOST).build()),
            41004,
            "pass_other_host",
        ),
    ];
    for (what, frame, port, counter) in cases {
        let before = counters(&lab);
        match frame {
            Some(f) => raw.send(&f),
            None => {
                let sock = client_socket(&lab, SocketAddr::new(CLIENT_V4.into(), port));
                sock.set_broadcast(true).expect("SO_BROADCAST");
                sock.send_to(CRLF_PING, SocketAddr::new(DIRECTED.into(), 5060))
                    .expect("send_to the broadcast");
            }
        }
        let got = raw.pongs(port, SILENCE_WAIT, false);
        assert!(got.is_empty(), "{mode}: {what}: answered: {got:02x?}");
        delta(&before, &counters(&lab)).expect(
            &format!("{mode}: {what}"),
            &[("crlf_ping", 1), (counter, 1), ("crlf_pong_sent", 0)],
        );
    }

    // An operator's `config set own_mac` (e.g. after a MAC change) is
    // what the fast path answers to, at once.
    config_set(&lab, "own_mac", "02:00:00:5a:00:99");
    raw.send(&ping(41005).macs(client_mac, OTHER_HOST).build());
    assert_eq!(
        raw.pongs(41005, ANSWER_WAIT, true).len(),
        1,
        "{mode}: ping to the configured MAC"
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn broadcast_and_foreign_frames_get_no_pong_native() {
    broadcast_and_foreign_frames_get_no_pong("native");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn broadcast_and_foreign_frames_get_no_pong_skb() {
    broadcast_and_foreign_frames_get_no_pong("skb");
}
