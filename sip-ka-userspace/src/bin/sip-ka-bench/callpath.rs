//! (i) The edge's CPU per call, without sockets (`--call-path`): the six
//! messages of a call (INVITE, 180, 200, ACK, BYE, 200) through
//! `Edge::handle`, as they come from a UA and from the PBX, with no
//! dialog mirror and, in a second run, with a state directory (the
//! journal). Only the edge's calls are timed: making the messages and
//! answering as the PBX are the peers' work. Sans-IO so that a profiler
//! (callgrind: `edge_call` is the one function to collect) sees the same
//! calls every run; the syscalls of a real run come on top.
//!
//! Bounded: `--call-count` calls, each checked to come out of the edge
//! where it should (forwarded to the PBX, or back to the UA).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use sip_ka::{
    edge::{dialog::NoSink, transport::Flow, DialogOptions, Edge, EdgeConfig},
    util::clock::now_ms,
};

const EDGE: &str = "192.0.2.1:5060";
const PBX: &str = "192.0.2.10:5080";

/// The edge's work on one message: the one function a profiler collects.
#[inline(never)]
fn edge_call(edge: &Edge, raw: &[u8], src: SocketAddr, now: u64) -> Option<(Vec<u8>, Flow)> {
    let local: SocketAddr = EDGE.parse().ok()?;
    edge.handle(raw, src, local, now)
}

/// The header lines of `msg` named `name` (full form, as the edge writes
/// and this file sends them), in order.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        })
        .collect()
}

const SDP: &str = "v=0\r\no=- 3912 3912 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n\
t=0 0\r\nm=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// The PBX's answer to a request the edge forwarded to it.
fn answer(fwd: &str, code: u16, reason: &str, to_tag: &str, sdp: bool) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for name in ["Via", "Record-Route", "From"] {
        for l in headers(fwd, name) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    for l in headers(fwd, "To") {
        out.push_str(l);
        if !l.contains(";tag=") {
            out.push_str(";tag=");
            out.push_str(to_tag);
        }
        out.push_str("\r\n");
    }
    for name in ["Call-ID", "CSeq"] {
        for l in headers(fwd, name) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Contact: <sip:callee@{PBX}>\r\n"));
    let body = if sdp { SDP } else { "" };
    if sdp {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}

/// Call `i`'s requests from the UA.
struct Ua {
    n: u64,
    addr: SocketAddr,
    call_id: String,
    from: String,
    to: String,
}

impl Ua {
    fn new(i: u64) -> Ua {
        let addr = SocketAddr::from(([198, 51, 100, 7], 10_000 + (i % 50_000) as u16));
        Ua {
            n: i,
            addr,
            call_id: format!("{i:016x}-bench@198.51.100.7"),
            from: format!("\"Caller {i}\" <sip:1000@198.51.100.7>;tag=uac{i:x}"),
            to: "<sip:2000@192.0.2.1>".to_string(),
        }
    }

    fn invite(&self) -> String {
        format!(
            "INVITE sip:2000@{EDGE} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK-{n:x}-1;rport\r\n\
             Max-Forwards: 70\r\nFrom: {f}\r\nTo: {t}\r\nCall-ID: {c}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:1000@{a}>\r\nUser-Agent: bench-uac\r\n\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{SDP}",
            a = self.addr,
            n = self.n,
            c = self.call_id,
            f = self.from,
            t = self.to,
            len = SDP.len(),
        )
    }

    /// An in-dialog request (ACK, BYE) along the route set the 2xx gave.
    fn in_dialog(&self, method: &str, cseq: u32, ok: &str) -> String {
        let mut routes: Vec<&str> = headers(ok, "Record-Route")
            .into_iter()
            .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim()))
            .collect();
        routes.reverse();
        let to = headers(ok, "To").first().map_or("", |l| l).to_string();
        let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        format!(
            "{method} sip:callee@{PBX} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK-{n:x}-{cseq}{method};rport\r\n\
             {route}Max-Forwards: 70\r\nFrom: {f}\r\n{to}\r\nCall-ID: {c}\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            a = self.addr,
            n = self.n,
            c = self.call_id,
            f = self.from,
        )
    }
}

/// Time in the edge's calls per message of the call, in order.
#[derive(Default)]
struct Spent([Duration; 6]);

/// One call through `edge`; checks where each message went.
fn call(edge: &Edge, i: u64, now: u64, spent: &mut Spent) -> Result<()> {
    let pbx: SocketAddr = PBX.parse()?;
    let ua = Ua::new(i);
    let to_pbx = |out: Option<(Vec<u8>, Flow)>, what: &str| -> Result<String> {
        match out {
            Some((b, f)) if f == Flow::Udp(pbx) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => bail!(
                "call {i}: {what} went to {:?}, not the PBX: {:?}",
                other.as_ref().map(|o| o.1),
                other.map(|o| String::from_utf8_lossy(&o.0)
                    .lines()
                    .next()
                    .map(str::to_string))
            ),
        }
    };
    let to_ua = |out: Option<(Vec<u8>, Flow)>, what: &str| -> Result<String> {
        match out {
            Some((b, f)) if f == Flow::Udp(ua.addr) => Ok(String::from_utf8_lossy(&b).into_owned()),
            other => bail!(
                "call {i}: {what} went to {:?}, not the UA: {:?}",
                other.as_ref().map(|o| o.1),
                other.map(|o| String::from_utf8_lossy(&o.0)
                    .lines()
                    .next()
                    .map(str::to_string))
            ),
        }
    };
    let mut timed = |k: usize, raw: &str, src: SocketAddr| {
        let t = Instant::now();
        let out = edge_call(edge, raw.as_bytes(), src, now);
        spent.0[k] += t.elapsed();
        out
    };
    let tag = format!("uas{i:x}");
    let invite = to_pbx(timed(0, &ua.invite(), ua.addr), "the INVITE")?;
    to_ua(
        timed(1, &answer(&invite, 180, "Ringing", &tag, false), pbx),
        "the 180",
    )?;
    let ok = to_ua(
        timed(2, &answer(&invite, 200, "OK", &tag, true), pbx),
        "the 200",
    )?;
    to_pbx(timed(3, &ua.in_dialog("ACK", 1, &ok), ua.addr), "the ACK")?;
    let bye = to_pbx(timed(4, &ua.in_dialog("BYE", 2, &ok), ua.addr), "the BYE")?;
    to_ua(
        timed(5, &answer(&bye, 200, "OK", &tag, false), pbx),
        "the BYE's 200",
    )?;
    Ok(())
}

fn run(edge: &Edge, count: u64, label: &str) -> Result<()> {
    let mut spent = Spent::default();
    let wall = Instant::now();
    let now = now_ms();
    for i in 0..count {
        call(edge, i, now, &mut spent)?;
    }
    let left = edge.dialogs().len();
    if left != 0 {
        bail!("{left} dialogs left after {count} complete calls");
    }
    let total: Duration = spent.0.iter().sum();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / count as f64;
    println!(
        "{label:<44} {:>8.1} µs/call  ({:.0} calls/s of edge CPU)",
        per(total),
        count as f64 / total.as_secs_f64()
    );
    let names = ["INVITE", "180", "200", "ACK", "BYE", "200 (BYE)"];
    let parts: Vec<String> = names
        .iter()
        .zip(spent.0)
        .map(|(n, d)| format!("{n} {:.1}", per(d)))
        .collect();
    println!("    per message, µs: {}", parts.join(", "));
    println!(
        "    {count} calls in {:.2} s of wall time (messages made and checked included)",
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs part (i) with `count` calls.
pub(crate) fn call_path_bench(count: u64) -> Result<()> {
    let count = count.max(1);
    println!("== (i) CPU per call in the edge, sans IO: INVITE, 180, 200, ACK, BYE, 200");
    let cfg = EdgeConfig::new(EDGE.parse()?, PBX.parse()?);
    let edge = Edge::new(cfg.clone(), Box::new(NoSink), None, now_ms());
    run(&edge, count, "no state directory")?;
    let dir = std::env::temp_dir().join(format!("sip-ka-bench-calls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = DialogOptions {
        state_dir: Some(dir.clone()),
        ..DialogOptions::default()
    };
    let edge = Edge::with_options(cfg, &opts, Box::new(NoSink), None, now_ms())?;
    let r = run(&edge, count, "with a state directory (journal)");
    drop(edge);
    let _ = std::fs::remove_dir_all(&dir);
    r?;
    println!(
        "notes: one thread, the edge's own clock read once per call; no DIALOGS mirror (its cost \
         is a bpf() syscall per change), no shared store; UDP datagrams from one UA address \
         range and the PBX. Profile: valgrind --tool=callgrind --toggle-collect='*edge_call*' \
         sip-ka-bench --call-path --call-count 2000"
    );
    Ok(())
}
