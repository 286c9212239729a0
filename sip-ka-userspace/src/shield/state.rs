//! The shield's shared state: the policy, the evidence table and the ban
//! table behind their locks, and the queue of changes for the writer.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
};

use sip_ka_common::maps::{BanReason, BAN_REASONS};
use tokio::sync::mpsc;

use super::{
    evidence::{self, Evidence, Policy},
    prefix::Prefix,
    table::{Ban, BanTable},
};
use crate::util::lock::{lock, read, write};

/// The blocklists and whether they must be read again.
#[derive(Default)]
pub struct Lists {
    pub paths: Vec<std::path::PathBuf>,
    pub reload: bool,
}

/// What the writer must carry to the BANS map and the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A ban to write; `share` when other edges must hear of it.
    Add { ban: Ban, share: bool },
    /// A ban lifted before its time (`sip-ka bans remove`, a list entry
    /// gone); `share` as above.
    Remove { prefix: Prefix, share: bool },
}

/// What the shield is configured with (`run --shield ...`, `--ban-*`,
/// `--never-ban`, `--blocklist`), all of it live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub policy: Policy,
    pub never_ban: Vec<Prefix>,
    pub blocklists: Vec<std::path::PathBuf>,
}

/// The shield's counters (the metrics read them).
#[derive(Default)]
pub struct Stats {
    /// Bans decided or taken in, by reason.
    pub bans: [AtomicU64; BAN_REASONS],
    /// Bans the evidence called for on a source that is never banned.
    pub spared: AtomicU64,
    /// Bans not taken in because the table was full.
    pub refused_full: AtomicU64,
    /// Messages and connections from banned sources the daemon dropped
    /// itself (what XDP did not see or did not drop).
    pub dropped: AtomicU64,
}

/// Evidence, policy and bans, shared by the daemon's tasks.
pub struct Shield {
    policy: RwLock<Arc<Policy>>,
    evidence: Mutex<evidence::EvidenceTable>,
    pub table: Arc<BanTable>,
    /// Sources never banned: the PBX, the host, loopback, `--never-ban`.
    never: RwLock<Vec<Prefix>>,
    /// The PBX's and the host's own addresses (with loopback): spared
    /// whatever `--never-ban` says.
    fixed: Vec<Prefix>,
    /// `--blocklist` files, for the writer.
    pub lists: Mutex<Lists>,
    changes: mpsc::UnboundedSender<Change>,
    pending: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    pub stats: Stats,
}

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield")
            .field("policy", &self.policy())
            .field("bans", &self.table.len())
            .finish_non_exhaustive()
    }
}

/// Loopback and the unspecified addresses: never a source to ban.
pub fn always_spared() -> Vec<Prefix> {
    ["127.0.0.0/8", "::1", "0.0.0.0", "::"]
        .iter()
        .filter_map(|s| Prefix::parse(s).ok())
        .collect()
}

impl Shield {
    /// A shield with `policy` that never bans inside `fixed` (the PBX,
    /// the host; loopback is added).
    pub fn new(policy: Policy, fixed: Vec<Prefix>) -> Arc<Shield> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut fixed = fixed;
        fixed.extend(always_spared());
        Arc::new(Shield {
            lists: Mutex::new(Lists::default()),
            evidence: Mutex::new(evidence::EvidenceTable::new(policy.max_sources)),
            policy: RwLock::new(Arc::new(policy)),
            table: Arc::new(BanTable::default()),
            never: RwLock::new(fixed.clone()),
            fixed,
            changes: tx,
            pending: Mutex::new(Some(rx)),
            stats: Stats::default(),
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        read(&self.policy).clone()
    }

    /// New thresholds, in force from the next message.
    pub fn set_policy(&self, policy: Policy) {
        *write(&self.policy) = Arc::new(policy);
    }

    /// The operator's never-ban prefixes (the PBX, the host and loopback
    /// are kept).
    /// Bans in force that overlap one of them are lifted here (not on the
    /// other edges, which have their own never-ban lists).
    pub fn set_never(&self, never: &[Prefix]) {
        let mut all = self.fixed.clone();
        all.extend_from_slice(never);
        *write(&self.never) = all;
        for (ban, _) in self.table.snapshot() {
            if self.spares(&ban.prefix) {
                tracing::info!(
                    target: "sip_ka::shield",
                    source = %ban.prefix,
                    reason = ban.reason.name(),
                    "shield: ban lifted: the source is never banned now"
                );
                self.lift(&ban.prefix, false);
            }
        }
    }

    /// The `--blocklist` files; read again at the writer's next tick.
    pub fn set_lists(&self, paths: Vec<std::path::PathBuf>) {
        let mut l = lock(&self.lists);
        l.paths = paths;
        l.reload = true;
    }

    /// Reads the lists again (SIGHUP).
    pub fn reload_lists(&self) {
        lock(&self.lists).reload = true;
    }

    /// Applies the settings a start or a live change gives.
    pub fn configure(&self, s: &Settings) {
        self.set_policy(s.policy.clone());
        self.set_never(&s.never_ban);
        let changed = lock(&self.lists).paths != s.blocklists;
        if changed {
            self.set_lists(s.blocklists.clone());
        }
    }

    /// Whether any address of `prefix` must never be banned.
    pub fn spares(&self, prefix: &Prefix) -> bool {
        read(&self.never).iter().any(|n| n.overlaps(prefix))
    }

    /// The changes for the writer; `None` once taken.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        lock(&self.pending).take()
    }

    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.table.is_banned(ip, now_ms)
    }

    /// [`Shield::is_banned`], counted as a drop when it is.
    pub fn drops(&self, ip: IpAddr, now_ms: u64) -> bool {
        let banned = self.is_banned(ip, now_ms);
        if banned {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        banned
    }

    /// Whether `user_agent` is a scanner's (and evidence is on).
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        let p = read(&self.policy);
        p.enabled && p.is_scanner(user_agent)
    }

    /// Weighs `ev` from `ip` at `now_ms`; the ban it led to, if any (in
    /// force at once in the table, on its way to the BANS map).
    pub fn observe(&self, ip: IpAddr, ev: Evidence, now_ms: u64) -> Option<Ban> {
        let policy = self.policy();
        if !policy.enabled {
            return None;
        }
        let source = Prefix::of_source(ip, policy.v6_prefix);
        if self.spares(&source) {
            return None;
        }
        let verdict = lock(&self.evidence).observe(source, ev, now_ms, &policy)?;
        let ban = Ban {
            prefix: source,
            reason: verdict.reason,
            evidence: verdict.evidence,
            strikes: verdict.strikes,
            since_unix: now_ms / 1000,
            until_ms: now_ms.saturating_add(verdict.length.as_millis() as u64),
            note: String::new(),
        };
        tracing::warn!(
            target: "sip_ka::shield",
            source = %source,
            reason = ban.reason.name(),
            evidence = ban.evidence,
            strikes = ban.strikes,
            secs = verdict.length.as_secs(),
            "shield: source banned"
        );
        self.ban(ban.clone(), true).then_some(ban)
    }

    /// Puts `ban` in force here and sends it to the map (and, with
    /// `share`, to the other edges); `false` when it was not taken (a
    /// spared source, a full table).
    pub fn ban(&self, ban: Ban, share: bool) -> bool {
        if self.spares(&ban.prefix) {
            self.stats.spared.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "sip_ka::shield",
                source = %ban.prefix,
                reason = ban.reason.name(),
                "shield: ban not applied: the source is never banned (PBX, host, loopback, \
                 --never-ban)"
            );
            return false;
        }
        if self.table.insert(ban.clone(), false).is_err() {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "sip_ka::shield",
                source = %ban.prefix,
                "shield: ban table full, ban not applied"
            );
            return false;
        }
        self.stats.bans[ban.reason as usize].fetch_add(1, Ordering::Relaxed);
        let _ = self.changes.send(Change::Add { ban, share });
        true
    }

    /// Lifts the ban on `prefix` before its time.
    pub fn lift(&self, prefix: &Prefix, share: bool) -> Option<Ban> {
        let ban = self.table.remove(prefix)?;
        let _ = self.changes.send(Change::Remove {
            prefix: *prefix,
            share,
        });
        Some(ban)
    }

    /// Sources with evidence kept, and the records dropped for the cap.
    pub fn evidence_size(&self) -> (usize, u64) {
        let e = lock(&self.evidence);
        (e.len(), e.evicted())
    }

    /// Bans decided of `reason` since start.
    pub fn bans_of(&self, reason: BanReason) -> u64 {
        self.stats.bans[reason as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::shield::table::FOREVER;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn a_scanner_is_banned_at_once_and_the_ban_reaches_the_writer() {
        let s = Shield::new(Policy::default(), Vec::new());
        let mut rx = s.take_changes().unwrap();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(!s.is_banned(ip, T0));
        let ban = s.observe(ip, Evidence::Scanner, T0).unwrap();
        assert_eq!(ban.reason, BanReason::Scanner);
        assert_eq!(ban.until_ms, T0 + 600_000);
        assert!(s.is_banned(ip, T0 + 1));
        assert!(!s.is_banned(ip, T0 + 600_000));
        assert_eq!(rx.try_recv().unwrap(), Change::Add { ban, share: true });
        assert_eq!(s.bans_of(BanReason::Scanner), 1);
        s.lift(&Prefix::host(ip), false).unwrap();
        assert!(!s.is_banned(ip, T0 + 1));
    }

    #[test]
    fn spared_sources_are_never_banned() {
        let office = Prefix::parse("198.51.100.0/24").unwrap();
        let s = Shield::new(Policy::default(), Vec::new());
        s.set_never(&[office]);
        for ip in ["198.51.100.7", "127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(s.observe(ip, Evidence::Scanner, T0), None, "{ip}");
            assert!(!s.is_banned(ip, T0));
        }
        // Allowing a banned source lifts its ban.
        let ip: IpAddr = "203.0.113.50".parse().unwrap();
        assert!(s.observe(ip, Evidence::Scanner, T0).is_some());
        s.set_never(&[office, Prefix::parse("203.0.113.0/24").unwrap()]);
        assert!(!s.is_banned(ip, T0 + 1));
        s.set_never(&[office]);
        // A list entry covering the office is not taken either.
        let wide = Ban {
            prefix: Prefix::parse("198.51.0.0/16").unwrap(),
            reason: BanReason::List,
            evidence: 0,
            strikes: 0,
            since_unix: 0,
            until_ms: FOREVER,
            note: String::new(),
        };
        assert!(!s.ban(wide, false));
        assert_eq!(s.stats.spared.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn evidence_off_bans_nothing_but_bans_still_apply() {
        let s = Shield::new(
            Policy {
                enabled: false,
                ..Policy::default()
            },
            Vec::new(),
        );
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(s.observe(ip, Evidence::Scanner, T0), None);
        assert!(!s.is_scanner("friendly-scanner"));
        let ban = Ban {
            prefix: Prefix::host(ip),
            reason: BanReason::Manual,
            evidence: 0,
            strikes: 0,
            since_unix: 0,
            until_ms: FOREVER,
            note: "ticket 7".into(),
        };
        assert!(s.ban(ban, false));
        assert!(s.drops(ip, T0));
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 1);
    }
}
