//! The store's readers: the subscriber, which applies the other edges'
//! changes here (replicas and their DIALOGS entries, bindings) after a
//! full load at every connection, and the lease task, which renews this
//! node's lease and claims the dialogs of nodes whose lease lapsed.

use std::{collections::HashSet, sync::Arc};

use anyhow::Result;
use futures_util::StreamExt as _;
use redis::{aio::MultiplexedConnection, Client, Script};

use super::{
    node_key,
    sync::{Shared, CLAIM, RETRY},
    BindingRecord, Event, Store, BINDING_PREFIX, DIALOG_PREFIX, EVENTS, FLOW_KEY, FLOW_KEY_TTL_MS,
    LEASE_MS, RENEW_MS,
};
use crate::{edge::state::Edge, util::clock};

/// Starts the store's tasks: the writer, the subscriber and the lease.
pub fn spawn(edge: Arc<Edge>, store: Arc<Store>, client: Client) {
    let Some(rx) = store.take_queue() else {
        return;
    };
    let (conn_tx, conn_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(super::sync::writer(
        edge.clone(),
        store.clone(),
        client.clone(),
        rx,
        conn_tx,
    ));
    tokio::spawn(subscriber(
        edge.clone(),
        store.clone(),
        client,
        conn_rx.clone(),
    ));
    tokio::spawn(lease(edge, store, conn_rx));
}

/// Applies the other edges' changes for ever, reconnecting when the
/// subscription drops.
pub async fn subscriber(edge: Arc<Edge>, store: Arc<Store>, client: Client, mut conn: Shared) {
    // Only the first load adopts this edge's own dialogs (a restart
    // without its state directory): at a reconnection the writer has just
    // re-published them, and one ended since would come back to life.
    let mut adopt_own = true;
    loop {
        if let Err(e) = subscribe_once(&edge, &store, &client, &mut conn, &mut adopt_own).await {
            log::debug!("store: subscription to {}: {e}", store.cfg.url);
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn subscribe_once(
    edge: &Edge,
    store: &Store,
    client: &Client,
    shared: &mut Shared,
    adopt_own: &mut bool,
) -> Result<()> {
    let mut pubsub =
        tokio::time::timeout(super::sync::RESPONSE_TIMEOUT, client.get_async_pubsub()).await??;
    pubsub.subscribe(EVENTS).await?;
    // Subscribed first, then the full load: no change falls between.
    let mut conn = loop {
        if let Some(c) = shared.borrow_and_update().clone() {
            break c;
        }
        shared.changed().await?;
    };
    load(edge, store, &mut conn, *adopt_own).await?;
    *adopt_own = false;
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
            Ok(ev) if ev.node() != store.node() => apply(edge, store, ev),
            Ok(_) => {}
            Err(e) => log::debug!("store: event unreadable: {e}"),
        }
    }
    Ok(())
}

/// One change of another edge.
pub fn apply(edge: &Edge, store: &Store, ev: Event) {
    match ev {
        Event::Dialog { node, call_id, rec } => {
            edge.dialogs()
                .replicate(&node, super::unpack(&call_id, *rec));
        }
        Event::Removed { call_id, .. } => edge.dialogs().remote_end(&call_id),
        Event::Binding {
            contact, binding, ..
        } => {
            Store::bump(&store.stats.replicated, 1);
            edge.bindings.apply_remote(
                &contact,
                binding.map(|b| (b.flow.map(|f| f.restore()), b.expires_at_ms)),
            );
        }
    }
}

/// Every key of a kind (SCAN, a page at a time).
async fn keys(conn: &mut MultiplexedConnection, prefix: &str) -> Result<Vec<String>> {
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
        if next == 0 {
            return Ok(all);
        }
        cursor = next;
    }
}

/// Everything the store holds, put here: the other edges' dialogs as
/// replicas (replicas of dialogs gone from the store dropped), dialogs
/// the store says this edge owns that it lacks (a restart without its
/// state directory) adopted when `adopt_own`, and the bindings.
async fn load(
    edge: &Edge,
    store: &Store,
    conn: &mut MultiplexedConnection,
    adopt_own: bool,
) -> Result<()> {
    let dialog_keys = keys(conn, DIALOG_PREFIX).await?;
    let mut seen = HashSet::new();
    let (mut replicas, mut adopted) = (0, 0);
    for chunk in dialog_keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HMGET").arg(k).arg("owner").arg("rec");
        }
        let rows: Vec<(Option<String>, Option<String>)> = pipe.query_async(conn).await?;
        let now = clock::now_ms();
        let mut d = edge.dialogs();
        for (key, (owner, rec)) in chunk.iter().zip(rows) {
            let (Some(owner), Some(rec)) = (owner, rec) else {
                continue;
            };
            let call_id = key.strip_prefix(DIALOG_PREFIX).unwrap_or(key);
            let Ok(rec) = super::unpack_json(call_id, &rec) else {
                continue;
            };
            seen.insert(rec.call_id.clone());
            if owner == store.node() {
                if adopt_own && d.phase(&rec.call_id).is_none() && d.adopt(rec, now) {
                    adopted += 1;
                }
            } else if d.replicate(&owner, rec) {
                replicas += 1;
            }
        }
    }
    let dropped = edge.dialogs().retain_replicas(&|c| seen.contains(c));
    let binding_keys = keys(conn, BINDING_PREFIX).await?;
    let mut bindings = 0;
    for chunk in binding_keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("GET").arg(k);
        }
        let vals: Vec<Option<String>> = pipe.query_async(conn).await?;
        for (k, v) in chunk.iter().zip(vals) {
            let Some(b) = v.and_then(|v| serde_json::from_str::<BindingRecord>(&v).ok()) else {
                continue;
            };
            let contact = k.strip_prefix(BINDING_PREFIX).unwrap_or(k);
            edge.bindings.apply_remote(
                contact,
                Some((b.flow.map(|f| f.restore()), b.expires_at_ms)),
            );
            bindings += 1;
        }
    }
    log::info!(
        "store: loaded {replicas} dialog(s) of other edges, adopted {adopted} of this edge's, \
         dropped {dropped} ended replica(s), {bindings} binding(s)"
    );
    Ok(())
}

/// Renews this node's lease (and the flow-token key's TTL) every
/// [`RENEW_MS`], and claims the dialogs of nodes whose lease is gone.
pub async fn lease(edge: Arc<Edge>, store: Arc<Store>, mut shared: Shared) {
    let claim = Script::new(CLAIM);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(RENEW_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut conn) = shared.borrow_and_update().clone() else {
            continue;
        };
        if let Err(e) = renew_and_claim(&edge, &store, &claim, &mut conn).await {
            log::debug!("store: lease: {e}");
        }
    }
}

async fn renew_and_claim(
    edge: &Edge,
    store: &Store,
    claim: &Script,
    conn: &mut MultiplexedConnection,
) -> Result<()> {
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(node_key(store.node()))
        .arg(clock::now_ms())
        .arg("PX")
        .arg(LEASE_MS)
        .ignore()
        .cmd("PEXPIRE")
        .arg(FLOW_KEY)
        .arg(FLOW_KEY_TTL_MS)
        .ignore()
        .query_async(conn)
        .await?;
    let owners = edge.dialogs().replicas_by_owner();
    for (owner, call_ids) in owners {
        let alive: bool = redis::cmd("EXISTS")
            .arg(node_key(&owner))
            .query_async(conn)
            .await?;
        if alive {
            continue;
        }
        let mut won = 0;
        for call_id in &call_ids {
            let rec: Option<String> = claim
                .key(super::dialog_key(call_id))
                .arg(&owner)
                .arg(store.node())
                .arg(call_id)
                .invoke_async(conn)
                .await?;
            let Some(rec) = rec.and_then(|r| super::unpack_json(call_id, &r).ok()) else {
                // Gone from the store (ended, or its TTL ran out): the
                // replica goes too; taken by another edge: its event
                // makes the replica that edge's.
                let exists: bool = redis::cmd("EXISTS")
                    .arg(super::dialog_key(call_id))
                    .query_async(conn)
                    .await?;
                if !exists {
                    edge.dialogs().remote_end(call_id);
                }
                continue;
            };
            if edge.dialogs().adopt(rec, clock::now_ms()) {
                won += 1;
            }
        }
        log::info!(
            "store: node {owner}'s lease lapsed: {won} of its {} dialog(s) taken over here",
            call_ids.len()
        );
    }
    Ok(())
}
