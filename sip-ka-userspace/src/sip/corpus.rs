//! Inputs for the tests that hold a shortcut to the full parse: header
//! values from the RFC 4475 torture messages, and their one-insertion
//! mutations.

/// The values of the header fields named `names` (long or compact form,
/// any case) in every message of `tests/rfc4475`, as written.
pub(crate) fn torture_fields(names: &[&str]) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rfc4475");
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for e in entries.flatten() {
        let bytes = std::fs::read(e.path())
            .unwrap_or_else(|err| panic!("reading {}: {err}", e.path().display()));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':') {
                if names.contains(&k.trim().to_ascii_lowercase().as_str()) {
                    out.push(v.to_string());
                }
            }
        }
    }
    out
}

/// `values`, then each of them with one of `inserts` put at every
/// position.
pub(crate) fn with_insertions(values: Vec<String>, inserts: &[&str]) -> Vec<String> {
    let mut out = values.clone();
    for v in &values {
        for at in 0..=v.len() {
            for ins in inserts {
                if let (Some(a), Some(b)) = (v.get(..at), v.get(at..)) {
                    out.push(format!("{a}{ins}{b}"));
                }
            }
        }
    }
    out
}
