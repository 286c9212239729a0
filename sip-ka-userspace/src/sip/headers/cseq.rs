//! Call-ID, CSeq and the numbers header values carry.

use std::fmt;

use super::method::Method;
use crate::sip::errors::HeaderError;
use crate::sip::lex::{describe, is_token_byte, is_word_byte, Cursor};

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
pub(super) fn parse_u32(s: &str, what: &str) -> Result<u32, String> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
}
