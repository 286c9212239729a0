//! A daemon's life on its pin directory: a mistaken second `sip-ka run`
//! or a failed start never takes the fast path down or leaves pins that
//! look like a daemon; the CLI says plainly when no daemon is attached;
//! maps pinned by another version are refused with the way to migrate.
//!
//! Needs root (BPF, network namespaces); `cargo xtask test` runs it.

#[allow(unused_imports)] // the helpers re-export more than this suite uses
mod common;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Output,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{client_socket, exchange, text, ANSWER_WAIT};
use sip_ka::lab::{
    self,
    packet::{CRLF_PING, CRLF_PONG},
    Lab, SERVER_V4,
};
use sip_ka_common::maps::{PeerKey, PeerValue, PINNED_MAPS, PIN_LINK_PREFIX};

fn server4() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), 5060)
}

/// A pin directory of the test's own next to the lab's (same name prefix,
/// so a crashed run's is swept too), removed with its lock and state
/// directory on drop.
struct ScratchPins(PathBuf);

impl ScratchPins {
    fn new(lab: &Lab, tag: &str) -> ScratchPins {
        ScratchPins(PathBuf::from(format!("{}{tag}", lab.pin_dir.display())))
    }

    /// What is in it (empty when it does not exist).
    fn listing(&self) -> Vec<String> {
        listing(&self.0)
    }
}

impl Drop for ScratchPins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir_all(sip_ka::edge::persist::default_state_dir(&self.0));
        if let Some(name) = self.0.file_name() {
            let lock = Path::new("/run/sip-ka").join(format!("{}.lock", name.to_string_lossy()));
            let _ = std::fs::remove_file(lock);
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The pins a daemon attached to `iface` keeps in `dir`.
fn daemon_pins(dir: &Path, iface: &str) -> Vec<PathBuf> {
    PINNED_MAPS
        .iter()
        .map(|m| dir.join(m))
        .chain([dir.join(format!("{PIN_LINK_PREFIX}{iface}"))])
        .collect()
}

/// `sip-ka run <args> --pin-dir <dir>` in the server namespace, bounded by
/// `timeout` (a start that should fail but comes up is stopped after
/// `secs`), with its output.
fn sip_ka_run(lab: &Lab, dir: &Path, secs: u32, args: &[&str]) -> Output {
    let exe = lab::sip_ka_exe().expect("sip-ka binary");
    let mut cmd = lab.server("timeout");
    cmd.args(["-k", "2", &secs.to_string()])
        .arg(exe)
        .arg("run")
        .args(args)
        .arg("--pin-dir")
        .arg(dir);
    common::run_capture(&mut cmd)
}

/// `sip-ka <args> --pin-dir <dir>`, with its output.
fn sip_ka(dir: &Path, args: &[&str]) -> Output {
    let exe = lab::sip_ka_exe().expect("sip-ka binary");
    common::run_capture(
        std::process::Command::new(exe)
            .args(args)
            .arg("--pin-dir")
            .arg(dir),
    )
}

/// A UDP socket bound in the server namespace (to hold a port a start
/// then finds taken).
fn server_socket(lab: &Lab, bind: SocketAddr) -> std::net::UdpSocket {
    let ns = format!("/run/netns/{}", lab.server_ns);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).unwrap_or_else(|e| panic!("opening {ns}: {e}"));
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        std::net::UdpSocket::bind(bind).unwrap_or_else(|e| panic!("binding {bind}: {e}"))
    })
    .join()
    .expect("server socket thread")
}

/// A steady pinger: a CRLF ping every 10 ms, each waiting for its pong,
/// for at least 3 s and until `stop` is set (bounded: 30 s, 3000 pings);
/// returns (sent, answered).
fn steady_pinger(lab: &Lab, stop: Arc<AtomicBool>) -> JoinHandle<(u32, u32)> {
    let sock = client_socket(lab, "198.18.0.2:0".parse().expect("addr"));
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut sent, mut answered) = (0u32, 0u32);
        while sent < 3000 && start.elapsed() < Duration::from_secs(30) {
            if start.elapsed() >= Duration::from_secs(3) && stop.load(Ordering::Relaxed) {
                break;
            }
            sent += 1;
            if let Some((reply, _)) = exchange(&sock, server4(), CRLF_PING, ANSWER_WAIT) {
                answered += (reply == CRLF_PONG) as u32;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (sent, answered)
    })
}

/// Runs `start` (a `sip-ka run` that must fail) while a steady pinger
/// runs, from 300 ms before it until 1 s after it ended; returns its
/// output and the pinger's (sent, answered).
fn pinged_around(lab: &Lab, start: impl FnOnce() -> Output) -> (Output, u32, u32) {
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = steady_pinger(lab, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let out = start();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (sent, answered) = pinger.join().expect("pinger thread");
    (out, sent, answered)
}

fn assert_pins_exist(dir: &Path, iface: &str, what: &str) {
    let missing: Vec<_> = daemon_pins(dir, iface)
        .into_iter()
        .filter(|p| !p.exists())
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: pins gone: {missing:?} (left: {:?})",
        listing(dir)
    );
}

// ---------------------------------------------------------------------------
// A second daemon on a pin dir in use is refused before it touches
// anything: the running one keeps answering every ping and keeps its pins.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_second_daemon_on_a_pin_dir_in_use_is_refused_and_touches_nothing() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--listen", "198.18.0.1:5070"]);
    let pid = lab.daemon_pid().expect("daemon pid");
    // Its --listen address is the running daemon's: it would fail anyway.
    let (out, sent, answered) = pinged_around(&lab, || {
        sip_ka_run(
            &lab,
            &lab.pin_dir,
            20,
            &["--iface", &lab.server_if, "--listen", "198.18.0.1:5070"],
        )
    });

    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "the second `sip-ka run` did not fail at once ({}): {}",
        out.status,
        text(&out)
    );
    assert_eq!(
        answered,
        sent,
        "pings went unanswered around the second start: {}",
        text(&out)
    );
    assert!(sent >= 100, "only {sent} pings sent");
    assert_pins_exist(&lab.pin_dir, &lab.server_if, "after the second start");
    assert_eq!(common::attached_mode(&lab), "native");
    assert!(
        text(&out).contains(&format!("pid {pid}")),
        "the refusal does not name the running daemon (pid {pid}): {}",
        text(&out)
    );

    // The first daemon is still the owner: it stops cleanly and detaches.
    let status = lab.stop_daemon().expect("stopping the daemon");
    assert!(status.success(), "sip-ka run exited with {status}");
    assert_eq!(common::attached_mode(&lab), "none", "detached on exit");
}

// ---------------------------------------------------------------------------
// A start that fails leaves none of its pins behind, and the CLI then says
// that no daemon is attached instead of printing nothing.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_failed_start_leaves_no_pins_and_the_cli_says_no_daemon_is_attached() {
    let lab = common::lab();
    let d = ScratchPins::new(&lab, "n");

    let out = sip_ka_run(&lab, &d.0, 20, &["--iface", "nosuch0"]);
    assert!(!out.status.success(), "started on nosuch0: {}", text(&out));
    assert!(text(&out).contains("nosuch0"), "{}", text(&out));
    assert_eq!(
        d.listing(),
        Vec::<String>::new(),
        "a failed start on nosuch0 left pins in {}",
        d.0.display()
    );

    for args in [
        &["stats"][..],
        &["stats", "--json"],
        &["peers"],
        &["dialogs"],
        &["config", "get"],
        &["acl", "list"],
        &["detach", "--iface", "nosuch0"],
    ] {
        let out = sip_ka(&d.0, args);
        assert!(
            !out.status.success(),
            "`sip-ka {}` succeeded with no daemon: {}",
            args.join(" "),
            text(&out)
        );
        let msg = text(&out);
        assert!(
            msg.contains("no sip-ka daemon is attached") && msg.contains(&*d.0.to_string_lossy()),
            "`sip-ka {}` does not say plainly that no daemon is attached to {}: {msg}",
            args.join(" "),
            d.0.display()
        );
    }

    // A start that fails after it loaded, pinned and attached (its
    // --listen address is taken): nothing of it stays, XDP is off again.
    let _held = server_socket(&lab, "198.18.0.1:5071".parse().expect("addr"));
    let d2 = ScratchPins::new(&lab, "l");
    let out = sip_ka_run(
        &lab,
        &d2.0,
        20,
        &["--iface", &lab.server_if, "--listen", "198.18.0.1:5071"],
    );
    assert!(!out.status.success(), "started: {}", text(&out));
    assert!(text(&out).contains("198.18.0.1:5071"), "{}", text(&out));
    assert_eq!(d2.listing(), Vec::<String>::new(), "{}", text(&out));
    assert_eq!(common::attached_mode(&lab), "none", "still attached");
}

// ---------------------------------------------------------------------------
// A failed restart takes back only what it created: the pins a daemon
// left with --keep-attached stay, and the fast path keeps answering.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_failed_restart_keeps_what_a_keep_attached_run_left() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--keep-attached"]);
    let status = lab.stop_daemon().expect("stopping the daemon");
    assert!(status.success(), "sip-ka run exited with {status}");
    let _held = server_socket(&lab, "198.18.0.1:5072".parse().expect("addr"));
    let (out, sent, answered) = pinged_around(&lab, || {
        sip_ka_run(
            &lab,
            &lab.pin_dir,
            20,
            &["--iface", &lab.server_if, "--listen", "198.18.0.1:5072"],
        )
    });

    assert!(!out.status.success(), "started: {}", text(&out));
    assert_eq!(answered, sent, "pings unanswered: {}", text(&out));
    assert!(sent >= 100, "only {sent} pings sent");
    assert_pins_exist(&lab.pin_dir, &lab.server_if, "after the failed restart");
    assert_eq!(common::attached_mode(&lab), "native");
    assert!(lab.counters().expect("stats")["crlf_pong_sent"] >= sent as u64);
}

// ---------------------------------------------------------------------------
// Maps pinned with another layout (as another version leaves them) are
// refused before anything is loaded, with the way to migrate.

/// Creates a BPF map and pins it at `path` with raw bpf(2), as a version
/// of sip-ka with other map definitions would have.
fn pin_map(path: &Path, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
        rest: [u8; 64],
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        rest: [u8; 64],
    }
    let mut map_name = [0u8; 16];
    let name = path.file_name().expect("name").as_encoded_bytes();
    map_name[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
    let create = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name,
        rest: [0; 64],
    };
    // SAFETY: BPF_MAP_CREATE reads `create` only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            &create as *const MapCreate,
            std::mem::size_of::<MapCreate>() as u32,
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let pin = ObjPin {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
        rest: [0; 64],
    };
    // SAFETY: BPF_OBJ_PIN reads `pin` and the path it points to.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            6, // BPF_OBJ_PIN
            &pin as *const ObjPin,
            std::mem::size_of::<ObjPin>() as u32,
        )
    };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd as i32) };
    assert_eq!(r, 0, "BPF_OBJ_PIN {}: {err}", path.display());
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn maps_pinned_with_another_layout_are_refused_with_the_way_to_migrate() {
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let lab = common::lab();
    let d = ScratchPins::new(&lab, "v");
    std::fs::create_dir_all(&d.0).expect("pin dir");
    // PEERS as a version with a smaller table left it.
    pin_map(
        &d.0.join("PEERS"),
        BPF_MAP_TYPE_LRU_HASH,
        std::mem::size_of::<PeerKey>() as u32,
        std::mem::size_of::<PeerValue>() as u32,
        1024,
    );

    let out = sip_ka_run(&lab, &d.0, 10, &["--iface", &lab.server_if]);
    let msg = text(&out);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "`sip-ka run` did not refuse the mismatched PEERS map ({}): {msg}",
        out.status
    );
    for want in [
        "PEERS: max entries 1024, this version needs 65536",
        "sip-ka detach --iface",
        &*d.0.to_string_lossy(),
    ] {
        assert!(msg.contains(want), "the refusal lacks {want:?}: {msg}");
    }
    assert_eq!(d.listing(), vec!["PEERS".to_string()], "{msg}");
    assert_eq!(common::attached_mode(&lab), "none", "attached: {msg}");

    // The migration it names works: detach removes the old maps.
    let out = sip_ka(&d.0, &["detach", "--iface", &lab.server_if]);
    assert!(out.status.success(), "detach: {}", text(&out));
    assert_eq!(d.listing(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// The edge knows the PBX by its source address: a PBX on the phones' side
// (reached through --iface) would let anyone there pose as it.

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_pbx_on_the_phones_side_is_refused() {
    let lab = common::lab();
    let d = ScratchPins::new(&lab, "u");
    // The client namespace is where the phones are.
    let pbx = format!("{}:5080", lab::CLIENT_V4);
    let edge = [
        "--mode",
        "edge",
        "--listen",
        "198.18.0.1:5072",
        "--upstream",
        &pbx,
    ];
    let mut args = vec!["--iface", lab.server_if.as_str()];
    args.extend(edge);
    let out = sip_ka_run(&lab, &d.0, 20, &args);
    let msg = text(&out);
    assert!(
        !out.status.success(),
        "started with the PBX on the phones' side: {msg}"
    );
    assert!(
        msg.contains(&pbx)
            && msg.contains(&lab.server_if)
            && msg.contains("--trust-upstream-source"),
        "the refusal does not name the PBX, the interface and the way out: {msg}"
    );
    assert_eq!(
        d.listing(),
        Vec::<String>::new(),
        "a refused start left pins: {msg}"
    );

    // With the operator's word that a firewall guards it, it starts (and
    // runs until the timeout stops it).
    args.push("--trust-upstream-source");
    let out = sip_ka_run(&lab, &d.0, 4, &args);
    let msg = text(&out);
    assert_eq!(
        out.status.code(),
        Some(124),
        "did not run until the timeout: {msg}"
    );
    assert!(!msg.contains("the interface the phones come from"), "{msg}");

    // A PBX on the host itself (the lab's, on the edge's own address) is
    // fine: the kernel drops packets with the host's addresses as source
    // arriving from outside.
    let d2 = ScratchPins::new(&lab, "v");
    let mut args = vec!["--iface", lab.server_if.as_str()];
    args.extend([
        "--mode",
        "edge",
        "--listen",
        "198.18.0.1:5073",
        "--upstream",
        "198.18.0.1:5080",
    ]);
    let out = sip_ka_run(&lab, &d2.0, 4, &args);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
}
