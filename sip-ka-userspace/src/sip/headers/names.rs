//! Header names: canonical spellings, compact forms (RFC 3261 7.3.3) and
//! the mapping to rsip's header variants.

use rsip::headers::UntypedHeader;

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
}
