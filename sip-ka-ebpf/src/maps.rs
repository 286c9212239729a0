//! The program's maps and the small accessors the hot path uses.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray},
};
use sip_ka_common::{
    counters::{Stats, EDGE_BASE, KERNEL_SLOTS, NUM_COUNTERS},
    maps::{
        AclAddr, BanValue, DialogValue, PeerKey, PeerSlot, PeerValue, RateValue, ACL_MAX, BANS_MAX,
        DIALOGS_MAX, PEERS_MAX, PEER_CACHE_SLOTS, RATE_MAX, SIP_PORTS_MAX,
    },
    Config, Counter,
};

use crate::structs::{BanSlot, Scratch, BAN_CACHE_SLOTS};

/// `BPF_F_NO_COMMON_LRU` (uapi/linux/bpf.h).
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

#[map]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map]
pub static SIP_PORTS: Array<u8> = Array::pinned(SIP_PORTS_MAX, 0);

/// The program's counters: one block per CPU, looked up once a packet
/// (see [`Counters`]).
#[map]
pub static STATS: PerCpuArray<Stats> = PerCpuArray::pinned(1, 0);

/// The daemon's counters, under the same indices; the program never
/// touches it, it is here so that it is pinned beside `STATS` (see
/// `sip_ka_common::counters`).
#[map]
pub static DAEMON_STATS: Array<u64> = Array::pinned(NUM_COUNTERS, 0);

/// Per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`): a new peer on one CPU
/// takes no lock another CPU's new peers wait for.
#[map]
pub static PEERS: LruHashMap<PeerKey, PeerValue> =
    LruHashMap::pinned(PEERS_MAX, BPF_F_NO_COMMON_LRU);

/// Recent peers, per CPU, in front of PEERS (see `peers`): pinned, so
/// that readers add the counts still held here.
#[map]
pub static PEER_CACHE: PerCpuArray<PeerSlot> = PerCpuArray::pinned(PEER_CACHE_SLOTS, 0);

#[map]
pub static DIALOGS: HashMap<u64, DialogValue> = HashMap::pinned(DIALOGS_MAX, 0);

#[map]
pub static ACL_ALLOW: LpmTrie<AclAddr, u32> = LpmTrie::pinned(ACL_MAX, 0);

#[map]
pub static ACL_DENY: LpmTrie<AclAddr, u32> = LpmTrie::pinned(ACL_MAX, 0);

/// Banned addresses and prefixes, each with its expiry: checked before
/// anything else on a SIP port (UDP and TCP), written by the daemon's
/// shield and `sip-ka bans`.
#[map]
pub static BANS: LpmTrie<AclAddr, BanValue> = LpmTrie::pinned(BANS_MAX, 0);

/// Bumped by every writer of BANS after a change: the generation that the
/// per-CPU verdicts in BAN_CACHE were read at must match it.
#[map]
pub static BANS_GEN: Array<u64> = Array::pinned(1, 0);

/// Recent ban verdicts per CPU (see `bans`); not pinned: a program loaded
/// afresh starts with it empty.
#[map]
pub static BAN_CACHE: PerCpuArray<BanSlot> = PerCpuArray::with_max_entries(BAN_CACHE_SLOTS, 0);

/// A bucket per source (address and port) and CPU (see
/// `guard::over_rate`): written on every answer, so shared buckets would
/// make the CPUs wait on each other.
#[map]
pub static RATE: LruPerCpuHashMap<PeerKey, RateValue> = LruPerCpuHashMap::pinned(RATE_MAX, 0);

/// A bucket per source address and CPU: the ceiling over all of an
/// address's ports (a NAT's phones).
#[map]
pub static RATE_ADDR: LruPerCpuHashMap<AclAddr, RateValue> = LruPerCpuHashMap::pinned(RATE_MAX, 0);

/// Per-CPU work area: the payload copy, the answer being built, and the
/// positions the SIP scan records (kept in map memory so the verifier
/// does not track them and the scan loop verifies in linear time).
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Adds to a u64 shared by all CPUs (a map value) with BPF_ATOMIC_ADD.
#[inline(always)]
pub fn atomic_add(dst: *mut u64, v: u64) {
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        );
    }
}

/// This CPU's block of counters, found once per packet and handed down
/// the path, so a counter bump is an add to memory rather than a map
/// lookup.
#[derive(Clone, Copy)]
pub struct Counters(*mut Stats);

impl Counters {
    /// `None` only if the map is missing its entry (never, for an array).
    #[inline(always)]
    pub fn get() -> Option<Counters> {
        STATS.get_ptr_mut(0).map(Counters)
    }

    #[inline(always)]
    pub fn count(self, counter: Counter) {
        self.count_index(counter as u32);
    }

    #[inline(always)]
    pub fn count_index(self, index: u32) {
        if index >= EDGE_BASE {
            return;
        }
        // Opaque to the compiler, so it cannot fold the mask into the
        // arithmetic that made the index (a negative offset the verifier
        // refuses).
        let i = core::hint::black_box(index) as usize & (KERNEL_SLOTS - 1);
        // Per-CPU block: a plain increment is race-free.
        unsafe { (*self.0).slots[i] += 1 };
    }
}

/// The configuration in force; the defaults until the daemon writes it.
/// The configuration the daemon wrote; `None` until it did, and the
/// program passes everything until then.
#[inline(always)]
pub fn config() -> Option<&'static Config> {
    match CONFIG.get(0) {
        Some(cfg) if cfg.initialised != 0 => Some(cfg),
        _ => None,
    }
}

#[inline(always)]
pub fn is_sip_port(port: u16) -> bool {
    matches!(SIP_PORTS.get(port as u32), Some(v) if *v != 0)
}
