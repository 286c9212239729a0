//! What a row of the comparison is and measured: the server and the
//! load, the counts and CPU times around the load, and the rounds pooled.

use std::time::Instant;

use anyhow::Result;

use crate::cpu::{machine_busy, tasks_cpu};

/// `v / base` as "1.23x", or "n/a".
pub(super) fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "n/a".into(),
    }
}

/// Nanoseconds, or "n/a".
pub(super) fn ns(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}"))
}

/// The server of a comparison row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Peer {
    SipKa,
    Kamailio,
    /// sip-ka's userspace responder, `--xdp off` (STUN rows).
    SipKaUser,
    /// coturn's turnserver, STUN only (STUN rows).
    Coturn,
    /// sip-ka's XDP program answering STUN itself (the sweep).
    SipKaXdp,
}

impl Peer {
    pub(super) fn name(self) -> &'static str {
        match self {
            Peer::SipKa => "sip-ka edge (XDP native)",
            Peer::Kamailio => "Kamailio",
            Peer::SipKaUser => "sip-ka userspace (--xdp off)",
            Peer::Coturn => "coturn turnserver",
            Peer::SipKaXdp => "sip-ka XDP (native)",
        }
    }
}

/// The load of a comparison row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Load {
    Options,
    TcpCrlf,
    /// Fixed-rate STUN Binding requests over UDP.
    Stun,
}

impl Load {
    pub(super) fn name(self) -> &'static str {
        match self {
            Load::Options => "OPTIONS/UDP",
            Load::TcpCrlf => "CRLF/TCP",
            Load::Stun => "STUN/UDP",
        }
    }
}

/// What one load against one server measured.
#[derive(Debug, Default, Clone)]
pub(super) struct Measure {
    pub(super) sent: u64,
    pub(super) answered: u64,
    pub(super) bad: u64,
    /// Seconds over which the answers arrived.
    pub(super) elapsed: f64,
    /// Wall time of the whole row, waiting for losses included.
    pub(super) wall: f64,
    /// CPU time of the load generator (sipp and its wrappers, or the
    /// generator thread).
    pub(super) gen_cpu: f64,
    /// Busy CPU time of the whole machine (/proc/stat).
    pub(super) busy_cpu: f64,
    /// The server's processes and the server veth's NAPI thread (None when
    /// that thread was not found).
    pub(super) server_cpu: Option<f64>,
    /// The server's processes alone.
    pub(super) proc_cpu: f64,
    /// How many processes the server had (Kamailio forks its workers).
    pub(super) procs: usize,
    pub(super) client_napi_cpu: Option<f64>,
}

impl Measure {
    pub(super) fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.max(1e-9)
    }

    fn per_answer(&self, cpu: f64) -> f64 {
        cpu * 1e9 / self.answered.max(1) as f64
    }

    pub(super) fn server_per_answer(&self) -> Option<f64> {
        self.server_cpu.map(|c| self.per_answer(c))
    }

    pub(super) fn machine_per_answer(&self) -> f64 {
        self.per_answer((self.busy_cpu - self.gen_cpu).max(0.0))
    }

    /// Pools another round into this one: counts, times and CPU add up, so
    /// rates and CPU per answer are over all rounds together.
    fn add(&mut self, o: &Measure) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.bad += o.bad;
        self.elapsed += o.elapsed;
        self.wall += o.wall;
        self.gen_cpu += o.gen_cpu;
        self.busy_cpu += o.busy_cpu;
        self.proc_cpu += o.proc_cpu;
        self.procs = self.procs.max(o.procs);
        self.server_cpu = self.server_cpu.zip(o.server_cpu).map(|(a, b)| a + b);
        self.client_napi_cpu = self
            .client_napi_cpu
            .zip(o.client_napi_cpu)
            .map(|(a, b)| a + b);
    }
}

/// A row's outcome: figures, or why there are none.
pub(super) enum Outcome {
    Measured(Measure),
    NotAvailable(String),
}

/// One server under one load, in one round or the rounds pooled.
pub(super) struct Row {
    /// 1-based; 0 for the rounds pooled.
    pub(super) round: u32,
    pub(super) peer: Peer,
    pub(super) load: Load,
    pub(super) outcome: Outcome,
}

/// One row per server and load, the rounds pooled; a load a server could
/// not take in some round has no figures.
pub(super) fn pool<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        let Some(p) = out
            .iter_mut()
            .find(|p| p.peer == r.peer && p.load == r.load)
        else {
            out.push(Row {
                round: 0,
                peer: r.peer,
                load: r.load,
                outcome: match &r.outcome {
                    Outcome::Measured(m) => Outcome::Measured(m.clone()),
                    Outcome::NotAvailable(why) => Outcome::NotAvailable(why.clone()),
                },
            });
            continue;
        };
        match (&mut p.outcome, &r.outcome) {
            (Outcome::Measured(a), Outcome::Measured(b)) => a.add(b),
            (Outcome::NotAvailable(_), _) => {}
            (Outcome::Measured(_), Outcome::NotAvailable(why)) => {
                p.outcome = Outcome::NotAvailable(format!("round {}: {why}", r.round));
            }
        }
    }
    out.sort_by_key(|r| (r.peer != Peer::SipKa, r.load != Load::Options));
    out
}

/// CPU counters read before a load and again after it.
pub(super) struct Meter {
    /// The server's processes (all their threads).
    procs: Vec<u32>,
    server_napi: Option<Vec<u32>>,
    client_napi: Option<Vec<u32>>,
    procs0: f64,
    server_napi0: Option<f64>,
    client_napi0: Option<f64>,
    busy0: f64,
    start: Instant,
}

impl Meter {
    pub(super) fn start(
        procs: Vec<u32>,
        server_napi: Option<Vec<u32>>,
        client_napi: Option<Vec<u32>>,
    ) -> Result<Meter> {
        Ok(Meter {
            procs0: tasks_cpu(&procs),
            server_napi0: server_napi.as_deref().map(tasks_cpu),
            client_napi0: client_napi.as_deref().map(tasks_cpu),
            busy0: machine_busy()?,
            start: Instant::now(),
            procs,
            server_napi,
            client_napi,
        })
    }

    /// Fills the CPU fields and the wall time of `m`.
    pub(super) fn stop(self, m: &mut Measure) -> Result<()> {
        m.wall = self.start.elapsed().as_secs_f64();
        m.busy_cpu = machine_busy()? - self.busy0;
        m.proc_cpu = tasks_cpu(&self.procs) - self.procs0;
        m.procs = self.procs.len();
        m.server_cpu = self
            .server_napi
            .as_deref()
            .zip(self.server_napi0)
            .map(|(t, c0)| m.proc_cpu + tasks_cpu(t) - c0);
        m.client_napi_cpu = self
            .client_napi
            .as_deref()
            .zip(self.client_napi0)
            .map(|(t, c0)| tasks_cpu(t) - c0);
        Ok(())
    }
}
