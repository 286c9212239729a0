//! Header names and typed headers on top of rsip, one file per header
//! family.
//!
//! Messages keep their header fields in an [`rsip::Headers`] list (see
//! [`crate::sip::SipMessage`]); [`names`] maps names to rsip's variants and
//! the other files parse the values a proxy acts on. rsip 0.4 lacks compact
//! names, Session-Expires, Min-SE, Flow-Timer, Path and ms-keep-alive, and
//! its own typed Via/From/CSeq parsers reject valid RFC 3261 syntax (LWS
//! around `/` and `;`, quoted display names containing `<`, extension
//! methods, comma-separated Via values), so the values are parsed here.

pub mod cseq;
pub mod method;
pub mod ms_keepalive;
pub mod name_addr;
pub mod names;
pub mod option_tags;
pub mod outbound;
pub mod session_timer;
pub mod via;

pub use cseq::{check_call_id, parse_number, CSeq};
pub use method::Method;
pub use ms_keepalive::{KeepAliveRole, MsKeepAlive};
pub use name_addr::{name_addr_uri, Contact, NameAddr};
pub use names::{canonical_name, header_parts, make_header, name_matches};
pub use option_tags::OptionTags;
pub use outbound::FlowTimer;
pub use session_timer::{MinSe, Refresher, SessionExpires};
pub use via::Via;
