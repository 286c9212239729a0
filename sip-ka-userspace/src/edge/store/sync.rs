//! The store's writer: one task that drains the edge's queue of changes
//! into Redis (pipelined, the last change of each key only), re-publishes
//! everything this edge owns after a connection (Redis was away, or a
//! change was dropped), and the flow-token key every edge shares.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Result;
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Client, Script, Value};
use tokio::sync::{mpsc, watch};

pub use super::Shared;

use super::{
    binding_key, dialog_key, dialog_ttl_ms, BindingRecord, Event, Store, Write, GRACE_MS,
    RESYNC_EVERY_MS,
};
use crate::{edge::state::Edge, util::clock};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A Redis that stops answering (SIGSTOP, a dead host without a reset)
/// is given up on after this long; SIP handling never waits for it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
pub const RETRY: Duration = Duration::from_secs(1);
/// Changes written in one pipeline, at most.
pub const BATCH: usize = 512;

/// A dialog written by its owner (or by an edge taking it over: ARGV[5]
/// is "1"); refused (0) when another edge owns it or it ended (a
/// tombstone: `gone`). ARGV: node, record, TTL (ms, always valid:
/// [`super::dialog_ttl_ms`] clamps it), event, take, channel.
const PUT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'gone') == 1 then return 0 end
local o = redis.call('HGET', KEYS[1], 'owner')
if o and o ~= ARGV[1] and ARGV[5] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'rec', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[4])
return 1
";

/// A dialog's end, wherever it was seen (a BYE's 2xx is final whichever
/// edge it passed): the record goes, a tombstone stays for [`GRACE_MS`]
/// so that no late write of another edge brings the dialog back. ARGV:
/// event, channel, grace (ms).
const REMOVE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gone', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
";

/// The store's scripts.
struct Scripts {
    put: Script,
    remove: Script,
}

pub async fn connect(client: &Client) -> Result<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    Ok(client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?)
}

/// Drains the queue into Redis for ever; reconnects when the connection
/// fails, publishing the connection in `conn_tx` for the other tasks.
pub async fn writer(
    edge: Arc<Edge>,
    store: Arc<Store>,
    client: Client,
    mut rx: mpsc::Receiver<Write>,
    conn_tx: watch::Sender<Option<MultiplexedConnection>>,
) {
    let scripts = Scripts {
        put: Script::new(PUT),
        remove: Script::new(REMOVE),
    };
    let mut last_resync = clock::now_ms();
    let mut was_up = false;
    loop {
        let mut conn = match connect(&client).await {
            Ok(c) => c,
            Err(e) => {
                if was_up
                    || store
                        .stats
                        .disconnects
                        .load(std::sync::atomic::Ordering::Relaxed)
                        == 0
                {
                    log::warn!(
                        "store: {} unreachable ({e}); running on local state, retrying every {}s",
                        store.cfg.url,
                        RETRY.as_secs()
                    );
                }
                if was_up {
                    Store::bump(&store.stats.disconnects, 1);
                }
                was_up = false;
                store.set_up(false);
                let _ = conn_tx.send(None);
                discard(&store, &mut rx);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        for script in [&scripts.put, &scripts.remove] {
            if let Err(e) = script.prepare_invoke().load_async(&mut conn).await {
                log::debug!("store: loading a script: {e}");
            }
        }
        if !was_up {
            log::info!(
                "store: connected to {} as node {}",
                store.cfg.url,
                store.node()
            );
        }
        was_up = true;
        store.set_up(true);
        let _ = conn_tx.send(Some(conn.clone()));
        // After Redis refused writes (out of memory, read-only replica):
        // the connection is fine, the changes wait; tried again after a
        // pause that doubles up to 30 s, not in a loop.
        let mut refused = Refused::default();
        let failed = loop {
            if clock::now_ms().saturating_sub(last_resync) >= RESYNC_EVERY_MS {
                store.mark_stale();
            }
            if refused.may_try(clock::now_ms()) && store.take_stale() {
                last_resync = clock::now_ms();
                match republish(&edge, &store, &scripts, &mut conn).await {
                    Ok(()) => refused.clear(),
                    Err(e) if answered(&e) => {
                        store.mark_stale();
                        refused.note(&store, &e, clock::now_ms());
                    }
                    Err(e) => {
                        store.mark_stale();
                        break e;
                    }
                }
            }
            let mut batch = Vec::new();
            tokio::select! {
                w = rx.recv() => match w {
                    Some(w) => batch.push(w),
                    None => return,
                },
                () = tokio::time::sleep(RETRY) => {
                    // Idle: a Redis that went away (or restarted empty)
                    // is noticed now, not at the next change.
                    match redis::cmd("PING").query_async::<()>(&mut conn).await {
                        Ok(()) => continue,
                        Err(e) => break e.into(),
                    }
                }
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(w) => batch.push(w),
                    Err(_) => break,
                }
            }
            let n = batch.len() as u64;
            if !refused.may_try(clock::now_ms()) {
                // Still pausing: the change is in the table, the next
                // re-publish carries it.
                Store::bump(&store.stats.write_failures, n);
                store.mark_stale();
                continue;
            }
            match write(&edge, &store, &scripts, &mut conn, coalesce(batch)).await {
                Ok(()) => refused.clear(),
                Err(e) => {
                    Store::bump(&store.stats.write_failures, n);
                    store.mark_stale();
                    if answered(&e) {
                        refused.note(&store, &e, clock::now_ms());
                        continue;
                    }
                    break e;
                }
            }
        };
        log::warn!(
            "store: {}: {failed}; running on local state until it is back",
            store.cfg.url
        );
        // Whatever Redis holds when it is back (nothing, after a restart)
        // is brought up to date.
        store.mark_stale();
        Store::bump(&store.stats.disconnects, 1);
        store.set_up(false);
        let _ = conn_tx.send(None);
    }
}

/// Whether Redis answered (with an error: out of memory, read-only, a
/// script error) rather than went away: the connection stays.
fn answered(e: &anyhow::Error) -> bool {
    e.downcast_ref::<redis::RedisError>()
        .is_some_and(|r| !(r.is_io_error() || r.is_timeout() || r.is_connection_dropped()))
}

/// The pause after Redis refused writes.
#[derive(Default)]
struct Refused {
    pause_ms: u64,
    until_ms: u64,
}

impl Refused {
    const FIRST_MS: u64 = 1_000;
    const MAX_MS: u64 = 30_000;

    fn may_try(&self, now_ms: u64) -> bool {
        now_ms >= self.until_ms
    }

    fn note(&mut self, store: &Store, e: &anyhow::Error, now_ms: u64) {
        if self.pause_ms == 0 {
            log::warn!(
                "store: {} refuses writes ({e:#}); the edge runs on local state and tries again",
                store.cfg.url
            );
        }
        self.pause_ms = (self.pause_ms * 2).clamp(Self::FIRST_MS, Self::MAX_MS);
        self.until_ms = now_ms + self.pause_ms;
    }

    fn clear(&mut self) {
        self.pause_ms = 0;
        self.until_ms = 0;
    }
}

/// While Redis is away the queue is emptied (what it held is re-published
/// from the table once Redis is back), so it never fills with changes
/// that are stale by then.
fn discard(store: &Store, rx: &mut mpsc::Receiver<Write>) {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    if n > 0 {
        Store::bump(&store.stats.write_failures, n);
        store.mark_stale();
    }
}

/// The last change of each key, in the order the keys first came.
fn coalesce(batch: Vec<Write>) -> Vec<Write> {
    let mut at: HashMap<String, usize> = HashMap::with_capacity(batch.len());
    let mut out: Vec<Write> = Vec::with_capacity(batch.len());
    for w in batch {
        let key = match &w {
            Write::Dialog { call_id, .. } => dialog_key(call_id),
            Write::Binding { contact, .. } => binding_key(contact),
            Write::Ban { prefix, .. } | Write::Lift { prefix, .. } => super::ban_key(prefix),
        };
        match at.get(&key) {
            Some(&i) => {
                // A take-over stays one even when a later change follows.
                let take = matches!(out[i], Write::Dialog { take: true, .. });
                out[i] = w;
                if let Write::Dialog { take: t, .. } = &mut out[i] {
                    *t |= take;
                }
            }
            None => {
                at.insert(key, out.len());
                out.push(w);
            }
        }
    }
    out
}

fn event_json(e: &Event) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

/// Writes `batch` in one pipeline. A dialog the store says another edge
/// owns (its traffic went there while this edge was away) is handed over
/// here: the store's state replaces this edge's.
async fn write(
    edge: &Edge,
    store: &Store,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
    batch: Vec<Write>,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let now = clock::now_ms();
    let node = store.node().to_string();
    let mut pipe = redis::pipe();
    let mut dialog_at = Vec::new();
    for (i, w) in batch.iter().enumerate() {
        match w {
            Write::Dialog {
                call_id,
                rec: Some(rec),
                take,
            } => {
                let packed = super::pack(rec);
                let json = serde_json::to_string(&packed)?;
                let ev = event_json(&Event::Dialog {
                    node: node.clone(),
                    take: *take,
                    call_id: call_id.clone(),
                    rec: Box::new(packed),
                });
                pipe.cmd("EVALSHA")
                    .arg(scripts.put.get_hash())
                    .arg(1)
                    .arg(dialog_key(call_id))
                    .arg(&node)
                    .arg(json)
                    .arg(dialog_ttl_ms(rec, now))
                    .arg(ev)
                    .arg(if *take { "1" } else { "0" })
                    .arg(store.channel());
                dialog_at.push((i, call_id.clone()));
            }
            Write::Dialog {
                call_id, rec: None, ..
            } => {
                let ev = event_json(&Event::Removed {
                    node: node.clone(),
                    call_id: call_id.clone(),
                });
                pipe.cmd("EVALSHA")
                    .arg(scripts.remove.get_hash())
                    .arg(1)
                    .arg(dialog_key(call_id))
                    .arg(ev)
                    .arg(store.channel())
                    .arg(GRACE_MS);
                dialog_at.push((i, call_id.clone()));
            }
            Write::Binding { contact, binding } => {
                let key = binding_key(contact);
                match binding {
                    Some(b) => {
                        let ttl = b.expires_at_ms.saturating_sub(now) + GRACE_MS;
                        pipe.cmd("SET")
                            .arg(&key)
                            .arg(serde_json::to_string(b)?)
                            .arg("PX")
                            .arg(ttl);
                    }
                    None => {
                        pipe.cmd("DEL").arg(&key);
                    }
                }
                let ev = event_json(&Event::Binding {
                    node: node.clone(),
                    contact: contact.clone(),
                    binding: binding.clone(),
                });
                pipe.cmd("PUBLISH").arg(store.channel()).arg(ev);
            }
            // Their replies are ignored.
            Write::Ban { .. } | Write::Lift { .. } => super::bans::queue(&mut pipe, store, w, now)?,
        }
    }
    let results: Vec<Value> = match pipe.query_async(conn).await {
        Ok(r) => r,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            // Redis restarted (scripts are not kept): load them and go
            // again.
            scripts.put.prepare_invoke().load_async(conn).await?;
            scripts.remove.prepare_invoke().load_async(conn).await?;
            pipe.query_async(conn).await?
        }
        Err(e) => return Err(e.into()),
    };
    Store::bump(&store.stats.writes, batch.len() as u64);
    super::bans::written(store, &batch);
    // The pipeline's replies: the scripts' and, per binding, SET/DEL then
    // PUBLISH; only the scripts' say anything.
    let mut refused = Vec::new();
    let mut r = 0;
    let mut d = dialog_at.iter().peekable();
    for (i, w) in batch.iter().enumerate() {
        match w {
            Write::Dialog { .. } => {
                if d.peek().is_some_and(|(at, _)| *at == i) {
                    if let (Some((_, call_id)), Some(Value::Int(0))) = (d.next(), results.get(r)) {
                        refused.push(call_id.clone());
                    }
                }
                r += 1;
            }
            Write::Binding { .. } => r += 2,
            Write::Ban { .. } | Write::Lift { .. } => {}
        }
    }
    for call_id in refused {
        hand_over(edge, conn, &call_id).await?;
    }
    Ok(())
}

/// The store says another edge owns `call_id`: this edge takes the
/// store's state as a replica (its own timers stop).
async fn hand_over(edge: &Edge, conn: &mut MultiplexedConnection, call_id: &str) -> Result<()> {
    let (owner, rec): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(dialog_key(call_id))
        .arg("owner")
        .arg("rec")
        .query_async(conn)
        .await?;
    match (owner, rec) {
        (Some(owner), Some(rec)) => match super::unpack_json(call_id, &rec) {
            Ok(rec) => {
                edge.dialogs().replicate(&owner, rec, true, clock::now_ms());
            }
            Err(e) => log::warn!("store: dialog {call_id}: record unreadable ({e})"),
        },
        // Ended at another edge (a tombstone): it ends here too.
        _ => edge.dialogs().remote_end(call_id),
    }
    Ok(())
}

/// Writes every dialog and binding this edge holds: after Redis was away
/// (it may have lost them, or missed changes), after a dropped change,
/// and every [`RESYNC_EVERY_MS`] (renewing the TTLs of long calls).
async fn republish(
    edge: &Edge,
    store: &Store,
    scripts: &Scripts,
    conn: &mut MultiplexedConnection,
) -> Result<()> {
    let dialogs = edge.dialogs().owned_records();
    let now = clock::now_ms();
    let bindings: Vec<Write> = edge
        .bindings
        .snapshot(now)
        .into_iter()
        .map(|(contact, flow, expires_at_ms)| Write::Binding {
            contact,
            binding: Some(BindingRecord {
                flow: flow.as_ref().map(crate::edge::persist::FlowRecord::of),
                expires_at_ms,
            }),
        })
        .collect();
    let (nd, nb) = (dialogs.len(), bindings.len());
    let mut all: Vec<Write> = dialogs
        .into_iter()
        .map(|rec| Write::Dialog {
            call_id: rec.call_id.clone(),
            rec: Some(Box::new(rec)),
            take: false,
        })
        .chain(bindings)
        .collect();
    while !all.is_empty() {
        let rest = all.split_off(all.len().min(BATCH));
        let chunk = std::mem::replace(&mut all, rest);
        write(edge, store, scripts, conn, chunk).await?;
    }
    let nbans = match &edge.shield {
        Some(shield) => super::bans::republish(shield, store, conn).await?,
        None => 0,
    };
    log::info!(
        "store: published {nd} dialog(s) and {nb} binding(s) this edge holds, and {nbans} ban(s) \
         the store lacked"
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dialog(call_id: &str, take: bool) -> Write {
        Write::Dialog {
            call_id: call_id.into(),
            rec: None,
            take,
        }
    }

    #[test]
    fn a_batch_keeps_the_last_change_of_each_key_in_first_order() {
        let b = vec![
            dialog("a", true),
            dialog("b", false),
            Write::Binding {
                contact: "a".into(),
                binding: None,
            },
            dialog("a", false),
        ];
        let out = coalesce(b);
        assert_eq!(
            out.len(),
            3,
            "a dialog and a binding of one name are two keys"
        );
        assert_eq!(out[0], dialog("a", true), "the take-over survives");
        assert_eq!(out[1], dialog("b", false));
    }
}
