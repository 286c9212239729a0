//! CPU accounting: busy time of the whole machine (/proc/stat), of this
//! thread and of waited-for children (getrusage), of given processes and
//! kernel threads (schedstat), and the threaded-NAPI kernel threads of a
//! veth whose receive work is to be counted apart.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab;

/// Busy CPU seconds of the whole machine: user + nice + system + irq +
/// softirq from the first line of /proc/stat.
pub(crate) fn machine_busy() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    if f.len() < 7 {
        bail!("unexpected /proc/stat line {line:?}");
    }
    let ticks = f[0] + f[1] + f[2] + f[5] + f[6];
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// CPU seconds (user + system) of the calling thread.
pub(crate) fn thread_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into `ru` only.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds the scheduler counted for every thread of `pids`
/// (/proc/PID/task/TID/schedstat, nanoseconds on CPU).
pub(crate) fn tasks_cpu(pids: &[u32]) -> f64 {
    let mut ns: u64 = 0;
    for pid in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns as f64 * 1e-9
}

/// Kernel threads of threaded NAPI ("napi/<dev>-<id>").
fn napi_threads() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                let comm = comm.trim_end().to_string();
                if comm.starts_with("napi/") {
                    out.push((pid, comm));
                }
            }
        }
    }
    out
}

/// Switches `dev` in namespace `ns` to threaded NAPI (with GRO on, so the
/// device uses NAPI even without XDP) and returns the NAPI threads that
/// appeared.
pub(crate) fn threaded_napi(ns: &str, dev: &str) -> Result<Vec<u32>> {
    let before: Vec<u32> = napi_threads().into_iter().map(|(p, _)| p).collect();
    let script =
        format!("ethtool -K {dev} gro on >/dev/null && echo 1 > /sys/class/net/{dev}/threaded");
    // `ip netns exec` mounts the namespace's own /sys for the command.
    lab::run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &script]))
        .with_context(|| format!("enabling threaded NAPI on {dev}"))?;
    // Recent kernels show the whole name; older ones cut it at 15 characters.
    let want = format!("napi/{dev}-");
    let matches =
        |comm: &str| comm.starts_with(&want) || (comm.len() == 15 && want.starts_with(comm));
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let new: Vec<u32> = napi_threads()
            .into_iter()
            .filter(|(p, comm)| !before.contains(p) && matches(comm))
            .map(|(p, _)| p)
            .collect();
        if !new.is_empty() || Instant::now() > deadline {
            return Ok(new);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds of the children this process has waited for (sipp, through
/// nsenter and timeout, which wait for theirs).
pub(crate) fn children_cpu() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into `ru` only.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
