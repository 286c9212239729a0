//! `--blocklist FILE`: one address or CIDR per line, as the common lists
//! ship them: FireHOL netsets and plain lists (`#` comments), Spamhaus
//! DROP (`; SBL...` after the prefix), and `ipset save` output such as
//! the APIBAN client keeps (`add SET ADDR`).

use std::path::Path;

use anyhow::{Context as _, Result};

use super::prefix::Prefix;

/// What a list file holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct List {
    pub prefixes: Vec<Prefix>,
    /// Lines that named no address: (line number, text), the first few.
    pub bad: Vec<(usize, String)>,
    /// How many lines were bad in all.
    pub bad_count: usize,
}

/// Bad lines kept for the log.
const BAD_KEPT: usize = 5;

/// Parses a list's text.
pub fn parse(text: &str) -> List {
    let mut list = List::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(['#', ';']).next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let mut word = words.next().unwrap_or_default();
        if word == "add" {
            // ipset save: `add SETNAME ADDR [timeout N ...]`.
            word = words.nth(1).unwrap_or_default();
        } else if word == "create" {
            continue;
        }
        match Prefix::parse(word) {
            Ok(p) => list.prefixes.push(p),
            Err(_) => {
                list.bad_count += 1;
                if list.bad.len() < BAD_KEPT {
                    list.bad.push((i + 1, line.chars().take(80).collect()));
                }
            }
        }
    }
    list.prefixes.sort();
    list.prefixes.dedup();
    list
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> Result<List> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading blocklist {}", path.display()))?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_formats() {
        let text = "\
# FireHOL style
203.0.113.0/24
198.51.100.7   # one host
192.0.2.0/24 ; SBL123456
create apiban hash:ip family inet hashsize 1024 maxelem 65536
add apiban 100.64.1.2
add apiban 2001:db8:bad::/48 timeout 600

not-an-address
1.2.3.4/40
";
        let l = parse(text);
        let mut got: Vec<String> = l.prefixes.iter().map(|p| p.to_string()).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "100.64.1.2",
                "192.0.2.0/24",
                "198.51.100.7",
                "2001:db8:bad::/48",
                "203.0.113.0/24",
            ]
        );
        assert_eq!(l.bad_count, 2);
        assert_eq!(l.bad[0], (9, "not-an-address".to_string()));
    }
}
