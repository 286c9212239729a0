//! Request methods.

use std::fmt;

use crate::sip::lex::{describe, is_token, is_token_byte};

/// A request method. Methods are case-sensitive (RFC 3261 7.1): `invite`
/// is an extension method, not INVITE.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Message,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Refer,
    /// Any other `token`.
    Extension(String),
}

impl Method {
    /// Parses a method token.
    pub fn parse(s: &str) -> Result<Method, String> {
        if !is_token(s) {
            return Err(match s.bytes().find(|b| !is_token_byte(*b)) {
                Some(b) => format!("method contains {}", describe(b)),
                None => "empty method".into(),
            });
        }
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "MESSAGE" => Method::Message,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            other => Method::Extension(other.to_string()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Message => "MESSAGE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Extension(s) => s,
        }
    }

    /// rsip's method, `None` for methods rsip does not know.
    pub fn to_rsip(&self) -> Option<rsip::Method> {
        Some(match self {
            Method::Invite => rsip::Method::Invite,
            Method::Ack => rsip::Method::Ack,
            Method::Bye => rsip::Method::Bye,
            Method::Cancel => rsip::Method::Cancel,
            Method::Options => rsip::Method::Options,
            Method::Register => rsip::Method::Register,
            Method::Info => rsip::Method::Info,
            Method::Update => rsip::Method::Update,
            Method::Message => rsip::Method::Message,
            Method::Prack => rsip::Method::PRack,
            Method::Subscribe => rsip::Method::Subscribe,
            Method::Notify => rsip::Method::Notify,
            Method::Publish => rsip::Method::Publish,
            Method::Refer => rsip::Method::Refer,
            Method::Extension(_) => return None,
        })
    }
}

impl From<rsip::Method> for Method {
    fn from(m: rsip::Method) -> Self {
        match m {
            rsip::Method::Ack => Method::Ack,
            rsip::Method::Bye => Method::Bye,
            rsip::Method::Cancel => Method::Cancel,
            rsip::Method::Info => Method::Info,
            rsip::Method::Invite => Method::Invite,
            rsip::Method::Message => Method::Message,
            rsip::Method::Notify => Method::Notify,
            rsip::Method::Options => Method::Options,
            rsip::Method::PRack => Method::Prack,
            rsip::Method::Publish => Method::Publish,
            rsip::Method::Refer => Method::Refer,
            rsip::Method::Register => Method::Register,
            rsip::Method::Subscribe => Method::Subscribe,
            rsip::Method::Update => Method::Update,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert_eq!(Method::parse("INVITE").unwrap(), Method::Invite);
        assert_eq!(
            Method::parse("invite").unwrap(),
            Method::Extension("invite".into())
        );
        assert!(Method::parse("IN VITE").is_err());
        assert!(Method::parse("").is_err());
        assert_eq!(Method::Prack.to_rsip(), Some(rsip::Method::PRack));
        assert_eq!(Method::from(rsip::Method::Update), Method::Update);
        assert_eq!(Method::Extension("FOO".into()).to_rsip(), None);
    }
}
