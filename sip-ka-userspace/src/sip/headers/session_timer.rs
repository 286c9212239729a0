//! Session timers (RFC 4028): Session-Expires and Min-SE.

use std::fmt;

use super::cseq::parse_u32;
use crate::sip::errors::HeaderError;
use crate::sip::lex::{each_param, Cursor, Param};

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
    let mut params = Vec::new();
    let delta = delta_each_param(name, value, |n, v| {
        params.push(Param::new(n, v.map(str::to_string)));
    })?;
    Ok((delta, params))
}

/// The delta-seconds of `value`, its parameters shown to `f` in turn
/// (the same text refused as by [`delta_and_params`], nothing built).
fn delta_each_param<'a>(
    name: &str,
    value: &'a str,
    mut f: impl FnMut(&'a str, Option<&'a str>),
) -> Result<u32, HeaderError> {
    let err = |r: String| HeaderError::new(name, r);
    let mut cur = Cursor::new(value);
    cur.skip_ws();
    let digits = cur.take_while(|b| b.is_ascii_digit());
    let delta = parse_u32(digits, "delta-seconds").map_err(err)?;
    each_param(&mut cur, |n, v| {
        f(n, v);
        Ok(())
    })
    .map_err(err)?;
    Ok(delta)
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
        let mut rest = Vec::new();
        let (delta, refresher) = session_expires(value, |n, v| {
            rest.push(Param::new(n, v.map(str::to_string)));
        })?;
        Ok(SessionExpires {
            delta,
            refresher,
            params: rest,
        })
    }

    /// The interval and refresher of a Session-Expires value: what
    /// [`SessionExpires::parse`] gives of them, with the same values
    /// refused, without building the other parameters (a session refresh
    /// reads them twice on its way through).
    pub fn parse_brief(value: &str) -> Result<(u32, Option<Refresher>), HeaderError> {
        session_expires(value, |_, _| {})
    }
}

/// A Session-Expires value's interval and refresher; its other
/// parameters shown to `other` in turn.
fn session_expires<'a>(
    value: &'a str,
    mut other: impl FnMut(&'a str, Option<&'a str>),
) -> Result<(u32, Option<Refresher>), HeaderError> {
    let mut refresher = None;
    let mut bad = None;
    let delta = delta_each_param("Session-Expires", value, |name, v| {
        if !name.eq_ignore_ascii_case("refresher") {
            other(name, v);
            return;
        }
        if bad.is_some() {
            return;
        }
        let r = match v {
            Some(v) if v.eq_ignore_ascii_case("uac") => Refresher::Uac,
            Some(v) if v.eq_ignore_ascii_case("uas") => Refresher::Uas,
            _ => {
                bad = Some("refresher must be uac or uas");
                return;
            }
        };
        if refresher.replace(r).is_some() {
            bad = Some("refresher repeated");
        }
    })?;
    match bad {
        Some(reason) => Err(HeaderError::new("Session-Expires", reason)),
        None => Ok((delta, refresher)),
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

impl MinSe {
    /// The delta-seconds of a Min-SE value, refused as by
    /// [`MinSe::parse`], its parameters not built.
    pub fn parse_delta(value: &str) -> Result<u32, HeaderError> {
        delta_each_param("Min-SE", value, |_, _| {})
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn brief_reads_agree_with_the_full_parsers() {
        for v in [
            "1800;refresher=uac",
            " 90 ; x=1",
            "600",
            "600;REFRESHER=UAS;y",
            "600;refresher=\"uac\"",
            "1800;refresher=proxy",
            "1800;refresher=uac;refresher=uas",
            "1800;refresher",
            "1800;;refresher=uac",
            "1800;refresher=bad;;",
            "1800;x=\"open",
            "abc",
            "",
            "99999999999",
            "120;refresher=uas;x=\"a b\"",
        ] {
            let full = SessionExpires::parse(v).map(|f| (f.delta, f.refresher));
            assert_eq!(full, SessionExpires::parse_brief(v), "{v:?}");
            let full = MinSe::parse(v).map(|m| m.delta);
            assert_eq!(full, MinSe::parse_delta(v), "{v:?}");
        }
    }
}
