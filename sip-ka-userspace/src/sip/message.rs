//! [`SipMessage`]: the start line, the header list with its generic
//! reads and edits, the body, and serialisation. Parsing is in
//! [`super::parse`]; the typed header reads are in `typed.rs`.

use std::fmt;

use super::headers::method::Method;
use super::headers::names::{canonical_name, header_parts, make_header, name_matches};
use super::uri::Uri;

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
/// [`parse_message`](super::parse::parse_message) guarantees that a message has Via, From, To, Call-ID
/// and CSeq that parse, a CSeq method matching the request method, a
/// Max-Forwards (if any) of at most 255, and Contact, Route and
/// Record-Route values that parse. Accessors re-read the header list, so
/// they follow edits made through [`SipMessage::headers_mut`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage {
    // Visible to the sibling files that build messages (parse, builder).
    pub(super) start: StartLine,
    pub(super) headers: rsip::Headers,
    pub(super) body: Vec<u8>,
}

impl SipMessage {
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
    /// [`make_header`] so names are canonical.
    pub fn headers_mut(&mut self) -> &mut rsip::Headers {
        &mut self.headers
    }

    /// Values of every field with this name (any spelling: `i`, `call-id`,
    /// `Call-ID`), in order.
    pub fn header_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> + 's {
        let name = Name::new(name);
        self.headers.iter().filter_map(move |h| {
            let (n, v) = header_parts(h);
            name.matches(n).then_some(v)
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
        let canonical = canonical_name(name).unwrap_or(name);
        self.headers
            .retain(|h| !name_matches(header_parts(h).0, canonical));
        before - self.headers.iter().count()
    }

    /// Replaces every field with this name by one field with `value`, at
    /// the position of the first (appended if there was none).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let canonical = canonical_name(name).unwrap_or(name);
        let new = make_header(name, value);
        let list: Vec<rsip::Header> = std::mem::take(&mut self.headers).into();
        let mut out = Vec::with_capacity(list.len() + 1);
        let mut new = Some(new);
        for h in list {
            if name_matches(header_parts(&h).0, canonical) {
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

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Replaces the body and sets Content-Length to match.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.set_header("Content-Length", body.len().to_string());
        self.body = body;
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

/// The name a header lookup compares with, kept by the lookup's iterator
/// without a heap copy: a compact form is expanded to its canonical
/// `'static` name, any other name is compared case-insensitively as given
/// (which is what its canonical spelling would compare as), from a copy on
/// the stack unless it is longer than any header name in use.
enum Name {
    Static(&'static str),
    Inline { len: u8, bytes: [u8; NAME_INLINE] },
    Heap(String),
}

const NAME_INLINE: usize = 32;

impl Name {
    fn new(name: &str) -> Name {
        if name.len() == 1 {
            if let Some(c) = canonical_name(name) {
                return Name::Static(c);
            }
        }
        match name.as_bytes() {
            b if b.len() <= NAME_INLINE => {
                let mut bytes = [0; NAME_INLINE];
                if let Some(d) = bytes.get_mut(..b.len()) {
                    d.copy_from_slice(b);
                }
                Name::Inline {
                    len: b.len() as u8,
                    bytes,
                }
            }
            _ => Name::Heap(name.to_string()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Static(s) => s.as_bytes(),
            Name::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Name::Heap(s) => s.as_bytes(),
        }
    }

    /// [`name_matches`] of a field's name `n` against this name, on bytes.
    fn matches(&self, n: &str) -> bool {
        let name = self.as_bytes();
        n.as_bytes().eq_ignore_ascii_case(name)
            || (n.len() == 1
                && canonical_name(n).is_some_and(|c| c.as_bytes().eq_ignore_ascii_case(name)))
    }
}

impl fmt::Display for SipMessage {
    /// The wire form, body as lossy UTF-8 (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}
