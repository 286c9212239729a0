//! `cargo xtask layout`: the source layout rules the workspace keeps.
//!
//! (a) No import cycle between module files (see `graph` for what makes
//! an edge). (b) No file with more than `MAX_LINES` lines of non-test
//! code: the lines before the `#[cfg(test)]` that opens its inline test
//! module; a `tests.rs` or `*_tests.rs` file is all test code.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

mod graph;
mod scan;
#[cfg(test)]
mod tests;

/// Most lines of non-test code a file may have.
pub const MAX_LINES: usize = 600;

/// The crates checked, by directory; only their src/ (tests/ and
/// benches/ are not part of the layout).
const CRATES: [&str; 4] = ["sip-ka-userspace", "sip-ka-ebpf", "sip-ka-common", "xtask"];

/// What the check found, paths relative to the workspace root.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub cycles: Vec<graph::Cycle>,
    /// Files over `MAX_LINES`, with their count of non-test lines.
    pub too_long: Vec<(PathBuf, usize)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.cycles.is_empty() && self.too_long.is_empty()
    }

    /// One line per problem (each starting `cycle:` or `too long:`, which
    /// `cargo xtask test` picks up for its summary), then the details of
    /// each cycle: one way around it, with the path behind every step.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cycles {
            let files: Vec<String> = c.files.iter().map(|f| f.display().to_string()).collect();
            out.push(format!("cycle: {}", files.join(", ")));
        }
        for (file, n) in &self.too_long {
            out.push(format!(
                "too long: {}: {n} lines of non-test code (at most {MAX_LINES})",
                file.display()
            ));
        }
        for c in &self.cycles {
            out.push(String::new());
            out.push(format!(
                "one way around the cycle through {}:",
                c.files[0].display()
            ));
            let n = c.example.len();
            for (i, (file, e)) in c.example.iter().enumerate() {
                let (next, _) = &c.example[(i + 1) % n];
                out.push(format!(
                    "  {}:{}: {} (-> {})",
                    file.display(),
                    e.line,
                    e.path,
                    next.display()
                ));
            }
        }
        out
    }
}

/// The non-test lines of a file named `name` with source `src`.
pub fn code_lines(name: &str, src: &str) -> usize {
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return 0;
    }
    match scan::scan(src).tests_line {
        Some(line) => line - 1,
        None => src.lines().count(),
    }
}

/// The targets of a crate: src/lib.rs, src/main.rs, src/bin/*.rs and
/// src/bin/*/main.rs, as cargo finds them.
fn targets(src: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.is_file())
        .collect();
    if let Ok(rd) = std::fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| {
                if p.is_dir() {
                    Some(p.join("main.rs")).filter(|m| m.is_file())
                } else {
                    Some(p).filter(|p| p.extension().is_some_and(|e| e == "rs"))
                }
            })
            .collect();
        bins.sort();
        out.extend(bins);
    }
    out
}

/// Every .rs file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks the crates under the workspace `root`.
pub fn check(root: &Path) -> Result<Report> {
    let mut report = Report::default();
    // Paths are kept relative to the root, so the reports read well.
    let read = |p: &Path| std::fs::read_to_string(root.join(p)).ok();
    for krate in CRATES {
        let src = Path::new(krate).join("src");
        let roots: Vec<PathBuf> = targets(&root.join(&src))
            .into_iter()
            .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
            .collect();
        let edges = graph::edges(&roots, &read);
        report.cycles.extend(graph::cycles(&edges));
        for file in rust_files(&root.join(&src))? {
            let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            let n = code_lines(name.as_deref().unwrap_or(""), &text);
            if n > MAX_LINES {
                report.too_long.push((rel, n));
            }
            report.files += 1;
        }
    }
    Ok(report)
}

/// `cargo xtask layout`: prints the report; 1 when a rule is broken.
pub fn run(root: &Path) -> Result<i32> {
    let report = check(root)?;
    for l in report.lines() {
        println!("{l}");
    }
    if report.ok() {
        println!(
            "layout: ok ({} files in {}: no import cycle, none over {MAX_LINES} lines of \
             non-test code)",
            report.files,
            CRATES.join(", ")
        );
        Ok(0)
    } else {
        println!();
        println!(
            "layout: FAILED: {} import cycle(s), {} file(s) over {MAX_LINES} lines of \
             non-test code",
            report.cycles.len(),
            report.too_long.len()
        );
        Ok(1)
    }
}
