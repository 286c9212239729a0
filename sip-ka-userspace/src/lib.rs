//! sip-ka: the daemon and CLI around the XDP keep-alive responder.
//!
//! One folder per layer:
//! * [`bpf`]: the BPF control plane (load, attach, pins, STATS, config
//!   keys, BPF_PROG_TEST_RUN);
//! * [`responder`]: the userspace UDP keep-alive responder (CRLF, STUN);
//! * [`sip`]: SIP messages (parsing, typed headers, errors, framing);
//! * [`edge`]: the edge proxy in front of the PBX;
//! * [`shield`]: evidence against abusive sources and the bans that
//!   drop them at XDP;
//! * [`util`]: the clock and the timer wheel;
//! * [`metrics`]: the Prometheus endpoint;
//! * [`lab`]: network-namespace labs for tests, the demo and the bench;
//! * [`cli`]: the `sip-ka` command line (clap lives here only).

pub mod bpf;
pub mod cli;
pub mod edge;
pub mod lab;
pub mod logs;
pub mod metrics;
pub mod responder;
pub mod shield;
pub mod sip;
pub mod util;
