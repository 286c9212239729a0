//! SIP text for the edge tests that play a UA and a PBX by hand: a PBX
//! socket in the server namespace, header lookups, responses built from
//! a request, counter waits.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use sip_ka::lab::Lab;

use super::{edge::pbx_addr, in_ns, wait_until};

/// The PBX's UDP socket in the server namespace.
pub fn pbx_socket(lab: &Lab) -> UdpSocket {
    let at = pbx_addr();
    let s = in_ns(&lab.server_ns, move || {
        UdpSocket::bind(at).unwrap_or_else(|e| panic!("binding udp/{at}: {e}"))
    });
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    s
}

/// The status code of a response.
pub fn status(resp: &str) -> Option<u16> {
    resp.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The values of header `name` (full name, case-insensitive) in `msg`.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// Waits until the edge's counter `name` (without `edge_`) reached `want`.
pub fn counter_reaches(lab: &Lab, name: &str, want: u64) -> (bool, u64) {
    let mut last = 0;
    let ok = wait_until(Duration::from_secs(3), || {
        last = super::counters(lab)
            .get(&format!("edge_{name}"))
            .copied()
            .unwrap_or(0);
        last >= want
    });
    (ok, last)
}

/// Reads datagrams on the PBX socket until one satisfies `want` (the
/// edge's qualify OPTIONS are answered 200 on the way).
pub fn pbx_recv(pbx: &UdpSocket, wait: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        let Ok((n, from)) = pbx.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("OPTIONS ")
            && headers(&text, "CSeq").iter().any(|c| c.contains("OPTIONS"))
            && !want(&text)
        {
            let ok = reply(&text, 200, "OK", None, &[]);
            let _ = pbx.send_to(ok.as_bytes(), from);
            continue;
        }
        if want(&text) {
            return Some(text);
        }
    }
    None
}

/// A response to `req` (its Via, From, To, Call-ID, CSeq), with a To tag
/// and extra header lines.
pub fn reply(req: &str, code: u16, reason: &str, to_tag: Option<&str>, extra: &[String]) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in headers(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for name in ["From", "Call-ID", "CSeq"] {
        for v in headers(req, name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = headers(req, "To")
        .first()
        .copied()
        .unwrap_or_default()
        .to_string();
    match to_tag {
        Some(t) if !to.contains(";tag=") => out.push_str(&format!("To: {to};tag={t}\r\n")),
        _ => out.push_str(&format!("To: {to}\r\n")),
    }
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}
