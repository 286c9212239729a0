//! The store's reader: the subscriber, which applies the other edges'
//! changes here (replicas and their DIALOGS entries, bindings) after a
//! full load at every connection (the lease and claims: `lease.rs`).

use std::{collections::HashSet, sync::Arc};

use anyhow::Result;
use futures_util::StreamExt as _;
use redis::{aio::MultiplexedConnection, Client};

use super::{
    sync::RETRY, BindingRecord, Event, Shared, Store, Write, BINDING_PREFIX, DIALOG_PREFIX,
};
use crate::{edge::state::Edge, util::clock};

/// Starts the store's tasks: the writer, the subscriber, the lease and
/// the claims.
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
    tokio::spawn(super::lease::renew(store.clone(), conn_rx.clone()));
    tokio::spawn(super::lease::claims(edge, store, conn_rx));
}

/// Applies the other edges' changes for ever, reconnecting when the
/// subscription drops.
pub async fn subscriber(edge: Arc<Edge>, store: Arc<Store>, client: Client, mut conn: Shared) {
    loop {
        if let Err(e) = subscribe_once(&edge, &store, &client, &mut conn).await {
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
) -> Result<()> {
    let mut pubsub =
        tokio::time::timeout(super::sync::RESPONSE_TIMEOUT, client.get_async_pubsub()).await??;
    pubsub.subscribe(store.channel()).await?;
    // Subscribed first, then the full load: no change falls between.
    let mut conn = loop {
        if let Some(c) = shared.borrow_and_update().clone() {
            break c;
        }
        shared.changed().await?;
    };
    load(edge, store, &mut conn).await?;
    let mut stream = pubsub.on_message();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ok(());
                };
                match serde_json::from_slice::<Event>(msg.get_payload_bytes()) {
                    Ok(ev) if ev.node() != store.node() => apply(edge, store, ev),
                    Ok(_) => {}
                    Err(e) => log::debug!("store: event unreadable: {e}"),
                }
            }
            // The writer lost Redis or connected again: this subscription
            // may have missed changes (a Redis that stopped and went on
            // keeps it open), so subscribe and load again.
            _ = shared.changed() => return Ok(()),
        }
    }
}

/// One change of another edge.
pub fn apply(edge: &Edge, store: &Store, ev: Event) {
    match ev {
        Event::Dialog {
            node,
            take,
            call_id,
            rec,
        } => {
            if rec.forks.len() <= super::MAX_FORKS {
                let rec = super::unpack(&call_id, *rec);
                edge.dialogs().replicate(&node, rec, take, clock::now_ms());
            }
        }
        Event::Removed { call_id, .. } => edge.dialogs().remote_end(&call_id),
        Event::Binding {
            contact, binding, ..
        } => {
            Store::bump(&store.stats.replicated, 1);
            edge.bindings.apply_remote(
                &contact,
                binding.map(|b| (b.flow.map(|f| f.restore()), b.expires_at_ms)),
                clock::now_ms(),
            );
        }
        ev @ (Event::Ban { .. } | Event::Unban { .. }) => {
            if let Some(shield) = &edge.shield {
                super::bans::apply(shield, store, &ev);
            }
        }
    }
}

/// Everything the store holds, put here: the other edges' dialogs as
/// replicas (replicas of dialogs gone from the store dropped), and the
/// bindings. A dialog the store gives to this edge that its table lacks
/// ended here while Redis was away: it goes from the store.
async fn load(edge: &Edge, store: &Store, conn: &mut MultiplexedConnection) -> Result<()> {
    let dialog_keys = super::scan_keys(conn, DIALOG_PREFIX, usize::MAX).await?;
    let mut seen = HashSet::new();
    let (mut replicas, mut ended) = (0, 0);
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
                if d.phase(&rec.call_id).is_none() {
                    store.send(Write::Dialog {
                        call_id: rec.call_id,
                        rec: None,
                        take: false,
                    });
                    ended += 1;
                }
            } else if d.replicate(&owner, rec, false, now) {
                replicas += 1;
            }
        }
    }
    let dropped = edge.dialogs().retain_replicas(&|c| seen.contains(c));
    let binding_keys = super::scan_keys(conn, BINDING_PREFIX, usize::MAX).await?;
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
                clock::now_ms(),
            );
            bindings += 1;
        }
    }
    let (bans, lifted) = match &edge.shield {
        Some(shield) => super::bans::load(shield, store, conn).await?,
        None => (0, 0),
    };
    log::info!(
        "store: loaded {replicas} dialog(s) of other edges, {bindings} binding(s) and {bans} \
         ban(s); dropped {dropped} ended replica(s), removed {ended} dialog(s) that ended here, \
         lifted {lifted} ban(s) lifted elsewhere"
    );
    Ok(())
}
