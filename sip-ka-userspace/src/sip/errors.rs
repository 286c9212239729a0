//! Errors of the SIP message layer. Each says what is wrong in words that
//! can go into a reason phrase (`400 Missing Call-ID`).

use std::fmt;

/// A header field value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError {
    /// The header's canonical name (`Via`, `CSeq`, `ms-keep-alive`, ...).
    pub name: String,
    pub reason: String,
}

impl HeaderError {
    pub fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        HeaderError {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad {}: {}", self.name, self.reason)
    }
}

impl std::error::Error for HeaderError {}

/// Why bytes from the network are not a usable SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CRLFs (or nothing at all).
    Empty,
    /// More bytes than [`super::limits::Limits::max_message_size`].
    MessageTooLarge { size: usize, limit: usize },
    /// No end of the header section within the size limit (streams).
    HeaderSectionTooLarge { limit: usize },
    /// More header fields than [`super::limits::Limits::max_headers`].
    TooManyHeaders { limit: usize },
    /// The header section has no terminating empty line.
    NoEndOfHeaders,
    /// The request or status line is malformed.
    BadStartLine(String),
    /// The Request-URI is malformed or not allowed there.
    BadRequestUri(String),
    /// A SIP version other than 2.0 (answered with 505).
    UnsupportedVersion(String),
    /// A status code that is not three digits from 100 to 699.
    BadStatusCode(String),
    /// A header line that is not `name: value`.
    BadHeaderLine { line: usize, reason: String },
    /// A header value that is not UTF-8.
    NotUtf8 { header: String },
    /// A mandatory header is absent.
    MissingHeader(&'static str),
    /// A header that must appear once appears more often.
    DuplicateHeader(&'static str),
    /// A header value that does not parse.
    BadHeader(HeaderError),
    /// The CSeq method differs from the request method.
    CSeqMethodMismatch { cseq: String, method: String },
    /// A message on a stream transport without Content-Length (RFC 3261
    /// 18.3).
    MissingContentLength,
    /// Content-Length promises more than the datagram (or frame) holds.
    BodyTruncated { declared: usize, available: usize },
    /// A framed stream message longer than its Content-Length.
    TrailingBytes { extra: usize },
    /// Bytes between stream messages that are neither a message nor a
    /// CRLF keep-alive.
    StrayBytes(String),
}

impl ParseError {
    /// The status code of the error response: 505 for an unsupported
    /// version, 513 for an oversized message, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::UnsupportedVersion(_) => 505,
            ParseError::MessageTooLarge { .. } => 513,
            _ => 400,
        }
    }

    /// A reason phrase for the error response: the standard phrase for 505
    /// and 513, otherwise what is wrong, capitalised
    /// (`Content-Length 40 larger than body 12`).
    pub fn reason_phrase(&self) -> String {
        match self.status_code() {
            505 => "Version Not Supported".into(),
            513 => "Message Too Large".into(),
            _ => {
                let text = self.to_string();
                let mut chars = text.chars();
                let capitalised: String = match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect(),
                    None => "Bad Request".into(),
                };
                sanitize_reason(&capitalised)
            }
        }
    }
}

/// Makes text safe for a Reason-Phrase: printable ASCII only (anything
/// else becomes `?`), at most 120 characters.
pub fn sanitize_reason(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(120)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty message"),
            ParseError::MessageTooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit}")
            }
            ParseError::HeaderSectionTooLarge { limit } => {
                write!(f, "header section too large (limit {limit} bytes)")
            }
            ParseError::TooManyHeaders { limit } => {
                write!(f, "too many header fields (limit {limit})")
            }
            ParseError::NoEndOfHeaders => {
                write!(f, "header section not terminated by an empty line")
            }
            ParseError::BadStartLine(r) => write!(f, "bad start line: {r}"),
            ParseError::BadRequestUri(r) => write!(f, "bad Request-URI: {r}"),
            ParseError::UnsupportedVersion(v) => write!(f, "unsupported SIP version {v}"),
            ParseError::BadStatusCode(c) => write!(f, "bad status code {c}"),
            ParseError::BadHeaderLine { line, reason } => {
                write!(f, "malformed header line {line}: {reason}")
            }
            ParseError::NotUtf8 { header } => write!(f, "{header} is not valid UTF-8"),
            ParseError::MissingHeader(name) => write!(f, "missing {name}"),
            ParseError::DuplicateHeader(name) => write!(f, "more than one {name}"),
            ParseError::BadHeader(e) => e.fmt(f),
            ParseError::CSeqMethodMismatch { cseq, method } => {
                write!(
                    f,
                    "CSeq method {cseq} does not match request method {method}"
                )
            }
            ParseError::MissingContentLength => {
                write!(f, "missing Content-Length (required on stream transports)")
            }
            ParseError::BodyTruncated {
                declared,
                available,
            } => write!(f, "Content-Length {declared} larger than body {available}"),
            ParseError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes beyond Content-Length")
            }
            ParseError::StrayBytes(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<HeaderError> for ParseError {
    fn from(e: HeaderError) -> Self {
        ParseError::BadHeader(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases() {
        assert_eq!(
            ParseError::MissingHeader("Call-ID").reason_phrase(),
            "Missing Call-ID"
        );
        assert_eq!(
            ParseError::BodyTruncated {
                declared: 40,
                available: 12
            }
            .reason_phrase(),
            "Content-Length 40 larger than body 12"
        );
        assert_eq!(
            ParseError::BadHeader(HeaderError::new(
                "CSeq",
                "sequence number 99999999999 out of range"
            ))
            .reason_phrase(),
            "Bad CSeq: sequence number 99999999999 out of range"
        );
        assert_eq!(
            ParseError::UnsupportedVersion("SIP/7.0".into()).status_code(),
            505
        );
        assert_eq!(
            ParseError::UnsupportedVersion("SIP/7.0".into()).reason_phrase(),
            "Version Not Supported"
        );
    }

    #[test]
    fn reason_is_sanitised() {
        assert_eq!(sanitize_reason("a\r\nb\u{7f}\u{444}  "), "a??b??");
        assert_eq!(sanitize_reason(&"x".repeat(500)).len(), 120);
    }
}
