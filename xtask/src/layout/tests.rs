use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{
    code_lines,
    graph::{cycles, edges, Edges},
    scan::{scan, Start},
};

/// The edges of a crate given as (path, source) pairs, rooted at src/lib.rs.
fn crate_edges(files: &[(&str, &str)]) -> Edges {
    let map: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect();
    let read = |p: &Path| map.get(p).cloned();
    edges(&[PathBuf::from("src/lib.rs")], &read)
}

fn cycle_files(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    cycles(&crate_edges(files))
        .into_iter()
        .map(|c| c.files.iter().map(|f| f.display().to_string()).collect())
        .collect()
}

fn has_edge(e: &Edges, from: &str, to: &str) -> bool {
    e.get(Path::new(from))
        .is_some_and(|m| m.contains_key(Path::new(to)))
}

#[test]
fn use_trees_expand_nested_braces_self_and_aliases() {
    let s = scan("use crate::{a::{b::{self, C}, d as e}, f::*};\nuse ::ext::x;\n");
    let got: Vec<(Start, Vec<&str>, Option<&str>)> = s
        .paths
        .iter()
        .map(|p| {
            (
                p.start.clone(),
                p.segs.iter().map(String::as_str).collect(),
                p.binds.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Start::Crate, vec!["a", "b"], Some("b")),
            (Start::Crate, vec!["a", "b", "C"], Some("C")),
            (Start::Crate, vec!["a", "d"], Some("e")),
            (Start::Crate, vec!["f"], None),
        ]
    );
}

#[test]
fn comments_strings_and_chars_name_no_paths() {
    let s = scan(
        "// use crate::a::X;\n/* crate::b::Y /* nested */ super::c */\n\
         /// [`crate::d`]\nconst S: &str = \"crate::e::Z\";\nconst R: &str = r#\"super::f\"#;\n\
         const C: char = '\"'; fn g<'a>(x: &'a u8) -> u8 { self::h::i(x) }\n",
    );
    let texts: Vec<String> = s.paths.iter().map(|p| p.text()).collect();
    assert_eq!(texts, vec!["self::h::i"]);
    assert_eq!(s.paths[0].line, 6);
}

#[test]
fn test_modules_are_skipped_and_mark_where_tests_start() {
    let src = "use crate::a::X;\n\n#[cfg(test)]\nmod tests {\n    use crate::b::Y;\n}\n";
    let s = scan(src);
    assert_eq!(s.paths.len(), 1);
    assert_eq!(s.tests_line, Some(3));
    assert!(s.mods.is_empty());
    assert_eq!(code_lines("x.rs", src), 2);
    assert_eq!(code_lines("x.rs", "fn a() {}\nfn b() {}\n"), 2);
    assert_eq!(code_lines("tests.rs", src), 0);
    assert_eq!(code_lines("timer_tests.rs", src), 0);
    // An out-of-line test module: no inline tests to cut at.
    assert_eq!(
        scan("#[cfg(test)]\nmod tests;\nfn a() {}\n").tests_line,
        None
    );
}

#[test]
fn cycle_between_parent_and_child() {
    // The parent re-exports its child, and the child uses the parent.
    let files = [
        ("src/lib.rs", "mod a;\npub use a::X;\npub struct Y;\n"),
        ("src/a.rs", "use crate::Y;\npub struct X(Y);\n"),
    ];
    assert_eq!(cycle_files(&files), vec![vec!["src/a.rs", "src/lib.rs"]]);
}

#[test]
fn cycle_through_super() {
    let files = [
        ("src/lib.rs", "mod m;\n"),
        ("src/m/mod.rs", "mod b;\npub fn f() { b::g() }\n"),
        ("src/m/b.rs", "pub fn g() { super::f() }\n"),
    ];
    assert_eq!(
        cycle_files(&files),
        vec![vec!["src/m/b.rs", "src/m/mod.rs"]]
    );
    let c = &cycles(&crate_edges(&files))[0];
    let steps: Vec<(String, String)> = c
        .example
        .iter()
        .map(|(f, e)| (f.display().to_string(), e.path.clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("src/m/b.rs".into(), "super::f".into()),
            ("src/m/mod.rs".into(), "b::g".into()),
        ]
    );
}

#[test]
fn cycle_through_nested_use_tree() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "use crate::{b::{self, X}, c::{Z}};\n"),
        ("src/b.rs", "pub struct X;\n"),
        (
            "src/c.rs",
            "use super::{b, a::{self as other}};\npub struct Z;\n",
        ),
    ];
    assert_eq!(cycle_files(&files), vec![vec!["src/a.rs", "src/c.rs"]]);
}

#[test]
fn siblings_importing_each_other_directly_make_no_cycle() {
    // mod.rs re-exports its children; they import each other, never it.
    let files = [
        ("src/lib.rs", "pub mod sip;\nuse sip::Message;\n"),
        (
            "src/sip/mod.rs",
            "mod headers;\nmod message;\npub use headers::Header;\npub use message::Message;\n",
        ),
        ("src/sip/headers.rs", "pub struct Header;\n"),
        (
            "src/sip/message.rs",
            "use super::headers::Header;\npub struct Message(Header);\n\
             #[cfg(test)]\nmod tests {\n    use super::super::Message;\n}\n",
        ),
    ];
    let e = crate_edges(&files);
    assert!(cycles(&e).is_empty(), "{e:?}");
    assert!(has_edge(&e, "src/sip/message.rs", "src/sip/headers.rs"));
    assert!(has_edge(&e, "src/sip/mod.rs", "src/sip/message.rs"));
    assert!(has_edge(&e, "src/lib.rs", "src/sip/mod.rs"));
    assert!(!has_edge(&e, "src/sip/message.rs", "src/sip/mod.rs"));
}

#[test]
fn paths_through_a_used_module_reach_its_file() {
    let files = [
        ("src/lib.rs", "mod sip;\nmod edge;\n"),
        ("src/sip/mod.rs", "pub mod headers;\n"),
        (
            "src/sip/headers.rs",
            "pub fn parse() { crate::edge::go() }\n",
        ),
        (
            "src/edge.rs",
            "use crate::sip;\npub fn go() { sip::headers::parse() }\n",
        ),
    ];
    let e = crate_edges(&files);
    assert!(has_edge(&e, "src/edge.rs", "src/sip/headers.rs"));
    assert_eq!(
        cycle_files(&files),
        vec![vec!["src/edge.rs", "src/sip/headers.rs"]]
    );
}

#[test]
fn inline_modules_resolve_within_their_file() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "mod inner {\n    pub fn f() { super::super::b::g() }\n}\npub fn h() {}\n",
        ),
        ("src/b.rs", "pub fn g() {}\n"),
    ];
    let e = crate_edges(&files);
    assert!(has_edge(&e, "src/a.rs", "src/b.rs"));
    assert!(cycles(&e).is_empty());
}
