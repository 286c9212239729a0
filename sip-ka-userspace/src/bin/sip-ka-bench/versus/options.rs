//! SIP OPTIONS over UDP: sipp in the client namespace against the server,
//! its statistics and its per-answer times read back.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{Lab, CLIENT_V4, SERVER_V4};

use super::measure::{Measure, Meter};
use super::servers::SIP_PORT;
use crate::cpu::children_cpu;
use crate::netns::{in_netns, wait_readable};
use crate::opts::Opts;
use crate::packets::options_probe;

/// sipp's own port in the client namespace.
const SIPP_PORT: u16 = 5070;
/// How long sipp waits for an answer before it counts the request failed.
/// The rate is taken from the answers' own times, so this only bounds how
/// long a row waits at its end.
pub(super) const RECV_TIMEOUT_MS: u64 = 500;

/// sipp UAC: one OPTIONS to the server itself, expecting 200. The response
/// time distribution (rtd) is what `-trace_rtt` logs, one line per answer
/// with the time it arrived.
const SIPP_OPTIONS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="OPTIONS to the server itself">
  <send start_rtd="true">
    <![CDATA[

      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:bench@[local_ip]:[local_port]>;tag=[pid]b[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Accept: application/sdp
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" rtd="true"/>
</scenario>
"#;

/// One OPTIONS to the server every 100 ms from the client namespace until a
/// 200 comes back (15 s at most): the server is up, and the neighbour
/// entries exist before the measured load.
pub(super) fn wait_options_200(lab: &Lab) -> Result<()> {
    in_netns(&lab.client_ns, || {
        let sock = UdpSocket::bind((CLIENT_V4, 0))?;
        let local = sock.local_addr()?;
        let server = SocketAddr::from((SERVER_V4, SIP_PORT));
        sock.connect(server)?;
        sock.set_nonblocking(true)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last = String::from("nothing");
        let mut buf = [0u8; 4096];
        let mut n = 0u32;
        while Instant::now() < deadline {
            n += 1;
            let req = options_probe(server, local, CLIENT_V4, n);
            let _ = sock.send(req.as_bytes());
            if wait_readable(sock.as_raw_fd(), 100) {
                while let Ok(len) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]);
                    let status = text.lines().next().unwrap_or("").to_string();
                    if status.starts_with("SIP/2.0 200") {
                        return Ok(());
                    }
                    last = status;
                }
            }
        }
        bail!("no 200 to OPTIONS within 15 s (last answer: {last})")
    })
}

/// The cumulative value of a counter on sipp's statistics screen, e.g.
/// "  Successful call        |        0                  |    29984".
pub(super) fn sipp_counter(screen: &str, name: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.rsplit('|').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The arrival times (ms since sipp started) of the first and the last
/// answer, and how many there were, from sipp's `-trace_rtt` file.
fn rtt_span(dir: &Path) -> Result<Option<(f64, f64, u64)>> {
    let mut span: Option<(f64, f64, u64)> = None;
    for e in std::fs::read_dir(dir)?.flatten() {
        let path = e.path();
        if !path.to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let _ = std::fs::remove_file(&path);
        for line in text.lines().skip(1) {
            let Some(t) = line.split(';').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            span = Some(match span {
                None => (t, t, 1),
                Some((a, b, n)) => (a.min(t), b.max(t), n + 1),
            });
        }
    }
    Ok(span)
}

/// The OPTIONS load: sipp in the client namespace, `count` requests with
/// `window` in flight at most, `seconds` at most.
pub(super) fn options_load(
    lab: &Lab,
    dir: &Path,
    opts: &Opts,
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
) -> Result<Measure> {
    let scenario = dir.join("options.xml");
    std::fs::write(&scenario, SIPP_OPTIONS)?;
    let seconds = opts.seconds.max(1);
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .args(["-k", "2", &(seconds + 10).to_string(), "sipp"])
        .arg(format!("{SERVER_V4}:{SIP_PORT}"))
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", &opts.options_count.to_string()])
        .args(["-r", &opts.options_rate.to_string(), "-rp", "1000"])
        .args(["-l", &opts.options_window.max(1).to_string()])
        .args(["-t", "u1", "-nostdin"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &SIPP_PORT.to_string()])
        .args(["-timeout", &format!("{seconds}s")])
        .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()])
        .args(["-trace_rtt", "-rtt_freq", "1"]);
    let gen0 = children_cpu();
    let meter = Meter::start(procs, server_napi, client_napi)?;
    let out = cmd.output().context("running sipp")?;
    let mut m = Measure::default();
    meter.stop(&mut m)?;
    m.gen_cpu = children_cpu() - gen0;
    let screen = String::from_utf8_lossy(&out.stdout);
    // sipp exits 1 when some calls failed: still a measurement.
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!(
            "sipp failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            screen.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        );
    }
    let ok = sipp_counter(&screen, "Successful call").context("no statistics from sipp")?;
    let failed = sipp_counter(&screen, "Failed call").unwrap_or(0);
    m.sent = ok + failed;
    m.answered = ok;
    m.elapsed = match rtt_span(dir)? {
        Some((first, last, n)) if n >= 2 && last > first => {
            // n answers arrived over (last - first): the rate between the
            // first and the last answer, without the wait for losses at the
            // end.
            (last - first) / 1000.0 * n as f64 / (n - 1) as f64
        }
        _ => m.wall,
    };
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipp_statistics_screen() {
        let screen = "\
  Successful call        |        0                  |    29984                 \n\
  Failed call            |        0                  |       16                 \n";
        assert_eq!(sipp_counter(screen, "Successful call"), Some(29984));
        assert_eq!(sipp_counter(screen, "Failed call"), Some(16));
        assert_eq!(sipp_counter(screen, "Retransmissions"), None);
        assert_eq!(
            sipp_counter("Successful call | x | y", "Successful call"),
            None
        );
    }
}
