//! Option tags (RFC 3261 19.2): Supported, Require, Proxy-Require,
//! Unsupported.

use std::fmt;

use crate::sip::lex::is_token;

/// The option tags of Supported (`k`), Require, Proxy-Require or
/// Unsupported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionTags(pub Vec<String>);

/// The option tags of a header value in turn, each checked to be a
/// token; none for a blank value.
fn tags(value: &str) -> impl Iterator<Item = Result<&str, String>> {
    let blank = value.trim().is_empty();
    value.split(',').take_while(move |_| !blank).map(|t| {
        let t = t.trim_matches(|c| c == ' ' || c == '\t');
        if is_token(t) {
            Ok(t)
        } else {
            Err(format!("bad option tag {t:?}"))
        }
    })
}

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
        tags(value)
            .map(|t| t.map(str::to_string))
            .collect::<Result<Vec<_>, _>>()
            .map(OptionTags)
    }

    /// Whether `value` lists `tag` (any case), refusing the values
    /// [`OptionTags::parse`] refuses, without building the list.
    pub fn parse_contains(value: &str, tag: &str) -> Result<bool, String> {
        let mut found = false;
        for t in tags(value) {
            found |= t?.eq_ignore_ascii_case(tag);
        }
        Ok(found)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
    fn parse_contains_agrees_with_parse() {
        for v in [
            "timer, outbound,path",
            "TIMER",
            "100rel,\ttimer ",
            "",
            "  ",
            "timer,,path",
            "ti mer",
            "replaces",
            "timer, b@d",
        ] {
            let full = OptionTags::parse(v).map(|t| t.contains(OptionTags::TIMER));
            assert_eq!(
                full,
                OptionTags::parse_contains(v, OptionTags::TIMER),
                "{v:?}"
            );
        }
    }
}
