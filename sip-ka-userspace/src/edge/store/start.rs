//! Connecting an edge to the store at start: the shared flow-token key,
//! the node's lease, and the dialogs the journal restored reconciled with
//! what the store says happened while this edge was down.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use redis::{aio::MultiplexedConnection, Client, Value};

use super::{
    dialog_key,
    sync::{connect, BATCH, CONNECT_TIMEOUT},
    Store, FLOW_KEY, FLOW_KEY_TTL_MS,
};
use crate::{
    edge::{state::Edge, transport::KEY_LEN},
    util::clock,
};

/// The shared flow-token key: the one already in the store, or `local`
/// put there by this edge. Called once at start.
pub async fn flow_key(
    conn: &mut MultiplexedConnection,
    local: &[u8; KEY_LEN],
) -> Result<[u8; KEY_LEN]> {
    let hex: String = local.iter().map(|b| format!("{b:02x}")).collect();
    let _: Value = redis::cmd("SET")
        .arg(FLOW_KEY)
        .arg(&hex)
        .arg("NX")
        .arg("PX")
        .arg(FLOW_KEY_TTL_MS)
        .query_async(conn)
        .await?;
    let stored: String = redis::cmd("GET").arg(FLOW_KEY).query_async(conn).await?;
    decode_key(&stored).with_context(|| format!("{FLOW_KEY} in the store is not a key"))
}

fn decode_key(hex: &str) -> Option<[u8; KEY_LEN]> {
    if hex.len() != KEY_LEN * 2 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Connects `edge` to the store: the shared flow-token key (the store's,
/// or this edge's put there; kept in `state_dir` too, so a start while
/// Redis is down still decodes the tokens the other edges issued) and the
/// queue of changes. The tasks start with [`super::watch::spawn`].
pub async fn attach(
    edge: &mut Edge,
    cfg: &super::StoreConfig,
    state_dir: Option<&std::path::Path>,
) -> Result<(Client, Arc<Store>)> {
    use crate::edge::transport::FlowToken;
    let client =
        Client::open(cfg.url.as_str()).with_context(|| format!("--state-store {}", cfg.url))?;
    let saved = match state_dir {
        Some(dir) => FlowToken::load_key(dir)?,
        None => None,
    };
    let local = match saved {
        Some(k) => k,
        None => FlowToken::random_key()?,
    };
    let store = Arc::new(Store::new(cfg.clone()));
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&client)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            log::warn!("store: {} unreachable at start ({e:#})", cfg.url);
            None
        }
        Err(_) => {
            log::warn!("store: {} unreachable at start (timed out)", cfg.url);
            None
        }
    };
    let key = match &conn {
        Some(c) => flow_key(&mut c.clone(), &local).await?,
        None => local,
    };
    if let Some(c) = &conn {
        super::lease::take(&store, &mut c.clone()).await?;
    }
    if let Some(dir) = state_dir {
        if saved != Some(key) {
            FlowToken::save_key(dir, &key)
                .with_context(|| format!("flow-token key in {}", dir.display()))?;
        }
    }
    edge.transports.tokens = FlowToken::with_key(&key);
    store.set_flow_key(&key);
    edge.dialogs().set_store(store.clone());
    edge.store = Some(store.clone());
    if let Some(mut conn) = conn {
        reconcile(edge, &mut conn)
            .await
            .context("reading the store")?;
    }
    Ok((client, store))
}

/// The dialogs this edge restored from its journal, against the store:
/// one another edge took over while this one was down becomes a replica
/// (its timers do not run here), one that ended there ends here too.
/// Runs before the edge's tasks start, so no timer of such a dialog
/// fires here first.
async fn reconcile(edge: &Edge, conn: &mut MultiplexedConnection) -> Result<()> {
    let owned = edge.dialogs().owned_records();
    let mut taken = 0;
    let mut ended = 0;
    for chunk in owned.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for r in chunk {
            pipe.cmd("HMGET")
                .arg(dialog_key(&r.call_id))
                .arg("owner")
                .arg("rec")
                .arg("gone");
        }
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> =
            pipe.query_async(conn).await?;
        let now = clock::now_ms();
        let mut d = edge.dialogs();
        for (r, (owner, rec, gone)) in chunk.iter().zip(rows) {
            match (owner, rec, gone) {
                (_, _, Some(_)) => {
                    d.remote_end(&r.call_id);
                    ended += 1;
                }
                (Some(o), Some(rec), None) if o != edge_node(edge) => {
                    if let Ok(rec) = super::unpack_json(&r.call_id, &rec) {
                        d.replicate(&o, rec, true, now);
                        taken += 1;
                    }
                }
                _ => {}
            }
        }
    }
    if taken + ended > 0 {
        log::info!(
            "store: of the {} dialog(s) restored, {taken} are now other edges' and {ended} ended \
             while this edge was down",
            owned.len()
        );
    }
    Ok(())
}

fn edge_node(edge: &Edge) -> &str {
    edge.store.as_deref().map_or("", Store::node)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flow_keys_decode_only_from_hex_of_the_right_length() {
        let k: String = (0..KEY_LEN).map(|i| format!("{i:02x}")).collect();
        assert_eq!(decode_key(&k).unwrap()[31], 31);
        assert!(decode_key("00").is_none());
        assert!(decode_key(&"zz".repeat(KEY_LEN)).is_none());
        assert!(decode_key(&"é".repeat(KEY_LEN)).is_none());
    }
}
