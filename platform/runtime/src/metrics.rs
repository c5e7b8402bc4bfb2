//! Prometheus metrics: one [`Metrics`] registry per process, passed to what records into it
//! and served as text at `GET /metrics` on the admin endpoint.
//!
//! Hot paths hold handles resolved once for their labels (a counter is a shared atomic), so
//! recording a consumed or produced event costs neither an allocation nor a lock.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// The content type of what `/metrics` serves: prometheus-client writes OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A process's metric registry; every name gets the `orderflow_` prefix. Clones share it.
#[derive(Clone)]
pub struct Metrics {
    // Locked only to register (at start-up) and to render (per scrape), never to record.
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("orderflow"))),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// Adds `metric` as `orderflow_<name>` (counters also get `_total`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .expect("metrics lock")
            .register(name, help, metric);
    }

    /// Adds `metric` as `orderflow_<name>_<unit>`.
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.registry
            .lock()
            .expect("metrics lock")
            .register_with_unit(name, help, unit, metric);
    }

    /// Every metric in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().expect("metrics lock"),
        )
        .expect("writing to a String cannot fail");
        out
    }

    /// The `/metrics` route, to merge into the admin endpoint.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, OPENMETRICS)], metrics.render()) }
            }),
        )
    }
}

/// What happened to a consumed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its effect was committed.
    Processed,
    /// Its event id was already in `processed_events`: skipped.
    Duplicate,
    /// Published to the dead-letter topic.
    DeadLettered,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered => "dead_lettered",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumedLabels {
    consumer: String,
    topic: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLetterLabels {
    consumer: String,
    topic: String,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    consumer: String,
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Decode-to-commit latency buckets: 1 ms doubling to about 16 s.
fn processing_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Messages-per-batch buckets: 1 doubling to 2,048, past the largest batch a consumer takes
/// (`--consumer-batch`, 256 by default) and the largest relay round (2,000 rows).
fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// The metrics of the event pipeline every service runs: consumer loops, outbox relay and
/// retention purge. Registered once per process; clones share the families.
#[derive(Clone)]
pub struct PipelineMetrics {
    consumed: Family<ConsumedLabels, Counter>,
    processing: HistogramFamily<ConsumerLabels>,
    batches: HistogramFamily<ConsumerLabels>,
    retries: Family<ConsumerLabels, Counter>,
    dead_letters: Family<DeadLetterLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    produced: Family<TopicLabels, Counter>,
    outbox_backlog: Gauge,
    relay_rounds: HistogramFamily<PhaseLabels>,
    relay_rows: Histogram,
    quarantined: Family<TopicLabels, Counter>,
    quarantine_rows: Gauge,
    purged: Family<TableLabels, Counter>,
}

impl PipelineMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let pipeline = PipelineMetrics {
            consumed: Family::default(),
            processing: Family::new_with_constructor(processing_histogram),
            batches: Family::new_with_constructor(size_histogram),
            retries: Family::default(),
            dead_letters: Family::default(),
            lag: Family::default(),
            produced: Family::default(),
            outbox_backlog: Gauge::default(),
            relay_rounds: Family::new_with_constructor(processing_histogram),
            relay_rows: size_histogram(),
            quarantined: Family::default(),
            quarantine_rows: Gauge::default(),
            purged: Family::default(),
        };
        metrics.register(
            "events_consumed",
            "Events consumed, by consumer, topic and outcome (processed, duplicate, dead_lettered)",
            pipeline.consumed.clone(),
        );
        metrics.register_with_unit(
            "event_processing",
            "Time from decoding an event to committing its effect, by consumer",
            Unit::Seconds,
            pipeline.processing.clone(),
        );
        metrics.register(
            "consumer_batch_messages",
            "Messages in each batch a consumer took from its client, by consumer: what arrived \
             together, up to --consumer-batch",
            pipeline.batches.clone(),
        );
        metrics.register(
            "consumer_retries",
            "Transient failures retried by a consumer (database, registry, provider down)",
            pipeline.retries.clone(),
        );
        metrics.register(
            "dead_letters",
            "Messages published to a dead-letter topic, by consumer, origin topic and error class",
            pipeline.dead_letters.clone(),
        );
        metrics.register(
            "consumer_lag",
            "Messages behind the high watermark, by consumer, topic and partition",
            pipeline.lag.clone(),
        );
        metrics.register(
            "events_produced",
            "Outbox events the relay published and the broker acknowledged, by topic",
            pipeline.produced.clone(),
        );
        metrics.register(
            "outbox_backlog",
            "Outbox rows not yet published",
            pipeline.outbox_backlog.clone(),
        );
        metrics.register_with_unit(
            "outbox_relay_round",
            "Time of each phase of an outbox relay round that published rows: read (begin, \
             lock and encode), acknowledgement (first send to last acknowledgement), commit \
             (delete or mark, and commit)",
            Unit::Seconds,
            pipeline.relay_rounds.clone(),
        );
        metrics.register(
            "outbox_relay_round_rows",
            "Rows each outbox relay round read: what was waiting, up to the relay's batch",
            pipeline.relay_rows.clone(),
        );
        metrics.register(
            "outbox_quarantined",
            "Outbox rows set aside because they can never be published, by topic",
            pipeline.quarantined.clone(),
        );
        metrics.register(
            "outbox_quarantine_rows",
            "Outbox rows set aside now: each holds back its order's later events",
            pipeline.quarantine_rows.clone(),
        );
        metrics.register(
            "retention_purged_rows",
            "Rows deleted by the retention purge, by table",
            pipeline.purged.clone(),
        );
        pipeline
    }

    /// The handles of one consumer loop named `consumer`, resolved for `topics`.
    pub fn consumer(&self, consumer: &str, topics: &[&str]) -> ConsumerMetrics {
        let consumed = |topic: &str, outcome: Outcome| {
            self.consumed
                .get_or_create(&ConsumedLabels {
                    consumer: consumer.to_owned(),
                    topic: topic.to_owned(),
                    outcome: outcome.as_str(),
                })
                .clone()
        };
        let labels = ConsumerLabels {
            consumer: consumer.to_owned(),
        };
        ConsumerMetrics {
            consumer: consumer.to_owned(),
            topics: topics
                .iter()
                .map(|topic| TopicCounters {
                    topic: (*topic).to_owned(),
                    processed: consumed(topic, Outcome::Processed),
                    duplicate: consumed(topic, Outcome::Duplicate),
                    dead_lettered: consumed(topic, Outcome::DeadLettered),
                })
                .collect(),
            processing: self.processing.get_or_create(&labels).clone(),
            batches: self.batches.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            pipeline: self.clone(),
        }
    }

    /// The handles of the outbox relay for the topics it may publish to. A topic's series
    /// appears with its first event, so a service shows only the topics it produces.
    pub fn relay(&self, topics: &[&str]) -> RelayMetrics {
        RelayMetrics {
            produced: topics
                .iter()
                .map(|topic| ((*topic).to_owned(), OnceLock::new()))
                .collect(),
            read: self.relay_round(RelayPhase::Read),
            acknowledgement: self.relay_round(RelayPhase::Acknowledgement),
            commit: self.relay_round(RelayPhase::Commit),
            rows: self.relay_rows.clone(),
            pipeline: self.clone(),
        }
    }

    fn relay_round(&self, phase: RelayPhase) -> Histogram {
        self.relay_rounds
            .get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            })
            .clone()
    }

    /// The purge counter of a service's own `table` (`orderflow_retention_purged_rows_total`).
    pub fn purged_rows(&self, table: &'static str) -> Counter {
        self.purged.get_or_create(&TableLabels { table }).clone()
    }

    /// The counters of the retention purge.
    pub fn purge(&self) -> PurgeMetrics {
        let table = |table| self.purged.get_or_create(&TableLabels { table }).clone();
        PurgeMetrics {
            outbox: table("outbox"),
            processed_events: table("processed_events"),
        }
    }
}

struct TopicCounters {
    topic: String,
    processed: Counter,
    duplicate: Counter,
    dead_lettered: Counter,
}

/// What one consumer loop records.
#[derive(Clone)]
pub struct ConsumerMetrics {
    consumer: String,
    topics: Arc<[TopicCounters]>,
    processing: Histogram,
    batches: Histogram,
    retries: Counter,
    pipeline: PipelineMetrics,
}

impl ConsumerMetrics {
    /// Counts one event from `topic` that ended as `outcome`.
    pub fn consumed(&self, topic: &str, outcome: Outcome) {
        match self.topics.iter().find(|t| t.topic == topic) {
            Some(t) => match outcome {
                Outcome::Processed => t.processed.inc(),
                Outcome::Duplicate => t.duplicate.inc(),
                Outcome::DeadLettered => t.dead_lettered.inc(),
            },
            // Only a topic the loop was not built for; correct, just not pre-resolved.
            None => self
                .pipeline
                .consumed
                .get_or_create(&ConsumedLabels {
                    consumer: self.consumer.clone(),
                    topic: topic.to_owned(),
                    outcome: outcome.as_str(),
                })
                .inc(),
        };
    }

    /// Records how long an event took from decode to commit.
    pub fn processed_in(&self, elapsed: Duration) {
        self.processing.observe(elapsed.as_secs_f64());
    }

    /// Records how many messages a batch taken from the client held.
    pub fn batch_taken(&self, messages: usize) {
        self.batches.observe(messages as f64);
    }

    /// Counts one transient failure that will be retried.
    pub fn retry(&self) {
        self.retries.inc();
    }

    /// Counts a message from `topic` published to its dead-letter topic because of `class`.
    pub fn dead_lettered(&self, topic: &str, class: &'static str) {
        self.consumed(topic, Outcome::DeadLettered);
        self.dead_letter_published(topic, class);
    }

    /// Counts only the dead letter, for an event the loop had already counted as processed
    /// and its handler's later work gave up on (the notifications service's deliveries).
    pub fn dead_letter_published(&self, topic: &str, class: &'static str) {
        // Rare, so resolving the labels here costs nothing that matters.
        self.pipeline
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                consumer: self.consumer.clone(),
                topic: topic.to_owned(),
                class,
            })
            .inc();
    }

    /// Sets the lag of each `(topic, partition, lag)` and drops partitions not listed (no
    /// longer assigned), so a revoked partition does not report a stale lag forever.
    pub fn set_lag(&self, current: &[(String, i32, i64)], previous: &mut Vec<(String, i32)>) {
        let labels = |topic: &str, partition| PartitionLabels {
            consumer: self.consumer.clone(),
            topic: topic.to_owned(),
            partition,
        };
        for (topic, partition) in previous.iter() {
            if !current.iter().any(|(t, p, _)| t == topic && p == partition) {
                self.pipeline.lag.remove(&labels(topic, *partition));
            }
        }
        previous.clear();
        for (topic, partition, lag) in current {
            self.pipeline
                .lag
                .get_or_create(&labels(topic, *partition))
                .set(*lag);
            previous.push((topic.clone(), *partition));
        }
    }
}

/// What the outbox relay records.
pub struct RelayMetrics {
    /// Resolved on first use, then reused without allocating.
    produced: Vec<(String, OnceLock<Counter>)>,
    /// The time of each [`RelayPhase`].
    read: Histogram,
    acknowledgement: Histogram,
    commit: Histogram,
    /// The rows each round read.
    rows: Histogram,
    pipeline: PipelineMetrics,
}

/// The phases of one relay round that published rows
/// (`orderflow_outbox_relay_round_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPhase {
    /// Begin, lock the unpublished rows, encode them.
    Read,
    /// From the first send to the last acknowledgement from the broker.
    Acknowledgement,
    /// Delete (or mark) the acknowledged rows and commit.
    Commit,
}

impl RelayPhase {
    fn as_str(self) -> &'static str {
        match self {
            RelayPhase::Read => "read",
            RelayPhase::Acknowledgement => "acknowledgement",
            RelayPhase::Commit => "commit",
        }
    }
}

impl RelayMetrics {
    /// Counts one event the broker acknowledged on `topic`.
    pub fn produced(&self, topic: &str) {
        let counter = |topic: &str| {
            self.pipeline
                .produced
                .get_or_create(&TopicLabels {
                    topic: topic.to_owned(),
                })
                .clone()
        };
        match self.produced.iter().find(|(t, _)| t == topic) {
            Some((t, resolved)) => resolved.get_or_init(|| counter(t)).inc(),
            None => counter(topic).inc(),
        };
    }

    /// Records how long `phase` of a round took.
    pub fn round_phase(&self, phase: RelayPhase, elapsed: Duration) {
        let histogram = match phase {
            RelayPhase::Read => &self.read,
            RelayPhase::Acknowledgement => &self.acknowledgement,
            RelayPhase::Commit => &self.commit,
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Records how many rows a round read.
    pub fn round_read(&self, rows: usize) {
        self.rows.observe(rows as f64);
    }

    /// Sets the number of unpublished outbox rows.
    pub fn set_backlog(&self, rows: i64) {
        self.pipeline.outbox_backlog.set(rows);
    }

    /// Counts one row of `topic` set aside because it can never be published.
    pub fn quarantined(&self, topic: &str) {
        self.pipeline
            .quarantined
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc();
    }

    /// Sets the number of outbox rows set aside now.
    pub fn set_quarantine_rows(&self, rows: i64) {
        self.pipeline.quarantine_rows.set(rows);
    }
}

/// What the retention purge records.
#[derive(Clone)]
pub struct PurgeMetrics {
    outbox: Counter,
    processed_events: Counter,
}

impl PurgeMetrics {
    pub fn purged_outbox(&self, rows: u64) {
        self.outbox.inc_by(rows);
    }

    pub fn purged_processed_events(&self, rows: u64) {
        self.processed_events.inc_by(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample lines of `text` (no comments), for exact comparisons.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn consumer_and_relay_handles_record_under_their_labels() {
        let metrics = Metrics::new();
        let pipeline = PipelineMetrics::register(&metrics);
        let consumer = pipeline.consumer("order", &["payments", "inventory"]);
        consumer.consumed("payments", Outcome::Processed);
        consumer.consumed("payments", Outcome::Processed);
        consumer.consumed("payments", Outcome::Duplicate);
        consumer.consumed("elsewhere", Outcome::Processed);
        consumer.dead_lettered("inventory", "invalid_content");
        consumer.retry();
        consumer.processed_in(Duration::from_millis(3));
        consumer.batch_taken(1);
        consumer.batch_taken(3);
        consumer.batch_taken(256);
        let relay = pipeline.relay(&["orders", "payments"]);
        relay.produced("orders");
        relay.produced("order-status");
        relay.set_backlog(7);
        relay.round_read(2_000);
        relay.quarantined("orders");
        relay.set_quarantine_rows(1);
        pipeline.purge().purged_outbox(5);

        let text = metrics.render();
        let samples = samples(&text);
        for expected in [
            r#"orderflow_events_consumed_total{consumer="order",topic="payments",outcome="processed"} 2"#,
            r#"orderflow_events_consumed_total{consumer="order",topic="payments",outcome="duplicate"} 1"#,
            r#"orderflow_events_consumed_total{consumer="order",topic="payments",outcome="dead_lettered"} 0"#,
            r#"orderflow_events_consumed_total{consumer="order",topic="inventory",outcome="dead_lettered"} 1"#,
            r#"orderflow_events_consumed_total{consumer="order",topic="elsewhere",outcome="processed"} 1"#,
            r#"orderflow_dead_letters_total{consumer="order",topic="inventory",class="invalid_content"} 1"#,
            r#"orderflow_consumer_retries_total{consumer="order"} 1"#,
            r#"orderflow_event_processing_seconds_count{consumer="order"} 1"#,
            r#"orderflow_event_processing_seconds_bucket{le="0.004",consumer="order"} 1"#,
            r#"orderflow_event_processing_seconds_bucket{le="0.002",consumer="order"} 0"#,
            r#"orderflow_consumer_batch_messages_count{consumer="order"} 3"#,
            r#"orderflow_consumer_batch_messages_sum{consumer="order"} 260.0"#,
            r#"orderflow_consumer_batch_messages_bucket{le="1.0",consumer="order"} 1"#,
            r#"orderflow_consumer_batch_messages_bucket{le="2.0",consumer="order"} 1"#,
            r#"orderflow_consumer_batch_messages_bucket{le="4.0",consumer="order"} 2"#,
            r#"orderflow_consumer_batch_messages_bucket{le="128.0",consumer="order"} 2"#,
            r#"orderflow_consumer_batch_messages_bucket{le="256.0",consumer="order"} 3"#,
            r#"orderflow_outbox_relay_round_rows_count 1"#,
            r#"orderflow_outbox_relay_round_rows_bucket{le="1024.0"} 0"#,
            r#"orderflow_outbox_relay_round_rows_bucket{le="2048.0"} 1"#,
            r#"orderflow_events_produced_total{topic="orders"} 1"#,
            r#"orderflow_events_produced_total{topic="order-status"} 1"#,
            r#"orderflow_outbox_backlog 7"#,
            r#"orderflow_outbox_quarantined_total{topic="orders"} 1"#,
            r#"orderflow_outbox_quarantine_rows 1"#,
            r#"orderflow_retention_purged_rows_total{table="outbox"} 5"#,
            r#"orderflow_retention_purged_rows_total{table="processed_events"} 0"#,
        ] {
            assert!(samples.contains(&expected), "missing {expected} in\n{text}");
        }
        // Registered for the relay, but nothing was published there.
        assert!(
            !text.contains(r#"orderflow_events_produced_total{topic="payments"}"#),
            "{text}"
        );
    }

    #[test]
    fn lag_of_a_partition_no_longer_assigned_disappears() {
        let metrics = Metrics::new();
        let consumer = PipelineMetrics::register(&metrics).consumer("payment", &["orders"]);
        let mut assigned = Vec::new();
        consumer.set_lag(
            &[("orders".into(), 0, 4), ("orders".into(), 1, 0)],
            &mut assigned,
        );
        let text = metrics.render();
        assert!(
            samples(&text).contains(
                &r#"orderflow_consumer_lag{consumer="payment",topic="orders",partition="0"} 4"#
            ),
            "{text}"
        );
        consumer.set_lag(&[("orders".into(), 0, 0)], &mut assigned);
        let text = metrics.render();
        let samples = samples(&text);
        assert!(
            samples.contains(
                &r#"orderflow_consumer_lag{consumer="payment",topic="orders",partition="0"} 0"#
            ),
            "{text}"
        );
        assert!(
            !samples.iter().any(|s| s.contains(r#"partition="1""#)),
            "{text}"
        );
    }
}
