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
/// The project's own Python environment: the scanners of the shield's lab
/// tests (`tests/shield.rs` looks for them here) go into it, never into
/// the system's Python.
const VENV: &str = "/opt/sip-ka-venv";
/// SIPVicious from PyPI, the version the shield's lab tests were written
/// against (its tools' flags and the User-Agent they send).
const SIPVICIOUS_VERSION: &str = "0.3.8";
/// Debian's Python, which `python3-venv` completes.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// The project's own npm packages: the WebSocket SIP stacks of the
/// browser-phone tests (`tests/browser_phones.rs` looks for them here).
const NODE_PREFIX: &str = "/opt/sip-ka-node";
/// The versions the browser-phone tests were written against.
const NODE_PACKAGES: &[(&str, &str)] = &[
    ("sip.js", "0.21.2"),
    ("jssip", "3.13.8"),
    ("ws", "8.23.0"),
    ("playwright-core", "1.65.1"),
];
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
    sipvicious()?;
    node_packages()?;
    mdbook()?;
    println!("== setup: everything is in place");
    Ok(())
}

fn step(name: &str, msg: impl AsRef<str>) {
    println!("[setup] {name}: {}", msg.as_ref());
}

fn dpkg_installed(pkg: &str) -> bool {
    stdout_of(Command::new("dpkg").args(["-s", pkg])).is_some_and(|out| {
        out.lines()
            .any(|l| l.starts_with("Status:") && l.trim_end().ends_with("install ok installed"))
    })
}

/// /usr/sbin/policy-rc.d answering 101 (action forbidden) while it lives,
/// unless the host has one of its own (left alone).
struct NoServiceStarts(Option<std::path::PathBuf>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn put() -> NoServiceStarts {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::path::PathBuf::from(Self::PATH);
        if path.exists() {
            return NoServiceStarts(None);
        }
        let written = std::fs::write(
            &path,
            "#!/bin/sh\n# cargo xtask setup: no service starts while it installs\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)));
        match written {
            Ok(()) => NoServiceStarts(Some(path)),
            Err(e) => {
                eprintln!("setup: writing {}: {e} (services may start)", Self::PATH);
                NoServiceStarts(None)
            }
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
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

fn apt(args: &[&str]) -> Result<()> {
    let mut c = Command::new("apt-get");
    c.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_MODE", "a");
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() {
        bail!("{} {}", describe(&c), done.describe());
    }
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

/// The version of `pkg` installed in the project's environment, if any.
fn venv_version(pkg: &str) -> Option<String> {
    let python = Path::new(VENV).join("bin/python");
    let script = format!("import importlib.metadata as m; print(m.version({pkg:?}))");
    stdout_of(Command::new(python).args(["-c", &script])).map(|v| v.trim().to_string())
}

/// SIPVicious in [`VENV`], a virtual environment of the project's own
/// made with Debian's Python: the scanners the shield's lab tests run.
fn sipvicious() -> Result<()> {
    let name = "SIPVicious";
    let tools = ["sipvicious_svmap", "sipvicious_svwar", "sipvicious_svcrack"];
    let all_there = || {
        tools
            .iter()
            .all(|t| Path::new(VENV).join("bin").join(t).is_file())
    };
    let version = venv_version("sipvicious");
    if version.as_deref() == Some(SIPVICIOUS_VERSION) && all_there() {
        step(name, format!("{SIPVICIOUS_VERSION} present in {VENV}"));
        return Ok(());
    }
    match &version {
        Some(v) => step(name, format!("{VENV} has {v}; want {SIPVICIOUS_VERSION}")),
        None => step(name, format!("not installed in {VENV}")),
    }
    if !is_root() {
        bail!(
            "{name}: {VENV} is written as root; run this as root, or: sudo {SYSTEM_PYTHON} -m venv \
             {VENV} && sudo {VENV}/bin/pip install sipvicious=={SIPVICIOUS_VERSION}"
        );
    }
    if !Path::new(SYSTEM_PYTHON).is_file() {
        bail!("{name}: {SYSTEM_PYTHON} not found; install Debian's python3 and python3-venv");
    }
    if !Path::new(VENV).join("bin/pip").is_file() {
        step(name, format!("creating the virtual environment {VENV}"));
        let mut c = Command::new(SYSTEM_PYTHON);
        c.args(["-m", "venv", "--clear", VENV]);
        let done = proc::run(&mut c, None, None)?;
        if !done.ok() {
            bail!(
                "{name}: `{}` {}; Debian's python3 needs the python3-venv package \
                 (with ensurepip) for this",
                describe(&c),
                done.describe()
            );
        }
    }
    step(
        name,
        format!("pip install sipvicious=={SIPVICIOUS_VERSION} into {VENV}"),
    );
    let mut c = Command::new(Path::new(VENV).join("bin/pip"));
    c.args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        &format!("sipvicious=={SIPVICIOUS_VERSION}"),
    ]);
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() {
        bail!(
            "{name}: `{}` {}; it comes from PyPI (check the network and pip's \
             configuration: pip config list)",
            describe(&c),
            done.describe()
        );
    }
    if venv_version("sipvicious").as_deref() != Some(SIPVICIOUS_VERSION) || !all_there() {
        bail!(
            "{name}: pip reported success but {VENV}/bin lacks {} or the version is not \
             {SIPVICIOUS_VERSION}",
            tools.join(", ")
        );
    }
    step(name, format!("installed in {VENV}"));
    Ok(())
}

/// The version of an npm package installed under [`NODE_PREFIX`].
fn node_package_version(pkg: &str) -> Option<String> {
    let manifest = Path::new(NODE_PREFIX)
        .join("node_modules")
        .join(pkg)
        .join("package.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    // The first "version" key of the manifest: npm writes it at the top
    // level before any nested object that could hold another.
    let at = text.find("\"version\"")?;
    let rest = text.get(at + "\"version\"".len()..)?;
    let start = rest.find('"')? + 1;
    let len = rest.get(start..)?.find('"')?;
    rest.get(start..start + len).map(str::to_string)
}

/// Node (Debian's nodejs when there is none) and the browser-phone
/// tests' npm packages in [`NODE_PREFIX`], at their versions.
fn node_packages() -> Result<()> {
    let name = "npm packages";
    for (tool, pkg) in [("node", "nodejs"), ("npm", "npm")] {
        if which(tool).is_some() {
            continue;
        }
        step(name, format!("`{tool}` not found: apt-get install {pkg}"));
        if !is_root() {
            bail!("{name}: `{tool}` missing; run this as root, or: sudo apt-get install -y {pkg}");
        }
        let _no_services = NoServiceStarts::put();
        apt(&["install", "-y", pkg])
            .with_context(|| format!("`apt-get install -y {pkg}` failed"))?;
    }
    let wrong: Vec<String> = NODE_PACKAGES
        .iter()
        .filter(|(p, v)| node_package_version(p).as_deref() != Some(*v))
        .map(|(p, v)| format!("{p}@{v}"))
        .collect();
    if wrong.is_empty() {
        step(
            name,
            format!(
                "{} present in {NODE_PREFIX}",
                NODE_PACKAGES
                    .iter()
                    .map(|(p, v)| format!("{p}@{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        return Ok(());
    }
    if !is_root() {
        bail!(
            "{name}: {NODE_PREFIX} is written as root; run this as root, or: sudo npm install \
             --prefix {NODE_PREFIX} {}",
            wrong.join(" ")
        );
    }
    std::fs::create_dir_all(NODE_PREFIX).with_context(|| format!("creating {NODE_PREFIX}"))?;
    step(
        name,
        format!("npm install {} into {NODE_PREFIX}", wrong.join(" ")),
    );
    let mut c = Command::new("npm");
    c.args([
        "install",
        "--prefix",
        NODE_PREFIX,
        "--no-audit",
        "--no-fund",
    ])
    .args(&wrong);
    let done = proc::run(&mut c, None, None)?;
    if !done.ok() {
        bail!(
            "{name}: `{}` {}; they come from the npm registry (check the network and \
             npm's configuration: npm config list)",
            describe(&c),
            done.describe()
        );
    }
    let still: Vec<&str> = NODE_PACKAGES
        .iter()
        .filter(|(p, v)| node_package_version(p).as_deref() != Some(*v))
        .map(|(p, _)| *p)
        .collect();
    if !still.is_empty() {
        bail!(
            "{name}: npm reported success but {NODE_PREFIX} lacks {}",
            still.join(" ")
        );
    }
    step(name, format!("installed in {NODE_PREFIX}"));
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
