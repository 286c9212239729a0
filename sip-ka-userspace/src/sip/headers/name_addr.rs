//! name-addr values: From, To, Contact, Route, Record-Route, Path.

use std::fmt;

use crate::sip::lex::{
    describe, each_param, find_param, is_token_byte, parse_params, set_param, split_commas,
    unquote, Cursor, Param,
};
use crate::sip::uri::Uri;

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

    /// The `tag` parameter of a From or To value: the header parameters
    /// found as [`NameAddr::parse`] finds them, without parsing the URI
    /// or checking the display name. The same answer as
    /// `NameAddr::parse(value).ok()?.tag()` for every value that parses
    /// (what a parsed message holds: `validate` parsed its From and To);
    /// a value that does not may still give a tag.
    pub fn tag_of(value: &str) -> Option<String> {
        let s = value.trim_matches(|c| c == ' ' || c == '\t');
        let mut cur = Cursor::new(s);
        let params = if cur.peek() == Some(b'"') {
            cur.quoted_string().ok()?;
            cur.skip_ws();
            if !cur.eat(b'<') {
                return None;
            }
            let rest = cur.rest();
            rest.get(rest.find('>')? + 1..)?
        } else if let Some(lt) = s.find('<') {
            let rest = s.get(lt + 1..)?;
            rest.get(rest.find('>')? + 1..)?
        } else {
            s.get(s.find([';', ' ', '\t']).unwrap_or(s.len())..)?
        };
        // Every parameter is read, so that a value the full parse refuses
        // gives no tag here either; the first `tag` is the one kept.
        let mut tag: Option<Option<&str>> = None;
        each_param(&mut Cursor::new(params), |name, value| {
            if tag.is_none() && name.eq_ignore_ascii_case("tag") {
                tag = Some(value);
            }
            Ok(())
        })
        .ok()?;
        tag.flatten().map(str::to_string)
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

/// The URI of a From, To or Contact value (`"A" <sip:a@b;lr>;tag=x` gives
/// `sip:a@b;lr`, a bare `sip:a@b;tag=x` gives `sip:a@b`), as received; for
/// a list, the first entry's. `None` when that entry does not parse (or
/// is the `*` Contact).
pub fn name_addr_uri(value: &str) -> Option<String> {
    let first = split_commas(value).ok()?.into_iter().next()?;
    NameAddr::parse(first).ok().map(|n| n.uri.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {

    /// `tag_of` against the full parse: the same tag for every value the
    /// full parse accepts, over the RFC 4475 messages' From and To fields,
    /// hand-written shapes, and bounded mutations of both.
    #[test]
    fn tag_of_finds_the_tag_the_full_parse_finds() {
        let mut values: Vec<String> = [
            "<sip:a@b>;tag=1",
            "\"A, \\\"B\\\" <x>\" <sip:a@b;tag=uri>;tag=hdr",
            "Bob <sip:b@c;transport=tcp>;x=\"q;tag=no\";tag=yes",
            "sip:a@b;tag=addr-spec",
            "sip:a@b ;tag=spaced",
            "<sip:a@b> ; TAG = up ",
            "<sip:a@b>;tag",
            "<sip:a@b>;tag=",
            "<sip:a@b>;other=1",
            "  <tel:+1555>;tag=t\t",
            "\"no close\" <sip:a@b",
            "<sip:a@b>;tag=1;tag=2",
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        values.extend(crate::sip::corpus::torture_fields(&[
            "from", "to", "f", "t",
        ]));
        let full = |v: &str| NameAddr::parse(v).ok().map(|n| n.tag().map(str::to_string));
        let mut checked = 0;
        let values = crate::sip::corpus::with_insertions(
            values,
            &[";", "\"", "<", ">", " ", ",", "=", "\\", "tag=z;"],
        );
        for v in &values {
            if let Some(want) = full(v) {
                assert_eq!(NameAddr::tag_of(v), want, "{v:?}");
                checked += 1;
            }
        }
        assert!(checked > 1_000, "only {checked} values parsed");
    }

    #[test]
    fn the_first_comma_item_is_split_commas_first() {
        for s in [
            "a,b",
            "",
            ",",
            "\"x,y\",z",
            "<a,b>,c",
            "\"unterminated,",
            "a,\"unterminated",
            "SIP/2.0/UDP h;branch=z9hG4bK1;x=\"a,b\", SIP/2.0/TCP g",
            "a\\,b",
        ] {
            assert_eq!(
                crate::sip::lex::first_comma_item(s),
                crate::sip::lex::split_commas(s).ok().map(|v| v[0]),
                "{s:?}"
            );
        }
    }
    use super::*;

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
    fn uri_of_a_name_addr() {
        for (value, uri) in [
            ("<sip:a@b>;tag=x", "sip:a@b"),
            (
                "\"Alice, A\" <sip:alice@192.0.2.1:5070;transport=tcp>;tag=9",
                "sip:alice@192.0.2.1:5070;transport=tcp",
            ),
            ("Bob <sips:bob@example.com;lr>", "sips:bob@example.com;lr"),
            ("sip:carol@example.com;tag=1", "sip:carol@example.com"),
            (
                "  sip:dave@[2001:db8::1]:5060  ",
                "sip:dave@[2001:db8::1]:5060",
            ),
            ("<sip:one@a>;expires=60, <sip:two@b>", "sip:one@a"),
            ("<tel:+15551234>", "tel:+15551234"),
        ] {
            assert_eq!(name_addr_uri(value).as_deref(), Some(uri), "{value}");
        }
        for bad in [
            "",
            "*",
            "<sip:a@b",
            "no uri here",
            "<>;tag=1",
            "\"open <sip:a@b>",
        ] {
            assert_eq!(name_addr_uri(bad), None, "{bad:?}");
        }
    }
}
