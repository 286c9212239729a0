//! The package as an operator gets it: built once (the release build is
//! reused when up to date), unpacked with dpkg-deb into a scratch
//! directory, its binary run, its control fields and maintainer scripts
//! read, every file its units name looked up in it, and the units checked
//! by `systemd-analyze verify` against the unpacked binary and man pages.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use super::*;

fn run(cmd: &mut Command) -> String {
    output(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

struct Unpacked {
    deb: PathBuf,
    root: PathBuf,
    control: PathBuf,
}

fn unpack() -> Unpacked {
    let bin = release_build().expect("the release build");
    let out = target_dir().join("debian-test");
    let deb = build_deb(&bin, &out).expect("building the package");
    let scratch = out.join("unpacked");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).expect("removing the old scratch directory");
    }
    std::fs::create_dir_all(&scratch).expect("creating the scratch directory");
    let root = scratch.join("root");
    let control = scratch.join("DEBIAN");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    Unpacked { deb, root, control }
}

/// `Key: value` fields of `dpkg-deb --info` (continuation lines skipped).
fn info_fields(deb: &Path) -> BTreeMap<String, String> {
    run(Command::new("dpkg-deb").arg("--info").arg(deb))
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix(' ')?;
            let (k, v) = l.split_once(": ")?;
            (!k.contains(' ')).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `Key=value` settings of a unit (comments left out).
fn unit_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The visible subcommands `sip-ka --help` lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "builds the release binary and the .deb; `cargo xtask test` runs it"]
fn the_package_holds_what_the_units_name_and_its_binary_runs() {
    let p = unpack();
    let root = &p.root;
    let bin = root.join("usr/bin/sip-ka");

    // The binary runs from the package, and names its commit.
    let said = run(Command::new(&bin).arg("--version"));
    let version = parse_version(&said).unwrap_or_else(|| panic!("--version said {said:?}"));
    assert!(
        said.trim().ends_with(')') && said.contains(&format!("sip-ka {version} (commit ")),
        "--version said {said:?}"
    );
    let run_help = run(Command::new(&bin).args(["run", "--help"]));
    for flag in [
        "--iface",
        "--keep-attached",
        "--config",
        "--pin-dir",
        "--upstream",
    ] {
        assert!(
            run_help.contains(flag),
            "`run --help` lacks {flag}:\n{run_help}"
        );
    }

    // Control fields and maintainer scripts.
    let info = info_fields(&p.deb);
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    for (k, want) in [
        ("Package", "sip-ka"),
        ("Version", version.as_str()),
        ("Architecture", arch.trim()),
        ("Section", "net"),
    ] {
        assert_eq!(
            info.get(k).map(String::as_str),
            Some(want),
            "{k} in {info:?}"
        );
    }
    let depends = info.get("Depends").expect("Depends");
    assert!(
        depends.starts_with("libc6 (>= 2.") && depends.contains("adduser"),
        "Depends: {depends}"
    );
    assert!(info
        .get("Installed-Size")
        .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 100)));
    assert!(info.contains_key("Description"));
    let want = maintainer().expect("the maintainer");
    assert_eq!(
        info.get("Maintainer"),
        Some(&want),
        "Maintainer in {info:?}"
    );
    assert!(!want.contains("localhost"), "Maintainer: {want}");

    // The documentation Debian asks for: the copyright, and the changelog
    // (CHANGELOG.md, gzipped) with this version's section in it.
    let doc = root.join(DOC_DIR);
    let copyright = std::fs::read_to_string(doc.join("copyright")).expect("copyright");
    assert!(copyright.starts_with("Format: ") && copyright.contains("License: MIT"));
    let changelog = run(Command::new("gzip")
        .arg("-dc")
        .arg(doc.join("changelog.gz")));
    let source =
        std::fs::read_to_string(proc::root_dir().join("CHANGELOG.md")).expect("CHANGELOG.md");
    assert_eq!(
        changelog, source,
        "the packaged changelog is not CHANGELOG.md"
    );
    assert!(
        changelog.contains(&format!("## [{version}]")),
        "CHANGELOG.md has no section for {version}"
    );
    let conffiles = std::fs::read_to_string(p.control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/sip-ka/sip-ka.toml");
    let postinst = std::fs::read_to_string(p.control.join("postinst")).expect("postinst");
    let postrm = std::fs::read_to_string(p.control.join("postrm")).expect("postrm");
    for (script, text) in [("postinst", &postinst), ("postrm", &postrm)] {
        run(Command::new("sh").arg("-n").arg(p.control.join(script)));
        assert!(
            text.contains(USER),
            "{script} does not name the {USER} user"
        );
    }
    assert!(postinst.contains("adduser --system"));
    assert!(postrm.contains("deluser --system"));

    // Every file the units name is in the package (or, for the root
    // commands that prepare the pin directory, on every Debian system).
    let mut checked = 0;
    for name in UNITS {
        let text = std::fs::read_to_string(root.join(UNIT_DIR).join(name))
            .unwrap_or_else(|e| panic!("{name} is not in the package: {e}"));
        let values = unit_values(&text);
        let get = |k: &str| -> Vec<String> {
            values
                .iter()
                .filter(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(
            get("User").first().map(String::as_str),
            Some(USER),
            "{name} runs as another user than the package creates"
        );
        for exec in get("ExecStart") {
            let argv: Vec<&str> = exec.split_whitespace().collect();
            assert_eq!(argv[0], "/usr/bin/sip-ka", "{name}: ExecStart={exec}");
            assert!(root.join("usr/bin/sip-ka").is_file());
            let cfg = argv
                .iter()
                .position(|a| *a == "--config")
                .map(|i| argv[i + 1])
                .unwrap_or_else(|| panic!("{name}: ExecStart passes no --config"));
            // The template's per-instance file goes next to the packaged default.
            let dir = Path::new(cfg).parent().expect("config dir");
            assert!(root
                .join(dir.strip_prefix("/").unwrap())
                .join("sip-ka.toml")
                .is_file());
            if !cfg.contains('%') {
                assert!(root.join(cfg.trim_start_matches('/')).is_file(), "{cfg}");
            }
            checked += 1;
        }
        for pre in get("ExecStartPre") {
            let exe = pre.trim_start_matches(['+', '-', '!', '@']);
            let exe = exe.split_whitespace().next().unwrap_or("");
            assert!(
                Path::new(exe).is_file(),
                "{name}: ExecStartPre runs {exe}, which this system lacks"
            );
            checked += 1;
        }
        for doc in get("Documentation")
            .iter()
            .flat_map(|d| d.split_whitespace())
        {
            let page = doc
                .strip_prefix("man:")
                .and_then(|m| m.strip_suffix("(1)"))
                .unwrap_or_else(|| panic!("{name}: Documentation={doc} is not a man page"));
            assert!(
                root.join(MAN_DIR).join(format!("{page}.1.gz")).is_file(),
                "{name} names man:{page}(1), which the package lacks"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} references checked");

    // A man page per visible subcommand, and the completions.
    let help = run(Command::new(&bin).arg("--help"));
    let subs = subcommands(&help);
    assert!(subs.len() >= 8, "subcommands of --help: {subs:?}");
    assert!(!subs.iter().any(|s| s == "assets" || s == "xdp-pass"));
    for page in
        std::iter::once("sip-ka".to_string()).chain(subs.iter().map(|s| format!("sip-ka-{s}")))
    {
        let gz = root.join(MAN_DIR).join(format!("{page}.1.gz"));
        let text = run(Command::new("gzip").arg("-dc").arg(&gz));
        assert!(text.contains(".TH "), "{} is not a man page", gz.display());
    }
    for (_, path) in COMPLETIONS {
        let text =
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            text.contains("keep-attached"),
            "{path} does not complete `run`'s flags"
        );
    }

    // systemd's own check of the packaged units, against the packaged
    // binary and man pages.
    let verify = target_dir().join("debian-test/verify");
    let _ = std::fs::remove_dir_all(&verify);
    std::fs::create_dir_all(&verify).expect("verify dir");
    let mut files = Vec::new();
    for (name, as_name) in [
        ("sip-ka.service", "sip-ka.service"),
        ("sip-ka@.service", "sip-ka@.service"),
        ("sip-ka@.service", "sip-ka@lo.service"),
    ] {
        let text = std::fs::read_to_string(root.join(UNIT_DIR).join(name)).expect("unit");
        let text = text.replace("/usr/bin/sip-ka", &bin.to_string_lossy());
        std::fs::write(verify.join(as_name), text).expect("unit copy");
        files.push(format!("./{as_name}"));
    }
    assert!(
        crate::proc::which("systemd-analyze").is_some(),
        "systemd-analyze not found: `cargo xtask setup` installs the systemd package"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .current_dir(&verify)
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .expect("running systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_version_is_the_crate_version_without_the_commit() {
    for (said, want) in [
        ("sip-ka 0.1.0 (commit 0123456789ab)\n", Some("0.1.0")),
        ("sip-ka 0.1.0 (commit 0123456789ab-dirty)\n", Some("0.1.0")),
        ("sip-ka 0.1.0 (commit unknown)", Some("0.1.0")),
        ("sip-ka 1.2.3-rc1+deb12", Some("1.2.3-rc1+deb12")),
        ("sip-ka (commit 0123456789ab)", None),
        ("sip-ka v1.0", None),
        ("other 0.1.0", None),
        ("", None),
    ] {
        assert_eq!(parse_version(said).as_deref(), want, "{said:?}");
    }
}

#[test]
fn the_maintainer_comes_from_debfullname_and_debemail_else_the_commit() {
    let git = Some("Ann Author <ann@example.org>");
    for (fullname, email, git, want) in [
        (
            Some("Jane Doe"),
            Some("jane@example.net"),
            git,
            "Jane Doe <jane@example.net>",
        ),
        (
            None,
            Some("Jane Doe <jane@example.net>"),
            git,
            "Jane Doe <jane@example.net>",
        ),
        (
            Some("J. Doe"),
            Some("Jane Doe <jane@example.net>"),
            None,
            "J. Doe <jane@example.net>",
        ),
        (
            None,
            Some("jane@example.net"),
            git,
            "Ann Author <jane@example.net>",
        ),
        (None, None, git, "Ann Author <ann@example.org>"),
        (Some("Jane Doe"), None, git, "Jane Doe <ann@example.org>"),
    ] {
        assert_eq!(
            maintainer_from(fullname, email, git).expect("a maintainer"),
            want,
            "{fullname:?} {email:?} {git:?}"
        );
    }
    for (fullname, email, git, says) in [
        (None, None, None, "set DEBFULLNAME and DEBEMAIL"),
        (None, Some("jane@example.net"), None, "set DEBFULLNAME"),
        (
            None,
            None,
            Some("root <root@localhost>"),
            "is not one mail reaches",
        ),
        (
            Some("Jane"),
            Some("jane@host.localdomain"),
            None,
            "is not one mail reaches",
        ),
        (Some("Jane"), Some("jane"), None, "is not one mail reaches"),
    ] {
        let e = maintainer_from(fullname, email, git).expect_err("no maintainer");
        assert!(e.to_string().contains(says), "{e}");
    }
}
