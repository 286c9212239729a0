//! Running commands: echoed before they run, with a deadline after which
//! the command and everything it started are stopped.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
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

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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
/// At `deadline` the command and its descendants get SIGTERM, then SIGKILL.
pub fn run(
    cmd: &mut Command,
    deadline: Option<Instant>,
    mut on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<Finished> {
    println!("$ {}", describe(cmd));
    let start = Instant::now();
    cmd.stdin(Stdio::null());
    if on_line.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", describe(cmd)))?;
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
            return Ok(Finished {
                status: Some(status),
                elapsed: start.elapsed(),
            });
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            eprintln!("xtask: deadline reached, stopping {}", describe(cmd));
            stop_tree(child.id());
            let _ = child.wait();
            while let Ok(item) = rx.try_recv() {
                show(item);
            }
            return Ok(Finished {
                status: None,
                elapsed: start.elapsed(),
            });
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

/// Sends SIGTERM to `pid` and its descendants, waits up to 10 s, then
/// SIGKILLs what is left.
fn stop_tree(pid: u32) {
    let mut pids = descendants(pid);
    pids.push(pid);
    signal(&pids, "TERM");
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let left: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    if !left.is_empty() {
        signal(&left, "KILL");
    }
}

fn signal(pids: &[u32], sig: &str) {
    let mut c = Command::new("kill");
    c.arg(format!("-{sig}")).arg("--");
    for p in pids {
        c.arg(p.to_string());
    }
    let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn alive(pid: u32) -> bool {
    // A zombie is as good as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => stat_field(&s, 0).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Field `n` (0 = state) after the command name in /proc/PID/stat.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)
}

/// Every process below `pid`, deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                if let Some(pp) = stat_field(&s, 1).and_then(|v| v.parse::<u32>().ok()) {
                    parent_of.push((p, pp));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}
