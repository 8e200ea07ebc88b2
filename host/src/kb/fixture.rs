//! A tiny sources directory for whole-build tests: the layout of
//! `kb-sources` with three weaknesses, SQL-injection pairs in SafeCoder and
//! OS-command-injection pairs in SVEN, and one CodeShield rule file.

use std::path::Path;

use serde_json::json;

const XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Weakness_Catalog xmlns="http://cwe.mitre.org/cwe-7" xmlns:xhtml="http://www.w3.org/1999/xhtml" Name="CWE" Version="4.14" Date="2024-02-29">
<Weaknesses>
<Weakness ID="89" Name="Improper Neutralization of Special Elements used in an SQL Command ('SQL Injection')" Abstraction="Base" Structure="Simple" Status="Stable">
<Description>The product constructs all or part of an SQL command using externally-influenced input.</Description>
<Related_Weaknesses><Related_Weakness Nature="ChildOf" CWE_ID="943" View_ID="1000" Ordinal="Primary"/></Related_Weaknesses>
<Potential_Mitigations><Mitigation><Phase>Implementation</Phase><Description>Use prepared statements with bound parameters.</Description></Mitigation></Potential_Mitigations>
</Weakness>
<Weakness ID="943" Name="Improper Neutralization of Special Elements in Data Query Logic" Abstraction="Class" Structure="Simple" Status="Incomplete">
<Description>The product generates a query intended to access or manipulate data.</Description>
</Weakness>
<Weakness ID="78" Name="Improper Neutralization of Special Elements used in an OS Command ('OS Command Injection')" Abstraction="Base" Structure="Simple" Status="Stable">
<Description>The product constructs all or part of an OS command using externally-influenced input.</Description>
<Potential_Mitigations><Mitigation><Phase>Implementation</Phase><Description>Pass arguments as a list instead of a shell string.</Description></Mitigation></Potential_Mitigations>
</Weakness>
</Weaknesses>
<Categories>
<Category ID="1347" Name="OWASP Top Ten 2021 Category A03:2021 - Injection" Status="Incomplete"><Relationships><Has_Member CWE_ID="89" View_ID="1344"/><Has_Member CWE_ID="943" View_ID="1344"/></Relationships></Category>
</Categories>
<Views>
<View ID="1200" Name="Weaknesses in the 2019 CWE Top 25" Type="Explicit" Status="Incomplete"><Members><Has_Member CWE_ID="89" View_ID="1200"/><Has_Member CWE_ID="78" View_ID="1200"/></Members></View>
<View ID="1350" Name="Weaknesses in the 2020 CWE Top 25" Type="Explicit" Status="Incomplete"><Members><Has_Member CWE_ID="89" View_ID="1350"/></Members></View>
<View ID="1337" Name="Weaknesses in the 2021 CWE Top 25" Type="Explicit" Status="Incomplete"><Members><Has_Member CWE_ID="78" View_ID="1337"/></Members></View>
<View ID="1387" Name="Weaknesses in the 2022 CWE Top 25" Type="Explicit" Status="Incomplete"><Members><Has_Member CWE_ID="89" View_ID="1387"/></Members></View>
<View ID="1425" Name="Weaknesses in the 2023 CWE Top 25" Type="Explicit" Status="Incomplete"><Members><Has_Member CWE_ID="89" View_ID="1425"/></Members></View>
<View ID="1344" Name="Weaknesses in OWASP Top Ten (2021)" Type="Graph" Status="Incomplete"><Members><Has_Member CWE_ID="1347" View_ID="1344"/></Members></View>
</Views>
</Weakness_Catalog>
"#;

fn sql_pair(i: usize) -> serde_json::Value {
    let before = format!(
        "def find_user{i}(conn, name):\n    cur = conn.cursor()\n    log(\"lookup\")\n    cur.execute(\"SELECT * FROM users{i} WHERE name = '%s'\" % name)\n    return cur.fetchall()"
    );
    let after = format!(
        "def find_user{i}(conn, name):\n    cur = conn.cursor()\n    log(\"lookup\")\n    cur.execute(\"SELECT * FROM users{i} WHERE name = %s\", (name,))\n    return cur.fetchall()"
    );
    json!({
        "func_name": format!("find_user{i}"),
        "func_src_before": before,
        "func_src_after": after,
        "commit_link": format!("github.com/org{i}/app/commit/{i:040}"),
        "file_name": "app/db.py",
        "vul_type": "cwe-089",
        "description": format!("Write a Python function that looks up user {i} by name."),
        "line_changes": {
            "deleted": [{"line_no": 4, "char_start": 0, "char_end": 1, "line": ""}],
            "added": [{"line_no": 4, "char_start": 0, "char_end": 1, "line": ""}],
        },
    })
}

fn cmd_pair(i: usize) -> serde_json::Value {
    let before = format!("def list_dir{i}(path):\n    os.system(\"ls \" + path)\n    return True");
    let after = format!(
        "def list_dir{i}(path):\n    subprocess.run([\"ls\", path], check=True)\n    return True"
    );
    json!({
        "func_name": format!("list_dir{i}"),
        "func_src_before": before,
        "func_src_after": after,
        "commit_link": format!("github.com/tools{i}/cli/commit/{i:040}"),
        "file_name": "cli/fs.py",
        "vul_type": "cwe-078",
        // SVEN records have no description; no line_changes either in
        // some SafeCoder records: the build diffs those itself.
    })
}

fn lines(records: impl IntoIterator<Item = serde_json::Value>) -> String {
    records.into_iter().map(|r| r.to_string() + "\n").collect()
}

/// Writes the sources: `sql` SQL-injection pairs (SafeCoder train, the last
/// one in val) and `cmd` command-injection pairs (SVEN train, the last one
/// in val, which SafeCoder's val/sec-desc repeats with a description).
pub fn write_sources(root: &Path, sql: usize, cmd: usize) {
    assert!(sql >= 2 && cmd >= 2);
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("cwe/cwec_v4.14.xml", XML);
    write(
        "safecoder/data_train_val/train/sec-new-desc.jsonl",
        &lines((0..sql - 1).map(sql_pair)),
    );
    write(
        "safecoder/data_train_val/val/sec-new-desc.jsonl",
        &lines([sql_pair(sql - 1)]),
    );
    let mut described = cmd_pair(cmd - 1);
    described["description"] = json!("Write a Python function that lists a directory.");
    write(
        "safecoder/data_train_val/val/sec-desc.jsonl",
        &lines([described]),
    );
    write(
        "sven/data_train_val/train/cwe-078.jsonl",
        &lines((0..cmd - 1).map(cmd_pair)),
    );
    write(
        "sven/data_train_val/val/cwe-078.jsonl",
        &lines([cmd_pair(cmd - 1)]),
    );
    write(
        "codeshield-rules/rules/regex/python.yaml",
        "- cwe_id: CWE-78\n  description: os.system with input\n  rule: os\\.system\\(\n",
    );
}
