//! Parsing bytes from the network into a [`SipMessage`], the accessors a
//! proxy needs, header edits and serialisation.

use std::fmt;

use sip_ka_common::callid_hash;

use super::errors::{HeaderError, ParseError};
use super::headers::{
    check_call_id, header_parts, make_header, name_matches, parse_number, CSeq, Contact, FlowTimer,
    Method, MinSe, MsKeepAlive, NameAddr, OptionTags, SessionExpires, Via,
};
use super::lex::{describe, find_bytes, is_token_byte, is_wsp, trim_wsp};
use super::uri::Uri;
use super::{Framing, Limits};

/// The first line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: String },
}

/// A parsed SIP/2.0 message: start line, header fields in an
/// [`rsip::Headers`] list (names canonical, compact forms expanded, folded
/// lines joined), and the body.
///
/// [`parse_message`] guarantees that a message has Via, From, To, Call-ID
/// and CSeq that parse, a CSeq method matching the request method, a
/// Max-Forwards (if any) of at most 255, and Contact, Route and
/// Record-Route values that parse. Accessors re-read the header list, so
/// they follow edits made through [`SipMessage::headers_mut`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage {
    start: StartLine,
    headers: rsip::Headers,
    body: Vec<u8>,
}

/// A header line of the header section, folding undone.
pub(crate) struct RawHeader {
    pub(crate) name: String,
    pub(crate) value: Vec<u8>,
    pub(crate) line: usize,
}

/// The three parts of a message's bytes.
pub(crate) struct Head<'a> {
    pub(crate) start_line: &'a [u8],
    /// Header lines, without the CRLF CRLF that ends them.
    pub(crate) section: &'a [u8],
    /// Everything after the CRLF CRLF.
    pub(crate) rest: &'a [u8],
}

/// Skips CRLFs before the start line (RFC 3261 7.5).
pub(crate) fn skip_leading_crlf(mut raw: &[u8]) -> &[u8] {
    while let Some(rest) = raw.strip_prefix(b"\r\n") {
        raw = rest;
    }
    raw
}

/// Splits a message into start line, header section and the rest.
pub(crate) fn split_head(raw: &[u8]) -> Result<Head<'_>, ParseError> {
    let msg = skip_leading_crlf(raw);
    if msg.is_empty() {
        return Err(ParseError::Empty);
    }
    let end = find_bytes(msg, b"\r\n\r\n").ok_or(ParseError::NoEndOfHeaders)?;
    let head = msg.get(..end).unwrap_or(&[]);
    let rest = msg.get(end + 4..).unwrap_or(&[]);
    let (start_line, section) = match find_bytes(head, b"\r\n") {
        Some(i) => (
            head.get(..i).unwrap_or(&[]),
            head.get(i + 2..).unwrap_or(&[]),
        ),
        None => (head, &[][..]),
    };
    Ok(Head {
        start_line,
        section,
        rest,
    })
}

/// Iterates over CRLF-separated lines.
fn crlf_lines(section: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(section);
    std::iter::from_fn(move || {
        let cur = rest?;
        match find_bytes(cur, b"\r\n") {
            Some(i) => {
                rest = cur.get(i + 2..);
                Some(cur.get(..i).unwrap_or(&[]))
            }
            None => {
                rest = None;
                Some(cur)
            }
        }
    })
}

/// Splits a header section into header fields, joining folded lines with a
/// single SP. Line numbers count the start line as line 1.
pub(crate) fn split_header_lines(
    section: &[u8],
    max_headers: usize,
) -> Result<Vec<RawHeader>, ParseError> {
    let mut out: Vec<RawHeader> = Vec::new();
    if section.is_empty() {
        return Ok(out);
    }
    for (idx, line) in crlf_lines(section).enumerate() {
        let lineno = idx.saturating_add(2);
        let bad = |reason: &str| ParseError::BadHeaderLine {
            line: lineno,
            reason: reason.to_string(),
        };
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(bad("bare CR or LF"));
        }
        match line.first() {
            None => return Err(bad("empty line")),
            Some(&b) if is_wsp(b) => {
                let last = out
                    .last_mut()
                    .ok_or_else(|| bad("continuation line before the first header"))?;
                let t = trim_wsp(line);
                if !t.is_empty() {
                    if !last.value.is_empty() {
                        last.value.push(b' ');
                    }
                    last.value.extend_from_slice(t);
                }
            }
            Some(_) => {
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or_else(|| bad("no ':' after the header name"))?;
                let name = trim_wsp(line.get(..colon).unwrap_or(&[]));
                if name.is_empty() {
                    return Err(bad("empty header name"));
                }
                if let Some(&b) = name.iter().find(|&&b| !is_token_byte(b)) {
                    return Err(bad(&format!("header name contains {}", describe(b))));
                }
                if out.len() >= max_headers {
                    return Err(ParseError::TooManyHeaders { limit: max_headers });
                }
                out.push(RawHeader {
                    name: String::from_utf8_lossy(name).into_owned(),
                    value: trim_wsp(line.get(colon + 1..).unwrap_or(&[])).to_vec(),
                    line: lineno,
                });
            }
        }
    }
    Ok(out)
}

/// Finds Content-Length in a header section without parsing the rest
/// (for stream framing). `Ok(None)` if absent.
pub(crate) fn scan_content_length(section: &[u8]) -> Result<Option<usize>, ParseError> {
    // Collect values of Content-Length / l, following continuation lines.
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut in_cl = false;
    for line in crlf_lines(section) {
        match line.first() {
            Some(&b) if is_wsp(b) => {
                if in_cl {
                    if let Some(v) = values.last_mut() {
                        v.push(b' ');
                        v.extend_from_slice(trim_wsp(line));
                    }
                }
            }
            _ => {
                in_cl = false;
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let name = trim_wsp(line.get(..colon).unwrap_or(&[]));
                    if let Ok(name) = std::str::from_utf8(name) {
                        if name_matches(name, "Content-Length") {
                            in_cl = true;
                            values.push(trim_wsp(line.get(colon + 1..).unwrap_or(&[])).to_vec());
                        }
                    }
                }
            }
        }
    }
    let mut found: Option<usize> = None;
    for v in values {
        let text = String::from_utf8_lossy(&v);
        let n = parse_number("Content-Length", &text)?;
        let n =
            usize::try_from(n).map_err(|_| HeaderError::new("Content-Length", "out of range"))?;
        match found {
            Some(prev) if prev != n => {
                return Err(HeaderError::new("Content-Length", "conflicting values").into())
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

fn short(s: &str) -> String {
    s.chars().take(32).collect()
}

fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let numeric = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| v.get(4..))
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
    if numeric {
        Err(ParseError::UnsupportedVersion(short(v)))
    } else {
        Err(ParseError::BadStartLine(format!(
            "bad SIP version {:?}",
            short(v)
        )))
    }
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let line = std::str::from_utf8(line)
        .map_err(|_| ParseError::BadStartLine("not valid UTF-8".into()))?;
    if line.is_empty() {
        return Err(ParseError::BadStartLine("empty".into()));
    }
    if let Some(b) = line.bytes().find(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(ParseError::BadStartLine(format!(
            "contains {}",
            describe(b)
        )));
    }
    let is_status = line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if is_status {
        let mut parts = line.splitn(3, ' ');
        check_version(parts.next().unwrap_or(""))?;
        let code = parts
            .next()
            .ok_or_else(|| ParseError::BadStartLine("missing status code".into()))?;
        let value = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
            code.parse::<u16>().ok()
        } else {
            None
        };
        let code = match value {
            Some(c) if (100..=699).contains(&c) => c,
            _ => return Err(ParseError::BadStatusCode(short(code))),
        };
        // RFC 4475 3.1.1.13: the SP before an empty reason phrase is
        // required; a missing one is accepted here as a liberal receiver.
        let reason = parts.next().unwrap_or("").to_string();
        return Ok(StartLine::Response { code, reason });
    }
    let line_err = |r: &str| Err(ParseError::BadStartLine(format!("{r} in request line")));
    if line.contains('\t') {
        return line_err("tab");
    }
    if line.starts_with(' ') {
        return line_err("leading whitespace");
    }
    if line.ends_with(' ') {
        return line_err("trailing whitespace");
    }
    if line.contains("  ") {
        return line_err("extra whitespace between elements");
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let (method, uri, version) = match parts.as_slice() {
        [m, u, v] => (*m, *u, *v),
        [_, .., last]
            if parts.len() > 3
                && last
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) =>
        {
            return Err(ParseError::BadRequestUri("contains whitespace".into()))
        }
        _ => {
            return Err(ParseError::BadStartLine(
                "expected METHOD Request-URI SIP/2.0".into(),
            ))
        }
    };
    let method =
        Method::parse(method).map_err(|r| ParseError::BadStartLine(format!("bad method: {r}")))?;
    check_version(version)?;
    if uri.starts_with('<') {
        return Err(ParseError::BadRequestUri("enclosed in <>".into()));
    }
    let uri = Uri::parse(uri).map_err(ParseError::BadRequestUri)?;
    if uri.is_sip() && uri.headers().is_some() {
        return Err(ParseError::BadRequestUri(
            "must not contain escaped headers ('?')".into(),
        ));
    }
    Ok(StartLine::Request { method, uri })
}

/// Parses bytes from the network into a message.
///
/// `framing` says where they came from: a [`Framing::Datagram`] is one UDP
/// payload (a missing Content-Length means the body runs to the end, and
/// bytes beyond Content-Length are ignored, RFC 3261 18.3); a
/// [`Framing::Stream`] is one message cut from a TCP/TLS stream by
/// [`super::StreamFramer`] (Content-Length required and exact).
///
/// Never panics; every failure is a [`ParseError`] that says what is wrong.
pub fn parse_message(
    raw: &[u8],
    framing: Framing,
    limits: &Limits,
) -> Result<SipMessage, ParseError> {
    if raw.len() > limits.max_message_size {
        return Err(ParseError::MessageTooLarge {
            size: raw.len(),
            limit: limits.max_message_size,
        });
    }
    let head = split_head(raw)?;
    let start = parse_start_line(head.start_line)?;
    let raw_headers = split_header_lines(head.section, limits.max_headers)?;
    let mut list = Vec::with_capacity(raw_headers.len());
    for h in raw_headers {
        let value = String::from_utf8(h.value).map_err(|_| ParseError::NotUtf8 {
            header: format!("{} (line {})", h.name, h.line),
        })?;
        list.push(make_header(&h.name, value));
    }
    let mut msg = SipMessage {
        start,
        headers: list.into(),
        body: Vec::new(),
    };
    msg.validate()?;
    let content_length = match msg.single_optional("Content-Length")? {
        Some(v) => {
            let n = parse_number("Content-Length", v)?;
            Some(usize::try_from(n).map_err(|_| {
                ParseError::from(HeaderError::new("Content-Length", "out of range"))
            })?)
        }
        None => None,
    };
    let available = head.rest.len();
    let body = match (framing, content_length) {
        (_, Some(n)) if n > available => {
            return Err(ParseError::BodyTruncated {
                declared: n,
                available,
            })
        }
        (Framing::Stream, Some(n)) if n < available => {
            return Err(ParseError::TrailingBytes {
                extra: available - n,
            })
        }
        (_, Some(n)) => head.rest.get(..n).unwrap_or(&[]),
        (Framing::Datagram, None) => head.rest,
        (Framing::Stream, None) => return Err(ParseError::MissingContentLength),
    };
    msg.body = body.to_vec();
    Ok(msg)
}

impl SipMessage {
    /// Parses one UDP datagram.
    pub fn parse_datagram(raw: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
        parse_message(raw, Framing::Datagram, limits)
    }

    /// Parses one message framed by [`super::StreamFramer`].
    pub fn parse_stream(raw: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
        parse_message(raw, Framing::Stream, limits)
    }

    /// A message from parts. `headers` are `(name, value)` pairs; names are
    /// canonicalised. No validation is done.
    pub fn from_parts<'a>(
        start: StartLine,
        headers: impl IntoIterator<Item = (&'a str, String)>,
        body: Vec<u8>,
    ) -> SipMessage {
        let list: Vec<rsip::Header> = headers
            .into_iter()
            .map(|(n, v)| make_header(n, v))
            .collect();
        SipMessage {
            start,
            headers: list.into(),
            body,
        }
    }

    /// The checks [`parse_message`] guarantees; see the type's docs.
    fn validate(&self) -> Result<(), ParseError> {
        let mut any_via = false;
        for v in self.header_values("Via") {
            any_via = true;
            Via::parse_list(v).map_err(|r| HeaderError::new("Via", r))?;
        }
        if !any_via {
            return Err(ParseError::MissingHeader("Via"));
        }
        NameAddr::parse(self.single("From")?).map_err(|r| HeaderError::new("From", r))?;
        NameAddr::parse(self.single("To")?).map_err(|r| HeaderError::new("To", r))?;
        check_call_id(self.single("Call-ID")?)?;
        let cseq = CSeq::parse(self.single("CSeq")?)?;
        if let StartLine::Request { method, .. } = &self.start {
            if &cseq.method != method {
                return Err(ParseError::CSeqMethodMismatch {
                    cseq: cseq.method.to_string(),
                    method: method.to_string(),
                });
            }
        }
        if let Some(v) = self.single_optional("Max-Forwards")? {
            let n = parse_number("Max-Forwards", v)?;
            if n > 255 {
                return Err(
                    HeaderError::new("Max-Forwards", format!("{n} is larger than 255")).into(),
                );
            }
        }
        for v in self.header_values("Contact") {
            Contact::parse_list(v).map_err(|r| HeaderError::new("Contact", r))?;
        }
        for name in ["Route", "Record-Route"] {
            for v in self.header_values(name) {
                NameAddr::parse_route_list(v).map_err(|r| HeaderError::new(name, r))?;
            }
        }
        Ok(())
    }

    /// The only value of a header that must appear exactly once.
    fn single(&self, name: &'static str) -> Result<&str, ParseError> {
        let mut it = self.header_values(name);
        let first = it.next().ok_or(ParseError::MissingHeader(name))?;
        if it.next().is_some() {
            return Err(ParseError::DuplicateHeader(name));
        }
        Ok(first)
    }

    /// The value of a header that may appear at most once.
    fn single_optional(&self, name: &'static str) -> Result<Option<&str>, ParseError> {
        let mut it = self.header_values(name);
        let first = it.next();
        if first.is_some() && it.next().is_some() {
            return Err(ParseError::DuplicateHeader(name));
        }
        Ok(first)
    }

    /// An optional header that may appear once, parsed.
    fn optional_typed<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, HeaderError>,
    ) -> Result<Option<T>, HeaderError> {
        let mut it = self.header_values(name);
        let Some(first) = it.next() else {
            return Ok(None);
        };
        if it.next().is_some() {
            return Err(HeaderError::new(name, "repeated"));
        }
        parse(first).map(Some)
    }

    // ----- start line -----

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn is_response(&self) -> bool {
        !self.is_request()
    }

    /// The request method (requests only).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI (requests only).
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// Replaces the Request-URI (requests only; no-op on responses).
    pub fn set_request_uri(&mut self, new: Uri) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }

    /// The status code (responses only).
    pub fn status_code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase (responses only).
    pub fn reason_phrase(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    // ----- headers -----

    /// All header fields, in order, as rsip headers.
    pub fn headers(&self) -> &rsip::Headers {
        &self.headers
    }

    /// The header list, for edits rsip-style. Build new fields with
    /// [`super::make_header`] so names are canonical.
    pub fn headers_mut(&mut self) -> &mut rsip::Headers {
        &mut self.headers
    }

    /// Values of every field with this name (any spelling: `i`, `call-id`,
    /// `Call-ID`), in order.
    pub fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> + 's {
        let name = super::headers::canonical_name(name)
            .map(str::to_string)
            .unwrap_or_else(|| name.to_string());
        self.headers.iter().filter_map(move |h| {
            let (n, v) = header_parts(h);
            name_matches(n, &name).then_some(v)
        })
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Appends a header field.
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(make_header(name, value));
    }

    /// Inserts a header field before all others (Via, Record-Route).
    pub fn prepend_header(&mut self, name: &str, value: impl Into<String>) {
        let mut list: Vec<rsip::Header> = std::mem::take(&mut self.headers).into();
        list.insert(0, make_header(name, value));
        self.headers = list.into();
    }

    /// Removes every field with this name; returns how many.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let before = self.headers.iter().count();
        let canonical = super::headers::canonical_name(name)
            .unwrap_or(name)
            .to_string();
        self.headers
            .retain(|h| !name_matches(header_parts(h).0, &canonical));
        before - self.headers.iter().count()
    }

    /// Replaces every field with this name by one field with `value`, at
    /// the position of the first (appended if there was none).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let canonical = super::headers::canonical_name(name)
            .unwrap_or(name)
            .to_string();
        let new = make_header(name, value);
        let list: Vec<rsip::Header> = std::mem::take(&mut self.headers).into();
        let mut out = Vec::with_capacity(list.len() + 1);
        let mut new = Some(new);
        for h in list {
            if name_matches(header_parts(&h).0, &canonical) {
                if let Some(n) = new.take() {
                    out.push(n);
                }
            } else {
                out.push(h);
            }
        }
        if let Some(n) = new {
            out.push(n);
        }
        self.headers = out.into();
    }

    // ----- dialog identifiers -----

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// [`sip_ka_common::callid_hash`] of the Call-ID: the key of the
    /// DIALOGS map shared with the XDP program.
    pub fn call_id_hash(&self) -> Option<u64> {
        self.call_id().map(|c| callid_hash(c.as_bytes()))
    }

    pub fn from(&self) -> Option<NameAddr> {
        self.header("From").and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn from_tag(&self) -> Option<String> {
        self.from().and_then(|f| f.tag().map(str::to_string))
    }

    pub fn to(&self) -> Option<NameAddr> {
        self.header("To").and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn to_tag(&self) -> Option<String> {
        self.to().and_then(|t| t.tag().map(str::to_string))
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.header("CSeq").and_then(|v| CSeq::parse(v).ok())
    }

    // ----- Via -----

    /// Every Via, top first (comma-separated values split).
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::new();
        for v in self.header_values("Via") {
            out.extend(Via::parse_list(v).map_err(|r| HeaderError::new("Via", r))?);
        }
        Ok(out)
    }

    /// The top Via.
    pub fn top_via(&self) -> Option<Via> {
        let first = self.header("Via")?;
        let item = super::lex::split_commas(first).ok()?.into_iter().next()?;
        Via::parse(item).ok()
    }

    /// Adds a Via above the others.
    pub fn prepend_via(&mut self, via: &Via) {
        self.prepend_header("Via", via.to_string());
    }

    /// Replaces the top Via (e.g. to add `received` and `rport`).
    pub fn set_top_via(&mut self, via: &Via) -> bool {
        self.edit_top_via(Some(via.to_string())).is_some()
    }

    /// Removes the top Via (of a response being forwarded) and returns it.
    pub fn remove_top_via(&mut self) -> Option<Via> {
        let top = self.top_via()?;
        self.edit_top_via(None)?;
        Some(top)
    }

    fn edit_top_via(&mut self, replacement: Option<String>) -> Option<()> {
        let mut list: Vec<rsip::Header> = std::mem::take(&mut self.headers).into();
        let result = (|| {
            let idx = list
                .iter()
                .position(|h| name_matches(header_parts(h).0, "Via"))?;
            let value = header_parts(list.get(idx)?).1.to_string();
            let items = super::lex::split_commas(&value).ok()?;
            let rest: Vec<&str> = items.iter().skip(1).map(|s| s.trim()).collect();
            let mut parts: Vec<String> = Vec::new();
            if let Some(r) = replacement {
                parts.push(r);
            }
            parts.extend(rest.iter().map(|s| s.to_string()));
            if parts.is_empty() {
                list.remove(idx);
            } else if let Some(slot) = list.get_mut(idx) {
                *slot = make_header("Via", parts.join(", "));
            }
            Some(())
        })();
        self.headers = list.into();
        result
    }

    // ----- other proxy headers -----

    /// Max-Forwards, if present and numeric.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header("Max-Forwards")
            .and_then(|v| parse_number("Max-Forwards", v).ok())
    }

    /// Sets Max-Forwards.
    pub fn set_max_forwards(&mut self, n: u32) {
        self.set_header("Max-Forwards", n.to_string());
    }

    /// The Content-Length header's value.
    pub fn content_length(&self) -> Option<usize> {
        self.header("Content-Length")
            .and_then(|v| parse_number("Content-Length", v).ok())
            .and_then(|n| usize::try_from(n).ok())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Replaces the body and sets Content-Length to match.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.set_header("Content-Length", body.len().to_string());
        self.body = body;
    }

    /// Every Contact value.
    pub fn contacts(&self) -> Result<Vec<Contact>, HeaderError> {
        let mut out = Vec::new();
        for v in self.header_values("Contact") {
            out.extend(Contact::parse_list(v).map_err(|r| HeaderError::new("Contact", r))?);
        }
        Ok(out)
    }

    fn route_list(&self, name: &'static str) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for v in self.header_values(name) {
            out.extend(NameAddr::parse_route_list(v).map_err(|r| HeaderError::new(name, r))?);
        }
        Ok(out)
    }

    /// Route entries, top first.
    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.route_list("Route")
    }

    /// Record-Route entries, top first.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.route_list("Record-Route")
    }

    /// Path entries (RFC 3327), top first.
    pub fn paths(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.route_list("Path")
    }

    fn option_tags(&self, name: &'static str) -> Result<OptionTags, HeaderError> {
        let mut out = OptionTags::default();
        for v in self.header_values(name) {
            out.0.extend(
                OptionTags::parse(v)
                    .map_err(|r| HeaderError::new(name, r))?
                    .0,
            );
        }
        Ok(out)
    }

    /// Supported (`k`) option tags, all fields together.
    pub fn supported(&self) -> Result<OptionTags, HeaderError> {
        self.option_tags("Supported")
    }

    pub fn require(&self) -> Result<OptionTags, HeaderError> {
        self.option_tags("Require")
    }

    pub fn proxy_require(&self) -> Result<OptionTags, HeaderError> {
        self.option_tags("Proxy-Require")
    }

    /// Session-Expires (`x`), RFC 4028.
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, HeaderError> {
        self.optional_typed("Session-Expires", SessionExpires::parse)
    }

    /// Min-SE, RFC 4028.
    pub fn min_se(&self) -> Result<Option<MinSe>, HeaderError> {
        self.optional_typed("Min-SE", MinSe::parse)
    }

    /// Flow-Timer, RFC 5626.
    pub fn flow_timer(&self) -> Result<Option<FlowTimer>, HeaderError> {
        self.optional_typed("Flow-Timer", FlowTimer::parse)
    }

    /// ms-keep-alive; a repeated header is an error (it must appear at
    /// most once).
    pub fn ms_keep_alive(&self) -> Result<Option<MsKeepAlive>, HeaderError> {
        self.optional_typed("ms-keep-alive", MsKeepAlive::parse)
    }

    // ----- output -----

    /// The message as bytes for the wire. Header values are written as
    /// stored (CR and LF, which parsing never leaves in a value, become SP).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.extend_from_slice(format!("{method} {uri} SIP/2.0\r\n").as_bytes())
            }
            StartLine::Response { code, reason } => out.extend_from_slice(
                format!("SIP/2.0 {code} {}\r\n", reason.replace(['\r', '\n'], " ")).as_bytes(),
            ),
        }
        for h in self.headers.iter() {
            let (name, value) = header_parts(h);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend(
                value
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// rsip's model of this message, where rsip can represent it (not for
    /// extension methods or URIs rsip cannot parse). Note that rsip's own
    /// `Display` writes status lines with its own reason phrases and the
    /// body as lossy UTF-8; use [`SipMessage::to_bytes`] for the wire.
    pub fn to_rsip(&self) -> Option<rsip::SipMessage> {
        Some(match &self.start {
            StartLine::Request { method, uri } => rsip::SipMessage::Request(rsip::Request {
                method: method.to_rsip()?,
                uri: uri.to_rsip()?,
                version: rsip::Version::V2,
                headers: self.headers.clone(),
                body: self.body.clone(),
            }),
            StartLine::Response { code, .. } => rsip::SipMessage::Response(rsip::Response {
                status_code: rsip::StatusCode::from(*code),
                version: rsip::Version::V2,
                headers: self.headers.clone(),
                body: self.body.clone(),
            }),
        })
    }
}

impl fmt::Display for SipMessage {
    /// The wire form, body as lossy UTF-8 (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}
