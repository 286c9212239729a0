//! The shield's IO: writes bans to the BANS map the XDP program reads,
//! removes them once lifted, takes in what `sip-ka bans add|remove`
//! changed in the map, and loads the `--blocklist` files (again whenever
//! one changes or the daemon is told to reload).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use aya::maps::lpm_trie::Key;
use sip_ka_common::maps::{AclAddr, BanReason, BanValue, BAN_FOREVER, BAN_NOTE_LEN};
use tokio::sync::mpsc;

use super::{
    blocklist,
    prefix::Prefix,
    state::{Change, Shield},
    table::{Ban, FOREVER},
};
use crate::util::{clock, lock::lock};

pub use crate::bpf::bans::BansMap;

/// How often expired bans are removed, the map is compared with the
/// table and the lists are looked at.
pub const TICK: Duration = Duration::from_secs(1);

/// Where other edges hear of this one's bans (the shared store).
pub trait Announce: Send + Sync {
    /// `ban` is in force for `remaining_ms` more (0: for ever).
    fn ban(&self, ban: &Ban, remaining_ms: u64);
    fn lift(&self, prefix: &Prefix);
}

/// The two clocks read at one instant: a ban's end on the edge's ms
/// clock becomes the map's CLOCK_MONOTONIC ns and back.
#[derive(Clone, Copy, Debug)]
pub struct Clocks {
    pub now_ms: u64,
    pub mono_ns: u64,
}

impl Clocks {
    pub fn now() -> Clocks {
        Clocks {
            now_ms: clock::now_ms(),
            mono_ns: clock::monotonic_ns(),
        }
    }

    pub fn to_map(&self, ban: &Ban) -> BanValue {
        let expires_ns = if ban.until_ms == FOREVER {
            BAN_FOREVER
        } else {
            let left_ms = ban.until_ms.saturating_sub(self.now_ms);
            self.mono_ns
                .saturating_add(left_ms.saturating_mul(1_000_000))
                .min(BAN_FOREVER - 1)
        };
        let mut note = [0u8; BAN_NOTE_LEN];
        let mut n = ban.note.len().min(BAN_NOTE_LEN);
        while !ban.note.is_char_boundary(n) {
            n -= 1;
        }
        note[..n].copy_from_slice(&ban.note.as_bytes()[..n]);
        BanValue {
            expires_ns,
            since_unix: ban.since_unix,
            reason: ban.reason as u32,
            evidence: ban.evidence,
            strikes: ban.strikes,
            _pad: 0,
            note,
        }
    }

    pub fn from_map(&self, prefix: Prefix, v: &BanValue) -> Ban {
        let until_ms = if v.expires_ns == BAN_FOREVER {
            FOREVER
        } else {
            let left_ns = v.expires_ns.saturating_sub(self.mono_ns);
            if left_ns == 0 {
                self.now_ms
            } else {
                self.now_ms.saturating_add(left_ns.div_ceil(1_000_000))
            }
        };
        let len = v.note.iter().position(|b| *b == 0).unwrap_or(BAN_NOTE_LEN);
        Ban {
            prefix,
            reason: BanReason::from_u32(v.reason),
            evidence: v.evidence,
            strikes: v.strikes,
            since_unix: v.since_unix,
            until_ms,
            note: String::from_utf8_lossy(&v.note[..len]).into_owned(),
        }
    }

    /// Milliseconds `ban` has left (0 for a ban without end).
    pub fn remaining_ms(&self, ban: &Ban) -> u64 {
        if ban.until_ms == FOREVER {
            0
        } else {
            ban.until_ms.saturating_sub(self.now_ms).max(1)
        }
    }
}

pub fn key_of(p: &Prefix) -> Key<AclAddr> {
    Key::new(p.len() as u32, p.addr())
}

/// Every entry of the map.
pub fn read_map(map: &BansMap, c: &Clocks) -> Vec<Ban> {
    map.iter()
        .filter_map(|r| r.ok())
        .map(|(k, v)| c.from_map(Prefix::new(k.data(), k.prefix_len() as u8), &v))
        .collect()
}

/// The writer's state.
pub struct Writer {
    shield: Arc<Shield>,
    map: Option<BansMap>,
    announce: Option<Arc<dyn Announce>>,
    /// What the lists put in force, and the files' times when read.
    listed: HashSet<Prefix>,
    seen: HashMap<PathBuf, Option<SystemTime>>,
}

impl Writer {
    pub fn new(
        shield: Arc<Shield>,
        map: Option<BansMap>,
        announce: Option<Arc<dyn Announce>>,
    ) -> Writer {
        Writer {
            shield,
            map,
            announce,
            listed: HashSet::new(),
            seen: HashMap::new(),
        }
    }

    /// Takes in what the map holds (bans a previous run, or `sip-ka bans
    /// add`, left there), and the lists; before the daemon serves.
    pub fn start(&mut self) {
        self.housekeeping(Clocks::now());
    }

    /// Writes one change to the map and the store.
    pub fn apply(&mut self, change: Change, c: &Clocks) {
        match change {
            Change::Add { ban, share } => {
                if !self.shield.table.get(&ban.prefix).is_some_and(|b| b == ban) {
                    // Replaced or lifted since: what is there now counts.
                    return;
                }
                if let Some(map) = &mut self.map {
                    if let Err(e) = map.insert(&key_of(&ban.prefix), c.to_map(&ban), 0) {
                        log::warn!("shield: writing the ban of {} to BANS: {e}", ban.prefix);
                    }
                }
                self.shield.table.written(&ban.prefix);
                if share {
                    if let Some(a) = &self.announce {
                        a.ban(&ban, c.remaining_ms(&ban));
                    }
                }
            }
            Change::Remove { prefix, share } => {
                if let Some(map) = &mut self.map {
                    let _ = map.remove(&key_of(&prefix));
                }
                if share {
                    if let Some(a) = &self.announce {
                        a.lift(&prefix);
                    }
                }
            }
        }
    }

    /// Once a [`TICK`]: lifted bans out of the map, the map's changes by
    /// hand into the table, the lists read again if they changed.
    pub fn housekeeping(&mut self, c: Clocks) {
        for ban in self.shield.table.take_expired(c.now_ms) {
            log::info!(
                "shield: ban of {} ({}) lifted",
                ban.prefix,
                ban.reason.name()
            );
            if let Some(map) = &mut self.map {
                let _ = map.remove(&key_of(&ban.prefix));
            }
        }
        self.reconcile(&c);
        self.read_lists(&c);
        if let Some(map) = &mut self.map {
            map.refresh();
        }
    }

    fn reconcile(&mut self, c: &Clocks) {
        let Some(map) = &mut self.map else {
            return;
        };
        let in_map = read_map(map, c);
        let mut present = HashSet::with_capacity(in_map.len());
        for ban in in_map {
            present.insert(ban.prefix);
            if !ban.in_force(c.now_ms) {
                let _ = map.remove(&key_of(&ban.prefix));
                continue;
            }
            if self.shield.table.get(&ban.prefix).is_some() {
                continue;
            }
            // Put there by `sip-ka bans add`, or left by an earlier run.
            if self.shield.spares(&ban.prefix) {
                log::warn!(
                    "shield: {} is never banned (PBX, host, loopback, --never-ban): \
                     its entry is removed from BANS",
                    ban.prefix
                );
                let _ = map.remove(&key_of(&ban.prefix));
                continue;
            }
            log::info!(
                "shield: ban of {} ({}) taken from the BANS map",
                ban.prefix,
                ban.reason.name()
            );
            let share = ban.reason == BanReason::Manual;
            if self.shield.table.insert(ban.clone(), true).is_ok() && share {
                if let Some(a) = &self.announce {
                    a.ban(&ban, c.remaining_ms(&ban));
                }
            }
        }
        for (ban, written) in self.shield.table.snapshot() {
            if written && ban.in_force(c.now_ms) && !present.contains(&ban.prefix) {
                // `sip-ka bans remove` took it out of the map.
                log::info!("shield: ban of {} removed by hand", ban.prefix);
                self.shield.table.remove(&ban.prefix);
                self.listed.remove(&ban.prefix);
                if let Some(a) = &self.announce {
                    a.lift(&ban.prefix);
                }
            }
        }
    }

    fn read_lists(&mut self, c: &Clocks) {
        let (paths, reload) = {
            let mut l = lock(&self.shield.lists);
            let r = l.reload;
            l.reload = false;
            (l.paths.clone(), r)
        };
        let times: HashMap<PathBuf, Option<SystemTime>> = paths
            .iter()
            .map(|p| {
                let t = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                (p.clone(), t)
            })
            .collect();
        if !reload && times == self.seen {
            return;
        }
        self.seen = times;
        let mut wanted = HashSet::new();
        for path in &paths {
            match blocklist::read(path) {
                Ok(list) => {
                    if list.bad_count > 0 {
                        log::warn!(
                            "shield: blocklist {}: {} line(s) name no address (first: {:?})",
                            path.display(),
                            list.bad_count,
                            list.bad
                        );
                    }
                    log::info!(
                        "shield: blocklist {}: {} prefix(es)",
                        path.display(),
                        list.prefixes.len()
                    );
                    wanted.extend(list.prefixes);
                }
                Err(e) => log::warn!("shield: {e:#}"),
            }
        }
        let gone: Vec<Prefix> = self.listed.difference(&wanted).copied().collect();
        for p in gone {
            self.listed.remove(&p);
            if self
                .shield
                .table
                .get(&p)
                .is_some_and(|b| b.reason == BanReason::List)
            {
                self.shield.lift(&p, false);
            }
        }
        for p in wanted {
            if self.listed.contains(&p) {
                continue;
            }
            if let Some(b) = self.shield.table.get(&p) {
                if b.until_ms == FOREVER {
                    self.listed.insert(p);
                    continue;
                }
            }
            let ban = Ban {
                prefix: p,
                reason: BanReason::List,
                evidence: 0,
                strikes: 0,
                since_unix: c.now_ms / 1000,
                until_ms: FOREVER,
                note: String::new(),
            };
            if self.shield.ban(ban, false) {
                self.listed.insert(p);
            }
        }
    }
}

/// Runs the writer until the changes' sender is gone.
pub async fn run(mut w: Writer, mut changes: mpsc::UnboundedReceiver<Change>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => {
                    let c = Clocks::now();
                    w.apply(change, &c);
                    // The rest of a burst, with one clock reading.
                    while let Ok(change) = changes.try_recv() {
                        w.apply(change, &c);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                // Changes queued before the look at the map are written
                // first, so the look never takes a new ban for a removal.
                let c = Clocks::now();
                while let Ok(change) = changes.try_recv() {
                    w.apply(change, &c);
                }
                w.housekeeping(c);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ends_go_through_the_map_clock_and_back() {
        let c = Clocks {
            now_ms: 1_700_000_000_000,
            mono_ns: 5_000_000_000,
        };
        let ban = Ban {
            prefix: Prefix::parse("203.0.113.9").unwrap(),
            reason: BanReason::Manual,
            evidence: 3,
            strikes: 1,
            since_unix: 1_700_000_000,
            until_ms: c.now_ms + 600_000,
            note: "ticket 7: a note longer than thirty-two bytes is cut".into(),
        };
        let v = c.to_map(&ban);
        assert_eq!(v.expires_ns, 5_000_000_000 + 600_000 * 1_000_000);
        let back = c.from_map(ban.prefix, &v);
        assert_eq!(back.until_ms, ban.until_ms);
        assert_eq!(back.note, "ticket 7: a note longer than thi");
        assert_eq!((back.evidence, back.strikes), (3, 1));
        let forever = Ban {
            until_ms: FOREVER,
            ..ban
        };
        assert_eq!(c.to_map(&forever).expires_ns, BAN_FOREVER);
        assert_eq!(
            c.from_map(forever.prefix, &c.to_map(&forever)).until_ms,
            FOREVER
        );
        assert_eq!(c.remaining_ms(&forever), 0);
    }
}
