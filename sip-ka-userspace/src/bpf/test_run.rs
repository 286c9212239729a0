//! The XDP program run through BPF_PROG_TEST_RUN: loaded (not attached)
//! with its maps pinned in a private directory, configured like the
//! daemon configures it. Used by the fixture tests and the benchmark.
//!
//! The harness plays an interface whose MAC is `OWN_MAC` with
//! 198.18.0.1/24 (the lab's server: `lab::packet::SERVER_MAC`,
//! `lab::SERVER_V4`), so the fixtures' frames are addressed to it.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
    },
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use sip_ka_common::{
    counters::Stats,
    maps::{
        BanValue, DialogValue, PeerKey, PeerSlot, PeerValue, RateValue, MAP_ACL_ALLOW,
        MAP_ACL_DENY, MAP_BANS, MAP_BANS_GEN, MAP_CONFIG, MAP_DAEMON_STATS, MAP_DIALOGS, MAP_PEERS,
        MAP_PEER_CACHE, MAP_RATE, MAP_SIP_PORTS, MAP_STATS, PROGRAM_NAME,
    },
    Config,
};

use crate::{bpf::load, bpf::pins};

pub struct Harness {
    bpf: Ebpf,
    pin_dir: PathBuf,
}

/// What one run returned.
#[derive(Debug)]
pub struct Outcome {
    pub action: u32,
    /// The packet after the program (rewritten for XDP_TX).
    pub packet: Vec<u8>,
    pub duration: Duration,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The MAC of the interface the harness plays.
pub const OWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Its IPv4 directed broadcast (198.18.0.0/24).
pub const BROADCAST_V4: [u8; 4] = [198, 18, 0, 255];

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Harness {
    /// Loads the program with the default configuration and port 5060.
    pub fn new() -> Result<Harness> {
        if unsafe { libc::geteuid() } != 0 {
            bail!("BPF_PROG_TEST_RUN needs root (CAP_BPF, CAP_NET_ADMIN)");
        }
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/ska{}x{seq}t", std::process::id()));
        let mut bpf = load::load(&pin_dir, 0)?;
        let prog: &mut Xdp = bpf
            .program_mut(PROGRAM_NAME)
            .context("program missing")?
            .try_into()?;
        prog.load().context("verifier")?;
        let mut h = Harness { bpf, pin_dir };
        h.set_config(Config::DEFAULT)?;
        let mut ports: Array<&mut MapData, u8> =
            Array::try_from(h.bpf.map_mut(MAP_SIP_PORTS).context("SIP_PORTS")?)?;
        ports.set(5060, 1, 0)?;
        Ok(h)
    }

    /// Writes `cfg` as the daemon would: initialised, and with the
    /// interface's MAC and broadcast (`OWN_MAC`, `BROADCAST_V4`) where `cfg`
    /// leaves them unset.
    pub fn set_config(&mut self, mut cfg: Config) -> Result<()> {
        cfg.initialised = 1;
        if cfg.tick_ns == 0 {
            cfg.tick_ns = crate::util::clock::tick_ns();
        }
        if cfg.own_mac == [0; 6] {
            cfg.own_mac = OWN_MAC;
        }
        if cfg.broadcast_v4 == Config::DEFAULT.broadcast_v4 {
            cfg.broadcast_v4[0] = BROADCAST_V4;
        }
        let mut map: Array<&mut MapData, Config> =
            Array::try_from(self.bpf.map_mut(MAP_CONFIG).context("CONFIG")?)?;
        map.set(0, cfg, 0)?;
        Ok(())
    }

    /// Writes the raw CONFIG value (even an uninitialised one).
    pub fn set_raw_config(&mut self, cfg: Config) -> Result<()> {
        let mut map: Array<&mut MapData, Config> =
            Array::try_from(self.bpf.map_mut(MAP_CONFIG).context("CONFIG")?)?;
        map.set(0, cfg, 0)?;
        Ok(())
    }

    /// Adds a prefix (`len` bits of the 16-byte form) to ACL_ALLOW or ACL_DENY.
    pub fn acl_insert(&mut self, allow: bool, len: u32, addr: [u8; 16]) -> Result<()> {
        let name = if allow { MAP_ACL_ALLOW } else { MAP_ACL_DENY };
        let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
            LpmTrie::try_from(self.bpf.map_mut(name).context("ACL")?)?;
        trie.insert(&Key::new(len, addr), 1, 0)?;
        Ok(())
    }

    /// Puts a ban on a prefix (`len` bits of the 16-byte form) in BANS,
    /// and bumps BANS_GEN as the daemon's writer does.
    pub fn ban(&mut self, len: u32, addr: [u8; 16], value: BanValue) -> Result<()> {
        let mut trie: LpmTrie<&mut MapData, [u8; 16], BanValue> =
            LpmTrie::try_from(self.bpf.map_mut(MAP_BANS).context("BANS")?)?;
        trie.insert(&Key::new(len, addr), value, 0)?;
        self.bump_bans()
    }

    /// Lifts a ban (and bumps BANS_GEN).
    pub fn unban(&mut self, len: u32, addr: [u8; 16]) -> Result<()> {
        let mut trie: LpmTrie<&mut MapData, [u8; 16], BanValue> =
            LpmTrie::try_from(self.bpf.map_mut(MAP_BANS).context("BANS")?)?;
        trie.remove(&Key::new(len, addr))?;
        self.bump_bans()
    }

    fn bump_bans(&mut self) -> Result<()> {
        let mut gen: Array<&mut MapData, u64> =
            Array::try_from(self.bpf.map_mut(MAP_BANS_GEN).context("BANS_GEN")?)?;
        crate::bpf::bans::bump(&mut gen);
        Ok(())
    }

    /// Sets the token bucket of a source (address in the 16-byte form,
    /// port) on every CPU (`RATE` keeps one per CPU).
    pub fn set_rate(&mut self, addr: [u8; 16], port: u16, value: RateValue) -> Result<()> {
        let mut map: PerCpuHashMap<&mut MapData, PeerKey, RateValue> =
            PerCpuHashMap::try_from(self.bpf.map_mut(MAP_RATE).context("RATE")?)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let key = PeerKey {
            addr,
            port,
            _pad: 0,
        };
        map.insert(key, PerCpuValues::try_from(vec![value; cpus])?, 0)?;
        Ok(())
    }

    /// Every entry of `PEERS` with the counts the program's cache still
    /// holds, sorted by key (what `sip-ka peers` shows).
    pub fn peers(&self) -> Result<Vec<(PeerKey, PeerValue)>> {
        let map: HashMap<&MapData, PeerKey, PeerValue> =
            HashMap::try_from(self.bpf.map(MAP_PEERS).context("PEERS")?)?;
        let cache: PerCpuArray<&MapData, PeerSlot> =
            PerCpuArray::try_from(self.bpf.map(MAP_PEER_CACHE).context("PEER_CACHE")?)?;
        crate::bpf::peers::merged(&map, &cache)
    }

    /// Every entry of `PEERS` as the program wrote it, without what its
    /// cache still holds, sorted by key.
    pub fn peers_written(&self) -> Result<Vec<(PeerKey, PeerValue)>> {
        let map: HashMap<&MapData, PeerKey, PeerValue> =
            HashMap::try_from(self.bpf.map(MAP_PEERS).context("PEERS")?)?;
        let mut all = map.iter().collect::<Result<Vec<_>, _>>()?;
        all.sort_by_key(|(k, _)| (k.addr, k.port));
        Ok(all)
    }

    pub fn insert_dialog(&mut self, hash: u64, value: DialogValue) -> Result<()> {
        let mut map: HashMap<&mut MapData, u64, DialogValue> =
            HashMap::try_from(self.bpf.map_mut(MAP_DIALOGS).context("DIALOGS")?)?;
        map.insert(hash, value, 0)?;
        Ok(())
    }

    pub fn dialog(&self, hash: u64) -> Result<Option<DialogValue>> {
        let map: HashMap<&MapData, u64, DialogValue> =
            HashMap::try_from(self.bpf.map(MAP_DIALOGS).context("DIALOGS")?)?;
        match map.get(&hash, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Counter totals, indexed like `Counter`.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let kernel: PerCpuArray<&MapData, Stats> =
            PerCpuArray::try_from(self.bpf.map(MAP_STATS).context("STATS")?)?;
        let daemon: Array<&MapData, u64> =
            Array::try_from(self.bpf.map(MAP_DAEMON_STATS).context("DAEMON_STATS")?)?;
        crate::bpf::stats::totals(&kernel, &daemon)
    }

    fn prog(&self) -> Result<&Xdp> {
        Ok(self
            .bpf
            .program(PROGRAM_NAME)
            .context("program missing")?
            .try_into()?)
    }

    /// Runs the program once on `packet`.
    pub fn run(&self, packet: &[u8]) -> Result<Outcome> {
        self.run_repeat(packet, 1)
    }

    /// Runs the program `repeat` times on `packet` (the kernel reuses the
    /// same buffer, so a rewriting path sees its own output from the second
    /// run on); `duration` is the kernel's mean per run.
    pub fn run_repeat(&self, packet: &[u8], repeat: u32) -> Result<Outcome> {
        let mut out = vec![0u8; packet.len() + 256];
        let r = self.prog()?.test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok(Outcome {
            action: r.return_value,
            packet: out,
            duration: r.duration,
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = pins::unpin_all(&self.pin_dir);
    }
}
