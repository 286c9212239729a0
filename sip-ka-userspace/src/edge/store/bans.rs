//! Bans shared through the store: a ban decided on one edge is in force
//! on every edge within a second, an edge that starts (or comes back)
//! later loads the bans in force, and a ban lifted by hand on one edge is
//! lifted on the others.
//!
//! * Out: the shield's writer announces this edge's bans and lifts by
//!   hand ([`Announce`], implemented by [`Store`], and by [`Announcer`]
//!   for a writer that starts before the edge has its store). They go
//!   through the store's bounded queue like every change: nothing waits
//!   on Redis. A ban is `SET sipka:ban:<prefix> <BanRecord JSON> PX
//!   <remaining>` and published (`{"op":"ban","prefix":..,"ms":..,
//!   "node":..,"reason":..,...}`); a lift leaves a tombstone
//!   (`lifted:<unix s>`, for what the ban had left, at least
//!   [`GRACE_MS`]) and is published (`{"op":"unban","node":..,
//!   "prefix":..,"at":..}`).
//! * In: the other edges' events, and at every connection a full load
//!   (SCAN of `sipka:ban:*`, at most `BANS_MAX` keys). A ban goes into the
//!   shield with `share: false`, so it is never announced back, unless
//!   this edge holds a ban on the prefix that lasts as long (a list's, or
//!   the same ban heard twice) or lifted it by hand since it was decided.
//!   A lift (its event, or a tombstone at the load for a ban decided
//!   before it) lifts what this edge holds, never a list's.
//! * After every connection (Redis was away, or restarted empty, or a
//!   change was dropped), and with the hourly re-publish of dialogs, the
//!   store's writer writes the tombstones of lifts not yet written, then
//!   re-publishes every ban in force here but a list's where the store
//!   lacks its key: a ban lifted elsewhere meanwhile stays lifted (its
//!   tombstone), another edge's record stays theirs, a ban without end
//!   has its TTL renewed.
//!
//! Lists (`--blocklist`) are each edge's own configuration: never shared,
//! and never replaced or lifted by another edge's ban.

use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use redis::{aio::MultiplexedConnection, Pipeline, Script, Value};
use sip_ka_common::maps::{BanReason, BANS_MAX, BAN_NOTE_LEN};

use super::{
    ban_key, BanRecord, Event, Store, Write, BAN_PREFIX, FOREVER_BAN_TTL_MS, GRACE_MS, LIFTED,
};
use crate::{
    shield::{writer::Announce, Ban, Prefix, Shield, FOREVER},
    util::{clock, lock::lock},
};

/// A ban heard again (its event and a load, a re-publish) ends within
/// this of the one held: it is not applied twice.
const SLACK_MS: u64 = 1_000;
/// Lifts by hand remembered at once, at most.
const LIFTS_MAX: usize = 4_096;
/// Keys per pipeline when loading and re-publishing.
const CHUNK: usize = 500;

/// A lift: the tombstone lasts what the ban had left (at least ARGV[3]
/// ms). ARGV: event, channel, least TTL, tombstone.
const LIFT: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t < tonumber(ARGV[3]) then t = ARGV[3] end
redis.call('SET', KEYS[1], ARGV[4], 'PX', t)
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
";

/// A ban put back after a connection, only where the store lacks it or
/// holds the tombstone of a lift older than the ban (ARGV[5], unix s);
/// a ban without end (ARGV[6] "1") held there has its TTL renewed.
/// ARGV: record, TTL (ms), event, channel, since, forever. 1: written.
const REPUBLISH: &str = r#"
local v = redis.call('GET', KEYS[1])
if v then
  local at = string.match(v, '^lifted:(%d+)$')
  if not at then
    if ARGV[6] == '1' and string.find(v, '"forever":true', 1, true) then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
    end
    return 0
  end
  if tonumber(at) >= tonumber(ARGV[5]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
"#;

/// `ban` as the store keeps it, decided (or taken in) at `node`.
pub fn record(ban: &Ban, node: &str) -> BanRecord {
    BanRecord {
        node: node.to_string(),
        reason: ban.reason.name().to_string(),
        evidence: ban.evidence,
        strikes: ban.strikes,
        since_unix: ban.since_unix,
        note: ban.note.clone(),
        forever: ban.until_ms == FOREVER,
    }
}

fn reason_of(name: &str) -> BanReason {
    BanReason::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .unwrap_or(BanReason::Manual)
}

/// The ban `rec` stands for on `prefix`, `ms` left at `now_ms`; `None`
/// when it has ended.
pub fn ban_of(prefix: Prefix, rec: &BanRecord, ms: u64, now_ms: u64) -> Option<Ban> {
    let until_ms = if rec.forever {
        FOREVER
    } else if ms == 0 {
        return None;
    } else {
        now_ms.saturating_add(ms)
    };
    // The map keeps a note of BAN_NOTE_LEN bytes; no more is kept here.
    let mut n = rec.note.len().min(BAN_NOTE_LEN);
    while !rec.note.is_char_boundary(n) {
        n -= 1;
    }
    Some(Ban {
        prefix,
        reason: reason_of(&rec.reason),
        evidence: rec.evidence,
        strikes: rec.strikes,
        since_unix: rec.since_unix,
        until_ms,
        note: rec.note[..n].to_string(),
    })
}

/// TTL of a ban's key and the `ms` of its event, from `now_ms`.
fn ttl_of(rec: &BanRecord, until_ms: u64, now_ms: u64) -> (u64, u64) {
    if rec.forever {
        (FOREVER_BAN_TTL_MS, 0)
    } else {
        let left = until_ms.saturating_sub(now_ms);
        (left, left)
    }
}

fn ban_event(prefix: &Prefix, ms: u64, rec: &BanRecord) -> Result<String> {
    Ok(serde_json::to_string(&Event::Ban {
        prefix: prefix.to_string(),
        ms,
        rec: rec.clone(),
    })?)
}

impl Announce for Store {
    fn ban(&self, ban: &Ban, remaining_ms: u64) {
        if ban.reason == BanReason::List {
            return;
        }
        let until_ms = if remaining_ms == 0 {
            FOREVER
        } else {
            clock::now_ms().saturating_add(remaining_ms)
        };
        lock(&self.lifts).remove(&ban.prefix);
        self.send(Write::Ban {
            prefix: ban.prefix,
            until_ms,
            rec: Box::new(record(ban, self.node())),
        });
    }

    fn lift(&self, prefix: &Prefix) {
        let at_unix = clock::now_ms() / 1000;
        {
            let mut lifts = lock(&self.lifts);
            // Written lifts are kept a grace period (a load reading the
            // store just before the tombstone went in), then forgotten.
            lifts.retain(|_, (at, written)| {
                !*written || at.saturating_add(GRACE_MS / 1000) > at_unix
            });
            if lifts.len() < LIFTS_MAX || lifts.contains_key(prefix) {
                lifts.insert(*prefix, (at_unix, false));
            }
        }
        self.send(Write::Lift {
            prefix: *prefix,
            at_unix,
        });
    }
}

impl Store {
    /// Whether this edge lifted `prefix` by hand at or after `since_unix`
    /// (a ban decided then, heard of now, stays lifted).
    fn lifted_here(&self, prefix: &Prefix, since_unix: u64) -> bool {
        lock(&self.lifts)
            .get(prefix)
            .is_some_and(|(at, _)| *at >= since_unix)
    }

    /// The lift of `prefix` at `at_unix` is in the store.
    fn lift_written(&self, prefix: &Prefix, at_unix: u64) {
        if let Some((at, written)) = lock(&self.lifts).get_mut(prefix) {
            if *at == at_unix {
                *written = true;
            }
        }
    }
}

/// The commands of one ban change, their replies ignored: a ban SET with
/// its remaining time as TTL and published (not when it has ended); a
/// lift's tombstone and its event. Nothing for other changes.
pub fn queue(pipe: &mut Pipeline, store: &Store, w: &Write, now_ms: u64) -> Result<()> {
    match w {
        Write::Ban {
            prefix,
            until_ms,
            rec,
        } => {
            let (ttl, ms) = ttl_of(rec, *until_ms, now_ms);
            if ttl == 0 {
                return Ok(());
            }
            pipe.cmd("SET")
                .arg(ban_key(prefix))
                .arg(serde_json::to_string(rec.as_ref())?)
                .arg("PX")
                .arg(ttl)
                .ignore();
            pipe.cmd("PUBLISH")
                .arg(store.channel())
                .arg(ban_event(prefix, ms, rec)?)
                .ignore();
        }
        Write::Lift { prefix, at_unix } => {
            let ev = serde_json::to_string(&Event::Unban {
                node: store.node().to_string(),
                prefix: prefix.to_string(),
                at: *at_unix,
            })?;
            pipe.cmd("EVAL")
                .arg(LIFT)
                .arg(1)
                .arg(ban_key(prefix))
                .arg(ev)
                .arg(store.channel())
                .arg(GRACE_MS)
                .arg(format!("{LIFTED}:{at_unix}"))
                .ignore();
        }
        Write::Dialog { .. } | Write::Binding { .. } => {}
    }
    Ok(())
}

/// `batch` is in the store: its lifts no longer need writing.
pub fn written(store: &Store, batch: &[Write]) {
    for w in batch {
        if let Write::Lift { prefix, at_unix } = w {
            store.lift_written(prefix, *at_unix);
        }
    }
}

/// After a connection: the tombstones of lifts not yet written, then
/// every ban in force here but a list's, where the store lacks it (see
/// the module's doc). The bans written.
pub async fn republish(
    shield: &Shield,
    store: &Store,
    conn: &mut MultiplexedConnection,
) -> Result<usize> {
    let now = clock::now_ms();
    let lifts: Vec<Write> = lock(&store.lifts)
        .iter()
        .filter(|(_, (_, written))| !written)
        .map(|(prefix, (at, _))| Write::Lift {
            prefix: *prefix,
            at_unix: *at,
        })
        .collect();
    for chunk in lifts.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for w in chunk {
            queue(&mut pipe, store, w, now)?;
        }
        let () = pipe.query_async(conn).await?;
        written(store, chunk);
    }
    let bans: Vec<Ban> = shield
        .table
        .snapshot()
        .into_iter()
        .map(|(b, _)| b)
        .filter(|b| b.reason != BanReason::List && b.in_force(now))
        .collect();
    if bans.is_empty() {
        return Ok(0);
    }
    let script = Script::new(REPUBLISH);
    script.prepare_invoke().load_async(conn).await?;
    let mut wrote = 0;
    for chunk in bans.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for b in chunk {
            let rec = record(b, store.node());
            let (ttl, ms) = ttl_of(&rec, b.until_ms, now);
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(1)
                .arg(ban_key(&b.prefix))
                .arg(serde_json::to_string(&rec)?)
                .arg(ttl.max(1))
                .arg(ban_event(&b.prefix, ms, &rec)?)
                .arg(store.channel())
                .arg(b.since_unix)
                .arg(if rec.forever { "1" } else { "0" });
        }
        let done: Vec<i64> = pipe.query_async(conn).await?;
        wrote += done.iter().filter(|d| **d == 1).count();
    }
    Ok(wrote)
}

/// Another edge's ban: in force here, not announced back; `false` when
/// not taken (ended, held already as long, lifted here since, a source
/// this edge never bans, a full table).
pub fn take(shield: &Shield, store: &Store, prefix: Prefix, rec: &BanRecord, ms: u64) -> bool {
    let Some(ban) = ban_of(prefix, rec, ms, clock::now_ms()) else {
        return false;
    };
    if store.lifted_here(&prefix, ban.since_unix) {
        return false;
    }
    if let Some(held) = shield.table.get(&prefix) {
        if held.reason == BanReason::List || held.until_ms.saturating_add(SLACK_MS) >= ban.until_ms
        {
            return false;
        }
    }
    let reason = ban.reason.name();
    if !shield.ban(ban, false) {
        return false;
    }
    Store::bump(&store.stats.bans_applied, 1);
    let left = if rec.forever {
        "without end".to_string()
    } else {
        format!("for {} s", ms.div_ceil(1000))
    };
    log::info!(
        "shield: ban of {prefix} ({reason}) from edge {} in force here {left}",
        rec.node
    );
    true
}

/// Another edge lifted the ban on `prefix` (decided at or before
/// `before_unix`): lifted here, unless it is a list's.
fn lift(shield: &Shield, store: &Store, prefix: Prefix, before_unix: u64, node: &str) -> bool {
    match shield.table.get(&prefix) {
        Some(b) if b.reason != BanReason::List && b.since_unix <= before_unix => {
            shield.lift(&prefix, false);
            Store::bump(&store.stats.bans_applied, 1);
            log::info!("shield: ban of {prefix} lifted by hand on edge {node}: lifted here");
            true
        }
        _ => false,
    }
}

/// One event of another edge about a ban (others are not looked at).
pub fn apply(shield: &Shield, store: &Store, ev: &Event) {
    match ev {
        Event::Ban { prefix, ms, rec } => {
            if let Ok(p) = Prefix::parse(prefix) {
                take(shield, store, p, rec, *ms);
            }
        }
        // Heard as it happens: whatever this edge holds was decided
        // before (the edges' clocks need not agree to the second).
        Event::Unban { node, prefix, .. } => {
            if let Ok(p) = Prefix::parse(prefix) {
                lift(shield, store, p, u64::MAX, node);
            }
        }
        Event::Dialog { .. } | Event::Removed { .. } | Event::Binding { .. } => {}
    }
}

/// Every ban in the store, in force here; every tombstone lifts what this
/// edge holds of the ban it ended. (bans taken, bans lifted)
pub async fn load(
    shield: &Shield,
    store: &Store,
    conn: &mut MultiplexedConnection,
) -> Result<(usize, usize)> {
    let keys = super::scan_keys(conn, BAN_PREFIX, BANS_MAX as usize).await?;
    let (mut taken, mut lifted) = (0, 0);
    for chunk in keys.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
        }
        let vals: Vec<Value> = pipe.query_async(conn).await?;
        for (key, pair) in chunk.iter().zip(vals.chunks(2)) {
            let Some(prefix) = key
                .strip_prefix(BAN_PREFIX)
                .and_then(|p| Prefix::parse(p).ok())
            else {
                continue;
            };
            let (Some(v), Some(t)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let Ok(Some(v)) = redis::from_redis_value_ref::<Option<String>>(v) else {
                continue;
            };
            if let Some(at) = v
                .strip_prefix(LIFTED)
                .and_then(|r| r.strip_prefix(':'))
                .and_then(|a| a.parse::<u64>().ok())
            {
                lifted += usize::from(lift(shield, store, prefix, at, "(tombstone)"));
                continue;
            }
            let Ok(rec) = serde_json::from_str::<BanRecord>(&v) else {
                log::debug!("store: {key}: unreadable ban record");
                continue;
            };
            let pttl = redis::from_redis_value_ref::<i64>(t).unwrap_or(0);
            if pttl > 0 || rec.forever {
                taken += usize::from(take(shield, store, prefix, &rec, pttl.max(0) as u64));
            }
        }
    }
    Ok((taken, lifted))
}

/// The writer's announcer when it starts before the edge (it loads the
/// pinned bans before the edge serves): it takes the edge's store once
/// there is one. Bans announced before that are re-published at the
/// store's connection (every ban in force is, where the store lacks it);
/// lifts are kept and told at [`Announcer::attach`].
#[derive(Default)]
pub struct Announcer {
    store: OnceLock<Arc<Store>>,
    early_lifts: Mutex<Vec<Prefix>>,
}

impl Announcer {
    /// From now on, announces through `store`.
    pub fn attach(&self, store: Arc<Store>) {
        if self.store.set(store.clone()).is_err() {
            return;
        }
        for p in std::mem::take(&mut *lock(&self.early_lifts)) {
            Announce::lift(store.as_ref(), &p);
        }
        // Bans decided between the store's connection and now.
        store.mark_stale();
    }
}

impl Announce for Announcer {
    fn ban(&self, ban: &Ban, remaining_ms: u64) {
        if let Some(s) = self.store.get() {
            Announce::ban(s.as_ref(), ban, remaining_ms);
        }
    }

    fn lift(&self, prefix: &Prefix) {
        match self.store.get() {
            Some(s) => Announce::lift(s.as_ref(), prefix),
            None => {
                let mut early = lock(&self.early_lifts);
                if early.len() < LIFTS_MAX {
                    early.push(*prefix);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ban(until_ms: u64) -> Ban {
        Ban {
            prefix: Prefix::parse("2001:db8:1:2::/64").unwrap(),
            reason: BanReason::Auth,
            evidence: 10,
            strikes: 2,
            since_unix: 1_700_000_000,
            until_ms,
            note: String::new(),
        }
    }

    #[test]
    fn a_ban_goes_through_its_record_and_event_and_back() {
        let now = 1_700_000_000_000;
        let b = ban(now + 1_200_000);
        let rec = record(&b, "edge-a");
        assert_eq!(ttl_of(&rec, b.until_ms, now), (1_200_000, 1_200_000));
        let ev = ban_event(&b.prefix, 1_200_000, &rec).unwrap();
        assert_eq!(
            ev,
            r#"{"op":"ban","prefix":"2001:db8:1:2::/64","ms":1200000,"node":"edge-a","reason":"auth","evidence":10,"strikes":2,"since_unix":1700000000}"#
        );
        let back: Event = serde_json::from_str(&ev).unwrap();
        assert_eq!(back.node(), "edge-a");
        let Event::Ban { prefix, ms, rec } = back else {
            panic!("{back:?}")
        };
        let p = Prefix::parse(&prefix).unwrap();
        assert_eq!(ban_of(p, &rec, ms, now), Some(b.clone()));
        assert_eq!(ban_of(p, &rec, 0, now), None, "an ended ban is not taken");

        // Without end: a long TTL, no end in the event, none when read.
        let forever = Ban {
            until_ms: FOREVER,
            reason: BanReason::Manual,
            note: "ticket 7, and a note longer than the map keeps".into(),
            ..b
        };
        let rec = record(&forever, "edge-a");
        assert!(rec.forever);
        assert_eq!(
            ttl_of(&rec, FOREVER, now),
            (FOREVER_BAN_TTL_MS, 0),
            "every key has a TTL"
        );
        let back = ban_of(p, &rec, 0, now).unwrap();
        assert_eq!(back.until_ms, FOREVER);
        assert_eq!(back.reason, BanReason::Manual);
        assert_eq!(back.note, "ticket 7, and a note longer than");
        let unban: Event =
            serde_json::from_str(r#"{"op":"unban","node":"b","prefix":"198.18.0.2","at":5}"#)
                .unwrap();
        assert_eq!(unban.node(), "b");
    }

    #[test]
    fn lists_are_never_shared_and_lifts_are_remembered() {
        let store = Store::new(super::super::StoreConfig::new("redis://x", "a").unwrap());
        let mut rx = store.take_queue().unwrap();
        let list = Ban {
            reason: BanReason::List,
            until_ms: FOREVER,
            ..ban(0)
        };
        Announce::ban(&store, &list, 0);
        assert!(rx.try_recv().is_err(), "a list's ban stays here");
        let b = ban(0);
        Announce::lift(&store, &b.prefix);
        assert!(matches!(rx.try_recv().unwrap(), Write::Lift { .. }));
        assert!(store.lifted_here(&b.prefix, b.since_unix));
        // A new ban here supersedes the lift.
        Announce::ban(&store, &b, 60_000);
        assert!(matches!(rx.try_recv().unwrap(), Write::Ban { .. }));
        assert!(!store.lifted_here(&b.prefix, 0));
    }
}
