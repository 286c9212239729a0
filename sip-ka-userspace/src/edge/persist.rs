//! The edge's dialog table on disk, so that a restarted daemon (after a
//! crash or `kill -9` as well as a clean stop) resumes every live dialog
//! and its session timer.
//!
//! Two files in the state directory (`--state-dir`, by default
//! `/run/sip-ka/<name of the pin directory>`):
//!
//! * `journal`: one JSON line per dialog change, appended with one
//!   `write()` each: an upsert carrying everything the table holds for the
//!   dialog (so replaying any suffix of the journal over an older state
//!   converges to the same result), or a removal.
//! * `snapshot`: every live dialog, one upsert line each, written to
//!   `snapshot.tmp` and renamed over `snapshot` (atomic) when the journal
//!   has grown to several times the number of live dialogs, and at every
//!   start; the journal is then truncated.
//!
//! No fsync: a record is in the page cache once `write()` returns, and a
//! killed process (`kill -9`, a panic, the OOM killer) cannot lose the
//! page cache, only a host crash can. A host crash also ends every call
//! the edge carried (the UAs' NAT bindings and the PBX's state go with
//! it), so the edge does not pay a disk flush per dialog change for it.
//!
//! Reading is forgiving: a line that does not parse (a write cut short by
//! a full disk or a host crash, or a file edited by hand) is skipped with
//! a warning; it never stops the daemon. A `lock` file (flock) keeps two
//! daemons from writing the same journal.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::transport::{Flow, StreamKind};

/// Where state goes when `--state-dir` is not given: one directory per
/// pin directory, so daemons with different `--pin-dir` never share a
/// journal. /run is a tmpfs: the state lives as long as the boot, like
/// the pinned maps it goes with.
pub fn default_state_dir(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sip-ka".to_string());
    Path::new("/run/sip-ka").join(name)
}

/// How the UA of a dialog is reached, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum FlowRecord {
    Udp { addr: SocketAddr },
    Tcp { peer: SocketAddr },
    Tls { peer: SocketAddr },
    Ws { peer: SocketAddr },
    Wss { peer: SocketAddr },
}

/// The connection id a restored stream flow gets: connection ids start at
/// 1 in every process, so 0 names no connection and such a flow is never
/// alive (see [`FlowRecord::restore`]).
pub const GONE_CONN_ID: u64 = 0;

impl FlowRecord {
    pub fn of(flow: &Flow) -> FlowRecord {
        match *flow {
            Flow::Udp(addr) => FlowRecord::Udp { addr },
            Flow::Stream {
                peer,
                kind: StreamKind::Tcp,
                ..
            } => FlowRecord::Tcp { peer },
            Flow::Stream {
                peer,
                kind: StreamKind::Tls,
                ..
            } => FlowRecord::Tls { peer },
            Flow::Stream {
                peer,
                kind: StreamKind::Ws,
                ..
            } => FlowRecord::Ws { peer },
            Flow::Stream {
                peer,
                kind: StreamKind::Wss,
                ..
            } => FlowRecord::Wss { peer },
        }
    }

    /// The flow after a restart. A UDP flow is an address and works as
    /// before. A TCP/TLS connection died with the old process: the flow
    /// keeps its peer and kind but names no connection, so a request from
    /// the PBX for that UA gets 430 Flow Failed (RFC 5626 5.3) until the
    /// UA's next request in the dialog, which arrives on a new connection
    /// and replaces it.
    pub fn restore(self) -> Flow {
        let (peer, kind) = match self {
            FlowRecord::Udp { addr } => return Flow::Udp(addr),
            FlowRecord::Tcp { peer } => (peer, StreamKind::Tcp),
            FlowRecord::Tls { peer } => (peer, StreamKind::Tls),
            FlowRecord::Ws { peer } => (peer, StreamKind::Ws),
            FlowRecord::Wss { peer } => (peer, StreamKind::Wss),
        };
        Flow::Stream {
            id: GONE_CONN_ID,
            peer,
            kind,
        }
    }
}

/// A session timer as stored: absolute expiry, so it resumes on time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Seconds; 0 when the dialog negotiated no timer.
    pub interval: u32,
    /// "uac", "uas" or absent.
    #[serde(default)]
    pub refresher: Option<String>,
    /// Wall-clock milliseconds (unix); absent when no timer runs.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
}

/// Everything the dialog table holds for one dialog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// Absent in the shared store's form (the key holds it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub call_id: String,
    /// "pending", "early", "confirmed" or "terminating".
    pub phase: String,
    pub ua: FlowRecord,
    pub created_unix: u64,
    /// When the dialog entered its phase (unix ms): the stale-dialog sweep
    /// counts from it.
    pub since_ms: u64,
    pub caller_is_ua: bool,
    pub caller_from: String,
    #[serde(default)]
    pub callee_to: Option<String>,
    #[serde(default)]
    pub caller_contact: Option<String>,
    #[serde(default)]
    pub callee_contact: Option<String>,
    pub cseq: u32,
    #[serde(default)]
    pub session: Option<SessionRecord>,
    /// The forks that answered 2xx (RFC 3261 13.2.2.4: each is a dialog
    /// of its own under the one Call-ID).
    #[serde(default)]
    pub forks: Vec<Fork>,
}

/// One fork that answered the INVITE with a 2xx: its tag, the To of its
/// 2xx and its Contact (a reaping BYE to that side needs both).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub tag: String,
    /// Absent in the shared store's form when it is the callee's To.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
}

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Record {
    #[serde(rename = "up")]
    Upsert(Box<DialogRecord>),
    #[serde(rename = "rm")]
    Remove { call_id: String },
}

/// What [`Journal::open`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The live dialogs, in no particular order.
    pub dialogs: Vec<DialogRecord>,
    /// Lines that did not parse (skipped).
    pub skipped: usize,
}

const JOURNAL: &str = "journal";
/// The journal being merged into the snapshot by a background compaction
/// (or left by one a crash interrupted).
const JOURNAL_OLD: &str = "journal.old";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const LOCK: &str = "lock";

/// The journal is compacted once it holds this many records more than
/// [`COMPACT_FACTOR`] times the live dialogs: compaction then costs O(1)
/// per change, amortised.
pub const COMPACT_SLACK: u64 = 4096;
pub const COMPACT_FACTOR: u64 = 4;

/// The open journal of a state directory.
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// Records appended since the last compaction.
    records: u64,
    /// Held for the life of the process (flock, released by the kernel
    /// however the process ends).
    _lock: File,
    write_errors: u64,
    /// Set while a background compaction runs (one at a time).
    merging: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The merge thread, joined before anything else writes the snapshot.
    merge_thread: Option<std::thread::JoinHandle<()>>,
    /// When a left-over `journal.old` was last merged again (ms).
    last_retry_ms: u64,
    /// The journal's last line has no newline (a short write, a crash
    /// mid-write): the next record starts with one, so it is not glued to
    /// the torn line and lost with it.
    torn: bool,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The flock goes with the file: no merge may outlive it.
        if let Some(t) = self.merge_thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("records", &self.records)
            .finish()
    }
}

/// Reads one file of records into `live` (upserts replace, removals
/// delete); unparsable lines are counted and skipped.
fn replay(
    path: &Path,
    live: &mut HashMap<String, DialogRecord>,
    skipped: &mut usize,
) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // Unreadable is not empty: going on would overwrite it with a
        // snapshot that lacks its dialogs.
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = match line {
            Ok(l) => l,
            // An I/O error is not a torn line: stop rather than lose what
            // follows it.
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Upsert(d)) => {
                live.insert(d.call_id.clone(), *d);
            }
            Ok(Record::Remove { call_id }) => {
                live.remove(&call_id);
            }
            Err(e) => {
                *skipped += 1;
                log::warn!(
                    "state: {} line {}: {e}; skipped ({} bytes)",
                    path.display(),
                    n + 1,
                    line.len()
                );
            }
        }
    }
    Ok(())
}

impl Journal {
    /// Opens (creating it if needed) the state directory, takes its lock,
    /// and reads back the live dialogs: the snapshot, then the journal.
    /// The caller restores them and then calls [`Journal::compact`], which
    /// also drops a partial last line before anything is appended after
    /// it.
    pub fn open(dir: &Path) -> Result<(Journal, Loaded)> {
        private_dir(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let lock = private_file(
            OpenOptions::new().create(true).truncate(false).write(true),
            &dir.join(LOCK),
        )
        .with_context(|| format!("opening {}", dir.join(LOCK).display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "state directory {} is in use by another sip-ka ({}); give each daemon its own --state-dir",
                dir.display(),
                std::io::Error::last_os_error()
            );
        }
        let mut live = HashMap::new();
        let mut skipped = 0;
        replay(&dir.join(SNAPSHOT), &mut live, &mut skipped)?;
        replay(&dir.join(JOURNAL_OLD), &mut live, &mut skipped)?;
        replay(&dir.join(JOURNAL), &mut live, &mut skipped)?;
        let file = private_file(
            OpenOptions::new().create(true).append(true),
            &dir.join(JOURNAL),
        )
        .with_context(|| format!("opening {}", dir.join(JOURNAL).display()))?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            file,
            records: 0,
            _lock: lock,
            write_errors: 0,
            merging: Default::default(),
            merge_thread: None,
            last_retry_ms: 0,
            torn: ends_torn(&dir.join(JOURNAL)),
        };
        Ok((
            journal,
            Loaded {
                dialogs: live.into_values().collect(),
                skipped,
            },
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record with a single `write()` (the line and its
    /// newline in one buffer, the file opened O_APPEND), so a process that
    /// dies between two records leaves whole lines. A failed write is
    /// logged (the first, then every 1000th) and the edge carries on: the
    /// dialog still works, only a restart would forget it.
    pub fn append(&mut self, rec: &Record) {
        let mut line = Vec::with_capacity(600);
        if self.torn {
            line.push(b'\n');
        }
        if let Err(e) = serde_json::to_writer(&mut line, rec) {
            log::warn!("state: encoding a record: {e}");
            return;
        }
        line.push(b'\n');
        match self.file.write(&line) {
            Ok(n) if n == line.len() => {
                self.records += 1;
                self.torn = false;
            }
            Ok(n) => {
                self.torn = n > 0 || self.torn;
                self.write_failed(&format!("short write ({n} of {} bytes)", line.len()))
            }
            Err(e) => self.write_failed(&e.to_string()),
        }
    }

    fn write_failed(&mut self, what: &str) {
        if self.write_errors.is_multiple_of(1000) {
            log::warn!(
                "state: writing {}: {what} ({} failure(s) so far); a restart may lose dialogs",
                self.dir.join(JOURNAL).display(),
                self.write_errors + 1
            );
        }
        self.write_errors += 1;
    }

    /// Records appended since the last compaction.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the journal has grown enough to be compacted.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.records > COMPACT_SLACK + COMPACT_FACTOR * live as u64
    }

    /// Writes `live` as the new snapshot (a temporary file renamed over
    /// the old one) and empties the journal. A crash before the rename
    /// leaves the old snapshot and the full journal; after it, the new
    /// snapshot and a journal whose records it already contains (replaying
    /// them again gives the same state).
    pub fn compact<'a>(&mut self, live: impl IntoIterator<Item = &'a DialogRecord>) -> Result<()> {
        // A background merge writes the same files: let it finish.
        if let Some(t) = self.merge_thread.take() {
            let _ = t.join();
        }
        let tmp = self.dir.join(SNAPSHOT_TMP);
        {
            let f = create_private(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            let mut w = std::io::BufWriter::new(f);
            for d in live {
                serde_json::to_writer(&mut w, &Record::Upsert(Box::new(d.clone())))?;
                w.write_all(b"\n")?;
            }
            w.flush()
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT))
            .with_context(|| format!("renaming {} to {SNAPSHOT}", tmp.display()))?;
        remove_if_there(&self.dir.join(JOURNAL_OLD))?;
        self.file
            .set_len(0)
            .with_context(|| format!("truncating {}", self.dir.join(JOURNAL).display()))?;
        self.records = 0;
        self.torn = false;
        Ok(())
    }

    /// Compaction while the edge runs, without holding anything up: the
    /// journal is renamed to `journal.old` and a new one started (O(1),
    /// under the caller's lock), then a thread merges the snapshot and
    /// `journal.old` into a new snapshot and removes `journal.old`. The
    /// live table is never read, so the edge goes on at once. A start
    /// reads snapshot, `journal.old`, journal in that order; a crash at any
    /// point leaves files whose replay gives the same state (records
    /// replayed twice end the same way). Does nothing while a merge runs
    /// or when `journal.old` is left from a failed one (the journal then
    /// grows until the next start compacts it).
    pub fn compact_in_background(&mut self) {
        use std::sync::atomic::Ordering;
        let old = self.dir.join(JOURNAL_OLD);
        if self.merging.swap(true, Ordering::AcqRel) {
            return;
        }
        if old.exists() {
            // A merge failed (a full disk, say): never overwrite its
            // records; merge them again (it is idempotent), once a minute
            // at most, and rotate only once that worked.
            let now = crate::util::clock::now_ms();
            if now.saturating_sub(self.last_retry_ms) < 60_000 {
                self.merging.store(false, Ordering::Release);
                return;
            }
            self.last_retry_ms = now;
            self.spawn_merge();
            return;
        }
        let rotated = std::fs::rename(self.dir.join(JOURNAL), &old).and_then(|()| {
            private_file(
                OpenOptions::new().create(true).append(true),
                &self.dir.join(JOURNAL),
            )
        });
        match rotated {
            Ok(file) => {
                self.file = file;
                self.records = 0;
                self.torn = false;
            }
            Err(e) => {
                log::warn!("state: rotating {}: {e}", self.dir.join(JOURNAL).display());
                self.merging.store(false, Ordering::Release);
                return;
            }
        }
        self.spawn_merge();
    }

    /// Starts the merge thread (the caller set `merging`).
    fn spawn_merge(&mut self) {
        use std::sync::atomic::Ordering;
        if let Some(t) = self.merge_thread.take() {
            // Finished (merging was clear): reap it.
            let _ = t.join();
        }
        let dir = self.dir.clone();
        let merging = self.merging.clone();
        let spawned = std::thread::Builder::new()
            .name("sip-ka-compact".into())
            .spawn(move || {
                match merge(&dir) {
                    Ok(n) => log::debug!("state: {n} dialog(s) in the new snapshot"),
                    Err(e) => log::warn!("state: compacting {}: {e:#}", dir.display()),
                }
                merging.store(false, Ordering::Release);
            });
        match spawned {
            Ok(t) => self.merge_thread = Some(t),
            Err(e) => {
                log::warn!("state: starting the compaction thread: {e}");
                self.merging.store(false, Ordering::Release);
            }
        }
    }

    /// Whether a background compaction is running (tests wait on it).
    pub fn merging(&self) -> bool {
        self.merging.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Whether a file's last byte is not a newline (an empty or absent file
/// is not torn).
fn ends_torn(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

/// The state directory, mode 0700 whatever the umask (an existing one is
/// tightened): the journal names every caller and callee.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Opens a state file mode 0600 whatever the umask (an existing one is
/// tightened), never through a symbolic link.
pub fn private_file(opts: &mut OpenOptions, path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let f = opts
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// [`File::create`] for a state file: [`private_file`].
fn create_private(path: &Path) -> std::io::Result<File> {
    private_file(
        OpenOptions::new().write(true).create(true).truncate(true),
        path,
    )
}

fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// The background half of [`Journal::compact_in_background`]: snapshot
/// plus `journal.old` into a new snapshot; returns the dialogs in it.
fn merge(dir: &Path) -> Result<usize> {
    let mut live = HashMap::new();
    let mut skipped = 0;
    replay(&dir.join(SNAPSHOT), &mut live, &mut skipped)?;
    replay(&dir.join(JOURNAL_OLD), &mut live, &mut skipped)?;
    let n = live.len();
    let tmp = dir.join(SNAPSHOT_TMP);
    {
        let f = create_private(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        for d in live.into_values() {
            serde_json::to_writer(&mut w, &Record::Upsert(Box::new(d)))?;
            w.write_all(b"\n")?;
        }
        w.flush()
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT))
        .with_context(|| format!("renaming {} to {SNAPSHOT}", tmp.display()))?;
    remove_if_there(&dir.join(JOURNAL_OLD))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sip-ka-persist-{}-{name}-{}",
            std::process::id(),
            crate::util::clock::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rec(call_id: &str, cseq: u32) -> DialogRecord {
        DialogRecord {
            call_id: call_id.to_string(),
            phase: "confirmed".into(),
            ua: FlowRecord::Udp {
                addr: "198.18.0.2:5062".parse().unwrap(),
            },
            created_unix: 1_700_000_000,
            since_ms: 1_700_000_000_000,
            caller_is_ua: true,
            caller_from: "<sip:a@x>;tag=1".into(),
            callee_to: Some("<sip:b@y>;tag=2".into()),
            caller_contact: Some("sip:a@198.18.0.2:5062".into()),
            callee_contact: None,
            cseq,
            session: Some(SessionRecord {
                interval: 90,
                refresher: Some("uac".into()),
                expires_at_ms: Some(1_700_000_090_000),
            }),
            forks: vec![Fork {
                tag: "2".into(),
                to: "<sip:b@y>;tag=2".into(),
                contact: None,
            }],
        }
    }

    fn sorted(mut v: Vec<DialogRecord>) -> Vec<DialogRecord> {
        v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        v
    }

    #[test]
    fn journal_replays_upserts_and_removals_and_survives_garbage() {
        let dir = scratch("replay");
        {
            let (mut j, loaded) = Journal::open(&dir).unwrap();
            assert!(loaded.dialogs.is_empty());
            j.append(&Record::Upsert(Box::new(rec("a", 1))));
            j.append(&Record::Upsert(Box::new(rec("b", 1))));
            j.append(&Record::Upsert(Box::new(rec("a", 2))));
            j.append(&Record::Remove {
                call_id: "b".into(),
            });
            j.append(&Record::Upsert(Box::new(rec("c", 7))));
        }
        // A crash in the middle of a line, and junk.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"op\":\"up\",\"call_id\":\"d\",\"ph")
            .unwrap();
        drop(f);
        let (mut j, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.skipped, 1);
        assert_eq!(
            sorted(loaded.dialogs.clone()),
            vec![rec("a", 2), rec("c", 7)]
        );
        // Compaction drops the partial line; new records replay after it.
        j.compact(&loaded.dialogs).unwrap();
        j.append(&Record::Remove {
            call_id: "a".into(),
        });
        drop(j);
        let (_, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.skipped, 0);
        assert_eq!(loaded.dialogs, vec![rec("c", 7)]);
        // Binary garbage and a record of the wrong shape: skipped.
        std::fs::write(
            dir.join(SNAPSHOT),
            b"\xff\xfe\x00garbage\n{\"op\":\"up\"}\n{\"op\":\"zz\",\"call_id\":\"q\"}\n",
        )
        .unwrap();
        let (_, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.skipped, 3);
        assert!(loaded.dialogs.is_empty(), "{:?}", loaded.dialogs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_is_readable_by_root_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = scratch("modes");
        // As an earlier version left it: world-readable.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join(JOURNAL), b"").unwrap();
        std::fs::set_permissions(dir.join(JOURNAL), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let (mut j, _) = Journal::open(&dir).unwrap();
        j.compact(std::iter::once(&rec("secret-call-id", 1)))
            .unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [LOCK, JOURNAL, SNAPSHOT] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        // A snapshot.tmp planted as a link is not written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(SNAPSHOT_TMP)).unwrap();
        assert!(j.compact(std::iter::once(&rec("c", 1))).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_daemon_cannot_take_the_same_state_dir() {
        let dir = scratch("lock");
        let (j, _) = Journal::open(&dir).unwrap();
        let err = Journal::open(&dir).unwrap_err();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
        drop(j);
        Journal::open(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_is_due_when_the_journal_outgrows_the_live_set() {
        let dir = scratch("compact");
        let (mut j, _) = Journal::open(&dir).unwrap();
        for i in 0..COMPACT_SLACK + COMPACT_FACTOR + 1 {
            j.append(&Record::Upsert(Box::new(rec("a", i as u32))));
        }
        assert!(j.wants_compaction(1));
        assert!(!j.wants_compaction(COMPACT_SLACK as usize));
        j.compact(&[rec("a", 9)]).unwrap();
        assert_eq!(j.records(), 0);
        assert_eq!(std::fs::metadata(dir.join(JOURNAL)).unwrap().len(), 0);
        drop(j);
        let (_, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.dialogs, vec![rec("a", 9)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stream_flows_come_back_pointing_at_no_connection() {
        let peer: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let f = Flow::Stream {
            id: 17,
            peer,
            kind: StreamKind::Tls,
        };
        let r = FlowRecord::of(&f);
        assert_eq!(r, FlowRecord::Tls { peer });
        assert_eq!(
            r.restore(),
            Flow::Stream {
                id: GONE_CONN_ID,
                peer,
                kind: StreamKind::Tls
            }
        );
        let u = Flow::Udp(peer);
        assert_eq!(FlowRecord::of(&u).restore(), u);
    }

    #[test]
    fn background_compaction_keeps_every_change_and_survives_an_interrupted_merge() {
        let dir = scratch("background");
        let (mut j, _) = Journal::open(&dir).unwrap();
        for i in 0..50 {
            j.append(&Record::Upsert(Box::new(rec(&format!("c{i}"), 1))));
        }
        j.compact_in_background();
        // Changes go on while the merge runs, into the new journal.
        j.append(&Record::Remove {
            call_id: "c0".into(),
        });
        j.append(&Record::Upsert(Box::new(rec("c1", 2))));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while j.merging() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!j.merging());
        assert!(!dir.join(JOURNAL_OLD).exists());
        assert_eq!(j.records(), 2);
        drop(j);
        let (mut j, loaded) = Journal::open(&dir).unwrap();
        let got = sorted(loaded.dialogs);
        assert_eq!(got.len(), 49);
        assert!(got.iter().all(|d| d.call_id != "c0"));
        assert_eq!(got.iter().find(|d| d.call_id == "c1").unwrap().cseq, 2);
        // A merge a crash interrupted: journal.old is still there; it is
        // replayed between the snapshot and the journal.
        j.append(&Record::Upsert(Box::new(rec("late", 1))));
        drop(j);
        std::fs::rename(dir.join(JOURNAL), dir.join(JOURNAL_OLD)).unwrap();
        std::fs::write(dir.join(JOURNAL), b"").unwrap();
        let (j, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.dialogs.len(), 50);
        assert!(loaded.dialogs.iter().any(|d| d.call_id == "late"));
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_after_a_torn_line_is_not_lost() {
        let dir = scratch("torn");
        {
            let (mut j, _) = Journal::open(&dir).unwrap();
            j.append(&Record::Upsert(Box::new(rec("a", 1))));
        }
        // A crash mid-write left half a record without its newline.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(JOURNAL))
            .unwrap();
        f.write_all(br#"{"op":"up","call_id":"tor"#).unwrap();
        drop(f);
        let (mut j, loaded) = Journal::open(&dir).unwrap();
        assert_eq!(loaded.skipped, 1);
        // Appended before any compaction: must still be read back.
        j.append(&Record::Remove {
            call_id: "a".into(),
        });
        j.append(&Record::Upsert(Box::new(rec("b", 1))));
        drop(j);
        let (_, loaded) = Journal::open(&dir).unwrap();
        let ids: Vec<String> = loaded.dialogs.iter().map(|d| d.call_id.clone()).collect();
        assert_eq!(
            ids,
            vec!["b".to_string()],
            "the removal of a was glued to the torn line"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_snapshot_stops_the_start() {
        let dir = scratch("unreadable");
        std::fs::create_dir_all(dir.join(SNAPSHOT)).unwrap();
        // A directory where the snapshot should be: reading it fails (not
        // "absent"), so the start is refused rather than the dialogs lost.
        assert!(Journal::open(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
