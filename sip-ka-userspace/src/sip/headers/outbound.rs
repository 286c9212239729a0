//! Outbound (RFC 5626): Flow-Timer.

use std::fmt;

use super::cseq::parse_number;
use crate::sip::errors::HeaderError;

/// `Flow-Timer: 1*DIGIT` (RFC 5626): seconds between keep-alives the
/// registrar recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimer(pub u32);

impl FlowTimer {
    pub fn parse(value: &str) -> Result<FlowTimer, HeaderError> {
        parse_number("Flow-Timer", value).map(FlowTimer)
    }
}

impl fmt::Display for FlowTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flow_timer() {
        assert_eq!(FlowTimer::parse(" 120 ").unwrap(), FlowTimer(120));
        assert!(FlowTimer::parse("120;x").is_err());
        assert_eq!(FlowTimer(30).to_string(), "30");
    }
}
