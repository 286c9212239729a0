//! Reading one Rust file for the layout check: a tokenizer that knows
//! comments, strings, chars and lifetimes (so nothing in them is taken
//! for a path), then the module declarations, the paths the file names
//! (`use` trees expanded, inline paths) and where its tests start.

/// How a path starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// `crate::` (or `$crate::` in a macro).
    Crate,
    /// `self::`.
    SelfMod,
    /// `super::` repeated this many times (after an optional `self::`).
    Super(usize),
    /// A plain name: a child module, an alias from a `use`, or anything
    /// else (an extern crate, a type); resolution tells them apart.
    Bare,
}

/// A path the file names, as written (relative to `scope`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRef {
    /// The inline modules (`mod a { ... }`) the path sits in.
    pub scope: Vec<String>,
    pub start: Start,
    /// The segments after the `crate`/`self`/`super` ones.
    pub segs: Vec<String>,
    pub line: usize,
    /// The name a `use` brings into scope (`as` alias or last segment);
    /// None for inline paths and globs.
    pub binds: Option<String>,
}

impl PathRef {
    /// The path as it would be written, for reports.
    pub fn text(&self) -> String {
        let mut parts: Vec<&str> = match self.start {
            Start::Crate => vec!["crate"],
            Start::SelfMod => vec!["self"],
            Start::Super(n) => vec!["super"; n],
            Start::Bare => vec![],
        };
        parts.extend(self.segs.iter().map(String::as_str));
        parts.join("::")
    }
}

/// A `mod name;` or `mod name { ... }` that is not test code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModDecl {
    pub scope: Vec<String>,
    pub name: String,
    /// `mod name { ... }`: the module is in this file.
    pub inline: bool,
}

/// What the layout check needs from one file.
#[derive(Debug, Default)]
pub struct FileScan {
    pub mods: Vec<ModDecl>,
    pub paths: Vec<PathRef>,
    /// The 1-based line of the `#[cfg(test)]` that opens the first inline
    /// test module.
    pub tests_line: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A literal or lifetime: never part of a path.
    Other,
}

struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn tokenize(src: &str) -> Vec<Token> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Advances over s[from..to], counting newlines.
    let skip = |from: usize, to: usize, line: &mut usize| {
        *line += s[from..to.min(s.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count();
        to.min(s.len())
    };
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            let mut j = i;
            while j < s.len() {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = skip(i, j, &mut line);
        } else if c == '"' {
            let end = string_end(&s, i + 1, usize::MAX);
            out.push(Token {
                tok: Tok::Other,
                line,
            });
            i = skip(i, end, &mut line);
        } else if c == '\'' {
            out.push(Token {
                tok: Tok::Other,
                line,
            });
            i = char_or_lifetime_end(&s, i);
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let prefix = matches!(word.as_str(), "r" | "b" | "br" | "c" | "cr");
            let raw = word.ends_with('r');
            match s.get(i) {
                Some('"') if prefix => {
                    let end = string_end(&s, i + 1, if raw { 0 } else { usize::MAX });
                    out.push(Token {
                        tok: Tok::Other,
                        line,
                    });
                    i = skip(i, end, &mut line);
                }
                Some('#') if prefix && raw => {
                    let mut hashes = 0;
                    while s.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if s.get(i + hashes) == Some(&'"') {
                        let end = string_end(&s, i + hashes + 1, hashes);
                        out.push(Token {
                            tok: Tok::Other,
                            line,
                        });
                        i = skip(i, end, &mut line);
                    } else if word == "r" && s.get(i + 1).is_some_and(|c| is_ident_start(*c)) {
                        // A raw identifier, r#name.
                        let start = i + 1;
                        i = start;
                        while i < s.len() && is_ident_char(s[i]) {
                            i += 1;
                        }
                        out.push(Token {
                            tok: Tok::Ident(s[start..i].iter().collect()),
                            line,
                        });
                    } else {
                        out.push(Token {
                            tok: Tok::Ident(word),
                            line,
                        });
                    }
                }
                Some('\'') if word == "b" => {
                    out.push(Token {
                        tok: Tok::Other,
                        line,
                    });
                    i = char_or_lifetime_end(&s, i);
                }
                _ => out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                }),
            }
        } else if c.is_ascii_digit() {
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Other,
                line,
            });
        } else if c == ':' && next == Some(':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

/// The index past the closing quote of a string whose body starts at
/// `i`. `hashes`: the `#`s of a raw string (0 for r"..."), or
/// `usize::MAX` for a string with escapes.
fn string_end(s: &[char], mut i: usize, hashes: usize) -> usize {
    while i < s.len() {
        match s[i] {
            '\\' if hashes == usize::MAX => i += 2,
            '"' if hashes != usize::MAX => {
                let closing = (1..=hashes).all(|k| s.get(i + k) == Some(&'#'));
                if closing {
                    return i + 1 + hashes;
                }
                i += 1;
            }
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// At a `'`: the index past a char literal ('a', '\n', '\u{..}') or a
/// lifetime ('a, 'static).
fn char_or_lifetime_end(s: &[char], i: usize) -> usize {
    match (s.get(i + 1), s.get(i + 2)) {
        (Some('\\'), _) => {
            let mut j = i + 3;
            while j < s.len() && s[j] != '\'' {
                j += 1;
            }
            j + 1
        }
        (Some(_), Some('\'')) => i + 3,
        _ => {
            let mut j = i + 1;
            while j < s.len() && is_ident_char(s[j]) {
                j += 1;
            }
            j
        }
    }
}

/// Reads a file's source.
pub fn scan(src: &str) -> FileScan {
    let toks = tokenize(src);
    let mut out = FileScan::default();
    // The inline modules we are in, with the brace depth inside each.
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let names = || scope.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if let Some(item) = test_mod_at(&toks, i) {
            if out.tests_line.is_none() && item.inline {
                out.tests_line = Some(toks[i].line);
            }
            i = item.end;
            continue;
        }
        match &toks[i].tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(Tok::Ident(name)) = toks.get(i + 1).map(|t| &t.tok) {
                    let inline = toks.get(i + 2).map(|t| &t.tok) == Some(&Tok::Punct('{'));
                    out.mods.push(ModDecl {
                        scope: names(),
                        name: name.clone(),
                        inline,
                    });
                    if inline {
                        scope.push((name.clone(), depth));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(w) if w == "use" => {
                let mut leaves = Vec::new();
                if let Some(end) = use_tree(&toks, i + 1, &[], &mut leaves) {
                    if toks.get(end).map(|t| &t.tok) == Some(&Tok::Punct(';')) {
                        let line = toks[i].line;
                        for (segs, binds) in leaves {
                            if let Some(p) = path_ref(names(), segs, line, binds) {
                                out.paths.push(p);
                            }
                        }
                        i = end + 1;
                        continue;
                    }
                }
            }
            Tok::Ident(_) if starts_path(&toks, i) => {
                let mut segs = Vec::new();
                let mut j = i;
                while let Some(Tok::Ident(w)) = toks.get(j).map(|t| &t.tok) {
                    segs.push(w.clone());
                    if toks.get(j + 1).map(|t| &t.tok) != Some(&Tok::PathSep) {
                        break;
                    }
                    j += 2;
                }
                if segs.len() >= 2 {
                    if let Some(p) = path_ref(names(), segs.clone(), toks[i].line, None) {
                        out.paths.push(p);
                    }
                }
                i += (2 * segs.len()).saturating_sub(1).max(1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether the identifier at `i` begins a path: not after `::` (the middle
/// of one), `.` (a method or field) or `$` (a macro variable, except
/// `$crate`).
fn starts_path(toks: &[Token], i: usize) -> bool {
    if toks.get(i + 1).map(|t| &t.tok) != Some(&Tok::PathSep) {
        return false;
    }
    match i.checked_sub(1).map(|p| &toks[p].tok) {
        Some(Tok::PathSep) | Some(Tok::Punct('.')) => false,
        Some(Tok::Punct('$')) => toks[i].tok == Tok::Ident("crate".into()),
        _ => true,
    }
}

/// Sorts a written path into its start and the rest; None for a path
/// that cannot name a module of this crate (`Self::`, a bare single
/// name).
fn path_ref(
    scope: Vec<String>,
    segs: Vec<String>,
    line: usize,
    binds: Option<String>,
) -> Option<PathRef> {
    let mut rest = segs.as_slice();
    let start = match rest.first()?.as_str() {
        "crate" => {
            rest = &rest[1..];
            Start::Crate
        }
        "Self" => return None,
        "self" | "super" => {
            if rest[0] == "self" {
                rest = &rest[1..];
            }
            let n = rest.iter().take_while(|s| *s == "super").count();
            rest = &rest[n..];
            if n == 0 {
                Start::SelfMod
            } else {
                Start::Super(n)
            }
        }
        _ => Start::Bare,
    };
    if start == Start::Bare && rest.len() < 2 && binds.is_none() {
        return None;
    }
    Some(PathRef {
        scope,
        start,
        segs: rest.to_vec(),
        line,
        binds,
    })
}

/// Parses a `use` tree from `i` under `prefix`, adding each leaf (full
/// path, the name it binds) to `out`. Returns the index after the tree,
/// or None if this is not a tree (e.g. `use<'a>` bounds). A tree that
/// starts with `::` names an extern crate: parsed, not recorded.
fn use_tree(
    toks: &[Token],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>)>,
) -> Option<usize> {
    let mut path = prefix.to_vec();
    let mut external = false;
    if toks.get(i)?.tok == Tok::PathSep {
        external = true;
        i += 1;
    }
    let mut sink = Vec::new();
    let dest = if external { &mut sink } else { out };
    loop {
        match &toks.get(i)?.tok {
            Tok::Punct('*') => {
                dest.push((path, None));
                return Some(i + 1);
            }
            Tok::Punct('{') => {
                i += 1;
                loop {
                    match &toks.get(i)?.tok {
                        Tok::Punct('}') => return Some(i + 1),
                        Tok::Punct(',') => i += 1,
                        _ => i = use_tree(toks, i, &path, dest)?,
                    }
                }
            }
            Tok::Ident(w) => {
                i += 1;
                if w == "self"
                    && !path.is_empty()
                    && toks.get(i).map(|t| &t.tok) != Some(&Tok::PathSep)
                {
                    // `a::{self}`: `a` itself.
                } else {
                    path.push(w.clone());
                }
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    i += 1;
                    continue;
                }
                let mut binds = path.last().cloned();
                if toks.get(i).map(|t| &t.tok) == Some(&Tok::Ident("as".into())) {
                    binds = match &toks.get(i + 1)?.tok {
                        Tok::Ident(a) if a != "_" => Some(a.clone()),
                        _ => None,
                    };
                    i += 2;
                }
                dest.push((path, binds));
                return Some(i);
            }
            _ => return None,
        }
    }
}

/// A `#[cfg(test)]` module starting at `i` (the `#`): where it ends, and
/// whether its body is inline.
struct TestMod {
    end: usize,
    inline: bool,
}

fn test_mod_at(toks: &[Token], i: usize) -> Option<TestMod> {
    let tok = |k: usize| toks.get(k).map(|t| &t.tok);
    let ident = |k: usize, w: &str| tok(k) == Some(&Tok::Ident(w.into()));
    let cfg_test = [
        tok(i) == Some(&Tok::Punct('#')),
        tok(i + 1) == Some(&Tok::Punct('[')),
        ident(i + 2, "cfg"),
        tok(i + 3) == Some(&Tok::Punct('(')),
        ident(i + 4, "test"),
        tok(i + 5) == Some(&Tok::Punct(')')),
        tok(i + 6) == Some(&Tok::Punct(']')),
    ];
    if !cfg_test.iter().all(|ok| *ok) {
        return None;
    }
    let mut j = i + 7;
    // Further attributes, then a visibility.
    loop {
        if tok(j) == Some(&Tok::Punct('#')) && tok(j + 1) == Some(&Tok::Punct('[')) {
            j = group_end(toks, j + 1, '[', ']')?;
        } else if ident(j, "pub") {
            j += 1;
            if tok(j) == Some(&Tok::Punct('(')) {
                j = group_end(toks, j, '(', ')')?;
            }
        } else {
            break;
        }
    }
    if !ident(j, "mod") || !matches!(tok(j + 1), Some(Tok::Ident(_))) {
        return None;
    }
    match tok(j + 2)? {
        Tok::Punct(';') => Some(TestMod {
            end: j + 3,
            inline: false,
        }),
        Tok::Punct('{') => Some(TestMod {
            end: group_end(toks, j + 2, '{', '}')?,
            inline: true,
        }),
        _ => None,
    }
}

/// The index after the group opened by `open` at `i`.
fn group_end(toks: &[Token], i: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(i) {
        if t.tok == Tok::Punct(open) {
            depth += 1;
        } else if t.tok == Tok::Punct(close) {
            depth -= 1;
            if depth == 0 {
                return Some(k + 1);
            }
        }
    }
    None
}
