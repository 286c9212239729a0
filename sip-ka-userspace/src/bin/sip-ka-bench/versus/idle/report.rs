//! The figures of the idle-connection part and their table.

use super::client::{Kind, Round};
use crate::opts::Opts;
use crate::versus::measure::{ratio, Peer};

/// One transport's connections against one server.
pub(super) struct Figures {
    pub(super) kind: Kind,
    pub(super) asked: u64,
    pub(super) open: u64,
    /// Growth of the server's main memory figure (sip-ka: RSS; Kamailio:
    /// shared memory in use) and of its processes' PSS.
    main: u64,
    pss: u64,
}

impl Figures {
    pub(super) fn new(
        kind: Kind,
        asked: u64,
        open: u64,
        before: (u64, u64),
        after: (u64, u64),
    ) -> Self {
        Figures {
            kind,
            asked,
            open,
            main: after.0.saturating_sub(before.0),
            pss: after.1.saturating_sub(before.1),
        }
    }

    /// The memory figures, for the progress lines.
    pub(super) fn describe(&self) -> String {
        format!(
            "{} KB/conn, PSS {} KB/conn",
            kb(self.per_conn(self.main)),
            kb(self.per_conn(self.pss))
        )
    }

    fn per_conn(&self, v: u64) -> Option<f64> {
        (self.open > 0).then(|| v as f64 / self.open as f64)
    }
}

/// Everything measured against one server.
pub(super) struct PeerRun {
    pub(super) peer: Peer,
    pub(super) kinds: Vec<Figures>,
    micros: Vec<(Kind, u64)>,
    lost: u64,
    pub(super) after_pings: (u64, u64),
    /// WS pong load: (pongs, seconds, server CPU seconds), or why not.
    pub(super) ws_load: Result<(u64, f64, f64), String>,
}

impl PeerRun {
    pub(super) fn new(peer: Peer) -> PeerRun {
        PeerRun {
            peer,
            kinds: Vec::new(),
            micros: Vec::new(),
            lost: 0,
            after_pings: (0, 0),
            ws_load: Err("not run".into()),
        }
    }

    pub(super) fn add_round(&mut self, r: Round) {
        self.micros.extend(r.micros);
        self.lost += r.lost;
    }

    /// (p50, p99) pong latency in ms of `kind`'s pongs, with their count.
    fn latency(&self, kind: Kind) -> Option<(f64, f64, usize)> {
        let mut v: Vec<u64> = self
            .micros
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, us)| *us)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        Some((at(0.50), at(0.99), v.len()))
    }

    fn bytes(&self, kind: Kind) -> Option<f64> {
        let f = self.kinds.iter().find(|f| f.kind == kind)?;
        f.per_conn(f.main)
    }
}

fn kb(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |b| format!("{:.1}", b / 1000.0))
}

pub(super) fn print(opts: &Opts, runs: &[PeerRun], sources: usize) {
    let kam = runs.iter().find(|r| r.peer == Peer::Kamailio);
    println!();
    println!(
        "{:<25} {:<5} {:>8} {:>8} | {:>11} {:>7} {:>9} | {:>8} {:>8} {:>7}",
        "server",
        "conn",
        "asked",
        "open",
        "KB/conn",
        "÷ Kam.",
        "PSS KB/c",
        "pong p50",
        "p99 ms",
        "pongs"
    );
    for r in runs {
        for f in &r.kinds {
            let lat = r.latency(f.kind);
            println!(
                "{:<25} {:<5} {:>8} {:>8} | {:>11} {:>7} {:>9} | {:>8} {:>8} {:>7}",
                r.peer.name(),
                f.kind.name(),
                f.asked,
                f.open,
                kb(f.per_conn(f.main)),
                ratio(r.bytes(f.kind), kam.and_then(|k| k.bytes(f.kind))),
                kb(f.per_conn(f.pss)),
                lat.map_or("n/a".into(), |l| format!("{:.2}", l.0)),
                lat.map_or("n/a".into(), |l| format!("{:.2}", l.1)),
                lat.map_or(0, |l| l.2),
            );
        }
        println!(
            "{:<25} pongs lost over the rounds: {}; memory after the pings: {} MB main, {} MB PSS",
            "",
            r.lost,
            r.after_pings.0 / 1_000_000,
            r.after_pings.1 / 1_000_000
        );
    }
    println!();
    println!(
        "{:<25} {:>10} {:>10} {:>12}",
        "server", "WS pongs", "per s", "CPU ns/pong"
    );
    for r in runs {
        match &r.ws_load {
            Ok((pongs, secs, cpu)) => println!(
                "{:<25} {:>10} {:>10.0} {:>12.0}",
                r.peer.name(),
                pongs,
                *pongs as f64 / secs.max(1e-9),
                cpu * 1e9 / (*pongs).max(1) as f64
            ),
            Err(why) => println!("{:<25} n/a: {why}", r.peer.name()),
        }
    }
    println!(
        "notes: one server after the other in the same lab; the client namespace holds every \
         connection from {sources} address(es), opened kind by kind ({window} at a time, each \
         answered one CRLF ping before it counts as open). KB/conn: growth over the opening of \
         that kind, 2 s after the last, of the edge's resident set (/proc/PID/statm) and of \
         Kamailio's shared memory in use (`kamcmd core.shmmem` real_used, where it keeps its \
         connections and OpenSSL's); PSS KB/c: growth of the proportional set size of all the \
         server's processes (Kamailio's private memory as well). Pong latency: a round after \
         each kind opens, one ping on every connection open, spread evenly over {interval} s, from the ping's write \
         to its pong's read (WebSocket: a \\r\\n\\r\\n text frame and its \\r\\n frame). WS \
         pongs: {ws} plain WebSocket connections, each with one CRLF frame outstanding, for {secs} \
         s; CPU = every thread of the server's processes (schedstat).",
        window = 256,
        interval = opts.idle_ping_interval.max(1),
        ws = opts.ws_load_conns.max(1),
        secs = opts.seconds.max(1),
    );
}
