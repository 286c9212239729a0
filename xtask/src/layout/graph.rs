//! The module trees of a crate's targets, the file-to-file edges its
//! paths make, and the cycles among them.
//!
//! An edge A -> B exists when file A names a path into module file B: a
//! `use`, an inline `crate::`/`super::`/`self::` path, or a bare path
//! through a child module (or a module a `use` brought into scope). A
//! path resolves to the deepest module file it passes through, so
//! `use super::Item` from a child is an edge to its parent's file. The
//! `mod` declarations themselves are not edges, and `#[cfg(test)]`
//! modules are not read at all.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
};

use super::scan::{scan, FileScan, PathRef, Start};

/// Where an edge comes from: the first path that makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub line: usize,
    pub path: String,
}

/// File -> file -> the first path making that edge.
pub type Edges = BTreeMap<PathBuf, BTreeMap<PathBuf, Evidence>>;

/// The modules of one target (a lib, or a bin) and the files they are in.
struct Tree {
    /// Module path (empty for the root) -> the file it is in; an inline
    /// module maps to the file holding it.
    modules: BTreeMap<Vec<String>, PathBuf>,
    /// Every file of the tree with its module path and what it names.
    files: Vec<(PathBuf, Vec<String>, FileScan)>,
}

/// Follows the `mod` declarations from `root`. `read` gives a file's
/// source, or None when there is no such file.
fn tree(root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Tree {
    let mut t = Tree {
        modules: BTreeMap::new(),
        files: Vec::new(),
    };
    // (file, its module path, whether its children live beside it)
    let mut todo = vec![(root.to_path_buf(), Vec::new(), true)];
    while let Some((file, path, owns_dir)) = todo.pop() {
        if t.files.iter().any(|(f, _, _)| *f == file) {
            continue;
        }
        let Some(src) = read(&file) else { continue };
        let s = scan(&src);
        t.modules.insert(path.clone(), file.clone());
        let dir = match (file.parent(), file.file_stem()) {
            (Some(parent), _) if owns_dir => parent.to_path_buf(),
            (Some(parent), Some(stem)) => parent.join(stem),
            _ => PathBuf::new(),
        };
        for m in &s.mods {
            let mut full = path.clone();
            full.extend(m.scope.iter().cloned());
            full.push(m.name.clone());
            if m.inline {
                t.modules.insert(full, file.clone());
                continue;
            }
            let mut d = dir.clone();
            d.extend(&m.scope);
            let flat = d.join(format!("{}.rs", m.name));
            let nested = d.join(&m.name).join("mod.rs");
            if read(&flat).is_some() {
                todo.push((flat, full, false));
            } else if read(&nested).is_some() {
                todo.push((nested, full, true));
            }
        }
        t.files.push((file, path, s));
    }
    t
}

impl Tree {
    /// The module path `p` names, from module `cur`; None for a bare path
    /// that is neither a child module nor an alias of one.
    fn resolve(
        &self,
        cur: &[String],
        p: &PathRef,
        aliases: &BTreeMap<(Vec<String>, String), Vec<String>>,
    ) -> Option<Vec<String>> {
        let mut out = match p.start {
            Start::Crate => Vec::new(),
            Start::SelfMod => cur.to_vec(),
            Start::Super(n) => cur[..cur.len().checked_sub(n)?].to_vec(),
            Start::Bare => {
                let first = p.segs.first()?;
                let mut child = cur.to_vec();
                child.push(first.clone());
                if self.modules.contains_key(&child) {
                    cur.to_vec()
                } else {
                    let target = aliases.get(&(cur.to_vec(), first.clone()))?;
                    let mut out = target.clone();
                    out.extend(p.segs[1..].iter().cloned());
                    return Some(out);
                }
            }
        };
        out.extend(p.segs.iter().cloned());
        Some(out)
    }

    /// The file of the deepest module on `path`.
    fn file_of(&self, path: &[String]) -> Option<&PathBuf> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.modules.get(&path[..n]))
    }

    fn add_edges(&self, edges: &mut Edges) {
        for (file, module, s) in &self.files {
            let scope_of = |p: &PathRef| {
                let mut cur = module.clone();
                cur.extend(p.scope.iter().cloned());
                cur
            };
            // Names a `use` binds to modules, for the bare paths through
            // them; a few rounds, as one `use` may go through another.
            let mut aliases = BTreeMap::new();
            for _ in 0..3 {
                for p in &s.paths {
                    let (Some(name), cur) = (&p.binds, scope_of(p)) else {
                        continue;
                    };
                    if let Some(target) = self.resolve(&cur, p, &aliases) {
                        if self.modules.contains_key(&target) {
                            aliases.insert((cur, name.clone()), target);
                        }
                    }
                }
            }
            for p in &s.paths {
                let Some(target) = self.resolve(&scope_of(p), p, &aliases) else {
                    continue;
                };
                let Some(to) = self.file_of(&target) else {
                    continue;
                };
                if to != file {
                    edges
                        .entry(file.clone())
                        .or_default()
                        .entry(to.clone())
                        .or_insert_with(|| Evidence {
                            line: p.line,
                            path: p.text(),
                        });
                }
            }
        }
    }
}

/// The edges between the files of the targets rooted at `roots`.
pub fn edges(roots: &[PathBuf], read: &dyn Fn(&Path) -> Option<String>) -> Edges {
    let mut edges = Edges::new();
    for root in roots {
        tree(root, read).add_edges(&mut edges);
    }
    edges
}

/// A set of files that import each other, with one way around it.
#[derive(Debug)]
pub struct Cycle {
    /// The files of the strongly connected component, sorted.
    pub files: Vec<PathBuf>,
    /// A shortest cycle through the first file: each step's file and the
    /// path in it that leads to the next (the last leads back to the first).
    pub example: Vec<(PathBuf, Evidence)>,
}

/// Every set of two or more files that reach each other (Tarjan's
/// strongly connected components).
pub fn cycles(edges: &Edges) -> Vec<Cycle> {
    struct State<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a PathBuf) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on_stack.insert(v);
        let edges = st.edges;
        for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    let mut out: Vec<Cycle> = st
        .out
        .into_iter()
        .map(|files| Cycle {
            example: shortest_cycle(edges, &files),
            files,
        })
        .collect();
    out.sort_by(|a, b| a.files.cmp(&b.files));
    out
}

/// A shortest way from `files[0]` back to itself inside `files`.
fn shortest_cycle(edges: &Edges, files: &[PathBuf]) -> Vec<(PathBuf, Evidence)> {
    let Some(start) = files.first() else {
        return Vec::new();
    };
    let inside: BTreeSet<&PathBuf> = files.iter().collect();
    let next = |v: &PathBuf| {
        edges
            .get(v)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(w, _)| inside.contains(w))
            .map(|(w, e)| (w.clone(), e.clone()))
            .collect::<Vec<_>>()
    };
    // Breadth first from `start`; `came_from` holds each file's
    // predecessor and the evidence of that edge.
    let mut came_from: BTreeMap<PathBuf, (PathBuf, Evidence)> = BTreeMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for (w, e) in next(&v) {
            if w == *start {
                let mut steps = vec![(v.clone(), e)];
                let mut at = v;
                while at != *start {
                    let (prev, pe) = came_from[&at].clone();
                    steps.push((prev.clone(), pe));
                    at = prev;
                }
                steps.reverse();
                return steps;
            }
            if !came_from.contains_key(&w) {
                came_from.insert(w.clone(), (v.clone(), e));
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}
