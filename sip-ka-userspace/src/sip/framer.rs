//! Cutting a TCP/TLS byte stream into SIP messages and CRLF keep-alives.
//!
//! # Keep-alives at message boundaries (RFC 5626 4.4.1)
//!
//! Between messages a client sends a *ping*, `CRLF CRLF`, and the server
//! answers with a *pong*, `CRLF`. Byte for byte, two pongs glued together
//! are the same as one ping, and a ping split across two reads looks like
//! two pongs, so the framer does not look at read boundaries at all; it
//! looks at the role of this end of the connection ([`CrlfRole`]):
//!
//! * [`CrlfRole::Server`] (the edge on connections that UAs opened): at a
//!   message boundary `CRLF CRLF` is a [`StreamEvent::Ping`], whether it
//!   arrived in one read or split across several, as RFC 5626 has the
//!   server treat it. A `CRLF` followed by anything other than `CR` is a
//!   stray [`StreamEvent::Pong`] and is consumed. A lone `CRLF` with
//!   nothing after it yet is held back: it is reported as a pong when the
//!   next byte shows it was not the first half of a ping. Two pongs glued
//!   together therefore count as one ping here; a server never sent the
//!   pings those pongs would answer, so nothing is lost by answering.
//! * [`CrlfRole::Client`] (this end sends the pings, e.g. a connection the
//!   edge opened to the PBX): every `CRLF` at a boundary is a
//!   [`StreamEvent::Pong`] and nothing is a ping, so two pongs read
//!   together are two pongs, never a ping to answer (which would start a
//!   ping-pong loop).
//!
//! `CRLF`s inside a message (in the body, for instance) are part of the
//! message: only bytes at a boundary are keep-alives.
//!
//! # Messages
//!
//! A message runs to the end of its header section plus Content-Length,
//! which streams require (RFC 3261 18.3). The whole message, and so its
//! header section, is bounded by [`Limits::max_message_size`]. A missing
//! or bad Content-Length or an oversized message is a
//! [`StreamEvent::Error`]: framing is lost, the framer stops, and the
//! connection should be closed. Anything else wrong with a message is left
//! to [`super::parse::parse_message`] with [`super::limits::Framing::Stream`], so it can
//! be answered with a 400 while the connection goes on.

use super::errors::ParseError;
use super::lex::find_bytes;
use super::limits::Limits;
use super::scan::scan_content_length;

/// Which side of the CRLF keep-alive exchange this end is (see the module
/// docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlfRole {
    /// Receives pings, answers pongs (the edge toward UAs).
    Server,
    /// Sends pings, receives pongs.
    Client,
}

/// What the framer found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// One complete message (header section plus Content-Length bytes of
    /// body), to be parsed with [`super::limits::Framing::Stream`].
    Message(Vec<u8>),
    /// `CRLF CRLF`: answer with `CRLF` ([`CrlfRole::Server`] only).
    Ping,
    /// A `CRLF` keep-alive answer (consumed).
    Pong,
    /// Framing is lost; close the connection. No events follow.
    Error(ParseError),
}

/// Incremental stream framer: feed bytes with [`StreamFramer::push`] as
/// they are read, act on the events.
///
/// Bytes are framed straight from the caller's slice; only what is left
/// of a partial message (or a lone CRLF) is copied in, and that room is
/// given back as soon as it empties, so a connection between messages
/// holds no buffer, whatever size of message it once carried.
#[derive(Debug)]
pub struct StreamFramer {
    role: CrlfRole,
    limits: Limits,
    buf: Vec<u8>,
    scan: Scan,
    failed: bool,
}

/// Where the framer is within the message at the front.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    /// Where to resume looking for the end of the header section.
    from: usize,
    /// Total length of the message at the front once its header section
    /// has been read.
    pending_len: Option<usize>,
}

/// An event found at the front of the bytes, and how many it took.
enum Found {
    Ping,
    Pong,
    Message,
}

impl StreamFramer {
    pub fn new(role: CrlfRole, limits: Limits) -> Self {
        StreamFramer {
            role,
            limits,
            buf: Vec::new(),
            scan: Scan::default(),
            failed: false,
        }
    }

    /// Bytes held that are not yet a complete event.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of room held (for the memory a connection keeps).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether the bytes held are part of a message, not the start of a
    /// CRLF keep-alive (which may wait for its second CRLF for ever).
    pub fn mid_message(&self) -> bool {
        !self.buf.is_empty() && !b"\r\n\r".starts_with(&self.buf)
    }

    /// Whether an error stopped the framer.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Feeds bytes read from the stream; returns the events they complete,
    /// in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        self.push_each(data, |ev| events.push(ev));
        events
    }

    /// [`push`](Self::push) into a caller's vector.
    pub fn push_into(&mut self, data: &[u8], events: &mut Vec<StreamEvent>) {
        self.push_each(data, |ev| events.push(ev));
    }

    /// [`push`](Self::push), handing each event to `f` as it is found: a
    /// read of pings allocates nothing.
    pub fn push_each(&mut self, data: &[u8], mut f: impl FnMut(StreamEvent)) {
        if self.failed {
            return;
        }
        if self.buf.is_empty() {
            let taken = self.frame(data, &mut f);
            if !self.failed {
                self.buf
                    .extend_from_slice(data.get(taken..).unwrap_or_default());
            }
            return;
        }
        let mut held = std::mem::take(&mut self.buf);
        held.extend_from_slice(data);
        let taken = self.frame(&held, &mut f);
        if self.failed || taken >= held.len() {
            return;
        }
        held.drain(..taken);
        self.buf = held;
    }

    /// Frames events off the front of `bytes` until they need more;
    /// returns how many bytes the events took.
    fn frame(&mut self, bytes: &[u8], f: &mut impl FnMut(StreamEvent)) -> usize {
        let mut at = 0;
        loop {
            let rest = bytes.get(at..).unwrap_or_default();
            match next_event(self.role, &self.limits, &mut self.scan, rest) {
                Ok(None) => return at,
                Ok(Some((found, n))) => {
                    self.scan = Scan::default();
                    f(match found {
                        Found::Ping => StreamEvent::Ping,
                        Found::Pong => StreamEvent::Pong,
                        Found::Message => {
                            StreamEvent::Message(rest.get(..n).unwrap_or_default().to_vec())
                        }
                    });
                    at += n;
                }
                Err(e) => {
                    self.failed = true;
                    f(StreamEvent::Error(e));
                    return bytes.len();
                }
            }
        }
    }
}

/// One event from the front of `buf`, `Ok(None)` if more bytes are
/// needed (`scan` then remembers how far the search went).
fn next_event(
    role: CrlfRole,
    limits: &Limits,
    scan: &mut Scan,
    buf: &[u8],
) -> Result<Option<(Found, usize)>, ParseError> {
    if scan.pending_len.is_none() && scan.from == 0 {
        // At a message boundary: keep-alives.
        let b = |i: usize| buf.get(i).copied();
        match (b(0), b(1)) {
            (None, _) => return Ok(None),
            (Some(b'\r'), None) => return Ok(None),
            (Some(b'\r'), Some(b'\n')) => match role {
                CrlfRole::Client => return Ok(Some((Found::Pong, 2))),
                CrlfRole::Server => match (b(2), b(3)) {
                    (None, _) | (Some(b'\r'), None) => return Ok(None),
                    (Some(b'\r'), Some(b'\n')) => return Ok(Some((Found::Ping, 4))),
                    _ => return Ok(Some((Found::Pong, 2))),
                },
            },
            (Some(b'\r'), Some(_)) => {
                return Err(ParseError::StrayBytes(
                    "CR without LF between messages".into(),
                ))
            }
            (Some(b'\n'), _) => {
                return Err(ParseError::StrayBytes(
                    "LF without CR between messages".into(),
                ))
            }
            _ => {}
        }
    }
    let limit = limits.max_message_size;
    let total = match scan.pending_len {
        Some(total) => total,
        None => {
            // Look for the end of the header section, resuming where the
            // last search stopped (minus 3 bytes for a split CRLF CRLF).
            let from = scan.from.saturating_sub(3);
            let window = buf.get(from..).unwrap_or(&[]);
            let Some(pos) = find_bytes(window, b"\r\n\r\n") else {
                if buf.len() > limit {
                    return Err(ParseError::HeaderSectionTooLarge { limit });
                }
                scan.from = buf.len().max(1);
                return Ok(None);
            };
            let header_end = from + pos + 4;
            if header_end > limit {
                return Err(ParseError::HeaderSectionTooLarge { limit });
            }
            let head = buf.get(..header_end).unwrap_or(&[]);
            // The header lines follow the start line.
            let section = find_bytes(head, b"\r\n")
                .and_then(|i| head.get(i + 2..))
                .unwrap_or(&[]);
            let cl = scan_content_length(section)?.ok_or(ParseError::MissingContentLength)?;
            let total = header_end.checked_add(cl).filter(|t| *t <= limit).ok_or(
                ParseError::MessageTooLarge {
                    size: header_end.saturating_add(cl),
                    limit,
                },
            )?;
            scan.pending_len = Some(total);
            total
        }
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((Found::Message, total)))
}
