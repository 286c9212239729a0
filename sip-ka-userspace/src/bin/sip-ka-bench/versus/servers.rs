//! The two servers of the comparison and what they need around them:
//! Kamailio's configuration, its processes and its modules; the stand-in
//! PBX behind sip-ka's edge.

use std::{
    net::UdpSocket,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, SERVER_V4};

use crate::packets::ok_response;

/// Where both servers listen, over UDP and TCP.
pub(super) const SIP_PORT: u16 = 5060;
/// The edge's PBX: [`Pbx`], which only answers the edge's qualify pings.
/// The OPTIONS of the load name the edge itself, which the edge answers
/// without asking the PBX; the stand-in keeps the edge in its ordinary
/// state (PBX up) while it does.
pub(super) const UPSTREAM_PORT: u16 = 5080;

/// The smallest Kamailio configuration that answers OPTIONS: `sl` sends
/// the stateless reply, `siputils` has `options_reply`, `textops` has
/// `is_method`, and `pv` is there because siputils will not initialise
/// without it (its rpid AVP parameter). Two UDP workers and two TCP
/// readers, like sip-ka's two runtime threads. With `stun`, the stun
/// module too, which answers STUN Binding requests on the SIP port.
fn kamailio_cfg(modules: &Path, stun: bool) -> String {
    let stun = if stun { "loadmodule \"stun.so\"\n" } else { "" };
    format!(
        r#"#!KAMAILIO
# Written by sip-ka-bench for one run: answers OPTIONS and nothing else.
debug=0
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{ip}:{port}
listen=tcp:{ip}:{port}
tcp_crlf_ping=yes
mpath="{modules}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "siputils.so"
{stun}
request_route {{
    if (is_method("OPTIONS")) {{
        options_reply();
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
    exit;
}}
"#,
        ip = SERVER_V4,
        port = SIP_PORT,
        modules = modules.display(),
    )
}

/// Kamailio's module directory (Debian puts it under the multiarch path).
pub(super) fn kamailio_modules() -> Result<PathBuf> {
    let mut candidates = vec![
        PathBuf::from("/usr/lib/kamailio/modules"),
        PathBuf::from("/usr/lib64/kamailio/modules"),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("kamailio/modules"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("sl.so").is_file() && d.join("siputils.so").is_file())
        .context("Kamailio's modules (sl.so, siputils.so) not found: apt-get install kamailio")
}

/// `kamailio -v`'s first line, e.g. "kamailio 5.6.3 (x86_64/linux)".
pub(super) fn kamailio_version() -> String {
    lab::run(Command::new("kamailio").arg("-v"))
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("version:").trim().to_string())
        })
        .unwrap_or_else(|| "kamailio (version unknown)".into())
}

/// Kamailio in the server namespace, in the foreground (`-DD`: the main
/// process stays the one started, its workers are its children), logging
/// to a file. Stopped with SIGTERM when dropped.
pub(super) struct Kamailio {
    child: Child,
    log: PathBuf,
}

impl Kamailio {
    pub(super) fn start(lab: &Lab, dir: &Path, modules: &Path, stun: bool) -> Result<Kamailio> {
        if stun && !modules.join("stun.so").is_file() {
            bail!(
                "Kamailio's stun module (stun.so) not found in {}",
                modules.display()
            );
        }
        Kamailio::start_cfg(lab, dir, "kamailio", &kamailio_cfg(modules, stun), &[])
    }

    /// Kamailio with the configuration `text`, written to `dir/NAME.cfg`
    /// (its log beside it), with `args` (e.g. memory sizes) on its
    /// command line.
    pub(super) fn start_cfg(
        lab: &Lab,
        dir: &Path,
        name: &str,
        text: &str,
        args: &[&str],
    ) -> Result<Kamailio> {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, text)?;
        lab::run(Command::new("kamailio").arg("-c").arg("-f").arg(&cfg))
            .context("kamailio -c rejected the generated configuration")?;
        let log = dir.join(format!("{name}.log"));
        let child = lab
            .server("kamailio")
            .args(["-DD", "-E"])
            .args(args)
            .arg("-f")
            .arg(&cfg)
            .arg("-w")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting kamailio in the server namespace")?;
        Ok(Kamailio { child, log })
    }

    /// The main process (nsenter execs kamailio, so the child's pid is
    /// Kamailio's) and every process it forked.
    pub(super) fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        descendants_of(self.child.id(), &mut pids);
        pids
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let workers = self.pids();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Only the processes this Kamailio forked, by pid.
        for pid in workers {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Adds the descendants of `pid` to `out` (/proc/*/stat parent pids).
fn descendants_of(pid: u32, out: &mut Vec<u32>) {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut children = Vec::new();
    for e in rd.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            children.push(p);
        }
    }
    for c in children {
        if !out.contains(&c) {
            out.push(c);
            descendants_of(c, out);
        }
    }
}

/// sip-ka's edge in the lab as the comparisons run it: on
/// 198.18.0.1:5060 in front of the PBX on :5080, native XDP, the PBX
/// qualified every second, then `extra` flags.
pub(super) fn start_edge(lab: &mut Lab, extra: &[&str]) -> Result<()> {
    let listen = format!("{SERVER_V4}:{SIP_PORT}");
    let upstream = format!("{SERVER_V4}:{UPSTREAM_PORT}");
    let mut args = vec![
        "--mode",
        "edge",
        "--listen",
        &listen,
        "--upstream",
        &upstream,
        "--qualify-frequency",
        "1",
        "--xdp-mode",
        "native",
    ];
    args.extend_from_slice(extra);
    lab.start_daemon(&args)
}

/// A stand-in PBX in the server namespace: a thread answering every SIP
/// request on udp/198.18.0.1:5080 with 200, so the edge's qualify pings
/// find the PBX up. Stops when dropped.
pub(super) struct Pbx {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pbx {
    pub(super) fn start(lab: &Lab) -> Result<Pbx> {
        let path = format!("/run/netns/{}", lab.server_ns);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> Result<UdpSocket> {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: setns on this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns({path}): {}", std::io::Error::last_os_error());
                }
                let sock = UdpSocket::bind((SERVER_V4, UPSTREAM_PORT))?;
                // Wakes up to look at the stop flag.
                sock.set_read_timeout(Some(Duration::from_millis(200)))?;
                Ok(sock)
            })();
            let sock = match bound {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(ok) = ok_response(&buf[..n]) {
                        let _ = sock.send_to(&ok, from);
                    }
                }
            }
        });
        let pbx = Pbx {
            stop,
            thread: Some(thread),
        };
        rx.recv_timeout(Duration::from_secs(5))
            .context("the stand-in PBX did not start")??;
        Ok(pbx)
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_configuration_listens_where_the_edge_does() {
        let modules = Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules");
        let cfg = kamailio_cfg(modules, false);
        assert!(cfg.contains("listen=udp:198.18.0.1:5060\n"));
        assert!(cfg.contains("listen=tcp:198.18.0.1:5060\n"));
        assert!(cfg.contains("options_reply();"));
        assert!(cfg.contains("tcp_crlf_ping=yes\n"));
        assert!(!cfg.contains("stun.so"));
        assert!(kamailio_cfg(modules, true).contains("loadmodule \"stun.so\"\n"));
    }
}
