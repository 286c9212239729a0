//! Parsing bytes from the network into a [`SipMessage`], with the checks
//! every parsed message passes.

use super::errors::{HeaderError, ParseError};
use super::headers::cseq::{check_call_id, parse_number, CSeq};
use super::headers::method::Method;
use super::headers::name_addr::{Contact, NameAddr};
use super::headers::names::make_header;
use super::headers::via::Via;
use super::lex::describe;
use super::limits::{Framing, Limits};
use super::message::{SipMessage, StartLine};
use super::scan::{split_head, split_header_lines};
use super::uri::Uri;

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
    let uri = parse_request_uri(uri)?;
    Ok(StartLine::Request { method, uri })
}

/// Parses a Request-URI as the request line carries it.
pub fn parse_request_uri(uri: &str) -> Result<Uri, ParseError> {
    if uri.starts_with('<') {
        return Err(ParseError::BadRequestUri("enclosed in <>".into()));
    }
    let uri = Uri::parse(uri).map_err(ParseError::BadRequestUri)?;
    check_request_uri(&uri)?;
    Ok(uri)
}

/// What a Request-URI must be beyond a valid URI (RFC 3261 19.1.5).
pub(super) fn check_request_uri(uri: &Uri) -> Result<(), ParseError> {
    if uri.is_sip() && uri.headers().is_some() {
        return Err(ParseError::BadRequestUri(
            "must not contain escaped headers ('?')".into(),
        ));
    }
    Ok(())
}

/// Parses bytes from the network into a message.
///
/// `framing` says where they came from: a [`Framing::Datagram`] is one UDP
/// payload (a missing Content-Length means the body runs to the end, and
/// bytes beyond Content-Length are ignored, RFC 3261 18.3); a
/// [`Framing::Stream`] is one message cut from a TCP/TLS stream by
/// [`super::framer::StreamFramer`] (Content-Length required and exact).
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

    /// Parses one message framed by [`super::framer::StreamFramer`].
    pub fn parse_stream(raw: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
        parse_message(raw, Framing::Stream, limits)
    }

    /// The checks [`parse_message`] guarantees; see the type's docs.
    pub(super) fn validate(&self) -> Result<(), ParseError> {
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
}
