//! `cargo xtask docs`: the book in docs/ (mdBook). It builds the `sip-ka`
//! binary, regenerates the command-line and configuration references from
//! it (`sip-ka assets --reference docs/src/reference`), checks the links,
//! then runs `mdbook build` into target/book/.
//!
//! `cargo xtask docs --check` (a step of `cargo xtask test`) only checks,
//! without building anything:
//!
//! - every relative link in README.md and docs/**/*.md (inline
//!   `[text](path)`, images, and `[label]: path` definitions; code spans
//!   and fenced code left out) names a file that exists and, with a
//!   `#anchor`, a heading of that file, by mdBook's rule for heading ids;
//! - every page under docs/src is listed in SUMMARY.md, and every other
//!   file there (images) is linked from a listed page;
//! - the reference pages are there, and more than a placeholder.
//!
//! Each problem is printed as `file:line: what`; the check fails when
//! there is any.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    proc::{self, root_dir, target_dir},
    setup,
};

/// The reference pages `sip-ka assets --reference` writes.
const REFERENCE: [&str; 2] = ["reference/cli.md", "reference/config.md"];

pub fn docs(check_only: bool) -> Result<i32> {
    let root = root_dir();
    if check_only {
        return Ok(report(&check(&root)?));
    }
    setup::setup()?;
    let mut cmd = proc::cargo();
    cmd.args(["build", "-p", "sip-ka-userspace", "--bin", "sip-ka"]);
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!("building sip-ka failed ({})", done.describe());
    }
    let exe = target_dir().join("debug/sip-ka");
    let help = proc::stdout_of(Command::new(&exe).args(["assets", "--help"])).unwrap_or_default();
    if !help.contains("--reference") {
        bail!(
            "{} has no `assets --reference DIR`: the reference pages cannot be \
             generated (this version of sip-ka predates them)",
            exe.display()
        );
    }
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&root)
        .args(["assets", "--reference", "docs/src/reference"]);
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!(
            "`sip-ka assets --reference docs/src/reference` failed ({})",
            done.describe()
        );
    }
    if report(&check(&root)?) != 0 {
        return Ok(1);
    }
    let mdbook = setup::mdbook_path().context(
        "mdbook not found on PATH nor in cargo's bin directory: run `cargo xtask setup`",
    )?;
    let dest = target_dir().join("book");
    let mut cmd = Command::new(mdbook);
    cmd.current_dir(&root)
        .arg("build")
        .arg("docs")
        .arg("--dest-dir")
        .arg(&dest);
    let done = proc::run(&mut cmd, None, None)?;
    if !done.ok() {
        bail!("`mdbook build docs` failed ({})", done.describe());
    }
    println!(
        "== docs: the book is in {}",
        dest.join("index.html").display()
    );
    Ok(0)
}

fn report(problems: &[String]) -> i32 {
    for p in problems {
        println!("{p}");
    }
    if problems.is_empty() {
        println!("docs: links, SUMMARY.md and the reference pages are in order");
        0
    } else {
        println!("docs: FAILED: {} problem(s)", problems.len());
        1
    }
}

/// Every problem of the README and the book under `root`, as
/// `file:line: what` (paths relative to `root`).
pub fn check(root: &Path) -> Result<Vec<String>> {
    let src = root.join("docs/src");
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files)?;
    let mut pages: BTreeMap<PathBuf, String> = BTreeMap::new();
    for f in files.iter().filter(|f| is_md(f)) {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        pages.insert(f.clone(), text);
    }
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut problems = Vec::new();
    // The targets each page links to, for the reachability check.
    let mut linked: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    let mut ids_cache: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in &pages {
        let dir = file.parent().unwrap_or(root);
        for link in links(text) {
            let Some((path, anchor)) = local(&link.target) else {
                continue;
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                normalize(&dir.join(path))
            };
            let at = format!("{}:{}", rel(file), link.line);
            if !target.exists() {
                problems.push(format!(
                    "{at}: broken link `{}`: {} does not exist",
                    link.target,
                    rel(&target)
                ));
                continue;
            }
            linked.entry(file.clone()).or_default().push(target.clone());
            let Some(anchor) = anchor else { continue };
            if !is_md(&target) {
                continue;
            }
            let ids = match ids_cache.get(&target) {
                Some(ids) => ids,
                None => {
                    let text = match pages.get(&target) {
                        Some(t) => t.clone(),
                        None => std::fs::read_to_string(&target).unwrap_or_default(),
                    };
                    ids_cache
                        .entry(target.clone())
                        .or_insert(heading_ids(&text))
                }
            };
            if !ids.contains(anchor) {
                problems.push(format!(
                    "{at}: broken link `{}`: {} has no heading with the id `{anchor}`",
                    link.target,
                    rel(&target)
                ));
            }
        }
    }
    // SUMMARY.md: every page listed, every other file linked from a page.
    let summary = src.join("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = linked
        .get(&summary)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    if !summary.is_file() {
        problems.push(format!("{}: missing", rel(&summary)));
    }
    let mut in_src = Vec::new();
    walk(&src, &mut in_src)?;
    for f in in_src.iter().filter(|f| **f != summary) {
        if is_md(f) {
            if !listed.contains(f) {
                problems.push(format!("{}:1: not listed in docs/src/SUMMARY.md", rel(f)));
            }
        } else if !listed
            .iter()
            .any(|page| linked.get(page).is_some_and(|t| t.contains(f)))
        {
            problems.push(format!(
                "{}: linked from no page of docs/src/SUMMARY.md",
                rel(f)
            ));
        }
    }
    for page in REFERENCE {
        let p = src.join(page);
        match pages.get(&p) {
            None => problems.push(format!(
                "{}: missing: `cargo xtask docs` generates it (sip-ka assets --reference)",
                rel(&p)
            )),
            Some(t) if t.lines().filter(|l| !l.trim().is_empty()).count() < 2 => {
                problems.push(format!(
                    "{}:1: a placeholder: `cargo xtask docs` generates it (sip-ka assets \
                     --reference)",
                    rel(&p)
                ))
            }
            Some(_) => {}
        }
    }
    Ok(problems)
}

fn is_md(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "md")
}

/// Every file under `dir` (none when it does not exist), sorted.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// A link target's path and anchor, or None for one that leaves the
/// repository (a scheme, `//host`, an absolute path).
fn local(target: &str) -> Option<(&str, Option<&str>)> {
    let t = target.trim();
    if t.is_empty() || t.starts_with('/') || t.starts_with('<') {
        return None;
    }
    let before = t.split(['/', '#']).next().unwrap_or("");
    if before.contains(':') {
        return None;
    }
    Some(match t.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (t, None),
    })
}

#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    target: String,
}

/// Lines outside fenced code blocks, numbered from 1.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fence: Option<&str> = None;
    text.lines().enumerate().filter_map(move |(i, l)| {
        let t = l.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => {
                fence = Some(m);
                None
            }
            (Some(f), Some(m)) if f == m && t.trim_end().trim_start_matches(m).is_empty() => {
                fence = None;
                None
            }
            (Some(_), _) => None,
            (None, None) => Some((i + 1, l)),
        }
    })
}

/// `line` with its code spans blanked out.
fn without_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let after = &rest[start + ticks..];
        let close = "`".repeat(ticks);
        match after.find(&close) {
            Some(end) => {
                out.push(' ');
                rest = &after[end + ticks..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The links of a Markdown text: `[text](target)`, `![alt](target)` and
/// `[label]: target` definitions.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (n, raw) in prose(text) {
        let line = without_code(raw);
        let t = line.trim_start();
        if t.starts_with('[') {
            if let Some((label, target)) = t.split_once("]:") {
                if !label.contains(']') {
                    let target = target.split_whitespace().next().unwrap_or("");
                    out.push(Link {
                        line: n,
                        target: target.to_string(),
                    });
                    continue;
                }
            }
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let mut depth = 0usize;
            let mut end = None;
            for (i, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let Some(end) = end else { break };
            // A title after the target: `[x](path "title")`.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push(Link {
                line: n,
                target: target.trim_matches(['<', '>']).to_string(),
            });
            rest = &after[end..];
        }
    }
    out
}

/// The ids mdBook (0.5) gives the headings of a page: the heading's text
/// as rendered (markup gone, `--` outside code turned into a dash that is
/// then dropped), trimmed and lower-cased, whitespace to `-`, everything
/// but letters, digits, `-` and `_` dropped; an id already used gets `-1`,
/// `-2`, ... (the first free); an explicit `{#id}` wins.
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with([' ', '\t']) {
            continue;
        }
        let title = line[hashes..].trim().trim_end_matches('#').trim_end();
        if let Some(start) = title.rfind("{#") {
            if title.ends_with('}') {
                let id = &title[start + 2..title.len() - 1];
                ids.insert(id.split_whitespace().next().unwrap_or("").to_string());
                continue;
            }
        }
        let base = id_from_content(&plain_text(title));
        let mut id = base.clone();
        let mut n = 0;
        while ids.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        ids.insert(id);
    }
    ids
}

/// A heading's text as mdBook renders it: links reduced to their text,
/// code spans to their content, emphasis marks and HTML tags dropped, and
/// outside code a run of hyphens (smart punctuation's en or em dash)
/// dropped.
fn plain_text(title: &str) -> String {
    let mut out = String::new();
    let mut chars = title.chars().peekable();
    let (mut in_tag, mut in_code) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '`' => in_code = !in_code,
            _ if in_code => out.push(c),
            '<' if chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '/') =>
            {
                in_tag = true
            }
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            '-' if chars.peek() == Some(&'-') => {
                while chars.peek() == Some(&'-') {
                    chars.next();
                }
            }
            '*' | '[' | '!' => {}
            ']' if chars.peek() == Some(&'(') => {
                // Skip the link's target.
                let mut depth = 0;
                for n in chars.by_ref() {
                    match n {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            ']' => {}
            c => out.push(c),
        }
    }
    out
}

/// mdBook's `id_from_content`.
fn id_from_content(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_ids_follow_mdbooks_rule() {
        let ids = heading_ids(
            "# The PBX behind sip-ka: Asterisk\n\
             ## `sip-ka run` and [the edge](x.md)\n\
             ```\n# not a heading\n```\n\
             ## Notes\n## Notes\n## notes-1\n### Custom {#here}\n\
             ## Status and stats --watch, `--json`\n",
        );
        let want: BTreeSet<String> = [
            "the-pbx-behind-sip-ka-asterisk",
            "sip-ka-run-and-the-edge",
            "notes",
            "notes-1",
            "notes-1-1",
            "here",
            "status-and-stats-watch---json",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn links_skip_code_and_keep_line_numbers() {
        let text = "See [a](a.md#x) and `[b](b.md)`.\n\
                    ```\n[c](c.md)\n```\n\
                    ![pic](img/p.svg \"title\") [d](https://example.org) [e](f(1).md)\n\
                    [ref]: r.md\n";
        let got: Vec<(usize, String)> = links(text)
            .into_iter()
            .map(|l| (l.line, l.target))
            .collect();
        let want: Vec<(usize, String)> = [
            (1, "a.md#x"),
            (5, "img/p.svg"),
            (5, "https://example.org"),
            (5, "f(1).md"),
            (6, "r.md"),
        ]
        .into_iter()
        .map(|(n, t)| (n, t.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(local("https://example.org"), None);
        assert_eq!(local("a.md#x"), Some(("a.md", Some("x"))));
        assert_eq!(local("#x"), Some(("", Some("x"))));
    }

    #[test]
    fn a_broken_link_and_an_unlisted_page_are_reported_with_their_place() {
        let dir = std::env::temp_dir().join(format!("xtask-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("docs/src");
        std::fs::create_dir_all(src.join("reference")).unwrap();
        std::fs::create_dir_all(src.join("images")).unwrap();
        let w = |p: &str, t: &str| std::fs::write(dir.join(p), t).unwrap();
        w(
            "README.md",
            "# x\n\n[ok](docs/src/a.md#one)\n[bad](docs/src/a.md#two)\n",
        );
        w(
            "docs/src/SUMMARY.md",
            "# Summary\n\n- [A](a.md)\n- [C](reference/cli.md)\n- [K](reference/config.md)\n",
        );
        w(
            "docs/src/a.md",
            "# One\n\n![p](images/p.svg) [gone](nope.md)\n",
        );
        w("docs/src/b.md", "# B\n");
        w("docs/src/images/p.svg", "<svg/>");
        w("docs/src/images/q.svg", "<svg/>");
        w("docs/src/reference/cli.md", "# CLI\n\nflags\n");
        w("docs/src/reference/config.md", "# Config\n");
        let problems = check(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            problems,
            vec![
                "README.md:4: broken link `docs/src/a.md#two`: docs/src/a.md has no heading \
                 with the id `two`",
                "docs/src/a.md:3: broken link `nope.md`: docs/src/nope.md does not exist",
                "docs/src/b.md:1: not listed in docs/src/SUMMARY.md",
                "docs/src/images/q.svg: linked from no page of docs/src/SUMMARY.md",
                "docs/src/reference/config.md:1: a placeholder: `cargo xtask docs` generates \
                 it (sip-ka assets --reference)",
            ]
        );
    }
}
