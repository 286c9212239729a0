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
//!   compact header names, one file per header family.
//! * [`RequestBuilder`] builds the requests the edge sends itself, field
//!   by field.
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

pub mod builder;
pub mod errors;
pub mod framer;
pub mod headers;
mod lex;
pub mod limits;
pub mod message;
pub mod parse;
pub mod response;
mod scan;
mod typed;
pub mod uri;

pub use builder::RequestBuilder;
pub use errors::{sanitize_reason, HeaderError, ParseError};
pub use framer::{CrlfRole, StreamEvent, StreamFramer};
pub use headers::{
    canonical_name, make_header, name_addr_uri, CSeq, Contact, FlowTimer, KeepAliveRole, Method,
    MinSe, MsKeepAlive, NameAddr, OptionTags, Refresher, SessionExpires, Via,
};
pub use lex::{unquote, Param};
pub use limits::{Framing, Limits};
pub use message::{SipMessage, StartLine};
pub use parse::parse_message;
pub use response::error_response;
pub use scan::is_crlf_keepalive;
pub use uri::Uri;

#[cfg(test)]
#[allow(clippy::panic)]
mod corpus;
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
