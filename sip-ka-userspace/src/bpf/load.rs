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
/// emits (0 = none, 1 = error ... 5 = trace).
pub fn load(pin_dir: &Path, log_level: u8) -> Result<Ebpf> {
    ensure_bpffs(pin_dir)?;
    std::fs::create_dir_all(pin_dir)
        .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .override_global(aya_log::LEVEL, &log_level, false)
        .load(OBJECT)
        .context("loading the XDP object (maps are pinned and reused by name)")?;
    Ok(ebpf)
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
