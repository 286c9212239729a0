//! Types shared by the XDP program and the daemon: map keys and values,
//! counter indices, the configuration layout and the Call-ID hash.
//!
//! Every type that crosses the kernel/user boundary is `#[repr(C)]` with
//! explicit padding, so both sides agree on its layout byte for byte.
#![no_std]

pub mod callid;
pub mod config;
pub mod counters;
pub mod maps;
pub mod sip;
pub mod stun;

pub use callid::{callid_hash, fnv1a_step, FNV_OFFSET};
pub use config::{Action, Config};
pub use counters::Counter;
