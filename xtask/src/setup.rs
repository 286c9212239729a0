//! `cargo xtask setup`: installs what is missing and skips what is there.
//! Non-interactive (CI runs it as root with no stdin); every step says
//! what it checks and what it does, and a failure names the missing piece
//! and how to get it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::proc::{self, describe, is_root, stdout_of, which};

mod peers;
mod shell;

use shell::{apt, dpkg_installed, step, NoServiceStarts};

/// Debian packages, with what needs them.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "LLVM 22, which bpf-linker is built against"),
    ("libpolly-22-dev", "linked by llvm-sys with LLVM 22"),
    ("zlib1g-dev", "linked by llvm-sys"),
    ("libzstd-dev", "linked by llvm-sys"),
    ("sip-tester", "sipp, for the end-to-end tests"),
    ("stun-client", "the classic `stun` client"),
    ("coturn", "turnutils_stunclient and turnserver"),
    ("sipsak", "SIP test client"),
    ("kamailio", "a SIP server to compare against"),
    ("baresip-core", "baresip, the phone of the phones test"),
    ("linphone-cli", "linphone-daemon, a phone too"),
    ("iproute2", "`ip`: namespaces, veth, XDP"),
    ("ethtool", "checksum offload settings in the lab"),
    ("util-linux", "`nsenter` and `mount`"),
    ("procps", "`sysctl` in the lab namespaces"),
    ("openssl", "a self-signed certificate for the TLS tests"),
    (
        "prometheus",
        "promtool, which checks the /metrics page in the tests",
    ),
    ("curl", "scrapes /metrics in the metrics lab test"),
    ("systemd", "`systemd-analyze verify` on the packaged units"),
    (
        "man-db",
        "`man`, which `systemd-analyze verify` uses for Documentation=",
    ),
    ("binutils", "`strip` and `objdump` for the Debian package"),
    ("keepalived", "VRRP moving the VIPs in the HA lab"),
    ("redis-server", "the shared state store of the HA lab"),
    (
        "redis-tools",
        "`redis-cli`, which reads the store in the HA lab",
    ),
    (
        "python3-venv",
        "`python3 -m venv`, for the project's own SIPVicious environment",
    ),
    (
        "haproxy",
        "a TCP proxy that drops idle connections, in the browser-phone test",
    ),
    (
        "chromium",
        "headless browser phones (SIP.js over WSS) in the browser-phone test",
    ),
    (
        "kamailio-websocket-modules",
        "Kamailio's WebSocket transport, compared against in the bench",
    ),
    (
        "kamailio-tls-modules",
        "Kamailio's TLS (for WSS), compared against in the bench",
    ),
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13";
/// mdBook, which `cargo xtask docs` builds the book with (0.5.4 builds
/// with Rust 1.88 and later; docs/book.toml is written for 0.5).
const MDBOOK_VERSION: &str = "0.5.4";

pub fn setup() -> Result<()> {
    println!("== setup (idempotent: installs only what is missing)");
    apt_packages()?;
    nightly()?;
    bpf_linker()?;
    bpffs()?;
    peers::sipvicious()?;
    peers::node_packages()?;
    mdbook()?;
    println!("== setup: everything is in place");
    Ok(())
}

fn apt_packages() -> Result<()> {
    let name = "Debian packages";
    if which("dpkg").is_none() {
        bail!(
            "{name}: `dpkg` not found; this setup targets Debian 12. Install by hand: {}",
            APT_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let mut wanted: Vec<(&str, &str)> = APT_PACKAGES.to_vec();
    // Building llvm-sys and linking Rust binaries needs a C toolchain.
    if which("cc").is_none() {
        wanted.push(("gcc", "a C compiler and linker"));
        wanted.push(("libc6-dev", "C library headers"));
    }
    let missing: Vec<(&str, &str)> = wanted
        .iter()
        .copied()
        .filter(|(p, _)| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        step(
            name,
            format!(
                "all {} present ({})",
                wanted.len(),
                wanted.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(" ")
            ),
        );
        return Ok(());
    }
    for (p, why) in &missing {
        step(name, format!("missing {p} ({why})"));
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    if !is_root() {
        bail!(
            "{name}: missing {}; run this as root, or: sudo apt-get update && \
             sudo apt-get install -y {}",
            names.join(" "),
            names.join(" ")
        );
    }
    step(name, "apt-get update");
    apt(&["update"])
        .context("`apt-get update` failed: check the network and /etc/apt/sources.list{,.d}")?;
    step(name, format!("apt-get install {}", names.join(" ")));
    let mut args = vec!["install", "-y"];
    args.extend(&names);
    // Servers the tests start themselves (prometheus, redis-server,
    // keepalived, kamailio, coturn) must not be started as services on a
    // host that boots systemd: invoke-rc.d asks policy-rc.d, and 101 says
    // "not now".
    let _no_services = NoServiceStarts::put();
    apt(&args).with_context(|| {
        format!(
            "`apt-get install -y {}` failed; these packages come from Debian's \
             repositories as configured on this machine",
            names.join(" ")
        )
    })?;
    let still: Vec<&str> = names
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !still.is_empty() {
        bail!(
            "{name}: still not installed after apt-get: {}",
            still.join(" ")
        );
    }
    step(name, "installed");
    Ok(())
}

fn rustup() -> Result<Command> {
    if which("rustup").is_none() {
        bail!(
            "rustup not found on PATH: the eBPF crate needs the nightly toolchain; \
             install rustup (https://rustup.rs) and run `cargo xtask setup` again"
        );
    }
    Ok(Command::new("rustup"))
}

fn nightly() -> Result<()> {
    let name = "nightly toolchain";
    let listed = stdout_of(rustup()?.args(["toolchain", "list"])).unwrap_or_default();
    if listed.lines().any(|l| l.starts_with("nightly")) {
        step(name, "present");
    } else {
        step(name, "installing (rustup toolchain install nightly)");
        let mut c = rustup()?;
        c.args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]);
        let done = proc::run(&mut c, None, None)?;
        if !done.ok() {
            bail!(
                "{name}: `{}` {}; the eBPF crate is built with nightly (-Z build-std)",
                describe(&c),
                done.describe()
            );
        }
    }
    let name = "nightly rust-src";
    let comps =
        stdout_of(rustup()?.args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        step(name, "present");
    } else {
        step(
            name,
            "adding (rustup component add rust-src --toolchain nightly)",
        );
        let mut c = rustup()?;
        c.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
        let done = proc::run(&mut c, None, None)?;
        if !done.ok() {
            bail!("{name}: `{}` {}", describe(&c), done.describe());
        }
    }
    // bpf-linker reads the bitcode nightly's LLVM writes.
    if let Some(v) = stdout_of(Command::new("rustc").args(["+nightly", "-vV"])) {
        if let Some(llvm) = v.lines().find_map(|l| l.strip_prefix("LLVM version: ")) {
            if llvm.starts_with("22.") {
                step(
                    "nightly LLVM",
                    format!("{llvm} (matches bpf-linker's LLVM 22)"),
                );
            } else {
                step(
                    "nightly LLVM",
                    format!(
                        "warning: nightly uses LLVM {llvm}, bpf-linker is built against \
                         LLVM 22; if the eBPF build fails, install a nightly with LLVM 22"
                    ),
                );
            }
        }
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cargo")
}

/// bpf-linker on PATH, else in cargo's bin directory (then PATH is
/// extended so the eBPF build finds it).
fn find_bpf_linker() -> Option<PathBuf> {
    find_installed("bpf-linker")
}

/// `name` on PATH, else in cargo's bin directory (where cargo install
/// puts it).
fn find_installed(name: &str) -> Option<PathBuf> {
    if let Some(p) = which(name) {
        return Some(p);
    }
    let p = cargo_home().join("bin").join(name);
    p.is_file().then_some(p)
}

/// Whether this bpf-linker was built against LLVM 22: its dynamic libLLVM,
/// or else the features cargo install recorded.
fn built_with_llvm22(path: &Path) -> Option<String> {
    if let Some(ldd) = stdout_of(Command::new("ldd").arg(path)) {
        if let Some(line) = ldd.lines().find(|l| l.contains("libLLVM")) {
            let lib = line.split_whitespace().next().unwrap_or("").to_string();
            return (lib.contains(".so.22") || lib.contains("LLVM-22")).then_some(lib);
        }
    }
    let record = std::fs::read_to_string(cargo_home().join(".crates2.json")).ok()?;
    let start = record.find("\"bpf-linker ")?;
    let entry = &record[start..];
    let entry = &entry[..entry.find("\"rustc\"").unwrap_or(entry.len())];
    entry
        .contains("\"llvm-22\"")
        .then(|| "cargo install record: feature llvm-22".to_string())
}

fn bpf_linker() -> Result<()> {
    let name = "bpf-linker";
    if let Some(path) = find_bpf_linker() {
        let version = stdout_of(Command::new(&path).arg("--version")).unwrap_or_default();
        let version = version.trim().to_string();
        let right_version = version
            .strip_prefix("bpf-linker ")
            .is_some_and(|v| v.starts_with(&format!("{BPF_LINKER_VERSION}.")));
        let llvm = built_with_llvm22(&path);
        match (right_version, &llvm) {
            (true, Some(how)) => {
                step(
                    name,
                    format!("{version} at {}, LLVM 22 ({how})", path.display()),
                );
                ensure_on_path(&path);
                return Ok(());
            }
            (false, _) => step(
                name,
                format!(
                    "{} reports {version:?}; want {BPF_LINKER_VERSION}.x",
                    path.display()
                ),
            ),
            (true, None) => step(
                name,
                format!(
                    "{version} at {} is not built against LLVM 22",
                    path.display()
                ),
            ),
        }
    } else {
        step(name, "not found");
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file() {
        bail!(
            "{name}: {LLVM_PREFIX}/bin/llvm-config is missing; install llvm-22-dev \
             (apt-get install llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev)"
        );
    }
    step(
        name,
        format!("building {BPF_LINKER_VERSION} against LLVM 22 with cargo install (a few minutes)"),
    );
    let mut c = proc::cargo();
    c.env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .args([
            "install",
            "bpf-linker",
            "--version",
            &format!("^{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
        ]);
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() {
        bail!(
            "{name}: `{}` {}; it needs llvm-22-dev, libpolly-22-dev, zlib1g-dev, \
             libzstd-dev and a C compiler",
            describe(&c),
            done.describe()
        );
    }
    let path = find_bpf_linker().context("bpf-linker was installed but cannot be found")?;
    if built_with_llvm22(&path).is_none() {
        bail!(
            "{name}: {} is still not linked with LLVM 22",
            path.display()
        );
    }
    ensure_on_path(&path);
    step(name, format!("installed at {}", path.display()));
    Ok(())
}

/// The eBPF build runs `bpf-linker` by name: make sure the commands this
/// task starts find it.
fn ensure_on_path(path: &Path) {
    let Some(dir) = path.parent() else { return };
    if which("bpf-linker").is_some() {
        return;
    }
    let old = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&old));
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
        step(
            "bpf-linker",
            format!("added {} to PATH for this run", dir.display()),
        );
    }
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
        })
    })
}

fn bpffs() -> Result<()> {
    let name = "bpffs";
    if bpffs_mounted() {
        step(name, "/sys/fs/bpf is a bpf filesystem");
        return Ok(());
    }
    if !is_root() {
        bail!("{name}: /sys/fs/bpf is not a bpf filesystem; as root: mount -t bpf bpf /sys/fs/bpf");
    }
    step(name, "mounting: mount -t bpf bpf /sys/fs/bpf");
    std::fs::create_dir_all("/sys/fs/bpf").ok();
    let mut c = Command::new("mount");
    c.args(["-t", "bpf", "bpf", "/sys/fs/bpf"]);
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() || !bpffs_mounted() {
        bail!(
            "{name}: `mount -t bpf bpf /sys/fs/bpf` failed ({}); the kernel needs \
             CONFIG_BPF_SYSCALL and the process CAP_SYS_ADMIN",
            done.describe()
        );
    }
    Ok(())
}

/// mdbook on PATH, else in cargo's bin directory.
pub fn mdbook_path() -> Option<PathBuf> {
    find_installed("mdbook")
}

/// mdBook for `cargo xtask docs`: any release of [`MDBOOK_VERSION`]'s
/// series is kept, else that version is built with cargo install (the
/// `search` feature only: the task uses neither `serve` nor `watch`).
fn mdbook() -> Result<()> {
    let name = "mdbook";
    let series = MDBOOK_VERSION.rsplit_once('.').map_or("", |(s, _)| s);
    if let Some(path) = mdbook_path() {
        let version = stdout_of(Command::new(&path).arg("--version")).unwrap_or_default();
        let version = version.trim();
        if version.starts_with(&format!("mdbook v{series}.")) {
            step(name, format!("{version} at {}", path.display()));
            return Ok(());
        }
        step(
            name,
            format!("{version:?} at {}; want {series}.x", path.display()),
        );
    } else {
        step(name, "not found");
    }
    step(
        name,
        format!("building {MDBOOK_VERSION} with cargo install (a few minutes)"),
    );
    let mut c = proc::cargo();
    c.args(["install", "mdbook", "--version", MDBOOK_VERSION, "--locked"])
        .args(["--no-default-features", "--features", "search", "--force"]);
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() {
        bail!(
            "{name}: `{}` {}; it comes from crates.io (check the network and cargo's \
             registry configuration)",
            describe(&c),
            done.describe()
        );
    }
    let path = mdbook_path().context("mdbook was installed but cannot be found")?;
    step(name, format!("installed at {}", path.display()));
    Ok(())
}
