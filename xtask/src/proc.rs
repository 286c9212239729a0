//! Running commands: echoed before they run, with a deadline after which
//! the command and everything it started are stopped.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicI32, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// The workspace root (the parent of xtask/).
pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            return if dir.is_absolute() {
                dir
            } else {
                root_dir().join(dir)
            };
        }
    }
    root_dir().join("target")
}

/// `cargo`, as the one running this task (falls back to PATH).
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root_dir());
    c
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The first executable `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

/// How a command is shown before it runs.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    let prog = cmd.get_program().to_string_lossy().to_string();
    let prog = if prog == std::env::var("CARGO").unwrap_or_default() {
        "cargo".to_string()
    } else {
        prog
    };
    s.push_str(&prog);
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(' ') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command quietly and returns its stdout, or None if it could not
/// start or failed.
pub fn stdout_of(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Finished {
    /// None when the deadline stopped it.
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn code(&self) -> i32 {
        match self.status {
            Some(s) => s.code().unwrap_or(1),
            None => 124,
        }
    }

    pub fn describe(&self) -> String {
        match self.status {
            None => format!("timed out after {:.0} s", self.elapsed.as_secs_f64()),
            Some(s) if s.success() => format!("ok in {:.1} s", self.elapsed.as_secs_f64()),
            Some(s) => format!("{s} after {:.1} s", self.elapsed.as_secs_f64()),
        }
    }
}

/// Runs `cmd` (stdin closed), echoing it first. `on_line` sees every line
/// of its stdout and stderr (which are still printed where they belong).
/// The command runs in a process group of its own, so everything it
/// starts can be stopped at once: at `deadline` the group gets SIGTERM,
/// then SIGKILL; a SIGINT or SIGTERM to xtask is passed on to the group.
pub fn run(
    cmd: &mut Command,
    deadline: Option<Instant>,
    on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Finished> {
    println!("$ {}", describe(cmd));
    let start = Instant::now();
    cmd.stdin(Stdio::null());
    if on_line.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd.process_group(0);
    prepare_process_groups();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    // A group's id is its leader's pid.
    let group = child.id() as i32;
    RUNNING_GROUP.store(group, Ordering::SeqCst);
    let finished = wait_with_output(cmd, &mut child, group, deadline, on_line);
    RUNNING_GROUP.store(0, Ordering::SeqCst);
    finished.map(|status| Finished {
        status,
        elapsed: start.elapsed(),
    })
}

/// Shows the child's output until it exits (`Some(status)`) or the
/// deadline stops its group (`None`).
fn wait_with_output(
    cmd: &Command,
    child: &mut Child,
    group: i32,
    deadline: Option<Instant>,
    mut on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Option<ExitStatus>> {
    // (from stderr?, line); the channel closes when both pipes have.
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let mut piped = false;
    if let Some(out) = child.stdout.take() {
        piped = true;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((false, line)).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        piped = true;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send((true, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut show = |(is_err, line): (bool, String)| {
        if is_err {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        if let Some(f) = on_line.as_mut() {
            f(&line);
        }
    };
    loop {
        if let Some(status) = child.try_wait()? {
            if piped {
                // The pipes close when the last writer exits (a grandchild
                // may hold them a little longer).
                let until = Instant::now() + Duration::from_secs(5);
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(item) => show(item),
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(_) if Instant::now() > until => break,
                        Err(_) => {}
                    }
                }
            }
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            eprintln!("xtask: deadline reached, stopping {}", describe(cmd));
            stop_group(group);
            while let Ok(item) = rx.try_recv() {
                show(item);
            }
            return Ok(None);
        }
        if piped {
            if let Ok(item) = rx.recv_timeout(Duration::from_millis(100)) {
                show(item);
                while let Ok(item) = rx.try_recv() {
                    show(item);
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The process group of the command `run` is waiting for; 0 when none.
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// Makes xtask the subreaper of what its commands start, and passes
/// SIGINT and SIGTERM on to the running command's group, then dies of
/// the same signal. The command's group is not the terminal's
/// foreground group, so a Ctrl-C would otherwise stop xtask alone and
/// leave the command running.
fn prepare_process_groups() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Descendants orphaned while a command runs come to xtask rather
        // than to init (which may never reap them), so a stopped group's
        // zombies can be collected and seen to be gone.
        // SAFETY: a plain prctl on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only makes async-signal-safe calls.
            unsafe { libc::signal(sig, handler) };
        }
    });
}

extern "C" fn on_signal(sig: libc::c_int) {
    let group = RUNNING_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill, signal and raise are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::kill(-group, sig);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Sends SIGTERM to the group, waits up to 10 s for all of it to exit,
/// then SIGKILLs what is left. Reaps the leader.
fn stop_group(group: i32) {
    signal_group(group, libc::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        reap_exited(group);
        if !group_alive(group) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal_group(group, libc::SIGKILL);
    // SAFETY: the leader is our child; waiting for it cannot block long
    // after SIGKILL.
    unsafe { libc::waitpid(group, std::ptr::null_mut(), 0) };
    reap_exited(group);
}

/// Reaps the group's members that have exited: the leader, and those
/// orphaned since (xtask is their subreaper). A zombie still counts as a
/// member of its group, so this comes before `group_alive`.
fn reap_exited(group: i32) {
    // SAFETY: a plain syscall; it only collects exit statuses.
    while unsafe { libc::waitpid(-group, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

fn signal_group(group: i32, sig: libc::c_int) {
    // SAFETY: a plain syscall; a group that is gone gives ESRCH.
    unsafe { libc::kill(-group, sig) };
}

/// Whether any process of the group is left.
fn group_alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-group, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_stops_the_command_and_what_it_started() {
        // The shell prints its background child's pid, then waits on it.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & echo $!; wait"]);
        let mut pid = None;
        let mut see = |line: &str| pid = pid.or(line.trim().parse::<i32>().ok());
        let deadline = Instant::now() + Duration::from_millis(500);
        let done = run(&mut cmd, Some(deadline), Some(&mut see)).expect("sh starts");
        assert_eq!(done.status, None);
        assert!(done.elapsed < Duration::from_secs(8), "{:?}", done.elapsed);
        let pid = pid.expect("the background pid was printed");
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0;
        assert!(gone, "sleep {pid} outlived the deadline");
    }

    #[test]
    fn a_command_that_finishes_gives_its_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let done = run(
            &mut cmd,
            Some(Instant::now() + Duration::from_secs(60)),
            None,
        )
        .expect("sh starts");
        assert_eq!(done.code(), 3);
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-anywhere").is_none());
    }
}
