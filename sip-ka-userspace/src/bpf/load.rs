//! The embedded XDP object and how it is loaded: maps pinned by name under
//! the pin directory, so a second load (a restarted daemon) reuses them.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use aya::{Ebpf, EbpfLoader};

/// The XDP program, built by build.rs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-ka"));

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sip-ka";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes sure `pin_dir` is on a bpffs, mounting one on /sys/fs/bpf when
/// nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if is_bpffs(parent) {
        return Ok(());
    }
    let sysfs_bpf = Path::new("/sys/fs/bpf");
    if parent.starts_with(sysfs_bpf) && !is_bpffs(sysfs_bpf) {
        std::fs::create_dir_all(sysfs_bpf).ok();
        let src = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: plain mount(2) with static C strings.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            bail!(
                "/sys/fs/bpf is not a bpf filesystem and mounting one failed ({}); \
                 run `mount -t bpf bpf /sys/fs/bpf` as root",
                std::io::Error::last_os_error()
            );
        }
        log::info!("mounted bpffs on /sys/fs/bpf");
        if is_bpffs(parent) {
            return Ok(());
        }
    }
    bail!(
        "{} is not on a bpf filesystem: pin directories must live under a bpffs mount \
         (`mount -t bpf bpf /sys/fs/bpf`)",
        pin_dir.display()
    )
}

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes into `st` only.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Loads the object with every pinned map under `pin_dir` (created or
/// reused). `log_level` is the most verbose aya-log level the program
/// emits (0 = none, 1 = error ... 5 = trace). Pinned maps whose layout
/// differs from the object's are refused, not reused (see
/// [`check_pinned_layout`]).
pub fn load(pin_dir: &Path, log_level: u8) -> Result<Ebpf> {
    ensure_bpffs(pin_dir)?;
    check_pinned_layout(pin_dir)?;
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .override_global(aya_log::LEVEL, &log_level, false)
        .load(OBJECT)
        .context("loading the XDP object (maps are pinned and reused by name)")?;
    Ok(ebpf)
}

/// What must match for a pinned map to be reused: aya reuses whatever is
/// pinned under a map's name, and a map of another version's layout
/// would be read and written with this version's types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// The layouts of the maps the object pins by name, by name.
pub fn object_layouts() -> Result<Vec<(String, Layout)>> {
    let obj = aya_obj::Object::parse(OBJECT).context("parsing the embedded XDP object")?;
    let mut maps: Vec<(String, Layout)> = obj
        .maps
        .iter()
        .filter(|(_, m)| m.pinning() == aya_obj::maps::PinningType::ByName)
        .map(|(name, m)| {
            let layout = Layout {
                map_type: m.map_type(),
                key_size: m.key_size(),
                value_size: m.value_size(),
                max_entries: m.max_entries(),
                flags: m.map_flags(),
            };
            (name.clone(), layout)
        })
        .collect();
    maps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(maps)
}

/// How a pinned map differs from what this version needs, if it does.
pub fn layout_difference(name: &str, want: &Layout, got: &Layout) -> Option<String> {
    let fields = [
        ("type", want.map_type, got.map_type),
        ("key size", want.key_size, got.key_size),
        ("value size", want.value_size, got.value_size),
        ("max entries", want.max_entries, got.max_entries),
        ("flags", want.flags, got.flags),
    ];
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(_, w, g)| w != g)
        .map(|(what, w, g)| format!("{what} {g}, this version needs {w}"))
        .collect();
    (!diffs.is_empty()).then(|| format!("{name}: {}", diffs.join(", ")))
}

/// Refuses a pin directory whose maps another version of sip-ka pinned
/// with a different layout, before anything is loaded or changed, with
/// the way to migrate.
pub fn check_pinned_layout(pin_dir: &Path) -> Result<()> {
    let mut diffs = Vec::new();
    for (name, want) in object_layouts()? {
        let path = pin_dir.join(&name);
        if !path.exists() {
            continue;
        }
        let got = match aya::maps::MapInfo::from_pin(&path) {
            Ok(info) => Layout {
                map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
                flags: info.map_flags(),
            },
            Err(e) => {
                diffs.push(format!("{name}: not a readable pinned map ({e})"));
                continue;
            }
        };
        diffs.extend(layout_difference(&name, &want, &got));
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let ifaces = super::pins::Pins::new(pin_dir).linked_ifaces();
    let iface = match ifaces.as_slice() {
        [one] => one.clone(),
        _ => "IFACE".to_string(),
    };
    bail!(
        "the maps pinned in {dir} have another layout than this version of sip-ka uses \
         ({}); they were left by another version and are not reused. To migrate: stop \
         the daemon running there, then `sip-ka detach --iface {iface} --pin-dir {dir}` \
         (or remove {dir}), and start again; counters, peers and the configuration set \
         with `sip-ka config set` start afresh (keep them in a --config file)",
        diffs.join("; "),
        dir = pin_dir.display()
    )
}

/// Maps the `log` crate's current maximum level onto aya-log's levels.
pub fn aya_log_level() -> u8 {
    match log::max_level() {
        log::LevelFilter::Off => 0,
        log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        log::LevelFilter::Debug => 4,
        log::LevelFilter::Trace => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_ka_common::maps::PINNED_MAPS;

    #[test]
    fn the_object_pins_exactly_the_maps_the_cli_knows() {
        let mut names: Vec<String> = object_layouts()
            .expect("object")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        let mut want: Vec<String> = PINNED_MAPS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn a_layout_difference_names_the_map_and_each_field() {
        let want = Layout {
            map_type: 9,
            key_size: 20,
            value_size: 48,
            max_entries: 65_536,
            flags: 0,
        };
        assert_eq!(layout_difference("PEERS", &want, &want), None);
        let got = Layout {
            max_entries: 1024,
            value_size: 40,
            ..want
        };
        let d = layout_difference("PEERS", &want, &got).expect("a difference");
        assert!(d.starts_with("PEERS: "), "{d}");
        assert!(d.contains("value size 40, this version needs 48"), "{d}");
        assert!(
            d.contains("max entries 1024, this version needs 65536"),
            "{d}"
        );
        assert!(!d.contains("key size"), "{d}");
    }
}
