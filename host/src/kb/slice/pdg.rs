//! The program dependence graph of one function, from its tree-sitter tree.
//!
//! Nodes ("units") are the function itself, its statements, and the blocks
//! that group them. Each statement knows which source rows its own tokens
//! are on (a compound statement's header and closing brace, not its body),
//! which access paths it writes and reads, and its control parent (the
//! nearest enclosing statement). Data edges join a write to the reads it
//! may reach, computed over the structured syntax: a definition reaches a
//! later read unless a definition of the same path on every way between
//! them overwrites it, does not cross into another arm of the same `if`, and
//! reaches back to the start of an enclosing loop.

use std::collections::{BTreeSet, HashMap, HashSet};

use tree_sitter::Node;

use super::lang::Spec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The function (or the whole file when no function encloses the change).
    Root,
    /// A node of the dependence graph.
    Statement,
    /// A block or clause: rendered with its statements, not a graph node.
    Container,
}

/// A written access path: `x`, `self.db`, `p.len` (C's `p->len`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Def {
    pub path: String,
    /// Overwrites the whole value (`x = ...`), as opposed to a part of it
    /// (`x[i] = ...`, `x.append(...)`, `memcpy(x, ...)`).
    pub strong: bool,
    /// Written only as the receiver of a method call; dropped unless the
    /// name is local, so module names (`os.path.join`) are not "written".
    pub receiver: bool,
}

#[derive(Debug, Clone)]
pub struct Unit {
    pub kind: &'static str,
    pub role: Role,
    pub parent: Option<usize>,
    /// Index of the last unit inside this one (units are in preorder).
    pub end: usize,
    /// The field this unit's node has in its syntactic parent.
    pub field: Option<&'static str>,
    pub start_row: usize,
    pub end_row: usize,
    /// Rows holding this unit's own tokens (not those of inner units).
    pub own_rows: BTreeSet<usize>,
    pub defs: Vec<Def>,
    pub uses: Vec<String>,
    pub children: Vec<usize>,
}

/// The graph: units in preorder, with data and control edges.
#[derive(Debug)]
pub struct Pdg {
    pub units: Vec<Unit>,
    pub data_preds: Vec<BTreeSet<usize>>,
    pub data_succs: Vec<BTreeSet<usize>>,
    /// Nearest enclosing statement (None under the root directly).
    pub control_parent: Vec<Option<usize>>,
    pub control_children: Vec<Vec<usize>>,
    /// Access paths whose first segment is written in the function or is a
    /// parameter: what declarations a snippet may need.
    pub locals: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Use,
    Def { strong: bool, read: bool },
}

/// Kinds of the tree's top node, which may parent statements.
const FILE_KINDS: &[&str] = &["module", "program", "translation_unit", "source_file"];

/// Fields whose contents are read even inside a written target (`x[i]`,
/// `int a[n]`, a default value, a type).
const VALUE_FIELDS: &[&str] = &[
    "value",
    "type",
    "right",
    "size",
    "index",
    "arguments",
    "function",
    "default",
    "subscript",
];

struct Builder<'s> {
    spec: &'static Spec,
    src: &'s [u8],
    units: Vec<Unit>,
}

impl Pdg {
    /// Builds the graph of `root` (a function node or the tree's top node).
    pub fn build(spec: &'static Spec, src: &str, root: Node<'_>) -> Pdg {
        let mut b = Builder {
            spec,
            src: src.as_bytes(),
            units: Vec::new(),
        };
        let root_unit = b.new_unit(root, Role::Root, None, None);
        // Decorators belong to the signature a reader needs to see.
        if let Some(parent) = root.parent()
            && parent.kind() == "decorated_definition"
        {
            let mut cursor = parent.walk();
            for child in parent.named_children(&mut cursor) {
                if child.kind() == "decorator" {
                    b.add_rows(child, root_unit);
                }
            }
        }
        b.visit_children(root, root_unit, Mode::Use);
        b.units[root_unit].end = b.units.len() - 1;
        let mut units = b.units;

        let locals: HashSet<String> = units
            .iter()
            .flat_map(|u| u.defs.iter())
            .filter(|d| !d.receiver)
            .map(|d| first_segment(&d.path).to_string())
            .collect();
        for unit in &mut units {
            unit.defs
                .retain(|d| !d.receiver || locals.contains(first_segment(&d.path)));
            unit.uses.sort();
            unit.uses.dedup();
        }

        let n = units.len();
        let mut control_parent = vec![None; n];
        let mut control_children = vec![Vec::new(); n];
        for i in 0..n {
            let mut p = units[i].parent;
            while let Some(q) = p {
                match units[q].role {
                    Role::Statement => {
                        control_parent[i] = Some(q);
                        control_children[q].push(i);
                        break;
                    }
                    Role::Root => break,
                    Role::Container => p = units[q].parent,
                }
            }
        }

        let mut pdg = Pdg {
            units,
            data_preds: vec![BTreeSet::new(); n],
            data_succs: vec![BTreeSet::new(); n],
            control_parent,
            control_children,
            locals,
        };
        pdg.add_data_edges(spec);
        pdg
    }

    /// Whether `a` is `b` or encloses it.
    pub fn contains(&self, a: usize, b: usize) -> bool {
        a <= b && b <= self.units[a].end
    }

    pub fn ancestors(&self, unit: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.units[unit].parent, |&p| self.units[p].parent)
    }

    fn add_data_edges(&mut self, spec: &Spec) {
        let mut defs_by_root: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (u, unit) in self.units.iter().enumerate() {
            for (d, def) in unit.defs.iter().enumerate() {
                defs_by_root
                    .entry(first_segment(&def.path).to_string())
                    .or_default()
                    .push((u, d));
            }
        }
        let mut edges = Vec::new();
        for s in 0..self.units.len() {
            if self.units[s].role != Role::Statement {
                continue;
            }
            let outer_loop = std::iter::once(s)
                .chain(self.ancestors(s))
                .filter(|&a| spec.loops.contains(&self.units[a].kind))
                .last();
            for used in &self.units[s].uses {
                let Some(candidates) = defs_by_root.get(first_segment(used)) else {
                    continue;
                };
                for &(d, k) in candidates.iter().rev().filter(|(d, _)| *d < s) {
                    let def = &self.units[d].defs[k];
                    if !paths_overlap(&def.path, used) || !self.may_reach(spec, d, s) {
                        continue;
                    }
                    edges.push((d, s));
                    let covers = def.path == *used || is_prefix_path(&def.path, used);
                    if def.strong && covers && self.dominates(d, s) {
                        break;
                    }
                }
                if let Some(l) = outer_loop {
                    for &(d, k) in candidates {
                        if d > s && d <= self.units[l].end {
                            let def = &self.units[d].defs[k];
                            if paths_overlap(&def.path, used) {
                                edges.push((d, s));
                            }
                        }
                    }
                }
            }
        }
        for (d, s) in edges {
            if d != s {
                self.data_preds[s].insert(d);
                self.data_succs[d].insert(s);
            }
        }
    }

    /// `d` runs before `s` on every path to `s`: it encloses `s`, or sits in
    /// a block that encloses `s`.
    fn dominates(&self, d: usize, s: usize) -> bool {
        self.contains(d, s) || self.units[d].parent.is_some_and(|p| self.contains(p, s))
    }

    /// `d` and `s` are not in different arms of one conditional.
    fn may_reach(&self, spec: &Spec, d: usize, s: usize) -> bool {
        if self.contains(d, s) || self.contains(s, d) {
            return true;
        }
        let d_chain: Vec<usize> = std::iter::once(d).chain(self.ancestors(d)).collect();
        let mut child_s = s;
        for a in self.ancestors(s) {
            if let Some(pos) = d_chain.iter().position(|&x| x == a) {
                if pos == 0 || !spec.branches.contains(&self.units[a].kind) {
                    return true;
                }
                return d_chain[pos - 1] == child_s;
            }
            child_s = a;
        }
        true
    }
}

impl Builder<'_> {
    fn new_unit(
        &mut self,
        node: Node<'_>,
        role: Role,
        parent: Option<usize>,
        field: Option<&'static str>,
    ) -> usize {
        let index = self.units.len();
        self.units.push(Unit {
            kind: node.kind(),
            role,
            parent,
            end: index,
            field,
            start_row: node.start_position().row,
            end_row: last_row(node),
            own_rows: BTreeSet::new(),
            defs: Vec::new(),
            uses: Vec::new(),
            children: Vec::new(),
        });
        if let Some(p) = parent {
            self.units[p].children.push(index);
        }
        index
    }

    fn text(&self, node: Node<'_>) -> &str {
        node.utf8_text(self.src).unwrap_or("")
    }

    fn is_unit(&self, node: Node<'_>, parent: Node<'_>, field: Option<&str>) -> bool {
        let spec = self.spec;
        let kind = node.kind();
        if !(spec.is_statement(kind) || spec.is_container(kind)) {
            return false;
        }
        if field.is_some_and(|f| spec.header_fields.contains(&f)) {
            return false;
        }
        // A block is a unit wherever it is (an `except` clause's body too); a
        // statement only where statements go, not inside an expression.
        if spec.is_container(kind) {
            return true;
        }
        let pk = parent.kind();
        spec.is_statement(pk)
            || spec.is_container(pk)
            || spec.is_function(pk)
            || FILE_KINDS.contains(&pk)
            || pk == "decorated_definition"
    }

    fn visit_children(&mut self, node: Node<'_>, unit: usize, mode: Mode) {
        for i in 0..node.child_count() {
            let Some(child) = node.child(i) else { continue };
            let field = node.field_name_for_child(i as u32);
            let child_mode = self.mode_for(node, child, field, mode);
            self.visit(child, node, field, unit, child_mode);
        }
    }

    /// How a child is used, given its parent and the parent's mode.
    fn mode_for(&self, parent: Node<'_>, child: Node<'_>, field: Option<&str>, mode: Mode) -> Mode {
        let spec = self.spec;
        let pk = parent.kind();
        let def = Mode::Def {
            strong: true,
            read: false,
        };
        let in_field = |want: &str| {
            if want.is_empty() {
                child.is_named()
            } else {
                field == Some(want)
            }
        };
        if spec.is_function(pk) {
            return if field.is_some_and(|f| spec.parameter_fields.contains(&f)) {
                def
            } else {
                Mode::Use
            };
        }
        if let Some(&(_, f)) = spec.binders.iter().find(|(k, _)| *k == pk) {
            return if in_field(f) { def } else { Mode::Use };
        }
        if let Some(&(_, f)) = spec.assignments.iter().find(|(k, _)| *k == pk) {
            if !in_field(f) {
                return Mode::Use;
            }
            let op = parent
                .child_by_field_name("operator")
                .map(|o| self.text(o))
                .unwrap_or("=");
            return if op == "=" || op == ":=" {
                def
            } else {
                Mode::Def {
                    strong: true,
                    read: true,
                }
            };
        }
        if let Some(&(_, f)) = spec.updates.iter().find(|(k, _)| *k == pk) {
            return if in_field(f) {
                Mode::Def {
                    strong: true,
                    read: true,
                }
            } else {
                Mode::Use
            };
        }
        if mode == Mode::Use {
            return Mode::Use;
        }
        // Inside a written target.
        let weak = Mode::Def {
            strong: false,
            read: true,
        };
        if spec.patterns.contains(&pk) {
            return if child.is_named() { mode } else { Mode::Use };
        }
        if let Some(&(_, f)) = spec.subscripts.iter().find(|(k, _)| *k == pk) {
            return if field == Some(f) { weak } else { Mode::Use };
        }
        if let Some(&(_, f)) = spec.pointer_ops.iter().find(|(k, _)| *k == pk) {
            return if field == Some(f) { weak } else { Mode::Use };
        }
        if field.is_some_and(|f| VALUE_FIELDS.contains(&f)) || !child.is_named() {
            Mode::Use
        } else {
            mode
        }
    }

    fn visit(
        &mut self,
        node: Node<'_>,
        parent: Node<'_>,
        field: Option<&'static str>,
        unit: usize,
        mode: Mode,
    ) {
        let spec = self.spec;
        let kind = node.kind();
        if spec.comments.contains(&kind) {
            return;
        }
        if self.is_unit(node, parent, field) {
            let role = if spec.is_container(kind) {
                Role::Container
            } else {
                Role::Statement
            };
            let u = self.new_unit(node, role, Some(unit), field);
            self.visit_children(node, u, Mode::Use);
            self.units[u].end = self.units.len() - 1;
            return;
        }
        if spec.identifiers.contains(&kind) {
            self.add_rows(node, unit);
            let excluded = field.is_some_and(|f| spec.not_variables.contains(&(parent.kind(), f)));
            if !excluded {
                let name = self.text(node).to_string();
                self.record(unit, name, mode, false);
            }
            return;
        }
        if node.child_count() == 0 {
            self.add_rows(node, unit);
            return;
        }
        if spec.members.iter().any(|(k, _, _)| *k == kind)
            && let Some(path) = self.path_of(node)
        {
            self.add_rows(node, unit);
            self.record(unit, path, mode, false);
            return;
        }
        if let Some(&(_, function, arguments, receiver)) =
            spec.calls.iter().find(|(k, ..)| *k == kind)
        {
            self.record_call_writes(node, unit, function, arguments, receiver);
        }
        self.visit_children(node, unit, mode);
    }

    /// A call may write its receiver (`items.append(x)`), the first argument
    /// of a known writer (`strcpy(dst, ...)`, `free(p)`), and `&x` arguments.
    fn record_call_writes(
        &mut self,
        call: Node<'_>,
        unit: usize,
        function: &str,
        arguments: &str,
        receiver: &str,
    ) {
        let spec = self.spec;
        let callee = call.child_by_field_name(function);
        let receiver_node = if receiver.is_empty() {
            callee
                .filter(|f| spec.members.iter().any(|(k, _, _)| *k == f.kind()))
                .and_then(|f| {
                    let object_field = spec
                        .members
                        .iter()
                        .find(|(k, _, _)| *k == f.kind())
                        .map(|(_, o, _)| *o)?;
                    f.child_by_field_name(object_field)
                })
        } else {
            call.child_by_field_name(receiver)
        };
        // A method call whose result is dropped is made for its effect:
        // `cursor.execute(q)`, `items.append(x)`. One whose result is used
        // (`if name.startswith(base)`) is taken to read its receiver only.
        let for_effect = call.parent().is_some_and(|p| {
            p.kind() == "expression_statement"
                || p.kind().starts_with("await")
                    && p.parent()
                        .is_some_and(|q| q.kind() == "expression_statement")
        });
        if for_effect && let Some(path) = receiver_node.and_then(|r| self.path_of(r)) {
            self.record(
                unit,
                path,
                Mode::Def {
                    strong: false,
                    read: true,
                },
                true,
            );
        }
        let Some(args) = call.child_by_field_name(arguments) else {
            return;
        };
        let writer = callee
            .filter(|c| spec.identifiers.contains(&c.kind()))
            .is_some_and(|c| spec.writer_calls.contains(&self.text(c)));
        let mut cursor = args.walk();
        for (i, arg) in args.named_children(&mut cursor).enumerate() {
            let target = if i == 0 && writer {
                Some(arg)
            } else if spec.pointer_ops.iter().any(|(k, _)| *k == arg.kind())
                && arg
                    .child_by_field_name("operator")
                    .is_some_and(|o| self.text(o) == "&")
            {
                spec.pointer_ops
                    .iter()
                    .find(|(k, _)| *k == arg.kind())
                    .and_then(|(_, f)| arg.child_by_field_name(f))
            } else {
                None
            };
            if let Some(path) = target.and_then(|t| self.path_of(t)) {
                self.record(
                    unit,
                    path,
                    Mode::Def {
                        strong: false,
                        read: true,
                    },
                    false,
                );
            }
        }
    }

    /// "a", "a.b", "self.db.conn": identifiers joined by member accesses, up
    /// to four segments; None for anything else (calls, subscripts).
    fn path_of(&self, node: Node<'_>) -> Option<String> {
        let spec = self.spec;
        if spec.identifiers.contains(&node.kind()) {
            return Some(self.text(node).to_string());
        }
        let &(_, object, member) = spec.members.iter().find(|(k, _, _)| *k == node.kind())?;
        let field = node.child_by_field_name(member)?;
        if field.child_count() != 0 {
            return None;
        }
        let base = self.path_of(node.child_by_field_name(object)?)?;
        if base.matches('.').count() >= 3 {
            return None;
        }
        Some(format!("{base}.{}", self.text(field)))
    }

    fn record(&mut self, unit: usize, path: String, mode: Mode, receiver: bool) {
        let u = &mut self.units[unit];
        match mode {
            Mode::Use => u.uses.push(path),
            Mode::Def { strong, read } => {
                if read {
                    u.uses.push(path.clone());
                }
                u.defs.push(Def {
                    path,
                    strong,
                    receiver,
                });
            }
        }
    }

    /// Rows of every token under `node` (comments excluded), as own rows of `unit`.
    fn add_rows(&mut self, node: Node<'_>, unit: usize) {
        if self.spec.comments.contains(&node.kind()) {
            return;
        }
        if node.child_count() == 0 {
            let rows = node.start_position().row..=last_row(node);
            self.units[unit].own_rows.extend(rows);
            return;
        }
        let mut cursor = node.walk();
        let children: Vec<Node<'_>> = node.children(&mut cursor).collect();
        for child in children {
            self.add_rows(child, unit);
        }
    }
}

/// The last row a node really occupies (a token ending at column 0 ends on
/// the row before).
pub fn last_row(node: Node<'_>) -> usize {
    let (start, end) = (node.start_position(), node.end_position());
    if end.column == 0 && end.row > start.row {
        end.row - 1
    } else {
        end.row
    }
}

pub fn first_segment(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

fn is_prefix_path(prefix: &str, path: &str) -> bool {
    path.len() > prefix.len() && path.starts_with(prefix) && path.as_bytes()[prefix.len()] == b'.'
}

/// A write of one path can change a read of the other: equal, or one is a
/// member of the other.
fn paths_overlap(a: &str, b: &str) -> bool {
    a == b || is_prefix_path(a, b) || is_prefix_path(b, a)
}
