//! Plain-text rendering of the catalog's mixed XHTML and the sentence-level
//! trimming used to keep guidelines, causes and intros short.
//!
//! The catalog encodes layout the way a browser would read it: whitespace in
//! the XML source is pretty-printing, `xhtml:br` and block elements end lines,
//! and code indentation is nested `<xhtml:div style="margin-left:1em;">`.
//! Rendering therefore follows HTML whitespace collapsing rather than taking
//! the XML text verbatim.

use roxmltree::Node;

/// Indentation emitted per `margin-left:1em` level in code.
const CODE_INDENT: &str = "    ";

/// Marker put in front of list items in prose.
const ITEM_MARKER: &str = "- ";

/// Renders an `Example_Code` element (or any node holding XHTML code) to
/// plain text: one line per `br`/block, indentation from nested margins.
pub fn flatten_code(node: Node<'_, '_>) -> String {
    let mut layout = Layout::new(Mode::Code);
    layout.children(node);
    let lines = layout.finish();
    let start = lines.iter().position(|l| !l.trim().is_empty());
    let end = lines.iter().rposition(|l| !l.trim().is_empty());
    match (start, end) {
        (Some(s), Some(e)) => lines[s..=e].join("\n"),
        _ => String::new(),
    }
}

/// Renders a prose element (`Description`, `Extended_Description`,
/// `Body_Text`, ...) to its blocks: paragraphs and list items, each on one
/// whitespace-normalised line, list items starting with "- ".
pub fn flatten_blocks(node: Node<'_, '_>) -> Vec<String> {
    let mut layout = Layout::new(Mode::Prose);
    layout.children(node);
    layout
        .finish()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Joins blocks into readable plain text: a blank line between paragraphs,
/// consecutive list items on consecutive lines.
pub fn join_blocks(blocks: &[String]) -> String {
    let mut out = String::new();
    for (i, block) in blocks.iter().enumerate() {
        if i > 0 {
            let both_items =
                block.starts_with(ITEM_MARKER) && blocks[i - 1].starts_with(ITEM_MARKER);
            out.push_str(if both_items { "\n" } else { "\n\n" });
        }
        out.push_str(block);
    }
    out
}

/// Collapses every whitespace run to one space and trims the ends.
pub fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Margins become indentation; tables become `a | b` rows.
    Code,
    /// Margins are ignored; `p` and `li` become separate blocks.
    Prose,
}

/// A tiny line-box model: enough of CSS block layout to render the catalog's
/// XHTML subset (div, p, br, ul/ol/li, table, inline i/b/sup).
struct Layout {
    mode: Mode,
    lines: Vec<String>,
    current: String,
    /// Indent level of `current`, fixed when its first character is written.
    current_indent: usize,
    indent: usize,
    pending_space: bool,
    /// Written before the next character of a fresh line (list markers).
    pending_prefix: Option<&'static str>,
    /// Whether the current table row already has a cell (for `|` separators).
    row_has_cell: bool,
}

impl Layout {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            lines: Vec::new(),
            current: String::new(),
            current_indent: 0,
            indent: 0,
            pending_space: false,
            pending_prefix: None,
            row_has_cell: false,
        }
    }

    fn children(&mut self, node: Node<'_, '_>) {
        for child in node.children() {
            if child.is_text() {
                self.text(child.text().unwrap_or(""));
            } else if child.is_element() {
                self.element(child);
            }
        }
    }

    fn element(&mut self, node: Node<'_, '_>) {
        match node.tag_name().name() {
            "br" => self.line_break(),
            "div" | "p" | "ul" | "ol" | "table" | "tbody" | "thead" | "blockquote" | "pre" => {
                let levels = if self.mode == Mode::Code {
                    node.attribute("style").map_or(0, margin_levels)
                } else {
                    0
                };
                self.block_boundary();
                self.indent += levels;
                self.children(node);
                self.block_boundary();
                self.indent -= levels;
            }
            "li" => {
                self.block_boundary();
                if self.mode == Mode::Prose {
                    self.pending_prefix = Some(ITEM_MARKER);
                }
                self.children(node);
                self.block_boundary();
            }
            "tr" => {
                self.block_boundary();
                self.row_has_cell = false;
                self.children(node);
                self.block_boundary();
            }
            "td" | "th" => {
                if self.row_has_cell {
                    self.text(" | ");
                }
                self.row_has_cell = true;
                self.children(node);
            }
            // Images carry no text; everything else (i, b, sup, span, a) is inline.
            "img" => {}
            _ => self.children(node),
        }
    }

    fn text(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                if !self.current.is_empty() {
                    self.pending_space = true;
                }
                continue;
            }
            if self.current.is_empty() {
                self.current_indent = self.indent;
                if let Some(prefix) = self.pending_prefix.take() {
                    self.current.push_str(prefix);
                }
            } else if self.pending_space {
                self.current.push(' ');
            }
            self.pending_space = false;
            self.current.push(c);
        }
    }

    /// `br`: ends the current line even when it is empty, so `br br` gives a blank line.
    fn line_break(&mut self) {
        self.push_line();
    }

    /// A block start or end only ends a line that has content (HTML does not
    /// create empty line boxes for adjacent block edges).
    fn block_boundary(&mut self) {
        if !self.current.is_empty() {
            self.push_line();
        }
        self.pending_space = false;
    }

    fn push_line(&mut self) {
        let text = std::mem::take(&mut self.current);
        let line = if self.mode == Mode::Code && !text.is_empty() {
            format!("{}{}", CODE_INDENT.repeat(self.current_indent), text)
        } else {
            text
        };
        self.lines.push(line);
        self.pending_space = false;
    }

    fn finish(mut self) -> Vec<String> {
        self.block_boundary();
        self.lines
    }
}

/// Number of indentation levels in a `style` attribute such as
/// `margin-left:1em;` (fractions round down, other units count as one level).
fn margin_levels(style: &str) -> usize {
    style
        .split(';')
        .filter_map(|decl| decl.split_once(':'))
        .filter(|(prop, _)| prop.trim().eq_ignore_ascii_case("margin-left"))
        .map(|(_, value)| {
            let value = value.trim();
            let number: String = value
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            match number.parse::<f64>() {
                Ok(n) if value.ends_with("em") => n.floor().max(0.0) as usize,
                Ok(n) if n > 0.0 => 1,
                _ => 0,
            }
        })
        .sum()
}

/// Abbreviations whose trailing period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "cf", "al", "approx", "esp", "incl", "Mr", "Dr", "Inc", "Fig", "U.S",
];

/// Splits one paragraph into sentences. A sentence ends at `.`, `!` or `?`
/// (optionally followed by closing quotes/brackets) when whitespace and an
/// uppercase letter, digit or opening quote/bracket follow, or at the end.
pub fn sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = paragraph.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if matches!(b, b'.' | b'!' | b'?') {
            let mut end = i + 1;
            while end < bytes.len() && matches!(bytes[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            let at_end = paragraph[end..].trim().is_empty();
            let next_starts_sentence = paragraph[end..]
                .strip_prefix(|c: char| c.is_whitespace())
                .map(str::trim_start)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|c| {
                    c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '\'' | '(' | '[')
                });
            if at_end
                || (next_starts_sentence
                    && !(b == b'.' && ends_with_abbreviation(&paragraph[start..i])))
            {
                let sentence = paragraph[start..end].trim();
                if !sentence.is_empty() {
                    out.push(sentence);
                }
                start = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    let rest = paragraph[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn ends_with_abbreviation(before_period: &str) -> bool {
    let word = before_period
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    // "1. Data enters ...": a list label, not a one-word sentence.
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) && before_period.trim() == word
    {
        return true;
    }
    // Single capitals are initials ("J. Smith"), not sentence ends.
    (word.chars().count() == 1 && word.chars().all(char::is_uppercase))
        || ABBREVIATIONS.iter().any(|a| word.eq_ignore_ascii_case(a))
}

/// Number of characters (not bytes): limits are about reading length.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// The longest prefix of whole sentences within `max` characters; if even the
/// first sentence is longer, that sentence cut at a word boundary with "…".
pub fn leading_sentences(sentences: &[&str], max: usize) -> String {
    let mut out = String::new();
    for s in sentences {
        let candidate_len = char_len(&out) + usize::from(!out.is_empty()) + char_len(s);
        if candidate_len > max {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(s);
    }
    if out.is_empty()
        && let Some(first) = sentences.first()
    {
        return truncate_words(first, max);
    }
    out
}

/// The longest suffix of whole sentences within `max` characters; if even the
/// last sentence is longer, that sentence cut at a word boundary with "…".
pub fn trailing_sentences(sentences: &[&str], max: usize) -> String {
    let mut taken: Vec<&str> = Vec::new();
    let mut len = 0;
    for s in sentences.iter().rev() {
        let candidate_len = len + usize::from(!taken.is_empty()) + char_len(s);
        if candidate_len > max {
            break;
        }
        len = candidate_len;
        taken.push(s);
    }
    if taken.is_empty() {
        return sentences
            .last()
            .map_or_else(String::new, |s| truncate_words(s, max));
    }
    taken.reverse();
    taken.join(" ")
}

/// Cuts `s` to at most `max` characters at a word boundary, marking the cut with "…".
pub fn truncate_words(s: &str, max: usize) -> String {
    if char_len(s) <= max {
        return s.to_owned();
    }
    let budget = max.saturating_sub(1);
    let cut = s.char_indices().nth(budget).map_or(s.len(), |(i, _)| i);
    let head = &s[..cut];
    let head = match head.rfind(char::is_whitespace) {
        Some(space) if space > 0 => &head[..space],
        _ => head,
    };
    format!(
        "{}…",
        head.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
    )
}

/// Removes bibliography pointers such as "[REF-867]", which mean nothing
/// outside the catalog's web pages.
pub fn strip_references(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("[REF-") {
        let after = &rest[pos + 5..];
        let digits = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if digits > 0 && after[digits..].starts_with(']') {
            out.push_str(&rest[..pos]);
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..pos + 5]);
            rest = after;
        }
    }
    out.push_str(rest);
    // Removing a reference leaves "word ." or a double space behind.
    normalize_ws(&out)
        .replace(" .", ".")
        .replace(" ,", ",")
        .replace(" ;", ";")
        .replace(" )", ")")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(xml: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        flatten_code(doc.root_element())
    }

    /// Test snippets write `{NS}` where the root's namespace declarations go.
    fn with_ns(xml: &str) -> String {
        xml.replace(
            "{NS}",
            r#"xmlns="http://cwe.mitre.org/cwe-7" xmlns:xhtml="http://www.w3.org/1999/xhtml""#,
        )
    }

    #[test]
    fn br_becomes_newline_and_margins_become_indentation() {
        let xml = with_ns(
            r#"<Example_Code {NS} Nature="Good" Language="C">
                  <xhtml:div>char *s;<xhtml:br/>if (i != err)<xhtml:br/>{<xhtml:br/>
                     <xhtml:div style="margin-left:1em;">s = "a";<xhtml:br/>
                        <xhtml:i>/* nested */</xhtml:i>
                        <xhtml:div style="margin-left:1em;">g(s,   t);</xhtml:div>
                     </xhtml:div>
                  }<xhtml:br/>
                  <xhtml:br/>printf("%s", s);</xhtml:div>
               </Example_Code>"#,
        );
        assert_eq!(
            code_of(&xml),
            "char *s;\nif (i != err)\n{\n    s = \"a\";\n    /* nested */\n        g(s, t);\n}\n\nprintf(\"%s\", s);"
        );
    }

    #[test]
    fn code_without_br_uses_block_edges_and_ignores_source_newlines() {
        let xml = with_ns(
            r#"<Example_Code {NS}>
                 public class Main {<xhtml:br/>
                 <xhtml:div style="margin-left:1em;">
                   void f() {
                   <xhtml:div style="margin-left:1em;">
                     int x = 1;<xhtml:br/>
                     return;
                   </xhtml:div>
                   }
                 </xhtml:div>
                 }
               </Example_Code>"#,
        );
        assert_eq!(
            code_of(&xml),
            "public class Main {\n    void f() {\n        int x = 1;\n        return;\n    }\n}"
        );
    }

    #[test]
    fn trailing_br_before_block_end_adds_no_blank_line() {
        let xml = with_ns(
            r#"<Example_Code {NS}><xhtml:div>a;<xhtml:br/></xhtml:div><xhtml:div>b;</xhtml:div></Example_Code>"#,
        );
        assert_eq!(code_of(&xml), "a;\nb;");
    }

    #[test]
    fn tables_in_code_become_rows() {
        let xml = with_ns(
            r#"<Example_Code {NS}><xhtml:table><xhtml:tr><xhtml:th>Reg</xhtml:th><xhtml:th>Val</xhtml:th></xhtml:tr>
               <xhtml:tr><xhtml:td>A</xhtml:td><xhtml:td>0x1</xhtml:td></xhtml:tr></xhtml:table></Example_Code>"#,
        );
        assert_eq!(code_of(&xml), "Reg | Val\nA | 0x1");
    }

    #[test]
    fn prose_blocks_keep_paragraphs_and_list_items() {
        let xml = with_ns(
            r#"<Extended_Description {NS}>
                <xhtml:p>First   paragraph.</xhtml:p>
                <xhtml:ul><xhtml:li><xhtml:div>one</xhtml:div></xhtml:li><xhtml:li>two</xhtml:li></xhtml:ul>
                <xhtml:p>Last.</xhtml:p>
               </Extended_Description>"#,
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let blocks = flatten_blocks(doc.root_element());
        assert_eq!(blocks, ["First paragraph.", "- one", "- two", "Last."]);
        assert_eq!(
            join_blocks(&blocks),
            "First paragraph.\n\n- one\n- two\n\nLast."
        );
    }

    #[test]
    fn sentence_splitting_respects_abbreviations() {
        let s = sentences(
            "Use a vetted library, e.g. OWASP ESAPI. Then quote (i.e., escape) args. Done!",
        );
        assert_eq!(
            s,
            [
                "Use a vetted library, e.g. OWASP ESAPI.",
                "Then quote (i.e., escape) args.",
                "Done!"
            ]
        );
        assert_eq!(
            sentences("Call f(). \"Quoted\" next."),
            ["Call f().", "\"Quoted\" next."]
        );
        assert_eq!(
            sentences("2. The data runs. Version 2. Next."),
            ["2. The data runs.", "Version 2.", "Next."]
        );
    }

    #[test]
    fn trimming_cuts_at_sentence_then_word_boundaries() {
        let s = ["One two.", "Three four five.", "Six."];
        assert_eq!(leading_sentences(&s, 29), "One two. Three four five.");
        assert_eq!(trailing_sentences(&s, 25), "Three four five. Six.");
        assert_eq!(
            leading_sentences(&["alpha beta gamma delta."], 12),
            "alpha beta…"
        );
    }

    #[test]
    fn references_are_removed() {
        assert_eq!(
            strip_references("Run with least privilege [REF-76]. Use it [REF-1, x]."),
            "Run with least privilege. Use it [REF-1, x]."
        );
    }
}
