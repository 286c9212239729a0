//! The servers of the lab rows: sip-ka with XDP, sip-ka's userspace
//! responder, and coturn; and what the kernel and sip-ka's own counters
//! say about them.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab};

/// The server of a lab row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Server {
    Xdp,
    User,
    Coturn,
}

impl Server {
    pub(super) fn name(self) -> &'static str {
        match self {
            Server::Xdp => "sip-ka XDP (native)",
            Server::User => "sip-ka userspace (--xdp off)",
            Server::Coturn => "coturn turnserver",
        }
    }
}

/// coturn, started in the lab's server namespace by the benchmark itself
/// and stopped with SIGTERM when dropped.
pub(crate) struct Coturn(Child);

impl Coturn {
    /// coturn's `turnserver`, answering STUN on 198.18.0.1:5060 (UDP only,
    /// STUN only, no authentication for Binding).
    pub(crate) fn start(lab: &Lab) -> Result<Coturn> {
        if lab::run(Command::new("sh").args(["-c", "command -v turnserver"])).is_err() {
            bail!("turnserver not found: apt-get install coturn (`cargo xtask setup`)");
        }
        let child = lab
            .server("turnserver")
            .args([
                "-n",
                "--listening-ip=198.18.0.1",
                "--listening-port=5060",
                "--no-tcp",
                "--no-tls",
                "--no-dtls",
                "--stun-only",
                "--no-cli",
                "--no-rfc5780",
                "--no-software-attribute",
                "--log-file=stdout",
                "--simple-log",
                "--no-stdout-log",
                "--pidfile=/dev/null",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnserver in the server namespace")?;
        Ok(Coturn(child))
    }

    pub(crate) fn pid(&self) -> u32 {
        // nsenter execs the program, so this pid is the server's own.
        self.0.id()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn xdp_attached(lab: &Lab) -> Result<bool> {
    let out = lab::run(
        lab.server("ip")
            .args(["link", "show", "dev", &lab.server_if]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.contains("prog/xdp") || text.contains(" xdp"))
}

/// The id of the XDP program attached to the server veth, from
/// `ip link show` ("prog/xdp id N").
pub(super) fn attached_prog_id(lab: &Lab) -> Option<u32> {
    let out = lab::run(
        lab.server("ip")
            .args(["link", "show", "dev", &lab.server_if]),
    )
    .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// (run time, run count) the kernel accumulated for program `id` while
/// BPF_ENABLE_STATS is held.
pub(super) fn prog_stats(id: u32) -> Option<(Duration, u64)> {
    aya::programs::loaded_programs()
        .flatten()
        .find(|p| p.id() == id)
        .map(|p| (p.run_time(), p.run_count()))
}

/// A sip-ka counter by name, 0 when the daemon has not published it.
pub(super) fn counter(lab: &Lab, name: &str) -> Result<u64> {
    Ok(lab.counters()?.get(name).copied().unwrap_or(0))
}
