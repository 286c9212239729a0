//! The daemon's control socket (`/run/sip-ka/<pin dir name>.sock`, next to
//! the pin-dir lock; mode 0600, root peers only): one JSON request line,
//! one JSON reply line. `sip-ka config get/set` talk to it while a daemon
//! runs; SIGHUP re-reads the file through the same code. A change is
//! checked whole before anything is written: a bad one changes nothing.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, MapData};
use serde::{Deserialize, Serialize};
use sip_ka_common::Config;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
};

use super::history::{History, Identity, StatusInfo};
use super::settings::{self, Entry, FileValues, Raw, Source, LIVE_KEYS};
use crate::{
    bpf::{config_keys, pins},
    edge::{Edge, EdgeConfig},
    util::{clock, lock::lock},
};

/// Where the control socket of `pin_dir` is.
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    pins::lock_path(pin_dir).with_extension("sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Get,
    Set {
        key: String,
        value: String,
    },
    /// What `sip-ka status` shows.
    Status,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusInfo>,
}

/// What the daemon was given and what it changed since.
pub struct State {
    pub flags: BTreeMap<String, Raw>,
    pub file: FileValues,
    pub live: BTreeMap<String, Raw>,
    /// Origin of each fast-path key's value in CONFIG.
    pub fast_src: BTreeMap<String, Source>,
    pub entries: Vec<Entry>,
    pub dialog_idle_timeout: u64,
}

/// What the daemon takes from a merged configuration.
pub struct Derived {
    pub entries: Vec<Entry>,
    /// Checked; `None` in offload mode.
    pub edge: Option<EdgeConfig>,
    /// As given (empty: keep the ports in place).
    pub sip_ports: Vec<u16>,
    pub log_level: log::LevelFilter,
    pub dialog_idle_timeout: u64,
    /// Checked; in both modes (offload mode gathers no evidence).
    pub shield: crate::shield::Settings,
}

/// Merges the layers (the command of `run`, flags, file, live) and
/// checks the result as a start would.
pub type Resolver = fn(
    &clap::Command,
    &BTreeMap<String, Raw>,
    &FileValues,
    &BTreeMap<String, Raw>,
) -> Result<Derived>;

/// The running daemon's settings and the places they go.
pub struct Daemon {
    /// `run`'s command: its flags are the keys.
    pub cmd: clap::Command,
    pub resolve: Resolver,
    pub file_path: Option<PathBuf>,
    /// RUST_LOG is set: it, not `log_level`, filters the log.
    pub rust_log: bool,
    pub config_map: Mutex<Array<MapData, Config>>,
    pub ports_map: Mutex<Array<MapData, u8>>,
    pub edge: Option<Arc<Edge>>,
    /// Bans and their evidence (every mode).
    pub shield: Arc<crate::shield::Shield>,
    /// Serialises changes; taken before the maps' locks and the edge's,
    /// never by the edge.
    pub state: Mutex<State>,
    pub identity: Identity,
    pub started: std::time::Instant,
    /// The last minute of STATS, sampled by the daemon's tick.
    pub history: Mutex<History>,
}

/// The origin of a fast-path key at start.
pub fn fast_source(key: &str, file: &FileValues, pinned: &Config, iface: bool) -> Source {
    let get = |cfg: &Config| config_keys::get(cfg, key).ok();
    if file.fast.contains_key(key) {
        Source::File
    } else if iface && matches!(key, "own_mac" | "broadcast_v4") {
        Source::Interface
    } else if get(pinned) != get(&Config::DEFAULT) {
        Source::Pinned
    } else {
        Source::Default
    }
}

impl Daemon {
    /// Every key's effective value and origin.
    pub fn get(&self) -> Result<Vec<Entry>> {
        let st = lock(&self.state);
        let cfg = pins::read_config(&lock(&self.config_map))?;
        let mut out = st.entries.clone();
        for e in out.iter_mut().filter(|e| e.key == "sip_port") {
            let ports = pins::sip_ports(&cfg);
            e.value = format!("{ports:?}");
            if e.source == Source::Default && ports != [5060] {
                e.source = Source::Pinned;
            }
        }
        for (key, _) in config_keys::KEYS {
            out.push(Entry {
                key: key.to_string(),
                value: settings::toml_scalar(&config_keys::get(&cfg, key)?),
                source: st.fast_src.get(*key).copied().unwrap_or(Source::Default),
                live: true,
            });
        }
        Ok(out)
    }

    /// `config set KEY VALUE`: all of it or nothing.
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        let key = if key == "sip_ports" { "sip_port" } else { key };
        let mut st = lock(&self.state);
        if settings::is_fast_key(key) {
            let file = st.file.clone();
            let live = st.live.clone();
            self.commit(&mut st, file, live, &[(key.to_string(), value.to_string())])?;
            st.fast_src.insert(key.to_string(), Source::Live);
            return Ok(());
        }
        let raw = settings::parse_live(&self.cmd, key, value).map_err(|e| anyhow!("{e}"))?;
        if !LIVE_KEYS.contains(&key) {
            bail!(
                "{key} cannot change while the daemon runs: restart sip-ka to change it \
                 (in the file or on the command line)"
            );
        }
        let mut live = st.live.clone();
        live.insert(key.to_string(), raw);
        let file = st.file.clone();
        self.commit(&mut st, file, live, &[])
    }

    /// SIGHUP: the file again. Keys it changed take effect (over an
    /// earlier live change; a flag still wins); restart-only keys are
    /// logged and kept; a bad file changes nothing.
    pub fn reload(&self) {
        let Some(path) = &self.file_path else {
            log::warn!("SIGHUP: no --config file to re-read");
            return;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                log::error!("SIGHUP: reading {}: {e}; nothing changed", path.display());
                return;
            }
        };
        let mut new = match settings::parse_file(&self.cmd, &text) {
            Ok(f) => f,
            Err(e) => {
                for r in &e.0 {
                    log::error!("SIGHUP: {}: {r}", path.display());
                }
                log::error!("SIGHUP: {} refused; nothing changed", path.display());
                return;
            }
        };
        let mut st = lock(&self.state);
        let mut live = st.live.clone();
        let mut changed = Vec::new();
        let keys: std::collections::BTreeSet<String> =
            st.file.run.keys().chain(new.run.keys()).cloned().collect();
        for k in keys {
            if st.file.run.get(&k) == new.run.get(&k) {
                continue;
            }
            if !LIVE_KEYS.contains(&k.as_str()) {
                log::warn!(
                    "SIGHUP: {k} changed in {}: it needs a restart; not applied",
                    path.display()
                );
                match st.file.run.get(&k) {
                    Some(old) => new.run.insert(k.clone(), old.clone()),
                    None => new.run.remove(&k),
                };
                continue;
            }
            if st.flags.contains_key(&k) {
                log::warn!("SIGHUP: {k} changed in the file, but the command line sets it");
            }
            live.remove(&k);
            changed.push(k);
        }
        let mut fast = Vec::new();
        let fast_keys: std::collections::BTreeSet<String> = st
            .file
            .fast
            .keys()
            .chain(new.fast.keys())
            .cloned()
            .collect();
        for k in fast_keys {
            if st.file.fast.get(&k) == new.fast.get(&k) {
                continue;
            }
            let v = match new.fast.get(&k) {
                Some(v) => v.clone(),
                None => config_keys::get(&Config::DEFAULT, &k).unwrap_or_default(),
            };
            fast.push((k.clone(), v));
            changed.push(k);
        }
        let new_fast = new.fast.clone();
        match self.commit(&mut st, new, live, &fast) {
            Ok(()) => {
                for (k, _) in &fast {
                    let src = if new_fast.contains_key(k) {
                        Source::File
                    } else {
                        Source::Default
                    };
                    st.fast_src.insert(k.clone(), src);
                }
                log::info!(
                    "SIGHUP: {} re-read; changed: {}",
                    path.display(),
                    if changed.is_empty() {
                        "nothing".to_string()
                    } else {
                        changed.join(", ")
                    }
                );
            }
            Err(e) => log::error!("SIGHUP: {} refused, nothing changed: {e:#}", path.display()),
        }
    }

    /// Checks the new layers whole, then writes CONFIG and SIP_PORTS and
    /// retunes the edge.
    fn commit(
        &self,
        st: &mut State,
        file: FileValues,
        live: BTreeMap<String, Raw>,
        fast: &[(String, String)],
    ) -> Result<()> {
        let eff = (self.resolve)(&self.cmd, &st.flags, &file, &live)?;
        if let Some(e) = eff.entries.iter().find(|e| {
            !e.live
                && st
                    .entries
                    .iter()
                    .any(|old| old.key == e.key && old.value != e.value)
        }) {
            bail!(
                "{} cannot change while the daemon runs: restart sip-ka",
                e.key
            );
        }
        let map = lock(&self.config_map);
        let mut cfg = pins::read_config(&map)?;
        for (k, v) in fast {
            config_keys::set(&mut cfg, k, v)?;
        }
        let old_ports = st.entries.iter().find(|e| e.key == "sip_port");
        let new_ports = eff.entries.iter().find(|e| e.key == "sip_port");
        let mut map = map;
        if old_ports != new_ports && !eff.sip_ports.is_empty() {
            pins::set_sip_ports(&mut lock(&self.ports_map), &mut cfg, &eff.sip_ports)?;
        }
        map.set(0, cfg, 0)?;
        drop(map);
        if let (Some(edge), Some(ec)) = (&self.edge, &eff.edge) {
            let idle = (eff.dialog_idle_timeout != st.dialog_idle_timeout).then(|| {
                (eff.dialog_idle_timeout > 0).then(|| Duration::from_secs(eff.dialog_idle_timeout))
            });
            edge.retune(ec, idle, clock::now_ms());
        }
        self.shield.configure(&eff.shield);
        if !self.rust_log {
            crate::logs::set_level(eff.log_level);
        }
        st.dialog_idle_timeout = eff.dialog_idle_timeout;
        st.file = file;
        st.live = live;
        st.entries = eff.entries;
        Ok(())
    }

    /// Records STATS (the tick calls it after publishing into it).
    pub fn sample(&self, stats: &crate::bpf::stats::StatsMaps) {
        match pins::counter_totals(stats) {
            Ok(t) => lock(&self.history).push(std::time::Instant::now(), t),
            Err(e) => log::warn!("reading STATS for the status history: {e:#}"),
        }
    }

    pub fn status(&self) -> StatusInfo {
        StatusInfo {
            identity: self.identity.clone(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            dialogs: self.edge.as_ref().map(|e| e.dialogs().len() as u64),
            connections: self.edge.as_ref().map(|e| {
                let open = e.transports.open_counts();
                [open.tcp, open.tls, open.ws, open.wss, open.handshaking()]
            }),
            history: lock(&self.history).span(),
            store: self.edge.as_ref().and_then(|e| {
                let st = e.store.as_ref()?;
                Some(super::history::StoreStatus {
                    url: st.cfg.url.clone(),
                    node_id: st.cfg.node_id.clone(),
                    up: st.is_up(),
                    replicas: e.dialogs().replicas_len() as u64,
                })
            }),
        }
    }

    fn answer(&self, req: Request) -> Reply {
        if let Request::Status = req {
            return Reply {
                ok: true,
                status: Some(self.status()),
                ..Reply::default()
            };
        }
        let result = match req {
            Request::Status => Ok(Vec::new()),
            Request::Get => self.get(),
            Request::Set { key, value } => self.set(&key, &value).and_then(|()| self.get()),
        };
        match result {
            Ok(values) => Reply {
                ok: true,
                values,
                ..Reply::default()
            },
            Err(e) => Reply {
                error: Some(format!("{e:#}")),
                ..Reply::default()
            },
        }
    }
}

/// Binds the socket, root only (a stale one a killed daemon left goes:
/// the pin-dir lock is ours).
pub fn bind(pin_dir: &Path) -> Result<UnixListener> {
    let path = socket_path(pin_dir);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(l)
}

/// Longest request line.
const MAX_REQUEST: u64 = 64 * 1024;

pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client(stream, daemon)).await;
        });
    }
}

async fn client(mut stream: UnixStream, daemon: Arc<Daemon>) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    // The request is read (and dropped) from a refused peer too, so that
    // the refusal is not lost to a reset while the peer still writes.
    let mut line = String::new();
    tokio::io::BufReader::new((&mut stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let reply = if uid != 0 {
        log::warn!("control socket: uid {uid} refused (root only)");
        Reply {
            error: Some(format!(
                "permission denied: uid {uid}: the control socket is root only"
            )),
            ..Reply::default()
        }
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let d = daemon.clone();
                tokio::task::spawn_blocking(move || d.answer(req))
                    .await
                    .unwrap_or_else(|e| Reply {
                        error: Some(format!("{e}")),
                        ..Reply::default()
                    })
            }
            Err(e) => Reply {
                error: Some(format!("bad request: {e}")),
                ..Reply::default()
            },
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    stream.write_all(&out).await
}

/// Asks the daemon of `pin_dir`; `None` when none listens there.
pub fn request(pin_dir: &Path, req: &Request) -> Result<Option<Reply>> {
    let path = socket_path(pin_dir);
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "permission denied on the control socket {}: only root may read or change \
             a running daemon's configuration",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    // A refusal may come before the request is all written: read it anyway.
    let written = s.write_all(&line);
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    let reply: Reply = match serde_json::from_str(&answer) {
        Ok(r) => r,
        Err(e) => {
            written.with_context(|| format!("writing to {}", path.display()))?;
            return Err(e)
                .with_context(|| format!("the daemon's answer on {}: {answer:?}", path.display()));
        }
    };
    Ok(Some(reply))
}
