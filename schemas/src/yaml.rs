//! YAML documents as a tree of nodes that remember their byte spans, parsed by serde-saphyr with
//! budgets that stop alias bombs and deep nesting early.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::Span;

/// Deepest nesting accepted in a manifest (the kinds themselves need fewer than 10 levels).
pub const MAX_DEPTH: usize = 64;
/// Most aliases (`*name`) accepted in one file.
pub const MAX_ALIASES: usize = 1_000;
/// Most nodes accepted in one file, counting every alias expansion.
pub const MAX_NODES: usize = 1_000_000;
/// Most YAML events that anchors may record and aliases replay in one file: stops "billion
/// laughs" early while leaving room for ordinary anchor use.
pub const MAX_ALIAS_EVENTS: usize = 100_000;
/// Most documents accepted in one file.
pub const MAX_DOCUMENTS: usize = 100_000;

/// A YAML node and where it is in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

/// A YAML value (YAML 1.2 core schema with strict booleans).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name for messages ("a string", "a map", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }
}

impl Node {
    /// Looks up a map entry by key, returning (key node, value node).
    pub fn get(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The string value, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON. Map keys that are not strings are spelled as their YAML text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => {
                let mut m = serde_json::Map::new();
                for (k, v) in entries {
                    m.insert(k.key_text(), v.to_json());
                }
                J::Object(m)
            }
        }
    }

    /// This node as a map key.
    pub fn key_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => "<complex key>".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Value> = Spanned::deserialize(d)?;
        let sp = s.referenced.span();
        let offset = sp.byte_offset().unwrap_or(sp.offset()) as usize;
        let len = sp.byte_len().unwrap_or(sp.len()) as usize;
        Ok(Node {
            span: Span { offset, len },
            value: s.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::UInt)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = a.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = a.next_key::<Node>()? {
            let v = a.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

/// A YAML syntax or limit error, with where it happened when known.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub span: Option<Span>,
}

/// Parses every document of a YAML stream. Empty documents are skipped (see [`empty_documents`]).
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_documents: MAX_DOCUMENTS,
            max_recorded_anchor_events: MAX_ALIAS_EVENTS,
        },
    };
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|e| {
        let span = e.location().and_then(|loc| {
            let sp = loc.span();
            let offset = sp.byte_offset()? as usize;
            Some(Span {
                offset,
                len: sp.byte_len().unwrap_or(0) as usize,
            })
        });
        let span = span.or_else(|| {
            let loc = e.location()?;
            let (line, col) = (loc.line() as usize, loc.column() as usize);
            (line > 0).then(|| Span {
                offset: offset_of(text, line, col),
                len: 0,
            })
        });
        SyntaxError {
            message: clean_message(&e.to_string()),
            span,
        }
    })
}

/// Byte offset of a 1-based (line, column-in-chars) position.
fn offset_of(text: &str, line: usize, col: usize) -> usize {
    let mut off = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off
                + l.char_indices()
                    .nth(col.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(l.len());
        }
        off += l.len();
    }
    text.len()
}

/// Strips the "line N column M:" prefix serde-saphyr puts on its messages: we show the location
/// ourselves.
fn clean_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let mut m = match first.find(": ") {
        Some(i) if first[..i].starts_with("line ") => &first[i + 2..],
        _ => first,
    }
    .trim()
    .to_string();
    if let Some(i) = m.rfind(" at line ") {
        m.truncate(i);
    }
    if let Some(rest) = m.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("duplicate key {key:?}");
    }
    if m.contains("recursion limit") || m.contains("Depth") {
        return format!("nesting is deeper than {MAX_DEPTH} levels");
    }
    if let Some(what) = m.strip_prefix("budget breached: ") {
        let what = what.split([' ', '{']).next().unwrap_or(what);
        return budget_message(what);
    }
    if m.contains("replay") && m.contains("limit") {
        return budget_message("RecordedAnchorEvents");
    }
    m
}

/// What a breached parser budget means for the author of the file. The parser names its
/// budgets after its internals (`RecordedAnchorEvents`); those names mean nothing to a user.
fn budget_message(budget: &str) -> String {
    match budget {
        "Aliases" => format!("more than {MAX_ALIASES} aliases (`*name`) in one file"),
        "RecordedAnchorEvents" | "RecordedAnchorBytes" => format!(
            "aliases expand to too much data (over {MAX_ALIAS_EVENTS} values copied from anchors)"
        ),
        "AliasAnchorRatio" => {
            "aliases expand to too much data (too many aliases per anchor)".into()
        }
        "Anchors" => "too many anchors (`&name`) in one file".into(),
        "Nodes" => {
            format!("the file has more than {MAX_NODES} values, counting what aliases expand to")
        }
        "Documents" => format!("more than {MAX_DOCUMENTS} documents in one file"),
        "MergeKeys" => "too many merge keys (`<<`) in one file".into(),
        _ => "the file is too large or too complex to read".into(),
    }
}

/// Byte spans of the `---` markers that open documents with no content (only blank lines and
/// comments) in a stream that has at least one such marker. A leading `---` before the first
/// content does not count.
pub fn empty_documents(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut offset = 0;
    // The marker of the document being scanned, and whether it has content yet.
    let mut current: Option<Span> = None;
    let mut has_content = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let is_marker = body == "---" || body.starts_with("--- ") || body.starts_with("---\t");
        if is_marker {
            if let Some(marker) = current.take()
                && !has_content
            {
                out.push(marker);
            }
            let inline_content = body.len() > 3
                && !body[3..].trim().is_empty()
                && !body[3..].trim_start().starts_with('#');
            current = Some(Span { offset, len: 3 });
            has_content = inline_content;
        } else if body == "..." {
            // document end marker: content before it already counted
        } else {
            let t = body.trim();
            if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
                has_content = true;
                if current.is_none() {}
            }
        }
        offset += line.len();
    }
    if let Some(marker) = current
        && !has_content
    {
        out.push(marker);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let text = "a: 1\nb:\n  c: [x, \"y\"]\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        let (k, v) = docs[0].get("b").unwrap();
        assert_eq!(&text[k.span.offset..k.span.offset + k.span.len], "b");
        let (_, c) = v.get("c").unwrap();
        let Value::Seq(items) = &c.value else {
            panic!("not a seq")
        };
        assert_eq!(
            &text[items[0].span.offset..items[0].span.offset + items[0].span.len],
            "x"
        );
    }

    #[test]
    fn strict_booleans_keep_yes_a_string() {
        let docs = parse_documents("on: yes\nt: true\n").unwrap();
        let (k, v) = &match &docs[0].value {
            Value::Map(e) => e.clone(),
            _ => panic!(),
        }[0];
        assert_eq!(k.value, Value::Str("on".into()));
        assert_eq!(v.value, Value::Str("yes".into()));
    }

    #[test]
    fn empty_document_markers() {
        assert!(empty_documents("---\na: 1\n").is_empty());
        assert_eq!(empty_documents("a: 1\n---\n---\nb: 2\n").len(), 1);
        assert_eq!(empty_documents("a: 1\n---\n# only a comment\n").len(), 1);
        assert!(empty_documents("a: 1\n--- # c\nb: 1\n").is_empty());
    }

    #[test]
    fn budget_messages_do_not_name_parser_internals() {
        for budget in [
            "Aliases",
            "RecordedAnchorEvents",
            "RecordedAnchorBytes",
            "AliasAnchorRatio",
            "Anchors",
            "Nodes",
            "Events",
            "Documents",
            "MergeKeys",
            "ScalarBytes",
            "SomethingNew",
        ] {
            let m = budget_message(budget);
            assert!(!m.contains(budget), "{m}");
            assert!(!m.contains("limit reached"), "{m}");
        }
        let e = parse_documents(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "aliases expand to too much data (over 100000 values copied from anchors)"
        );
    }

    #[test]
    fn syntax_error_has_location() {
        let e = parse_documents("a: [1, 2\n").unwrap_err();
        assert!(e.span.is_some(), "{e:?}");
    }
}
