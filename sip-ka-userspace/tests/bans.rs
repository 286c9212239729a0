//! Bans over the daemon's life, in the namespace lab: a ban survives
//! `kill -9` and a restart, lifts on time with no daemon running, is
//! lifted at once by `sip-ka bans remove`; with `--xdp off` the userspace
//! responder drops a banned source; `--blocklist` files are read again
//! when they change, and `--never-ban` wins over them.
//!
//! Needs root; `cargo xtask test` (or `-- --include-ignored`) runs them.
//! Every wait is bounded; each test builds its own lab.

#[allow(unused_imports)] // helpers the other end-to-end tests use
mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use common::{client_socket, exchange, ANSWER_WAIT, SILENCE_WAIT};
use sip_ka::lab::{self, packet::CRLF_PING, Lab, CLIENT_V4, SERVER_V4};

fn server() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), 5060)
}

fn sock(lab: &Lab) -> UdpSocket {
    client_socket(lab, SocketAddr::new(CLIENT_V4.into(), 0))
}

fn answered(s: &UdpSocket) -> bool {
    exchange(s, server(), CRLF_PING, ANSWER_WAIT).is_some()
}

fn silent(s: &UdpSocket) -> bool {
    exchange(s, server(), CRLF_PING, SILENCE_WAIT).is_none()
}

/// `sip-ka bans ARGS...` for the lab's pin directory; its stdout.
fn bans(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["bans"];
    all.extend_from_slice(args);
    let out = lab::run(&mut lab.sip_ka(&all).expect("sip-ka"))
        .unwrap_or_else(|e| panic!("sip-ka {}: {e:#}", all.join(" ")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bans listed, as (prefix, reason).
fn listed(lab: &Lab) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&bans(lab, &["--json"])).expect("bans JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|b| {
            (
                b["prefix"].as_str().unwrap_or("").to_string(),
                b["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits (bounded) for `cond`, asking again every 100 ms.
fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    assert!(
        common::wait_until(limit, &mut cond),
        "{what} within {limit:?}"
    );
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_ban_survives_kill_9_and_a_restart_and_is_lifted_at_once() {
    let mut lab = common::lab();
    common::start(&mut lab, &[]);
    let s = sock(&lab);
    assert!(answered(&s), "answered before any ban");
    let before = common::counters(&lab);
    bans(
        &lab,
        &["add", "198.18.0.2", "--for", "10m", "--reason", "test"],
    );
    assert!(silent(&s), "a banned source gets no pong");
    let d = common::delta(&before, &common::counters(&lab));
    assert!(d.get("drop_ban_manual") >= 1, "{:?}", d.0);
    assert_eq!(listed(&lab), [("198.18.0.2".into(), "manual".into())]);

    let pid = lab.daemon_pid().expect("daemon pid");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let _ = lab.stop_daemon();
    assert!(silent(&s), "still dropped with no daemon");
    common::start(&mut lab, &[]);
    assert_eq!(
        listed(&lab),
        [("198.18.0.2".into(), "manual".into())],
        "the ban is there after the restart"
    );
    assert!(silent(&s), "still dropped after the restart");
    bans(&lab, &["remove", "198.18.0.2"]);
    assert!(answered(&s), "answered at once once lifted");
    assert!(listed(&lab).is_empty());
    // The daemon took the removal too: it does not put the ban back.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(listed(&lab).is_empty());
    assert!(answered(&s));
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn a_ban_lifts_on_time_with_no_daemon_running() {
    let mut lab = common::lab();
    common::start(&mut lab, &["--keep-attached"]);
    lab.stop_daemon().expect("stopping the daemon");
    assert_eq!(common::attached_mode(&lab), "native", "left attached");
    let s = sock(&lab);
    assert!(answered(&s), "the program answers with no daemon");
    bans(&lab, &["add", "198.18.0.0/24", "--for", "2"]);
    assert!(silent(&s), "dropped while the ban holds");
    std::thread::sleep(Duration::from_millis(2100));
    within(Duration::from_secs(2), "answered once the ban ends", || {
        answered(&s)
    });
    // Its entry is still in the map (no daemon removed it), but not in
    // force: not listed.
    assert!(listed(&lab).is_empty());
    // The pins a kept program leaves are removed by `detach`.
    lab::run(
        &mut lab
            .sip_ka(&["detach", "--iface", &lab.server_if])
            .expect("sip-ka"),
    )
    .expect("sip-ka detach");
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn with_xdp_off_the_responder_drops_a_banned_source() {
    let lab = common::lab();
    let listen = server().to_string();
    let _daemon = common::Daemon::start(&lab, &["--xdp", "off", "--listen", &listen]);
    let s = sock(&lab);
    assert!(answered(&s), "the userspace responder answers");
    bans(&lab, &["add", "198.18.0.2"]);
    // The daemon takes a ban by hand from the map within a second.
    within(Duration::from_secs(3), "the responder drops it", || {
        silent(&s)
    });
    within(Duration::from_secs(2), "the drops counted", || {
        common::counters(&lab)
            .get("user_drop_banned")
            .is_some_and(|n| *n >= 1)
    });
    bans(&lab, &["remove", "198.18.0.2"]);
    within(Duration::from_secs(3), "answered again", || answered(&s));
}

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn blocklists_are_read_again_and_never_ban_wins() {
    let mut lab = common::lab();
    let dir = std::env::temp_dir().join(format!("{}-lists", lab.name));
    std::fs::create_dir_all(&dir).expect("list dir");
    let _cleanup = Cleanup(dir.clone());
    let list = dir.join("apiban.list");
    std::fs::write(&list, "# test list\n198.18.0.2 ; listed\n203.0.113.0/24\n").expect("list");
    let list_arg = list.to_string_lossy().into_owned();
    common::start(&mut lab, &["--blocklist", &list_arg]);
    let s = sock(&lab);
    assert!(silent(&s), "a listed source is dropped from the start");
    let mut got = listed(&lab);
    got.sort();
    assert_eq!(
        got,
        [
            ("198.18.0.2".to_string(), "list".to_string()),
            ("203.0.113.0/24".to_string(), "list".to_string())
        ]
    );
    // The file changes: the entry that left it is lifted.
    std::fs::write(&list, "203.0.113.0/24\n").expect("list");
    within(Duration::from_secs(4), "lifted once off the list", || {
        answered(&s)
    });
    // Listed again; then the operator allows it live: lifted at once.
    std::fs::write(&list, "203.0.113.0/24\n198.18.0.2\n").expect("list");
    within(Duration::from_secs(4), "banned again from the list", || {
        silent(&s)
    });
    common::config_set(&lab, "never_ban", "198.18.0.2/32");
    within(Duration::from_secs(4), "answered once allowed", || {
        answered(&s)
    });
    assert_eq!(
        listed(&lab),
        [("203.0.113.0/24".to_string(), "list".to_string())]
    );
    lab.stop_daemon().expect("stop");
    // Listed again, but the operator trusts that address.
    std::fs::write(&list, "198.18.0.2\n").expect("list");
    common::start(
        &mut lab,
        &["--blocklist", &list_arg, "--never-ban", "198.18.0.2/32"],
    );
    assert!(answered(&s), "--never-ban wins over a list");
    assert!(
        listed(&lab).is_empty(),
        "a list entry covering it is not applied"
    );
}

/// Removes a directory when dropped.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
