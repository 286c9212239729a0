//! The SIP message layer of the edge proxy.
//!
//! * [`parse_message`] turns bytes from the network (a UDP datagram, or
//!   one message cut from a stream) into a [`SipMessage`] or a
//!   [`ParseError`] that says what is wrong, within [`Limits`].
//! * [`SipMessage`] keeps its header fields as an [`rsip::Headers`] list
//!   and offers what a proxy reads and edits: method, Request-URI,
//!   Call-ID (and its DIALOGS hash), tags, CSeq, Via, Max-Forwards,
//!   Contact, Route, Record-Route, Path, option tags, session timers,
//!   Flow-Timer, ms-keep-alive, body.
//! * [`headers`] holds the typed headers rsip lacks or cannot parse, and
//!   compact header names.
//! * [`SipMessage::response`] and [`error_response`] build the responses
//!   the edge sends itself, including the 400 for a request that did not
//!   parse.
//! * [`StreamFramer`] cuts TCP/TLS streams into messages and CRLF
//!   keep-alives (RFC 5626 4.4.1).
//!
//! Nothing here panics on network input: the module denies indexing,
//! `unwrap` and `expect` outside tests.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod errors;
pub mod framer;
pub mod headers;
mod lex;
pub mod message;
pub mod response;
pub mod uri;

pub use errors::{sanitize_reason, HeaderError, ParseError};
pub use framer::{CrlfRole, StreamEvent, StreamFramer};
pub use headers::{
    canonical_name, make_header, CSeq, Contact, FlowTimer, KeepAliveRole, Method, MinSe,
    MsKeepAlive, NameAddr, OptionTags, Refresher, SessionExpires, Via,
};
pub use lex::{unquote, Param};
pub use message::{parse_message, SipMessage, StartLine};
pub use response::error_response;
pub use uri::Uri;

/// Bounds on what is accepted from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header section and body together, in bytes.
    pub max_message_size: usize,
    /// Most header fields (folded lines count once).
    pub max_headers: usize,
}

impl Default for Limits {
    /// 65535 bytes (the largest UDP payload) and 128 header fields.
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 128,
        }
    }
}

/// Where the bytes of a message came from; decides how the body is
/// delimited (RFC 3261 18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: Content-Length optional, extra bytes ignored.
    Datagram,
    /// One message from [`StreamFramer`]: Content-Length required.
    Stream,
}

/// Whether a datagram is only CRLFs: a keep-alive, not a message.
pub fn is_crlf_keepalive(datagram: &[u8]) -> bool {
    !datagram.is_empty() && message::skip_leading_crlf(datagram).is_empty()
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
