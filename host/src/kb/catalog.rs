//! The MITRE CWE catalog (XML, schema `http://cwe.mitre.org/cwe-7`): parsing
//! the weaknesses the knowledge base needs and composing, offline and
//! deterministically, the short `guideline` and `cause` texts injected into
//! prompts.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::Path;

use roxmltree::{Document, Node};

use super::text::{
    flatten_blocks, flatten_code, join_blocks, leading_sentences, normalize_ws, sentences,
    strip_references, trailing_sentences,
};
use crate::{Error, Result};

/// Namespace of every catalog element (the code examples inside are `xhtml:`).
pub const CWE_NS: &str = "http://cwe.mitre.org/cwe-7";

/// The view whose `ChildOf` relations form the hierarchy (Research Concepts).
pub const RESEARCH_VIEW: &str = "1000";

/// At most this many rules per guideline: prompts have a budget.
pub const MAX_RULES: usize = 5;
/// A rule is one or two sentences; longer ones are cut at a sentence boundary.
pub const MAX_RULE_CHARS: usize = 240;
/// Description plus the opening of the extended description.
pub const MAX_CAUSE_CHARS: usize = 400;
/// Budgets for the two halves of an example's intro: the scenario and the
/// sentence(s) leading into the fixed code.
const MAX_INTRO_CHARS: usize = 200;
const MAX_LEAD_IN_CHARS: usize = 250;

/// The parsed catalog, reduced to what the knowledge base stores.
#[derive(Debug)]
pub struct Catalog {
    /// `Version` attribute of the root, e.g. "4.14".
    pub version: String,
    /// Every non-deprecated weakness, by id.
    pub weaknesses: BTreeMap<u32, Weakness>,
    /// Deprecated weaknesses: not indexed, only reported when a source names one.
    pub deprecated: BTreeSet<u32>,
    /// Categories and views: ids that exist but are not weaknesses.
    pub non_weaknesses: BTreeSet<u32>,
    /// The direct members (`Members/Has_Member`) of every view, by view id:
    /// how the catalog publishes lists such as each year's Top 25.
    pub view_members: BTreeMap<u32, BTreeSet<u32>>,
    /// The members (`Relationships/Has_Member`) of every category, by
    /// category id: how a view such as the OWASP Top Ten groups weaknesses.
    pub category_members: BTreeMap<u32, BTreeSet<u32>>,
}

#[derive(Debug)]
pub struct Weakness {
    pub id: u32,
    pub name: String,
    pub abstraction: String,
    pub status: String,
    /// Plain text, blocks joined with blank lines.
    pub description: String,
    /// Paragraphs and list items of the extended description ("- " items).
    pub extended_blocks: Vec<String>,
    /// Lowercase language names, sorted; empty when language-independent.
    pub languages: Vec<String>,
    /// `ChildOf` parents in the Research Concepts view, primary first.
    pub parents: Vec<u32>,
    pub mitigations: Vec<Mitigation>,
    /// `Example_Code Nature="Good"` entries in document order.
    pub good_examples: Vec<GoodExample>,
}

#[derive(Debug, Clone)]
pub struct Mitigation {
    pub phases: Vec<String>,
    pub effectiveness: Option<String>,
    /// Paragraphs and list items of the description ("- " items).
    pub blocks: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GoodExample {
    /// Lowercase, '' when unknown.
    pub language: String,
    pub code: String,
    pub intro: String,
}

impl Catalog {
    /// The weaknesses a view lists, directly or through its categories (one
    /// level, as the OWASP Top Ten views group them); deprecated entries and
    /// nested categories are left out. `None` when the catalog has no such
    /// view.
    pub fn view_weaknesses(&self, view: u32) -> Option<BTreeSet<u32>> {
        let members = self.view_members.get(&view)?;
        let direct = members.iter();
        let grouped = members
            .iter()
            .filter_map(|id| self.category_members.get(id))
            .flatten();
        Some(
            direct
                .chain(grouped)
                .copied()
                .filter(|id| self.weaknesses.contains_key(id))
                .collect(),
        )
    }

    /// Parses the catalog text; `path` only labels errors.
    pub fn parse(xml: &str, path: &Path) -> Result<Self> {
        let source_error = |message: String| Error::KbSource {
            path: path.to_owned(),
            message,
        };
        let doc = Document::parse(xml).map_err(|e| source_error(format!("invalid XML: {e}")))?;
        let root = doc.root_element();
        if root.tag_name().name() != "Weakness_Catalog"
            || root.tag_name().namespace() != Some(CWE_NS)
        {
            return Err(source_error(format!(
                "root element is {:?}, expected Weakness_Catalog in namespace {CWE_NS}",
                root.tag_name().name()
            )));
        }
        let version = root
            .attribute("Version")
            .ok_or_else(|| source_error("Weakness_Catalog has no Version attribute".into()))?
            .to_owned();

        let mut catalog = Catalog {
            version,
            weaknesses: BTreeMap::new(),
            deprecated: BTreeSet::new(),
            non_weaknesses: BTreeSet::new(),
            view_members: BTreeMap::new(),
            category_members: BTreeMap::new(),
        };
        for section in cwe_children(root) {
            match section.tag_name().name() {
                "Weaknesses" => {
                    for node in cwe_children(section).filter(|n| n.tag_name().name() == "Weakness")
                    {
                        let weakness = parse_weakness(node).map_err(&source_error)?;
                        let id = weakness.id;
                        let duplicate = if weakness.status == "Deprecated" {
                            !catalog.deprecated.insert(id)
                        } else {
                            catalog.weaknesses.insert(id, weakness).is_some()
                        };
                        if duplicate {
                            return Err(source_error(format!("duplicate weakness ID {id}")));
                        }
                    }
                }
                "Categories" | "Views" => {
                    for node in cwe_children(section) {
                        let id = node_id(node).map_err(&source_error)?;
                        catalog.non_weaknesses.insert(id);
                        let (list, kind) = match node.tag_name().name() {
                            "View" => ("Members", "view"),
                            "Category" => ("Relationships", "category"),
                            _ => continue,
                        };
                        let members = cwe_child(node, list)
                            .into_iter()
                            .flat_map(cwe_children)
                            .filter(|m| m.tag_name().name() == "Has_Member")
                            .map(|m| {
                                m.attribute("CWE_ID")
                                    .and_then(|raw| raw.parse().ok())
                                    .ok_or_else(|| {
                                        source_error(format!(
                                            "{kind} {id}: Has_Member without a numeric CWE_ID (line {})",
                                            line_of(m)
                                        ))
                                    })
                            })
                            .collect::<Result<BTreeSet<u32>>>()?;
                        if kind == "view" {
                            catalog.view_members.insert(id, members);
                        } else {
                            catalog.category_members.insert(id, members);
                        }
                    }
                }
                _ => {}
            }
        }
        if catalog.weaknesses.is_empty() {
            return Err(source_error(
                "the catalog has no (non-deprecated) weaknesses".into(),
            ));
        }
        Ok(catalog)
    }

    /// The guideline of `id`, falling back to the nearest `ChildOf` ancestor
    /// (breadth-first, primary parent first) that has usable mitigations.
    pub fn guideline(&self, id: u32) -> String {
        let mut queue = VecDeque::from([id]);
        let mut seen = HashSet::from([id]);
        while let Some(current) = queue.pop_front() {
            let Some(weakness) = self.weaknesses.get(&current) else {
                continue;
            };
            let guideline = compose_guideline(&weakness.mitigations);
            if !guideline.is_empty() {
                return guideline;
            }
            for &parent in &weakness.parents {
                if seen.insert(parent) {
                    queue.push_back(parent);
                }
            }
        }
        String::new()
    }
}

fn cwe_children<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    node.children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(CWE_NS))
}

fn cwe_child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    cwe_children(node).find(|n| n.tag_name().name() == name)
}

fn node_id(node: Node<'_, '_>) -> std::result::Result<u32, String> {
    let raw = node.attribute("ID").ok_or_else(|| {
        format!(
            "<{}> without ID (line {})",
            node.tag_name().name(),
            line_of(node)
        )
    })?;
    raw.parse()
        .map_err(|_| format!("<{}> has non-numeric ID {raw:?}", node.tag_name().name()))
}

fn line_of(node: Node<'_, '_>) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

fn parse_weakness(node: Node<'_, '_>) -> std::result::Result<Weakness, String> {
    let id = node_id(node)?;
    let attr = |name: &str| {
        node.attribute(name)
            .map(str::to_owned)
            .ok_or_else(|| format!("Weakness {id} has no {name} attribute"))
    };
    let description = cwe_child(node, "Description")
        .map(|d| join_blocks(&flatten_blocks(d)))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("Weakness {id} has no Description"))?;
    let extended_blocks =
        cwe_child(node, "Extended_Description").map_or_else(Vec::new, flatten_blocks);

    let mut primary = Vec::new();
    let mut secondary = Vec::new();
    if let Some(related) = cwe_child(node, "Related_Weaknesses") {
        for rel in cwe_children(related) {
            if rel.attribute("Nature") != Some("ChildOf")
                || rel.attribute("View_ID") != Some(RESEARCH_VIEW)
            {
                continue;
            }
            let parent: u32 = rel
                .attribute("CWE_ID")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("Weakness {id} has a ChildOf without a numeric CWE_ID"))?;
            let list = if rel.attribute("Ordinal") == Some("Primary") {
                &mut primary
            } else {
                &mut secondary
            };
            if !list.contains(&parent) {
                list.push(parent);
            }
        }
    }
    secondary.retain(|p| !primary.contains(p));
    primary.extend(secondary);

    let mitigations = cwe_child(node, "Potential_Mitigations")
        .map(|m| cwe_children(m).map(parse_mitigation).collect())
        .unwrap_or_default();

    let good_examples = cwe_child(node, "Demonstrative_Examples")
        .map(|d| cwe_children(d).flat_map(parse_good_examples).collect())
        .unwrap_or_default();

    Ok(Weakness {
        id,
        name: normalize_ws(&attr("Name")?),
        abstraction: attr("Abstraction")?,
        status: attr("Status")?,
        description,
        extended_blocks,
        languages: cwe_child(node, "Applicable_Platforms")
            .map_or_else(Vec::new, platform_languages),
        parents: primary,
        mitigations,
        good_examples,
    })
}

/// Languages named in `Applicable_Platforms`. Any language-independent or
/// broad class ("Not Language-Specific", "Compiled", "Interpreted") makes the
/// whole list empty: restricting such a weakness to the few named languages
/// would hide it from the others.
fn platform_languages(platforms: Node<'_, '_>) -> Vec<String> {
    let mut languages = BTreeSet::new();
    for lang in cwe_children(platforms).filter(|n| n.tag_name().name() == "Language") {
        if let Some(name) = lang.attribute("Name") {
            if !name.eq_ignore_ascii_case("Other") {
                languages.insert(name.to_lowercase());
            }
        } else {
            match lang.attribute("Class") {
                Some("Assembly") => {
                    languages.insert("assembly".to_owned());
                }
                Some("Hardware Description Language") => {
                    languages.extend(["verilog".to_owned(), "vhdl".to_owned()]);
                }
                _ => return Vec::new(),
            }
        }
    }
    languages.into_iter().collect()
}

fn parse_mitigation(node: Node<'_, '_>) -> Mitigation {
    let texts = |name: &str| -> Vec<String> {
        cwe_children(node)
            .filter(|n| n.tag_name().name() == name)
            .map(|n| normalize_ws(n.text().unwrap_or_default()))
            .collect()
    };
    Mitigation {
        phases: texts("Phase"),
        effectiveness: texts("Effectiveness").into_iter().next(),
        blocks: cwe_child(node, "Description").map_or_else(Vec::new, flatten_blocks),
    }
}

/// The good examples of one `Demonstrative_Example`. The language comes from
/// the code itself or, when it has none, from the nearest vulnerable/fixed
/// sibling that does (the catalog often labels only the first snippet).
fn parse_good_examples(demo: Node<'_, '_>) -> Vec<GoodExample> {
    let parts: Vec<Node<'_, '_>> = cwe_children(demo).collect();
    let intro_sentences: Vec<String> = cwe_child(demo, "Intro_Text")
        .map(prose_sentences)
        .unwrap_or_default();
    let intro = leading_sentences(&as_strs(&intro_sentences), MAX_INTRO_CHARS);

    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if part.tag_name().name() != "Example_Code" || part.attribute("Nature") != Some("Good") {
            continue;
        }
        let code = flatten_code(*part);
        if code.is_empty() {
            continue;
        }
        let own = part.attribute("Language");
        let by_distance = (1..parts.len()).flat_map(|d| [i.checked_sub(d), i.checked_add(d)]);
        let language = own
            .or_else(|| {
                by_distance
                    .flatten()
                    .filter_map(|j| parts.get(j))
                    .filter(|p| {
                        p.tag_name().name() == "Example_Code"
                            && matches!(p.attribute("Nature"), Some("Bad" | "Good"))
                    })
                    .find_map(|p| p.attribute("Language"))
            })
            .map_or_else(String::new, normalize_language);
        if language.is_empty() && is_prose(&code) {
            continue;
        }

        let lead_in = i
            .checked_sub(1)
            .map(|j| parts[j])
            .filter(|p| p.tag_name().name() == "Body_Text")
            .map(|p| trailing_sentences(&as_strs(&prose_sentences(p)), MAX_LEAD_IN_CHARS))
            .unwrap_or_default();
        let intro = match (intro.is_empty(), lead_in.is_empty()) {
            (_, true) => intro.clone(),
            (true, false) => lead_in,
            (false, false) => format!("{intro} {lead_in}"),
        };
        out.push(GoodExample {
            language,
            code,
            intro,
        });
    }
    out
}

/// Some "Good" examples of hardware and cloud weaknesses are a paragraph of
/// advice rather than code; they are not examples to imitate.
fn is_prose(code: &str) -> bool {
    code.lines().filter(|l| !l.trim().is_empty()).all(|line| {
        let line = strip_references(line);
        line.split_whitespace().count() >= 6 && line.ends_with(['.', ':'])
    })
}

/// Lowercase language label; "Other" means unknown.
fn normalize_language(raw: &str) -> String {
    let raw = raw.trim();
    if raw.eq_ignore_ascii_case("Other") {
        String::new()
    } else {
        raw.to_lowercase()
    }
}

fn prose_sentences(node: Node<'_, '_>) -> Vec<String> {
    flatten_blocks(node)
        .iter()
        .flat_map(|block| {
            let block = strip_references(block.strip_prefix("- ").unwrap_or(block));
            sentences(&block)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// What makes code vulnerable: the description, then the opening sentences
/// of the extended description while they fit in [`MAX_CAUSE_CHARS`].
pub fn compose_cause(weakness: &Weakness) -> String {
    let mut all = Vec::new();
    for block in std::iter::once(&weakness.description).chain(
        // List items are fragments; the paragraphs carry the explanation.
        weakness
            .extended_blocks
            .iter()
            .filter(|b| !b.starts_with("- ")),
    ) {
        let block = strip_references(block);
        all.extend(sentences(&block).into_iter().map(str::to_owned));
    }
    // What follows a sentence that introduces a list is the list's elaboration,
    // and the introducing sentence alone reads as a dangling fragment.
    if let Some(colon) = all.iter().position(|s| s.ends_with(':')) {
        all.truncate(colon.max(1));
    }
    leading_sentences(&as_strs(&all), MAX_CAUSE_CHARS)
}

/// Actionable rules from the mitigations, one "- " line each, at most
/// [`MAX_RULES`], no duplicates; '' when no mitigation is usable.
///
/// Implementation rules come first, alternating with Architecture and Design
/// ones (the catalog files key advice such as parameterised queries under
/// design, and a long list of code-level rules would otherwise crowd it out),
/// then the other phases. Within a phase: more effective first, then catalog
/// order.
pub fn compose_guideline(mitigations: &[Mitigation]) -> String {
    let mut ranked: Vec<(u8, u8, usize, &Mitigation)> = mitigations
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((phase_rank(m), effectiveness_rank(m)?, i, m)))
        .collect();
    ranked.sort_by_key(|&(phase, effectiveness, i, _)| (phase, effectiveness, i));
    let rules_of = |phase: u8| -> Vec<String> {
        ranked
            .iter()
            .filter(|r| r.0 == phase)
            .filter_map(|r| compose_rule(r.3))
            .collect()
    };
    let (implementation, design, other) = (rules_of(0), rules_of(1), rules_of(2));

    let mut ordered = Vec::new();
    for i in 0..implementation.len().max(design.len()) {
        ordered.extend(implementation.get(i));
        ordered.extend(design.get(i));
    }
    ordered.extend(&other);

    let mut seen = HashSet::new();
    ordered
        .into_iter()
        .filter(|rule| seen.insert(rule.to_lowercase()))
        .take(MAX_RULES)
        .map(|rule| format!("- {rule}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn phase_rank(m: &Mitigation) -> u8 {
    if m.phases.iter().any(|p| p == "Implementation") {
        0
    } else if m.phases.iter().any(|p| p == "Architecture and Design") {
        1
    } else {
        2
    }
}

/// `None` for mitigations the catalog itself advises against relying on.
fn effectiveness_rank(m: &Mitigation) -> Option<u8> {
    match m.effectiveness.as_deref() {
        Some("High") => Some(0),
        Some("Defense in Depth" | "Limited" | "Incidental") => Some(2),
        Some("Discouraged Common Practice" | "None") => None,
        _ => Some(1),
    }
}

/// One rule from one mitigation: its lead sentence, plus the first later
/// sentence that reads as an instruction (the catalog often opens with
/// context and gives the concrete advice next, e.g. "Process SQL queries
/// using prepared statements"), or else the next sentence — if both fit.
///
/// Paragraphs lead; list items are used only when the paragraphs are mere
/// lead-ins ("follow these rules:"), and the two are not mixed in one rule
/// because an item rarely reads as a sequel to a paragraph.
fn compose_rule(m: &Mitigation) -> Option<String> {
    let mut all: Vec<(String, bool)> = Vec::new();
    let (mut items, mut usable_items) = (0, 0);
    for block in &m.blocks {
        let is_item = block.starts_with("- ");
        let block = strip_references(block.strip_prefix("- ").unwrap_or(block));
        let before = all.len();
        all.extend(
            sentences(&block)
                .into_iter()
                .filter(|s| !is_pointer(s) && !is_fragment(s))
                .map(|s| (as_statement(s), is_item)),
        );
        if is_item {
            items += 1;
            usable_items += usize::from(all.len() > before);
        }
    }
    // A list made only of clause fragments carries the mitigation's point
    // ("requires that the system either: recognizes ..., or throttles ...");
    // the paragraphs around it discuss that list and mean nothing without it.
    if items > 0 && usable_items == 0 {
        return None;
    }
    let lead_at = all
        .iter()
        .position(|(_, is_item)| !is_item)
        .or_else(|| (!all.is_empty()).then_some(0))?;
    let (lead, lead_is_item) = &all[lead_at];
    let rest: Vec<&String> = all[lead_at + 1..]
        .iter()
        .filter(|(_, is_item)| is_item == lead_is_item)
        .map(|(s, _)| s)
        .collect();
    let follow = rest
        .iter()
        .find(|s| is_instruction(s))
        .or_else(|| rest.first());
    if let Some(follow) = follow {
        let both = format!("{lead} {follow}");
        if both.chars().count() <= MAX_RULE_CHARS {
            return Some(both);
        }
    }
    Some(leading_sentences(&[lead.as_str()], MAX_RULE_CHARS))
}

/// Sentences that only send the reader elsewhere.
fn is_pointer(sentence: &str) -> bool {
    let lower = sentence.to_lowercase();
    lower.starts_with("see ") || lower.starts_with("this is a complex topic")
}

/// Text that only leads into a list ("... include:") or continues one
/// ("recognizes the attack ..., or"): on its own it says nothing.
fn is_fragment(sentence: &str) -> bool {
    let s = sentence.trim_end();
    s.ends_with(':')
        || s.ends_with(',')
        || s.ends_with(" or")
        || s.ends_with(" and")
        || s.starts_with(|c: char| c.is_lowercase())
}

/// Ends a rule with a full stop when the catalog left it off (headings, list items).
fn as_statement(sentence: &str) -> String {
    if sentence.ends_with(|c: char| c.is_alphanumeric()) {
        format!("{sentence}.")
    } else {
        sentence.to_owned()
    }
}

/// Connectives that may precede the verb of an instruction.
const LEAD_INS: &[&str] = &[
    "for example, ",
    "also, ",
    "instead, ",
    "additionally, ",
    "in addition, ",
    "specifically, ",
    "alternatively, ",
    "finally, ",
    "then, ",
    "if possible, ",
    "when possible, ",
    "where possible, ",
    "if available, ",
    "whenever possible, ",
];

/// Verbs the catalog's mitigations start instructions with.
const INSTRUCTION_VERBS: &[&str] = &[
    "add",
    "allocate",
    "always",
    "apply",
    "assign",
    "assume",
    "authenticate",
    "avoid",
    "be",
    "call",
    "canonicalize",
    "carefully",
    "check",
    "choose",
    "clear",
    "compare",
    "configure",
    "consider",
    "convert",
    "create",
    "decode",
    "define",
    "declare",
    "deny",
    "design",
    "disable",
    "do",
    "double-check",
    "enable",
    "encode",
    "encrypt",
    "ensure",
    "escape",
    "explicitly",
    "follow",
    "free",
    "generate",
    "handle",
    "identify",
    "implement",
    "include",
    "initialize",
    "keep",
    "limit",
    "lock",
    "make",
    "minimize",
    "never",
    "only",
    "pass",
    "perform",
    "prefer",
    "process",
    "properly",
    "protect",
    "quote",
    "refactor",
    "reject",
    "release",
    "remove",
    "replace",
    "require",
    "restrict",
    "return",
    "run",
    "sanitize",
    "select",
    "separate",
    "set",
    "specify",
    "store",
    "treat",
    "use",
    "utilize",
    "validate",
    "verify",
];

fn is_instruction(sentence: &str) -> bool {
    let mut lower = sentence.to_lowercase();
    for lead in LEAD_INS {
        if let Some(rest) = lower.strip_prefix(lead) {
            lower = rest.to_owned();
            break;
        }
    }
    let first_word: String = lower
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == '-')
        .collect();
    INSTRUCTION_VERBS.contains(&first_word.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written catalog: 2 inherits mitigations from its primary
    /// parent 1; 3 is deprecated; 10 is a category.
    const SNIPPET: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Weakness_Catalog Name="CWE" Version="9.9" xmlns="http://cwe.mitre.org/cwe-7" xmlns:xhtml="http://www.w3.org/1999/xhtml">
  <Weaknesses>
    <Weakness ID="1" Name="Parent  Weakness" Abstraction="Class" Structure="Simple" Status="Draft">
      <Description>The product mixes data and code.</Description>
      <Extended_Description>
        <xhtml:p>This lets data become code [REF-1]. Attackers like that.</xhtml:p>
        <xhtml:p>A third sentence that should not fit because the budget is already spent on the sentences before it, and this one keeps going and going for a long while, far beyond anything reasonable, until it is clearly longer than the four hundred characters that a cause may take when combined with everything above it in the same field.</xhtml:p>
      </Extended_Description>
      <Applicable_Platforms>
        <Language Name="Java" Prevalence="Often"/>
        <Language Name="C" Prevalence="Often"/>
      </Applicable_Platforms>
      <Potential_Mitigations>
        <Mitigation>
          <Phase>Operation</Phase>
          <Description>Use an application firewall.</Description>
        </Mitigation>
        <Mitigation>
          <Phase>Architecture and Design</Phase>
          <Strategy>Parameterization</Strategy>
          <Description>
            <xhtml:p>If available, use structured mechanisms that separate data and code. These mechanisms may do the quoting for you.</xhtml:p>
            <xhtml:p>Process SQL queries using prepared statements [REF-867].</xhtml:p>
          </Description>
        </Mitigation>
        <Mitigation>
          <Phase>Implementation</Phase>
          <Description>Assume all input is malicious. It usually is.</Description>
        </Mitigation>
        <Mitigation>
          <Phase>Implementation</Phase>
          <Description>This is a complex topic. See the book X for a good discussion.</Description>
        </Mitigation>
        <Mitigation>
          <Phase>Implementation</Phase>
          <Description>Assume   all input is malicious. It usually is.</Description>
        </Mitigation>
        <Mitigation>
          <Phase>Implementation</Phase>
          <Description>Escape everything by hand.</Description>
          <Effectiveness>Discouraged Common Practice</Effectiveness>
        </Mitigation>
        <Mitigation>
          <Phase>Implementation</Phase>
          <Description>Validate lengths with a strict allowlist.</Description>
          <Effectiveness>High</Effectiveness>
        </Mitigation>
        <Mitigation>
          <Phase>Testing</Phase>
          <Description>Fuzz it.</Description>
        </Mitigation>
        <Mitigation>
          <Phase>Requirements</Phase>
          <Description>Pick a safe language.</Description>
        </Mitigation>
      </Potential_Mitigations>
    </Weakness>
    <Weakness ID="2" Name="Child" Abstraction="Base" Structure="Simple" Status="Incomplete">
      <Description>The child does it too.</Description>
      <Related_Weaknesses>
        <Related_Weakness Nature="ChildOf" CWE_ID="5" View_ID="1000"/>
        <Related_Weakness Nature="ChildOf" CWE_ID="1" View_ID="1000" Ordinal="Primary"/>
        <Related_Weakness Nature="ChildOf" CWE_ID="7" View_ID="699" Ordinal="Primary"/>
        <Related_Weakness Nature="CanPrecede" CWE_ID="8" View_ID="1000"/>
      </Related_Weaknesses>
      <Applicable_Platforms>
        <Language Name="C" Prevalence="Often"/>
        <Language Class="Not Language-Specific" Prevalence="Often"/>
      </Applicable_Platforms>
      <Demonstrative_Examples>
        <Demonstrative_Example>
          <Intro_Text>This code builds a query.</Intro_Text>
          <Example_Code Nature="Bad" Language="Java"><xhtml:div>q = "a" + b;</xhtml:div></Example_Code>
          <Body_Text>It is injectable. A better approach is:</Body_Text>
          <Example_Code Nature="Good"><xhtml:div>ps = prepare("?");<xhtml:br/>ps.bind(b);</xhtml:div></Example_Code>
        </Demonstrative_Example>
      </Demonstrative_Examples>
    </Weakness>
    <Weakness ID="3" Name="Old" Abstraction="Base" Structure="Simple" Status="Deprecated">
      <Description>Gone.</Description>
    </Weakness>
  </Weaknesses>
  <Categories>
    <Category ID="10" Name="A category" Status="Draft">
      <Relationships>
        <Has_Member CWE_ID="2" View_ID="22"/>
        <Has_Member CWE_ID="3" View_ID="22"/>
        <Has_Member CWE_ID="11" View_ID="22"/>
      </Relationships>
    </Category>
    <Category ID="11" Name="A nested category" Status="Draft">
      <Relationships>
        <Has_Member CWE_ID="1" View_ID="22"/>
      </Relationships>
    </Category>
  </Categories>
  <Views>
    <View ID="20" Name="A list" Type="Explicit" Status="Draft">
      <Members>
        <Has_Member CWE_ID="2" View_ID="20"/>
        <Has_Member CWE_ID="1" View_ID="20"/>
      </Members>
    </View>
    <View ID="21" Name="A graph" Type="Graph" Status="Draft"/>
    <View ID="22" Name="A top ten" Type="Graph" Status="Draft">
      <Members>
        <Has_Member CWE_ID="10" View_ID="22"/>
      </Members>
    </View>
  </Views>
</Weakness_Catalog>"#;

    fn snippet() -> Catalog {
        Catalog::parse(SNIPPET, Path::new("snippet.xml")).unwrap()
    }

    #[test]
    fn parses_weaknesses_hierarchy_and_platforms() {
        let catalog = snippet();
        assert_eq!(catalog.version, "9.9");
        assert_eq!(
            catalog.weaknesses.keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(catalog.deprecated, BTreeSet::from([3]));
        assert_eq!(catalog.non_weaknesses, BTreeSet::from([10, 11, 20, 21, 22]));
        assert_eq!(
            catalog.view_members,
            BTreeMap::from([
                (20, BTreeSet::from([1, 2])),
                (21, BTreeSet::new()),
                (22, BTreeSet::from([10]))
            ])
        );
        assert_eq!(catalog.view_weaknesses(20), Some(BTreeSet::from([1, 2])));
        assert_eq!(
            catalog.view_weaknesses(22),
            Some(BTreeSet::from([2])),
            "through category 10; not deprecated 3, not nested category 11"
        );
        assert_eq!(catalog.view_weaknesses(99), None);
        let parent = &catalog.weaknesses[&1];
        assert_eq!(parent.name, "Parent Weakness");
        assert_eq!(parent.languages, ["c", "java"]);
        let child = &catalog.weaknesses[&2];
        assert_eq!(
            child.parents,
            [1, 5],
            "primary first, view 1000 ChildOf only"
        );
        assert!(child.languages.is_empty(), "Not Language-Specific wins");
    }

    #[test]
    fn guideline_interleaves_implementation_and_design_and_skips_pointers() {
        let catalog = snippet();
        let guideline = compose_guideline(&catalog.weaknesses[&1].mitigations);
        assert_eq!(
            guideline,
            "- Validate lengths with a strict allowlist.\n\
             - If available, use structured mechanisms that separate data and code. \
             Process SQL queries using prepared statements.\n\
             - Assume all input is malicious. It usually is.\n\
             - Use an application firewall.\n\
             - Fuzz it."
        );
    }

    #[test]
    fn guideline_falls_back_to_the_nearest_parent() {
        let catalog = snippet();
        assert!(compose_guideline(&catalog.weaknesses[&2].mitigations).is_empty());
        assert_eq!(catalog.guideline(2), catalog.guideline(1));
        assert!(!catalog.guideline(2).is_empty());
    }

    #[test]
    fn long_rules_are_cut_at_a_sentence_boundary() {
        let long = "Use a vetted library or framework that does not allow this weakness to occur or provides constructs that make this weakness easier to avoid.";
        let m = Mitigation {
            phases: vec!["Implementation".into()],
            effectiveness: None,
            blocks: vec![format!(
                "{long} For example, consider using persistence layers such as Hibernate or Enterprise Java Beans, which can provide significant protection."
            )],
        };
        assert_eq!(compose_guideline(&[m]), format!("- {long}"));
    }

    #[test]
    fn list_lead_ins_are_not_rules() {
        let m = Mitigation {
            phases: vec!["Implementation".into()],
            effectiveness: None,
            blocks: vec![
                "Mitigation requires that the system either:".into(),
                "- Throttle requests".into(),
                "- deny further access for a while, or".into(),
                "- Drop the connection".into(),
            ],
        };
        let paragraph_too = Mitigation {
            blocks: [m.blocks.clone(), vec!["Limits help. Nothing else.".into()]].concat(),
            ..m.clone()
        };
        assert_eq!(
            compose_guideline(std::slice::from_ref(&m)),
            "- Throttle requests. Drop the connection."
        );
        assert_eq!(
            compose_guideline(&[paragraph_too]),
            "- Limits help. Nothing else."
        );
        let only_fragments = Mitigation {
            blocks: vec![
                "The system must either:".into(),
                "- recognize the attack, or".into(),
                "- throttle requests.".into(),
                "The first of these is hard.".into(),
            ],
            ..m
        };
        assert_eq!(compose_guideline(&[only_fragments]), "");
    }

    #[test]
    fn advice_paragraphs_are_not_code_examples() {
        assert!(is_prose(
            "If an algorithm expects a random number, provide one.\nDo not provide a pseudo-random value."
        ));
        assert!(is_prose(
            "Buckets could have been protected by blocking public access. [REF-1297]"
        ));
        assert!(!is_prose(
            "if (pointer1 != NULL) {\n    /* make use of pointer1 */\n}"
        ));
        assert!(!is_prose("gsutil iam ch -d allUsers gs://BUCKET_NAME"));
    }

    #[test]
    fn cause_is_description_plus_opening_of_extended_description() {
        let catalog = snippet();
        assert_eq!(
            compose_cause(&catalog.weaknesses[&1]),
            "The product mixes data and code. This lets data become code. Attackers like that."
        );
    }

    #[test]
    fn good_examples_borrow_the_language_and_explain_the_fix() {
        let catalog = snippet();
        let examples = &catalog.weaknesses[&2].good_examples;
        assert_eq!(examples.len(), 1);
        assert_eq!(examples[0].language, "java");
        assert_eq!(examples[0].code, "ps = prepare(\"?\");\nps.bind(b);");
        assert_eq!(
            examples[0].intro,
            "This code builds a query. It is injectable. A better approach is:"
        );
    }
}
