//! The Avro specification's schema-resolution rules: can a reader with schema R read data
//! written with schema W, and if not, where and why.

use std::collections::HashSet;
use std::fmt;

use crate::schema::{AvroSchema, Logical, NamedKind, NamedType, Node, Primitive};

/// Which resolution rule a reader/writer pair breaks. The names are those of the Avro Java
/// library's `SchemaIncompatibilityType`, which Confluent's messages use too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The reader's type cannot read the writer's type (and no promotion applies).
    TypeMismatch,
    /// Named types (record, enum, fixed) differ in name and no reader alias matches.
    NameMismatch,
    /// A reader field is absent from the writer and has no default.
    ReaderFieldMissingDefaultValue,
    /// The writer's enum has symbols the reader's lacks, and the reader's enum has no default.
    MissingEnumSymbols,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
    /// A branch of the writer's union cannot be read by any branch of the reader's union.
    MissingUnionBranch,
    /// Decimals whose precision or scale differ.
    DecimalMismatch,
}

impl Rule {
    /// The rule's code, e.g. `READER_FIELD_MISSING_DEFAULT_VALUE`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::TypeMismatch => "TYPE_MISMATCH",
            Rule::NameMismatch => "NAME_MISMATCH",
            Rule::ReaderFieldMissingDefaultValue => "READER_FIELD_MISSING_DEFAULT_VALUE",
            Rule::MissingEnumSymbols => "MISSING_ENUM_SYMBOLS",
            Rule::FixedSizeMismatch => "FIXED_SIZE_MISMATCH",
            Rule::MissingUnionBranch => "MISSING_UNION_BRANCH",
            Rule::DecimalMismatch => "DECIMAL_MISMATCH",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where, e.g. `OrderCreated.items[].quantity` (`[]` array items, `{}` map values).
    pub path: String,
    pub rule: Rule,
    /// The reader's type at `path`, e.g. `int` or `record orderflow.events.Money`.
    pub reader: String,
    /// The writer's type at `path`.
    pub writer: String,
    /// A sentence saying what is wrong.
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (reader: {}, writer: {}) [{}]",
            self.path, self.message, self.reader, self.writer, self.rule
        )
    }
}

/// Every reason `reader` cannot read data written with `writer`; empty when it can.
pub fn incompatibilities(reader: &AvroSchema, writer: &AvroSchema) -> Vec<Incompatibility> {
    let mut checker = Checker {
        reader,
        writer,
        assumed: HashSet::new(),
        found: Vec::new(),
    };
    let path = match reader.root() {
        Node::Named(i) => reader.named(*i).name.name.clone(),
        _ => "$".to_owned(),
    };
    checker.check(reader.root(), writer.root(), &path);
    checker.found
}

/// True when `reader` can read every datum written with `writer`.
pub fn can_read(reader: &AvroSchema, writer: &AvroSchema) -> bool {
    incompatibilities(reader, writer).is_empty()
}

struct Checker<'a> {
    reader: &'a AvroSchema,
    writer: &'a AvroSchema,
    /// Pairs of named types being (or already) compared: a recursive schema meets the same pair
    /// again, and assuming compatibility there is what ends the walk.
    assumed: HashSet<(usize, usize)>,
    found: Vec<Incompatibility>,
}

impl Checker<'_> {
    fn report(&mut self, path: &str, rule: Rule, r: &Node, w: &Node, message: String) {
        self.found.push(Incompatibility {
            path: path.to_owned(),
            rule,
            reader: self.reader.describe(r),
            writer: self.writer.describe(w),
            message,
        });
    }

    /// The findings of checking `r` against `w`, without recording them.
    fn trial(&mut self, r: &Node, w: &Node, path: &str) -> Vec<Incompatibility> {
        let saved_found = std::mem::take(&mut self.found);
        let saved_assumed = self.assumed.clone();
        self.check(r, w, path);
        self.assumed = saved_assumed;
        std::mem::replace(&mut self.found, saved_found)
    }

    fn check(&mut self, r: &Node, w: &Node, path: &str) {
        match (r, w) {
            (Node::Union(_), Node::Union(writer_branches)) => {
                for branch in writer_branches {
                    self.union_reads(r, branch, path);
                }
            }
            (Node::Union(_), _) => self.union_reads(r, w, path),
            (_, Node::Union(writer_branches)) => {
                // Every branch the writer may have chosen must be readable by the reader's type.
                for branch in writer_branches {
                    if self.trial(r, branch, path).is_empty() {
                        continue;
                    }
                    let message = format!(
                        "the writer's union branch {} cannot be read as the reader's {}",
                        self.writer.describe(branch),
                        self.reader.describe(r)
                    );
                    self.report(path, Rule::MissingUnionBranch, r, w, message);
                }
            }
            (Node::Primitive(rp, rl), Node::Primitive(wp, wl)) => {
                if !promotes(*wp, *rp) {
                    let message = format!("a {} cannot be read as a {}", wp.name(), rp.name());
                    self.report(path, Rule::TypeMismatch, r, w, message);
                } else {
                    self.decimals(rl.as_ref(), wl.as_ref(), r, w, path);
                }
            }
            (Node::Array(ri), Node::Array(wi)) => self.check(ri, wi, &format!("{path}[]")),
            (Node::Map(rv), Node::Map(wv)) => self.check(rv, wv, &format!("{path}{{}}")),
            (Node::Named(ri), Node::Named(wi)) => self.named(*ri, *wi, r, w, path),
            _ => {
                let message = format!(
                    "a {} cannot be read as a {}",
                    self.writer.describe(w),
                    self.reader.describe(r)
                );
                self.report(path, Rule::TypeMismatch, r, w, message);
            }
        }
    }

    /// A reader union reads a (non-union) writer type when some branch reads it. When none
    /// does, the branch the resolver would have picked (same kind and name) explains why best.
    fn union_reads(&mut self, r: &Node, w: &Node, path: &str) {
        let Node::Union(reader_branches) = r else {
            unreachable!("union_reads is only called with a reader union")
        };
        let mut closest = None;
        for branch in reader_branches {
            let findings = self.trial(branch, w, path);
            if findings.is_empty() {
                // Commit the assumptions made on the way, as a recursive walk may rely on them.
                self.check(branch, w, path);
                return;
            }
            if closest.is_none() && self.same_kind(branch, w) {
                closest = Some(findings);
            }
        }
        match closest {
            Some(findings) => self.found.extend(findings),
            None => {
                let message = format!(
                    "the writer's {} matches no branch of the reader's union",
                    self.writer.describe(w)
                );
                self.report(path, Rule::MissingUnionBranch, r, w, message);
            }
        }
    }

    fn same_kind(&self, r: &Node, w: &Node) -> bool {
        match (r, w) {
            (Node::Primitive(rp, _), Node::Primitive(wp, _)) => promotes(*wp, *rp),
            (Node::Array(_), Node::Array(_)) | (Node::Map(_), Node::Map(_)) => true,
            (Node::Named(ri), Node::Named(wi)) => {
                let (rt, wt) = (self.reader.named(*ri), self.writer.named(*wi));
                rt.kind.keyword() == wt.kind.keyword() && names_match(rt, wt)
            }
            _ => false,
        }
    }

    fn decimals(
        &mut self,
        rl: Option<&Logical>,
        wl: Option<&Logical>,
        r: &Node,
        w: &Node,
        path: &str,
    ) {
        if let (Some(rl), Some(wl)) = (rl, wl)
            && rl.name == "decimal"
            && wl.name == "decimal"
            && (rl.precision != wl.precision || rl.scale.unwrap_or(0) != wl.scale.unwrap_or(0))
        {
            let message = format!(
                "decimal({}, {}) cannot be read as decimal({}, {})",
                wl.precision.unwrap_or(0),
                wl.scale.unwrap_or(0),
                rl.precision.unwrap_or(0),
                rl.scale.unwrap_or(0)
            );
            self.report(path, Rule::DecimalMismatch, r, w, message);
        }
    }

    fn named(&mut self, ri: usize, wi: usize, r: &Node, w: &Node, path: &str) {
        let (rt, wt) = (self.reader.named(ri), self.writer.named(wi));
        if rt.kind.keyword() != wt.kind.keyword() {
            let message = format!(
                "a {} cannot be read as a {}",
                wt.kind.keyword(),
                rt.kind.keyword()
            );
            self.report(path, Rule::TypeMismatch, r, w, message);
            return;
        }
        if !names_match(rt, wt) {
            let message = format!(
                "the reader's {} '{}' does not match the writer's '{}' (names differ and no reader alias matches)",
                rt.kind.keyword(),
                rt.name.full(),
                wt.name.full()
            );
            self.report(path, Rule::NameMismatch, r, w, message);
            return;
        }
        if !self.assumed.insert((ri, wi)) {
            return;
        }
        match (&rt.kind, &wt.kind) {
            (NamedKind::Record(reader_fields), NamedKind::Record(writer_fields)) => {
                for rf in reader_fields {
                    let field_path = format!("{path}.{}", rf.name);
                    let writer_field =
                        writer_fields
                            .iter()
                            .find(|wf| wf.name == rf.name)
                            .or_else(|| {
                                writer_fields
                                    .iter()
                                    .find(|wf| rf.aliases.contains(&wf.name))
                            });
                    match writer_field {
                        Some(wf) => self.check(&rf.schema, &wf.schema, &field_path),
                        None if rf.default.is_some() => {}
                        None => {
                            let message = format!(
                                "field '{}' is missing from the writer's schema and has no default in the reader's",
                                rf.name
                            );
                            self.found.push(Incompatibility {
                                path: field_path,
                                rule: Rule::ReaderFieldMissingDefaultValue,
                                reader: self.reader.describe(&rf.schema),
                                writer: format!("no field '{}'", rf.name),
                                message,
                            });
                        }
                    }
                }
            }
            (
                NamedKind::Enum {
                    symbols: reader_symbols,
                    default,
                },
                NamedKind::Enum {
                    symbols: writer_symbols,
                    ..
                },
            ) => {
                let missing: Vec<&str> = writer_symbols
                    .iter()
                    .filter(|s| !reader_symbols.contains(s))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && default.is_none() {
                    let message = format!(
                        "the writer's symbols {} are missing from the reader's enum '{}', which has no default",
                        missing.join(", "),
                        rt.name.full()
                    );
                    self.report(path, Rule::MissingEnumSymbols, r, w, message);
                }
            }
            (
                NamedKind::Fixed {
                    size: rs,
                    logical: rl,
                },
                NamedKind::Fixed {
                    size: ws,
                    logical: wl,
                },
            ) => {
                if rs != ws {
                    let message = format!(
                        "the reader's fixed '{}' has size {rs}, the writer's has size {ws}",
                        rt.name.full()
                    );
                    self.report(path, Rule::FixedSizeMismatch, r, w, message);
                } else {
                    self.decimals(rl.as_ref(), wl.as_ref(), r, w, path);
                }
            }
            _ => unreachable!("kinds were compared above"),
        }
    }
}

/// Whether a value written as `writer` can be read as `reader` (identity or promotion).
fn promotes(writer: Primitive, reader: Primitive) -> bool {
    use Primitive::*;
    writer == reader
        || matches!(
            (writer, reader),
            (Int, Long | Float | Double)
                | (Long, Float | Double)
                | (Float, Double)
                | (String, Bytes)
                | (Bytes, String)
        )
}

/// Named types match on their unqualified names (as Avro's Java implementation does), or when
/// one of the reader's aliases names the writer's type. An alias is a full name: one written
/// without a namespace was resolved relative to the reader type's namespace when parsed, as
/// the specification says, so `"aliases": ["R"]` on a type in the null namespace does not
/// name `b.R`.
fn names_match(reader: &NamedType, writer: &NamedType) -> bool {
    reader.name.name == writer.name.name
        || reader
            .aliases
            .iter()
            .any(|a| a.full() == writer.name.full())
}
