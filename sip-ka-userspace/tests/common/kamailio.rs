//! Kamailio as registrar and proxy behind the edge (the PBX of the
//! real-phone tests), started in a lab's server namespace from a
//! generated configuration; a scratch directory; process-tree helpers.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sip_ka::lab::{Lab, SERVER_V4};

use super::edge::PBX_PORT;

/// A scratch directory removed however the test ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ska-phones-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kamailio's module directory (Debian puts it under the multiarch path).
pub fn kamailio_modules() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/lib/kamailio/modules")];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("kamailio/modules"));
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("registrar.so").is_file() && d.join("usrloc.so").is_file())
        .expect("Kamailio's modules (registrar.so, usrloc.so) not found: `cargo xtask setup`")
}

/// Kamailio as registrar and proxy, behind the edge. It stores the Path
/// the edge adds (so calls to a phone go back through the edge and over
/// the phone's flow) or, for a phone without outbound (no Path), the
/// address the REGISTER came from (the edge, which finds the phone by
/// its registered Contact), answers outbound REGISTERs with
/// `Require: outbound` (without it a phone starts no keep-alive) and
/// logs every request and reply it gets with a `SKA-` marker the test
/// reads. The edge's own
/// qualify OPTIONS carry one Via; a phone's request relayed by the edge
/// carries two or more, the second the phone's own (its transport).
pub fn kamailio_cfg(modules: &Path) -> String {
    format!(
        r#"#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{ip}:{port}
mpath="{modules}"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 0)
modparam("registrar", "outbound_mode", 1)
modparam("registrar", "received_avp", "$avp(RECEIVED)")

request_route {{
    xlog("L_ALERT", "SKA-REQ $rm vias=$hdrc(Via) src=$si:$sp phone-via=$(hdr(Via)[1]{{s.select,0,;}}) ua=$ua\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && $hdrc(Via) == 1) {{
        options_reply();
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            if (t_check_trans()) t_relay();
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("REGISTER")) {{
        # A phone without outbound gets no Path from the edge: it is
        # reached where its REGISTER came from (the edge), as a PBX
        # reaches phones behind NAT.
        if (!is_present_hf("Path")) {{
            $avp(RECEIVED) = "sip:" + $si + ":" + $sp;
        }}
        if (save("location")) {{
            xlog("L_ALERT", "SKA-REGISTERED $tU\n");
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay();
        exit;
    }}
    if (is_method("INVITE")) record_route();
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}

    t_relay();
    exit;
}}

onreply_route {{
    xlog("L_ALERT", "SKA-REPLY $rs $rm src=$si:$sp\n");
}}
"#,
        ip = SERVER_V4,
        port = PBX_PORT,
        modules = modules.display(),
    )
}

/// Kamailio in the server namespace, in the foreground, logging to a
/// file. Stopped with SIGTERM (then its workers by pid) when dropped.
pub struct Kamailio {
    child: Child,
    log: PathBuf,
}

impl Kamailio {
    pub fn start(lab: &Lab, dir: &Path) -> Kamailio {
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg(&kamailio_modules())).expect("writing kamailio.cfg");
        let check = super::run_capture(Command::new("kamailio").arg("-c").arg("-f").arg(&cfg));
        assert!(
            check.status.success(),
            "kamailio -c rejected the configuration: {}",
            super::text(&check)
        );
        let log = dir.join("kamailio.log");
        let child = lab
            .server("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&cfg)
            .arg("-w")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("kamailio.log"))
            .spawn()
            .expect("starting kamailio in the server namespace");
        Kamailio { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `SKA-` lines of the log, marker onwards.
    pub fn events(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.find("SKA-").map(|i| l[i..].to_string()))
            .collect()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }

    /// Waits (bounded) until `n` events start with `prefix`.
    #[track_caller]
    pub fn wait_for(&self, prefix: &str, n: usize, within: Duration, context: &dyn Fn() -> String) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.count(prefix) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Kamailio did not log {n} x `{prefix}` within {within:?}; its events:\n{}\n\
             its log tail:\n{}\n{}",
            self.events().join("\n"),
            tail(&self.log(), 15),
            context()
        );
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let workers = descendants(self.child.id());
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Only the processes this Kamailio forked, by pid.
        for pid in workers {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every descendant of `pid` (/proc/*/stat parent pids).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            break;
        };
        for e in rd.flatten() {
            let Ok(c) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{c}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(p) && !out.contains(&c) && out.len() < 256 {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
