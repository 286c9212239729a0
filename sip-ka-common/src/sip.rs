//! SIP request methods as the fast path knows them (the 14 methods of the
//! common method list, plus "other").

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Invite = 0,
    Ack = 1,
    Bye = 2,
    Cancel = 3,
    Options = 4,
    Register = 5,
    Prack = 6,
    Subscribe = 7,
    Notify = 8,
    Publish = 9,
    Info = 10,
    Refer = 11,
    Message = 12,
    Update = 13,
    Other = 14,
}

pub const METHOD_COUNT: usize = 15;

/// Method tokens, indexed by `Method as usize` (the last one, "OTHER", is a
/// label for everything else and is never matched).
pub const METHOD_NAMES: [&str; METHOD_COUNT] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "OTHER",
];

impl Method {
    pub const ALL: [Method; METHOD_COUNT] = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Register,
        Method::Prack,
        Method::Subscribe,
        Method::Notify,
        Method::Publish,
        Method::Info,
        Method::Refer,
        Method::Message,
        Method::Update,
        Method::Other,
    ];

    /// The method with this index (`Method as u32`); out of range: other.
    pub const fn from_index(index: u32) -> Method {
        match index {
            0 => Method::Invite,
            1 => Method::Ack,
            2 => Method::Bye,
            3 => Method::Cancel,
            4 => Method::Options,
            5 => Method::Register,
            6 => Method::Prack,
            7 => Method::Subscribe,
            8 => Method::Notify,
            9 => Method::Publish,
            10 => Method::Info,
            11 => Method::Refer,
            12 => Method::Message,
            13 => Method::Update,
            _ => Method::Other,
        }
    }

    /// Methods that, inside a dialog and without a body, are session
    /// keep-alives (UPDATE, INFO and MESSAGE without SDP; OPTIONS).
    pub const fn is_session_keepalive(self) -> bool {
        matches!(
            self,
            Method::Update | Method::Info | Method::Message | Method::Options
        )
    }

    pub const fn name(self) -> &'static str {
        METHOD_NAMES[self as usize]
    }

    /// The method a request line starts with (case-sensitive, as RFC 3261
    /// says methods are).
    pub fn from_token(token: &[u8]) -> Method {
        let mut i = 0;
        while i < METHOD_COUNT - 1 {
            if METHOD_NAMES[i].as_bytes() == token {
                return Method::ALL[i];
            }
            i += 1;
        }
        Method::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips() {
        for m in Method::ALL {
            assert_eq!(Method::from_index(m as u32), m);
        }
        assert_eq!(Method::from_index(99), Method::Other);
    }
}
