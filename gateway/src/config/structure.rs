//! Structural check of the config file, before typed deserialization.
//!
//! serde stops at the first unknown field or wrong type. To report every such problem at once,
//! the file is first read into a [`Node`] tree in which every value carries its position, and
//! that tree is checked against the config's own JSON Schema (the one `gateway config-schema`
//! prints, derived from the same types). Only a file that passes is deserialized into
//! `FileConfig`. The checker covers the subset of JSON Schema those types produce: `type`,
//! `properties`, `required`, `additionalProperties: false`, `items`, `$ref`, `anyOf` and
//! `minimum`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use super::validate::Problems;
use super::Pos;

/// A YAML value with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pos: Pos,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
}

// === impl Node ===

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Spanned<Kind> = Spanned::deserialize(d)?;
        Ok(Node {
            pos: Pos {
                line: s.referenced.line(),
                column: s.referenced.column(),
            },
            kind: s.value,
        })
    }
}

impl Node {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Map(_) => "a mapping".into(),
            Kind::Seq(_) => "a list".into(),
            Kind::Str(s) => format!("the string `{}`", s.chars().take(40).collect::<String>()),
            Kind::Int(i) => format!("the number {i}"),
            Kind::Float(f) => format!("the number {f}"),
            Kind::Bool(b) => format!("`{b}`"),
            Kind::Null => "nothing".into(),
        }
    }

    fn key_text(&self) -> String {
        match &self.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) => f.to_string(),
            Kind::Bool(b) => b.to_string(),
            _ => self.describe(),
        }
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Kind, E> {
        Ok(Kind::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Node>()? {
            let v = map.next_value::<Node>()?;
            entries.push((k, v));
        }
        Ok(Kind::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

fn type_name(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "a whole number",
        "number" => "a number",
        "boolean" => "true or false",
        _ => "nothing",
    }
}

/// Whether `node` has JSON type `t`. YAML scalars are untyped text, so any scalar is accepted
/// where a string is expected (the semantic check then says what is wrong with its value).
fn has_type(node: &Node, t: &str) -> bool {
    matches!(
        (&node.kind, t),
        (Kind::Map(_), "object")
            | (Kind::Seq(_), "array")
            | (Kind::Null, "null")
            | (Kind::Str(_) | Kind::Int(_) | Kind::Float(_) | Kind::Bool(_), "string")
            | (Kind::Int(_), "integer" | "number")
            | (Kind::Float(_), "number")
            | (Kind::Bool(_), "boolean")
    )
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut s = schema;
    for _ in 0..8 {
        match s
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            Some(name) => match root.pointer(&format!("/$defs/{name}")) {
                Some(def) => s = def,
                None => break,
            },
            None => break,
        }
    }
    s
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `node` against `schema`, adding every problem found.
fn check(root: &Value, schema: &Value, node: &Node, path: &str, p: &mut Problems) {
    let schema = resolve(root, schema);
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let null_ok = any
            .iter()
            .any(|s| resolve(root, s).get("type").and_then(Value::as_str) == Some("null"));
        if matches!(node.kind, Kind::Null) && null_ok {
            return;
        }
        if let Some(s) = any
            .iter()
            .find(|s| resolve(root, s).get("type").and_then(Value::as_str) != Some("null"))
        {
            check(root, s, node, path, p);
        }
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| has_type(node, t)) {
        let expected: Vec<&str> = types.iter().filter(|t| **t != "null").map(|t| type_name(t)).collect();
        let field = if path.is_empty() { "(top level)" } else { path };
        p.at(
            node.pos,
            field,
            format!("expected {}, found {}", expected.join(" or "), node.describe()),
        );
        return;
    }
    match &node.kind {
        Kind::Map(entries) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, v) in entries {
                let key = k.key_text();
                match props.and_then(|ps| ps.get(&key)) {
                    Some(s) => check(root, s, v, &join(path, &key), p),
                    None if closed => {
                        let mut known: Vec<&str> = props
                            .map(|ps| ps.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        known.sort_unstable();
                        p.at(
                            k.pos,
                            join(path, &key),
                            format!("unknown field `{key}`, expected one of: {}", known.join(", ")),
                        );
                    }
                    None => {}
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !entries.iter().any(|(k, _)| k.key_text() == r) {
                    let at = if path.is_empty() {
                        "(top level)".to_string()
                    } else {
                        path.to_string()
                    };
                    p.at(node.pos, at, format!("missing field `{r}`"));
                }
            }
        }
        Kind::Seq(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(root, item_schema, item, &format!("{path}[{i}]"), p);
                }
            }
        }
        Kind::Int(i) => {
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                if *i < i128::from(min) {
                    p.at(node.pos, path, format!("must be at least {min}"));
                }
            }
        }
        _ => {}
    }
}

/// Checks a parsed file against the config schema.
pub(crate) fn check_file(tree: &Node, p: &mut Problems) {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let schema = SCHEMA.get_or_init(super::json_schema);
    check(schema, schema, tree, "", p);
}
