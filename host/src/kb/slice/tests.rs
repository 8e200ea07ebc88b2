//! The slicer on small hand-written programs whose correct slice is known.

use super::*;

/// Rows of `src` (0-based) holding `needle`.
fn row_of(src: &str, needle: &str) -> usize {
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in source"))
}

fn check(language: &str, src: &str, points: &[&str], expected: &str) {
    let rows: Vec<usize> = points.iter().map(|p| row_of(src, p)).collect();
    let snippet = slice(language, src, &rows);
    assert_eq!(snippet.code, expected, "\n--- got:\n{}\n", snippet.code);
    assert_eq!(snippet.method, Method::Slice);
    assert_eq!(snippet.errors, Some(0), "{}", snippet.code);
    assert!(snippet.function);
    assert_eq!(snippet.lines_before, src.lines().count());
    assert_eq!(snippet.lines_after, expected.lines().count());
}

#[test]
fn python_backward_and_forward_data_dependences() {
    // The fix is the parameterised execute: backwards it needs the cursor
    // and the query; forwards the cursor's results and where they go. The
    // unrelated counter and the log call are cut.
    let src = r#"def get_user(conn, name):
    limit = 10
    cur = conn.cursor()
    log("lookup")
    query = "SELECT * FROM users WHERE name = %s"
    cur.execute(query, (name,))
    rows = cur.fetchall()
    total = 0
    for r in rows:
        total += 1
    print(total)
    return rows"#;
    check(
        "python",
        src,
        &["cur.execute"],
        r#"def get_user(conn, name):
    cur = conn.cursor()
    query = "SELECT * FROM users WHERE name = %s"
    cur.execute(query, (name,))
    rows = cur.fetchall()
    for r in rows:
        ...
    return rows"#,
    );
}

#[test]
fn python_two_hops_back_and_a_guard_with_its_body() {
    // An added guard: its condition's data flows back two definitions; its
    // body comes with it; the code after it does not depend on it.
    let src = r#"def read_file(base, name):
    path = os.path.join(base, name)
    real = os.path.realpath(path)
    if not real.startswith(base):
        raise ValueError("bad path")
    with open(real) as f:
        data = f.read()
    size = len(data)
    return data"#;
    check(
        "python",
        src,
        &["if not real", "raise ValueError"],
        r#"def read_file(base, name):
    path = os.path.join(base, name)
    real = os.path.realpath(path)
    if not real.startswith(base):
        raise ValueError("bad path")"#,
    );
}

#[test]
fn python_other_arm_becomes_a_placeholder() {
    let src = r#"def handle(req):
    mode = req.args.get("mode")
    if mode == "a":
        x = 1
        y = 2
    else:
        cmd = ["ls", mode]
        subprocess.run(cmd, shell=False)
    return "ok""#;
    check(
        "python",
        src,
        &["subprocess.run"],
        r#"def handle(req):
    mode = req.args.get("mode")
    if mode == "a":
        ...
    else:
        cmd = ["ls", mode]
        subprocess.run(cmd, shell=False)"#,
    );
}

#[test]
fn python_method_is_dedented_and_decorators_kept() {
    let src = r#"    @app.route("/f")
    def view(self, name):
        other = 1
        safe = escape(name)
        return render(safe)"#;
    check(
        "python",
        src,
        &["safe = escape"],
        r#"@app.route("/f")
def view(self, name):
    safe = escape(name)
    return render(safe)"#,
    );
}

#[test]
fn c_guard_brings_its_declaration_and_definition() {
    // The added bounds check: `n`'s definition (and declaration) come along;
    // the copy after the check is not a dependence of it.
    let src = r#"int copy_name(char *dst, const char *src, size_t cap)
{
    size_t n;
    int unused = 0;
    n = strlen(src);
    if (n >= cap) {
        log_error("too long");
        return -1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
    unused++;
    return 0;
}"#;
    check(
        "c",
        src,
        &["if (n >= cap)", "log_error", "return -1", "    }"],
        r#"int copy_name(char *dst, const char *src, size_t cap)
{
    size_t n;
    n = strlen(src);
    if (n >= cap) {
        log_error("too long");
        return -1;
    }
}"#,
    );
}

#[test]
fn c_forward_slice_follows_writes_through_calls() {
    // memcpy writes dst: the terminating store and the return read it.
    let src = r#"static int fill(char *dst, const char *src, size_t n)
{
    int rc = 0;
    if (n > 64)
        n = 64;
    memcpy(dst, src, n);
    dst[n] = 0;
    rc = check(dst);
    puts("done");
    return rc;
}"#;
    check(
        "c",
        src,
        &["memcpy"],
        r#"static int fill(char *dst, const char *src, size_t n)
{
    int rc = 0;
    if (n > 64)
        n = 64;
    memcpy(dst, src, n);
    dst[n] = 0;
    rc = check(dst);
    return rc;
}"#,
    );
}

#[test]
fn c_loop_carried_and_killed_definitions() {
    let src = r#"int sum(int *a, int n) {
    int s = 0;
    int i = 0;
    i = 1;
    while (i < n) {
        s += a[i];
        i++;
    }
    return s;
}"#;
    let spec = spec(Lang::C);
    let tree = parse(Lang::C, src);
    let root = scope(spec, &tree, 0, 9);
    let pdg = Pdg::build(spec, src, root);
    let unit_at = |row: usize| {
        (0..pdg.units.len())
            .find(|&u| pdg.units[u].role == Role::Statement && pdg.units[u].start_row == row)
            .unwrap()
    };
    let preds = |row: usize| -> Vec<usize> {
        pdg.data_preds[unit_at(row)]
            .iter()
            .map(|&u| pdg.units[u].start_row)
            .filter(|&r| r > 0)
            .collect()
    };
    // `while (i < n)`: `i = 1` (which kills `int i = 0`) and `i++` around the loop.
    assert_eq!(preds(4), [3, 6]);
    // `s += a[i]` reads s from before the loop and from itself; i likewise.
    assert_eq!(preds(5), [1, 3, 6]);
    assert_eq!(preds(8), [1, 5]);
    assert_eq!(pdg.control_parent[unit_at(5)], Some(unit_at(4)));
}

#[test]
fn python_branches_do_not_reach_each_other() {
    let src = "def f(c):\n    if c:\n        x = 1\n    else:\n        y = x\n    z = x\n";
    let spec = spec(Lang::Python);
    let tree = parse(Lang::Python, src);
    let root = scope(spec, &tree, 0, 5);
    let pdg = Pdg::build(spec, src, root);
    let unit_at = |row: usize| {
        (0..pdg.units.len())
            .find(|&u| pdg.units[u].role == Role::Statement && pdg.units[u].start_row == row)
            .unwrap()
    };
    assert!(pdg.data_preds[unit_at(4)].is_empty(), "other arm");
    assert!(
        pdg.data_preds[unit_at(5)].contains(&unit_at(2)),
        "after the if"
    );
}

#[test]
fn java_method_with_receiver_writes() {
    let src = r#"public void save(String name) {
    String sql = "INSERT INTO t VALUES (?)";
    int retries = 3;
    PreparedStatement ps = conn.prepareStatement(sql);
    ps.setString(1, name);
    ps.executeUpdate();
    log.info("saved");
}"#;
    check(
        "java",
        src,
        &["ps.setString"],
        r#"public void save(String name) {
    String sql = "INSERT INTO t VALUES (?)";
    PreparedStatement ps = conn.prepareStatement(sql);
    ps.setString(1, name);
    ps.executeUpdate();
}"#,
    );
}

#[test]
fn go_deferred_close() {
    let src = "func run(path string) error {\n\tf, err := os.Open(path)\n\tif err != nil {\n\t\treturn err\n\t}\n\tdefer f.Close()\n\tbuf := make([]byte, 10)\n\tn, err := f.Read(buf)\n\tfmt.Println(n)\n\treturn err\n}";
    check(
        "go",
        src,
        &["defer f.Close()"],
        "func run(path string) error {\n\tf, err := os.Open(path)\n\tdefer f.Close()\n}",
    );
}

#[test]
fn javascript_callback_context_is_completed() {
    let src = r#"app.get('/user', function (req, res) {
  const id = req.query.id;
  const name = escape(req.query.name);
  db.query('SELECT * FROM u WHERE id = ?', [id], function (err, rows) {
    res.send(name);
  });
});"#;
    check(
        "javascript",
        src,
        &["const name"],
        r#"app.get('/user', function (req, res) {
  const name = escape(req.query.name);
  db.query('SELECT * FROM u WHERE id = ?', [id], function (err, rows) {
    res.send(name);
  });
});"#,
    );
}

#[test]
fn javascript_method_shorthand_parses_inside_a_class_wrapper() {
    let src = "  async render (id) {\n    const a = 1\n    const text = await this.message(id)\n    return encodeURIComponent(text)\n  }";
    check(
        "javascript",
        src,
        &["return encodeURIComponent"],
        "async render (id) {\n  const text = await this.message(id)\n  return encodeURIComponent(text)\n}",
    );
}

#[test]
fn ruby_falls_back_to_a_window() {
    let src =
        "def load(path)\n  a = 1\n  b = 2\n  c = 3\n  d = 4\n  YAML.safe_load(IO.read(path))\nend";
    let s = slice("ruby", src, &[5]);
    assert_eq!(s.method, Method::Window);
    assert_eq!(
        s.code,
        "def load(path)\n  c = 3\n  d = 4\n  YAML.safe_load(IO.read(path))\nend"
    );
}

#[test]
fn c_function_without_its_return_type_line() {
    // SVEN records often start at the name: the return type was on the
    // line before. Parsed with a stand-in type, printed without it.
    let src = "next_state(int *state, int *type)\n{\n  int r = 0;\n  if (*state != 1)\n    *state = 2;\n  *type = 3;\n  return r;\n}";
    check(
        "c",
        src,
        &["if (*state != 1)", "*state = 2;"],
        "next_state(int *state, int *type)\n{\n  if (*state != 1)\n    *state = 2;\n}",
    );
}

#[test]
fn dedent_keeps_rows() {
    assert_eq!(dedent("    a\n\n      b\n"), "a\n\n  b");
}
