//! What every setup step shares: its progress line, dpkg and apt-get,
//! and no service started by a package while it installs.

use std::process::Command;

use anyhow::{bail, Result};

use crate::proc::{self, describe, stdout_of};

pub(super) fn step(name: &str, msg: impl AsRef<str>) {
    println!("[setup] {name}: {}", msg.as_ref());
}

pub(super) fn dpkg_installed(pkg: &str) -> bool {
    stdout_of(Command::new("dpkg").args(["-s", pkg])).is_some_and(|out| {
        out.lines()
            .any(|l| l.starts_with("Status:") && l.trim_end().ends_with("install ok installed"))
    })
}

/// /usr/sbin/policy-rc.d answering 101 (action forbidden) while it lives,
/// unless the host has one of its own (left alone).
pub(super) struct NoServiceStarts(Option<std::path::PathBuf>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    pub(super) fn put() -> NoServiceStarts {
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

pub(super) fn apt(args: &[&str]) -> Result<()> {
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
