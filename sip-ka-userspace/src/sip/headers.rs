//! Header names and typed headers on top of rsip.
//!
//! Messages keep their header fields in an [`rsip::Headers`] list (see
//! [`super::SipMessage`]); this module maps names to rsip's variants and
//! parses the values a proxy acts on. rsip 0.4 lacks compact names,
//! Session-Expires, Min-SE, Flow-Timer, Path and ms-keep-alive, and its own
//! typed Via/From/CSeq parsers reject valid RFC 3261 syntax (LWS around
//! `/` and `;`, quoted display names containing `<`, extension methods,
//! comma-separated Via values), so the values are parsed here.

use std::fmt;

use rsip::headers::UntypedHeader;

use super::errors::HeaderError;
use super::lex::{
    describe, find_param, is_token, is_token_byte, is_word_byte, parse_params, set_param,
    split_commas, unquote, Cursor, Param,
};
use super::uri::{parse_port, split_host, Uri};

// ---------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------

/// Compact forms (RFC 3261 7.3.3 and the extensions that define one).
const COMPACT: &[(u8, &str)] = &[
    (b'a', "Accept-Contact"),
    (b'b', "Referred-By"),
    (b'c', "Content-Type"),
    (b'd', "Request-Disposition"),
    (b'e', "Content-Encoding"),
    (b'f', "From"),
    (b'i', "Call-ID"),
    (b'j', "Reject-Contact"),
    (b'k', "Supported"),
    (b'l', "Content-Length"),
    (b'm', "Contact"),
    (b'n', "Identity-Info"),
    (b'o', "Event"),
    (b'r', "Refer-To"),
    (b's', "Subject"),
    (b't', "To"),
    (b'u', "Allow-Events"),
    (b'v', "Via"),
    (b'x', "Session-Expires"),
    (b'y', "Identity"),
];

/// Long names with their canonical spelling, beyond the ones in
/// [`COMPACT`].
const LONG: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Authentication-Info",
    "Authorization",
    "Call-Info",
    "Content-Disposition",
    "Content-Language",
    "CSeq",
    "Date",
    "Error-Info",
    "Expires",
    "Flow-Timer",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "ms-keep-alive",
    "Organization",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Subscription-State",
    "Timestamp",
    "Unsupported",
    "User-Agent",
    "Warning",
    "WWW-Authenticate",
];

/// The canonical spelling of a known header name, compact forms expanded
/// (`i` and `call-id` give `Call-ID`). `None` for unknown names, which are
/// kept as received.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    if let [c] = name.as_bytes() {
        let c = c.to_ascii_lowercase();
        return COMPACT.iter().find(|(k, _)| *k == c).map(|(_, n)| *n);
    }
    COMPACT
        .iter()
        .map(|(_, n)| *n)
        .chain(LONG.iter().copied())
        .find(|n| n.eq_ignore_ascii_case(name))
}

/// Whether `name` (long form in any case, or compact form) names the
/// header whose canonical name is `canonical`.
pub fn name_matches(name: &str, canonical: &str) -> bool {
    name.eq_ignore_ascii_case(canonical)
        || (name.len() == 1
            && canonical_name(name).is_some_and(|c| c.eq_ignore_ascii_case(canonical)))
}

macro_rules! rsip_header_table {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The name (canonical for rsip's variants) and value of an rsip
        /// header.
        pub fn header_parts(h: &rsip::Header) -> (&str, &str) {
            match h {
                $(rsip::Header::$variant(v) => ($name, v.value()),)*
                rsip::Header::Other(name, value) => (name.as_str(), value.as_str()),
            }
        }

        /// Builds an rsip header: rsip's variant for the headers it knows,
        /// `Other` with the canonical (or, if unknown, the given) name
        /// otherwise. Compact names are expanded.
        pub fn make_header(name: &str, value: impl Into<String>) -> rsip::Header {
            let value = value.into();
            let name = canonical_name(name).unwrap_or(name);
            $(if name.eq_ignore_ascii_case($name) {
                return rsip::Header::$variant(rsip::headers::$variant::new(value));
            })*
            rsip::Header::Other(name.to_string(), value)
        }
    };
}

rsip_header_table! {
    Accept => "Accept",
    AcceptEncoding => "Accept-Encoding",
    AcceptLanguage => "Accept-Language",
    AlertInfo => "Alert-Info",
    Allow => "Allow",
    AuthenticationInfo => "Authentication-Info",
    Authorization => "Authorization",
    CSeq => "CSeq",
    CallId => "Call-ID",
    CallInfo => "Call-Info",
    Contact => "Contact",
    ContentDisposition => "Content-Disposition",
    ContentEncoding => "Content-Encoding",
    ContentLanguage => "Content-Language",
    ContentLength => "Content-Length",
    ContentType => "Content-Type",
    Date => "Date",
    ErrorInfo => "Error-Info",
    Event => "Event",
    Expires => "Expires",
    From => "From",
    InReplyTo => "In-Reply-To",
    MaxForwards => "Max-Forwards",
    MimeVersion => "MIME-Version",
    MinExpires => "Min-Expires",
    Organization => "Organization",
    Priority => "Priority",
    ProxyAuthenticate => "Proxy-Authenticate",
    ProxyAuthorization => "Proxy-Authorization",
    ProxyRequire => "Proxy-Require",
    RecordRoute => "Record-Route",
    ReplyTo => "Reply-To",
    Require => "Require",
    RetryAfter => "Retry-After",
    Route => "Route",
    Server => "Server",
    Subject => "Subject",
    SubscriptionState => "Subscription-State",
    Supported => "Supported",
    Timestamp => "Timestamp",
    To => "To",
    Unsupported => "Unsupported",
    UserAgent => "User-Agent",
    Via => "Via",
    Warning => "Warning",
    WwwAuthenticate => "WWW-Authenticate",
}

// ---------------------------------------------------------------------
// Method
// ---------------------------------------------------------------------

/// A request method. Methods are case-sensitive (RFC 3261 7.1): `invite`
/// is an extension method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Message,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Refer,
    /// Any other `token`.
    Extension(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Result<Method, String> {
        if !is_token(s) {
            return Err(match s.bytes().find(|b| !is_token_byte(*b)) {
                Some(b) => format!("method contains {}", describe(b)),
                None => "empty method".into(),
            });
        }
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "MESSAGE" => Method::Message,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            other => Method::Extension(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Message => "MESSAGE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Extension(s) => s,
        }
    }

    /// rsip's method, `None` for methods rsip does not know.
    pub fn to_rsip(&self) -> Option<rsip::Method> {
        Some(match self {
            Method::Invite => rsip::Method::Invite,
            Method::Ack => rsip::Method::Ack,
            Method::Bye => rsip::Method::Bye,
            Method::Cancel => rsip::Method::Cancel,
            Method::Options => rsip::Method::Options,
            Method::Register => rsip::Method::Register,
            Method::Info => rsip::Method::Info,
            Method::Update => rsip::Method::Update,
            Method::Message => rsip::Method::Message,
            Method::Prack => rsip::Method::PRack,
            Method::Subscribe => rsip::Method::Subscribe,
            Method::Notify => rsip::Method::Notify,
            Method::Publish => rsip::Method::Publish,
            Method::Refer => rsip::Method::Refer,
            Method::Extension(_) => return None,
        })
    }
}

impl From<rsip::Method> for Method {
    fn from(m: rsip::Method) -> Self {
        match m {
            rsip::Method::Ack => Method::Ack,
            rsip::Method::Bye => Method::Bye,
            rsip::Method::Cancel => Method::Cancel,
            rsip::Method::Info => Method::Info,
            rsip::Method::Invite => Method::Invite,
            rsip::Method::Message => Method::Message,
            rsip::Method::Notify => Method::Notify,
            rsip::Method::Options => Method::Options,
            rsip::Method::PRack => Method::Prack,
            rsip::Method::Publish => Method::Publish,
            rsip::Method::Refer => Method::Refer,
            rsip::Method::Register => Method::Register,
            rsip::Method::Subscribe => Method::Subscribe,
            rsip::Method::Update => Method::Update,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------
// Call-ID, CSeq, numbers
// ---------------------------------------------------------------------

/// Checks a Call-ID value: `word [ "@" word ]` (RFC 3261 25.1).
pub fn check_call_id(value: &str) -> Result<(), HeaderError> {
    let err = |r: String| HeaderError::new("Call-ID", r);
    if value.is_empty() {
        return Err(err("empty value".into()));
    }
    let (left, right) = match value.split_once('@') {
        Some((l, r)) => (l, Some(r)),
        None => (value, None),
    };
    for part in std::iter::once(left).chain(right) {
        if part.is_empty() {
            return Err(err("empty word around '@'".into()));
        }
        if let Some(b) = part.bytes().find(|b| !is_word_byte(*b)) {
            return Err(err(format!("contains {}", describe(b))));
        }
    }
    Ok(())
}

/// Parses `1*DIGIT` into a u32.
fn parse_u32(s: &str, what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {s:?} is not a number"));
    }
    let digits = s.trim_start_matches('0');
    if digits.len() > 10 {
        return Err(format!("{what} {s} out of range"));
    }
    if digits.is_empty() {
        return Ok(0);
    }
    digits
        .parse::<u32>()
        .map_err(|_| format!("{what} {s} out of range"))
}

/// Parses a header value that is `1*DIGIT` (Content-Length, Max-Forwards,
/// Flow-Timer).
pub fn parse_number(name: &str, value: &str) -> Result<u32, HeaderError> {
    parse_u32(value.trim(), "value").map_err(|r| HeaderError::new(name, r))
}

/// `CSeq: 1*DIGIT LWS Method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Result<CSeq, HeaderError> {
        let err = |r: String| HeaderError::new("CSeq", r);
        let mut cur = Cursor::new(value);
        cur.skip_ws();
        let digits = cur.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return Err(err(format!("expected a sequence number in {value:?}")));
        }
        let seq = parse_u32(digits, "sequence number").map_err(err)?;
        let before = cur.rest().len();
        cur.skip_ws();
        if cur.rest().len() == before {
            return Err(err(format!("expected whitespace after {digits}")));
        }
        let method = cur.take_while(is_token_byte);
        let method = Method::parse(method).map_err(|r| err(format!("bad method: {r}")))?;
        cur.skip_ws();
        if !cur.at_end() {
            return Err(err(format!("unexpected {:?} after the method", cur.rest())));
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

// ---------------------------------------------------------------------
// Via
// ---------------------------------------------------------------------

/// One `via-parm` of a Via header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// `SIP`
    pub protocol: String,
    /// `2.0`
    pub version: String,
    /// As received (`UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or an extension).
    pub transport: String,
    /// sent-by host (IPv6 references keep their brackets).
    pub host: String,
    /// sent-by port.
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    /// A Via for a request this element sends: `SIP/2.0/<transport>
    /// host[:port];branch=<branch>`.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            protocol: "SIP".into(),
            version: "2.0".into(),
            transport: transport.to_ascii_uppercase(),
            host: host.to_string(),
            port,
            params: vec![Param::new("branch", Some(branch.to_string()))],
        }
    }

    /// Parses one `via-parm`; LWS is allowed around `/`, `:`, `;` and `=`.
    pub fn parse(value: &str) -> Result<Via, String> {
        let mut cur = Cursor::new(value);
        let (protocol, version, transport, host, port) = sent_protocol_and_by(&mut cur)?;
        let params = parse_params(&mut cur)?;
        if let Some(p) = find_param(&params, "rport") {
            if let Some(v) = &p.value {
                parse_port(v).map_err(|e| format!("bad rport: {e}"))?;
            }
        }
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        })
    }

    /// Parses only the sent-protocol and sent-by of a `via-parm`, ignoring
    /// the parameters: enough to route a response back (used to answer
    /// requests whose Via parameters are broken).
    pub fn parse_sent_by(value: &str) -> Result<Via, String> {
        let mut cur = Cursor::new(value);
        let (protocol, version, transport, host, port) = sent_protocol_and_by(&mut cur)?;
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params: Vec::new(),
        })
    }

    /// Parses a whole Via header value (a comma-separated list).
    pub fn parse_list(value: &str) -> Result<Vec<Via>, String> {
        split_commas(value)?
            .into_iter()
            .map(|item| {
                if item.trim().is_empty() {
                    Err("empty Via value between commas".to_string())
                } else {
                    Via::parse(item)
                }
            })
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name).map(|p| p.value.as_deref())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// Whether the branch carries the RFC 3261 magic cookie and more.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .and_then(|b| b.strip_prefix("z9hG4bK"))
            .is_some_and(|rest| !rest.is_empty())
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// `rport` (RFC 3581): `None` when absent, `Some(None)` when present
    /// without a value (a request asking for it), `Some(Some(port))` when
    /// filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|v| v.and_then(|p| p.trim().parse::<u16>().ok()))
    }

    /// Sets or replaces a parameter (for `received` and `rport`).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// rsip's transport, `None` for transports rsip does not know.
    pub fn rsip_transport(&self) -> Option<rsip::Transport> {
        self.transport.parse::<rsip::Transport>().ok()
    }

    /// The sent-by port, or the default for the transport (5061 for TLS,
    /// 5060 otherwise).
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.transport.eq_ignore_ascii_case("TLS") {
                5061
            } else {
                5060
            })
    }
}

fn sent_protocol_and_by(
    cur: &mut Cursor<'_>,
) -> Result<(String, String, String, String, Option<u16>), String> {
    cur.skip_ws();
    let protocol = cur.take_while(is_token_byte);
    if protocol.is_empty() {
        return Err("missing protocol name".into());
    }
    let mut parts = [String::new(), String::new()];
    for (i, slot) in parts.iter_mut().enumerate() {
        cur.skip_ws();
        if !cur.eat(b'/') {
            return Err(format!(
                "expected '/' in sent-protocol after {}",
                if i == 0 {
                    "the protocol name"
                } else {
                    "the version"
                }
            ));
        }
        cur.skip_ws();
        let t = cur.take_while(is_token_byte);
        if t.is_empty() {
            return Err("empty sent-protocol element".into());
        }
        *slot = t.to_string();
    }
    let [version, transport] = parts;
    let before = cur.rest().len();
    cur.skip_ws();
    if cur.rest().len() == before {
        return Err("expected whitespace before sent-by".into());
    }
    let (host, after) = split_host(cur.rest())?;
    let host = host.to_string();
    let mut cur2 = Cursor::new(after);
    cur2.skip_ws();
    let port = if cur2.eat(b':') {
        cur2.skip_ws();
        Some(parse_port(cur2.take_while(|b| b.is_ascii_digit()))?)
    } else {
        None
    };
    *cur = cur2;
    Ok((protocol.to_string(), version, transport, host, port))
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------
// name-addr: From, To, Contact, Route, Record-Route, Path
// ---------------------------------------------------------------------

/// `[display-name] <URI> *(;param)` or `URI *(;param)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// As received: a quoted string keeps its quotes.
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the URI).
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    /// Parses a From, To or Contact-style value.
    pub fn parse(value: &str) -> Result<NameAddr, String> {
        let s = value.trim_matches(|c| c == ' ' || c == '\t');
        if s.is_empty() {
            return Err("empty value".into());
        }
        let mut cur = Cursor::new(s);
        let display_name = if cur.peek() == Some(b'"') {
            let quoted = cur.quoted_string()?;
            cur.skip_ws();
            if cur.peek() != Some(b'<') {
                return Err("expected <URI> after the quoted display name".into());
            }
            Some(quoted.to_string())
        } else if let Some(lt) = s.find('<') {
            let name = s
                .get(..lt)
                .unwrap_or("")
                .trim_matches(|c| c == ' ' || c == '\t');
            for word in name.split([' ', '\t']).filter(|w| !w.is_empty()) {
                if let Some(b) = word.bytes().find(|b| !is_token_byte(*b)) {
                    return Err(format!(
                        "display name {name:?} contains {} and must be quoted",
                        describe(b)
                    ));
                }
            }
            cur = Cursor::new(s.get(lt..).unwrap_or(""));
            (!name.is_empty()).then(|| name.to_string())
        } else {
            None
        };
        if cur.eat(b'<') {
            let rest = cur.rest();
            let close = rest.find('>').ok_or("missing '>' after the URI")?;
            let inner = rest.get(..close).unwrap_or("");
            if inner.starts_with([' ', '\t']) || inner.ends_with([' ', '\t']) {
                return Err("whitespace inside <...>".into());
            }
            let uri = Uri::parse(inner)?;
            let mut after = Cursor::new(rest.get(close + 1..).unwrap_or(""));
            let params = parse_params(&mut after)?;
            Ok(NameAddr {
                display_name,
                uri,
                params,
            })
        } else {
            // addr-spec: a URI containing ',', '?' or ';' must be in <>
            // (RFC 3261 20), so the URI ends at ';' or whitespace.
            let end = s.find([';', ' ', '\t']).unwrap_or(s.len());
            let uri_text = s.get(..end).unwrap_or("");
            if uri_text.contains('?') || uri_text.contains(',') {
                return Err("a URI with '?' or ',' must be enclosed in <>".into());
            }
            let uri = Uri::parse(uri_text)?;
            let mut after = Cursor::new(s.get(end..).unwrap_or(""));
            let params = parse_params(&mut after)?;
            Ok(NameAddr {
                display_name: None,
                uri,
                params,
            })
        }
    }

    /// Parses a comma-separated list of name-addrs in angle brackets
    /// (Route, Record-Route, Path).
    pub fn parse_route_list(value: &str) -> Result<Vec<NameAddr>, String> {
        split_commas(value)?
            .into_iter()
            .map(|item| {
                if !item.trim_start().starts_with('<') {
                    return Err(format!("route entry {:?} is not in <...>", item.trim()));
                }
                NameAddr::parse(item)
            })
            .collect()
    }

    /// The display name without quotes.
    pub fn display_name_unquoted(&self) -> Option<String> {
        self.display_name.as_deref().map(unquote)
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name).map(|p| p.value.as_deref())
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// A loose-routing entry (`;lr` on the URI).
    pub fn is_loose_route(&self) -> bool {
        self.uri.has_param("lr")
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One Contact value.
// The wildcard is rare and carries nothing; boxing the common case would
// only add an allocation per Contact.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *` (REGISTER removing all bindings).
    Wildcard,
    Addr(NameAddr),
}

impl Contact {
    /// Parses a Contact header value (a list, or `*`).
    pub fn parse_list(value: &str) -> Result<Vec<Contact>, String> {
        if value.trim() == "*" {
            return Ok(vec![Contact::Wildcard]);
        }
        split_commas(value)?
            .into_iter()
            .map(|item| {
                if item.trim() == "*" {
                    Err("'*' must be the only Contact".to_string())
                } else {
                    NameAddr::parse(item).map(Contact::Addr)
                }
            })
            .collect()
    }

    pub fn addr(&self) -> Option<&NameAddr> {
        match self {
            Contact::Wildcard => None,
            Contact::Addr(a) => Some(a),
        }
    }
}

// ---------------------------------------------------------------------
// Option tags
// ---------------------------------------------------------------------

/// The option tags of Supported (`k`), Require, Proxy-Require or
/// Unsupported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionTags(pub Vec<String>);

impl OptionTags {
    /// RFC 4028 session timers.
    pub const TIMER: &'static str = "timer";
    /// RFC 5626 outbound.
    pub const OUTBOUND: &'static str = "outbound";
    /// RFC 3327 Path.
    pub const PATH: &'static str = "path";

    /// Parses a comma-separated list of tokens; an empty value is an empty
    /// list.
    pub fn parse(value: &str) -> Result<OptionTags, String> {
        if value.trim().is_empty() {
            return Ok(OptionTags::default());
        }
        value
            .split(',')
            .map(|t| {
                let t = t.trim_matches(|c| c == ' ' || c == '\t');
                if is_token(t) {
                    Ok(t.to_string())
                } else {
                    Err(format!("bad option tag {t:?}"))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(OptionTags)
    }

    pub fn contains(&self, tag: &str) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(tag))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for OptionTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

// ---------------------------------------------------------------------
// Session timers (RFC 4028), Flow-Timer (RFC 5626)
// ---------------------------------------------------------------------

/// `refresher=uac|uas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl fmt::Display for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        })
    }
}

/// `delta-seconds *(;param)` with the parameters split out.
fn delta_and_params(name: &str, value: &str) -> Result<(u32, Vec<Param>), HeaderError> {
    let err = |r: String| HeaderError::new(name, r);
    let mut cur = Cursor::new(value);
    cur.skip_ws();
    let digits = cur.take_while(|b| b.is_ascii_digit());
    let delta = parse_u32(digits, "delta-seconds").map_err(err)?;
    let params = parse_params(&mut cur).map_err(err)?;
    Ok((delta, params))
}

/// `Session-Expires` (compact `x`): `delta-seconds [;refresher=uac|uas]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: u32,
    pub refresher: Option<Refresher>,
    /// Parameters other than `refresher`.
    pub params: Vec<Param>,
}

impl SessionExpires {
    pub fn new(delta: u32, refresher: Option<Refresher>) -> Self {
        SessionExpires {
            delta,
            refresher,
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str) -> Result<SessionExpires, HeaderError> {
        let (delta, params) = delta_and_params("Session-Expires", value)?;
        let mut refresher = None;
        let mut rest = Vec::new();
        for p in params {
            if p.name.eq_ignore_ascii_case("refresher") {
                let r = match p.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    Some("uac") => Refresher::Uac,
                    Some("uas") => Refresher::Uas,
                    _ => {
                        return Err(HeaderError::new(
                            "Session-Expires",
                            "refresher must be uac or uas",
                        ))
                    }
                };
                if refresher.replace(r).is_some() {
                    return Err(HeaderError::new("Session-Expires", "refresher repeated"));
                }
            } else {
                rest.push(p);
            }
        }
        Ok(SessionExpires {
            delta,
            refresher,
            params: rest,
        })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        if let Some(r) = self.refresher {
            write!(f, ";refresher={r}")?;
        }
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `Min-SE: delta-seconds *(;param)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinSe {
    pub delta: u32,
    pub params: Vec<Param>,
}

impl MinSe {
    pub fn new(delta: u32) -> Self {
        MinSe {
            delta,
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str) -> Result<MinSe, HeaderError> {
        let (delta, params) = delta_and_params("Min-SE", value)?;
        Ok(MinSe { delta, params })
    }
}

impl fmt::Display for MinSe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta)?;
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `Flow-Timer: 1*DIGIT` (RFC 5626): seconds between keep-alives the
/// registrar recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimer(pub u32);

impl FlowTimer {
    pub fn parse(value: &str) -> Result<FlowTimer, HeaderError> {
        parse_number("Flow-Timer", value).map(FlowTimer)
    }
}

impl fmt::Display for FlowTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// ---------------------------------------------------------------------
// ms-keep-alive
// ---------------------------------------------------------------------

/// The role in an `ms-keep-alive` negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAliveRole {
    /// The initiator (in requests).
    Uac,
    /// The responder (in responses).
    Uas,
}

/// `ms-keep-alive: role *(;mechanism=yes|no) [;timeout=N] *(;param)`:
/// `UAC;hop-hop=yes` in a request, `UAS;tcp=no;hop-hop=yes;end-end=no;
/// timeout=N` in the answer. Only hop-hop may be `yes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsKeepAlive {
    pub role: KeepAliveRole,
    pub tcp: Option<bool>,
    pub hop_hop: Option<bool>,
    pub end_end: Option<bool>,
    /// Seconds the connection is kept alive (answers only).
    pub timeout: Option<u32>,
    /// Other (generic) parameters.
    pub params: Vec<Param>,
}

impl MsKeepAlive {
    /// What a UA sends: `UAC;hop-hop=yes`.
    pub fn offer() -> Self {
        MsKeepAlive {
            role: KeepAliveRole::Uac,
            tcp: None,
            hop_hop: Some(true),
            end_end: None,
            timeout: None,
            params: Vec::new(),
        }
    }

    /// The answer accepting hop-by-hop keep-alives:
    /// `UAS;tcp=no;hop-hop=yes;end-end=no;timeout=N`.
    pub fn answer(timeout: u32) -> Self {
        MsKeepAlive {
            role: KeepAliveRole::Uas,
            tcp: Some(false),
            hop_hop: Some(true),
            end_end: Some(false),
            timeout: Some(timeout),
            params: Vec::new(),
        }
    }

    /// Whether this is a request asking for hop-by-hop keep-alives.
    pub fn offers_hop_hop(&self) -> bool {
        self.role == KeepAliveRole::Uac && self.hop_hop == Some(true)
    }

    pub fn parse(value: &str) -> Result<MsKeepAlive, HeaderError> {
        let err = |r: String| HeaderError::new("ms-keep-alive", r);
        let mut cur = Cursor::new(value);
        cur.skip_ws();
        let role = cur.take_while(is_token_byte);
        let role = if role.eq_ignore_ascii_case("UAC") {
            KeepAliveRole::Uac
        } else if role.eq_ignore_ascii_case("UAS") {
            KeepAliveRole::Uas
        } else if role.is_empty() {
            return Err(err("missing role (UAC or UAS)".into()));
        } else {
            return Err(err(format!("unknown role {role:?}")));
        };
        let params = parse_params(&mut cur).map_err(err)?;
        let mut out = MsKeepAlive {
            role,
            tcp: None,
            hop_hop: None,
            end_end: None,
            timeout: None,
            params: Vec::new(),
        };
        for p in params {
            let name = p.name.to_ascii_lowercase();
            let slot = match name.as_str() {
                "tcp" => &mut out.tcp,
                "hop-hop" => &mut out.hop_hop,
                "end-end" => &mut out.end_end,
                "timeout" => {
                    let v = p.value.as_deref().unwrap_or("");
                    let t = parse_u32(v, "timeout").map_err(err)?;
                    if out.timeout.replace(t).is_some() {
                        return Err(err("timeout repeated".into()));
                    }
                    continue;
                }
                _ => {
                    out.params.push(p);
                    continue;
                }
            };
            let flag = match p.value.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("yes") => true,
                Some("no") => false,
                _ => return Err(err(format!("{name} must be yes or no"))),
            };
            if flag && name != "hop-hop" {
                return Err(err(format!(
                    "{name}=yes is not allowed (only hop-hop may be yes)"
                )));
            }
            if slot.replace(flag).is_some() {
                return Err(err(format!("{name} repeated")));
            }
        }
        Ok(out)
    }
}

impl fmt::Display for MsKeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        f.write_str(match self.role {
            KeepAliveRole::Uac => "UAC",
            KeepAliveRole::Uas => "UAS",
        })?;
        if let Some(b) = self.tcp {
            write!(f, ";tcp={}", yes_no(b))?;
        }
        if let Some(b) = self.hop_hop {
            write!(f, ";hop-hop={}", yes_no(b))?;
        }
        if let Some(b) = self.end_end {
            write!(f, ";end-end={}", yes_no(b))?;
        }
        if let Some(t) = self.timeout {
            write!(f, ";timeout={t}")?;
        }
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn compact_names() {
        for (c, long) in [
            ("i", "Call-ID"),
            ("v", "Via"),
            ("f", "From"),
            ("t", "To"),
            ("l", "Content-Length"),
            ("m", "Contact"),
            ("k", "Supported"),
            ("s", "Subject"),
            ("x", "Session-Expires"),
            ("c", "Content-Type"),
            ("e", "Content-Encoding"),
            ("o", "Event"),
            ("u", "Allow-Events"),
            ("r", "Refer-To"),
            ("b", "Referred-By"),
            ("a", "Accept-Contact"),
        ] {
            assert_eq!(canonical_name(c), Some(long), "{c}");
            assert_eq!(canonical_name(&c.to_uppercase()), Some(long), "{c}");
            assert!(name_matches(c, long));
        }
        assert_eq!(canonical_name("cAlL-iD"), Some("Call-ID"));
        assert_eq!(canonical_name("MS-KEEP-ALIVE"), Some("ms-keep-alive"));
        assert_eq!(canonical_name("min-se"), Some("Min-SE"));
        assert_eq!(canonical_name("q"), None);
        assert_eq!(canonical_name("NewFangledHeader"), None);
    }

    #[test]
    fn rsip_header_glue() {
        let h = make_header("i", "abc@host");
        assert!(matches!(h, rsip::Header::CallId(_)));
        assert_eq!(header_parts(&h), ("Call-ID", "abc@host"));
        assert_eq!(h.to_string(), "Call-ID: abc@host");
        let h = make_header("x", "1800;refresher=uac");
        assert_eq!(header_parts(&h), ("Session-Expires", "1800;refresher=uac"));
        let h = make_header("k", "timer, outbound");
        assert!(matches!(h, rsip::Header::Supported(_)));
        let h = make_header("X-Custom", "1");
        assert_eq!(header_parts(&h), ("X-Custom", "1"));
    }

    #[test]
    fn methods() {
        assert_eq!(Method::parse("INVITE").unwrap(), Method::Invite);
        assert_eq!(
            Method::parse("invite").unwrap(),
            Method::Extension("invite".into())
        );
        assert!(Method::parse("IN VITE").is_err());
        assert!(Method::parse("").is_err());
        assert_eq!(Method::Prack.to_rsip(), Some(rsip::Method::PRack));
        assert_eq!(Method::from(rsip::Method::Update), Method::Update);
        assert_eq!(Method::Extension("FOO".into()).to_rsip(), None);
    }

    #[test]
    fn cseq() {
        let c = CSeq::parse("0009 INVITE").unwrap();
        assert_eq!((c.seq, &c.method), (9, &Method::Invite));
        assert_eq!(c.to_string(), "9 INVITE");
        assert_eq!(CSeq::parse("  4294967295   BYE ").unwrap().seq, u32::MAX);
        assert!(CSeq::parse("4294967296 BYE")
            .unwrap_err()
            .reason
            .contains("out of range"));
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert!(CSeq::parse("1").is_err());
        assert_eq!(
            CSeq::parse("-1 INVITE").unwrap_err().to_string(),
            "bad CSeq: expected a sequence number in \"-1 INVITE\""
        );
    }

    #[test]
    fn call_ids() {
        assert!(check_call_id("a84b4c76e66710@pc33.atlanta.com").is_ok());
        assert!(check_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(check_call_id("").is_err());
        assert!(check_call_id("a b").is_err());
        assert!(check_call_id("a@b@c").is_err());
        assert!(check_call_id("@b").is_err());
    }

    #[test]
    fn via_with_lws() {
        let v = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (
                v.protocol.as_str(),
                v.version.as_str(),
                v.transport.as_str()
            ),
            ("SIP", "2.0", "UDP")
        );
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let list = Via::parse_list(
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(list[1].host, "192.168.255.111");
        assert!(list[1].has_rfc3261_branch());
    }

    #[test]
    fn via_rport_received_port() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1 : 5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), None);
        let mut v = v;
        v.set_param("received", Some("203.0.113.9".into()));
        v.set_param("rport", Some("40000".into()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5070;rport=40000;branch=z9hG4bKx;received=203.0.113.9"
        );
        assert_eq!(v.rport(), Some(Some(40000)));
        let v =
            Via::parse("SIP/2.0/TLS [2001:db8::1];received=2001:db8::9;branch=z9hG4bKy").unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.received(), Some("2001:db8::9"));
        assert_eq!(v.port_or_default(), 5061);
        assert_eq!(v.rsip_transport(), Some(rsip::Transport::Tls));
        let v = Via::parse("SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en").unwrap();
        assert_eq!(v.rsip_transport(), None);
        assert_eq!(
            Via::new("tcp", "edge.example", Some(5060), "z9hG4bK1").to_string(),
            "SIP/2.0/TCP edge.example:5060;branch=z9hG4bK1"
        );
    }

    #[test]
    fn via_errors() {
        assert!(Via::parse_list("SIP/2.0/UDP 192.0.2.15;;,;,,")
            .unwrap_err()
            .contains("empty parameter"));
        assert!(Via::parse_list("SIP/2.0/UDP a, ").is_err());
        assert!(Via::parse("SIP/2.0 host").is_err());
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/2.0/UDPhost").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:70000").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;rport=x").is_err());
        assert!(Via::parse("SIP/2.0/UDP host junk").is_err());
        let v = Via::parse_sent_by("SIP/2.0/UDP 192.0.2.15;;").unwrap();
        assert_eq!(v.host, "192.0.2.15");
    }

    #[test]
    fn name_addrs() {
        let n =
            NameAddr::parse("\"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com> ; tag = 98asjd8")
                .unwrap();
        assert_eq!(
            n.display_name_unquoted().as_deref(),
            Some("J Rosenberg \\\"")
        );
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.uri.host(), Some("example.com"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        assert_eq!(n.uri.user(), Some("vivekg"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n =
            NameAddr::parse("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(
            n.display_name.as_deref(),
            Some("token1~` token2'+_ token3*%!.-")
        );
        let n = NameAddr::parse("sip:a@b;tag=1").unwrap();
        assert_eq!(n.to_string(), "<sip:a@b>;tag=1");
    }

    #[test]
    fn name_addr_errors() {
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>")
            .unwrap_err()
            .contains("unterminated"));
        assert!(
            NameAddr::parse("\"Watson, Thomas\" < sip:t.watson@example.org >")
                .unwrap_err()
                .contains("whitespace")
        );
        assert!(
            NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43")
                .unwrap_err()
                .contains("must be quoted")
        );
        assert!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
                .unwrap_err()
                .contains("<>")
        );
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;").is_err());
        assert!(NameAddr::parse("\"x\" sip:a@b").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn contacts_and_routes() {
        let c = Contact::parse_list("*").unwrap();
        assert_eq!(c, vec![Contact::Wildcard]);
        assert!(Contact::parse_list("*, <sip:a@b>").is_err());
        let c = Contact::parse_list("\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33, <sip:x@y>;expires=60").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].addr().unwrap().param("q"), Some(Some("0.33")));
        assert_eq!(c[1].addr().unwrap().param("expires"), Some(Some("60")));
        let r = NameAddr::parse_route_list("<sip:services.example.com;lr;unknownwith=value;unknown-no-value>, <sip:p2.example.com;lr>").unwrap();
        assert_eq!(r.len(), 2);
        assert!(r[0].is_loose_route());
        assert!(NameAddr::parse_route_list("sip:p1.example.com;lr").is_err());
        let p = NameAddr::parse_route_list("<sip:edge.example.com;lr;ob>").unwrap();
        assert!(p[0].uri.has_param("ob"));
    }

    #[test]
    fn option_tags() {
        let t = OptionTags::parse("timer, outbound,path").unwrap();
        assert!(t.contains(OptionTags::TIMER));
        assert!(t.contains(OptionTags::OUTBOUND));
        assert!(t.contains(OptionTags::PATH));
        assert!(!t.contains("100rel"));
        assert!(OptionTags::parse("").unwrap().is_empty());
        assert!(OptionTags::parse("timer,,path").is_err());
        assert!(OptionTags::parse("ti mer").is_err());
        assert_eq!(t.to_string(), "timer, outbound, path");
    }

    #[test]
    fn session_timers() {
        let s = SessionExpires::parse("1800;refresher=uac").unwrap();
        assert_eq!((s.delta, s.refresher), (1800, Some(Refresher::Uac)));
        assert_eq!(s.to_string(), "1800;refresher=uac");
        let s = SessionExpires::parse(" 90 ; x=1").unwrap();
        assert_eq!((s.delta, s.refresher, s.params.len()), (90, None, 1));
        assert!(SessionExpires::parse("1800;refresher=proxy").is_err());
        assert!(SessionExpires::parse("1800;refresher=uac;refresher=uas").is_err());
        assert!(SessionExpires::parse("soon").is_err());
        assert_eq!(
            SessionExpires::new(600, Some(Refresher::Uas)).to_string(),
            "600;refresher=uas"
        );
        assert_eq!(MinSe::parse("90").unwrap().delta, 90);
        assert_eq!(MinSe::new(120).to_string(), "120");
        assert!(MinSe::parse("-5").is_err());
        assert_eq!(FlowTimer::parse(" 120 ").unwrap(), FlowTimer(120));
        assert!(FlowTimer::parse("120;x").is_err());
        assert_eq!(FlowTimer(30).to_string(), "30");
    }

    #[test]
    fn ms_keep_alive() {
        let k = MsKeepAlive::parse("UAC;hop-hop=yes").unwrap();
        assert!(k.offers_hop_hop());
        assert_eq!(k, MsKeepAlive::offer());
        assert_eq!(k.to_string(), "UAC;hop-hop=yes");
        let a = MsKeepAlive::parse("UAS;tcp=no;hop-hop=yes;end-end=no;timeout=300").unwrap();
        assert_eq!(a, MsKeepAlive::answer(300));
        assert_eq!(
            a.to_string(),
            "UAS;tcp=no;hop-hop=yes;end-end=no;timeout=300"
        );
        assert!(!a.offers_hop_hop());
        let k = MsKeepAlive::parse("uac ; HOP-HOP = YES ; foo=bar").unwrap();
        assert!(k.offers_hop_hop());
        assert_eq!(k.params.len(), 1);
        assert!(!MsKeepAlive::parse("UAC;hop-hop=no")
            .unwrap()
            .offers_hop_hop());
        for bad in [
            "",
            "UAX;hop-hop=yes",
            "UAC;hop-hop",
            "UAC;hop-hop=maybe",
            "UAC;hop-hop=yes;hop-hop=yes",
            "UAC;tcp=yes",
            "UAC;end-end=yes",
            "UAS;timeout=soon",
            "UAS;timeout=1;timeout=2",
            "UAC;;hop-hop=yes",
            "UAC hop-hop=yes",
        ] {
            assert!(MsKeepAlive::parse(bad).is_err(), "{bad:?}");
        }
    }
}
