//! What the slicer needs to know about each grammar: which nodes are
//! statements, which are blocks, where variables are written and read.
//! Everything else in the slicer is language-independent.

use tree_sitter::Language;

use crate::capabilities::code::Lang;

/// Node kinds and fields of one tree-sitter grammar, as the slicer uses them.
pub struct Spec {
    /// Nodes that are a function (the slice's scope and its signature).
    pub functions: &'static [&'static str],
    /// Statements: the nodes of the dependence graph.
    pub statements: &'static [&'static str],
    /// Blocks and clauses that only group statements: not graph nodes, but
    /// their delimiters (`{`, `}`, `else`, `#endif`) are kept with them.
    pub containers: &'static [&'static str],
    /// Loops: a definition later in the body reaches uses earlier in it.
    pub loops: &'static [&'static str],
    /// Conditionals: definitions in one arm do not reach another arm.
    pub branches: &'static [&'static str],
    /// Declarations a snippet needs for the names it uses (C-like languages).
    pub declarations: &'static [&'static str],
    /// Variable names.
    pub identifiers: &'static [&'static str],
    /// (parent kind, field) where an identifier names a member, keyword
    /// argument or method rather than a variable.
    pub not_variables: &'static [(&'static str, &'static str)],
    /// (kind, object field, member field): `a.b` is the access path "a.b".
    pub members: &'static [(&'static str, &'static str, &'static str)],
    /// (kind, object field): `a[i] = v` writes part of `a`.
    pub subscripts: &'static [(&'static str, &'static str)],
    /// (kind, target field): the target is written (`=`) or, when the
    /// operator is not plain `=`, read and written.
    pub assignments: &'static [(&'static str, &'static str)],
    /// (kind, target field or "" for the first named child): read and written
    /// (`x += 1`, `i++`).
    pub updates: &'static [(&'static str, &'static str)],
    /// (kind, field): nodes whose field declares or binds names (`int *p`,
    /// `for x in`, `except E as e`, `catch (E e)`); other fields are read.
    pub binders: &'static [(&'static str, &'static str)],
    /// Kinds whose named children are all targets when the node is (tuples,
    /// destructuring patterns, expression lists on the left of `=`).
    pub patterns: &'static [&'static str],
    /// (kind, function field, arguments field, receiver field) of calls; the
    /// receiver field is "" when the receiver is the object of a member
    /// expression in the function field (`cursor.execute(...)`).
    pub calls: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// (kind, argument field) of `*p` / `&x`, told apart by the operator.
    pub pointer_ops: &'static [(&'static str, &'static str)],
    /// Calls that write their first argument (C-like: memcpy, strcpy, free, ...).
    pub writer_calls: &'static [&'static str],
    /// Fields of a statement that belong to its header even when they hold a
    /// statement (a `for` initializer, Go's `if x := f(); ...`).
    pub header_fields: &'static [&'static str],
    /// Fields of a function node that hold its parameters.
    pub parameter_fields: &'static [&'static str],
    /// Fields of a statement that hold a single-statement body, which must
    /// stay when the statement stays (`if (x) return;`).
    pub body_fields: &'static [&'static str],
    /// Containers whose one statement must stay when they stay (`else
    /// return;`, `label: stmt;`).
    pub single_statement: &'static [&'static str],
    /// Blocks are delimited by indentation and may not be empty (Python).
    pub indented: bool,
    pub comments: &'static [&'static str],
    /// Text put around a snippet before parsing it, tried in order when the
    /// bare text does not parse: a method without its class, a C function
    /// whose return type was on the line before the record's first.
    pub wrappers: &'static [(&'static str, &'static str)],
}

const C_WRITERS: &[&str] = &[
    "memcpy",
    "memmove",
    "memset",
    "strcpy",
    "strncpy",
    "strcat",
    "strncat",
    "strlcpy",
    "strlcat",
    "sprintf",
    "snprintf",
    "vsprintf",
    "vsnprintf",
    "gets",
    "fgets",
    "read",
    "recv",
    "fread",
    "bzero",
    "explicit_bzero",
    "free",
    "kfree",
    "realloc",
    "memcpy_s",
    "strcpy_s",
];

const C_HEADER: &[&str] = &["initializer", "init", "condition", "update", "value"];

static PYTHON: Spec = Spec {
    functions: &["function_definition"],
    statements: &[
        "expression_statement",
        "return_statement",
        "assert_statement",
        "pass_statement",
        "break_statement",
        "continue_statement",
        "raise_statement",
        "delete_statement",
        "global_statement",
        "nonlocal_statement",
        "import_statement",
        "import_from_statement",
        "future_import_statement",
        "print_statement",
        "exec_statement",
        "type_alias_statement",
        "if_statement",
        "elif_clause",
        "for_statement",
        "while_statement",
        "try_statement",
        "with_statement",
        "function_definition",
        "class_definition",
        "decorated_definition",
        "match_statement",
        "case_clause",
    ],
    containers: &["block", "else_clause", "ERROR"],
    loops: &["for_statement", "while_statement"],
    branches: &["if_statement", "match_statement"],
    declarations: &[],
    identifiers: &["identifier"],
    not_variables: &[
        ("attribute", "attribute"),
        ("keyword_argument", "name"),
        ("function_definition", "name"),
        ("class_definition", "name"),
    ],
    members: &[("attribute", "object", "attribute")],
    subscripts: &[("subscript", "value")],
    assignments: &[("assignment", "left")],
    updates: &[("augmented_assignment", "left")],
    binders: &[
        ("for_statement", "left"),
        ("as_pattern", "alias"),
        ("except_clause", "alias"),
        ("named_expression", "name"),
    ],
    patterns: &[
        "pattern_list",
        "tuple_pattern",
        "list_pattern",
        "list_splat_pattern",
        "tuple",
        "list",
        "parenthesized_expression",
        "as_pattern_target",
        "expression_list",
    ],
    calls: &[("call", "function", "arguments", "")],
    pointer_ops: &[],
    writer_calls: &[],
    header_fields: &[],
    parameter_fields: &["parameters"],
    body_fields: &[],
    single_statement: &[],
    indented: true,
    comments: &["comment"],
    wrappers: &[],
};

static C: Spec = Spec {
    functions: &["function_definition"],
    statements: &[
        "expression_statement",
        "declaration",
        "return_statement",
        "if_statement",
        "for_statement",
        "while_statement",
        "do_statement",
        "switch_statement",
        "case_statement",
        "break_statement",
        "continue_statement",
        "goto_statement",
        "attributed_statement",
        "seh_try_statement",
        "seh_leave_statement",
        "type_definition",
        "preproc_call",
        "preproc_def",
        "preproc_function_def",
        "preproc_include",
    ],
    containers: &[
        "compound_statement",
        "else_clause",
        "labeled_statement",
        "preproc_if",
        "preproc_ifdef",
        "preproc_else",
        "preproc_elif",
        "preproc_elifdef",
        "ERROR",
    ],
    loops: &["for_statement", "while_statement", "do_statement"],
    branches: &["if_statement"],
    declarations: &["declaration"],
    identifiers: &["identifier"],
    not_variables: &[],
    members: &[("field_expression", "argument", "field")],
    subscripts: &[("subscript_expression", "argument")],
    assignments: &[("assignment_expression", "left")],
    updates: &[("update_expression", "argument")],
    binders: &[
        ("declaration", "declarator"),
        ("init_declarator", "declarator"),
        ("pointer_declarator", "declarator"),
        ("array_declarator", "declarator"),
        ("parenthesized_declarator", ""),
        ("attributed_declarator", ""),
        ("parameter_declaration", "declarator"),
    ],
    patterns: &["parenthesized_expression", "comma_expression"],
    calls: &[("call_expression", "function", "arguments", "")],
    pointer_ops: &[("pointer_expression", "argument")],
    writer_calls: C_WRITERS,
    header_fields: C_HEADER,
    parameter_fields: &["declarator"],
    body_fields: &["consequence", "body", "alternative"],
    single_statement: &["else_clause", "labeled_statement"],
    indented: false,
    comments: &["comment"],
    wrappers: &[("int ", "")],
};

static CPP: Spec = Spec {
    functions: &["function_definition", "lambda_expression"],
    statements: &[
        "expression_statement",
        "declaration",
        "return_statement",
        "if_statement",
        "for_statement",
        "for_range_loop",
        "while_statement",
        "do_statement",
        "switch_statement",
        "case_statement",
        "break_statement",
        "continue_statement",
        "goto_statement",
        "attributed_statement",
        "try_statement",
        "throw_statement",
        "co_return_statement",
        "co_yield_statement",
        "seh_try_statement",
        "seh_leave_statement",
        "type_definition",
        "alias_declaration",
        "using_declaration",
        "static_assert_declaration",
        "preproc_call",
        "preproc_def",
        "preproc_function_def",
        "preproc_include",
    ],
    containers: &[
        "compound_statement",
        "else_clause",
        "labeled_statement",
        "preproc_if",
        "preproc_ifdef",
        "preproc_else",
        "preproc_elif",
        "preproc_elifdef",
        "ERROR",
    ],
    loops: &[
        "for_statement",
        "for_range_loop",
        "while_statement",
        "do_statement",
    ],
    branches: &["if_statement"],
    declarations: &["declaration"],
    identifiers: &["identifier", "this"],
    not_variables: &[],
    members: &[("field_expression", "argument", "field")],
    subscripts: &[("subscript_expression", "argument")],
    assignments: &[("assignment_expression", "left")],
    updates: &[("update_expression", "argument")],
    binders: &[
        ("declaration", "declarator"),
        ("init_declarator", "declarator"),
        ("pointer_declarator", "declarator"),
        ("array_declarator", "declarator"),
        ("reference_declarator", ""),
        ("parenthesized_declarator", ""),
        ("attributed_declarator", ""),
        ("parameter_declaration", "declarator"),
        ("optional_parameter_declaration", "declarator"),
        ("for_range_loop", "declarator"),
    ],
    patterns: &["parenthesized_expression", "comma_expression"],
    calls: &[("call_expression", "function", "arguments", "")],
    pointer_ops: &[("pointer_expression", "argument")],
    writer_calls: C_WRITERS,
    header_fields: &[
        "initializer",
        "init",
        "condition",
        "update",
        "value",
        "right",
    ],
    parameter_fields: &["declarator"],
    body_fields: &["consequence", "body", "alternative"],
    single_statement: &["else_clause", "labeled_statement"],
    indented: false,
    comments: &["comment"],
    wrappers: &[("int ", "")],
};

static JAVASCRIPT: Spec = Spec {
    functions: &[
        "function_declaration",
        "function_expression",
        "generator_function_declaration",
        "generator_function",
        "arrow_function",
        "method_definition",
    ],
    statements: &[
        "expression_statement",
        "lexical_declaration",
        "variable_declaration",
        "return_statement",
        "if_statement",
        "for_statement",
        "for_in_statement",
        "while_statement",
        "do_statement",
        "switch_statement",
        "switch_case",
        "switch_default",
        "try_statement",
        "throw_statement",
        "break_statement",
        "continue_statement",
        "function_declaration",
        "generator_function_declaration",
        "class_declaration",
        "import_statement",
        "export_statement",
        "debugger_statement",
        "with_statement",
    ],
    containers: &[
        "statement_block",
        "else_clause",
        "switch_body",
        "labeled_statement",
        "class_body",
        "ERROR",
    ],
    loops: &[
        "for_statement",
        "for_in_statement",
        "while_statement",
        "do_statement",
    ],
    branches: &["if_statement"],
    declarations: &["lexical_declaration", "variable_declaration"],
    identifiers: &[
        "identifier",
        "shorthand_property_identifier",
        "shorthand_property_identifier_pattern",
        "this",
    ],
    not_variables: &[],
    members: &[("member_expression", "object", "property")],
    subscripts: &[("subscript_expression", "object")],
    assignments: &[("assignment_expression", "left")],
    updates: &[
        ("augmented_assignment_expression", "left"),
        ("update_expression", "argument"),
    ],
    binders: &[
        ("variable_declarator", "name"),
        ("for_in_statement", "left"),
        ("catch_clause", "parameter"),
        ("assignment_pattern", "left"),
        ("pair_pattern", "value"),
    ],
    patterns: &[
        "object_pattern",
        "array_pattern",
        "rest_pattern",
        "parenthesized_expression",
        "formal_parameters",
    ],
    calls: &[
        ("call_expression", "function", "arguments", ""),
        ("new_expression", "constructor", "arguments", ""),
    ],
    pointer_ops: &[],
    writer_calls: &[],
    header_fields: &[
        "initializer",
        "condition",
        "increment",
        "left",
        "right",
        "value",
    ],
    parameter_fields: &["parameters", "parameter"],
    body_fields: &["consequence", "body", "alternative"],
    single_statement: &["else_clause", "labeled_statement"],
    indented: false,
    comments: &["comment", "html_comment"],
    wrappers: &[("class __Slice__ {\n", "\n}\n")],
};

static GO: Spec = Spec {
    functions: &["function_declaration", "method_declaration", "func_literal"],
    statements: &[
        "expression_statement",
        "assignment_statement",
        "short_var_declaration",
        "inc_statement",
        "dec_statement",
        "send_statement",
        "var_declaration",
        "const_declaration",
        "type_declaration",
        "return_statement",
        "if_statement",
        "for_statement",
        "expression_switch_statement",
        "type_switch_statement",
        "select_statement",
        "expression_case",
        "type_case",
        "default_case",
        "communication_case",
        "defer_statement",
        "go_statement",
        "break_statement",
        "continue_statement",
        "goto_statement",
        "fallthrough_statement",
    ],
    containers: &["block", "statement_list", "labeled_statement", "ERROR"],
    loops: &["for_statement"],
    branches: &["if_statement"],
    declarations: &[
        "var_declaration",
        "short_var_declaration",
        "const_declaration",
    ],
    identifiers: &["identifier"],
    not_variables: &[],
    members: &[("selector_expression", "operand", "field")],
    subscripts: &[("index_expression", "operand")],
    assignments: &[
        ("assignment_statement", "left"),
        ("short_var_declaration", "left"),
    ],
    updates: &[("inc_statement", ""), ("dec_statement", "")],
    binders: &[
        ("var_spec", "name"),
        ("const_spec", "name"),
        ("range_clause", "left"),
        ("parameter_declaration", "name"),
        ("variadic_parameter_declaration", "name"),
    ],
    patterns: &["expression_list", "parenthesized_expression"],
    calls: &[("call_expression", "function", "arguments", "")],
    pointer_ops: &[("unary_expression", "operand")],
    writer_calls: &[],
    header_fields: &["initializer", "condition", "update", "value", "alias"],
    parameter_fields: &["parameters", "receiver"],
    body_fields: &[],
    single_statement: &["labeled_statement"],
    indented: false,
    comments: &["comment"],
    wrappers: &[],
};

static JAVA: Spec = Spec {
    functions: &[
        "method_declaration",
        "constructor_declaration",
        "lambda_expression",
    ],
    statements: &[
        "expression_statement",
        "local_variable_declaration",
        "return_statement",
        "if_statement",
        "for_statement",
        "enhanced_for_statement",
        "while_statement",
        "do_statement",
        "switch_expression",
        "switch_block_statement_group",
        "switch_rule",
        "try_statement",
        "try_with_resources_statement",
        "throw_statement",
        "break_statement",
        "continue_statement",
        "synchronized_statement",
        "assert_statement",
        "yield_statement",
        "explicit_constructor_invocation",
        "class_declaration",
    ],
    containers: &[
        "block",
        "constructor_body",
        "switch_block",
        "labeled_statement",
        "ERROR",
    ],
    loops: &[
        "for_statement",
        "enhanced_for_statement",
        "while_statement",
        "do_statement",
    ],
    branches: &["if_statement"],
    declarations: &["local_variable_declaration"],
    identifiers: &["identifier", "this"],
    not_variables: &[
        ("method_invocation", "name"),
        ("method_declaration", "name"),
        ("constructor_declaration", "name"),
        ("field_access", "field"),
    ],
    members: &[("field_access", "object", "field")],
    subscripts: &[("array_access", "array")],
    assignments: &[("assignment_expression", "left")],
    updates: &[("update_expression", "")],
    binders: &[
        ("local_variable_declaration", "declarator"),
        ("variable_declarator", "name"),
        ("enhanced_for_statement", "name"),
        ("catch_formal_parameter", "name"),
        ("resource", "name"),
        ("formal_parameter", "name"),
        ("spread_parameter", ""),
    ],
    patterns: &["parenthesized_expression", "formal_parameters"],
    calls: &[("method_invocation", "name", "arguments", "object")],
    pointer_ops: &[],
    writer_calls: &[],
    header_fields: &["init", "condition", "update", "value"],
    parameter_fields: &["parameters"],
    body_fields: &["consequence", "body", "alternative"],
    single_statement: &["labeled_statement"],
    indented: false,
    comments: &["line_comment", "block_comment"],
    wrappers: &[("class __Slice__ {\n", "\n}\n")],
};

/// The slicer's table for `lang`.
pub fn spec(lang: Lang) -> &'static Spec {
    match lang {
        Lang::Python => &PYTHON,
        Lang::C => &C,
        Lang::Cpp => &CPP,
        Lang::JavaScript => &JAVASCRIPT,
        Lang::Go => &GO,
        Lang::Java => &JAVA,
    }
}

/// The tree-sitter grammar of `lang` (the same crates the code capability uses).
pub fn grammar(lang: Lang) -> Language {
    match lang {
        Lang::Python => tree_sitter_python::LANGUAGE.into(),
        Lang::C => tree_sitter_c::LANGUAGE.into(),
        Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
        Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
        Lang::Go => tree_sitter_go::LANGUAGE.into(),
        Lang::Java => tree_sitter_java::LANGUAGE.into(),
    }
}

impl Spec {
    pub fn is_statement(&self, kind: &str) -> bool {
        self.statements.contains(&kind)
    }
    pub fn is_container(&self, kind: &str) -> bool {
        self.containers.contains(&kind)
    }
    pub fn is_function(&self, kind: &str) -> bool {
        self.functions.contains(&kind)
    }
}
