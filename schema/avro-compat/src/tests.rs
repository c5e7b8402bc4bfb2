//! Unit tests: parsing, identity, every resolution rule and every compatibility level.

use crate::*;

fn schema(text: &str) -> AvroSchema {
    AvroSchema::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A record `T` in namespace `ns` with the given field JSON.
fn record(fields: &str) -> AvroSchema {
    schema(&format!(
        r#"{{"type":"record","name":"T","namespace":"ns","fields":[{fields}]}}"#
    ))
}

fn rules(reader: &AvroSchema, writer: &AvroSchema) -> Vec<(String, Rule)> {
    incompatibilities(reader, writer)
        .into_iter()
        .map(|i| (i.path, i.rule))
        .collect()
}

// ---- parsing ----

#[test]
fn parses_the_real_event_schemas() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
    for file in [
        "orders/OrderCreated/v1.avsc",
        "order-status/OrderStatusChanged/v1.avsc",
        "payments/PaymentProcessed/v1.avsc",
        "payments/PaymentProcessed/v2.avsc",
        "payments/PaymentRefunded/v1.avsc",
        "inventory/InventoryUpdated/v1.avsc",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let parsed = AvroSchema::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            parsed.full_name().unwrap().starts_with("orderflow.events."),
            "{file}"
        );
    }
}

#[test]
fn rejects_invalid_schemas_with_a_reason() {
    let cases = [
        ("not json", "not JSON"),
        (r#"{"type":"strin"}"#, "unknown type 'strin'"),
        (r#"{"type":"record","name":"R"}"#, "'fields'"),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"long"}]}"#,
            "two fields named 'a'",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}"#,
            "default of field 'R.a'",
        ),
        (
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":["null","int"],"default":1}]}"#,
            "default of field 'R.a'",
        ),
        (
            r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
            "symbol 'A' twice",
        ),
        (
            r#"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#,
            "not one of its symbols",
        ),
        (r#"["null","null"]"#, "twice"),
        (r#"["null",["int"]]"#, "another union"),
        (r#"{"type":"fixed","name":"F"}"#, "size"),
        (
            r#"{"type":"record","name":"1R","fields":[]}"#,
            "not a valid Avro name",
        ),
        (r#"{"type":"array"}"#, "items"),
        (
            r#"{"type":"bytes","logicalType":"decimal","precision":2,"scale":3}"#,
            "decimal",
        ),
    ];
    for (text, expected) in cases {
        let error = AvroSchema::parse(text).expect_err(text).to_string();
        assert!(
            error.contains(expected),
            "{text}: got '{error}', expected it to mention '{expected}'"
        );
    }
}

#[test]
fn recursive_records_parse_and_resolve() {
    let list = r#"{"type":"record","name":"Node","fields":[{"name":"value","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
    let a = schema(list);
    let b = schema(&list.replace(r#""type":"int""#, r#""type":"long""#));
    assert!(can_read(&b, &a));
    assert_eq!(
        rules(&a, &b),
        vec![("Node.value".to_owned(), Rule::TypeMismatch)]
    );
}

// ---- identity ----

#[test]
fn normalized_form_ignores_whitespace_order_doc_and_name_spelling() {
    let a = schema(
        r#"{"type":"record","name":"T","namespace":"ns","doc":"x","fields":[{"name":"m","type":{"type":"record","name":"M","fields":[{"name":"v","type":"int"}]}},{"name":"n","type":"M"}]}"#,
    );
    let b = schema(
        r#"{
        "fields": [
          {"type": {"fields": [{"type": "int", "name": "v", "doc": "value"}], "name": "ns.M", "type": "record"}, "name": "m"},
          {"name": "n", "type": "ns.M"}
        ],
        "name": "ns.T", "type": "record"
    }"#,
    );
    assert_eq!(a.normalized(), b.normalized());
    assert_eq!(a, b);
}

#[test]
fn normalized_form_keeps_defaults_aliases_symbols_and_logical_types() {
    let base = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int","default":1}]}"#;
    let variants = [
        r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int","default":2}]}"#,
        r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int","default":1,"aliases":["b"]}]}"#,
        r#"{"type":"record","name":"T","aliases":["U"],"fields":[{"name":"a","type":"int","default":1}]}"#,
        r#"{"type":"record","name":"T","fields":[{"name":"a","type":{"type":"int","logicalType":"date"},"default":1}]}"#,
    ];
    let base = schema(base);
    for v in variants {
        let other = schema(v);
        assert_ne!(base.normalized(), other.normalized(), "{v}");
        // The canonical form drops all of these.
        assert_eq!(base.canonical_form(), other.canonical_form(), "{v}");
    }
    let e1 = schema(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
    let e2 = schema(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#);
    assert_ne!(e1.normalized(), e2.normalized());
}

#[test]
fn canonical_form_follows_the_specification() {
    let s = schema(
        r#"{"namespace":"ns","type":"record","name":"T","doc":"d","fields":[{"name":"a","type":{"type":"string","logicalType":"uuid"},"default":"00000000-0000-0000-0000-000000000000"},{"name":"b","type":{"type":"array","items":"long"}}]}"#,
    );
    assert_eq!(
        s.canonical_form(),
        r#"{"name":"ns.T","type":"record","fields":[{"name":"a","type":"string"},{"name":"b","type":{"type":"array","items":"long"}}]}"#
    );
}

// ---- rules ----

#[test]
fn identical_schemas_are_compatible() {
    let s = record(r#"{"name":"a","type":"int"}"#);
    assert!(incompatibilities(&s, &s).is_empty());
}

#[test]
fn numeric_and_string_promotions() {
    let allowed = [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ];
    for (w, r) in allowed {
        let writer = record(&format!(r#"{{"name":"a","type":"{w}"}}"#));
        let reader = record(&format!(r#"{{"name":"a","type":"{r}"}}"#));
        assert!(can_read(&reader, &writer), "{w} -> {r} should be allowed");
    }
    for (w, r) in [
        ("long", "int"),
        ("double", "float"),
        ("float", "long"),
        ("string", "int"),
        ("boolean", "int"),
    ] {
        let writer = record(&format!(r#"{{"name":"a","type":"{w}"}}"#));
        let reader = record(&format!(r#"{{"name":"a","type":"{r}"}}"#));
        let found = incompatibilities(&reader, &writer);
        assert_eq!(found.len(), 1, "{w} -> {r}");
        assert_eq!(found[0].rule, Rule::TypeMismatch);
        assert_eq!(found[0].path, "T.a");
        assert_eq!((found[0].reader.as_str(), found[0].writer.as_str()), (r, w));
    }
}

#[test]
fn reader_field_missing_in_writer_needs_a_default() {
    let writer = record(r#"{"name":"a","type":"int"}"#);
    let without = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string"}"#);
    let with = record(r#"{"name":"a","type":"int"},{"name":"b","type":"string","default":""}"#);
    assert!(can_read(&with, &writer));
    let found = incompatibilities(&without, &writer);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, Rule::ReaderFieldMissingDefaultValue);
    assert_eq!(found[0].path, "T.b");
    assert!(
        found[0]
            .to_string()
            .contains("field 'b' is missing from the writer"),
        "{}",
        found[0]
    );
    // A writer field the reader does not know is skipped.
    assert!(can_read(&writer, &without));
}

#[test]
fn field_aliases_match_renamed_fields() {
    let writer = record(r#"{"name":"old","type":"int"}"#);
    let reader = record(r#"{"name":"new","type":"int","aliases":["old"]}"#);
    assert!(can_read(&reader, &writer));
    let no_alias = record(r#"{"name":"new","type":"int"}"#);
    assert_eq!(
        rules(&no_alias, &writer),
        vec![("T.new".to_owned(), Rule::ReaderFieldMissingDefaultValue)]
    );
}

#[test]
fn named_types_match_by_name_or_reader_alias() {
    let writer = schema(r#"{"type":"record","name":"a.Old","fields":[]}"#);
    let renamed = schema(r#"{"type":"record","name":"a.New","fields":[]}"#);
    let aliased = schema(r#"{"type":"record","name":"a.New","aliases":["a.Old"],"fields":[]}"#);
    let other_namespace = schema(r#"{"type":"record","name":"b.Old","fields":[]}"#);
    assert_eq!(
        rules(&renamed, &writer),
        vec![("New".to_owned(), Rule::NameMismatch)]
    );
    assert!(can_read(&aliased, &writer));
    // Unqualified names decide, as in Avro's Java implementation.
    assert!(can_read(&other_namespace, &writer));
}

#[test]
fn enums_need_every_writer_symbol_unless_the_reader_has_a_default() {
    let writer = schema(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#);
    let fewer = schema(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
    let fewer_with_default =
        schema(r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#);
    let more = schema(r#"{"type":"enum","name":"E","symbols":["A","B","C","D"]}"#);
    let found = incompatibilities(&fewer, &writer);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, Rule::MissingEnumSymbols);
    assert!(found[0].message.contains('C'), "{}", found[0]);
    assert!(can_read(&fewer_with_default, &writer));
    assert!(can_read(&more, &writer));
}

#[test]
fn unions_resolve_branch_by_branch() {
    let w_null_string = record(r#"{"name":"a","type":["null","string"]}"#);
    let r_null_string_int = record(r#"{"name":"a","type":["null","string","int"]}"#);
    let r_null_int = record(r#"{"name":"a","type":["null","int"]}"#);
    assert!(can_read(&r_null_string_int, &w_null_string));
    let found = incompatibilities(&r_null_int, &w_null_string);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, Rule::MissingUnionBranch);
    assert!(found[0].message.contains("string"), "{}", found[0]);
    // A writer's union against a reader's plain type: every branch must be readable.
    let r_string = record(r#"{"name":"a","type":"string"}"#);
    assert_eq!(
        rules(&r_string, &w_null_string),
        vec![("T.a".to_owned(), Rule::MissingUnionBranch)]
    );
    let w_string = record(r#"{"name":"a","type":"string"}"#);
    assert!(can_read(&w_null_string, &w_string));
    // A writer's plain type against a reader's union: some branch must read it, promotions count.
    let w_int = record(r#"{"name":"a","type":"int"}"#);
    let r_null_long = record(r#"{"name":"a","type":["null","long"]}"#);
    assert!(can_read(&r_null_long, &w_int));
    assert_eq!(
        rules(&r_null_long, &w_string),
        vec![("T.a".to_owned(), Rule::MissingUnionBranch)]
    );
}

#[test]
fn union_branch_of_the_same_record_reports_the_nested_field() {
    let writer = record(
        r#"{"name":"p","type":["null",{"type":"record","name":"P","fields":[{"name":"x","type":"int"}]}]}"#,
    );
    let reader = record(
        r#"{"name":"p","type":["null",{"type":"record","name":"P","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]}]}"#,
    );
    assert_eq!(
        rules(&reader, &writer),
        vec![("T.p.y".to_owned(), Rule::ReaderFieldMissingDefaultValue)]
    );
}

#[test]
fn arrays_and_maps_recurse_with_their_path() {
    let writer = schema(
        r#"{"type":"record","name":"OrderCreated","fields":[{"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"quantity","type":"long"}]}}},{"name":"tags","type":{"type":"map","values":"string"}}]}"#,
    );
    let reader = schema(
        r#"{"type":"record","name":"OrderCreated","fields":[{"name":"items","type":{"type":"array","items":{"type":"record","name":"Line","fields":[{"name":"quantity","type":"int"}]}}},{"name":"tags","type":{"type":"map","values":"int"}}]}"#,
    );
    assert_eq!(
        rules(&reader, &writer),
        vec![
            (
                "OrderCreated.items[].quantity".to_owned(),
                Rule::TypeMismatch
            ),
            ("OrderCreated.tags{}".to_owned(), Rule::TypeMismatch),
        ]
    );
    let array = schema(r#"{"type":"array","items":"int"}"#);
    let map = schema(r#"{"type":"map","values":"int"}"#);
    assert_eq!(
        rules(&array, &map),
        vec![("$".to_owned(), Rule::TypeMismatch)]
    );
}

#[test]
fn fixed_needs_the_same_name_and_size() {
    let f16 = schema(r#"{"type":"fixed","name":"F","size":16}"#);
    let f8 = schema(r#"{"type":"fixed","name":"F","size":8}"#);
    let g16 = schema(r#"{"type":"fixed","name":"G","size":16}"#);
    assert!(can_read(&f16, &f16));
    assert_eq!(
        rules(&f16, &f8),
        vec![("F".to_owned(), Rule::FixedSizeMismatch)]
    );
    assert_eq!(
        rules(&g16, &f16),
        vec![("G".to_owned(), Rule::NameMismatch)]
    );
}

#[test]
fn decimals_must_agree_on_precision_and_scale() {
    let a = schema(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#);
    let b = schema(r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":3}"#);
    assert_eq!(rules(&a, &b), vec![("$".to_owned(), Rule::DecimalMismatch)]);
    assert!(can_read(&a, &a));
}

#[test]
fn named_type_kinds_must_match() {
    let e = schema(r#"{"type":"enum","name":"X","symbols":["A"]}"#);
    let f = schema(r#"{"type":"fixed","name":"X","size":1}"#);
    assert_eq!(rules(&e, &f), vec![("X".to_owned(), Rule::TypeMismatch)]);
}

#[test]
fn mutually_recursive_types_terminate() {
    let a = r#"{"type":"record","name":"A","fields":[{"name":"b","type":["null",{"type":"record","name":"B","fields":[{"name":"a","type":["null","A"]},{"name":"n","type":"int"}]}]}]}"#;
    let s = schema(a);
    assert!(can_read(&s, &s));
    let changed = schema(&a.replace(r#""type":"int""#, r#""type":"string""#));
    assert_eq!(
        rules(&changed, &s),
        vec![("A.b.n".to_owned(), Rule::TypeMismatch)]
    );
}

#[test]
fn the_real_payment_v2_reads_v1_and_back() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schemas/payments/PaymentProcessed"
    );
    let v1 = schema(&std::fs::read_to_string(format!("{dir}/v1.avsc")).unwrap());
    let v2 = schema(&std::fs::read_to_string(format!("{dir}/v2.avsc")).unwrap());
    assert!(can_read(&v2, &v1));
    assert!(can_read(&v1, &v2));
    assert_ne!(v1, v2);
}

// ---- levels ----

/// Record `T` in four shapes: {a:int}, plus `b` with or without a default, and {} (the
/// required `a` removed).
struct Versions {
    v1: AvroSchema,
    add_with_default: AvroSchema,
    add_without_default: AvroSchema,
    remove_required: AvroSchema,
}

fn versions() -> Versions {
    Versions {
        v1: record(r#"{"name":"a","type":"int"}"#),
        add_with_default: record(
            r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#,
        ),
        add_without_default: record(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#),
        remove_required: record(""),
    }
}

#[test]
fn level_names_round_trip_and_invalid_names_are_rejected() {
    for level in CompatibilityLevel::ALL {
        assert_eq!(level.as_str().parse::<CompatibilityLevel>(), Ok(level));
    }
    assert!(
        "SIDEWAYS"
            .parse::<CompatibilityLevel>()
            .unwrap_err()
            .to_string()
            .contains("SIDEWAYS")
    );
}

#[test]
fn none_accepts_anything() {
    let v = versions();
    let unrelated = schema(r#""string""#);
    assert!(check_level(CompatibilityLevel::None, &unrelated, &[(1, &v.v1)]).is_empty());
}

#[test]
fn backward_new_reads_latest() {
    let v = versions();
    let level = CompatibilityLevel::Backward;
    // Removing a required field is backward compatible (the reader ignores it); adding one without
    // a default is not.
    assert!(check_level(level, &v.remove_required, &[(1, &v.v1)]).is_empty());
    assert!(check_level(level, &v.add_with_default, &[(1, &v.v1)]).is_empty());
    let found = check_level(level, &v.add_without_default, &[(1, &v.v1)]);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (1, Direction::Backward)
    );
    assert_eq!(found[0].incompatibility.path, "T.b");
}

#[test]
fn backward_transitive_new_reads_every_version() {
    let v = versions();
    // v1 {a:int}, v2 {} (dropped a).
    let history = [(1, &v.v1), (2, &v.remove_required)];
    let with_default = record(r#"{"name":"a","type":"int","default":0}"#);
    assert!(
        check_level(
            CompatibilityLevel::BackwardTransitive,
            &with_default,
            &history
        )
        .is_empty()
    );
    // Readable from v2 (a has a default) but the string type cannot read v1's int.
    let string_with_default = record(r#"{"name":"a","type":"string","default":""}"#);
    assert!(check_level(CompatibilityLevel::Backward, &string_with_default, &history).is_empty());
    let found = check_level(
        CompatibilityLevel::BackwardTransitive,
        &string_with_default,
        &history,
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].incompatibility.rule),
        (1, Rule::TypeMismatch)
    );
}

#[test]
fn forward_latest_reads_new() {
    let v = versions();
    let level = CompatibilityLevel::Forward;
    // Adding any field is forward compatible (the old reader ignores it); removing a field the
    // old reader requires is not.
    assert!(check_level(level, &v.add_without_default, &[(1, &v.v1)]).is_empty());
    let found = check_level(level, &v.remove_required, &[(1, &v.v1)]);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (1, Direction::Forward)
    );
    assert!(
        found[0]
            .to_string()
            .starts_with("version 1 cannot read data written with the new schema")
    );
}

#[test]
fn forward_transitive_every_version_reads_new() {
    let v = versions();
    // v1 {a}, v2 {a, b} without default. A candidate {b} drops a: v2 (latest) requires a.
    // A candidate {a:int, b} is fine with both; a candidate {b} with a dropped fails v1 and v2.
    let history = [(1, &v.v1), (2, &v.add_with_default)];
    let drop_a = record(r#"{"name":"b","type":"int","default":0}"#);
    let v2_default_a =
        record(r#"{"name":"a","type":"int","default":0},{"name":"b","type":"int","default":0}"#);
    // Against the latest only: v2 is the latest, which requires a -> fails.
    assert_eq!(
        check_level(CompatibilityLevel::Forward, &drop_a, &history).len(),
        1
    );
    // A history whose latest reader tolerates the drop, but whose first does not.
    let history = [(1, &v.v1), (2, &v2_default_a)];
    assert!(check_level(CompatibilityLevel::Forward, &drop_a, &history).is_empty());
    let found = check_level(CompatibilityLevel::ForwardTransitive, &drop_a, &history);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].incompatibility.path.as_str()),
        (1, "T.a")
    );
    assert!(
        check_level(
            CompatibilityLevel::ForwardTransitive,
            &v.add_with_default,
            &history
        )
        .is_empty()
    );
}

#[test]
fn full_checks_both_directions_against_latest() {
    let v = versions();
    let level = CompatibilityLevel::Full;
    assert!(check_level(level, &v.add_with_default, &[(1, &v.v1)]).is_empty());
    let found = check_level(level, &v.add_without_default, &[(1, &v.v1)]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].direction, Direction::Backward);
    let found = check_level(level, &v.remove_required, &[(1, &v.v1)]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].direction, Direction::Forward);
}

#[test]
fn full_transitive_checks_both_directions_against_every_version() {
    let v = versions();
    let v2_int_default = record(r#"{"name":"a","type":"int","default":0}"#);
    let history = [(1, &v.remove_required), (2, &v2_int_default)];
    // a: long with a default: v2 (int) -> long is fine backward, but v2 cannot read a long (forward).
    let candidate = record(r#"{"name":"a","type":"long","default":0}"#);
    let found = check_level(CompatibilityLevel::FullTransitive, &candidate, &history);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].version, found[0].direction),
        (2, Direction::Forward)
    );
    // Same type with a default: fine against both.
    assert!(
        check_level(
            CompatibilityLevel::FullTransitive,
            &v2_int_default,
            &history
        )
        .is_empty()
    );
    // v1 {a:int}, v2 {}: a string `a` with a default is full against v2 but not against v1.
    let history = [(1, &v.v1), (2, &v.remove_required)];
    let string_a = record(r#"{"name":"a","type":"string","default":""}"#);
    assert!(check_level(CompatibilityLevel::Full, &string_a, &history).is_empty());
    let found = check_level(CompatibilityLevel::FullTransitive, &string_a, &history);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .all(|f| f.version == 1 && f.incompatibility.path == "T.a")
    );
}

#[test]
fn no_earlier_versions_means_nothing_to_check() {
    let v = versions();
    for level in CompatibilityLevel::ALL {
        assert!(check_level(level, &v.v1, &[]).is_empty());
    }
}

/// An alias is a full name, resolved relative to the aliased type's namespace (found by the
/// differential test against Apache Avro: an unqualified alias once matched any namespace).
#[test]
fn an_alias_names_one_full_name() {
    let writer = schema(r#"{"type":"record","name":"b.Old","fields":[]}"#);
    let in_null_namespace =
        schema(r#"{"type":"record","name":"New","aliases":["Old"],"fields":[]}"#);
    assert_eq!(
        rules(&in_null_namespace, &writer),
        vec![("New".to_owned(), Rule::NameMismatch)]
    );
    let relative =
        schema(r#"{"type":"record","name":"New","namespace":"b","aliases":["Old"],"fields":[]}"#);
    assert!(can_read(&relative, &writer));
    let qualified = schema(r#"{"type":"record","name":"New","aliases":["b.Old"],"fields":[]}"#);
    assert!(can_read(&qualified, &writer));
}
