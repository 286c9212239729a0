//! Session timers (RFC 4028): Session-Expires and Min-SE.

use std::fmt;

use super::cseq::parse_u32;
use crate::sip::errors::HeaderError;
use crate::sip::lex::{parse_params, Cursor, Param};

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
}
