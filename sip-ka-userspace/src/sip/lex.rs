//! Lexical pieces of RFC 3261 section 25.1 shared by the URI and header
//! parsers: token and word characters, a byte cursor, quoted strings,
//! generic parameters and comma lists.
//!
//! Everything here works on text that is already unfolded (a header value
//! after line folding was replaced by a single SP) and valid UTF-8. Nothing
//! indexes or unwraps: a cursor only advances over bytes it has looked at
//! with `get`, and over whole characters inside quoted strings, so every
//! slice it takes starts and ends on a character boundary.

use std::fmt;

/// `token` characters (RFC 3261 25.1).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty run of `token` characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// `word` characters (the Call-ID alphabet, RFC 3261 25.1).
pub(crate) fn is_word_byte(b: u8) -> bool {
    is_token_byte(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// SP or HTAB.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Names a byte in an error message without echoing control characters.
pub(crate) fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// A read position in a string.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Moves past one ASCII byte (callers only bump after peeking one).
    fn bump(&mut self) {
        if self.pos < self.s.len() {
            self.pos += 1;
        }
    }

    /// Skips SP and HTAB.
    pub(crate) fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_wsp) {
            self.bump();
        }
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Consumes ASCII bytes while `pred` holds.
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii() && pred(b) {
                self.bump();
            } else {
                break;
            }
        }
        self.s.get(start..self.pos).unwrap_or("")
    }

    /// What is left.
    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    /// Consumes a `quoted-string` starting at the cursor and returns it raw,
    /// quotes included.
    pub(crate) fn quoted_string(&mut self) -> Result<&'a str, String> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        match chars.next() {
            Some((_, '"')) => {}
            _ => return Err("expected a quoted string".into()),
        }
        let end = loop {
            match chars.next() {
                None => return Err("unterminated quoted string".into()),
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    None => return Err("unterminated quoted string".into()),
                    Some((_, c)) if !c.is_ascii() || c == '\r' || c == '\n' => {
                        return Err("invalid escape in quoted string".into())
                    }
                    Some(_) => {}
                },
                Some((_, c)) if (c < ' ' && c != '\t') || c == '\x7f' => {
                    return Err(format!(
                        "control character 0x{:02x} in quoted string",
                        c as u32
                    ))
                }
                Some(_) => {}
            }
        };
        let raw = rest.get(..end).ok_or("unterminated quoted string")?;
        self.pos += end;
        Ok(raw)
    }
}

/// The content of a raw quoted string, quoted-pairs resolved. Text that is
/// not quoted comes back unchanged.
pub fn unquote(raw: &str) -> String {
    let inner = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner,
        None => return raw.to_string(),
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// A `generic-param` (or a URI parameter): `name` or `name=value`. The value
/// is kept as received (a quoted string keeps its quotes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Param {
            name: name.into(),
            value,
        }
    }

    /// The value with quotes and quoted-pairs removed.
    pub fn unquoted_value(&self) -> Option<String> {
        self.value.as_deref().map(unquote)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, ";{}={}", self.name, v),
            None => write!(f, ";{}", self.name),
        }
    }
}

/// Finds a parameter by name (parameter names are case-insensitive).
pub(crate) fn find_param<'p>(params: &'p [Param], name: &str) -> Option<&'p Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Sets (replaces or appends) a parameter.
pub(crate) fn set_param(params: &mut Vec<Param>, name: &str, value: Option<String>) {
    match params
        .iter_mut()
        .find(|p| p.name.eq_ignore_ascii_case(name))
    {
        Some(p) => p.value = value,
        None => params.push(Param::new(name, value)),
    }
}

/// Characters of an unquoted `gen-value`: token, host (with IPv6 brackets
/// and colons).
fn is_gen_value_byte(b: u8) -> bool {
    is_token_byte(b) || matches!(b, b':' | b'[' | b']')
}

/// Parses `*( SEMI generic-param )` up to the end of the cursor, allowing
/// LWS around `;` and `=`.
pub(crate) fn parse_params(cur: &mut Cursor<'_>) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    each_param(cur, |name, value| {
        out.push(Param::new(name, value.map(str::to_string)));
        Ok(())
    })?;
    Ok(out)
}

/// [`parse_params`] without building them: `f` sees each parameter's
/// name and value (as received) in turn, and may refuse one. The same
/// text is accepted and refused, with the same reasons.
pub(crate) fn each_param<'a>(
    cur: &mut Cursor<'a>,
    mut f: impl FnMut(&'a str, Option<&'a str>) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        cur.skip_ws();
        match cur.peek() {
            None => return Ok(()),
            Some(b';') => {
                cur.eat(b';');
            }
            Some(b) => {
                return Err(format!(
                    "unexpected {} where a ';' parameter was expected",
                    describe(b)
                ))
            }
        }
        cur.skip_ws();
        let name = cur.take_while(is_token_byte);
        if name.is_empty() {
            return Err(match cur.peek() {
                None | Some(b';') => "empty parameter".to_string(),
                Some(b) => format!("parameter name starts with {}", describe(b)),
            });
        }
        cur.skip_ws();
        let value = if cur.eat(b'=') {
            cur.skip_ws();
            if cur.peek() == Some(b'"') {
                Some(cur.quoted_string()?)
            } else {
                let v = cur.take_while(is_gen_value_byte);
                if v.is_empty() {
                    return Err(format!("parameter {name} has an empty value"));
                }
                Some(v)
            }
        } else {
            None
        };
        f(name, value)?;
    }
}

/// Parses a whole string as `*( SEMI generic-param )`.
#[cfg(test)]
pub(crate) fn parse_param_str(s: &str) -> Result<Vec<Param>, String> {
    let mut cur = Cursor::new(s);
    parse_params(&mut cur)
}

/// Splits a header value at the commas that separate list elements: commas
/// inside quoted strings or `<...>` do not count.
pub(crate) fn split_commas(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut start = 0;
    each_list_comma(s, |i| {
        parts.push(s.get(start..i).unwrap_or(""));
        start = i + 1;
    })?;
    parts.push(s.get(start..).unwrap_or(""));
    Ok(parts)
}

/// The first item [`split_commas`] would give, without the list: what a
/// caller that only needs the top Via reads. `None` where
/// `split_commas` fails (an unterminated quoted string anywhere).
pub(crate) fn first_comma_item(s: &str) -> Option<&str> {
    let mut end = None;
    each_list_comma(s, |i| {
        end.get_or_insert(i);
    })
    .ok()?;
    s.get(..end.unwrap_or(s.len()))
}

/// Calls `at` with the position of each comma that separates list items
/// (outside quoted strings and `<...>`); an error for an unterminated
/// quoted string.
fn each_list_comma(s: &str, mut at: impl FnMut(usize)) -> Result<(), String> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut in_angle = false;
    for (i, b) in s.bytes().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => at(i),
            _ => {}
        }
    }
    if in_quote {
        return Err("unterminated quoted string".into());
    }
    Ok(())
}

/// Trims SP and HTAB from both ends of a byte slice.
pub(crate) fn trim_wsp(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if is_wsp(*first) {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if is_wsp(*last) {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Position of `needle` in `hay`.
pub(crate) fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    let mut start = 0;
    loop {
        let i = start + hay.get(start..)?.iter().position(|&b| b == first)?;
        let after = i + 1;
        if hay.get(after..after.checked_add(rest.len())?) == Some(rest) {
            return Some(i);
        }
        start = after;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn params_with_lws_and_quotes() {
        let p = parse_param_str(" ;  tag    = 1918181833n ; q = 0.33;x=\"a b\\\"c\";lr").unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], Param::new("tag", Some("1918181833n".into())));
        assert_eq!(p[1].value.as_deref(), Some("0.33"));
        assert_eq!(p[2].unquoted_value().as_deref(), Some("a b\"c"));
        assert_eq!(p[3], Param::new("lr", None));
    }

    #[test]
    fn empty_and_bad_params() {
        assert_eq!(parse_param_str(";;").unwrap_err(), "empty parameter");
        assert!(parse_param_str(";a=").unwrap_err().contains("empty value"));
        assert!(parse_param_str("x").unwrap_err().contains("'x'"));
        assert!(parse_param_str(";a=\"open")
            .unwrap_err()
            .contains("unterminated"));
    }

    #[test]
    fn quoted_string_rules() {
        let mut c = Cursor::new("\"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f\" rest");
        assert_eq!(c.quoted_string().unwrap().len(), 22);
        assert_eq!(c.rest(), " rest");
        let mut c = Cursor::new("\"a\x01\"");
        assert!(c.quoted_string().unwrap_err().contains("control"));
        let mut c = Cursor::new("\"\u{444}\u{44b}\"");
        assert_eq!(c.quoted_string().unwrap(), "\"\u{444}\u{44b}\"");
        assert_eq!(unquote("\"J \\\\\\\"\""), "J \\\"");
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let parts = split_commas("\"a,b\" <sip:x,y@h>, <sip:z@h>").unwrap();
        assert_eq!(parts, vec!["\"a,b\" <sip:x,y@h>", " <sip:z@h>"]);
        assert!(split_commas("\"open, x").is_err());
    }

    #[test]
    fn trims_and_finds() {
        assert_eq!(trim_wsp(b" \t a b \t"), b"a b");
        assert_eq!(trim_wsp(b"   "), b"");
        assert_eq!(find_bytes(b"ab\r\n\r\nc", b"\r\n\r\n"), Some(2));
        assert_eq!(find_bytes(b"ab", b"abc"), None);
        assert_eq!(find_bytes(b"\r\r\n\r\r\n\r\n", b"\r\n\r\n"), Some(4));
        assert_eq!(find_bytes(b"\r\n\r", b"\r\n\r\n"), None);
        assert_eq!(find_bytes(b"", b"\r\n"), None);
        assert_eq!(find_bytes(b"x", b""), Some(0));
    }
}
