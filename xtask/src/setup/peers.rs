//! The lab's peers that come from outside Debian, each in a place of the
//! project's own: SIPVicious (PyPI) in a virtual environment, the
//! browser-phone stacks (npm) under a prefix.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use super::shell::{apt, step, NoServiceStarts};
use crate::proc::{self, describe, is_root, stdout_of, which};

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
/// The version of `pkg` installed in the project's environment, if any.
fn venv_version(pkg: &str) -> Option<String> {
    let python = Path::new(VENV).join("bin/python");
    let script = format!("import importlib.metadata as m; print(m.version({pkg:?}))");
    stdout_of(Command::new(python).args(["-c", &script])).map(|v| v.trim().to_string())
}

/// SIPVicious in [`VENV`], a virtual environment of the project's own
/// made with Debian's Python: the scanners the shield's lab tests run.
pub(super) fn sipvicious() -> Result<()> {
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
pub(super) fn node_packages() -> Result<()> {
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
