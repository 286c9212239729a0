//! The DIALOGS map as the dialog table sees it: where live dialogs are
//! mirrored for the XDP program, which counts their keep-alives.

use aya::maps::{HashMap as BpfHashMap, MapData};
use sip_ka_common::maps::DialogValue;

/// Where live dialogs are mirrored.
pub trait DialogSink: Send {
    /// Creates or updates the entry for `hash` with `state` (a
    /// `DIALOG_*`), keeping the keep-alive count the XDP program keeps.
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64);
    fn remove(&mut self, hash: u64);
    /// Records the session timer: absolute expiry (unix seconds, 0 =
    /// none) and interval/refresher as [`DialogValue::session_flags`].
    fn set_session(&mut self, _hash: u64, _expires_unix: u64, _flags: u32) {}
    /// When the XDP program last counted an in-dialog keep-alive for
    /// `hash` (CLOCK_MONOTONIC ns), if ever.
    fn last_ka_ns(&mut self, _hash: u64) -> Option<u64> {
        None
    }
    /// Removes every entry whose hash `keep` refuses (left by an earlier
    /// run for dialogs that are gone); returns how many.
    fn retain(&mut self, _keep: &dyn Fn(u64) -> bool) -> usize {
        0
    }
}

/// No mirror (XDP off, or unit tests).
pub struct NoSink;

impl DialogSink for NoSink {
    fn upsert(&mut self, _: u64, _: u32, _: u64) {}
    fn remove(&mut self, _: u64) {}
}

/// The pinned DIALOGS map.
pub struct BpfDialogs(pub BpfHashMap<MapData, u64, DialogValue>);

impl BpfDialogs {
    /// Removes every entry (left by an earlier run; this edge owns the map).
    pub fn clear(&mut self) -> usize {
        let keys: Vec<u64> = self.0.keys().filter_map(Result::ok).collect();
        keys.iter().filter(|k| self.0.remove(k).is_ok()).count()
    }
}

impl DialogSink for BpfDialogs {
    fn upsert(&mut self, hash: u64, state: u32, created_unix: u64) {
        let mut v = self.0.get(&hash, 0).unwrap_or(DialogValue {
            created_unix,
            ..DialogValue::default()
        });
        v.state = state;
        if let Err(e) = self.0.insert(hash, v, 0) {
            log::warn!("DIALOGS: writing {hash:#018x}: {e}");
        }
    }

    fn remove(&mut self, hash: u64) {
        // Absent already is fine.
        let _ = self.0.remove(&hash);
    }

    fn set_session(&mut self, hash: u64, expires_unix: u64, flags: u32) {
        if let Ok(mut v) = self.0.get(&hash, 0) {
            v.expires_unix = expires_unix;
            v.flags = flags;
            if let Err(e) = self.0.insert(hash, v, 0) {
                log::warn!("DIALOGS: writing {hash:#018x}: {e}");
            }
        }
    }

    fn last_ka_ns(&mut self, hash: u64) -> Option<u64> {
        self.0
            .get(&hash, 0)
            .ok()
            .map(|v| v.last_ka_ns)
            .filter(|&ns| ns != 0)
    }

    fn retain(&mut self, keep: &dyn Fn(u64) -> bool) -> usize {
        let gone: Vec<u64> = self
            .0
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep(*k))
            .collect();
        gone.iter().filter(|k| self.0.remove(k).is_ok()).count()
    }
}
