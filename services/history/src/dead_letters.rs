//! Follows every dead-letter topic of the event topics and records each dead letter in its
//! order's timeline, where it happened. A dead letter's bytes may be anything (often that is
//! why it is one), so it is read raw, never decoded: the order is the message key, the rest
//! comes from the headers the consumer loop added (`dlq.*`).
//!
//! Delivery is at-least-once and the row is keyed by the dead letter's place in the log, so
//! each is recorded once. Its offset is stored only after the row is committed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use orderflow_events::Topics;
use orderflow_platform::dlq::{self, StoredMessage};
use orderflow_platform::{Health, KafkaArgs};
use prometheus_client::metrics::counter::Counter;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::{self, DEAD_LETTERED, Entry};
use crate::story;

/// The health component of the follower.
const COMPONENT: &str = "dead-letters";

/// How often the broker's topic list is read for new dead-letter topics: one appears when a
/// consumer starts (it creates its dead-letter topics up front).
const TOPIC_REFRESH: Duration = Duration::from_secs(5);

/// The consumer group name of the follower, beside the service's own group.
pub const GROUP: &str = "history-dead-letters";

/// A regular expression (librdkafka's subscription syntax, a leading `^`) that matches the
/// dead-letter topics of `topics`: `<event topic>.<consumer>.dlq`.
pub fn pattern(topics: &Topics) -> String {
    let names: Vec<String> = topics.order_flow().iter().map(|t| escape(t)).collect();
    format!("^({})\\.[^.]+{}$", names.join("|"), escape(dlq::SUFFIX))
}

/// Whether `name` is a dead-letter topic of `topics` (what [`pattern`] matches).
pub fn is_dead_letter_topic(topics: &Topics, name: &str) -> bool {
    topics
        .order_flow()
        .iter()
        .any(|origin| consumer_of(name, origin).is_some_and(|c| !c.contains('.')))
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if ".^$*+?()[]{}|\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The timeline row of a dead letter, or why it has none (its key is not an order id: such a
/// message belongs to no order's story).
pub fn entry(message: &StoredMessage) -> Result<Entry, String> {
    let key = message
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let order_id = key
        .parse()
        .map_err(|_| format!("key {key:?} is not an order id"))?;
    let header = |name| message.header(name).unwrap_or_default();
    // The consumer's name is in the topic's (`<origin>.<consumer>.dlq`); its group, which
    // may carry a deployment's suffix, only if the name is not there.
    let origin_topic = header(dlq::ORIGIN_TOPIC);
    let consumer = consumer_of(&message.topic, &origin_topic)
        .map(str::to_owned)
        .unwrap_or_else(|| header(dlq::CONSUMER_GROUP));
    let origin = format!(
        "{origin_topic}/{}/{}",
        header(dlq::ORIGIN_PARTITION),
        header(dlq::ORIGIN_OFFSET)
    );
    let attempts = message.header(dlq::ATTEMPTS);
    Ok(Entry {
        topic: message.topic.clone(),
        partition: message.partition,
        offset: message.offset,
        order_id,
        event_type: DEAD_LETTERED.to_owned(),
        event_id: None,
        producer: consumer.clone(),
        summary: story::dead_letter_summary(
            &origin,
            &consumer,
            attempts.as_deref(),
            &header(dlq::ERROR_CLASS),
            &header(dlq::ERROR_MESSAGE),
        ),
        occurred_at: message.timestamp.unwrap_or_else(Utc::now),
        logged_at: message.timestamp,
        trace_id: message
            .header(orderflow_platform::trace::HEADER)
            .and_then(|raw| orderflow_platform::trace::TraceParent::parse(&raw))
            .map(|t| t.trace_id),
        // A redriven message that failed again keeps the header naming its earlier letter.
        redriven_from: message.header(dlq::REDRIVEN_FROM),
    })
}

/// The consumer that wrote dead-letter topic `topic` for messages of `origin`.
fn consumer_of<'a>(topic: &'a str, origin: &str) -> Option<&'a str> {
    topic
        .strip_prefix(origin)?
        .strip_prefix('.')?
        .strip_suffix(dlq::SUFFIX)
        .filter(|name| !name.is_empty())
}

/// The follower: its own consumer group, subscribed by pattern.
pub struct DeadLetterFollower {
    consumer: Arc<StreamConsumer>,
    pool: PgPool,
    health: Health,
    recorded: Counter,
}

impl DeadLetterFollower {
    /// Subscribes group [`GROUP`] to every dead-letter topic of `topics`.
    pub fn new(
        kafka: &KafkaArgs,
        topics: &Topics,
        pool: PgPool,
        health: Health,
        recorded: Counter,
    ) -> anyhow::Result<Self> {
        let mut config: ClientConfig =
            orderflow_platform::kafka::consumer_config(kafka, &kafka.group(GROUP));
        config.set(
            "topic.metadata.refresh.interval.ms",
            TOPIC_REFRESH.as_millis().to_string(),
        );
        let consumer: StreamConsumer = config.create()?;
        consumer.subscribe(&[&pattern(topics)])?;
        Ok(DeadLetterFollower {
            consumer: Arc::new(consumer),
            pool,
            health,
            recorded,
        })
    }

    /// Records dead letters until `shutdown`, then commits what it recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "dead-letter topics: consume error");
                    self.health.degraded(COMPONENT, format!("broker: {e}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.health.recovered(COMPONENT);
            let stored = dlq::stored(&message);
            match entry(&stored) {
                Ok(entry) => {
                    if !self.record(&entry, &shutdown).await {
                        break;
                    }
                }
                Err(reason) => {
                    tracing::warn!(at = %stored.location(), %reason, "dead letter without an order: not in any timeline");
                }
            }
            if let Err(e) = self.consumer.store_offset_from_message(&message) {
                tracing::warn!(error = %e, "cannot store a dead letter's offset");
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit of the dead-letter follower");
        }
        // Closing a consumer blocks while it leaves its group: not on an async worker, and
        // not waited for (see the consumer loop's close).
        let consumer = self.consumer;
        let _ = std::thread::Builder::new()
            .name("close-dead-letters".into())
            .spawn(move || drop(consumer));
    }

    /// Records one entry, retrying while the database is unavailable. False if shutdown came
    /// first (the offset is then not stored, and the next owner records it).
    async fn record(&self, entry: &Entry, shutdown: &CancellationToken) -> bool {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match store::record(&self.pool, entry).await {
                Ok(new) => {
                    if new {
                        self.recorded.inc();
                    }
                    if attempt > 1 {
                        self.health.recovered(COMPONENT);
                    }
                    return true;
                }
                Err(e) if orderflow_db::is_transient(&e) => {
                    let delay = orderflow_retry::backoff(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                    );
                    tracing::warn!(error = %e, ?delay, "cannot record a dead letter, retrying");
                    self.health.degraded(COMPONENT, format!("database: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
                Err(e) => {
                    // Not a passing outage: the row can never be written. Logged, and skipped
                    // so one bad row does not hold every later dead letter.
                    tracing::error!(error = %e, topic = %entry.topic, offset = entry.offset, "dead letter refused by the database: not recorded");
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_matches_each_consumers_dead_letters_of_the_event_topics_only() {
        let topics = Topics::with_prefix("t1.x-");
        let re = pattern(&topics);
        assert_eq!(
            re,
            r"^(t1\.x-orders|t1\.x-order-status|t1\.x-payments|t1\.x-inventory)\.[^.]+\.dlq$"
        );
    }

    #[test]
    fn a_dead_letter_topic_is_told_from_the_others_by_name_as_the_pattern_does() {
        let topics = Topics::with_prefix("t-");
        assert!(is_dead_letter_topic(&topics, "t-orders.payment.dlq"));
        assert!(is_dead_letter_topic(&topics, "t-order-status.history.dlq"));
        assert!(!is_dead_letter_topic(&topics, "t-orders"));
        assert!(!is_dead_letter_topic(&topics, "u-orders.payment.dlq"));
        assert!(!is_dead_letter_topic(&topics, "t-orders.a.b.dlq"));
    }

    fn dead_letter(key: &[u8]) -> StoredMessage {
        let h = |k: &str, v: &str| (k.to_owned(), Some(v.as_bytes().to_vec()));
        StoredMessage {
            topic: "orders.payment.dlq".into(),
            partition: 0,
            offset: 4,
            key: Some(key.to_vec()),
            payload: Some(b"not avro".to_vec()),
            headers: vec![
                h(dlq::ORIGIN_TOPIC, "orders"),
                h(dlq::ORIGIN_PARTITION, "0"),
                h(dlq::ORIGIN_OFFSET, "17"),
                h(dlq::CONSUMER_GROUP, "t-payment-group"),
                h(dlq::ERROR_CLASS, "undecodable"),
                h(dlq::ERROR_MESSAGE, "no magic byte"),
                h(dlq::ATTEMPTS, "1"),
                h(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
            timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_000),
        }
    }

    #[test]
    fn a_dead_letter_is_placed_in_its_orders_story_from_its_key_and_headers() {
        let order = uuid::Uuid::now_v7();
        let entry = entry(&dead_letter(order.to_string().as_bytes())).unwrap();
        assert_eq!(entry.order_id, order);
        assert_eq!(entry.event_type, DEAD_LETTERED);
        assert_eq!(entry.producer, "payment");
        assert_eq!(
            entry.summary,
            "payment gave up on orders/0/17 after 1 attempt: undecodable: no magic byte"
        );
        assert_eq!(entry.occurred_at.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(
            entry.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            (entry.topic.as_str(), entry.offset),
            ("orders.payment.dlq", 4)
        );
    }

    #[test]
    fn the_consumer_is_named_by_the_dead_letter_topic() {
        assert_eq!(
            consumer_of("t-orders.payment.dlq", "t-orders"),
            Some("payment")
        );
        assert_eq!(consumer_of("t-orders.payment.dlq", "t-payments"), None);
        assert_eq!(consumer_of("t-orders..dlq", "t-orders"), None);
    }

    #[test]
    fn a_dead_letter_whose_key_is_no_order_id_belongs_to_no_story() {
        let refused = entry(&dead_letter(b"garbage")).unwrap_err();
        assert_eq!(refused, r#"key "garbage" is not an order id"#);
    }
}
