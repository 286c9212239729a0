//! Edge state shared through Redis (`--state-store redis://HOST:PORT/DB`),
//! so that two or more edges in front of one PBX (an HA pair behind a
//! virtual IP, or several active edges) carry each other's calls.
//!
//! What is shared: every dialog the table tracks (the same record the
//! local journal writes), the registration bindings, and the flow-token
//! key, so that a Path or Record-Route token one edge issued decodes on
//! another; and the shield's bans, so that a source banned on one edge
//! is dropped by every edge's XDP ([`bans`]). Each dialog has one owner, the edge that handles its traffic:
//! only the owner runs its session timer and idle limit, reaps it and
//! writes it. The others keep a replica (and its DIALOGS map entry, so
//! their XDP program counts its keep-alives the moment traffic moves to
//! them). Ownership moves when the dialog's traffic reaches another edge,
//! or when the owner's lease lapses: a surviving edge then claims the
//! dialog with a compare-and-set, so exactly one edge takes it over and
//! its timers fire once.
//!
//! Key layout (every key has a TTL):
//!
//! * `sipka:dlg:<Call-ID>`: a hash, `owner` (node id) and `rec` (the
//!   dialog's JSON record). TTL: unconfirmed [`UNCONFIRMED_TTL_MS`];
//!   confirmed with a session timer, until its expiry plus [`GRACE_MS`];
//!   confirmed without one, [`UNTIMED_TTL_MS`] (the owner rewrites what it
//!   owns every [`RESYNC_EVERY_MS`]). Deleted at the dialog's end.
//! * `sipka:reg:<contact>`: a binding (flow and absolute expiry), TTL its
//!   expiry plus [`GRACE_MS`].
//! * `sipka:node:<node-id>`: the node's lease, [`LEASE_MS`], renewed every
//!   [`RENEW_MS`].
//! * `sipka:flowkey`: the flow-token key (hex), [`FLOW_KEY_TTL_MS`],
//!   renewed with the lease.
//! * `sipka:ban:<prefix>` (`198.18.0.2`, `2001:db8:1:2::/64`): a ban in
//!   force, its [`BanRecord`] as JSON, TTL its remaining time; a ban
//!   without end (by hand, no `--for`) [`FOREVER_BAN_TTL_MS`], renewed
//!   at every re-publish. A ban lifted by hand leaves a tombstone,
//!   `lifted:<unix s>`, for what the ban had left (at least
//!   [`GRACE_MS`]), so that no edge that missed the lift puts it back.
//!   See [`bans`].
//! * Channel `sipka:events`: one JSON [`Event`] per change.
//!
//! SIP handling never waits on Redis: changes go into a bounded queue
//! ([`QUEUE_LEN`]) that one task writes out; a full queue drops the
//! change (counted) and marks the store for a full re-publish. While
//! Redis is unreachable the edge runs on its own table (and journal);
//! when it is back, the edge re-publishes every dialog and binding it
//! owns.

pub mod bans;
pub mod lease;
#[cfg(test)]
mod redis_tests;
pub mod start;
pub mod sync;
pub mod watch;

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Mutex,
};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    persist::{DialogRecord, FlowRecord},
    transport::Flow,
};
use crate::shield::Prefix;

/// The connection the writer holds, for the other tasks (`None` while
/// Redis is unreachable).
pub type Shared = tokio::sync::watch::Receiver<Option<redis::aio::MultiplexedConnection>>;

/// Time a key outlives what it stands for: a BYE's transaction (64*T1).
pub const GRACE_MS: u64 = 32_000;
/// TTL of a dialog not yet confirmed: the sweep drops it locally after
/// `dialog::EARLY_LIMIT` (five minutes; a test holds the two together).
pub const UNCONFIRMED_TTL_MS: u64 = 300_000 + GRACE_MS;
/// TTL of a confirmed dialog without a session timer.
pub const UNTIMED_TTL_MS: u64 = 2 * 3_600_000;
/// How often the owner rewrites everything it owns (renewing the TTLs of
/// long calls without a session timer).
pub const RESYNC_EVERY_MS: u64 = 3_600_000;
/// A node is dead once its lease key is gone: long enough that a renewal
/// waiting out one response timeout (2 s) after a tick (1 s) still lands.
pub const LEASE_MS: u64 = 5_000;
pub const RENEW_MS: u64 = 1_000;
/// The flow-token key lives as long as the longest binding (a day) that
/// may carry a token, and more.
pub const FLOW_KEY_TTL_MS: u64 = 7 * 86_400_000;
/// Changes waiting for Redis, at most.
pub const QUEUE_LEN: usize = 65_536;

/// The events channel, with the store's database number appended
/// (`sipka:events:0`): pub/sub spans every database of a server.
pub const EVENTS: &str = "sipka:events";
pub const FLOW_KEY: &str = "sipka:flowkey";
pub const DIALOG_PREFIX: &str = "sipka:dlg:";
pub const BINDING_PREFIX: &str = "sipka:reg:";
pub const NODE_PREFIX: &str = "sipka:node:";
pub const BAN_PREFIX: &str = "sipka:ban:";
/// TTL of a shared ban without end: every key has a TTL (a store no edge
/// writes to any more empties itself), and the edges holding the ban
/// renew it at every re-publish (at least every [`RESYNC_EVERY_MS`]).
/// The ban itself holds on each edge (its pinned map) until lifted.
pub const FOREVER_BAN_TTL_MS: u64 = 7 * 86_400_000;
/// A lifted ban's key holds this, then `:<unix s>` of the lift.
pub const LIFTED: &str = "lifted";

pub fn dialog_key(call_id: &str) -> String {
    format!("{DIALOG_PREFIX}{call_id}")
}

pub fn binding_key(contact: &str) -> String {
    format!("{BINDING_PREFIX}{contact}")
}

pub fn node_key(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

pub fn ban_key(prefix: &Prefix) -> String {
    format!("{BAN_PREFIX}{prefix}")
}

/// `--state-store` and `--node-id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `redis://HOST:PORT/DB` (or `rediss://`, `redis+unix://`).
    pub url: String,
    pub node_id: String,
}

impl StoreConfig {
    /// Checks the URL's scheme and the node id (it goes into keys and
    /// into events built by the store's scripts, so it is kept to a
    /// plain token).
    pub fn new(url: &str, node_id: &str) -> Result<StoreConfig> {
        if !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://"))
        {
            bail!("--state-store {url:?}: want redis://HOST:PORT/DB");
        }
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            bail!(
                "--node-id {node_id:?}: want 1 to 64 letters, digits, '.', '_' or '-' \
                 (unique per edge)"
            );
        }
        Ok(StoreConfig {
            url: url.to_string(),
            node_id: node_id.to_string(),
        })
    }
}

/// The default node id: the host name.
pub fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if rc != 0 || name.is_empty() {
        "sip-ka".to_string()
    } else {
        name
    }
}

/// A binding's change: its Contact, and its flow and expiry (`None`:
/// removed).
pub type BindingChange = (String, Option<(Option<Flow>, u64)>);

/// A binding as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// `None`: two sources registered the Contact (nobody is reached).
    pub flow: Option<FlowRecord>,
    /// On the edges' clock (unix ms).
    pub expires_at_ms: u64,
}

/// A shared ban as stored (and announced, with the prefix and the time
/// it has left).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The edge that decided it (or took it in by hand).
    pub node: String,
    /// `scanner`, `auth`, `refused`, `flood`, `manual`.
    pub reason: String,
    #[serde(default)]
    pub evidence: u32,
    #[serde(default)]
    pub strikes: u32,
    #[serde(default)]
    pub since_unix: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// No end: the key's TTL is [`FOREVER_BAN_TTL_MS`], not the ban's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forever: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One change for the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The dialog's state, or its end (`None`). `take`: this edge takes
    /// the dialog over (its traffic arrived here), whoever owned it.
    Dialog {
        call_id: String,
        rec: Option<Box<DialogRecord>>,
        take: bool,
    },
    Binding {
        contact: String,
        binding: Option<BindingRecord>,
    },
    /// A ban of this edge's for the others, in force until `until_ms`
    /// (the edge's clock; `shield::FOREVER`: no end).
    Ban {
        prefix: Prefix,
        until_ms: u64,
        rec: Box<BanRecord>,
    },
    /// The ban on `prefix` lifted by hand here at `at_unix` (s).
    Lift { prefix: Prefix, at_unix: u64 },
}

/// What one edge tells the others on [`EVENTS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Event {
    /// `node` owns the dialog, in this state ([`pack`]ed); `take`: it
    /// took the dialog over (its traffic went there, or it claimed it),
    /// so an edge that held it lets it go. Without `take` an edge that
    /// holds the dialog itself keeps it (a late write of the old owner).
    #[serde(rename = "up")]
    Dialog {
        node: String,
        #[serde(default)]
        take: bool,
        call_id: String,
        rec: Box<DialogRecord>,
    },
    /// The dialog ended at `node`.
    #[serde(rename = "rm")]
    Removed { node: String, call_id: String },
    /// A binding learnt (or removed: `binding` absent) at `node`.
    #[serde(rename = "reg")]
    Binding {
        node: String,
        contact: String,
        #[serde(default)]
        binding: Option<BindingRecord>,
    },
    /// A ban in force on `prefix` for `ms` more (0 with `forever`).
    #[serde(rename = "ban")]
    Ban {
        prefix: String,
        ms: u64,
        #[serde(flatten)]
        rec: BanRecord,
    },
    /// The ban on `prefix` lifted by hand at `node`, at `at` (unix s).
    #[serde(rename = "unban")]
    Unban {
        node: String,
        prefix: String,
        #[serde(default)]
        at: u64,
    },
}

impl Event {
    pub fn node(&self) -> &str {
        match self {
            Event::Dialog { node, .. }
            | Event::Removed { node, .. }
            | Event::Binding { node, .. }
            | Event::Unban { node, .. } => node,
            Event::Ban { rec, .. } => &rec.node,
        }
    }
}

/// A dialog's record as the store keeps it: without what the key or the
/// record itself already says (the Call-ID; a fork's To and Contact when
/// they are the callee's), a fifth smaller. [`unpack`] puts them back.
pub fn pack(rec: &DialogRecord) -> DialogRecord {
    let mut r = rec.clone();
    r.call_id.clear();
    for f in &mut r.forks {
        if r.callee_to.as_ref() == Some(&f.to) {
            f.to.clear();
        }
        if f.contact.is_some() && f.contact == r.callee_contact {
            f.contact = None;
        }
    }
    r
}

/// The record of dialog `call_id` from its [`pack`]ed form.
pub fn unpack(call_id: &str, mut r: DialogRecord) -> DialogRecord {
    call_id.clone_into(&mut r.call_id);
    for f in &mut r.forks {
        if f.to.is_empty() {
            f.to = r.callee_to.clone().unwrap_or_default();
        }
        if f.contact.is_none() {
            f.contact = r.callee_contact.clone();
        }
    }
    r
}

/// [`unpack`] from the stored JSON; a record no edge could have written
/// (more forks than the table keeps) is refused.
pub fn unpack_json(call_id: &str, json: &str) -> Result<DialogRecord> {
    let rec: DialogRecord = serde_json::from_str(json)?;
    if rec.forks.len() > MAX_FORKS {
        bail!("{} forks (at most {MAX_FORKS})", rec.forks.len());
    }
    Ok(unpack(call_id, rec))
}

/// How long the store keeps a dialog in this state, from `now_ms`
/// (never more than [`MAX_TTL_MS`], whatever a record says).
pub fn dialog_ttl_ms(rec: &DialogRecord, now_ms: u64) -> u64 {
    if rec.phase != "confirmed" && rec.phase != "terminating" {
        return UNCONFIRMED_TTL_MS;
    }
    match rec.session.as_ref().and_then(|s| s.expires_at_ms) {
        Some(at) => (at.saturating_sub(now_ms) + GRACE_MS).min(MAX_TTL_MS),
        None => UNTIMED_TTL_MS,
    }
}

/// Longest TTL of any key: a day and a bit (the longest session and
/// binding the edge keeps is a day).
pub const MAX_TTL_MS: u64 = 86_400_000 + GRACE_MS;

/// Forks a stored dialog may carry (the table keeps at most this many).
pub const MAX_FORKS: usize = 16;

/// The database number of a `redis://HOST:PORT/DB` URL (0 without one).
fn db_of(url: &str) -> u32 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.rsplit_once('/')
        .and_then(|(_, db)| db.parse().ok())
        .unwrap_or(0)
}

/// The store's counters (copied into the edge's when read).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Changes handed to the queue (before coalescing).
    pub queued: AtomicU64,
    /// Changes written (dialogs and bindings, one per key).
    pub writes: AtomicU64,
    /// Changes not written: Redis unreachable or refused them.
    pub write_failures: AtomicU64,
    /// Changes dropped because the queue was full.
    pub queue_dropped: AtomicU64,
    /// Connections to Redis lost (and made again).
    pub disconnects: AtomicU64,
    /// Dialogs this edge took over (their traffic came here, or their
    /// owner's lease lapsed).
    pub claimed: AtomicU64,
    /// Dialogs another edge took over from this one.
    pub released: AtomicU64,
    /// Changes of other edges' dialogs applied here.
    pub replicated: AtomicU64,
    /// Bans (and lifts) of other edges put in force here.
    pub bans_applied: AtomicU64,
}

/// The edge's handle on the store: the queue to the writer, and what the
/// store's tasks report.
#[derive(Debug)]
pub struct Store {
    pub cfg: StoreConfig,
    channel: String,
    /// This process: the value of its lease (another process with the
    /// same node id holds a different one).
    run_id: String,
    /// The shared flow-token key, hex, once known (put back into a store
    /// that lost it).
    flow_key: std::sync::OnceLock<String>,
    tx: mpsc::Sender<Write>,
    rx: Mutex<Option<mpsc::Receiver<Write>>>,
    up: AtomicBool,
    /// Set when a change could not be written: everything this edge owns
    /// is re-published at the next connection.
    stale: AtomicBool,
    /// Lifts by hand the other edges must hear of: when (unix s), and
    /// whether the store has the tombstone yet ([`bans`]).
    lifts: Mutex<std::collections::HashMap<Prefix, (u64, bool)>>,
    pub stats: StoreStats,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        Store {
            channel: format!("{EVENTS}:{}", db_of(&cfg.url)),
            run_id: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            flow_key: std::sync::OnceLock::new(),
            cfg,
            tx,
            rx: Mutex::new(Some(rx)),
            up: AtomicBool::new(false),
            stale: AtomicBool::new(true),
            lifts: Mutex::default(),
            stats: StoreStats::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.cfg.node_id
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn set_flow_key(&self, key: &[u8]) {
        let _ = self
            .flow_key
            .set(key.iter().map(|b| format!("{b:02x}")).collect());
    }

    pub fn flow_key_hex(&self) -> Option<&str> {
        self.flow_key.get().map(String::as_str)
    }

    /// The events channel of this store's database.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Queues a change; never waits.
    pub fn send(&self, w: Write) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(w).is_err() {
            self.stats.queue_dropped.fetch_add(1, Ordering::Relaxed);
            self.stale.store(true, Ordering::Relaxed);
        }
    }

    /// Queues the bindings a REGISTER's answer changed.
    pub fn send_bindings(&self, changes: Vec<BindingChange>) {
        for (contact, b) in changes {
            self.send(Write::Binding {
                contact,
                binding: b.map(|(flow, expires_at_ms)| BindingRecord {
                    flow: flow.as_ref().map(FlowRecord::of),
                    expires_at_ms,
                }),
            });
        }
    }

    /// The writer's end of the queue (once).
    pub fn take_queue(&self) -> Option<mpsc::Receiver<Write>> {
        crate::util::lock::lock(&self.rx).take()
    }

    /// Changes waiting in the queue.
    pub fn backlog(&self) -> usize {
        QUEUE_LEN - self.tx.capacity()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Whether a change was lost since the last re-publish (clears it).
    pub fn take_stale(&self) -> bool {
        self.stale.swap(false, Ordering::AcqRel)
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Every key beginning with `prefix` (SCAN, a page at a time), at most
/// `max` of them.
pub async fn scan_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    max: usize,
) -> Result<Vec<String>> {
    let mut cursor: u64 = 0;
    let mut all = Vec::new();
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        all.extend(page);
        if next == 0 || all.len() >= max {
            all.truncate(max);
            return Ok(all);
        }
        cursor = next;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::edge::persist::SessionRecord;

    fn rec(phase: &str, expires_at_ms: Option<u64>) -> DialogRecord {
        DialogRecord {
            call_id: "c1@198.18.0.2".into(),
            phase: phase.into(),
            ua: FlowRecord::Udp {
                addr: "198.18.0.2:5062".parse().unwrap(),
            },
            created_unix: 1_700_000_000,
            since_ms: 1_700_000_000_000,
            caller_is_ua: true,
            caller_from: "<sip:a@x>;tag=1".into(),
            callee_to: None,
            caller_contact: None,
            callee_contact: None,
            cseq: 1,
            session: expires_at_ms.map(|at| SessionRecord {
                interval: 90,
                refresher: Some("uac".into()),
                expires_at_ms: Some(at),
            }),
            forks: Vec::new(),
        }
    }

    #[test]
    fn every_dialog_key_gets_a_ttl_from_its_phase_and_timer() {
        let now = 1_700_000_000_000;
        assert_eq!(dialog_ttl_ms(&rec("early", None), now), UNCONFIRMED_TTL_MS);
        assert_eq!(
            dialog_ttl_ms(&rec("pending", None), now),
            UNCONFIRMED_TTL_MS
        );
        assert_eq!(dialog_ttl_ms(&rec("confirmed", None), now), UNTIMED_TTL_MS);
        assert_eq!(
            dialog_ttl_ms(&rec("confirmed", Some(now + 90_000)), now),
            90_000 + GRACE_MS
        );
        // Already past (an owner that was away): the grace still applies.
        assert_eq!(
            dialog_ttl_ms(&rec("confirmed", Some(now - 5_000)), now),
            GRACE_MS
        );
        // A record from far in the future still gets a bounded TTL.
        assert_eq!(
            dialog_ttl_ms(&rec("confirmed", Some(u64::MAX)), now),
            MAX_TTL_MS
        );
    }

    #[test]
    fn a_packed_record_is_smaller_and_unpacks_to_itself() {
        let mut r = rec("confirmed", Some(5));
        r.callee_to = Some("<sip:b@y>;tag=2".into());
        r.callee_contact = Some("sip:b@192.0.2.10".into());
        r.forks = vec![
            crate::edge::persist::Fork {
                tag: "2".into(),
                to: "<sip:b@y>;tag=2".into(),
                contact: Some("sip:b@192.0.2.10".into()),
            },
            crate::edge::persist::Fork {
                tag: "3".into(),
                to: "<sip:b@y>;tag=3".into(),
                contact: Some("sip:b@192.0.2.11".into()),
            },
        ];
        let packed = serde_json::to_string(&pack(&r)).unwrap();
        let whole = serde_json::to_string(&r).unwrap();
        assert!(
            !packed.contains("c1@198.18.0.2") && !packed.contains("\"to\":\"<sip:b@y>;tag=2\"")
        );
        assert!(packed.len() + 40 < whole.len(), "{packed}");
        assert_eq!(unpack_json(&r.call_id, &packed).unwrap(), r);
    }

    #[test]
    fn events_round_trip_and_name_their_node() {
        let e = Event::Dialog {
            node: "a".into(),
            take: false,
            call_id: "x".into(),
            rec: Box::new(pack(&rec("confirmed", Some(5)))),
        };
        let s = serde_json::to_string(&e).unwrap();
        assert!(
            s.starts_with(r#"{"op":"up","node":"a","take":false,"call_id":"x","rec":"#),
            "{s}"
        );
        // What the claim script publishes.
        let claimed = r#"{"op":"up","take":true,"node":"b","call_id":"x","rec":{"phase":"early","ua":{"t":"udp","addr":"192.0.2.1:5060"},"created_unix":1,"since_ms":1,"caller_is_ua":true,"caller_from":"f","cseq":1}}"#;
        assert!(matches!(
            serde_json::from_str::<Event>(claimed).unwrap(),
            Event::Dialog { take: true, .. }
        ));
        assert_eq!(serde_json::from_str::<Event>(&s).unwrap(), e);
        let r: Event = serde_json::from_str(r#"{"op":"rm","node":"b","call_id":"x"}"#).unwrap();
        assert_eq!(r.node(), "b");
        let b: Event =
            serde_json::from_str(r#"{"op":"reg","node":"b","contact":"u@h:5060"}"#).unwrap();
        assert!(matches!(b, Event::Binding { binding: None, .. }));
        assert!(serde_json::from_str::<Event>(r#"{"op":"zz","node":"b"}"#).is_err());
    }

    #[test]
    fn each_database_has_its_own_events_channel() {
        assert_eq!(db_of("redis://10.0.0.5:6379/3"), 3);
        assert_eq!(db_of("redis://10.0.0.5:6379"), 0);
        assert_eq!(db_of("redis://:pw@10.0.0.5/2?protocol=resp3"), 2);
        let s = Store::new(StoreConfig::new("redis://h:1/5", "a").unwrap());
        assert_eq!(s.channel(), "sipka:events:5");
    }

    #[test]
    fn node_ids_and_urls_are_checked() {
        assert!(StoreConfig::new("redis://127.0.0.1:6379/0", "edge-a").is_ok());
        assert!(StoreConfig::new("http://x", "a").is_err());
        assert!(StoreConfig::new("redis://x", "").is_err());
        assert!(StoreConfig::new("redis://x", "a\"b").is_err());
        assert!(StoreConfig::new("redis://x", &"a".repeat(65)).is_err());
        let d = default_node_id();
        assert!(StoreConfig::new("redis://x", &d).is_ok(), "{d}");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let s = Store::new(StoreConfig::new("redis://x", "a").unwrap());
        let _rx = s.take_queue().unwrap();
        assert!(
            s.take_stale(),
            "a new store re-publishes at its first connection"
        );
        for i in 0..QUEUE_LEN + 3 {
            s.send(Write::Binding {
                contact: format!("u{i}"),
                binding: None,
            });
        }
        assert_eq!(s.stats.queue_dropped.load(Ordering::Relaxed), 3);
        assert!(s.take_stale());
    }
}
