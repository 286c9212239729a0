//! What the parser accepts ([`Limits`]) and how a message's bytes were
//! delimited ([`Framing`]).

/// Bounds on what is accepted from the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header section and body together, in bytes.
    pub max_message_size: usize,
    /// Most header fields (folded lines count once).
    pub max_headers: usize,
}

impl Default for Limits {
    /// 65535 bytes (the largest UDP payload) and 128 header fields.
    fn default() -> Self {
        Limits {
            max_message_size: 65_535,
            max_headers: 128,
        }
    }
}

/// Where the bytes of a message came from; decides how the body is
/// delimited (RFC 3261 18.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: Content-Length optional, extra bytes ignored.
    Datagram,
    /// One message from [`crate::sip::framer::StreamFramer`]: Content-Length
    /// required.
    Stream,
}
