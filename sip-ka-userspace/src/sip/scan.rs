//! Scanning a message's bytes before (or instead of) parsing it: the
//! start line, header section and rest; header lines with folding undone;
//! Content-Length for stream framing; CRLF keep-alives.

use super::errors::{HeaderError, ParseError};
use super::headers::cseq::parse_number;
use super::headers::names::name_matches;
use super::lex::{describe, find_bytes, is_token_byte, is_wsp, trim_wsp};

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

/// Whether a datagram is only CRLFs: a keep-alive, not a message.
pub fn is_crlf_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && skip_leading_crlf(datagram).is_empty()
}
