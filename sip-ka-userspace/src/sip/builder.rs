//! Requests the edge sends on its own behalf (the qualify OPTIONS, the
//! BYEs that end expired sessions), built field by field into a
//! [`SipMessage`]: no message text is formatted and parsed back.
//!
//! ```
//! use sip_ka::sip::{Method, NameAddr, RequestBuilder, Uri, Via};
//!
//! let pbx = Uri::sip(None, "192.0.2.9", Some(5080));
//! let me = Uri::sip(Some("sip-ka"), "192.0.2.1", Some(5060));
//! let msg = RequestBuilder::new(Method::Options, pbx.clone())
//!     .via(Via::new("UDP", "192.0.2.1", Some(5060), "z9hG4bKq1").with_rport())
//!     .from_addr(NameAddr::new(me), Some("t1"))
//!     .to_addr(NameAddr::new(pbx), None)
//!     .call_id("q1@192.0.2.1")
//!     .cseq(1)
//!     .header("User-Agent", "sip-ka")
//!     .build();
//! assert!(msg.to_bytes().starts_with(b"OPTIONS sip:192.0.2.9:5080 SIP/2.0\r\n"));
//! ```

use super::errors::ParseError;
use super::headers::cseq::CSeq;
use super::headers::method::Method;
use super::headers::name_addr::NameAddr;
use super::headers::names::make_header;
use super::headers::via::Via;
use super::message::{SipMessage, StartLine};
use super::parse::{check_request_uri, parse_request_uri};
use super::uri::Uri;

/// Max-Forwards of a request this element originates (RFC 3261 8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// A request under construction. The fields are written in the order
/// RFC 3261 8.1.1 lists them, whatever order they are set in: Via (top
/// first), Max-Forwards, From, To, Call-ID, CSeq, the extra headers in the
/// order added, then `Content-Length: 0`.
#[derive(Clone, Debug)]
pub struct RequestBuilder {
    method: Method,
    uri: Uri,
    vias: Vec<Via>,
    max_forwards: u32,
    from: Option<String>,
    to: Option<String>,
    call_id: Option<String>,
    cseq: u32,
    extra: Vec<rsip::Header>,
}

impl RequestBuilder {
    /// A `method` request to `request_uri`, with Max-Forwards
    /// [`DEFAULT_MAX_FORWARDS`] and CSeq 1 until set otherwise.
    pub fn new(method: Method, request_uri: Uri) -> RequestBuilder {
        RequestBuilder {
            method,
            uri: request_uri,
            vias: Vec::new(),
            max_forwards: DEFAULT_MAX_FORWARDS,
            from: None,
            to: None,
            call_id: None,
            cseq: 1,
            extra: Vec::new(),
        }
    }

    /// [`RequestBuilder::new`] with a Request-URI given as text (a stored
    /// Contact URI), checked as a request line's would be.
    pub fn for_uri(method: Method, request_uri: &str) -> Result<RequestBuilder, ParseError> {
        Ok(RequestBuilder::new(method, parse_request_uri(request_uri)?))
    }

    /// Adds a Via below the ones added before (the first added is the
    /// top one).
    pub fn via(mut self, via: Via) -> Self {
        self.vias.push(via);
        self
    }

    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    /// The From value as stored or received (`"A" <sip:a@b>;tag=x`).
    pub fn from(mut self, value: impl Into<String>) -> Self {
        self.from = Some(value.into());
        self
    }

    /// The From value from a name-addr, with `tag` set when given.
    pub fn from_addr(self, addr: NameAddr, tag: Option<&str>) -> Self {
        self.from(with_tag(addr, tag))
    }

    /// The To value as stored or received.
    pub fn to(mut self, value: impl Into<String>) -> Self {
        self.to = Some(value.into());
        self
    }

    /// The To value from a name-addr, with `tag` set when given.
    pub fn to_addr(self, addr: NameAddr, tag: Option<&str>) -> Self {
        self.to(with_tag(addr, tag))
    }

    pub fn call_id(mut self, id: impl Into<String>) -> Self {
        self.call_id = Some(id.into());
        self
    }

    /// The CSeq number; its method is the request's.
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = seq;
        self
    }

    /// Adds a header after the fixed ones (Reason, User-Agent, ...); the
    /// name is canonicalised as in a parsed message.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.extra.push(make_header(name, value));
        self
    }

    /// The request, unchecked: for values this element made itself.
    /// Fields never set (From, To, Call-ID) are left out.
    pub fn build(self) -> SipMessage {
        let cseq = CSeq {
            seq: self.cseq,
            method: self.method.clone(),
        };
        let mut list: Vec<rsip::Header> =
            Vec::with_capacity(self.vias.len() + 7 + self.extra.len());
        list.extend(self.vias.iter().map(|v| make_header("Via", v.to_string())));
        list.push(make_header("Max-Forwards", self.max_forwards.to_string()));
        for (name, value) in [
            ("From", self.from),
            ("To", self.to),
            ("Call-ID", self.call_id),
        ] {
            if let Some(v) = value {
                list.push(make_header(name, v));
            }
        }
        list.push(make_header("CSeq", cseq.to_string()));
        list.extend(self.extra);
        list.push(make_header("Content-Length", "0"));
        SipMessage {
            start: StartLine::Request {
                method: self.method,
                uri: self.uri,
            },
            headers: list.into(),
            body: Vec::new(),
        }
    }

    /// The request, with the checks [`parse_message`] makes: for values
    /// taken from stored or received messages (a Contact URI, From and To
    /// as received), so a request the parser would reject is never sent.
    ///
    /// [`parse_message`]: super::parse::parse_message
    pub fn build_checked(self) -> Result<SipMessage, ParseError> {
        check_request_uri(&self.uri)?;
        let msg = self.build();
        msg.validate()?;
        Ok(msg)
    }
}

fn with_tag(mut addr: NameAddr, tag: Option<&str>) -> String {
    if let Some(t) = tag {
        addr.set_param("tag", Some(t.to_string()));
    }
    addr.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sip::limits::{Framing, Limits};
    use crate::sip::parse::parse_message;

    fn parse(bytes: &[u8]) -> SipMessage {
        parse_message(bytes, Framing::Datagram, &Limits::default()).unwrap()
    }

    /// The reaping BYE as the edge writes it: Request-URI from a stored
    /// Contact, From and To as received.
    fn bye() -> RequestBuilder {
        RequestBuilder::for_uri(Method::Bye, "sip:bob@192.0.2.20:5062;transport=tcp")
            .unwrap()
            .via(Via::new(
                "TCP",
                "203.0.113.1",
                Some(5060),
                "z9hG4bKskaabc123",
            ))
            .max_forwards(70)
            .from("\"Alice, A\" <sip:alice@example.com>;tag=1928301774")
            .to("<sip:bob@example.com>;tag=a6c85cf")
            .call_id("a84b4c76e66710@pc33.example.com")
            .cseq(315)
            .header("Reason", "SIP;cause=408;text=\"Session expired\"")
    }

    const BYE_TEXT: &str = "BYE sip:bob@192.0.2.20:5062;transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP 203.0.113.1:5060;branch=z9hG4bKskaabc123\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice, A\" <sip:alice@example.com>;tag=1928301774\r\n\
         To: <sip:bob@example.com>;tag=a6c85cf\r\n\
         Call-ID: a84b4c76e66710@pc33.example.com\r\n\
         CSeq: 315 BYE\r\n\
         Reason: SIP;cause=408;text=\"Session expired\"\r\n\
         Content-Length: 0\r\n\r\n";

    #[test]
    fn bye_is_the_message_the_text_form_parses_to() {
        let built = bye().build_checked().unwrap();
        assert_eq!(built, parse(BYE_TEXT.as_bytes()));
        assert_eq!(built.to_bytes(), BYE_TEXT.as_bytes());
    }

    #[test]
    fn bye_parses_back_to_its_fields() {
        let m = parse(&bye().build().to_bytes());
        assert_eq!(m.method(), Some(&Method::Bye));
        assert_eq!(
            m.request_uri().unwrap().as_str(),
            "sip:bob@192.0.2.20:5062;transport=tcp"
        );
        let via = m.top_via().unwrap();
        assert_eq!(
            (via.transport.as_str(), via.host.as_str(), via.port),
            ("TCP", "203.0.113.1", Some(5060))
        );
        assert_eq!(via.branch(), Some("z9hG4bKskaabc123"));
        assert_eq!(via.rport(), None);
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.from_tag().as_deref(), Some("1928301774"));
        assert_eq!(
            m.from().unwrap().display_name_unquoted().as_deref(),
            Some("Alice, A")
        );
        assert_eq!(m.to_tag().as_deref(), Some("a6c85cf"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.example.com"));
        assert_eq!(
            m.cseq().unwrap(),
            CSeq {
                seq: 315,
                method: Method::Bye
            }
        );
        assert_eq!(
            m.header("Reason"),
            Some("SIP;cause=408;text=\"Session expired\"")
        );
        assert_eq!(m.content_length(), Some(0));
        assert!(m.body().is_empty());
    }

    #[test]
    fn options_from_parts() {
        let pbx = Uri::sip(None, "[2001:db8::9]", Some(5080));
        let me = Uri::sip(Some("sip-ka"), "[2001:db8::1]", Some(40000));
        let m = RequestBuilder::new(Method::Options, pbx.clone())
            .cseq(7)
            .header("User-Agent", "sip-ka")
            .call_id("q-7@[2001:db8::1]")
            .to_addr(NameAddr::new(pbx), None)
            .from_addr(NameAddr::new(me), Some("skaq1"))
            .via(Via::new("udp", "[2001:db8::1]", Some(40000), "z9hG4bKq7").with_rport())
            .build();
        let text = "OPTIONS sip:[2001:db8::9]:5080 SIP/2.0\r\n\
             Via: SIP/2.0/UDP [2001:db8::1]:40000;branch=z9hG4bKq7;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:sip-ka@[2001:db8::1]:40000>;tag=skaq1\r\n\
             To: <sip:[2001:db8::9]:5080>\r\n\
             Call-ID: q-7@[2001:db8::1]\r\n\
             CSeq: 7 OPTIONS\r\n\
             User-Agent: sip-ka\r\n\
             Content-Length: 0\r\n\r\n";
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), text);
        let back = parse(text.as_bytes());
        assert_eq!(m, back);
        assert_eq!(back.top_via().unwrap().rport(), Some(None));
        assert_eq!(back.from_tag().as_deref(), Some("skaq1"));
        assert_eq!(back.to_tag(), None);
        assert_eq!(back.to().unwrap().uri.port(), Some(5080));
    }

    #[test]
    fn wire_form_is_well_formed() {
        let bytes = bye().build().to_bytes();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty());
        assert!(!head.contains("\r\n\r\n"));
        for line in head.split("\r\n").skip(1) {
            let (name, value) = line.split_once(": ").unwrap();
            assert!(!name.is_empty() && !value.is_empty(), "{line:?}");
            assert!(!line.contains(['\r', '\n']), "{line:?}");
        }
        assert_eq!(
            parse_message(&bytes, Framing::Stream, &Limits::default()).unwrap(),
            parse(&bytes)
        );
    }

    #[test]
    fn several_vias_top_first_and_values_sanitised() {
        let m = bye()
            .via(Via::new("UDP", "198.51.100.7", None, "z9hG4bK2"))
            .header("Subject", "two\r\nlines")
            .build();
        let vias = m.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].host, "203.0.113.1");
        assert_eq!(vias[1].host, "198.51.100.7");
        let back = parse(&m.to_bytes());
        assert_eq!(back.header("Subject"), Some("two  lines"));
    }

    #[test]
    fn checked_build_rejects_what_the_parser_would() {
        assert!(matches!(
            RequestBuilder::for_uri(Method::Bye, "<sip:a@b>"),
            Err(ParseError::BadRequestUri(_))
        ));
        assert!(matches!(
            RequestBuilder::for_uri(Method::Bye, "sip:a@b?Subject=x"),
            Err(ParseError::BadRequestUri(_))
        ));
        assert!(RequestBuilder::for_uri(Method::Bye, "not a uri").is_err());
        assert!(matches!(
            bye().from("<sip:a@b").build_checked(),
            Err(ParseError::BadHeader(_))
        ));
        assert!(matches!(
            bye().call_id("a b").build_checked(),
            Err(ParseError::BadHeader(_))
        ));
        assert!(matches!(
            bye().max_forwards(300).build_checked(),
            Err(ParseError::BadHeader(_))
        ));
        let no_to = RequestBuilder::new(Method::Bye, Uri::sip(None, "b", None))
            .via(Via::new("UDP", "a", None, "z9hG4bK1"))
            .from("<sip:a@a>;tag=1")
            .call_id("c@a")
            .build_checked();
        assert!(matches!(no_to, Err(ParseError::MissingHeader("To"))));
        let no_via = RequestBuilder::new(Method::Bye, Uri::sip(None, "b", None))
            .from("<sip:a@a>;tag=1")
            .to("<sip:b@b>")
            .call_id("c@a")
            .build_checked();
        assert!(matches!(no_via, Err(ParseError::MissingHeader("Via"))));
    }
}
