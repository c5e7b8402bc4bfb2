//! Kafka over TLS with SASL SCRAM: a local broker that serves only TLS and admits only the
//! users stored in it (tansu with `--cert`, `--key` and `--authentication`, patched so that
//! it does: scripts/tansu-patches/0005–0008 and 0011), and the services' clients configured
//! for it.

use std::time::Duration;

use orderflow_e2e::process::{Broker, orderflow_bin};
use orderflow_e2e::{Credentials, KAFKA_USER, System, kafka_args};
use orderflow_platform::KafkaArgs;
use orderflow_platform::config::{KafkaSecurityArgs, ScramMechanism};
use orderflow_testkit::TestDatabase;

/// A broker with TLS and SCRAM whose one user is `KAFKA_USER`, and the credentials that made
/// it: its CA and the user's password.
struct SecuredBroker {
    broker: Broker,
    trust: Credentials,
}

impl SecuredBroker {
    async fn start() -> SecuredBroker {
        let trust = Credentials::new();
        let broker = Broker::start_secured(&trust).await;
        SecuredBroker { broker, trust }
    }

    /// Client settings for this broker: SASL_SSL as `KAFKA_USER` with `mechanism` and
    /// `password`, on topics of their own.
    fn kafka(&self, mechanism: ScramMechanism, password: &str) -> KafkaArgs {
        let mut kafka = kafka_args(
            self.broker.address(),
            format!("t{}-", orderflow_testkit::unique_suffix()),
        );
        kafka.security = KafkaSecurityArgs {
            mechanism,
            password: Some(password.into()),
            ..self.trust.kafka_security()
        };
        kafka
    }

    fn password(&self) -> &str {
        &self.trust.kafka_password
    }
}

/// The seed scenario over SASL_SSL with SCRAM-SHA-512: the three services and the gateway's
/// feed all produce and consume through the secured broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_runs_over_sasl_ssl() {
    let secured = SecuredBroker::start().await;
    let kafka = secured.kafka(ScramMechanism::ScramSha512, secured.password());
    orderflow_e2e::scenario::seed(&System::start_on(kafka, None).await).await;
}

/// Both SCRAM mechanisms log in with the right password; a wrong password, a PLAIN
/// login and a plaintext client are refused, each with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_admits_only_its_users_over_tls() {
    let secured = SecuredBroker::start().await;
    for mechanism in [ScramMechanism::ScramSha256, ScramMechanism::ScramSha512] {
        let kafka = secured.kafka(mechanism, secured.password());
        orderflow_platform::kafka::check_credentials(&kafka)
            .await
            .unwrap_or_else(|e| panic!("{} login refused: {e:#}", mechanism.name()));
        orderflow_platform::kafka::ensure_topics(&kafka, &["logged-in".into()])
            .await
            .unwrap_or_else(|e| panic!("{} client cannot create a topic: {e:#}", mechanism.name()));
    }

    let wrong = secured.kafka(ScramMechanism::ScramSha512, "not-the-password");
    let refused = orderflow_platform::kafka::check_credentials(&wrong)
        .await
        .expect_err("a wrong password is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains(&format!("refused user '{KAFKA_USER}' (SCRAM-SHA-512)")),
        "{message}"
    );
    assert!(!message.contains("not-the-password"), "{message}");

    // PLAIN sends the password itself; tansu 0.6.0 accepted any. The patched broker refuses it.
    let plain = secured.kafka(ScramMechanism::ScramSha512, "x");
    let mut config = plain.client_config();
    config.set("sasl.mechanism", "PLAIN");
    assert!(
        refuses_metadata(config).await,
        "a PLAIN login with any password is refused"
    );

    // A client that does not speak TLS gets nothing.
    let plaintext = kafka_args(secured.broker.address(), "t-".into());
    assert!(
        refuses_metadata(plaintext.client_config()).await,
        "a plaintext client is refused"
    );
}

/// Whether a client made from `config` fails to read the cluster's metadata.
async fn refuses_metadata(config: rdkafka::ClientConfig) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let client: BaseConsumer = config.create().expect("client");
    tokio::task::spawn_blocking(move || {
        client.fetch_metadata(None, Duration::from_secs(5)).is_err()
    })
    .await
    .expect("metadata task")
}

/// A service given a wrong SCRAM password stops at start and says why, naming the user and
/// the mechanism but never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_scram_password_stops_a_service_at_start() {
    let secured = SecuredBroker::start().await;
    let database = TestDatabase::create("payment").await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(orderflow_bin())
            .args(["serve", "payment"])
            .env("ORDERFLOW_KAFKA_BROKERS", secured.broker.address())
            .env("ORDERFLOW_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
            .env("ORDERFLOW_KAFKA_CA_FILE", secured.trust.tls.ca())
            .env("ORDERFLOW_KAFKA_SASL_USERNAME", KAFKA_USER)
            .env("ORDERFLOW_KAFKA_SASL_PASSWORD", "wrong-password-1234")
            .env("ORDERFLOW_PAYMENT_DATABASE_URL", database.url())
            .env("ORDERFLOW_PAYMENT_ADMIN_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the service exits by itself")
    .expect("run orderflow");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "it must not run: {stderr}");
    assert!(
        stderr.contains(&format!(
            "the Kafka broker {} refused user '{KAFKA_USER}' (SCRAM-SHA-512)",
            secured.broker.address()
        )),
        "stderr: {stderr}"
    );
    assert!(
        !stderr.contains("wrong-password-1234") && !stdout.contains("wrong-password-1234"),
        "the password must not be printed"
    );
}

/// A login lasts as long as its connection (tansu patch 0011): the broker told clients their
/// session lasted 60 s, librdkafka re-authenticated on the open connection after ~54 s, and
/// the broker refused that handshake, so every client, the services' consumers among them,
/// saw an authentication error (and reported itself degraded) once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_lasts_as_long_as_its_connection() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let secured = SecuredBroker::start().await;
    let kafka = secured.kafka(ScramMechanism::ScramSha512, secured.password());
    let topic = format!("{}quiet", kafka.topic_prefix);
    orderflow_platform::kafka::ensure_topics(&kafka, std::slice::from_ref(&topic))
        .await
        .expect("a topic");
    let consumer: StreamConsumer =
        orderflow_platform::kafka::consumer(&kafka, &format!("{}group", kafka.topic_prefix))
            .expect("a consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    // Past the 54 s at which a 60 s session was renewed.
    let until = tokio::time::Instant::now() + Duration::from_secs(65);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout_at(until, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("the consumer's login failed while connected: {e}"),
            Ok(Ok(_)) => {}
        }
    }
}
