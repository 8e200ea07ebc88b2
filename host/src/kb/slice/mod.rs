//! Program slicing of a vulnerable/fixed function down to the lines that
//! matter for its fix, as RESCUE does to turn whole functions into concise
//! secure examples.
//!
//! For one function and its points of interest (the rows a fix changed):
//! build the program dependence graph ([`pdg`]), take every statement within
//! two dependence edges of a point of interest, backwards (what it depends
//! on) and forwards (what depends on it), then complete the context so the
//! snippet still parses: the signature, the headers and closing delimiters
//! of every enclosing block, the declarations of the variables it uses, the
//! one-statement bodies the syntax requires, and a `...` for a Python block
//! left empty. The result is checked by parsing it again; a slice that
//! breaks the syntax (and languages without a grammar here: Ruby) falls back
//! to a window around the change completed by indentation ([`window`]).

mod lang;
mod pdg;
mod window;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};

use tree_sitter::{Node, Parser, Tree};

use self::lang::{Spec, grammar, spec};
use self::pdg::{Pdg, Role, first_segment};
use crate::capabilities::code::Lang;

/// Dependence edges followed from a point of interest, in each direction.
pub const HOPS: usize = 2;

/// Longest snippet wanted in a prompt. A two-hop slice of a long function
/// whose variables are used everywhere can be most of the function; such a
/// slice is recomputed with fewer hops, forwards first (see [`LADDER`]).
pub const MAX_LINES: usize = 30;

/// Declarations longer than this are not added for context.
const MAX_DECLARATION_ROWS: usize = 3;

/// (backward, forward) hops tried in turn until the snippet fits [`MAX_LINES`].
pub const LADDER: [(usize, usize); 5] = [(HOPS, HOPS), (HOPS, 1), (1, 1), (1, 0), (0, 0)];

/// How a snippet was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Dependence-graph slice with context completion.
    Slice,
    /// Rows around the change, completed by indentation.
    Window,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Slice => "pdg-slice",
            Method::Window => "window",
        }
    }
}

/// A sliced function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub code: String,
    pub method: Method,
    /// Lines of the whole function.
    pub lines_before: usize,
    /// Lines of the snippet.
    pub lines_after: usize,
    /// Syntax errors (ERROR and MISSING nodes) when the snippet is parsed
    /// again; None for a language without a grammar here.
    pub errors: Option<usize>,
    /// The same for the whole function: a snippet never has more.
    pub errors_before: Option<usize>,
    /// The slice's scope was a function, so the snippet starts with its
    /// signature (not only a fragment of a file).
    pub function: bool,
}

/// Slices `source` (one function, in `language`) around `points` (0-based
/// rows of `source`).
pub fn slice(language: &str, source: &str, points: &[usize]) -> Snippet {
    let text = dedent(source);
    let lines_before = source.lines().count();
    let Some(lang) = Lang::parse(language) else {
        let code = window::window(&text, points);
        let function = code.trim_start().starts_with("def ");
        return Snippet {
            lines_after: code.lines().count(),
            code,
            method: Method::Window,
            lines_before,
            errors: None,
            errors_before: None,
            function,
        };
    };
    let spec = spec(lang);
    let (wrapper, tree) = parse_best(lang, spec, &text);
    let errors_before = count_errors(tree.root_node());
    let offset = wrapper.0.matches('\n').count();
    let wrapped = format!("{}{}{}", wrapper.0, text, wrapper.1);
    let finish = |code: String, method, errors, function| Snippet {
        lines_after: code.lines().count(),
        code,
        method,
        lines_before,
        errors: Some(errors),
        errors_before: Some(errors_before),
        function,
    };

    let mut candidates: Vec<(String, Method, usize)> = Vec::new();
    let sliced = PointSlicer::new(spec, &wrapped, &text, &tree, points, offset);
    let function = sliced.as_ref().is_some_and(|s| s.function);
    if let Some(sliced) = &sliced {
        for (back, forward) in LADDER {
            let code = sliced.render(back, forward);
            let errors = parse_errors(lang, &wrapper, &code);
            if code.lines().count() <= MAX_LINES && errors <= errors_before {
                return finish(code, Method::Slice, errors, function);
            }
            candidates.push((code, Method::Slice, errors));
        }
    }
    let code = window::window(&text, points);
    let errors = parse_errors(lang, &wrapper, &code);
    if code.lines().count() <= MAX_LINES && errors <= errors_before {
        return finish(code, Method::Window, errors, function);
    }
    candidates.push((code, Method::Window, errors));
    // Nothing fits: the shortest snippet that parses, else the first slice.
    let best = candidates
        .iter()
        .filter(|c| c.2 <= errors_before)
        .min_by_key(|c| c.0.lines().count())
        .cloned();
    let (code, method, errors) = best.unwrap_or_else(|| candidates.swap_remove(0));
    finish(code, method, errors, function)
}

/// Removes the indentation every non-blank line shares (methods come with
/// their class's indentation), keeping rows as they are.
pub fn dedent(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    fn indent(l: &str) -> &str {
        &l[..l.len() - l.trim_start().len()]
    }
    let mut common: Option<&str> = None;
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let ind = indent(line);
        common = Some(match common {
            None => ind,
            Some(c) => {
                let n = c
                    .bytes()
                    .zip(ind.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &c[..n]
            }
        });
    }
    let cut = common.map_or(0, str::len);
    let mut out: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.len() >= cut {
                &l[cut..]
            } else {
                l.trim_start()
            }
        })
        .collect();
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n")
}

thread_local! {
    static PARSERS: RefCell<HashMap<Lang, Parser>> = RefCell::new(HashMap::new());
}

fn parse(lang: Lang, text: &str) -> Tree {
    PARSERS.with(|parsers| {
        let mut parsers = parsers.borrow_mut();
        let parser = parsers.entry(lang).or_insert_with(|| {
            let mut parser = Parser::new();
            parser
                .set_language(&grammar(lang))
                .expect("grammar is compatible with the linked tree-sitter");
            parser
        });
        parser
            .parse(text, None)
            .expect("a parser with a language and no timeout returns a tree")
    })
}

/// Parses `text` bare and inside each of the language's wrappers, and keeps
/// the parse with the fewest syntax errors (the bare one on a tie).
fn parse_best(lang: Lang, spec: &Spec, text: &str) -> ((&'static str, &'static str), Tree) {
    let mut best = (("", ""), parse(lang, text));
    let mut best_errors = count_errors(best.1.root_node());
    for &(prefix, suffix) in spec.wrappers {
        if best_errors == 0 {
            break;
        }
        let tree = parse(lang, &format!("{prefix}{text}{suffix}"));
        let errors = count_errors(tree.root_node());
        if errors < best_errors {
            best = ((prefix, suffix), tree);
            best_errors = errors;
        }
    }
    best
}

fn parse_errors(lang: Lang, wrapper: &(&str, &str), code: &str) -> usize {
    count_errors(parse(lang, &format!("{}{code}{}", wrapper.0, wrapper.1)).root_node())
}

/// ERROR and MISSING nodes in a tree.
pub fn count_errors(node: Node<'_>) -> usize {
    if !node.has_error() {
        return 0;
    }
    let own = usize::from(node.is_error() || node.is_missing());
    let mut cursor = node.walk();
    own + node.children(&mut cursor).map(count_errors).sum::<usize>()
}

/// The outermost function whose rows hold every point of interest, or the
/// top of the tree.
fn scope<'t>(spec: &Spec, tree: &'t Tree, first: usize, last: usize) -> Node<'t> {
    let top = tree.root_node();
    let mut stack = vec![top];
    while let Some(node) = stack.pop() {
        if node.start_position().row > first || pdg::last_row(node) < last {
            continue;
        }
        if spec.is_function(node.kind()) {
            return node;
        }
        let mut cursor = node.walk();
        let children: Vec<Node<'t>> = node.children(&mut cursor).collect();
        stack.extend(children.into_iter().rev());
    }
    top
}

/// One function's dependence graph and the statements its points of
/// interest fall on, ready to be sliced with any number of hops.
struct PointSlicer<'t> {
    spec: &'static Spec,
    /// Rows of the wrapped text, holding the source's own lines (the
    /// wrapper's rows are empty and its text never reaches a snippet).
    lines: Vec<&'t str>,
    pdg: Pdg,
    seeds: BTreeSet<usize>,
    comment_rows: Vec<usize>,
    /// The scope is a function, not the whole file.
    function: bool,
}

impl<'t> PointSlicer<'t> {
    /// `wrapped` is `source` inside the language's wrapper, `offset` rows
    /// into it; `tree` its parse. None without a usable point.
    fn new(
        spec: &'static Spec,
        wrapped: &str,
        source: &'t str,
        tree: &Tree,
        points: &[usize],
        offset: usize,
    ) -> Option<Self> {
        let mut lines: Vec<&'t str> = vec![""; wrapped.lines().count().max(1)];
        for (i, line) in source.lines().enumerate() {
            if let Some(slot) = lines.get_mut(i + offset) {
                *slot = line;
            }
        }
        let rows: Vec<usize> = points
            .iter()
            .map(|&p| p + offset)
            .filter(|&r| r < lines.len())
            .collect();
        let (&first, &last) = (rows.iter().min()?, rows.iter().max()?);
        let root = scope(spec, tree, first, last);
        let function = spec.is_function(root.kind());
        let pdg = Pdg::build(spec, wrapped, root);

        let mut seeds = BTreeSet::new();
        let mut comment_rows = Vec::new();
        for &row in &rows {
            match innermost(&pdg, row) {
                Some(u) if pdg.units[u].role == Role::Statement => {
                    seeds.insert(u);
                }
                Some(u) => {
                    // A changed `}` or `else` belongs to the statement it closes.
                    let stmt = std::iter::once(u)
                        .chain(pdg.ancestors(u))
                        .find(|&a| pdg.units[a].role == Role::Statement);
                    seeds.extend(stmt);
                    if is_comment_line(lines[row]) {
                        comment_rows.push(row);
                    }
                }
                None => {}
            }
        }
        Some(Self {
            spec,
            lines,
            pdg,
            seeds,
            comment_rows,
            function,
        })
    }

    fn render(&self, back: usize, forward: usize) -> String {
        let sliced = two_way_slice(&self.pdg, &self.seeds, back, forward);
        render(
            self.spec,
            &self.pdg,
            &self.lines,
            &sliced,
            &self.comment_rows,
        )
    }
}

/// The deepest unit whose rows include `row`.
fn innermost(pdg: &Pdg, row: usize) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, unit) in pdg.units.iter().enumerate() {
        if unit.start_row <= row && row <= unit.end_row {
            let depth = pdg.ancestors(i).count();
            if best.is_none_or(|(d, _)| depth > d) {
                best = Some((depth, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

fn is_comment_line(line: &str) -> bool {
    let t = line.trim_start();
    ["#", "//", "/*", "*"].iter().any(|p| t.starts_with(p))
}

/// Statements within `back` dependence edges of the seeds backwards and
/// `forward` edges forwards. Backwards both data and control edges are
/// followed; forwards data edges, and control edges only out of a seed (a
/// changed condition brings its body; a loop reached through data flow
/// brings its header, not its whole body).
fn two_way_slice(
    pdg: &Pdg,
    seeds: &BTreeSet<usize>,
    back: usize,
    forward: usize,
) -> BTreeSet<usize> {
    let mut out: BTreeSet<usize> = seeds.clone();
    let is_node = |u: usize| pdg.units[u].role == Role::Statement;

    let mut frontier: Vec<usize> = seeds.iter().copied().collect();
    for _ in 0..back {
        let mut next = Vec::new();
        for &u in &frontier {
            let preds = pdg.data_preds[u].iter().copied();
            for p in preds.chain(pdg.control_parent[u]) {
                if is_node(p) && out.insert(p) {
                    next.push(p);
                }
            }
        }
        frontier = next;
    }

    let mut frontier: Vec<usize> = seeds.iter().copied().collect();
    for hop in 0..forward {
        let mut next = Vec::new();
        for &u in &frontier {
            let control: &[usize] = if hop == 0 {
                &pdg.control_children[u]
            } else {
                &[]
            };
            for &s in pdg.data_succs[u].iter().chain(control) {
                if is_node(s) && out.insert(s) {
                    next.push(s);
                }
            }
        }
        frontier = next;
    }
    out
}

/// Context completion and rendering: which rows of `lines` the snippet
/// keeps, plus `...` lines for Python blocks left empty.
fn render(
    spec: &Spec,
    pdg: &Pdg,
    lines: &[&str],
    sliced: &BTreeSet<usize>,
    comment_rows: &[usize],
) -> String {
    let n = pdg.units.len();
    let mut kept = vec![false; n];
    let mut queue: VecDeque<usize> = VecDeque::new();
    let keep = |u: usize, kept: &mut Vec<bool>, queue: &mut VecDeque<usize>| {
        for a in std::iter::once(u).chain(pdg.ancestors(u)) {
            if kept[a] {
                break;
            }
            kept[a] = true;
            queue.push_back(a);
        }
    };
    keep(0, &mut kept, &mut queue);
    for &u in sliced {
        keep(u, &mut kept, &mut queue);
    }
    // The function body's braces.
    for &c in &pdg.units[0].children {
        if pdg.units[c].role == Role::Container {
            keep(c, &mut kept, &mut queue);
        }
    }

    // Declarations of the local names the slice reads or writes.
    if !spec.declarations.is_empty() {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for &u in sliced {
            let unit = &pdg.units[u];
            let paths = unit.uses.iter().chain(unit.defs.iter().map(|d| &d.path));
            names.extend(
                paths
                    .map(|p| first_segment(p))
                    .filter(|p| pdg.locals.contains(*p)),
            );
        }
        for name in names {
            let first_use = sliced.iter().copied().find(|&u| {
                let unit = &pdg.units[u];
                let paths = unit.uses.iter().chain(unit.defs.iter().map(|d| &d.path));
                paths.map(|p| first_segment(p)).any(|p| p == name)
            });
            // A declaration is for the reader, not the parser: a table with
            // a long initializer is left out.
            let declares = |u: usize| {
                let unit = &pdg.units[u];
                spec.declarations.contains(&unit.kind)
                    && unit.end_row - unit.start_row < MAX_DECLARATION_ROWS
                    && unit.defs.iter().any(|d| d.strong && d.path == name)
            };
            let before = first_use.unwrap_or(n);
            let declaration = (0..before)
                .rev()
                .find(|&u| declares(u))
                .or_else(|| (before..n).find(|&u| declares(u)));
            if let Some(d) = declaration {
                keep(d, &mut kept, &mut queue);
            }
        }
    }

    // Units sharing a row with a kept unit come along (the row is printed
    // whole), and so do the bodies the syntax cannot do without.
    let mut row_owners: HashMap<usize, Vec<usize>> = HashMap::new();
    for (u, unit) in pdg.units.iter().enumerate() {
        for &r in &unit.own_rows {
            row_owners.entry(r).or_default().push(u);
        }
    }
    let mut rows: BTreeSet<usize> = BTreeSet::new();
    loop {
        while let Some(u) = queue.pop_front() {
            for &r in &pdg.units[u].own_rows {
                if rows.insert(r) {
                    for &o in row_owners.get(&r).into_iter().flatten() {
                        keep(o, &mut kept, &mut queue);
                    }
                }
            }
        }
        if spec.indented {
            break;
        }
        let has_row = |u: usize, rows: &BTreeSet<usize>| {
            rows.range(pdg.units[u].start_row..=pdg.units[u].end_row)
                .next()
                .is_some()
        };
        let mut missing = Vec::new();
        for (u, unit) in pdg.units.iter().enumerate() {
            if !kept[u] || unit.role == Role::Root {
                continue;
            }
            let single = spec.single_statement.contains(&unit.kind);
            for &c in &unit.children {
                let child = &pdg.units[c];
                let required = single
                    || unit.role == Role::Statement
                        && child.field.is_some_and(|f| spec.body_fields.contains(&f));
                if required && !has_row(c, &rows) {
                    missing.push(c);
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        for c in missing {
            keep(c, &mut kept, &mut queue);
        }
    }

    let mut out: Vec<(usize, u8, String)> = rows
        .iter()
        .filter(|&&r| r < lines.len() && !lines[r].trim().is_empty())
        .map(|&r| (r, 1, lines[r].to_string()))
        .collect();
    for &r in comment_rows {
        let enclosing = innermost(pdg, r).is_some_and(|u| kept[u]);
        if enclosing && !rows.contains(&r) {
            out.push((r, 1, lines[r].to_string()));
        }
    }
    if spec.indented {
        let blocks = (0..n)
            .filter(|&u| kept[u])
            .flat_map(|u| pdg.units[u].children.iter().copied());
        for b in blocks {
            let unit = &pdg.units[b];
            let empty = rows.range(unit.start_row..=unit.end_row).next().is_none();
            if empty && unit.kind == "block" && unit.start_row < lines.len() {
                let line = lines[unit.start_row];
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push((unit.start_row, 0, format!("{indent}...")));
            }
        }
    }
    out.sort();
    let body: Vec<String> = out.into_iter().map(|(_, _, l)| l).collect();
    dedent(&body.join("\n"))
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
