//! (j) Calls through the proxy: sipp UAC (client namespace) -> proxy ->
//! sipp UAS (the PBX, server namespace), INVITE, 100, 180, 200, ACK, BYE,
//! 200 with the route set of the 200, at a series of offered rates until
//! the first one where calls fail, for sip-ka's edge and for Kamailio 5.6
//! as a stateful record-routing proxy, in the same lab and the same run.
//! Per rate: calls completed and failed, and the proxy's CPU per
//! completed call (every thread of its processes, schedstat).

use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, CLIENT_V4, SERVER_V4};

use super::options::sipp_counter;
use super::servers::{
    kamailio_modules, kamailio_version, start_edge, Kamailio, SIP_PORT, UPSTREAM_PORT,
};
use super::WorkDir;
use crate::cpu::tasks_cpu;
use crate::opts::Opts;

/// sipp UAC's port in the client namespace.
const UAC_PORT: u16 = 5070;
/// A call's answer may take this long before sipp counts it failed.
const RECV_TIMEOUT_MS: u64 = 2_000;

/// The caller: INVITE with SDP, the 200's Record-Route kept as the route
/// set (`rrs`), ACK and BYE by it to the 200's Contact.
const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="call through a proxy">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:ua@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:ua@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=ua 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:ua@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:ua@[local_ip]:[local_port]>;tag=[pid]c[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// The callee (the PBX): 100, 180, 200 with the Record-Route echoed, ACK,
/// BYE, 200; the edge's qualify OPTIONS answered 200.
const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="PBX behind a proxy">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]p[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:pbx@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]p[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:pbx@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <nop next="end"/>
  <label id="options"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]q[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
</scenario>
"#;

/// Kamailio as the stateful record-routing proxy in front of the PBX: the
/// usual shape of a Kamailio SBC route block, two UDP workers (sip-ka's
/// runtime has two threads).
fn kamailio_proxy_cfg(modules: &Path) -> String {
    format!(
        r#"#!KAMAILIO
# Written by sip-ka-bench for one run: a stateful record-routing proxy.
debug=0
log_stderror=yes
fork=yes
children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{ip}:{port}
mpath="{modules}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) t_relay();
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay();
        exit;
    }}
    record_route();
    $du = "sip:{ip}:{pbx}";
    t_relay();
}}
"#,
        ip = SERVER_V4,
        port = SIP_PORT,
        pbx = UPSTREAM_PORT,
        modules = modules.display(),
    )
}

/// sipp under `timeout` in a lab namespace: SIGTERM to `timeout` when
/// dropped (it passes the signal on to sipp).
struct SippUas(Child);

impl Drop for SippUas {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The proxies compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proxy {
    SipKa,
    Kamailio,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::SipKa => "sip-ka edge",
            Proxy::Kamailio => "Kamailio 5.6 (tm, rr)",
        }
    }
}

/// One rate against one proxy.
struct Step {
    proxy: Proxy,
    rate: u32,
    offered: u64,
    completed: u64,
    failed: u64,
    cpu_s: f64,
    wall_s: f64,
}

impl Step {
    fn us_per_call(&self) -> Option<f64> {
        (self.completed > 0).then(|| self.cpu_s * 1e6 / self.completed as f64)
    }
}

/// The series of offered rates, from `--call-rates`.
fn rates(opts: &Opts) -> Vec<u32> {
    let mut r: Vec<u32> = opts.call_rates.iter().copied().filter(|r| *r > 0).collect();
    r.sort_unstable();
    r.dedup();
    r
}

/// Runs part (j).
pub(crate) fn calls_bench(opts: &Opts) -> Result<()> {
    println!(
        "== (j) calls through the proxy: sipp UAC -> proxy -> sipp UAS, sip-ka edge vs {}",
        kamailio_version()
    );
    if lab::on_path("sipp").is_none() || lab::on_path("kamailio").is_none() {
        bail!("sipp and kamailio are needed: `cargo xtask setup` installs them");
    }
    let modules = kamailio_modules()?;
    for m in ["tm.so", "rr.so", "maxfwd.so"] {
        if !modules.join(m).is_file() {
            bail!("Kamailio's {m} not found in {}", modules.display());
        }
    }
    let dir = WorkDir::new()?;
    std::fs::write(dir.0.join("uac.xml"), UAC)?;
    std::fs::write(dir.0.join("uas.xml"), UAS)?;
    let mut lab = Lab::new()?;
    let mut steps = Vec::new();
    for proxy in [Proxy::SipKa, Proxy::Kamailio] {
        series(&mut lab, &dir.0, &modules, opts, proxy, &mut steps)?;
    }
    drop(lab);
    print_table(opts, &steps);
    Ok(())
}

/// Starts the PBX and `proxy`, offers each rate in turn until one fails
/// calls, stops both.
fn series(
    lab: &mut Lab,
    dir: &Path,
    modules: &Path,
    opts: &Opts,
    proxy: Proxy,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let secs = opts.call_seconds.max(1);
    let budget = secs * rates(opts).len() as u64 * 3 + 60;
    let mut uas = lab.server("timeout");
    uas.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .args(["-k", "2", &budget.to_string(), "sipp", "-sf", "uas.xml"])
        .args([
            "-i",
            &SERVER_V4.to_string(),
            "-p",
            &UPSTREAM_PORT.to_string(),
        ])
        .args(["-t", "u1", "-nostdin", "-bg"]);
    let _pbx = SippUas(uas.spawn().context("starting the sipp PBX")?);
    let mut kamailio = None;
    match proxy {
        Proxy::SipKa => {
            // One address places every call: a load, not an attack.
            start_edge(lab, &["--shield", "off"])?;
        }
        Proxy::Kamailio => {
            let cfg = kamailio_proxy_cfg(modules);
            kamailio = Some(Kamailio::start_cfg(lab, dir, "kamailio-proxy", &cfg, &[])?);
        }
    }
    // The PBX answers the edge's first qualify; both proxies settle.
    std::thread::sleep(Duration::from_secs(2));
    let pids = match &kamailio {
        Some(k) => k.pids(),
        None => vec![lab.daemon_pid().context("daemon pid")?],
    };
    for rate in rates(opts) {
        let step = one_rate(lab, dir, proxy, rate, secs, &pids)?;
        println!(
            "{}: {rate} calls/s offered: {} completed, {} failed, {} µs of proxy CPU per call",
            proxy.name(),
            step.completed,
            step.failed,
            step.us_per_call()
                .map_or("n/a".into(), |u| format!("{u:.0}"))
        );
        let failed = step.failed > 0;
        steps.push(step);
        if failed {
            break;
        }
    }
    match kamailio {
        Some(k) => drop(k),
        None => {
            lab.stop_daemon()?;
        }
    }
    Ok(())
}

/// `rate` calls per second for `secs` seconds from sipp UAC.
fn one_rate(
    lab: &Lab,
    dir: &Path,
    proxy: Proxy,
    rate: u32,
    secs: u64,
    pids: &[u32],
) -> Result<Step> {
    let calls = u64::from(rate) * secs;
    let mut cmd = lab.client("timeout");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .args(["-k", "2", &(secs * 3 + 15).to_string(), "sipp"])
        .arg(format!("{SERVER_V4}:{SIP_PORT}"))
        .args(["-sf", "uac.xml", "-s", "bench"])
        .args([
            "-m",
            &calls.to_string(),
            "-r",
            &rate.to_string(),
            "-rp",
            "1000",
        ])
        .args(["-l", &(u64::from(rate) * 4).to_string()])
        .args(["-t", "u1", "-nostdin"])
        .args(["-i", &CLIENT_V4.to_string(), "-p", &UAC_PORT.to_string()])
        .args(["-timeout", &format!("{}s", secs * 3)])
        .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()]);
    let cpu0 = tasks_cpu(pids);
    let t0 = Instant::now();
    let out = cmd.output().context("running sipp UAC")?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = tasks_cpu(pids) - cpu0;
    let screen = String::from_utf8_lossy(&out.stdout);
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!(
            "sipp UAC failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            screen.lines().rev().take(12).collect::<Vec<_>>().join("\n")
        );
    }
    let completed = sipp_counter(&screen, "Successful call").context("no statistics from sipp")?;
    let failed = sipp_counter(&screen, "Failed call").unwrap_or(0);
    Ok(Step {
        proxy,
        rate,
        offered: calls,
        completed,
        failed: failed + calls.saturating_sub(completed + failed),
        cpu_s,
        wall_s,
    })
}

fn print_table(opts: &Opts, steps: &[Step]) {
    println!();
    println!(
        "{:<24} {:>8} {:>8} {:>9} {:>7} {:>10} {:>8}",
        "proxy", "calls/s", "offered", "completed", "failed", "µs/call", "wall s"
    );
    for s in steps {
        println!(
            "{:<24} {:>8} {:>8} {:>9} {:>7} {:>10} {:>8.1}",
            s.proxy.name(),
            s.rate,
            s.offered,
            s.completed,
            s.failed,
            s.us_per_call().map_or("n/a".into(), |u| format!("{u:.0}")),
            s.wall_s
        );
    }
    // The ratio at the highest rate both completed without failures.
    let clean = |p: Proxy| {
        steps
            .iter()
            .filter(|s| s.proxy == p && s.failed == 0)
            .map(|s| (s.rate, s))
            .collect::<Vec<_>>()
    };
    let (ours, theirs) = (clean(Proxy::SipKa), clean(Proxy::Kamailio));
    let both = ours
        .iter()
        .filter_map(|(r, s)| {
            theirs
                .iter()
                .find(|(q, _)| q == r)
                .map(|(_, k)| (*r, *s, *k))
        })
        .next_back();
    match both {
        Some((rate, s, k)) => match (s.us_per_call(), k.us_per_call()) {
            (Some(a), Some(b)) => println!(
                "sip-ka vs Kamailio at {rate} calls/s (the highest rate both completed): \
                 {a:.0} vs {b:.0} µs of proxy CPU per call, {:.1}x less",
                b / a
            ),
            _ => println!("no CPU ratio (a row completed no call)"),
        },
        None => println!("no rate that both proxies completed without failures"),
    }
    println!(
        "notes: {secs} s per rate, rates {rates:?} in turn until the first that fails calls. A \
         call is INVITE (SDP), 100, 180, 200 (SDP), ACK, BYE, 200 by the route set of the 200, \
         sipp UAC in the client namespace at {CLIENT_V4}:{UAC_PORT}, sipp UAS as the PBX at \
         {SERVER_V4}:{UPSTREAM_PORT}, no hold time; failed = not completed, an answer not \
         back within {RECV_TIMEOUT_MS} ms included. sip-ka: `--mode edge` with native XDP, \
         --shield off (one source places every call); Kamailio: 2 UDP workers, tm + rr, \
         record_route() and t_relay() to the PBX. Proxy CPU = every thread of the proxy's \
         processes (schedstat) over the row, divided by the calls completed.",
        secs = opts.call_seconds.max(1),
        rates = rates(opts),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kamailio_proxies_to_the_pbx_with_record_route() {
        let cfg = kamailio_proxy_cfg(Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules"));
        assert!(cfg.contains("listen=udp:198.18.0.1:5060\n"));
        assert!(cfg.contains("record_route();"));
        assert!(cfg.contains("$du = \"sip:198.18.0.1:5080\";"));
    }

    #[test]
    fn the_scenarios_keep_the_route_set() {
        assert!(UAC.contains(r#"<recv response="200" rrs="true"/>"#));
        assert_eq!(UAC.matches("[routes]").count(), 2);
        assert_eq!(UAS.matches("[last_Record-Route:]").count(), 2);
    }
}
