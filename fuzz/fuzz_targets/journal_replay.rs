//! The journal replay on arbitrary bytes: they are written as a state
//! directory's `snapshot` and `journal` (split at a point the input
//! picks), read back by `Journal::open`, and the dialogs it returns are
//! put into a dialog table and their timers run, as a restarting edge
//! does. A file on disk is the only way in, so each run writes two small
//! files under TMPDIR rather than fuzz the JSON decoder alone.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use sip_ka::edge::{
    dialog::{Dialogs, NoSink},
    persist::{Journal, Record},
};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // `cargo xtask fuzz` points TMPDIR at a tmpfs directory it removes
        // afterwards (libFuzzer exits without running destructors).
        let d = std::env::temp_dir().join(format!("sip-ka-fuzz-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    })
}

const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // The decoder on its own, line by line, as replay calls it.
    for line in rest.split(|b| *b == b'\n') {
        let _ = serde_json::from_slice::<Record>(line);
    }
    let at = (usize::from(split) * rest.len()) / 255;
    let (snapshot, journal) = rest.split_at(at.min(rest.len()));
    let d = dir();
    std::fs::create_dir_all(d).expect("state dir");
    std::fs::write(d.join("snapshot"), snapshot).expect("snapshot");
    std::fs::write(d.join("journal"), journal).expect("journal");
    let _ = std::fs::remove_file(d.join("journal.old"));
    let Ok((j, loaded)) = Journal::open(d) else {
        return;
    };
    let mut table = Dialogs::new(Box::new(NoSink), NOW_MS);
    let _ = table.restore(loaded.dialogs, NOW_MS);
    let _ = table.next_deadline_ms();
    let upstream = "192.0.2.1:5060".parse().expect("addr");
    let local = "192.0.2.2:5060".parse().expect("addr");
    // Wall-clock times a restarted edge can see: now, an hour on, and a
    // decade on (every timer due).
    for now in [NOW_MS, NOW_MS + 3_600_000, NOW_MS + 315_360_000_000] {
        let _ = table.expire(now, upstream, local);
        let _ = table.sweep(now);
    }
    table.set_journal(j);
    table.compact();
});
