//! Clients nobody here wrote, against a real registry on its own PostgreSQL database, over
//! HTTPS with a certificate of a CA made for the run:
//! Confluent's Python client (`tests/python/registry`, pytest) and the npm
//! `@kafkajs/confluent-schema-registry` client (`tests/node`, `node --test`). Each suite names
//! the client call every test exercises; a failure shows the suite's own output.
//!
//! `./orderflow test` (scripts/test.sh) installs both clients: the Python virtualenv
//! (`ORDERFLOW_PYTHON`) and the npm packages (`ORDERFLOW_NODE_MODULES`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use orderflow_testkit::TestDatabase;
use tokio::sync::oneshot;

/// The users of the registry under test: the suites act as `admin`, and check that `reader`
/// may read but not register.
const USERS: &str = "admin:admin-secret:admin\nreader:reader-secret:read\n";
const ADMIN: &str = "admin:admin-secret";
const READER: &str = "reader:reader-secret";

/// A registry on an ephemeral port with a fresh database, serving HTTPS with a certificate of
/// a CA made for it and requiring the users above, stopped when dropped.
struct Registry {
    url: String,
    /// The PEM file of the CA that signed the registry's certificate.
    ca: PathBuf,
    _stop: oneshot::Sender<()>,
    _db: TestDatabase,
    _certificates: Certificates,
}

/// A folder of certificates, removed when dropped.
struct Certificates(PathBuf);

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Registry {
    async fn start() -> Registry {
        let db = TestDatabase::create("registry_clients").await;
        let settings = orderflow_db::DbSettings::new(db.url());
        let pool = orderflow_db::connect_and_migrate(&settings, &orderflow_registry::MIGRATOR)
            .await
            .expect("migrate the registry database");
        let certificates = Certificates(std::env::temp_dir().join(format!(
            "orderflow-registry-tls-{}",
            orderflow_testkit::unique_suffix()
        )));
        let files = orderflow_tls::LocalCa::ensure(&certificates.0, &["registry"])
            .expect("the registry's certificate");
        let (cert, key) = files.identity("registry");
        let tls = orderflow_tls::rustls_server_config(&cert, &key).expect("TLS settings");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let listener = orderflow_registry::TlsListener::new(listener, tls).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let users = orderflow_registry::Users::parse(USERS).expect("the test users");
        tokio::spawn(orderflow_registry::run(
            listener,
            pool,
            Some(users),
            async move {
                let _ = stopped.await;
            },
        ));
        Registry {
            url,
            ca: files.ca(),
            _stop: stop,
            _db: db,
            _certificates: certificates,
        }
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Panics with the suite's output unless it passed.
fn assert_passed(suite: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the {suite} suite failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}

async fn run(mut command: tokio::process::Command, what: &str) -> Output {
    command.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in 10 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// Confluent's `SchemaRegistryClient` (confluent-kafka): every method, and the
/// AvroSerializer/AvroDeserializer round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_suite_passes() {
    let python = std::env::var("ORDERFLOW_PYTHON").expect(
        "ORDERFLOW_PYTHON is not set: ./orderflow test sets up the Python clients' virtualenv",
    );
    let registry = Registry::start().await;
    let mut command = tokio::process::Command::new(python);
    command
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python/registry",
        ])
        .current_dir(repository())
        .env("ORDERFLOW_REGISTRY_URL", &registry.url)
        .env("ORDERFLOW_REGISTRY_CA_FILE", &registry.ca)
        .env("ORDERFLOW_REGISTRY_USER_INFO", ADMIN)
        .env("ORDERFLOW_REGISTRY_READER_INFO", READER);
    let output = run(command, "pytest").await;
    assert_passed("Confluent Python client", &output);
}

/// `@kafkajs/confluent-schema-registry`, the Node.js client of the KafkaJS project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_node_client_suite_passes() {
    let modules = std::env::var("ORDERFLOW_NODE_MODULES").expect(
        "ORDERFLOW_NODE_MODULES is not set: ./orderflow test installs the Node client (npm ci in tests/node)",
    );
    let registry = Registry::start().await;
    let mut command = tokio::process::Command::new("node");
    command
        .args(["--test", "--test-reporter=spec"])
        .arg("registry.test.js")
        .current_dir(repository().join("tests/node"))
        .env("NODE_PATH", modules)
        // Node trusts the registry's CA from this file, as its TLS stack does for any client.
        .env("NODE_EXTRA_CA_CERTS", &registry.ca)
        .env("ORDERFLOW_REGISTRY_URL", &registry.url)
        .env("ORDERFLOW_REGISTRY_USER_INFO", ADMIN)
        .env("ORDERFLOW_REGISTRY_READER_INFO", READER);
    let output = run(command, "node --test").await;
    assert_passed("KafkaJS Node client", &output);
}
