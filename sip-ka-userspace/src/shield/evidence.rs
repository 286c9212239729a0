//! What each source did, and when that is enough for a ban. Sans-IO: the
//! time is an argument, nothing here reads a clock or writes a map.
//!
//! Counts are kept in two fixed windows per source (the current one and
//! the one before, weighted by how much of it still overlaps the sliding
//! window), so a record is a few words whatever the rate.

use std::time::Duration;

use sip_ka_common::maps::BanReason;

use super::prefix::Prefix;
use crate::util::capped::Capped;

/// What the shield is told, all of it changeable while the daemon runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Whether evidence is gathered at all (bans by list, by hand and
    /// from other edges apply either way).
    pub enabled: bool,
    /// Failures within `find_time` that ban a source (fail2ban's
    /// maxretry).
    pub max_retry: u32,
    pub find_time: Duration,
    /// The first ban's length; each further ban of the same source lasts
    /// twice as long as the one before, up to `ban_time_max`.
    pub ban_time: Duration,
    pub ban_time_max: Duration,
    /// Requests (keep-alives the edge or XDP answers do not count) within
    /// `flood_window` that ban a source as a flood.
    pub flood_requests: u32,
    pub flood_window: Duration,
    /// User-Agent substrings (lower case) that mark a scanner.
    pub user_agents: Vec<String>,
    /// IPv6 sources are kept, and banned, per prefix of this length.
    pub v6_prefix: u8,
    /// Most sources with evidence kept at once (oldest dropped first).
    pub max_sources: usize,
}

/// The User-Agents of the common SIP scanners (Kamailio's list, and the
/// names the other tools send), matched case-insensitively as substrings.
pub const SCANNER_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "pplsip",
    "sundayddr",
    "iwar",
    "sivus",
    "sip-scan",
    "siparmyknife",
];

impl Default for Policy {
    /// fail2ban's Asterisk jail: 10 failures in 10 minutes ban for 10
    /// minutes. The flood line is far above an office's registration
    /// storm: 200 phones re-registering with digest at once send about
    /// 400 requests, 1,000 phones after a power cut a few thousand
    /// spread over the minute their timers jitter them across.
    fn default() -> Policy {
        Policy {
            enabled: true,
            max_retry: 10,
            find_time: Duration::from_secs(600),
            ban_time: Duration::from_secs(600),
            ban_time_max: Duration::from_secs(86_400),
            flood_requests: 2000,
            flood_window: Duration::from_secs(2),
            user_agents: SCANNER_USER_AGENTS.iter().map(|s| s.to_string()).collect(),
            v6_prefix: 64,
            max_sources: 100_000,
        }
    }
}

impl Policy {
    /// Whether `user_agent` is a scanner's.
    pub fn is_scanner(&self, user_agent: &str) -> bool {
        if self.user_agents.is_empty() {
            return false;
        }
        let ua = user_agent.to_ascii_lowercase();
        self.user_agents
            .iter()
            .any(|s| !s.is_empty() && ua.contains(s.as_str()))
    }

    /// How long the ban with this many earlier strikes lasts.
    pub fn ban_length(&self, strikes: u32) -> Duration {
        let doubled = self
            .ban_time
            .checked_mul(1u32 << strikes.min(20))
            .unwrap_or(self.ban_time_max);
        doubled
            .min(self.ban_time_max)
            .max(self.ban_time.min(self.ban_time_max))
    }
}

/// One thing a source did that the shield weighs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The PBX refused it: 403; 404 to a request for a user; 401/407 to
    /// a request that already carried credentials.
    Failure,
    /// The edge itself refused a request (400, 482, 483, 513...).
    Refusal,
    /// A keep-alive for a dialog the edge does not know (481): one in
    /// [`UNKNOWN_DIALOG_PER_FAILURE`] counts, a phone whose call just
    /// ended sends a few.
    UnknownDialog,
    /// A request the edge handled (not a keep-alive it answered).
    Request,
    /// A request with a scanner's User-Agent: a ban at once, or a
    /// failure for a source with accepted logins (a forged source must
    /// not cut off a working office with one packet).
    Scanner,
    /// The PBX accepted this source's credentials: a proven phone site.
    /// Each one raises the source's failure threshold by one (up to
    /// [`PROVEN_CAP`] times `max_retry`), so an office whose many phones
    /// include a few with a stale password is not cut off by them, while
    /// a brute force still is.
    Accepted,
}

/// Requests per flood window each accepted login of a source adds to its
/// flood line (a phone's re-registration with its challenge, a
/// subscription's, a call), up to [`FLOOD_PROVEN_CAP`] times the line:
/// a NAT whose thousands of phones logged in recently may re-register all
/// at once after a power cut without being taken for a flood.
pub const FLOOD_PER_PROVEN: u32 = 4;
pub const FLOOD_PROVEN_CAP: u32 = 10;

/// 481s per counted failure.
pub const UNKNOWN_DIALOG_PER_FAILURE: u32 = 5;
/// Most a source's accepted logins raise its threshold, in `max_retry`s.
pub const PROVEN_CAP: u32 = 20;

/// A ban the evidence calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: BanReason,
    /// The count that crossed the line.
    pub evidence: u32,
    /// Earlier bans of this source (0 for the first).
    pub strikes: u32,
    pub length: Duration,
}

/// Two fixed windows standing for a sliding one.
#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start_ms: u64,
    cur: u32,
    prev: u32,
}

impl Window {
    fn roll(&mut self, now_ms: u64, len_ms: u64) {
        let len_ms = len_ms.max(1);
        if now_ms < self.start_ms + len_ms {
            return;
        }
        let passed = (now_ms - self.start_ms) / len_ms;
        self.prev = if passed == 1 { self.cur } else { 0 };
        self.cur = 0;
        self.start_ms += passed * len_ms;
    }

    fn add(&mut self, now_ms: u64, len_ms: u64, n: u32) -> u32 {
        self.roll(now_ms, len_ms);
        self.cur = self.cur.saturating_add(n);
        self.estimate(now_ms, len_ms)
    }

    /// The count over the sliding window ending now.
    fn estimate(&self, now_ms: u64, len_ms: u64) -> u32 {
        let len_ms = len_ms.max(1);
        let into = now_ms.saturating_sub(self.start_ms).min(len_ms);
        let carried = self.prev as u64 * (len_ms - into) / len_ms;
        (carried + self.cur as u64).min(u32::MAX as u64) as u32
    }
}

/// What is kept per source.
#[derive(Clone, Copy, Debug, Default)]
struct Record {
    failures: Window,
    proven: Window,
    requests: Window,
    unknown_dialogs: u32,
    strikes: u32,
    /// When the last ban of this source ends (strikes reset after a
    /// clean `ban_time_max` past it).
    banned_until_ms: u64,
}

/// Bytes a record costs in the table (key, value, the order queue's
/// entry and the hash table's control byte, rounded).
pub const RECORD_COST: usize =
    std::mem::size_of::<Prefix>() * 2 + std::mem::size_of::<Record>() + 8 + 16;

/// Evidence by source, capped at `Policy::max_sources` records.
pub struct EvidenceTable {
    records: Capped<Prefix, Record>,
}

impl Default for EvidenceTable {
    fn default() -> Self {
        EvidenceTable::new(Policy::default().max_sources)
    }
}

impl EvidenceTable {
    pub fn new(max_sources: usize) -> EvidenceTable {
        EvidenceTable {
            records: Capped::new(max_sources, usize::MAX),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records dropped to stay under the cap.
    pub fn evicted(&self) -> u64 {
        self.records.evicted()
    }

    /// Bytes the records hold (see [`RECORD_COST`]).
    pub fn bytes(&self) -> usize {
        self.records.bytes()
    }

    /// Weighs `ev` from `source` at `now_ms`; the ban it calls for, if
    /// any. A source's counts start over once it is banned.
    pub fn observe(
        &mut self,
        source: Prefix,
        ev: Evidence,
        now_ms: u64,
        p: &Policy,
    ) -> Option<Verdict> {
        self.records.set_limits(p.max_sources, usize::MAX);
        let mut rec = match self.records.remove(&source) {
            Some(r) => r,
            // A lone request is no evidence yet: a source is kept from its
            // first request only so a flood can be seen; that costs one
            // record, and the cap bounds them all.
            None => Record {
                failures: Window {
                    start_ms: now_ms,
                    ..Window::default()
                },
                proven: Window {
                    start_ms: now_ms,
                    ..Window::default()
                },
                requests: Window {
                    start_ms: now_ms,
                    ..Window::default()
                },
                ..Record::default()
            },
        };
        if rec.strikes > 0
            && now_ms
                > rec
                    .banned_until_ms
                    .saturating_add(p.ban_time_max.as_millis() as u64)
        {
            rec.strikes = 0;
        }
        let find = p.find_time.as_millis() as u64;
        let verdict = match ev {
            // A scanner's User-Agent bans at once, unless the PBX accepted
            // logins from this source lately: a UDP request's source can be
            // forged, and one forged packet must not cut off an office
            // whose phones are working. There it counts as a failure.
            Evidence::Scanner if rec.proven.estimate(now_ms, find) == 0 => {
                Some((BanReason::Scanner, 1))
            }
            Evidence::Request => {
                let n = rec
                    .requests
                    .add(now_ms, p.flood_window.as_millis() as u64, 1);
                let proven = rec.proven.estimate(now_ms, find);
                let line = p
                    .flood_requests
                    .saturating_add(proven.saturating_mul(FLOOD_PER_PROVEN))
                    .min(p.flood_requests.saturating_mul(FLOOD_PROVEN_CAP));
                (p.flood_requests > 0 && n >= line).then_some((BanReason::Flood, n))
            }
            Evidence::Accepted => {
                rec.proven.add(now_ms, find, 1);
                None
            }
            Evidence::Failure | Evidence::Refusal | Evidence::UnknownDialog | Evidence::Scanner => {
                let counted = match ev {
                    Evidence::UnknownDialog => {
                        rec.unknown_dialogs += 1;
                        rec.unknown_dialogs % UNKNOWN_DIALOG_PER_FAILURE == 0
                    }
                    _ => true,
                };
                let n = if counted {
                    rec.failures.add(now_ms, find, 1)
                } else {
                    rec.failures.estimate(now_ms, find)
                };
                let proven = rec
                    .proven
                    .estimate(now_ms, find)
                    .min(p.max_retry.saturating_mul(PROVEN_CAP));
                let line = p.max_retry.saturating_add(proven);
                let reason = match ev {
                    Evidence::Failure => BanReason::Auth,
                    Evidence::Scanner => BanReason::Scanner,
                    _ => BanReason::Refused,
                };
                (counted && p.max_retry > 0 && n >= line).then_some((reason, n))
            }
        };
        let verdict = verdict.map(|(reason, evidence)| {
            let strikes = rec.strikes;
            let length = p.ban_length(strikes);
            rec.strikes = strikes.saturating_add(1);
            rec.banned_until_ms = now_ms.saturating_add(length.as_millis() as u64);
            rec.failures = Window {
                start_ms: now_ms,
                ..Window::default()
            };
            rec.requests = Window {
                start_ms: now_ms,
                ..Window::default()
            };
            rec.unknown_dialogs = 0;
            Verdict {
                reason,
                evidence,
                strikes,
                length,
            }
        });
        self.records.insert(source, rec, RECORD_COST);
        verdict
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn src(s: &str) -> Prefix {
        Prefix::of_source(s.parse().unwrap(), 64)
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn ten_failures_in_ten_minutes_ban_for_ten_minutes_then_twice_as_long() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let a = src("203.0.113.9");
        for i in 0..9 {
            assert_eq!(t.observe(a, Evidence::Failure, T0 + i * 1000, &p), None);
        }
        let v = t.observe(a, Evidence::Failure, T0 + 9_000, &p).unwrap();
        assert_eq!(v.reason, BanReason::Auth);
        assert_eq!(v.evidence, 10);
        assert_eq!(v.length, Duration::from_secs(600));
        // After the ban it starts over; the second ban is twice as long.
        let later = T0 + 700_000;
        for i in 0..9 {
            assert_eq!(t.observe(a, Evidence::Refusal, later + i, &p), None);
        }
        let v = t.observe(a, Evidence::Refusal, later + 9, &p).unwrap();
        assert_eq!(v.reason, BanReason::Refused);
        assert_eq!((v.strikes, v.length), (1, Duration::from_secs(1200)));
    }

    #[test]
    fn bans_double_up_to_the_ceiling_and_strikes_are_forgiven() {
        let p = Policy::default();
        assert_eq!(p.ban_length(0), Duration::from_secs(600));
        assert_eq!(p.ban_length(3), Duration::from_secs(4800));
        assert_eq!(p.ban_length(10), Duration::from_secs(86_400));
        assert_eq!(p.ban_length(u32::MAX), Duration::from_secs(86_400));
        let mut t = EvidenceTable::default();
        let a = src("203.0.113.9");
        let v = t.observe(a, Evidence::Scanner, T0, &p).unwrap();
        assert_eq!(v.strikes, 0);
        let v = t.observe(a, Evidence::Scanner, T0 + 1, &p).unwrap();
        assert_eq!(v.strikes, 1);
        // A day clean after the last ban ended: a first offence again.
        let v = t
            .observe(a, Evidence::Scanner, T0 + 1 + 1_200_000 + 86_400_001, &p)
            .unwrap();
        assert_eq!(v.strikes, 0);
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_ban() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let a = src("203.0.113.9");
        // One failure a minute and a half: at most ~7 in any 10 minutes.
        for i in 0..100 {
            assert_eq!(t.observe(a, Evidence::Failure, T0 + i * 90_000, &p), None);
        }
    }

    #[test]
    fn a_flood_bans_and_a_registration_storm_does_not() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let office = src("198.51.100.1");
        // 400 requests a second for a minute: 200 phones each sending two
        // REGISTERs (challenge, credentials) every second.
        for i in 0..24_000u64 {
            assert_eq!(
                t.observe(office, Evidence::Request, T0 + i * 60_000 / 24_000, &p),
                None
            );
        }
        let flood = src("203.0.113.66");
        let mut banned_at = None;
        for i in 0..5_000u64 {
            // 20,000 a second.
            if let Some(v) = t.observe(flood, Evidence::Request, T0 + i / 20, &p) {
                assert_eq!(v.reason, BanReason::Flood);
                banned_at = Some(i);
                break;
            }
        }
        assert_eq!(banned_at, Some(1999));
    }

    #[test]
    fn a_nat_whose_phones_logged_in_may_reregister_at_once_after_a_power_cut() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let nat = src("198.51.100.1");
        // 1,000 phones logged in over the last minutes.
        for i in 0..1000 {
            t.observe(nat, Evidence::Accepted, T0 + i * 100, &p);
        }
        // Power back: each sends REGISTER, then REGISTER with
        // credentials, plus a SUBSCRIBE: 3,000 requests within a second.
        let back = T0 + 200_000;
        for i in 0..3000u64 {
            assert_eq!(
                t.observe(nat, Evidence::Request, back + i / 3, &p),
                None,
                "request {i}"
            );
        }
        // A flood from that NAT is still one, at 10 times the line.
        let mut n = 0u64;
        let v = loop {
            n += 1;
            if let Some(v) = t.observe(nat, Evidence::Request, back + 1000 + n / 20, &p) {
                break v;
            }
            assert!(n < 100_000);
        };
        assert_eq!(v.reason, BanReason::Flood);
        assert!(v.evidence <= 20_000, "{}", v.evidence);
    }

    #[test]
    fn accepted_logins_raise_the_line_for_a_busy_nat_but_not_past_the_cap() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let office = src("198.51.100.1");
        for i in 0..200 {
            t.observe(office, Evidence::Accepted, T0 + i, &p);
        }
        // 30 stale passwords among 200 phones: no ban.
        for i in 0..30 {
            assert_eq!(
                t.observe(office, Evidence::Failure, T0 + 1000 + i, &p),
                None
            );
        }
        // A brute force from the same NAT still is one.
        let mut n = 30;
        let v = loop {
            n += 1;
            if let Some(v) = t.observe(office, Evidence::Failure, T0 + 2000 + n, &p) {
                break v;
            }
            assert!(n < 1000);
        };
        assert_eq!(v.evidence, 210);
        // Without logins, a handful of 481s is no evidence; many are.
        let phone = src("198.51.100.2");
        for i in 0..(UNKNOWN_DIALOG_PER_FAILURE * 10 - 1) {
            assert_eq!(
                t.observe(phone, Evidence::UnknownDialog, T0 + i as u64, &p),
                None
            );
        }
        assert!(t
            .observe(phone, Evidence::UnknownDialog, T0 + 100, &p)
            .is_some());
    }

    #[test]
    fn a_forged_scanner_packet_does_not_cut_off_a_working_office() {
        let p = Policy::default();
        let mut t = EvidenceTable::default();
        let office = src("198.51.100.1");
        for i in 0..50 {
            t.observe(office, Evidence::Accepted, T0 + i, &p);
        }
        // One packet "from" the office with a scanner's User-Agent: no ban.
        assert_eq!(t.observe(office, Evidence::Scanner, T0 + 100, &p), None);
        // A real scanner there still ends up banned, by the failure line.
        let mut n = 1;
        let v = loop {
            n += 1;
            if let Some(v) = t.observe(office, Evidence::Scanner, T0 + 100 + n, &p) {
                break v;
            }
            assert!(n < 1000);
        };
        assert_eq!(v.reason, BanReason::Scanner);
        assert_eq!(v.evidence, 60);
    }

    #[test]
    fn scanners_by_user_agent() {
        let p = Policy::default();
        for ua in [
            "friendly-scanner",
            "sipvicious 0.3.4",
            "VaxSIPUserAgent/3.1",
            "pplsip",
        ] {
            assert!(p.is_scanner(ua), "{ua}");
        }
        for ua in [
            "Yealink SIP-T46S",
            "Linphone/5.1",
            "sipsak 0.9.8",
            "baresip v2",
        ] {
            assert!(!p.is_scanner(ua), "{ua}");
        }
        let off = Policy {
            user_agents: Vec::new(),
            ..Policy::default()
        };
        assert!(!off.is_scanner("friendly-scanner"));
    }

    #[test]
    fn a_million_sources_stay_within_the_cap() {
        let p = Policy {
            max_sources: 10_000,
            ..Policy::default()
        };
        let mut t = EvidenceTable::new(p.max_sources);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..1_000_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ip: std::net::IpAddr = if i % 2 == 0 {
                std::net::Ipv4Addr::from(x as u32).into()
            } else {
                std::net::Ipv6Addr::from((x as u128) << 64 | i as u128).into()
            };
            t.observe(Prefix::of_source(ip, 64), Evidence::Failure, T0 + i, &p);
        }
        assert_eq!(t.len(), 10_000);
        // The figure docs/ARCHITECTURE.md gives.
        assert_eq!(RECORD_COST, 122);
        assert_eq!(t.bytes(), 10_000 * RECORD_COST);
        // Every new source past the cap pushed the oldest out (a few
        // random IPv4 addresses repeat).
        assert!(t.evicted() >= 989_000, "{}", t.evicted());
    }
}
