//! The soak's load: sipp as the PBX, sipp phones placing calls and
//! registering, and a CRLF/STUN pinger that waits for every answer.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{
    self,
    packet::{Stun, CRLF_PING, CRLF_PONG},
    Lab, CLIENT_V4, SERVER_V4,
};

use crate::opts::{bounded, Opts, EDGE_PORT, PBX_PORT};

const UA_SCENARIO: &str = include_str!("ua_soak.xml");
const REGISTER_SCENARIO: &str = include_str!("reg_soak.xml");
const PBX_SCENARIO: &str = include_str!("pbx_soak.xml");

/// True once a line containing `marker` was read (false at EOF or after
/// `wait`); the rest of the output is drained in the background so the
/// writer never blocks.
pub fn wait_for_line(
    out: impl std::io::Read + Send + 'static,
    marker: &str,
    wait: Duration,
) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(&marker) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(wait).is_ok()
}

/// A sipp run whose screen goes to a file (read at the end for its
/// counts).
pub struct Sipp {
    child: Child,
    screen: std::path::PathBuf,
}

impl Sipp {
    /// Stops it (SIGTERM to its `timeout`, which passes it on); its exit
    /// status says whether any of its calls failed.
    pub fn stop(mut self) -> Result<bool> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        Ok(self.child.wait()?.success())
    }
}

impl Drop for Sipp {
    /// A soak that fails half-way leaves no sipp running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// What a sipp run reported when it ended.
pub struct SippResult {
    pub successful: u64,
    pub failed: u64,
}

fn sipp(lab_cmd: std::process::Command, dir: &Path, name: &str, limit: Duration) -> Result<Sipp> {
    let screen = dir.join(format!("{name}.screen"));
    let mut cmd = bounded(lab_cmd, limit);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&screen)?)
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .with_context(|| format!("starting sipp ({name})"))?;
    Ok(Sipp { child, screen })
}

/// sipp as the PBX behind the edge.
pub fn pbx(lab: &Lab, dir: &Path, limit: Duration) -> Result<Sipp> {
    std::fs::write(dir.join("pbx.xml"), PBX_SCENARIO)?;
    let mut cmd = lab.server("sipp");
    cmd.args(["-sf", "pbx.xml", "-nostdin", "-i", &SERVER_V4.to_string()])
        .args(["-p", &PBX_PORT.to_string()]);
    sipp(cmd, dir, "pbx", limit)
}

fn edge() -> String {
    format!("{SERVER_V4}:{EDGE_PORT}")
}

/// sipp phones placing `calls` calls through the edge.
pub fn phones(lab: &Lab, dir: &Path, o: &Opts, calls: u64, limit: Duration) -> Result<Sipp> {
    let scenario = UA_SCENARIO.replace("PAUSE_MS", &o.pause_ms.to_string());
    std::fs::write(dir.join("ua.xml"), scenario)?;
    // Calls in progress at once: the rate times a call's length, doubled.
    let concurrent = (u64::from(o.call_rate) * 8 * u64::from(o.pause_ms) / 1000).max(10);
    let mut cmd = lab.client("sipp");
    cmd.args(["-sf", "ua.xml", "-t", "u1", "-s", "service", "-nostdin"])
        .args(["-m", &calls.to_string(), "-r", &o.call_rate.to_string()])
        .args(["-l", &concurrent.to_string(), "-i", &CLIENT_V4.to_string()])
        .args(["-p", "5062", "-timeout", &format!("{}s", limit.as_secs())])
        .arg(edge());
    sipp(cmd, dir, "phones", limit)
}

/// sipp registering `count` fresh Contacts through the edge, each
/// unregistered after `--pause-ms`.
pub fn registrations(lab: &Lab, dir: &Path, o: &Opts, count: u64, limit: Duration) -> Result<Sipp> {
    let scenario = REGISTER_SCENARIO.replace("PAUSE_MS", &o.pause_ms.to_string());
    std::fs::write(dir.join("reg.xml"), scenario)?;
    let concurrent = (u64::from(o.register_rate) * 2 * u64::from(o.pause_ms) / 1000).max(10);
    let mut cmd = lab.client("sipp");
    cmd.args(["-sf", "reg.xml", "-t", "u1", "-nostdin"])
        .args(["-m", &count.to_string(), "-r", &o.register_rate.to_string()])
        .args(["-l", &concurrent.to_string(), "-i", &CLIENT_V4.to_string()])
        .args(["-p", "5064", "-timeout", &format!("{}s", limit.as_secs())])
        .arg(edge());
    sipp(cmd, dir, "registrations", limit)
}

/// Waits for a sipp run (bounded by its own `timeout`) and reads its
/// final counts.
pub fn finish(mut s: Sipp, what: &str, limit: Duration) -> Result<SippResult> {
    let deadline = Instant::now() + limit + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = s.child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = s.child.kill();
            bail!("{what} did not end within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let screen = std::fs::read_to_string(&s.screen).unwrap_or_default();
    let count = |label: &str| -> u64 {
        // The last screen's line, e.g. `  Successful call |  0  |  20  `:
        // its last number is the total.
        screen
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').rev().find_map(|f| f.trim().parse().ok()))
            .unwrap_or(0)
    };
    let r = SippResult {
        successful: count("Successful call"),
        failed: count("Failed call"),
    };
    if !status.success() && r.failed == 0 && r.successful == 0 {
        let mut err = String::new();
        if let Some(mut e) = s.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        bail!("{what} exited with {status} and no counts: {err}");
    }
    Ok(r)
}

/// What the pinger sent and got back.
pub struct Pings {
    pub sent: u64,
    pub answered: u64,
}

/// CRLF and STUN Binding requests, alternating, `rate` per second for
/// `secs`, each waiting up to a second for its own answer.
pub fn pinger(lab: &Lab, rate: u32, secs: Duration) -> Result<JoinHandle<Result<Pings>>> {
    let ns = format!("/run/netns/{}", lab.client_ns);
    let to = SocketAddr::new(SERVER_V4.into(), EDGE_PORT);
    Ok(std::thread::spawn(move || -> Result<Pings> {
        let f = std::fs::File::open(&ns).with_context(|| format!("opening {ns}"))?;
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns({ns}): {}", std::io::Error::last_os_error());
        }
        let sock = UdpSocket::bind(SocketAddr::new(CLIENT_V4.into(), 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let total = u64::from(rate) * secs.as_secs();
        let started = Instant::now();
        let mut p = Pings {
            sent: 0,
            answered: 0,
        };
        let mut buf = [0u8; 1500];
        for i in 0..total {
            let due = started + period.mul_f64(i as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut txid = [0u8; 12];
            txid[..8].copy_from_slice(&i.to_be_bytes());
            txid[8..].copy_from_slice(b"soak");
            let crlf = i % 2 == 0;
            let req = if crlf {
                CRLF_PING.to_vec()
            } else {
                Stun::binding_request(txid).fingerprint().build()
            };
            // A pong, or a Binding success response for this transaction.
            let want = |a: &[u8]| {
                if crlf {
                    a == CRLF_PONG
                } else {
                    a.len() >= 20 && a[..2] == [1, 1] && a[8..20] == txid
                }
            };
            sock.send_to(&req, to)?;
            p.sent += 1;
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) if from == to && want(&buf[..n]) => {
                        p.answered += 1;
                        break;
                    }
                    // A late answer to an earlier ping: keep waiting.
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(p)
    }))
}

/// Entries in the DIALOGS map (`sip-ka dialogs --json`).
pub fn dialogs_left(lab: &Lab) -> Result<usize> {
    let out = lab::run(&mut lab.sip_ka(&["dialogs", "--json"])?)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("sip-ka dialogs --json")?;
    v.as_array()
        .map(|a| a.len())
        .context("sip-ka dialogs --json: not an array")
}
