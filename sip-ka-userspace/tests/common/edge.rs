//! Helpers for the edge-mode lab tests: the edge's and the PBX's
//! addresses, an edge started in a fresh lab, sipp runs that end with the
//! test, and `sip-ka dialogs --json`.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use sip_ka::lab::{self, Lab, SERVER_V4};

/// Where the edge listens (UDP, TCP) in the server namespace.
pub const EDGE_PORT: u16 = 5060;
/// Where the PBX (sipp, or a socket of the test) listens, behind the edge.
pub const PBX_PORT: u16 = 5080;

pub fn edge_addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), EDGE_PORT)
}

pub fn pbx_addr() -> SocketAddr {
    SocketAddr::new(SERVER_V4.into(), PBX_PORT)
}

/// `sip-ka run` flags for the edge in front of the PBX, then `extra`.
pub fn edge_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--mode",
        "edge",
        "--xdp-mode",
        "native",
        "--listen",
        &edge_addr().to_string(),
        "--upstream",
        &pbx_addr().to_string(),
        "--qualify-frequency",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A fresh lab with the edge running (`extra` flags added).
pub fn start_edge(extra: &[&str]) -> Lab {
    let mut lab = super::lab();
    let args = edge_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    super::start(&mut lab, &args);
    lab
}

/// sipp under `timeout` in the client or the server namespace, run from
/// `dir` (where its scenarios are).
pub fn sipp_in(lab: &Lab, client: bool, dir: &Path, secs: u64) -> Command {
    let mut cmd = if client {
        lab.client("timeout")
    } else {
        lab.server("timeout")
    };
    cmd.current_dir(dir)
        .args(["-k", "2", &secs.to_string(), "sipp"])
        .args(["-nostdin", "-trace_err"]);
    cmd
}

/// A sipp run in the background, stopped (it runs under `timeout`, which
/// passes SIGTERM on) if the test ends before it does.
pub struct Sipp {
    child: Option<Child>,
    what: &'static str,
}

impl Sipp {
    pub fn spawn(mut cmd: Command, what: &'static str) -> Sipp {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sipp ({what}): {e}"));
        Sipp {
            child: Some(child),
            what,
        }
    }

    /// Waits for it to end by itself (bounded by its `timeout` wrapper).
    pub fn wait(mut self) -> Output {
        let c = self.child.take().expect("sipp child");
        c.wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for sipp ({}): {e}", self.what))
    }

    /// SIGTERM (sipp then exits with the status of its calls so far: 0
    /// only if none failed).
    pub fn finish(mut self) -> Output {
        let c = self.child.take().expect("sipp child");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for sipp ({}): {e}", self.what))
    }

    /// Stops it now, whatever its calls were doing.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            super::terminate(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `sip-ka dialogs --json`.
pub fn dialogs(lab: &Lab) -> Vec<serde_json::Value> {
    let out = lab::run(&mut lab.sip_ka(&["dialogs", "--json"]).expect("sip-ka"))
        .expect("sip-ka dialogs --json");
    match serde_json::from_slice(&out.stdout).expect("dialogs JSON") {
        serde_json::Value::Array(a) => a,
        v => panic!("dialogs --json is not an array: {v}"),
    }
}

/// A self-signed certificate for the edge's address, made by `openssl`.
pub fn lab_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=sip-ka-lab"])
        // The address as a DNS name too: mbedTLS 2 (linphone's TLS) checks
        // the name against dNSName entries only, never an iPAddress one.
        .args([
            "-addext",
            &format!("subjectAltName=IP:{SERVER_V4},DNS:{SERVER_V4}"),
        ])
        // An end-entity certificate (openssl makes a CA by default).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(out.status.success(), "openssl: {}", super::text(&out));
    (cert, key)
}
