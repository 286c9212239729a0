//! `cargo xtask package`: the Debian package, built with Debian's own
//! `dpkg-deb` from a staging tree this module lays out. dpkg-deb is on
//! every Debian machine (dpkg is essential), so the package builds after
//! `cargo xtask setup` with nothing more to install or compile, and the
//! tree is exactly what the package holds. The files derived from the
//! command line (man pages, completions, the default configuration) are
//! written by the release binary itself (`sip-ka assets`): xtask cannot
//! link the userspace crate, which needs bpf-linker to build.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::proc::{self, target_dir};

#[cfg(test)]
mod tests;

/// Files from the source tree, by where they go in the package.
const UNITS: &[&str] = &["sip-ka.service", "sip-ka@.service"];
const UNIT_DIR: &str = "usr/lib/systemd/system";
const CONFIG: &str = "etc/sip-ka/sip-ka.toml";
const MAN_DIR: &str = "usr/share/man/man1";
/// (file `sip-ka assets` writes, where the shell looks for it).
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "sip-ka.bash",
        "usr/share/bash-completion/completions/sip-ka",
    ),
    ("_sip-ka", "usr/share/zsh/vendor-completions/_sip-ka"),
    (
        "sip-ka.fish",
        "usr/share/fish/vendor_completions.d/sip-ka.fish",
    ),
];
/// The system user the units run as (the maintainer scripts create it).
#[cfg(test)]
const USER: &str = "sip-ka";

const DESCRIPTION: &str = "\
SIP keep-alives answered in the XDP path
 sip-ka answers SIP keep-alives (UDP CRLF pings, STUN Binding requests)
 in the XDP path of the network interface, before the kernel's network
 stack, counts SIP traffic in BPF maps, and can run as a SIP edge proxy in
 front of a PBX that answers OPTIONS and in-dialog keep-alives itself.
 The systemd units (sip-ka.service, sip-ka@IFACE.service) run it as the
 sip-ka user with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only.";

const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd sip-ka >/dev/null; then
        adduser --system --group --quiet --no-create-home --home /nonexistent \
            --gecos "sip-ka daemon" sip-ka
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        # An upgrade restarts running daemons on the new binary; the units
        # run with --keep-attached, so the fast path answers throughout.
        if [ -n "$2" ]; then
            systemctl try-restart sip-ka.service 'sip-ka@*.service' || true
        fi
    fi
fi
exit 0
"#;

const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop sip-ka.service 'sip-ka@*.service' || true
    fi
    # The units leave the program attached when they stop; removing the
    # package takes it off every interface it is pinned for.
    for link in /sys/fs/bpf/sip-ka/link_* /sys/fs/bpf/sip-ka-*/link_*; do
        [ -e "$link" ] || continue
        /usr/bin/sip-ka detach --iface "${link##*/link_}" --pin-dir "${link%/*}" || true
    done
fi
exit 0
"#;

const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = purge ]; then
    if getent passwd sip-ka >/dev/null; then
        deluser --system --quiet sip-ka || true
    fi
    if getent group sip-ka >/dev/null; then
        delgroup --system --quiet --only-if-empty sip-ka || true
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
"#;

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sip-ka

Files: *
Copyright: the sip-ka authors
License: MIT or Apache-2.0

License: Apache-2.0
 On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a
 copy of this software and associated documentation files (the
 \"Software\"), to deal in the Software without restriction, including
 without limitation the rights to use, copy, modify, merge, publish,
 distribute, sublicense, and/or sell copies of the Software, and to
 permit persons to whom the Software is furnished to do so, subject to
 the following conditions:
 .
 The above copyright notice and this permission notice shall be included
 in all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS
 OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
 MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
 IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY
 CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
 TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
 SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
";

/// Where the package's documentation goes: the copyright file, and the
/// changelog (CHANGELOG.md at the workspace root, gzipped).
const DOC_DIR: &str = "usr/share/doc/sip-ka";

/// `cargo xtask package`: the release build, then the .deb in
/// target/debian/.
pub fn package() -> Result<i32> {
    let bin = release_build()?;
    let deb = build_deb(&bin, &target_dir().join("debian"))?;
    println!("== package: {}", deb.display());
    Ok(0)
}

/// Builds the release `sip-ka` (a no-op when it is up to date) and returns
/// its path.
pub fn release_build() -> Result<PathBuf> {
    let mut cmd = proc::cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "sip-ka-userspace",
        "--bin",
        "sip-ka",
    ]);
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!(
            "release build failed ({}); `cargo xtask setup` installs what it needs",
            done.describe()
        );
    }
    Ok(target_dir().join("release/sip-ka"))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", proc::describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            proc::describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The package's version: the crate version `sip-ka --version` reports
/// (`sip-ka 0.1.0 (commit 0123456789ab)`), without the commit.
fn version_of(bin: &Path) -> Result<String> {
    let out = output(Command::new(bin).arg("--version"))?;
    parse_version(&out).with_context(|| format!("`{} --version` said {out:?}", bin.display()))
}

/// The version in `sip-ka --version`'s output, checked to be a Debian
/// upstream version (a digit first, then alphanumerics and `.+~-`).
fn parse_version(out: &str) -> Option<String> {
    let v = out
        .trim()
        .strip_prefix("sip-ka ")?
        .split_whitespace()
        .next()?;
    let ok = v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c));
    ok.then(|| v.to_string())
}

/// The Maintainer field, the Debian way: `DEBFULLNAME` and `DEBEMAIL`
/// (which may hold `Name <address>` itself), else the author of the
/// commit packaged. Never a made-up or local address.
fn maintainer() -> Result<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let author = Command::new("git")
        .args(["log", "-1", "--format=%an <%ae>"])
        .current_dir(proc::root_dir())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    maintainer_from(
        var("DEBFULLNAME").as_deref(),
        var("DEBEMAIL").as_deref(),
        author.as_deref(),
    )
}

/// `Name <address>` split, or None when `s` is not of that form.
fn name_addr(s: &str) -> Option<(&str, &str)> {
    let (name, rest) = s.split_once('<')?;
    let addr = rest.strip_suffix('>')?;
    Some((name.trim(), addr.trim()))
}

/// [`maintainer`] from the variables and the commit's `%an <%ae>`.
fn maintainer_from(
    fullname: Option<&str>,
    email: Option<&str>,
    git_author: Option<&str>,
) -> Result<String> {
    let (env_name, env_addr) = match email.map(str::trim) {
        Some(e) => match name_addr(e) {
            Some((n, a)) => (Some(n), Some(a)),
            None => (None, Some(e)),
        },
        None => (None, None),
    };
    let git = git_author.and_then(name_addr);
    let (name, addr, from) = match env_addr {
        Some(addr) => (
            fullname.map(str::trim).or(env_name).or(git.map(|g| g.0)),
            addr,
            "DEBEMAIL",
        ),
        None => match git {
            Some((n, a)) => (
                fullname.map(str::trim).or(Some(n)),
                a,
                "the commit's author",
            ),
            None => bail!(
                "no Maintainer for the package: set DEBFULLNAME and DEBEMAIL \
                 (DEBFULLNAME='Jane Doe' DEBEMAIL=jane@example.org), or build \
                 from a git checkout whose commit has an author"
            ),
        },
    };
    let name = name
        .filter(|n| !n.is_empty())
        .with_context(|| format!("no Maintainer name for {addr} (from {from}): set DEBFULLNAME"))?;
    let domain = addr.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
    let local =
        |d: &str| d == "localhost" || d.ends_with(".localhost") || d.ends_with(".localdomain");
    match domain {
        Some(d) if !d.is_empty() && !local(d.as_str()) && !addr.contains(char::is_whitespace) => {}
        _ => bail!(
            "the Maintainer address {addr:?} (from {from}) is not one mail reaches: \
             set DEBEMAIL (and DEBFULLNAME) to a real one"
        ),
    }
    Ok(format!("{name} <{addr}>"))
}

/// The newest GLIBC_x.y symbol version the binary needs, for Depends.
fn glibc_needed(bin: &Path) -> Result<String> {
    let dump = output(Command::new("objdump").arg("-T").arg(bin))
        .context("objdump (binutils) reads the binary's glibc symbol versions")?;
    let newest = dump
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let parts: Vec<u32> = v
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some(parts)
        })
        .max()
        .context("the binary names no GLIBC_ symbol version")?;
    Ok(newest
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("."))
}

/// Lays out the package tree for `bin` and builds the .deb into `out_dir`;
/// returns its path.
pub fn build_deb(bin: &Path, out_dir: &Path) -> Result<PathBuf> {
    for tool in ["dpkg-deb", "dpkg", "objdump", "strip", "gzip", "md5sum"] {
        if proc::which(tool).is_none() {
            bail!("{tool} not found; `cargo xtask setup` installs it (dpkg, binutils, gzip, coreutils)");
        }
    }
    let version = version_of(bin)?;
    let maintainer = maintainer()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let name = format!("sip-ka_{version}_{arch}");
    let stage = out_dir.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let assets = out_dir.join(format!("{name}.assets"));
    if assets.exists() {
        std::fs::remove_dir_all(&assets)?;
    }
    let status = Command::new(bin)
        .arg("assets")
        .arg(&assets)
        .status()
        .context("running sip-ka assets")?;
    if !status.success() {
        bail!(
            "`{} assets {}` failed ({status})",
            bin.display(),
            assets.display()
        );
    }

    let root = proc::root_dir();
    let usr_bin = stage.join("usr/bin/sip-ka");
    copy(bin, &usr_bin, 0o755)?;
    output(Command::new("strip").arg("--strip-unneeded").arg(&usr_bin))?;
    for unit in UNITS {
        copy(
            &root.join("packaging").join(unit),
            &stage.join(UNIT_DIR).join(unit),
            0o644,
        )?;
    }
    copy(&assets.join("sip-ka.toml"), &stage.join(CONFIG), 0o644)?;
    let man = stage.join(MAN_DIR);
    let mut pages: Vec<PathBuf> = std::fs::read_dir(assets.join("man"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        let file = page.file_name().context("man page name")?;
        let to = man.join(file);
        copy(&page, &to, 0o644)?;
        // -n: no name or time in the header, so the same page gives the
        // same bytes.
        output(Command::new("gzip").args(["-9n"]).arg(&to))?;
    }
    for (from, to) in COMPLETIONS {
        copy(
            &assets.join("completions").join(from),
            &stage.join(to),
            0o644,
        )?;
    }
    let doc = stage.join(DOC_DIR);
    write(&doc.join("copyright"), COPYRIGHT, 0o644)?;
    copy(&root.join("CHANGELOG.md"), &doc.join("changelog"), 0o644)?;
    output(
        Command::new("gzip")
            .args(["-9n"])
            .arg(doc.join("changelog")),
    )?;

    let debian = stage.join("DEBIAN");
    let md5 = md5sums(&stage)?;
    write(&debian.join("md5sums"), &md5, 0o644)?;
    write(&debian.join("conffiles"), &format!("/{CONFIG}\n"), 0o644)?;
    write(&debian.join("postinst"), POSTINST, 0o755)?;
    write(&debian.join("prerm"), PRERM, 0o755)?;
    write(&debian.join("postrm"), POSTRM, 0o755)?;
    let size_kib = tree_size(&stage)?.div_ceil(1024);
    let glibc = glibc_needed(&usr_bin)?;
    let mut control = String::new();
    let _ = writeln!(control, "Package: sip-ka");
    let _ = writeln!(control, "Version: {version}");
    let _ = writeln!(control, "Architecture: {arch}");
    let _ = writeln!(control, "Maintainer: {maintainer}");
    let _ = writeln!(control, "Installed-Size: {size_kib}");
    let _ = writeln!(control, "Depends: libc6 (>= {glibc}), libgcc-s1, adduser");
    let _ = writeln!(control, "Section: net");
    let _ = writeln!(control, "Priority: optional");
    let _ = writeln!(control, "Description: {DESCRIPTION}");
    write(&debian.join("control"), &control, 0o644)?;

    let deb = out_dir.join(format!("{name}.deb"));
    let mut cmd = Command::new("dpkg-deb");
    cmd.args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb);
    output(&mut cmd)?;
    std::fs::remove_dir_all(&assets).ok();
    Ok(deb)
}

/// Every regular file under `dir` except DEBIAN/, relative, sorted.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p == dir.join("DEBIAN") {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn md5sums(stage: &Path) -> Result<String> {
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(stage).args(files(stage)?);
    output(&mut cmd)
}

fn tree_size(stage: &Path) -> Result<u64> {
    files(stage)?
        .iter()
        .map(|f| Ok(std::fs::metadata(stage.join(f))?.len()))
        .sum()
}
