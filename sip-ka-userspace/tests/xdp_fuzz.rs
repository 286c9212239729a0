//! A short run of the XDP mutation fuzzer (`sip-ka-xdp-fuzz`), so that a
//! change to the program that breaks one of design.md's never-answer
//! rules fails `cargo xtask test`; `cargo xtask fuzz` runs it for a
//! million frames with a fresh seed.

use std::process::Command;

#[test]
#[ignore = "needs root: BPF and network namespaces; `cargo xtask test` runs it"]
fn mutated_frames_break_no_rule() {
    let artifacts = std::env::temp_dir().join(format!("sip-ka-xdp-fuzz-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sip-ka-xdp-fuzz"))
        .args(["--packets", "20000", "--seed", "20240611", "--artifacts"])
        .arg(&artifacts)
        .output()
        .expect("running sip-ka-xdp-fuzz");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&artifacts);
    assert!(
        out.status.success(),
        "sip-ka-xdp-fuzz: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "xdp-fuzz: 0 violations"),
        "{stdout}"
    );
    // The answer path was reached, so the rules were put to the test.
    let answered = stdout
        .split(" answered (XDP_TX)")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(answered > 1000, "only {answered} answers:\n{stdout}");
}
