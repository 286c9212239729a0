//! The BPF control plane: the embedded XDP object and how it is loaded,
//! attached and pinned; the counters; the PEERS table with the program's
//! cache; the CONFIG keys operators name; BPF_PROG_TEST_RUN for fixtures
//! and the bench.

pub mod attach;
pub mod bans;
pub mod config_keys;
pub mod iface;
pub mod load;
pub mod peers;
pub mod pins;
pub mod route;
pub mod stats;
pub mod test_run;
