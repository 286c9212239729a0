//! The pinned maps, opened by path: how the CLI reads and writes state
//! while the daemon runs (or after it left with --keep-attached); the
//! lock that keeps one daemon per pin directory, and the record of what a
//! start pinned, so that a failed start takes back only its own pins.

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::maps::{lpm_trie::LpmTrie, Array, HashMap, Map, MapData, PerCpuArray};
use sip_ka_common::{
    config::MAX_SIP_PORTS,
    maps::{
        AclAddr, DialogValue, PeerKey, PeerSlot, PeerValue, MAP_ACL_ALLOW, MAP_ACL_DENY, MAP_BANS,
        MAP_BANS_GEN, MAP_CONFIG, MAP_DAEMON_STATS, MAP_DIALOGS, MAP_PEERS, MAP_PEER_CACHE,
        MAP_SIP_PORTS, MAP_STATS, PINNED_MAPS, PIN_LINK_PREFIX,
    },
    Config,
};

use super::{bans::BansMap, stats::StatsMaps};

pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(dir: &Path) -> Pins {
        Pins {
            dir: dir.to_path_buf(),
        }
    }

    /// The pins of `dir` for a command that reads or changes a daemon's
    /// state: a plain error when nothing is pinned there, rather than
    /// empty output that looks like an idle daemon.
    pub fn attached(dir: &Path) -> Result<Pins> {
        if !PINNED_MAPS.iter().any(|m| dir.join(m).exists()) {
            bail!("{}", not_attached(dir));
        }
        Ok(Pins::new(dir))
    }

    /// The interfaces with a link pinned in this directory.
    pub fn linked_ifaces(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ifaces: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(PIN_LINK_PREFIX).map(str::to_string)
            })
            .collect();
        ifaces.sort();
        ifaces
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

    pub fn stats(&self) -> Result<StatsMaps> {
        Ok(StatsMaps {
            kernel: PerCpuArray::try_from(Map::PerCpuArray(self.data(MAP_STATS)?))?,
            daemon: Array::try_from(Map::Array(self.data(MAP_DAEMON_STATS)?))?,
        })
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

    pub fn peer_cache(&self) -> Result<PerCpuArray<MapData, PeerSlot>> {
        Ok(PerCpuArray::try_from(Map::PerCpuArray(
            self.data(MAP_PEER_CACHE)?,
        ))?)
    }

    /// PEERS as `sip-ka peers` shows it: with the counts the program's
    /// cache still holds (see `bpf::peers`).
    pub fn peer_table(&self) -> Result<Vec<(PeerKey, PeerValue)>> {
        super::peers::merged(&self.peers()?, &self.peer_cache()?)
    }

    pub fn dialogs(&self) -> Result<HashMap<MapData, u64, DialogValue>> {
        Ok(HashMap::try_from(Map::HashMap(self.data(MAP_DIALOGS)?))?)
    }

    pub fn acl(&self, allow: bool) -> Result<LpmTrie<MapData, AclAddr, u32>> {
        let name = if allow { MAP_ACL_ALLOW } else { MAP_ACL_DENY };
        Ok(LpmTrie::try_from(Map::LpmTrie(self.data(name)?))?)
    }

    pub fn bans(&self) -> Result<BansMap> {
        Ok(BansMap::new(
            LpmTrie::try_from(Map::LpmTrie(self.data(MAP_BANS)?))?,
            Array::try_from(Map::Array(self.data(MAP_BANS_GEN)?))?,
        ))
    }

    pub fn link_path(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("{PIN_LINK_PREFIX}{iface}"))
    }
}

/// The message for a pin directory where no daemon left its maps.
pub fn not_attached(dir: &Path) -> String {
    format!(
        "no sip-ka daemon is attached to pin dir {}: no maps are pinned there \
         (start one with `sip-ka run --pin-dir {}`, or give the --pin-dir it runs with)",
        dir.display(),
        dir.display()
    )
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

/// Every counter's total: the kernel's blocks of every CPU and the
/// daemon's slots.
pub fn counter_totals(stats: &StatsMaps) -> Result<Vec<u64>> {
    stats.totals()
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

/// Where the lock of `pin_dir` lives: a bpffs takes no regular files, so
/// it sits under /run/sip-ka, named after the pin directory as the edge's
/// state directory is.
pub fn lock_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sip-ka".to_string());
    Path::new("/run/sip-ka").join(format!("{name}.lock"))
}

/// One daemon per pin directory: an exclusive flock on [`lock_path`],
/// holding the owner's pid, taken before any map or link is touched and
/// released by the kernel when the process ends however it ends.
pub struct PinLock {
    /// Held, not read: the lock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

impl PinLock {
    pub fn acquire(pin_dir: &Path) -> Result<PinLock> {
        let path = lock_path(pin_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // The file is removed on exit, so a lock may be won on a file
        // that was just unlinked: then the path names a newer file and
        // the lock is taken again there (bounded: each round needs
        // another daemon to exit in between).
        for _ in 0..16 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .with_context(|| format!("opening the pin dir lock {}", path.display()))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(err).with_context(|| format!("locking {}", path.display()));
                }
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "a process that is still starting".to_string(),
                };
                bail!(
                    "pin dir {} is in use by a running sip-ka daemon ({holder}; lock {}): \
                     one daemon per pin dir, and this one touched nothing; stop that one \
                     first or give this one another --pin-dir",
                    pin_dir.display(),
                    path.display()
                );
            }
            let same = match (file.metadata(), std::fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            return Ok(PinLock { _file: file, path });
        }
        bail!("could not take the pin dir lock {}", path.display())
    }
}

impl Drop for PinLock {
    fn drop(&mut self) {
        // Unlinked while still held: a starter that opened it meanwhile
        // sees the path change and locks the newer file.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a start found pinned before it loaded anything. Unless
/// [`StartPins::keep`] is called (the daemon is up), dropping it removes
/// exactly the pins this start created: the maps and the link that were
/// not there, and the directory if it was not there and is left empty.
/// What an earlier run left with --keep-attached stays, and with it the
/// fast path.
pub struct StartPins {
    dir: PathBuf,
    dir_existed: bool,
    existed: Vec<PathBuf>,
    link: Option<PathBuf>,
    kept: bool,
}

impl StartPins {
    pub fn record(pin_dir: &Path, link: Option<PathBuf>) -> StartPins {
        let existed = PINNED_MAPS
            .iter()
            .map(|m| pin_dir.join(m))
            .chain(link.iter().cloned())
            .filter(|p| p.exists())
            .collect();
        StartPins {
            dir: pin_dir.to_path_buf(),
            dir_existed: pin_dir.exists(),
            existed,
            link,
            kept: false,
        }
    }

    /// The start succeeded: the pins are the daemon's now.
    pub fn keep(&mut self) {
        self.kept = true;
    }

    pub fn kept(&self) -> bool {
        self.kept
    }

    /// The pins this start created (for the log and tests).
    fn created(&self) -> Vec<PathBuf> {
        PINNED_MAPS
            .iter()
            .map(|m| self.dir.join(m))
            .chain(self.link.iter().cloned())
            .filter(|p| p.exists() && !self.existed.contains(p))
            .collect()
    }
}

impl Drop for StartPins {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        // Removing a link's pin detaches the program (the start holds no
        // other reference to the link); a map's pin, the map once the
        // loader's descriptors are closed.
        let created = self.created();
        for p in &created {
            if let Err(e) = std::fs::remove_file(p) {
                log::warn!("removing {} after the failed start: {e}", p.display());
            }
        }
        if !self.dir_existed {
            let _ = std::fs::remove_dir(&self.dir);
        }
        if !created.is_empty() {
            log::info!(
                "start failed: removed the {} pin(s) it had created in {}",
                created.len(),
                self.dir.display()
            );
        }
    }
}
