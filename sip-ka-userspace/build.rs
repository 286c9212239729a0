//! Builds the XDP program (sip-ka-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and bpf-linker, and leaves it in OUT_DIR for
//! `include_bytes_aligned!`; and sets SIP_KA_COMMIT, the commit
//! `sip-ka --version` names.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use aya_build::{build_ebpf, Package, Toolchain};

fn main() -> anyhow::Result<()> {
    commit();
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sip-ka-ebpf");
    build_ebpf(
        [Package {
            name: "sip-ka-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "building the XDP program failed: {e:#}\n\
             it needs the nightly toolchain with rust-src and bpf-linker \
             built against LLVM 22; `cargo xtask setup` installs both"
        )
    })
}

/// `git` in the crate's directory: its trimmed output, or None when git
/// is absent, the directory is in no repository, or the command fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Where git keeps `name` (HEAD, refs/heads/…, packed-refs), as a path
/// from this directory; a worktree's HEAD is not under .git/.
fn git_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
}

/// SIP_KA_COMMIT: the short hash of HEAD, `-dirty` when the work tree
/// has changes, `unknown` outside a repository (a source tarball, the
/// .deb's own build). Rebuilt when HEAD or the branch it names moves;
/// a tree made dirty after the build keeps the clean hash until then.
fn commit() {
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty()) {
        Some(hash) => {
            // --no-optional-locks: no index refresh written from a build.
            let dirty = git(&["--no-optional-locks", "status", "--porcelain"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=SIP_KA_COMMIT={commit}");
    let mut watch = vec!["HEAD".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(branch);
        // A branch may live in packed-refs rather than a file of its own.
        watch.push("packed-refs".to_string());
    }
    for name in watch {
        // A path that does not exist would make cargo rerun every build.
        if let Some(path) = git_path(&name).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
