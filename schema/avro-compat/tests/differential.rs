//! The compatibility checker against a reference: Apache Avro's own implementation of schema
//! resolution (the Python `avro` package's `ReaderWriterCompatibilityChecker`), over thousands
//! of generated reader/writer pairs (`tests/python/avro_reference.py`). Every verdict must
//! agree, except where the reference contradicts the Avro specification; those cases are
//! recognised precisely, follow the specification here, and are documented in
//! docs/registry.md with the specification's sentence (which this test checks is there).

use std::collections::BTreeMap;
use std::path::Path;

use orderflow_avro_compat::{AvroSchema, Rule, incompatibilities};
use serde_json::Value;

/// A way the reference departs from the specification, and the sentence it departs from.
struct Deviation {
    name: &'static str,
    spec: &'static str,
}

const DECIMAL: Deviation = Deviation {
    name: "decimal precision and scale ignored by the reference",
    spec: "For the purposes of schema resolution, two schemas that are decimal logical types match if their scales and precisions match.",
};

const RELATIVE_ALIAS: Deviation = Deviation {
    name: "aliases relative to the namespace not resolved by the reference",
    spec: "A type alias may be specified either as a fully namespace-qualified, or relative to the namespace of the name it is an alias for.",
};

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn parse(value: &Value) -> AvroSchema {
    AvroSchema::parse(&value.to_string())
        .unwrap_or_else(|e| panic!("the generator made a schema this crate refuses: {e}\n{value}"))
}

#[test]
fn verdicts_agree_with_apache_avro_except_where_it_contradicts_the_specification() {
    let python = std::env::var("ORDERFLOW_PYTHON").expect(
        "ORDERFLOW_PYTHON is not set: ./orderflow test sets up the virtualenv with Apache Avro's Python library",
    );
    let output = std::process::Command::new(python)
        .arg(repository().join("tests/python/avro_reference.py"))
        .output()
        .expect("run tests/python/avro_reference.py");
    assert!(
        output.status.success(),
        "the reference generator failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut pairs = 0;
    let mut agreements = 0;
    let mut deviations: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_case: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let pair: Value = serde_json::from_str(line).unwrap();
        let (reader, writer) = (parse(&pair["reader"]), parse(&pair["writer"]));
        let reference = pair["reference"].as_bool().unwrap();
        let found = incompatibilities(&reader, &writer);
        let ours = found.is_empty();
        pairs += 1;
        let case = pair["case"].as_str().unwrap().to_owned();
        let entry = by_case.entry(case).or_default();
        entry.0 += 1;
        if ours == reference {
            agreements += 1;
            entry.1 += 1;
            continue;
        }
        let deviation = if reference && found.iter().all(|i| i.rule == Rule::DecimalMismatch) {
            Some(&DECIMAL)
        } else if !reference && ours && pair["reference_aliases_qualified"] == Value::Bool(true) {
            Some(&RELATIVE_ALIAS)
        } else {
            None
        };
        match deviation {
            Some(d) => *deviations.entry(d.name).or_default() += 1,
            None => unexplained.push(format!(
                "case {}: reference says {reference}, we say {ours} {found:?}\n  reader: {}\n  writer: {}",
                pair["case"], pair["reader"], pair["writer"]
            )),
        }
    }

    println!("{pairs} pairs, {agreements} agreements with Apache Avro, deviations: {deviations:?}");
    for (case, (n, agreed)) in &by_case {
        println!("  {case}: {n} pairs, {agreed} agree");
    }
    assert!(pairs >= 3000, "only {pairs} pairs were generated");
    assert!(
        unexplained.is_empty(),
        "{} verdicts differ from Apache Avro's without a documented reason:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    let docs = std::fs::read_to_string(repository().join("docs/registry.md")).unwrap();
    for deviation in [&DECIMAL, &RELATIVE_ALIAS] {
        assert!(
            deviations.contains_key(deviation.name),
            "the generator no longer produces a pair showing '{}'",
            deviation.name
        );
        assert!(
            docs.contains(deviation.spec),
            "docs/registry.md does not quote the specification for '{}': {}",
            deviation.name,
            deviation.spec
        );
    }
}
