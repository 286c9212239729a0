//! Leases and claims: each edge holds `sipka:node:<id>` (its run id, a
//! TTL of [`LEASE_MS`], renewed every [`RENEW_MS`] by a task that does
//! nothing else), and a second task claims the dialogs of edges whose
//! lease is gone. A claim is a compare-and-set of the dialog's owner in
//! the store, so of several survivors exactly one takes each dialog.

use std::{sync::Arc, time::Duration};

use anyhow::{bail, Result};
use redis::{aio::MultiplexedConnection, Script};

use super::{dialog_key, node_key, Shared, Store, FLOW_KEY, FLOW_KEY_TTL_MS, LEASE_MS, RENEW_MS};
use crate::{edge::state::Edge, util::clock};

/// Takes dialog ARGV[3] from a node whose lease lapsed (ARGV[1]) for
/// ARGV[2]: only one edge succeeds. Returns the (packed) record, or nil.
/// ARGV[4]: the channel.
pub const CLAIM: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if o ~= ARGV[1] then return false end
local rec = redis.call('HGET', KEYS[1], 'rec')
if not rec then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
redis.call('PUBLISH', ARGV[4], '{"op":"up","take":true,"node":"' .. ARGV[2] .. '","call_id":' .. cjson.encode(ARGV[3]) .. ',"rec":' .. rec .. '}')
return rec
"#;

/// Dialogs claimed in one pipeline, at most.
const CLAIM_BATCH: usize = 256;

/// Takes this node's lease, or waits while another process holds it: an
/// earlier run of this node ends its lease within [`LEASE_MS`]; one still
/// renewed after that is another edge with the same `--node-id`.
pub async fn take(store: &Store, conn: &mut MultiplexedConnection) -> Result<()> {
    let end = clock::now_ms() + LEASE_MS + 2 * RENEW_MS;
    loop {
        let held: Option<String> = redis::cmd("GET")
            .arg(node_key(store.node()))
            .query_async(conn)
            .await?;
        match held {
            Some(run) if run != store.run_id() => {
                if clock::now_ms() > end {
                    bail!(
                        "--node-id {} is in use by another edge on this store (its lease \
                         is renewed); give every edge its own",
                        store.node()
                    );
                }
                tokio::time::sleep(Duration::from_millis(RENEW_MS)).await;
            }
            _ => return renew_once(store, conn).await,
        }
    }
}

/// The lease for [`LEASE_MS`] more, and the flow-token key: put back if
/// the store lost it (restarted empty), its TTL renewed.
pub async fn renew_once(store: &Store, conn: &mut MultiplexedConnection) -> Result<()> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(node_key(store.node()))
        .arg(store.run_id())
        .arg("PX")
        .arg(LEASE_MS)
        .ignore();
    if let Some(key) = store.flow_key_hex() {
        pipe.cmd("SET")
            .arg(FLOW_KEY)
            .arg(key)
            .arg("NX")
            .arg("PX")
            .arg(FLOW_KEY_TTL_MS)
            .ignore();
    }
    pipe.cmd("PEXPIRE")
        .arg(FLOW_KEY)
        .arg(FLOW_KEY_TTL_MS)
        .ignore();
    let () = pipe.query_async(conn).await?;
    Ok(())
}

/// Renews the lease every [`RENEW_MS`] while Redis is reachable.
pub async fn renew(store: Arc<Store>, mut shared: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(RENEW_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut conn) = shared.borrow_and_update().clone() else {
            continue;
        };
        if let Err(e) = renew_once(&store, &mut conn).await {
            log::debug!("store: renewing the lease: {e}");
        }
    }
}

/// Every [`RENEW_MS`]: drops replicas past their TTL, and claims the
/// dialogs of edges whose lease is gone. Only after this edge has been
/// connected for a whole lease: right after Redis comes back (or restarts
/// empty) the other edges have not renewed their leases yet, and they
/// are not dead.
pub async fn claims(edge: Arc<Edge>, store: Arc<Store>, mut shared: Shared) {
    let claim = Script::new(CLAIM);
    let mut tick = tokio::time::interval(Duration::from_millis(RENEW_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since: Option<u64> = None;
    loop {
        tick.tick().await;
        let now = clock::now_ms();
        let dropped = edge.dialogs().drop_expired_replicas(now);
        if dropped > 0 {
            log::info!("store: {dropped} replica(s) past their TTL dropped");
        }
        let Some(mut conn) = shared.borrow_and_update().clone() else {
            since = None;
            continue;
        };
        let connected = *since.get_or_insert(now);
        if now.saturating_sub(connected) < LEASE_MS + RENEW_MS {
            continue;
        }
        if let Err(e) = claim_dead(&edge, &store, &claim, &mut conn).await {
            log::debug!("store: claims: {e}");
        }
    }
}

async fn claim_dead(
    edge: &Edge,
    store: &Store,
    claim: &Script,
    conn: &mut MultiplexedConnection,
) -> Result<()> {
    let owners = edge.dialogs().replicas_by_owner();
    if owners.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for owner in owners.keys() {
        pipe.cmd("EXISTS").arg(node_key(owner));
    }
    let alive: Vec<bool> = pipe.query_async(conn).await?;
    for ((owner, call_ids), alive) in owners.into_iter().zip(alive) {
        if alive {
            continue;
        }
        let mut won = 0;
        for chunk in call_ids.chunks(CLAIM_BATCH) {
            let mut pipe = redis::pipe();
            for call_id in chunk {
                pipe.cmd("EVALSHA")
                    .arg(claim.get_hash())
                    .arg(1)
                    .arg(dialog_key(call_id))
                    .arg(&owner)
                    .arg(store.node())
                    .arg(call_id)
                    .arg(store.channel());
            }
            let recs: Vec<Option<String>> = match pipe.query_async(conn).await {
                Ok(r) => r,
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    claim.prepare_invoke().load_async(conn).await?;
                    pipe.query_async(conn).await?
                }
                Err(e) => return Err(e.into()),
            };
            let now = clock::now_ms();
            let mut d = edge.dialogs();
            for (call_id, rec) in chunk.iter().zip(recs) {
                match rec.map(|r| super::unpack_json(call_id, &r)) {
                    Some(Ok(rec)) => won += usize::from(d.adopt(rec, now)),
                    Some(Err(e)) => log::warn!("store: dialog {call_id}: record unreadable ({e})"),
                    // Another survivor was first (its event makes the
                    // replica its own), or the dialog ended.
                    None => {}
                }
            }
        }
        log::info!(
            "store: node {owner}'s lease lapsed: {won} of its {} dialog(s) taken over here",
            call_ids.len()
        );
    }
    Ok(())
}
