//! ms-keep-alive ([MS-SIPRE]): hop-by-hop keep-alive negotiation.

use std::fmt;

use super::cseq::parse_u32;
use crate::sip::errors::HeaderError;
use crate::sip::lex::{is_token_byte, parse_params, Cursor, Param};

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
