//! The pinned maps, opened by path: how the CLI reads and writes state
//! while the daemon runs (or after it left with --keep-attached).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues};
use sip_ka_common::{
    config::MAX_SIP_PORTS,
    maps::{
        AclAddr, DialogValue, PeerKey, PeerValue, MAP_ACL_ALLOW, MAP_ACL_DENY, MAP_CONFIG,
        MAP_DIALOGS, MAP_PEERS, MAP_SIP_PORTS, MAP_STATS, PINNED_MAPS, PIN_LINK_PREFIX,
    },
    Config,
};

pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: &Path) -> Pins {
        Pins {
            dir: dir.to_path_buf(),
        }
    }

    fn data(&self, name: &str) -> Result<MapData> {
        let path = self.dir.join(name);
        MapData::from_pin(&path).with_context(|| {
            format!(
                "opening pinned map {}: is `sip-ka run` running (or did it leave with \
                 --keep-attached) with --pin-dir {}?",
                path.display(),
                self.dir.display()
            )
        })
    }

    pub fn stats(&self) -> Result<PerCpuArray<MapData, u64>> {
        Ok(PerCpuArray::try_from(Map::PerCpuArray(
            self.data(MAP_STATS)?,
        ))?)
    }

    pub fn config(&self) -> Result<Array<MapData, Config>> {
        Ok(Array::try_from(Map::Array(self.data(MAP_CONFIG)?))?)
    }

    pub fn sip_ports(&self) -> Result<Array<MapData, u8>> {
        Ok(Array::try_from(Map::Array(self.data(MAP_SIP_PORTS)?))?)
    }

    pub fn peers(&self) -> Result<HashMap<MapData, PeerKey, PeerValue>> {
        Ok(HashMap::try_from(Map::LruHashMap(self.data(MAP_PEERS)?))?)
    }

    pub fn dialogs(&self) -> Result<HashMap<MapData, u64, DialogValue>> {
        Ok(HashMap::try_from(Map::HashMap(self.data(MAP_DIALOGS)?))?)
    }

    pub fn acl(&self, allow: bool) -> Result<LpmTrie<MapData, AclAddr, u32>> {
        let name = if allow { MAP_ACL_ALLOW } else { MAP_ACL_DENY };
        Ok(LpmTrie::try_from(Map::LpmTrie(self.data(name)?))?)
    }

    pub fn link_path(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("{PIN_LINK_PREFIX}{iface}"))
    }
}

/// Reads the configuration in force (the defaults if never written).
pub fn read_config(map: &Array<MapData, Config>) -> Result<Config> {
    let cfg = map.get(&0, 0)?;
    Ok(if cfg.initialised == 0 {
        Config::DEFAULT
    } else {
        cfg
    })
}

/// Sums every CPU's slot of every counter.
pub fn counter_totals(stats: &PerCpuArray<MapData, u64>) -> Result<Vec<u64>> {
    let mut totals = Vec::with_capacity(stats.len() as usize);
    for i in 0..stats.len() {
        let values: PerCpuValues<u64> = stats.get(&i, 0)?;
        totals.push(values.iter().sum());
    }
    Ok(totals)
}

/// The ports marked in SIP_PORTS, as recorded in the configuration.
pub fn sip_ports(cfg: &Config) -> Vec<u16> {
    cfg.sip_ports.iter().copied().filter(|p| *p != 0).collect()
}

/// Marks exactly `ports` in SIP_PORTS and records them in `cfg` (which the
/// caller then writes to CONFIG).
pub fn set_sip_ports(map: &mut Array<MapData, u8>, cfg: &mut Config, ports: &[u16]) -> Result<()> {
    let mut wanted: Vec<u16> = ports.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() || wanted.contains(&0) {
        bail!("SIP ports: give at least one port between 1 and 65535");
    }
    if wanted.len() > MAX_SIP_PORTS {
        bail!("at most {MAX_SIP_PORTS} SIP ports can be configured");
    }
    for old in sip_ports(cfg) {
        if !wanted.contains(&old) {
            map.set(old as u32, 0, 0)?;
        }
    }
    for &p in &wanted {
        map.set(p as u32, 1, 0)?;
    }
    cfg.sip_ports = [0; MAX_SIP_PORTS];
    cfg.sip_ports[..wanted.len()].copy_from_slice(&wanted);
    Ok(())
}

/// Removes every pinned map (and the directory, if that leaves it empty).
pub fn unpin_all(pin_dir: &Path) -> Result<()> {
    for name in PINNED_MAPS {
        let p = pin_dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("unpinning {}", p.display()))?;
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}
