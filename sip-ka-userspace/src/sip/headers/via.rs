//! Via (RFC 3261 20.42, RFC 3581 rport).

use std::fmt;

use crate::sip::lex::{
    each_param, find_param, is_token_byte, parse_params, set_param, split_commas, Cursor, Param,
};
use crate::sip::uri::{parse_port, split_host};

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

    /// Adds a valueless `rport` (RFC 3581): asks the next hop to answer
    /// to the source port.
    pub fn with_rport(mut self) -> Via {
        self.set_param("rport", None);
        self
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

    /// The branch of a `via-parm`: the same answer as
    /// `Via::parse(value).ok()?.branch()`, without building the Via (the
    /// sent-by and every parameter are still read and checked).
    pub fn branch_of(value: &str) -> Option<String> {
        let mut cur = Cursor::new(value);
        sent_protocol_and_by(&mut cur).ok()?;
        let mut branch: Option<Option<&str>> = None;
        // Only the first rport is checked, the one `find_param` finds.
        let mut rport: Option<Option<&str>> = None;
        each_param(&mut cur, |name, v| {
            if name.eq_ignore_ascii_case("branch") && branch.is_none() {
                branch = Some(v);
            } else if name.eq_ignore_ascii_case("rport") && rport.is_none() {
                rport = Some(v);
            }
            Ok(())
        })
        .ok()?;
        if let Some(Some(port)) = rport {
            parse_port(port).ok()?;
        }
        branch.flatten().map(str::to_string)
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

    /// A Via header value (a comma-separated list) with its first
    /// via-parm rewritten by `edit` and the others kept, spelled as
    /// [`crate::sip::SipMessage::set_top_via`] spells them; `None` when
    /// `edit` leaves it as it came (returns `false`) or it does not parse.
    /// For answers written without the message model.
    pub fn edit_first_of_list(value: &str, edit: impl FnOnce(&mut Via) -> bool) -> Option<String> {
        let items = split_commas(value).ok()?;
        let mut top = Via::parse(items.first()?).ok()?;
        if !edit(&mut top) {
            return None;
        }
        let mut parts = vec![top.to_string()];
        parts.extend(items.iter().skip(1).map(|s| s.trim().to_string()));
        Some(parts.join(", "))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {

    /// `branch_of` against the full parse, over hand-written Vias, the
    /// RFC 4475 messages' Via fields, and bounded mutations of both.
    #[test]
    fn branch_of_is_the_full_parse_branch() {
        let mut values: Vec<String> = [
            "SIP/2.0/UDP h:5060;branch=z9hG4bK1",
            "SIP/2.0/UDP h;rport;branch=z9hG4bK2",
            "SIP/2.0/UDP h;rport=99999;branch=z9hG4bK3",
            "SIP/2.0/UDP h;rport=5;rport=x;branch=b",
            "SIP/2.0/UDP h;rport=x;rport=5;branch=b",
            "SIP/2.0/TCP [2001:db8::1]:5061 ; BRANCH = up ;received=1.2.3.4",
            "SIP/2.0/WSS x.invalid;branch",
            "SIP/2.0/UDP h;branch=a;branch=b",
            "SIP/2.0/UDP h;x=\"q;branch=no\";branch=yes",
            "SIP/2.0/UDP h",
            "garbage",
        ]
        .iter()
        .map(|v| v.to_string())
        .collect();
        for v in crate::sip::corpus::torture_fields(&["via", "v"]) {
            values.extend(
                split_commas(&v)
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string),
            );
        }
        let values = crate::sip::corpus::with_insertions(
            values,
            &[";", "=", " ", "\"", "rport=1;", "branch=q;", ":", "x"],
        );
        let mut parsed = 0;
        for v in &values {
            let full = Via::parse(v)
                .ok()
                .map(|via| via.branch().map(str::to_string));
            if full.is_some() {
                parsed += 1;
            }
            assert_eq!(Via::branch_of(v), full.flatten(), "{v:?}");
        }
        assert!(parsed > 1_000, "only {parsed} Vias parsed");
    }
    use super::*;

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
    fn via_with_rport() {
        let v = Via::new("udp", "192.0.2.1", Some(5060), "z9hG4bK1").with_rport();
        assert_eq!(v.rport(), Some(None));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"
        );
        assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    }
}
