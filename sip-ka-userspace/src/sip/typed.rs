//! The typed view of a message's headers: dialog identifiers, Via,
//! Max-Forwards, Content-Length, Contact, Route, Record-Route, Path,
//! option tags, session timers, Flow-Timer and ms-keep-alive.

use sip_ka_common::callid_hash;

use super::errors::HeaderError;
use super::headers::cseq::{parse_number, CSeq};
use super::headers::ms_keepalive::MsKeepAlive;
use super::headers::name_addr::{Contact, NameAddr};
use super::headers::names::{header_parts, make_header, name_matches};
use super::headers::option_tags::OptionTags;
use super::headers::outbound::FlowTimer;
use super::headers::session_timer::{MinSe, Refresher, SessionExpires};
use super::headers::via::Via;
use super::lex::{first_comma_item, split_commas};
use super::message::SipMessage;

impl SipMessage {
    /// An optional header that may appear once, parsed.
    fn optional_typed<'s, T>(
        &'s self,
        name: &'static str,
        parse: impl Fn(&'s str) -> Result<T, HeaderError>,
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
        self.header("From").and_then(NameAddr::tag_of)
    }

    pub fn to(&self) -> Option<NameAddr> {
        self.header("To").and_then(|v| NameAddr::parse(v).ok())
    }

    pub fn to_tag(&self) -> Option<String> {
        self.header("To").and_then(NameAddr::tag_of)
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
        Via::parse(first_comma_item(first)?).ok()
    }

    /// The branch of the top Via, as `top_via()?.branch()` gives it.
    pub fn top_branch(&self) -> Option<String> {
        Via::branch_of(first_comma_item(self.header("Via")?)?)
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
            let items = split_commas(&value).ok()?;
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

    /// Whether the `name` fields (Supported, Require...) list `tag`; an
    /// error where [`SipMessage::supported`] and the like give one.
    pub fn lists_option_tag(&self, name: &'static str, tag: &str) -> Result<bool, HeaderError> {
        let mut found = false;
        for v in self.header_values(name) {
            found |= OptionTags::parse_contains(v, tag).map_err(|r| HeaderError::new(name, r))?;
        }
        Ok(found)
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

    /// Session-Expires' interval and refresher
    /// ([`SessionExpires::parse_brief`]).
    pub fn session_expires_brief(&self) -> Result<Option<(u32, Option<Refresher>)>, HeaderError> {
        self.optional_typed("Session-Expires", SessionExpires::parse_brief)
    }

    /// Min-SE's delta-seconds ([`MinSe::parse_delta`]).
    pub fn min_se_delta(&self) -> Result<Option<u32>, HeaderError> {
        self.optional_typed("Min-SE", MinSe::parse_delta)
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
}
