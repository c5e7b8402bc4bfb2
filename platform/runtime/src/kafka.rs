//! Kafka clients configured the way every service needs them: an idempotent producer with
//! acks=all, and consumers that store offsets only after the work they cover is committed.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaArgs;
use crate::producer::KafkaProducer;

/// An idempotent producer (acks=all, retries preserve per-partition order).
pub fn producer(kafka: &KafkaArgs) -> Result<KafkaProducer, rdkafka::error::KafkaError> {
    KafkaProducer::create(
        kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", kafka.linger_ms.to_string())
            .set("message.timeout.ms", "30000"),
    )
}

/// The idempotent producer a service publishes with, replaced by a fresh one after a failed
/// delivery. Some broker errors leave librdkafka's idempotent producer unable to send again
/// (seen with tansu: one "Unknown broker error" while it shut down, then every later send
/// failed, even after the broker was back). A new producer starts a new producer id and
/// sequence; the relay re-sends from the first unacknowledged outbox row, so order holds.
#[derive(Clone)]
pub struct Producer {
    kafka: KafkaArgs,
    current: std::sync::Arc<std::sync::Mutex<KafkaProducer>>,
}

impl Producer {
    pub fn new(kafka: &KafkaArgs) -> Result<Producer, rdkafka::error::KafkaError> {
        Ok(Producer {
            kafka: kafka.clone(),
            current: std::sync::Arc::new(std::sync::Mutex::new(producer(kafka)?)),
        })
    }

    /// The producer to send with now (a cheap handle).
    pub fn get(&self) -> KafkaProducer {
        self.current.lock().expect("producer lock").clone()
    }

    /// Replaces the producer after a failed delivery.
    pub fn renew(&self) {
        let mut current = self.current.lock().expect("producer lock");
        if let Some((code, reason)) = current.fatal_error() {
            tracing::warn!(?code, %reason, "producer hit a fatal error");
        }
        match producer(&self.kafka) {
            Ok(fresh) => {
                *current = fresh;
                tracing::info!("producer renewed after a failed delivery");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a new producer; keeping the old one")
            }
        }
    }
}

/// A consumer in group `group` that never stores an offset by itself: the consumer loop
/// stores each offset after the message's database transaction has committed, and the
/// stored offsets are committed in the background. With an instance id it is a static member
/// (`group.instance.id` = `<group>-<instance id>`); without one, a dynamic member.
pub fn consumer(
    kafka: &KafkaArgs,
    group: &str,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    consumer_config(kafka, group).create()
}

/// The settings of [`consumer`], for a consumer that needs one more before it is created.
pub fn consumer_config(kafka: &KafkaArgs, group: &str) -> ClientConfig {
    let mut config = fetching_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.error.backoff.ms", "100");
    if !kafka.instance_id.is_empty() {
        config.set(
            "group.instance.id",
            format!("{group}-{}", kafka.instance_id),
        );
    }
    // librdkafka's own debug logging (`--kafka-debug cgrp`), to diagnose a broker.
    if let Some(contexts) = kafka.debug_contexts() {
        config.set("debug", contexts);
    }
    config
}

/// A consumer without a group, for readers that assign partitions themselves.
pub fn plain_consumer(
    kafka: &KafkaArgs,
    client_id: &str,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    plain_config(kafka, client_id).create()
}

/// The settings of [`plain_consumer`], for a reader that needs one more (say, its own
/// `auto.offset.reset`) before creating it.
pub fn plain_config(kafka: &KafkaArgs, client_id: &str) -> ClientConfig {
    let mut config = fetching_config(kafka);
    config
        .set("group.id", client_id)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false");
    config
}

/// What every consumer, in a group or not, starts from: the connection, and how long and
/// for how many bytes the broker may hold a fetch (`--fetch-wait-ms`, `--fetch-min-bytes`).
fn fetching_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("fetch.wait.max.ms", kafka.fetch_wait_ms.to_string())
        .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string());
    config
}

/// Creates the topics that do not exist yet, with the configured partitions; the compacted
/// ones ([`orderflow_events::Topics::compacted`]) with `cleanup.policy=compact`. Some brokers
/// do not auto-create topics.
pub async fn ensure_topics(kafka: &KafkaArgs, names: &[String]) -> anyhow::Result<()> {
    create_topics(kafka, names, kafka.partitions).await
}

/// The broker's setting of a topic that keeps the newest record of each key.
const COMPACT: (&str, &str) = ("cleanup.policy", "compact");

/// Partitions of a dead-letter topic. Dead letters are rare and read by operators and the
/// history service, not by instances sharing work, so one partition is enough (as Kafka
/// Connect's dead-letter queues); every partition a consumer follows costs the local broker
/// a storage read per fetch even while idle.
pub const DEAD_LETTER_PARTITIONS: i32 = 1;

/// Creates the dead-letter topics that do not exist yet, with [`DEAD_LETTER_PARTITIONS`].
pub async fn ensure_dead_letter_topics(kafka: &KafkaArgs, names: &[String]) -> anyhow::Result<()> {
    create_topics(kafka, names, DEAD_LETTER_PARTITIONS).await
}

async fn create_topics(kafka: &KafkaArgs, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let all = kafka.topics();
    let compacted = all.compacted();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            let topic = NewTopic::new(n, partitions, TopicReplication::Fixed(1));
            if compacted.contains(&n.as_str()) {
                topic.set(COMPACT.0, COMPACT.1)
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(topics.iter(), &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // Under least-privilege ACLs a service may not create topics: the operator does
            // (compose/kafka/init.sh). A topic it needs and lacks fails its first produce or
            // fetch with an authorization error that names it.
            Err((name, RDKafkaErrorCode::TopicAuthorizationFailed)) => {
                tracing::debug!(topic = %name, "not authorized to create the topic; the operator creates it")
            }
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// How long a process waits at start for the broker to accept or refuse its login.
const LOGIN_CHECK: Duration = Duration::from_secs(10);

/// Checks that the broker accepts this client's credentials, so that a wrong SASL password
/// stops a process at start with an error that says so, instead of a consumer that never
/// receives anything. An unreachable broker is not an error here (a service starts while the
/// broker is down and catches up when it returns); a refused login is.
pub async fn check_credentials(kafka: &KafkaArgs) -> anyhow::Result<()> {
    kafka.security.validate().map_err(anyhow::Error::msg)?;
    let Some(principal) = kafka.security.principal().map(str::to_owned) else {
        return Ok(());
    };
    let mechanism = kafka.security.mechanism.name();
    let context = LoginWatch::default();
    let (refused, watching) = (context.refused.clone(), context.refused.clone());
    let client: rdkafka::consumer::BaseConsumer<LoginWatch> =
        kafka.client_config().create_with_context(context)?;
    // Short tries, so that a refusal (reported within milliseconds) ends the wait early.
    let metadata = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::Consumer as _;
        let deadline = std::time::Instant::now() + LOGIN_CHECK;
        loop {
            let tried = client
                .fetch_metadata(None, Duration::from_secs(1))
                .map(|_| ());
            // Serves the client's events: librdkafka reports a refused login as an error
            // event, delivered to the context only by a poll.
            let _ = client.poll(Duration::from_millis(100));
            let refused = watching.lock().expect("login watch").is_some();
            if tried.is_ok() || refused || std::time::Instant::now() >= deadline {
                return tried;
            }
        }
    })
    .await?;
    if let Some(reason) = refused.lock().expect("login watch").take() {
        anyhow::bail!(
            "the Kafka broker {} refused user '{principal}' ({mechanism}): {reason}; \
             check --kafka-sasl-username and --kafka-sasl-password",
            kafka.brokers
        );
    }
    if let Err(error) = metadata {
        tracing::warn!(brokers = %kafka.brokers, %error, "Kafka not reachable yet; starting anyway");
    }
    Ok(())
}

/// A client context that remembers the first authentication error librdkafka reports.
#[derive(Default)]
struct LoginWatch {
    refused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ClientContext for LoginWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            self.refused
                .lock()
                .expect("login watch")
                .get_or_insert_with(|| reason.to_owned());
        } else {
            DefaultClientContext.error(error, reason);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LoginWatch {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct KafkaCli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn both_kinds_of_consumer_fetch_as_configured() {
        let kafka = KafkaCli::try_parse_from([
            "test",
            "--fetch-wait-ms",
            "100",
            "--fetch-min-bytes",
            "16384",
        ])
        .expect("flags")
        .kafka;
        for (kind, config) in [
            ("group", consumer_config(&kafka, "g")),
            ("plain", plain_config(&kafka, "reader")),
        ] {
            assert_eq!(config.get("fetch.wait.max.ms"), Some("100"), "{kind}");
            assert_eq!(config.get("fetch.min.bytes"), Some("16384"), "{kind}");
        }
    }
}
