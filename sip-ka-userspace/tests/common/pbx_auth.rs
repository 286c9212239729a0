//! An authenticating PBX stand-in for the shield's lab tests: a UDP
//! registrar on a thread of the test, its socket in the lab's server
//! namespace at `edge::pbx_addr()`, behind the edge.
//!
//! It answers as a real PBX does (Asterisk with `alwaysauthreject=no`,
//! which is what extension scanners live on):
//! * a request for a user that does not exist: 404;
//! * for an existing user (extensions [`FIRST_USER`] to [`LAST_USER`],
//!   each with its own [`password`]) without credentials: 401 with an MD5
//!   digest challenge;
//! * with wrong credentials: 403; with right ones: 200 (a REGISTER gets
//!   its Contact and Expires back);
//! * an OPTIONS to the server itself (no user, the edge's qualify): 200.
//!
//! Responses copy every Via (in order, the edge's on top, unchanged),
//! From, To (a tag added), Call-ID and CSeq, and go back where the request
//! came from. Requests are counted in all and per original source: the
//! `received` of the second Via, which the edge stamps (else its host).
//!
//! Network input is never trusted: what cannot be read is ignored and
//! counted. The thread stops when the stand-in is dropped, and by itself
//! after [`MAX_LIFETIME`] or [`MAX_DATAGRAMS`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sip_ka::lab::Lab;

/// The digest realm of the stand-in.
pub const REALM: &str = "sip-ka-lab";
/// The extensions that exist.
pub const FIRST_USER: u32 = 1000;
pub const LAST_USER: u32 = 1299;
/// The stand-in stops by itself after this long, whatever the test does.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// ... or after this many datagrams.
pub const MAX_DATAGRAMS: u64 = 2_000_000;
/// The Expires a REGISTER gets when it names none.
const DEFAULT_EXPIRES: u32 = 3600;

/// The password of extension `user`: none of them a number, so no
/// numeric range a brute force walks through finds one.
pub fn password(user: u32) -> String {
    format!("lab-{user}-Secret")
}

/// What the stand-in received and answered.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests received in all.
    pub requests: u64,
    /// Requests per original source (the second Via's `received`, else
    /// its host).
    pub by_source: BTreeMap<IpAddr, u64>,
    /// Requests with one Via only: the edge's own (its qualify OPTIONS).
    pub own: u64,
    /// Answers sent, per status code.
    pub answers: BTreeMap<u16, u64>,
    /// Answers sent, per original source and status code.
    pub answers_by_source: BTreeMap<(IpAddr, u16), u64>,
    /// Datagrams ignored as unreadable (no request line, no Via, Call-ID,
    /// CSeq, From or To, a second Via without an address...).
    pub unreadable: u64,
    /// Responses received (a UAS gets none here): ignored.
    pub responses: u64,
    /// Extensions with a successful (authenticated) REGISTER.
    pub registered: BTreeSet<u32>,
}

impl Tally {
    /// Requests from `ip` (as the edge saw it).
    pub fn from(&self, ip: IpAddr) -> u64 {
        self.by_source.get(&ip).copied().unwrap_or(0)
    }

    /// Answers with `code` to requests from `ip`.
    pub fn answered(&self, ip: IpAddr, code: u16) -> u64 {
        self.answers_by_source
            .get(&(ip, code))
            .copied()
            .unwrap_or(0)
    }
}

/// The running stand-in; stopped (and its thread joined) on drop.
pub struct PbxAuth {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    thread: Option<JoinHandle<()>>,
}

impl PbxAuth {
    /// Binds `addr` (the edge's upstream) in the lab's server namespace
    /// and starts answering.
    pub fn start(lab: &Lab, addr: SocketAddr) -> PbxAuth {
        let sock = super::in_ns(&lab.server_ns, move || {
            let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding the PBX {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            s
        });
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let nonce_seed = nonce_seed();
        let thread = {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || serve(&sock, &stop, &tally, nonce_seed))
        };
        PbxAuth {
            addr,
            stop,
            tally,
            thread: Some(thread),
        }
    }

    /// What it received and answered so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Drop for PbxAuth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn nonce_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn serve(sock: &UdpSocket, stop: &AtomicBool, tally: &Mutex<Tally>, nonce_seed: u32) {
    let started = Instant::now();
    let mut buf = vec![0u8; 65_536];
    let mut nonces: u32 = 0;
    let mut datagrams: u64 = 0;
    // Every nonce it hands out starts with this.
    let ours = format!("{nonce_seed:08x}");
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < MAX_LIFETIME
        && datagrams < MAX_DATAGRAMS
    {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            // Timeouts, and ICMP errors of earlier sends: keep serving.
            Err(_) => continue,
        };
        datagrams += 1;
        let Ok(mut t) = tally.lock() else { return };
        let Some(req) = Request::parse(&buf[..n]) else {
            if buf[..n].starts_with(b"SIP/2.0 ") {
                t.responses += 1;
            } else if !buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
                t.unreadable += 1;
            }
            continue;
        };
        let source = match req.vias.get(1) {
            None => None,
            Some(via) => match via_source(via) {
                Some(ip) => Some(ip),
                None => {
                    t.unreadable += 1;
                    continue;
                }
            },
        };
        t.requests += 1;
        match source {
            Some(ip) => *t.by_source.entry(ip).or_default() += 1,
            None => t.own += 1,
        }
        nonces = nonces.wrapping_add(1);
        let nonce = format!("{nonce_seed:08x}{nonces:08x}");
        let Some((code, answer)) = decide(&req, &nonce, &ours) else {
            continue;
        };
        if code == 200 && req.method == "REGISTER" {
            if let Some(u) = req.to_user().and_then(user_number) {
                t.registered.insert(u);
            }
        }
        *t.answers.entry(code).or_default() += 1;
        if let Some(ip) = source {
            *t.answers_by_source.entry((ip, code)).or_default() += 1;
        }
        drop(t);
        let _ = sock.send_to(answer.as_bytes(), from);
    }
}

/// The answer to `req` (None for an ACK): its code and text.
fn decide(req: &Request, nonce: &str, our_nonces: &str) -> Option<(u16, String)> {
    match req.method.as_str() {
        "ACK" => return None,
        "CANCEL" | "BYE" => return Some((200, req.answer(200, "OK", ""))),
        _ => {}
    }
    let Some(user) = req.to_user() else {
        return Some(if req.method == "OPTIONS" {
            (
                200,
                req.answer(
                    200,
                    "OK",
                    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n",
                ),
            )
        } else {
            (404, req.answer(404, "Not Found", ""))
        });
    };
    if user_number(user).is_none() {
        return Some((404, req.answer(404, "Not Found", "")));
    }
    let Some(creds) = req.credentials() else {
        let challenge = format!(
            "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5\r\n"
        );
        return Some((401, req.answer(401, "Unauthorized", &challenge)));
    };
    if !creds_valid(&creds, &req.method, our_nonces) {
        return Some((403, req.answer(403, "Forbidden", "")));
    }
    Some(match req.method.as_str() {
        "REGISTER" => {
            let expires = req
                .header("expires")
                .and_then(|e| e.trim().parse::<u32>().ok())
                .unwrap_or(DEFAULT_EXPIRES);
            let contact = match req.header("contact") {
                Some(c) if c.trim() == "*" => String::new(),
                Some(c) => format!("Contact: {};expires={expires}\r\n", c.trim()),
                None => String::new(),
            };
            let extra = format!("{contact}Expires: {expires}\r\n");
            (200, req.answer(200, "OK", &extra))
        }
        // No phone answers behind this stand-in: a call is not taken.
        "INVITE" => (480, req.answer(480, "Temporarily Unavailable", "")),
        _ => (200, req.answer(200, "OK", "")),
    })
}

/// An existing extension's number.
fn user_number(user: &str) -> Option<u32> {
    let n: u32 = user.parse().ok()?;
    (FIRST_USER..=LAST_USER).contains(&n).then_some(n)
}

/// Whether the digest credentials are right (RFC 2617, MD5, with or
/// without qop=auth) for one of our nonces.
fn creds_valid(c: &BTreeMap<String, String>, method: &str, our_nonces: &str) -> bool {
    let get = |k: &str| c.get(k).map(String::as_str);
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    let Some(number) = user_number(user) else {
        return false;
    };
    if realm != REALM || !nonce.starts_with(our_nonces) {
        return false;
    }
    if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("md5")) {
        return false;
    }
    let hex = |s: String| format!("{:x}", md5::compute(s.as_bytes()));
    let ha1 = hex(format!("{user}:{REALM}:{}", password(number)));
    let ha2 = hex(format!("{method}:{uri}"));
    let want = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(qop), Some(nc), Some(cnonce)) if qop.eq_ignore_ascii_case("auth") => {
            hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        _ => hex(format!("{ha1}:{nonce}:{ha2}")),
    };
    response.eq_ignore_ascii_case(&want)
}

/// The address a Via names as the request's source: its `received`, else
/// its sent-by host.
fn via_source(via: &str) -> Option<IpAddr> {
    let mut parts = via.split(';');
    let sent_by = parts.next()?.split_whitespace().nth(1)?;
    for p in parts {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        if name.trim().eq_ignore_ascii_case("received") {
            return value.trim().trim_matches(['[', ']']).parse().ok();
        }
    }
    let host = if let Some(rest) = sent_by.strip_prefix('[') {
        rest.split(']').next()?
    } else if sent_by.matches(':').count() > 1 {
        sent_by
    } else {
        sent_by.split(':').next()?
    };
    host.parse().ok()
}

/// A request as far as the stand-in reads it.
struct Request {
    method: String,
    /// Via values in order, one per comma-separated entry.
    vias: Vec<String>,
    /// Via header lines as they came, in order.
    via_lines: Vec<String>,
    /// Other headers: (lower-case long name, value).
    headers: Vec<(String, String)>,
}

/// Compact header forms (RFC 3261 7.3.3) the scanners use.
fn long_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        _ => return lower,
    }
    .to_string()
}

impl Request {
    fn parse(data: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(data).ok()?;
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let first = lines.next()?;
        let mut words = first.split(' ');
        let method = words.next()?;
        let _uri = words.next()?;
        if words.next()? != "SIP/2.0"
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return None;
        }
        let mut req = Request {
            method: method.to_string(),
            vias: Vec::new(),
            via_lines: Vec::new(),
            headers: Vec::new(),
        };
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let name = long_name(name);
            let value = value.trim().to_string();
            if name == "via" {
                req.vias
                    .extend(value.split(',').map(|v| v.trim().to_string()));
                req.via_lines.push(value);
            } else {
                req.headers.push((name, value));
            }
        }
        let complete = !req.vias.is_empty()
            && ["from", "to", "call-id", "cseq"]
                .iter()
                .all(|h| req.header(h).is_some());
        complete.then_some(req)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The user part of the To URI, when it has one.
    fn to_user(&self) -> Option<&str> {
        let to = self.header("to")?;
        let uri = match (to.find('<'), to.find('>')) {
            (Some(a), Some(b)) if a < b => &to[a + 1..b],
            _ => to.split(';').next()?,
        };
        let rest = uri
            .trim()
            .strip_prefix("sip:")
            .or_else(|| uri.trim().strip_prefix("sips:"))?;
        let (user, _) = rest.split_once('@')?;
        let user = user.split(':').next()?;
        (!user.is_empty()).then_some(user)
    }

    /// The digest parameters of Authorization or Proxy-Authorization.
    fn credentials(&self) -> Option<BTreeMap<String, String>> {
        let value = self
            .header("authorization")
            .or_else(|| self.header("proxy-authorization"))?;
        let params = value
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("digest "))
            .map(|_| &value[7..])
            .unwrap_or("");
        let mut out = BTreeMap::new();
        for part in split_outside_quotes(params) {
            if let Some((k, v)) = part.split_once('=') {
                out.insert(
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                );
            }
        }
        Some(out)
    }

    /// A response: the Vias, From, To (a tag added when it has none),
    /// Call-ID and CSeq copied, then `extra` header lines.
    fn answer(&self, code: u16, reason: &str, extra: &str) -> String {
        let mut out = format!("SIP/2.0 {code} {reason}\r\n");
        for v in &self.via_lines {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        let get = |h: &str| self.header(h).unwrap_or("");
        let call_id = get("call-id");
        let to = get("to");
        let to = if to.to_ascii_lowercase().contains(";tag=") {
            to.to_string()
        } else {
            format!("{to};tag=pbx{:08x}", fnv(call_id))
        };
        out.push_str(&format!(
            "From: {}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {}\r\n",
            get("from"),
            get("cseq")
        ));
        out.push_str(extra);
        out.push_str("Server: sip-ka-lab-pbx\r\nContent-Length: 0\r\n\r\n");
        out
    }
}

/// `a="x,y", b=z` split at the commas outside quotes.
fn split_outside_quotes(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// The stand-in's answer to `datagram` (None: unreadable, or an ACK),
/// with `nonce` for a challenge and nonces starting with `ours` taken as
/// its own: for the tests of the stand-in itself.
pub fn answer_to(datagram: &[u8], nonce: &str, ours: &str) -> Option<(u16, String)> {
    decide(&Request::parse(datagram)?, nonce, ours)
}

/// The source the stand-in counts a request under (see [`Tally`]).
pub fn source_of(datagram: &[u8]) -> Option<IpAddr> {
    via_source(Request::parse(datagram)?.vias.get(1)?)
}
