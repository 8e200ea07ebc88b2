//! The content hash: a sha256 over a canonical serialisation of a whole
//! knowledge-base database, so that any change to the schema or to any row
//! (other than the stored hash itself) is detected at start-up.
//!
//! The serialisation is a stream of self-delimiting tokens (a tag byte, then
//! fixed-width or length-prefixed data), so it can be parsed back uniquely
//! and two different databases cannot produce the same byte stream.

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::schema::META_CONTENT_HASH;

/// Versions the serialisation itself; changing the format changes every hash.
const DOMAIN: &[u8] = b"rescue-kb-content-hash/v1";

/// sha256 (hex) of the canonical serialisation of `conn`'s main database:
/// every `sqlite_schema` row ordered by (type, name), then every ordinary
/// table (FTS5 shadow tables included; virtual tables and `sqlite_*` tables
/// excluded) ordered by name, each row ordered by rowid, or by all columns
/// for WITHOUT ROWID tables. The `kb_meta` row holding the hash is skipped.
pub fn content_hash(conn: &Connection) -> rusqlite::Result<String> {
    let mut h = Hasher(Sha256::new());
    h.bytes(b'D', DOMAIN);

    let mut schema = conn
        .prepare("SELECT type, name, tbl_name, sql FROM main.sqlite_schema ORDER BY type, name")?;
    let mut rows = schema.query([])?;
    while let Some(row) = rows.next()? {
        h.tag(b'S');
        for i in 0..4 {
            h.value(row.get_ref(i)?);
        }
    }

    for (table, without_rowid) in content_tables(conn)? {
        let quoted = quote_ident(&table);
        let sql = if without_rowid {
            let columns = conn
                .prepare(&format!("SELECT * FROM main.{quoted} LIMIT 0"))?
                .column_count();
            let order: Vec<String> = (1..=columns).map(|i| i.to_string()).collect();
            format!("SELECT * FROM main.{quoted} ORDER BY {}", order.join(", "))
        } else {
            format!("SELECT rowid, * FROM main.{quoted} ORDER BY rowid")
        };
        let mut stmt = conn.prepare(&sql)?;
        h.bytes(b'T', table.as_bytes());
        h.tag(if without_rowid { b'W' } else { b'R' });
        let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        h.count(b'C', names.len());
        for name in &names {
            h.bytes(b'c', name.as_bytes());
        }
        let is_meta = table == "kb_meta";
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if is_meta
                && matches!(row.get_ref(0)?, ValueRef::Text(key) if key == META_CONTENT_HASH.as_bytes())
            {
                continue;
            }
            h.tag(b'r');
            for i in 0..names.len() {
                h.value(row.get_ref(i)?);
            }
        }
        h.tag(b'E');
    }
    Ok(hex::encode(h.0.finalize()))
}

/// Ordinary tables in name order, with whether each is WITHOUT ROWID.
fn content_tables(conn: &Connection) -> rusqlite::Result<Vec<(String, bool)>> {
    let mut stmt = conn.prepare(
        "SELECT s.name, COALESCE(t.wr, 0) \
         FROM main.sqlite_schema AS s \
         LEFT JOIN pragma_table_list AS t ON t.schema = 'main' AND t.name = s.name \
         WHERE s.type = 'table' \
           AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
           AND upper(substr(ltrim(s.sql), 1, 20)) != 'CREATE VIRTUAL TABLE' \
         ORDER BY s.name",
    )?;
    stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? != 0))
    })?
    .collect()
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

struct Hasher(Sha256);

impl Hasher {
    fn tag(&mut self, tag: u8) {
        self.0.update([tag]);
    }

    fn count(&mut self, tag: u8, n: usize) {
        self.tag(tag);
        self.0.update((n as u64).to_be_bytes());
    }

    fn bytes(&mut self, tag: u8, data: &[u8]) {
        self.count(tag, data.len());
        self.0.update(data);
    }

    fn value(&mut self, value: ValueRef<'_>) {
        match value {
            ValueRef::Null => self.tag(b'n'),
            ValueRef::Integer(i) => {
                self.tag(b'i');
                self.0.update(i.to_be_bytes());
            }
            ValueRef::Real(f) => {
                self.tag(b'f');
                self.0.update(f.to_bits().to_be_bytes());
            }
            ValueRef::Text(t) => self.bytes(b't', t),
            ValueRef::Blob(b) => self.bytes(b'b', b),
        }
    }
}
