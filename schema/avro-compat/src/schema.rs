//! The Avro schema model: parsing with validation, the normalized form used for identity and
//! the Parsing Canonical Form.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// Why a schema text is not a valid Avro schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Avro schema: {0}")]
pub struct SchemaError(pub String);

fn invalid(message: impl Into<String>) -> SchemaError {
    SchemaError(message.into())
}

/// The eight primitive types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Primitive {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

impl Primitive {
    fn from_name(name: &str) -> Option<Primitive> {
        Some(match name {
            "null" => Primitive::Null,
            "boolean" => Primitive::Boolean,
            "int" => Primitive::Int,
            "long" => Primitive::Long,
            "float" => Primitive::Float,
            "double" => Primitive::Double,
            "bytes" => Primitive::Bytes,
            "string" => Primitive::String,
            _ => return None,
        })
    }

    /// The type's name as written in a schema.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Null => "null",
            Primitive::Boolean => "boolean",
            Primitive::Int => "int",
            Primitive::Long => "long",
            Primitive::Float => "float",
            Primitive::Double => "double",
            Primitive::Bytes => "bytes",
            Primitive::String => "string",
        }
    }
}

/// A logical type annotation (`uuid`, `timestamp-millis`, `decimal`...). Unknown logical types
/// are kept: they are part of what the schema says even if no reader interprets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logical {
    pub name: String,
    pub precision: Option<u64>,
    pub scale: Option<u64>,
}

/// A fully qualified name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name {
    pub namespace: Option<String>,
    pub name: String,
}

impl Name {
    /// `namespace.name`, or `name` in the null namespace.
    pub fn full(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}.{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One node of a schema. Named types live in `AvroSchema::types` and are referred to by index,
/// which is what makes recursive schemas representable.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Primitive(Primitive, Option<Logical>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Named(usize),
}

/// A record, enum or fixed type.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedType {
    pub name: Name,
    pub aliases: Vec<Name>,
    pub kind: NamedKind,
    /// False for types brought in by a schema reference: the normalized form of the referring
    /// schema names them instead of repeating their definition.
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NamedKind {
    Record(Vec<Field>),
    Enum {
        symbols: Vec<String>,
        default: Option<String>,
    },
    Fixed {
        size: u64,
        logical: Option<Logical>,
    },
}

impl NamedKind {
    /// `record`, `enum` or `fixed`.
    pub fn keyword(&self) -> &'static str {
        match self {
            NamedKind::Record(_) => "record",
            NamedKind::Enum { .. } => "enum",
            NamedKind::Fixed { .. } => "fixed",
        }
    }
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub aliases: Vec<String>,
    pub schema: Node,
    pub default: Option<Value>,
    pub order: Option<String>,
}

/// A parsed, validated Avro schema.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    root: Node,
    types: Vec<NamedType>,
    normalized: String,
}

impl PartialEq for AvroSchema {
    /// Schemas are equal when their normalized forms are.
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for AvroSchema {}

impl AvroSchema {
    /// Parses and validates a schema that refers to no other schema.
    pub fn parse(text: &str) -> Result<AvroSchema, SchemaError> {
        AvroSchema::parse_with_references(text, &[])
    }

    /// Parses a schema whose named types may come from `references`: the texts of the referenced
    /// schemas, dependencies before their dependents.
    pub fn parse_with_references(
        text: &str,
        references: &[&str],
    ) -> Result<AvroSchema, SchemaError> {
        let mut parser = Parser::default();
        for reference in references {
            let json: Value = serde_json::from_str(reference)
                .map_err(|e| invalid(format!("referenced schema is not JSON: {e}")))?;
            parser.local = false;
            parser.parse(&json, None)?;
        }
        let json: Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        parser.local = true;
        let root = parser.parse(&json, None)?;
        // A second opinion from the reference implementation's Rust port catches anything this
        // parser is more lenient about.
        if references.is_empty() {
            apache_avro::Schema::parse_str(text).map_err(|e| invalid(e.to_string()))?;
        } else {
            apache_avro::Schema::parse_str_with_list(text, references.iter().copied())
                .map_err(|e| invalid(e.to_string()))?;
        }
        let mut schema = AvroSchema {
            root,
            types: parser.types,
            normalized: String::new(),
        };
        schema.normalized = Writer::new(&schema, Form::Normalized).write(&schema.root);
        Ok(schema)
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The named type a [`Node::Named`] points at.
    pub fn named(&self, index: usize) -> &NamedType {
        &self.types[index]
    }

    /// The full name of the root type when it is a named type.
    pub fn full_name(&self) -> Option<String> {
        match self.root {
            Node::Named(i) => Some(self.types[i].name.full()),
            _ => None,
        }
    }

    /// The form used for identity: compact JSON with a fixed attribute order, full names, no
    /// `doc` and no custom properties, but with defaults, aliases, enum symbols and logical
    /// types kept, since each of those changes how data is read.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The Avro specification's Parsing Canonical Form (drops defaults, aliases and logical
    /// types, so it is not used for identity).
    pub fn canonical_form(&self) -> String {
        Writer::new(self, Form::Canonical).write(&self.root)
    }

    /// A short description of a node for messages: `string`, `array<int>`, `record a.B`...
    pub fn describe(&self, node: &Node) -> String {
        match node {
            Node::Primitive(p, None) => p.name().to_owned(),
            Node::Primitive(p, Some(l)) => format!("{} ({})", p.name(), l.name),
            Node::Array(items) => format!("array<{}>", self.describe(items)),
            Node::Map(values) => format!("map<{}>", self.describe(values)),
            Node::Union(branches) => {
                let parts: Vec<String> = branches.iter().map(|b| self.describe(b)).collect();
                format!("[{}]", parts.join(", "))
            }
            Node::Named(i) => {
                let t = &self.types[*i];
                format!("{} {}", t.kind.keyword(), t.name.full())
            }
        }
    }
}

#[derive(Default)]
struct Parser {
    types: Vec<NamedType>,
    by_name: HashMap<String, usize>,
    local: bool,
}

impl Parser {
    fn parse(&mut self, json: &Value, namespace: Option<&str>) -> Result<Node, SchemaError> {
        match json {
            Value::String(name) => self.reference(name, namespace),
            Value::Array(branches) => self.union(branches, namespace),
            Value::Object(object) => self.object(object, namespace),
            other => Err(invalid(format!(
                "expected a type name, object or array, found {other}"
            ))),
        }
    }

    fn reference(&self, name: &str, namespace: Option<&str>) -> Result<Node, SchemaError> {
        if let Some(p) = Primitive::from_name(name) {
            return Ok(Node::Primitive(p, None));
        }
        let qualified = match namespace {
            Some(ns) if !name.contains('.') => format!("{ns}.{name}"),
            _ => name.to_owned(),
        };
        self.by_name
            .get(&qualified)
            .or_else(|| self.by_name.get(name))
            .map(|&i| Node::Named(i))
            .ok_or_else(|| invalid(format!("unknown type '{name}'")))
    }

    fn union(&mut self, branches: &[Value], namespace: Option<&str>) -> Result<Node, SchemaError> {
        let mut nodes = Vec::with_capacity(branches.len());
        let mut seen = Vec::new();
        for branch in branches {
            let node = self.parse(branch, namespace)?;
            let key = match &node {
                Node::Union(_) => {
                    return Err(invalid("a union may not directly contain another union"));
                }
                Node::Primitive(p, _) => p.name().to_owned(),
                Node::Array(_) => "array".to_owned(),
                Node::Map(_) => "map".to_owned(),
                Node::Named(i) => self.types[*i].name.full(),
            };
            if seen.contains(&key) {
                return Err(invalid(format!("union contains '{key}' twice")));
            }
            seen.push(key);
            nodes.push(node);
        }
        Ok(Node::Union(nodes))
    }

    fn object(
        &mut self,
        object: &Map<String, Value>,
        namespace: Option<&str>,
    ) -> Result<Node, SchemaError> {
        let type_name = match object.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(nested @ (Value::Object(_) | Value::Array(_))) => {
                return self.parse(nested, namespace);
            }
            Some(other) => return Err(invalid(format!("'type' must be a string, found {other}"))),
            None => return Err(invalid("schema object has no 'type'")),
        };
        match type_name {
            "record" | "error" | "enum" | "fixed" => self.named(type_name, object, namespace),
            "array" => {
                let items = object
                    .get("items")
                    .ok_or_else(|| invalid("array has no 'items'"))?;
                Ok(Node::Array(Box::new(self.parse(items, namespace)?)))
            }
            "map" => {
                let values = object
                    .get("values")
                    .ok_or_else(|| invalid("map has no 'values'"))?;
                Ok(Node::Map(Box::new(self.parse(values, namespace)?)))
            }
            other => match Primitive::from_name(other) {
                Some(p) => Ok(Node::Primitive(p, logical(object)?)),
                // `{"type": "SomeNamedType"}` is a reference written as an object.
                None => self.reference(other, namespace),
            },
        }
    }

    fn named(
        &mut self,
        keyword: &str,
        object: &Map<String, Value>,
        enclosing: Option<&str>,
    ) -> Result<Node, SchemaError> {
        let name = type_name(object, enclosing)?;
        let full = name.full();
        if self.by_name.contains_key(&full) {
            return Err(invalid(format!("type '{full}' is defined twice")));
        }
        let aliases = aliases(object, name.namespace.as_deref())?;
        let index = self.types.len();
        // Registered before the fields are parsed, so a record may refer to itself.
        self.types.push(NamedType {
            name: name.clone(),
            aliases,
            kind: NamedKind::Record(Vec::new()),
            local: self.local,
        });
        self.by_name.insert(full.clone(), index);
        let kind = match keyword {
            "record" | "error" => NamedKind::Record(self.fields(object, &name)?),
            "enum" => enum_kind(object, &full)?,
            _ => {
                let size = object.get("size").and_then(Value::as_u64).ok_or_else(|| {
                    invalid(format!(
                        "fixed '{full}' needs a non-negative integer 'size'"
                    ))
                })?;
                NamedKind::Fixed {
                    size,
                    logical: logical(object)?,
                }
            }
        };
        self.types[index].kind = kind;
        Ok(Node::Named(index))
    }

    fn fields(
        &mut self,
        object: &Map<String, Value>,
        record: &Name,
    ) -> Result<Vec<Field>, SchemaError> {
        let full = record.full();
        let list = object
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(format!("record '{full}' needs a 'fields' array")))?;
        let mut fields: Vec<Field> = Vec::with_capacity(list.len());
        for field in list {
            let field = field
                .as_object()
                .ok_or_else(|| invalid(format!("a field of '{full}' is not an object")))?;
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("a field of '{full}' has no 'name'")))?;
            check_identifier(name)?;
            if fields.iter().any(|f| f.name == name) {
                return Err(invalid(format!(
                    "record '{full}' has two fields named '{name}'"
                )));
            }
            let schema_json = field
                .get("type")
                .ok_or_else(|| invalid(format!("field '{full}.{name}' has no 'type'")))?;
            let schema = self.parse(schema_json, record.namespace.as_deref())?;
            let default = match field.get("default") {
                None => None,
                Some(value) => {
                    let normalized = self.default_value(&schema, value).map_err(|why| {
                        invalid(format!(
                            "default of field '{full}.{name}' is invalid: {why}"
                        ))
                    })?;
                    Some(normalized)
                }
            };
            let aliases = match field.get("aliases") {
                None => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|a| a.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        invalid(format!("aliases of field '{full}.{name}' must be strings"))
                    })?,
                Some(_) => {
                    return Err(invalid(format!(
                        "aliases of field '{full}.{name}' must be an array"
                    )));
                }
            };
            let order = match field.get("order") {
                None => None,
                Some(Value::String(o))
                    if matches!(o.as_str(), "ascending" | "descending" | "ignore") =>
                {
                    (o != "ascending").then(|| o.clone())
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "field '{full}.{name}' has an invalid order {other}"
                    )));
                }
            };
            fields.push(Field {
                name: name.to_owned(),
                aliases,
                schema,
                default,
                order,
            });
        }
        Ok(fields)
    }

    /// Checks a default against its type (a union's default belongs to its first branch, as
    /// the specification says) and returns it in normalized form.
    fn default_value(&self, node: &Node, value: &Value) -> Result<Value, String> {
        let mismatch = || format!("{value} is not a valid {}", self.describe_kind(node));
        match node {
            Node::Primitive(p, _) => match (p, value) {
                (Primitive::Null, Value::Null) => Ok(Value::Null),
                (Primitive::Boolean, Value::Bool(_)) => Ok(value.clone()),
                (Primitive::Int, Value::Number(n))
                    if n.as_i64().is_some_and(|v| i32::try_from(v).is_ok()) =>
                {
                    Ok(value.clone())
                }
                (Primitive::Long, Value::Number(n)) if n.as_i64().is_some() => Ok(value.clone()),
                (Primitive::Float | Primitive::Double, Value::Number(n)) => {
                    let f = n.as_f64().ok_or_else(mismatch)?;
                    Ok(serde_json::Number::from_f64(f)
                        .map(Value::Number)
                        .unwrap_or(Value::Null))
                }
                (Primitive::Float | Primitive::Double, Value::String(s))
                    if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") =>
                {
                    Ok(value.clone())
                }
                (Primitive::Bytes | Primitive::String, Value::String(_)) => Ok(value.clone()),
                _ => Err(mismatch()),
            },
            Node::Array(items) => match value {
                Value::Array(list) => list
                    .iter()
                    .map(|v| self.default_value(items, v))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
                _ => Err(mismatch()),
            },
            Node::Map(values) => match value {
                Value::Object(map) => {
                    let mut out = Map::new();
                    for (k, v) in map {
                        out.insert(k.clone(), self.default_value(values, v)?);
                    }
                    Ok(Value::Object(out))
                }
                _ => Err(mismatch()),
            },
            Node::Union(branches) => match branches.first() {
                Some(first) => self.default_value(first, value),
                None => Err("an empty union has no values".to_owned()),
            },
            Node::Named(i) => match (&self.types[*i].kind, value) {
                (NamedKind::Enum { symbols, .. }, Value::String(s)) if symbols.contains(s) => {
                    Ok(value.clone())
                }
                (NamedKind::Fixed { .. }, Value::String(_)) => Ok(value.clone()),
                (NamedKind::Record(fields), Value::Object(map)) => {
                    let mut out = Map::new();
                    for field in fields {
                        match (map.get(&field.name), &field.default) {
                            (Some(v), _) => {
                                out.insert(
                                    field.name.clone(),
                                    self.default_value(&field.schema, v)?,
                                );
                            }
                            (None, Some(d)) => {
                                out.insert(field.name.clone(), d.clone());
                            }
                            (None, None) => {
                                return Err(format!("field '{}' is missing", field.name));
                            }
                        }
                    }
                    Ok(Value::Object(out))
                }
                _ => Err(mismatch()),
            },
        }
    }

    fn describe_kind(&self, node: &Node) -> String {
        match node {
            Node::Primitive(p, _) => p.name().to_owned(),
            Node::Array(_) => "array".to_owned(),
            Node::Map(_) => "map".to_owned(),
            Node::Union(_) => "union".to_owned(),
            Node::Named(i) => format!(
                "{} {}",
                self.types[*i].kind.keyword(),
                self.types[*i].name.full()
            ),
        }
    }
}

fn check_identifier(name: &str) -> Result<(), SchemaError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!("'{name}' is not a valid Avro name")))
    }
}

fn split_name(raw: &str, namespace: Option<&str>) -> Result<Name, SchemaError> {
    let name = match raw.rsplit_once('.') {
        Some((ns, short)) => Name {
            namespace: (!ns.is_empty()).then(|| ns.to_owned()),
            name: short.to_owned(),
        },
        None => Name {
            namespace: namespace.filter(|ns| !ns.is_empty()).map(str::to_owned),
            name: raw.to_owned(),
        },
    };
    check_identifier(&name.name)?;
    if let Some(ns) = &name.namespace {
        ns.split('.').try_for_each(check_identifier)?;
    }
    Ok(name)
}

fn type_name(object: &Map<String, Value>, enclosing: Option<&str>) -> Result<Name, SchemaError> {
    let raw = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a record, enum or fixed needs a 'name'"))?;
    let namespace = match object.get("namespace") {
        Some(Value::String(ns)) => Some(ns.as_str()),
        Some(Value::Null) | None => enclosing,
        Some(other) => {
            return Err(invalid(format!(
                "namespace must be a string, found {other}"
            )));
        }
    };
    let name = split_name(raw, namespace)?;
    if Primitive::from_name(&name.name).is_some() && name.namespace.is_none() {
        return Err(invalid(format!(
            "'{raw}' is a primitive type and cannot be redefined"
        )));
    }
    Ok(name)
}

fn aliases(object: &Map<String, Value>, namespace: Option<&str>) -> Result<Vec<Name>, SchemaError> {
    match object.get("aliases") {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| match a.as_str() {
                Some(s) => split_name(s, namespace),
                None => Err(invalid("aliases must be strings")),
            })
            .collect(),
        Some(_) => Err(invalid("aliases must be an array")),
    }
}

fn enum_kind(object: &Map<String, Value>, full: &str) -> Result<NamedKind, SchemaError> {
    let list = object
        .get("symbols")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("enum '{full}' needs a 'symbols' array")))?;
    let mut symbols: Vec<String> = Vec::with_capacity(list.len());
    for symbol in list {
        let symbol = symbol
            .as_str()
            .ok_or_else(|| invalid(format!("symbols of enum '{full}' must be strings")))?;
        check_identifier(symbol)?;
        if symbols.iter().any(|s| s == symbol) {
            return Err(invalid(format!(
                "enum '{full}' has the symbol '{symbol}' twice"
            )));
        }
        symbols.push(symbol.to_owned());
    }
    let default = match object.get("default") {
        None => None,
        Some(Value::String(d)) if symbols.contains(d) => Some(d.clone()),
        Some(other) => {
            return Err(invalid(format!(
                "default {other} of enum '{full}' is not one of its symbols"
            )));
        }
    };
    Ok(NamedKind::Enum { symbols, default })
}

fn logical(object: &Map<String, Value>) -> Result<Option<Logical>, SchemaError> {
    let Some(name) = object.get("logicalType") else {
        return Ok(None);
    };
    let name = name
        .as_str()
        .ok_or_else(|| invalid("logicalType must be a string"))?;
    let number = |key: &str| match object.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} of a {name} must be a non-negative integer"))),
    };
    let precision = number("precision")?;
    let scale = number("scale")?;
    if name == "decimal" {
        let p = precision.ok_or_else(|| invalid("a decimal needs a 'precision'"))?;
        if p == 0 || scale.unwrap_or(0) > p {
            return Err(invalid(format!(
                "decimal precision {p} and scale {} are invalid",
                scale.unwrap_or(0)
            )));
        }
    }
    Ok(Some(Logical {
        name: name.to_owned(),
        precision,
        scale,
    }))
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    Normalized,
    Canonical,
}

/// Writes a schema as compact JSON with attributes in a fixed order; each named type is
/// defined at its first occurrence and named afterwards.
struct Writer<'a> {
    schema: &'a AvroSchema,
    form: Form,
    written: Vec<bool>,
}

impl<'a> Writer<'a> {
    fn new(schema: &'a AvroSchema, form: Form) -> Self {
        Writer {
            schema,
            form,
            written: schema.types.iter().map(|t| !t.local).collect(),
        }
    }

    fn write(mut self, node: &Node) -> String {
        let mut out = String::new();
        self.node(node, &mut out);
        out
    }

    fn node(&mut self, node: &Node, out: &mut String) {
        let normalized = self.form == Form::Normalized;
        match node {
            Node::Primitive(p, logical) => match logical {
                Some(l) if normalized => {
                    let _ = write!(out, "{{\"type\":{}", json_str(p.name()));
                    write_logical(l, out);
                    out.push('}');
                }
                _ => out.push_str(&json_str(p.name())),
            },
            Node::Array(items) => {
                out.push_str("{\"type\":\"array\",\"items\":");
                self.node(items, out);
                out.push('}');
            }
            Node::Map(values) => {
                out.push_str("{\"type\":\"map\",\"values\":");
                self.node(values, out);
                out.push('}');
            }
            Node::Union(branches) => {
                out.push('[');
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.node(b, out);
                }
                out.push(']');
            }
            Node::Named(i) => {
                let t = &self.schema.types[*i];
                if self.written[*i] {
                    out.push_str(&json_str(&t.name.full()));
                    return;
                }
                self.written[*i] = true;
                let _ = write!(
                    out,
                    "{{\"name\":{},\"type\":\"{}\"",
                    json_str(&t.name.full()),
                    t.kind.keyword()
                );
                if normalized && !t.aliases.is_empty() {
                    let mut aliases: Vec<String> = t.aliases.iter().map(Name::full).collect();
                    aliases.sort();
                    out.push_str(",\"aliases\":");
                    out.push_str(&Value::from(aliases).to_string());
                }
                match &t.kind {
                    NamedKind::Record(fields) => {
                        out.push_str(",\"fields\":[");
                        for (n, f) in fields.iter().enumerate() {
                            if n > 0 {
                                out.push(',');
                            }
                            let _ = write!(out, "{{\"name\":{},\"type\":", json_str(&f.name));
                            self.node(&f.schema, out);
                            if normalized {
                                if let Some(d) = &f.default {
                                    out.push_str(",\"default\":");
                                    write_sorted(d, out);
                                }
                                if !f.aliases.is_empty() {
                                    let mut aliases = f.aliases.clone();
                                    aliases.sort();
                                    out.push_str(",\"aliases\":");
                                    out.push_str(&Value::from(aliases).to_string());
                                }
                                if let Some(o) = &f.order {
                                    let _ = write!(out, ",\"order\":{}", json_str(o));
                                }
                            }
                            out.push('}');
                        }
                        out.push(']');
                    }
                    NamedKind::Enum { symbols, default } => {
                        out.push_str(",\"symbols\":");
                        out.push_str(&Value::from(symbols.clone()).to_string());
                        if let (true, Some(d)) = (normalized, default) {
                            let _ = write!(out, ",\"default\":{}", json_str(d));
                        }
                    }
                    NamedKind::Fixed { size, logical } => {
                        let _ = write!(out, ",\"size\":{size}");
                        if let (true, Some(l)) = (normalized, logical) {
                            write_logical(l, out);
                        }
                    }
                }
                out.push('}');
            }
        }
    }
}

fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

fn write_logical(l: &Logical, out: &mut String) {
    let _ = write!(out, ",\"logicalType\":{}", json_str(&l.name));
    if let Some(p) = l.precision {
        let _ = write!(out, ",\"precision\":{p}");
    }
    if let Some(s) = l.scale {
        let _ = write!(out, ",\"scale\":{s}");
    }
}

/// JSON with object keys sorted, whatever map order serde_json was built with.
fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json_str(k));
                out.push(':');
                write_sorted(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(list) => {
            out.push('[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
