//! The host's side of the checks: the kernel and its BTF, the bpffs the
//! pins go on, what an earlier version pinned there, the capabilities
//! this process has, and the directories the daemon writes in /run.

use std::{
    ffi::CStr,
    path::{Path, PathBuf},
};

use sip_ka_common::maps::PINNED_MAPS;

use super::report::Check;
use crate::bpf::{load, pins};

/// The oldest kernel the XDP program loads on, and why.
pub const MIN_KERNEL: (u32, u32) = (5, 18);
const MIN_KERNEL_WHY: &str = "bpf_xdp_load_bytes/bpf_xdp_store_bytes (5.18), bpf_loop (5.17)";

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_string();
    }
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `6.1.0-18-amd64` -> (6, 1).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel(release: &str) -> Check {
    let need = format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1);
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Check::ok(
            "kernel",
            format!("Linux {release} (the XDP program needs {need} or later)"),
        ),
        Some(_) => Check::fail(
            "kernel",
            format!("Linux {release}: the XDP program needs {need} or later ({MIN_KERNEL_WHY})"),
            format!("boot a kernel {need} or later (Debian 12's 6.1, Ubuntu 22.04's HWE 6.x)"),
        ),
        None => Check::warn(
            "kernel",
            format!("cannot read the version in {release:?}"),
            format!("make sure the kernel is {need} or later (`uname -r`)"),
        ),
    }
}

pub fn btf() -> Check {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    if path.exists() {
        Check::ok("btf", format!("{} is there", path.display()))
    } else {
        Check::warn(
            "btf",
            format!(
                "no {} (a kernel built without CONFIG_DEBUG_INFO_BTF): the program has no \
                 CO-RE relocations and loads anyway, but bpftool and the verifier's messages \
                 show less",
                path.display()
            ),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's is)",
        )
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The file system type of `path` (statfs's magic), `None` when it
/// cannot be read. `load::is_bpffs` does the same for `load`, privately.
fn fs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs writes into `st` only.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_type as i64)
}

fn fs_name(magic: i64) -> String {
    match magic {
        0x0102_1994 => "tmpfs".into(),
        0xef53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x6265_6572 => "sysfs".into(),
        0x9fa0 => "procfs".into(),
        m => format!("file system type {m:#x}"),
    }
}

/// The nearest ancestor of `path` (itself included) that exists.
pub fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Is the pin directory on a bpffs (where `load::ensure_bpffs` looks: its
/// parent)? `can_mount`: this process could mount one (`run` does when
/// /sys/fs/bpf has none).
pub fn bpffs(pin_dir: &Path, can_mount: bool) -> Check {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    let fix = "mount -t bpf bpf /sys/fs/bpf (or add it to /etc/fstab), and keep --pin-dir \
               under it (the default is /sys/fs/bpf/sip-ka)";
    if fs_magic(parent) == Some(BPF_FS_MAGIC) {
        return Check::ok(
            "bpffs",
            format!(
                "{} is a bpf filesystem (pins go to {})",
                parent.display(),
                pin_dir.display()
            ),
        );
    }
    let sysfs_bpf = Path::new("/sys/fs/bpf");
    if parent.starts_with(sysfs_bpf) && fs_magic(sysfs_bpf) != Some(BPF_FS_MAGIC) {
        return Check::bad(
            can_mount,
            "bpffs",
            format!(
                "nothing is mounted on /sys/fs/bpf: `sip-ka run` mounts it when it may \
                 (root{}), the packaged service cannot",
                if can_mount {
                    ", as here"
                } else {
                    "; this process may not"
                }
            ),
            fix,
        );
    }
    let on = existing_ancestor(parent);
    let kind = fs_magic(&on).map_or("unreadable".to_string(), fs_name);
    Check::fail(
        "bpffs",
        format!(
            "{} is not on a bpf filesystem ({} is {kind}): `sip-ka run` cannot pin there",
            pin_dir.display(),
            on.display()
        ),
        fix,
    )
}

/// Maps an earlier version pinned in `pin_dir` with another layout are
/// refused by `run` (`load::check_pinned_layout`); `None` when nothing
/// is pinned there.
pub fn pins(pin_dir: &Path) -> Option<Check> {
    if !PINNED_MAPS.iter().any(|m| pin_dir.join(m).exists()) {
        return None;
    }
    Some(match load::check_pinned_layout(pin_dir) {
        Ok(()) => Check::ok(
            "pins",
            format!(
                "the maps pinned in {} have this version's layout (reused by `run`)",
                pin_dir.display()
            ),
        ),
        Err(e) => {
            let ifaces = pins::Pins::new(pin_dir).linked_ifaces();
            let iface = ifaces.first().map_or("IFACE", String::as_str);
            Check::fail(
                "pins",
                format!("{e:#}"),
                format!(
                    "sip-ka detach --iface {iface} --pin-dir {} (after stopping the daemon there)",
                    pin_dir.display()
                ),
            )
        }
    })
}

/// Capability bits (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// This process's effective capability set (CapEff in /proc/self/status).
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub fn has_cap(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

/// The capabilities `run` needs that `set` lacks: CAP_NET_ADMIN, and
/// CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN, which the kernel takes in
/// place of both).
pub fn missing_caps(set: u64) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !has_cap(set, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has_cap(set, CAP_SYS_ADMIN) {
        if !has_cap(set, CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has_cap(set, CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    missing
}

/// The capabilities this process would give `sip-ka run` started from
/// the same shell.
pub fn capabilities(set: Option<u64>) -> Check {
    let uid = unsafe { libc::geteuid() };
    let who = if uid == 0 {
        "root".to_string()
    } else {
        format!("uid {uid}")
    };
    let unit = "the packaged sip-ka.service grants CAP_BPF CAP_NET_ADMIN CAP_PERFMON \
                (AmbientCapabilities=)";
    let Some(set) = set else {
        return Check::warn(
            "capabilities",
            format!("{who}: cannot read CapEff in /proc/self/status"),
            format!("run as root, or with CAP_BPF CAP_NET_ADMIN CAP_PERFMON; {unit}"),
        );
    };
    let missing = missing_caps(set);
    if missing.is_empty() {
        Check::ok(
            "capabilities",
            format!(
                "{who} (effective set {set:#x}) has CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, \
                 what `sip-ka run` needs (the packaged service grants these three)"
            ),
        )
    } else {
        Check::fail(
            "capabilities",
            format!(
                "{who} without {} (effective set {set:#x}): `sip-ka run` started from here \
                 cannot create the maps or load and attach the program",
                missing.join(", ")
            ),
            format!("run as root, or with CAP_BPF CAP_NET_ADMIN CAP_PERFMON: {unit}"),
        )
    }
}

/// Can this process create entries in `dir` (which exists)? Tried with a
/// directory made and removed at once (a read-only mount, permissions
/// and ACLs all answer the same way).
fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".sip-ka-doctor-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// The state directory (the edge's journal) and the pin-dir lock's
/// directory, each writable by this process or creatable in the nearest
/// directory that exists.
pub fn state_dirs(state_dir: &Path, pin_dir: &Path) -> Check {
    let lock = pins::lock_path(pin_dir);
    let lock_dir = lock.parent().unwrap_or(Path::new("/run"));
    let mut found = Vec::new();
    for (what, dir) in [("state", state_dir), ("pin-dir lock", lock_dir)] {
        if found
            .iter()
            .any(|(_, d, _): &(&str, PathBuf, String)| d == dir)
        {
            continue;
        }
        let at = existing_ancestor(dir);
        let note = if at == dir {
            "is writable".to_string()
        } else {
            format!("can be created ({} is writable)", at.display())
        };
        if !at.is_dir() {
            return Check::fail(
                "state dir",
                format!(
                    "{what} directory {}: {} is not a directory",
                    dir.display(),
                    at.display()
                ),
                "pass --state-dir DIR naming a directory",
            );
        }
        if let Err(e) = writable(&at) {
            return Check::fail(
                "state dir",
                format!(
                    "{what} directory {}: cannot write in {} ({e})",
                    dir.display(),
                    at.display()
                ),
                "make it writable for the daemon's user (the packaged service's \
                 RuntimeDirectory=sip-ka makes /run/sip-ka), or pass --state-dir DIR",
            );
        }
        found.push((what, dir.to_path_buf(), note));
    }
    let parts: Vec<String> = found
        .iter()
        .map(|(what, dir, note)| format!("{what} {} {note}", dir.display()))
        .collect();
    Check::ok("state dir", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_compare() {
        assert_eq!(parse_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(kernel("5.15.0").status, super::super::report::Status::Fail);
        assert_eq!(kernel("5.18.0").status, super::super::report::Status::Ok);
        assert_eq!(kernel("6.1.0").status, super::super::report::Status::Ok);
    }

    #[test]
    fn capabilities_the_daemon_needs() {
        let bit = |c: u32| 1u64 << c;
        assert!(missing_caps(bit(CAP_BPF) | bit(CAP_NET_ADMIN) | bit(CAP_PERFMON)).is_empty());
        assert!(missing_caps(bit(CAP_SYS_ADMIN) | bit(CAP_NET_ADMIN)).is_empty());
        assert_eq!(
            missing_caps(bit(CAP_BPF) | bit(CAP_NET_ADMIN)),
            vec!["CAP_PERFMON"]
        );
        assert_eq!(
            missing_caps(0),
            vec!["CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"]
        );
        assert!(missing_caps(0x1ff_feff_ffff).is_empty());
    }

    #[test]
    fn a_pin_dir_under_tmp_is_not_on_a_bpffs() {
        let c = bpffs(Path::new("/tmp/sip-ka-doctor-unit/pins"), true);
        assert_eq!(c.status, super::super::report::Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().contains("mount -t bpf bpf /sys/fs/bpf"));
    }
}
