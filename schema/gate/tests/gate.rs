//! The gate against the real schemas, the breaking fixtures, the lock, and (online) a real
//! registry over HTTP with its own PostgreSQL database.

use std::path::{Path, PathBuf};

use orderflow_avro_compat::Rule;
use orderflow_schema_gate::{Problem, Report, check_offline, check_online, update_lock};

/// An anonymous client of the registry at `url`.
fn access(url: &str) -> orderflow_events::RegistryAccess<'_> {
    orderflow_events::RegistryAccess {
        url,
        ..Default::default()
    }
}
use orderflow_testkit::{TestDatabase, unique_name};

fn real_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The incompatibilities in a report, as (path, rule).
fn incompatibilities(report: &Report) -> Vec<(String, Rule)> {
    report
        .problems
        .iter()
        .map(|p| match p {
            Problem::Incompatible {
                incompatibility, ..
            } => (incompatibility.path.clone(), incompatibility.rule),
            other => panic!("unexpected problem: {other}"),
        })
        .collect()
}

#[test]
fn the_real_schemas_pass_offline() {
    let report = check_offline(&real_schemas()).unwrap();
    assert!(report.is_ok(), "{report}");
    // One per event kind the services exchange.
    assert_eq!(
        report.subjects.len(),
        orderflow_events::EventKind::ALL.len()
    );
    let payments = report
        .subjects
        .iter()
        .find(|s| s.subject == "payments-orderflow.events.PaymentProcessed")
        .unwrap();
    assert_eq!(payments.versions, 2);
}

#[test]
fn a_removed_required_field_is_rejected() {
    let report = check_offline(&fixture("required-field-removed")).unwrap();
    // v1 readers need `amount`, which v2 no longer writes.
    assert_eq!(
        incompatibilities(&report),
        vec![(
            "Thing.amount".to_owned(),
            Rule::ReaderFieldMissingDefaultValue
        )]
    );
    let text = report.to_string();
    assert!(
        text.contains(
            "things-orderflow.test.Thing: v2 is incompatible with v1 at level FULL_TRANSITIVE"
        ),
        "{text}"
    );
    assert!(
        text.contains("v1 cannot read data written with v2: field Thing.amount"),
        "{text}"
    );
}

#[test]
fn a_changed_type_is_rejected_both_ways() {
    let report = check_offline(&fixture("type-changed")).unwrap();
    assert_eq!(
        incompatibilities(&report),
        vec![
            ("Thing.quantity".to_owned(), Rule::TypeMismatch),
            ("Thing.quantity".to_owned(), Rule::TypeMismatch)
        ]
    );
    assert!(
        report
            .to_string()
            .contains("a int cannot be read as a string"),
        "{report}"
    );
}

#[test]
fn a_field_added_without_default_is_rejected() {
    let report = check_offline(&fixture("field-added-without-default")).unwrap();
    assert_eq!(
        incompatibilities(&report),
        vec![(
            "Thing.channel".to_owned(),
            Rule::ReaderFieldMissingDefaultValue
        )]
    );
    assert!(
        report
            .to_string()
            .contains("v2 cannot read data written with v1: field Thing.channel"),
        "{report}"
    );
}

#[test]
fn a_removed_enum_symbol_is_rejected() {
    let report = check_offline(&fixture("enum-symbol-removed")).unwrap();
    assert_eq!(
        incompatibilities(&report),
        vec![("Thing.status".to_owned(), Rule::MissingEnumSymbols)]
    );
    assert!(
        report.to_string().contains("symbols C are missing"),
        "{report}"
    );
}

#[test]
fn an_edited_published_file_is_rejected() {
    let report = check_offline(&fixture("published-edited")).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(&report.problems[0], Problem::PublishedFileChanged { file, .. } if file == "thing/v1.avsc")
    );
    assert!(
        report
            .to_string()
            .contains("thing/v1.avsc is published and was edited")
    );
}

/// A scratch copy of a fixture, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of(fixture_name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(unique_name("schema-gate"));
        std::fs::create_dir_all(dir.join("thing")).unwrap();
        let from = fixture(fixture_name);
        for file in [
            "schemas.toml",
            "published.lock",
            "thing/v1.avsc",
            "thing/v2.avsc",
        ] {
            if from.join(file).exists() {
                std::fs::copy(from.join(file), dir.join(file)).unwrap();
            }
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn lock_adds_new_versions_and_never_rewrites_an_entry() {
    let scratch = Scratch::copy_of("published-edited");
    let dir = &scratch.0;
    // A new, compatible v2 (v1's content), not yet locked.
    std::fs::copy(dir.join("thing/v1.avsc"), dir.join("thing/v2.avsc")).unwrap();
    let before = check_offline(dir).unwrap();
    assert!(
        before
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Unlocked { file } if file == "thing/v2.avsc")),
        "{before}"
    );
    assert!(before.to_string().contains("run `orderflow schema lock`"));
    let lock_before = std::fs::read_to_string(dir.join("published.lock")).unwrap();

    assert_eq!(update_lock(dir).unwrap(), vec!["thing/v2.avsc".to_owned()]);
    let lock_after = std::fs::read_to_string(dir.join("published.lock")).unwrap();
    assert!(
        lock_after.starts_with(&lock_before),
        "existing entries must stay as they were"
    );
    assert_eq!(update_lock(dir).unwrap(), Vec::<String>::new());

    // The edited v1 is still caught: locking did not paper over it.
    let after = check_offline(dir).unwrap();
    assert_eq!(after.problems.len(), 1, "{after}");
    assert!(matches!(
        &after.problems[0],
        Problem::PublishedFileChanged { .. }
    ));
}

async fn start_registry(db: &TestDatabase) -> (String, tokio::sync::oneshot::Sender<()>) {
    let settings = orderflow_db::DbSettings::new(db.url());
    let pool = orderflow_db::connect_and_migrate(&settings, &orderflow_registry::MIGRATOR)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(orderflow_registry::run(listener, pool, None, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

#[tokio::test]
async fn online_gate_registers_the_real_schemas_and_refuses_a_breaking_candidate() {
    let db = TestDatabase::create("gate").await;
    let (url, _stop) = start_registry(&db).await;

    let report = check_online(&real_schemas(), &access(&url)).await.unwrap();
    assert!(report.is_ok(), "{report}");
    // Running again registers nothing new and still passes.
    let again = check_online(&real_schemas(), &access(&url)).await.unwrap();
    assert!(again.is_ok(), "{again}");
    let levels: serde_json::Value = reqwest::get(format!(
        "{url}/config/payments-orderflow.events.PaymentProcessed"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(levels["compatibilityLevel"], "FULL_TRANSITIVE");
    let versions: Vec<i32> = reqwest::get(format!(
        "{url}/subjects/payments-orderflow.events.PaymentProcessed/versions"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(versions, vec![1, 2]);

    let refused = check_online(&fixture("field-added-without-default"), &access(&url))
        .await
        .unwrap();
    assert_eq!(refused.problems.len(), 1, "{refused}");
    match &refused.problems[0] {
        Problem::Refused {
            subject,
            version,
            status,
            message,
        } => {
            assert_eq!(
                (subject.as_str(), *version, *status),
                ("things-orderflow.test.Thing", 2, 409)
            );
            assert!(message.contains("Thing.channel"), "{message}");
        }
        other => panic!("unexpected problem: {other}"),
    }
}

#[tokio::test]
async fn online_gate_reports_an_unreachable_registry() {
    let error = check_online(&real_schemas(), &access("http://127.0.0.1:9"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unreachable"), "{error}");
}
