//! sip-ka: the daemon and CLI around the XDP keep-alive responder.

pub mod attach;
pub mod cli;
pub mod clock;
pub mod config_keys;
pub mod ebpf;
pub mod edge;
pub mod harness;
pub mod lab;
pub mod pins;
pub mod responder;
pub mod session_timer;
pub mod sip;
pub mod stats;
pub mod stun_server;
pub mod timers;
