//! The BPF control plane: the embedded XDP object and how it is loaded,
//! attached and pinned; the STATS counters; the CONFIG keys operators
//! name; BPF_PROG_TEST_RUN for fixtures and the bench.

pub mod attach;
pub mod config_keys;
pub mod iface;
pub mod load;
pub mod pins;
pub mod route;
pub mod stats;
pub mod test_run;
