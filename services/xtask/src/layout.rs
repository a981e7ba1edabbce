//! The layout rules of the tree, checked on the sources.
//!
//! In: every `.rs` file of a crate's `src/` (path and text). Out: the
//! violations, each a sentence naming the file (and line) that breaks a rule:
//!
//! - **no import circle**: the top-level modules of a crate (`src/event.rs` and
//!   `src/identity/**` are modules `event` and `identity`) may use each other
//!   only in one direction; a path `crate::x::...` in module `m` is an edge
//!   `m -> x`, and any cycle of edges is reported with the lines that make it;
//! - **files a reader can hold**: at most [`Limits::file_lines`] lines of
//!   production code per file;
//! - **functions a reader can hold**: at most [`Limits::fn_lines`] lines per
//!   production function (signature to closing brace).
//!
//! Test code does not count: files named `tests.rs`, `*_tests.rs` or
//! `testkit.rs`, and every item under `#[cfg(test)]` or `#[test]`. Keeps
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::visit::Visit;

/// The limits of the layout rules.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub file_lines: usize,
    pub fn_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            file_lines: 600,
            fn_lines: 80,
        }
    }
}

/// One source file of a crate: its path relative to the crate's `src/`.
pub struct Source {
    pub rel_path: String,
    pub text: String,
}

/// A production file's measures, for the summary line.
#[derive(Debug, Default)]
pub struct Measures {
    pub longest_file: (usize, String),
    pub longest_fn: (usize, String),
    pub modules: usize,
}

/// Checks one crate; returns the violations (empty when the crate keeps every
/// rule) and its measures.
pub fn check_crate(crate_name: &str, sources: &[Source], limits: Limits) -> (Vec<String>, Measures) {
    let mut violations = Vec::new();
    let mut measures = Measures::default();
    let modules: BTreeSet<String> = sources.iter().filter_map(|s| top_module(&s.rel_path)).collect();
    measures.modules = modules.len();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for source in sources.iter().filter(|s| is_production_file(&s.rel_path)) {
        let place = format!("{crate_name}/src/{}", source.rel_path);
        let file = match syn::parse_file(&source.text) {
            Ok(f) => f,
            Err(e) => {
                violations.push(format!("{place}: does not parse: {e}"));
                continue;
            }
        };
        let mut walker = Walker::default();
        walker.visit_file(&file);
        let lines = source.text.lines().count().saturating_sub(walker.test_lines);
        if lines > measures.longest_file.0 {
            measures.longest_file = (lines, place.clone());
        }
        if lines > limits.file_lines {
            violations.push(format!(
                "{place}: {lines} lines of production code, more than {}: cut it into one file a concern",
                limits.file_lines
            ));
        }
        for (name, line, len) in &walker.fns {
            if *len > measures.longest_fn.0 {
                measures.longest_fn = (*len, format!("{place}:{line} {name}"));
            }
            if *len > limits.fn_lines {
                violations.push(format!(
                    "{place}:{line}: fn {name} has {len} lines, more than {}: cut it into named steps",
                    limits.fn_lines
                ));
            }
        }
        if let Some(from) = top_module(&source.rel_path) {
            for (to, line) in &walker.crate_paths {
                if *to != from && modules.contains(to) {
                    edges
                        .entry((from.clone(), to.clone()))
                        .or_insert_with(|| format!("{place}:{line}"));
                }
            }
        }
    }
    for cycle in cycles(&modules, &edges) {
        let mut text = format!("{crate_name}: import circle between modules {}:", cycle.join(", "));
        for ((from, to), at) in &edges {
            if cycle.contains(from) && cycle.contains(to) {
                text.push_str(&format!("\n    {from} -> {to} (first at {at})"));
            }
        }
        violations.push(text);
    }
    (violations, measures)
}

/// Files that hold only tests do not count.
fn is_production_file(rel_path: &str) -> bool {
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    !matches!(name, "tests.rs" | "testkit.rs") && !name.ends_with("_tests.rs") && !rel_path.starts_with("bin/tests")
}

/// `event.rs` -> `event`; `identity/plan.rs` -> `identity`; the crate root
/// (`lib.rs`, `main.rs`) and test files belong to no module.
fn top_module(rel_path: &str) -> Option<String> {
    if !is_production_file(rel_path) {
        return None;
    }
    let first = rel_path.split('/').next()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_string())
}

/// Walks a file's production items: function lengths, `crate::` paths, and
/// the lines that test code takes.
#[derive(Default)]
struct Walker {
    fns: Vec<(String, usize, usize)>,
    crate_paths: Vec<(String, usize)>,
    test_lines: usize,
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if a.path().is_ident("test") {
            return true;
        }
        if !a.path().is_ident("cfg") {
            return false;
        }
        // `#[cfg(test)]` (not `cfg(not(test))`).
        a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

fn lines_of(span: Span) -> usize {
    span.end().line.saturating_sub(span.start().line) + 1
}

impl Walker {
    fn function(&mut self, name: String, sig: &syn::Signature, body: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = body.brace_token.span.close().end().line;
        self.fns.push((name, start, end.saturating_sub(start) + 1));
    }

    fn crate_path<'a>(&mut self, mut idents: impl Iterator<Item = &'a syn::Ident>, line: usize) {
        if idents.next().is_some_and(|i| i == "crate") {
            if let Some(module) = idents.next() {
                self.crate_paths.push((module.to_string(), line));
            }
        }
    }
}

impl<'ast> Visit<'ast> for Walker {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Macro(m) => &m.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            // An out-of-line `#[cfg(test)] mod tests;` takes one line here.
            self.test_lines += lines_of(item.span());
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.function(f.sig.ident.to_string(), &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            self.test_lines += lines_of(f.span());
            return;
        }
        self.function(f.sig.ident.to_string(), &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(body) = &f.default {
            self.function(f.sig.ident.to_string(), &f.sig, body);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        use_paths(&u.tree, &mut prefix, &mut |idents| {
            let line = u.span().start().line;
            self.crate_path(idents.iter().copied(), line);
        });
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let line = path.span().start().line;
        self.crate_path(path.segments.iter().map(|s| &s.ident), line);
        syn::visit::visit_path(self, path);
    }
}

/// Calls `f` with the leading idents of every path a `use` tree names.
fn use_paths<'a>(tree: &'a syn::UseTree, prefix: &mut Vec<&'a syn::Ident>, f: &mut impl FnMut(&[&syn::Ident])) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(&p.ident);
            use_paths(&p.tree, prefix, f);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            prefix.push(&n.ident);
            f(prefix);
            prefix.pop();
        }
        syn::UseTree::Rename(r) => {
            prefix.push(&r.ident);
            f(prefix);
            prefix.pop();
        }
        syn::UseTree::Glob(_) => f(prefix),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, f);
            }
        }
    }
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(modules: &BTreeSet<String>, edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let names: Vec<&String> = modules.iter().collect();
    let index_of = |m: &String| names.iter().position(|n| *n == m);
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (from, to) in edges.keys() {
        if let (Some(a), Some(b)) = (index_of(from), index_of(to)) {
            next[a].push(b);
        }
    }
    let mut tarjan = Tarjan {
        next,
        index: vec![None; names.len()],
        low: vec![0; names.len()],
        on_stack: vec![false; names.len()],
        stack: Vec::new(),
        counter: 0,
        components: Vec::new(),
    };
    for v in 0..names.len() {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut c: Vec<String> = c.into_iter().map(|i| names[i].clone()).collect();
            c.sort();
            c
        })
        .collect()
}

struct Tarjan {
    next: Vec<Vec<usize>>,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    counter: usize,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.counter);
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for w in self.next[v].clone() {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(rel_path: &str, text: &str) -> Source {
        Source {
            rel_path: rel_path.to_string(),
            text: text.to_string(),
        }
    }

    fn check(sources: &[Source]) -> Vec<String> {
        check_crate("c", sources, Limits::default()).0
    }

    #[test]
    fn a_one_way_graph_passes() {
        let v = check(&[
            src("lib.rs", "pub mod a; pub mod b;"),
            src("a.rs", "use crate::b::Thing; pub fn f(_: Thing) {}"),
            src("b.rs", "pub struct Thing;"),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_circle_through_a_use_and_an_inline_path_is_reported() {
        let v = check(&[
            src("a.rs", "use crate::b::Thing; pub struct Other;"),
            src("b/mod.rs", "pub struct Thing;\nmod inner;"),
            src("b/inner.rs", "fn g() -> crate::a::Other { crate::a::Other }"),
        ]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("import circle between modules a, b"), "{}", v[0]);
        assert!(v[0].contains("b -> a (first at c/src/b/inner.rs:1)"), "{}", v[0]);
    }

    #[test]
    fn a_circle_of_three_and_grouped_uses_are_reported() {
        let v = check(&[
            src("a.rs", "use crate::{b::X, time::T};"),
            src("b.rs", "use crate::c::*;"),
            src("c.rs", "pub use crate::a as alias;"),
            src("time.rs", "pub struct T;"),
        ]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("a, b, c"), "{}", v[0]);
        assert!(!v[0].contains("time"), "{}", v[0]);
    }

    #[test]
    fn test_code_may_import_anything() {
        let v = check(&[
            src("a.rs", "use crate::b::X;\n#[cfg(test)]\nmod tests { use crate::a::Y; }"),
            src("b.rs", "#[cfg(test)] use crate::a::Y;\npub struct X;"),
            src("b/tests.rs", "use crate::a::Y;"),
            src("b/more_tests.rs", "use crate::a::Y;"),
            src("testkit.rs", "use crate::a::Y; use crate::b::X;"),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_long_function_is_reported_with_its_place() {
        let body = "    let x = 1;\n".repeat(79);
        let text = format!("pub struct S;\nimpl S {{\n    pub fn long(&self) {{\n{body}    }}\n}}\nfn short() {{}}\n");
        let v = check(&[src("a.rs", &text)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("c/src/a.rs:3: fn long has 81 lines"), "{}", v[0]);
        let ok = text.replacen("    let x = 1;\n", "", 1);
        assert!(check(&[src("a.rs", &ok)]).is_empty());
    }

    #[test]
    fn a_long_file_is_reported_but_its_tests_do_not_count() {
        let items = "pub const A: u8 = 1;\n".repeat(601);
        let v = check(&[src("a.rs", &items)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("c/src/a.rs: 601 lines of production code"), "{}", v[0]);
        let tests = format!(
            "#[cfg(test)]\nmod tests {{\n{}}}\n",
            "    #[test]\n    fn t() {}\n".repeat(300)
        );
        let split = format!("{}{tests}", "pub const A: u8 = 1;\n".repeat(590));
        assert!(check(&[src("a.rs", &split)]).is_empty());
        let long_test = format!("#[test]\nfn t() {{\n{}}}\n", "    let x = 1;\n".repeat(100));
        assert!(check(&[src("a.rs", &long_test)]).is_empty());
    }

    #[test]
    fn a_file_that_does_not_parse_is_reported() {
        let v = check(&[src("a.rs", "fn (")]);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("does not parse"), "{}", v[0]);
    }
}
