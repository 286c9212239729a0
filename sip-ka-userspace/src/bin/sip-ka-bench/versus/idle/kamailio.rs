//! Kamailio 5.6 for the idle-connection part: TCP, TLS (OpenSSL, the tls
//! module) and secure WebSocket (xhttp and websocket modules) listeners
//! answering CRLF pings, and its shared memory read over its control
//! socket (ctl module, `kamcmd core.shmmem`).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sip_ka::lab::{self, Lab, SERVER_V4};

pub(super) use crate::versus::servers::SIP_PORT;
/// Kamailio's TLS; the edge serves TLS on its TCP port.
pub(super) const KAM_TLS_PORT: u16 = 5061;
/// Both servers' WebSocket listeners (Kamailio's through xhttp).
pub(super) const WS_PORT: u16 = 8080;
pub(super) const WSS_PORT: u16 = 8443;

/// The configuration: CRLF pings answered on every stream (tcp_crlf_ping),
/// connections kept for an hour of silence, room for `conns` of them.
fn cfg(modules: &Path, dir: &Path, conns: u64) -> String {
    format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{ip}:{sip}
listen=tcp:{ip}:{sip}
listen=tls:{ip}:{tls}
listen=tcp:{ip}:{ws}
listen=tls:{ip}:{wss}
enable_tls=yes
tcp_crlf_ping=yes
tcp_accept_no_cl=yes
tcp_connection_lifetime=3605
tcp_max_connections={max}
tls_max_connections={max}
open_files_limit={files}
mpath="{modules}"
loadmodule "pv.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "ctl.so"
loadmodule "tls.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
modparam("ctl", "binrpc", "unix:{dir}/kamailio_ctl")
modparam("tls", "config", "{dir}/tls.cfg")
modparam("websocket", "sub_protocols", 1)

request_route {{
    if (is_method("OPTIONS")) {{
        options_reply();
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
    exit;
}}

event_route[xhttp:request] {{
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
        if (ws_handle_handshake()) {{
            exit;
        }}
    }}
    xhttp_reply("404", "Not Found", "", "");
}}
"#,
        ip = SERVER_V4,
        sip = SIP_PORT,
        tls = KAM_TLS_PORT,
        ws = WS_PORT,
        wss = WSS_PORT,
        max = conns + 1000,
        // The part raised its own limit to this; Kamailio inherits it.
        files = conns + 1024,
        modules = modules.display(),
        dir = dir.display(),
    )
}

fn tls_cfg(cert: &Path, key: &Path) -> String {
    format!(
        "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n\
         private_key = {}\ncertificate = {}\n",
        key.display(),
        cert.display()
    )
}

/// Kamailio in the server namespace with its control socket in `dir`;
/// stopped (its workers by pid) when dropped.
pub(super) struct Kamailio {
    server: crate::versus::servers::Kamailio,
    dir: std::path::PathBuf,
}

impl Kamailio {
    /// Starts it with shared memory for `conns` connections.
    pub(super) fn start(
        lab: &Lab,
        dir: &Path,
        modules: &Path,
        cert: &Path,
        key: &Path,
        conns: u64,
    ) -> Result<Kamailio> {
        for m in ["tls.so", "websocket.so", "xhttp.so", "ctl.so"] {
            if !modules.join(m).is_file() {
                bail!(
                    "Kamailio's {m} not found in {} (kamailio-tls-modules, \
                     kamailio-websocket-modules)",
                    modules.display()
                );
            }
        }
        std::fs::write(dir.join("tls.cfg"), tls_cfg(cert, key))?;
        // OpenSSL's connections take about 50 KB of shared memory each.
        let shm_mb = (256 + conns * 64 / 1024).to_string();
        let server = crate::versus::servers::Kamailio::start_cfg(
            lab,
            dir,
            "kamailio-idle",
            &cfg(modules, dir, conns),
            &["-m", &shm_mb, "-M", "32"],
        )?;
        let k = Kamailio {
            server,
            dir: dir.to_path_buf(),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while k.shm_used().is_err() {
            if Instant::now() > until {
                bail!("Kamailio's control socket did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(k)
    }

    /// The main process and every process it forked.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.server.pids()
    }

    /// Bytes of shared memory in use, with the allocator's overhead
    /// (`real_used` of `core.shmmem`).
    pub(super) fn shm_used(&self) -> Result<u64> {
        let sock = format!("unix:{}/kamailio_ctl", self.dir.display());
        let out = lab::run(Command::new("kamcmd").args(["-s", &sock, "core.shmmem"]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                (k.trim() == "real_used").then(|| v.trim().parse().ok())?
            })
            .context("core.shmmem: no real_used")
    }

    pub(super) fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}
