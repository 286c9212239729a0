//! The command line: which parts run, and their sizes.

use clap::Parser;

/// Benchmarks of sip-ka's fast path (run as root).
#[derive(Parser, Debug, Clone)]
#[command(name = "sip-ka-bench")]
pub(crate) struct Opts {
    /// BPF_PROG_TEST_RUN calls (repeat=1 each) per answering path.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) calls: u32,
    /// Repeat count for the paths that leave the packet unchanged.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) repeat: u32,
    /// Requests per lab row, at most.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) count: u64,
    /// Seconds per lab row, at most.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Requests in flight at once in the lab load.
    #[arg(long, default_value_t = 128)]
    pub(crate) window: u32,
    /// Send STUN requests without FINGERPRINT in the lab load.
    #[arg(long)]
    pub(crate) no_fingerprint: bool,
    /// Leave NAPI of the lab's veth pair in softirq context (see the notes).
    #[arg(long)]
    pub(crate) no_threaded_napi: bool,
    /// Only the BPF_PROG_TEST_RUN part.
    #[arg(long)]
    pub(crate) test_run_only: bool,
    /// A configuration key for the BPF_PROG_TEST_RUN part, as `key=value`
    /// (the keys of `sip-ka config get`; repeatable), e.g. to see what
    /// `verify_checksums=off` or `track_peers=off` saves.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Only the lab part.
    #[arg(long)]
    pub(crate) lab_only: bool,
    /// Only the scaling lab: the XDP program on a two-queue veth answering
    /// STUN from two load threads, with everything on one CPU and then
    /// spread over two; answers per second on each and the factor.
    #[arg(long)]
    pub(crate) scaling: bool,
    /// Only the calls-through-the-proxy bench (j): sipp UAC -> proxy ->
    /// sipp UAS, sip-ka's edge and Kamailio as a stateful record-routing
    /// proxy, at each of --call-rates until calls fail; calls completed
    /// and the proxy's CPU per call.
    #[arg(long)]
    pub(crate) proxy_calls: bool,
    /// Offered call rates (calls per second) of the proxy bench, in turn.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250,500,1000,2000,3000,4000"
    )]
    pub(crate) call_rates: Vec<u32>,
    /// Seconds per rate in the proxy bench.
    #[arg(long, default_value_t = 5)]
    pub(crate) call_seconds: u64,
    /// Only the shield bench: the edge's CPU under a 20,000/s INVITE flood
    /// from one source with `--shield off` and on (when the ban falls,
    /// what reaches the PBX), and a banned source's CRLF flood dropped at
    /// XDP beside the same flood answered.
    #[arg(long)]
    pub(crate) shield: bool,
    /// Only the session timer bench (no root needed): memory per dialog
    /// and refreshes per second with 1,000,000 dialogs on one timer wheel.
    #[arg(long)]
    pub(crate) timers: bool,
    /// Only the dialog table bench (no root needed): the edge's dialog
    /// table filled through its INVITE/200 handling, memory per dialog,
    /// refreshes and expiries per second, and the journal's bytes and
    /// write cost with a state directory (100,000 dialogs).
    #[arg(long)]
    pub(crate) dialogs: bool,
    /// Only the shared store bench (needs redis-server, not root): Redis
    /// writes per call set-up and per refresh, bytes per dialog in Redis,
    /// and calls per second through an edge with `--state-store` on and
    /// off.
    #[arg(long)]
    pub(crate) store: bool,
    /// Only the call path bench (no root needed): the edge's CPU per call
    /// (INVITE, 180, 200, ACK, BYE, 200) through `Edge::handle`, without
    /// sockets, with and without a state directory.
    #[arg(long)]
    pub(crate) call_path: bool,
    /// Calls in the call path bench.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) call_count: u64,
    /// Dialogs in the dialog table bench.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) dialog_count: u64,
    /// Only the comparison with Kamailio: sip-ka's edge and Kamailio 5.6
    /// answering the same SIP OPTIONS (sipp) and TCP CRLF loads, and
    /// sip-ka's userspace responder (`--xdp off`), Kamailio's stun module
    /// and coturn answering the same fixed-rate STUN load.
    #[arg(long)]
    pub(crate) kamailio: bool,
    /// OPTIONS per server in the Kamailio comparison (sipp -m).
    #[arg(long, default_value_t = 50_000)]
    pub(crate) options_count: u64,
    /// OPTIONS sipp offers per second (sipp -r).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) options_rate: u32,
    /// OPTIONS in flight at once, at most (sipp -l).
    #[arg(long, default_value_t = 100)]
    pub(crate) options_window: u32,
    /// Rounds of the Kamailio comparison (each runs both servers; the table
    /// pools them).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: u32,
    /// TCP CRLF pings per server in the Kamailio comparison.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) crlf_count: u64,
    /// TCP connections carrying those pings, one ping outstanding on each
    /// (all from one address: above 64 the edge is told to allow them).
    #[arg(long, default_value_t = 32)]
    pub(crate) tcp_conns: u32,
    /// STUN Binding requests per second offered to each STUN server in the
    /// comparison (sip-ka's userspace responder, Kamailio's stun module,
    /// coturn), whatever they answer; 0 leaves the STUN rows out.
    #[arg(long, default_value_t = 250_000)]
    pub(crate) stun_rate: u32,
    /// Seconds of that STUN load per server and round.
    #[arg(long, default_value_t = 4)]
    pub(crate) stun_seconds: u64,
    /// Only the STUN sweep: sip-ka's XDP program, its userspace responder
    /// (`--xdp off`), Kamailio's stun module and coturn, each under the
    /// fixed-rate STUN Binding load at every `--sweep-rates` rate; a table
    /// per responder and the chart (`--chart`).
    #[arg(long)]
    pub(crate) sweep: bool,
    /// Offered rates of the sweep, STUN Binding requests per second (comma
    /// separated); 0 is as fast as the load generator goes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,100000,200000,0"
    )]
    pub(crate) sweep_rates: Vec<u32>,
    /// Seconds of load per responder and rate in the sweep (1 to 60).
    #[arg(long, default_value_t = 3)]
    pub(crate) sweep_seconds: u64,
    /// Where the sweep writes its chart (SVG; relative to the current
    /// directory): answered share and server CPU per answer against the
    /// offered rate, a line per responder.
    #[arg(long, default_value = "docs/src/images/stun-sweep.svg")]
    pub(crate) chart: std::path::PathBuf,
    /// Only the idle-connection part: `--idle-tcp` TCP, `--idle-tls` TLS
    /// and `--idle-wss` secure WebSocket connections held open against
    /// sip-ka's edge and then Kamailio, each pinging every
    /// `--idle-ping-interval`: memory per connection, pong latency; then
    /// the CRLF pong rate over plain WebSocket and the CPU per pong.
    #[arg(long)]
    pub(crate) idle: bool,
    /// Idle TCP connections of that part.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) idle_tcp: u64,
    /// Idle TLS connections of that part.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) idle_tls: u64,
    /// Idle secure WebSocket connections of that part.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) idle_wss: u64,
    /// Seconds over which a round of pings is spread (each connection
    /// open pings once per round; a round after each kind opens).
    #[arg(long, default_value_t = 30)]
    pub(crate) idle_ping_interval: u64,
    /// WebSocket connections of the pong-rate load, each with one CRLF
    /// frame outstanding (`--seconds` long).
    #[arg(long, default_value_t = 32)]
    pub(crate) ws_load_conns: u32,
}
