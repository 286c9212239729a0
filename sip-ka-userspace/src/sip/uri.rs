//! URIs as a proxy needs them (RFC 3261 19.1): the raw text, which is what
//! gets forwarded, plus the parts of a `sip:`/`sips:` URI. Other schemes
//! (`tel:`, `urn:`, `soap.beep://...`) are kept opaque.
//!
//! Escapes (`%HH`) are left as received: comparing users or parameters in
//! escaped form is the caller's business (RFC 3261 19.1.4).

use std::fmt;

use super::lex::{describe, find_param, Param};

/// A URI from a Request-URI or a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    raw: String,
    scheme: String,
    sip: Option<SipParts>,
}

/// The parts of a SIP or SIPS URI.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SipParts {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    params: Vec<Param>,
    headers: Option<String>,
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn is_host_byte(b: u8) -> bool {
    // hostname (RFC 3261 25.1) plus '_', which real deployments use.
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

/// Parses a port: 1 to 5 digits, at most 65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad port {s:?}"));
    }
    s.parse::<u16>()
        .map_err(|_| format!("port {s} out of range"))
}

/// Parses `host` (hostname, IPv4 address or bracketed IPv6 reference) at
/// the start of `s`; returns the host and what follows it.
pub(crate) fn split_host(s: &str) -> Result<(&str, &str), String> {
    if s.starts_with('[') {
        let close = s.find(']').ok_or("unterminated IPv6 reference")?;
        let host = s.get(..=close).ok_or("bad IPv6 reference")?;
        let inner = host.get(1..close).unwrap_or("");
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(format!("bad IPv6 reference {host}"));
        }
        Ok((host, s.get(close + 1..).unwrap_or("")))
    } else {
        let end = s.bytes().position(|b| !is_host_byte(b)).unwrap_or(s.len());
        let host = s.get(..end).unwrap_or("");
        if host.is_empty() {
            return Err(match s.bytes().next() {
                Some(b) => format!("host expected, found {}", describe(b)),
                None => "missing host".into(),
            });
        }
        Ok((host, s.get(end..).unwrap_or("")))
    }
}

impl Uri {
    /// Parses a URI. It must have a scheme and contain no whitespace or
    /// control characters; a `sip:`/`sips:` URI must have a valid host,
    /// port and parameters.
    pub fn parse(s: &str) -> Result<Uri, String> {
        if s.is_empty() {
            return Err("empty URI".into());
        }
        if let Some(b) = s.bytes().find(|b| b.is_ascii_whitespace()) {
            return Err(format!("URI contains whitespace ({})", describe(b)));
        }
        if let Some(b) = s.bytes().find(|b| b.is_ascii_control()) {
            return Err(format!("URI contains {}", describe(b)));
        }
        if !s.is_ascii() {
            return Err("URI contains non-ASCII characters (they must be escaped)".into());
        }
        let (scheme, rest) = s.split_once(':').ok_or("URI has no scheme")?;
        if scheme.is_empty()
            || !scheme
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
            || !scheme.bytes().all(is_scheme_byte)
        {
            return Err(format!("bad URI scheme {scheme:?}"));
        }
        if rest.is_empty() {
            return Err(format!("nothing after {scheme}:"));
        }
        let sip = if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            Some(parse_sip_parts(rest)?)
        } else {
            None
        };
        Ok(Uri {
            raw: s.to_string(),
            scheme: scheme.to_string(),
            sip,
        })
    }

    /// A `sip:[user@]host[:port]` URI from parts this element chose itself
    /// (its own address, a configured peer), without a text round trip.
    /// `host` is a hostname, IPv4 address or bracketed IPv6 reference and
    /// is taken as given.
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        let mut raw = String::from("sip:");
        if let Some(u) = user {
            raw.push_str(u);
            raw.push('@');
        }
        raw.push_str(host);
        if let Some(p) = port {
            raw.push(':');
            raw.push_str(&p.to_string());
        }
        Uri {
            raw,
            scheme: "sip".into(),
            sip: Some(SipParts {
                user: user.map(str::to_string),
                password: None,
                host: host.to_string(),
                port,
                params: Vec::new(),
                headers: None,
            }),
        }
    }

    /// The URI exactly as received.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `sip:` or `sips:`.
    pub fn is_sip(&self) -> bool {
        self.sip.is_some()
    }

    pub fn is_sips(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }

    /// The user part (escaped as received); SIP URIs only.
    pub fn user(&self) -> Option<&str> {
        self.sip.as_ref().and_then(|p| p.user.as_deref())
    }

    pub fn password(&self) -> Option<&str> {
        self.sip.as_ref().and_then(|p| p.password.as_deref())
    }

    /// The host (an IPv6 reference keeps its brackets); SIP URIs only.
    pub fn host(&self) -> Option<&str> {
        self.sip.as_ref().map(|p| p.host.as_str())
    }

    pub fn port(&self) -> Option<u16> {
        self.sip.as_ref().and_then(|p| p.port)
    }

    /// URI parameters (`;lr`, `;transport=tcp`, ...); SIP URIs only.
    pub fn params(&self) -> &[Param] {
        self.sip
            .as_ref()
            .map(|p| p.params.as_slice())
            .unwrap_or(&[])
    }

    /// A URI parameter: `Some(None)` when present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(self.params(), name).map(|p| p.value.as_deref())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// The `?headers` part, without the `?`.
    pub fn headers(&self) -> Option<&str> {
        self.sip.as_ref().and_then(|p| p.headers.as_deref())
    }

    /// The `transport` parameter.
    pub fn transport_param(&self) -> Option<&str> {
        self.param("transport").flatten()
    }

    /// rsip's view of this URI, where rsip can represent it.
    pub fn to_rsip(&self) -> Option<rsip::Uri> {
        rsip::Uri::try_from(self.raw.as_str()).ok()
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Parses what follows `sip:`: `[userinfo "@"] hostport uri-parameters
/// [headers]`. The user part may itself contain `;`, `?` and `:`
/// (RFC 4475 3.1.1.2 and 3.1.1.9), so it runs to the first `@`.
fn parse_sip_parts(rest: &str) -> Result<SipParts, String> {
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(u) => {
            if u.is_empty() {
                return Err("empty user part before '@'".into());
            }
            match u.split_once(':') {
                Some((user, pw)) => (Some(user.to_string()), Some(pw.to_string())),
                None => (Some(u.to_string()), None),
            }
        }
        None => (None, None),
    };
    let (host, after) = split_host(hostpart)?;
    let (port, after) = match after.strip_prefix(':') {
        Some(p) => {
            let end = p
                .bytes()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(p.len());
            let digits = p.get(..end).unwrap_or("");
            (Some(parse_port(digits)?), p.get(end..).unwrap_or(""))
        }
        None => (None, after),
    };
    let (param_part, headers) = match after.split_once('?') {
        Some((p, h)) => (p, Some(h.to_string())),
        None => (after, None),
    };
    let mut params = Vec::new();
    if !param_part.is_empty() {
        let list = param_part
            .strip_prefix(';')
            .ok_or_else(|| match param_part.bytes().next() {
                Some(b) => format!("unexpected {} after host", describe(b)),
                None => "unexpected end of URI".into(),
            })?;
        for item in list.split(';') {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (item, None),
            };
            if name.is_empty() {
                return Err("empty URI parameter".into());
            }
            params.push(Param::new(name, value));
        }
    }
    Ok(SipParts {
        user,
        password,
        host: host.to_string(),
        port,
        params,
        headers,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse("sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?Subject=x").unwrap();
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("pw"));
        assert_eq!(u.host(), Some("[2001:db8::1]"));
        assert_eq!(u.port(), Some(5070));
        assert_eq!(u.transport_param(), Some("tcp"));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers(), Some("Subject=x"));
        assert_eq!(
            u.to_string(),
            "sip:alice:pw@[2001:db8::1]:5070;transport=tcp;lr?Subject=x"
        );
    }

    #[test]
    fn torture_users() {
        // RFC 4475 3.1.1.2 and 3.1.1.9: ';', '?', ',' and ':' in the user part.
        let u = Uri::parse(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        )
        .unwrap();
        assert_eq!(
            u.user(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host(), Some("example.com"));
        assert!(u.headers().is_none());
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
    }

    #[test]
    fn other_schemes_are_opaque() {
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert!(!u.is_sip());
        assert_eq!(u.scheme(), "soap.beep");
        assert_eq!(u.host(), None);
        assert!(Uri::parse("tel:+15551234").is_ok());
    }

    #[test]
    fn rejects() {
        assert!(Uri::parse("sip:user@example.com; lr")
            .unwrap_err()
            .contains("whitespace"));
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:a@b:99999").unwrap_err().contains("range"));
        assert!(Uri::parse("sip:a@b:").is_err());
        assert!(Uri::parse("sip:@b").is_err());
        assert!(Uri::parse("sip:a@b;;x").unwrap_err().contains("empty"));
        assert!(Uri::parse("sip:a@b>x").is_err());
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("nocolon").is_err());
        assert!(Uri::parse("sip:a@[zz]").is_err());
    }

    #[test]
    fn rsip_view() {
        let u = Uri::parse("sip:bob@example.com:5062").unwrap();
        let r = u.to_rsip().unwrap();
        assert_eq!(r.user(), Some("bob"));
    }

    #[test]
    fn sip_uri_from_parts() {
        for (user, host, port, text) in [
            (
                Some("sip-ka"),
                "192.0.2.1",
                Some(5060),
                "sip:sip-ka@192.0.2.1:5060",
            ),
            (None, "[2001:db8::1]", Some(5080), "sip:[2001:db8::1]:5080"),
            (None, "pbx.example.com", None, "sip:pbx.example.com"),
        ] {
            let u = Uri::sip(user, host, port);
            assert_eq!(u.as_str(), text);
            assert_eq!(u, Uri::parse(text).unwrap());
        }
    }
}
