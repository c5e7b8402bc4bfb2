//! Dead-letter tooling: find the dead-letter topics, read what is in them, and redrive
//! selected messages to their origin topic once the cause is fixed.
//!
//! The consumer loop writes a message it can never process, unchanged, to
//! `<origin-topic>.<consumer>.dlq` with `dlq.*` headers naming its origin and the error (see
//! [`crate::consumer::dead_letter_topic`]). Redriving publishes the message again to its
//! origin topic with its key, payload and original headers. That is safe because every
//! consumer is idempotent: a consumer of the origin topic that had already applied the event
//! skips it by its event id. Kafka cannot delete single messages, so a redriven message stays
//! in the dead-letter topic until the topic's retention removes it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaArgs;
use crate::kafka;

/// The suffix every dead-letter topic name ends with.
pub const SUFFIX: &str = ".dlq";

/// Prefix of every header the consumer loop adds to a dead letter; redrive drops them.
pub const HEADER_PREFIX: &str = "dlq.";

// The headers the consumer loop adds to a dead letter, each with its value as text.

/// The topic the message came from; redrive publishes there.
pub const ORIGIN_TOPIC: &str = "dlq.origin.topic";
/// The partition of the origin topic it was read from.
pub const ORIGIN_PARTITION: &str = "dlq.origin.partition";
/// Its offset in that partition.
pub const ORIGIN_OFFSET: &str = "dlq.origin.offset";
/// Its key (lossy UTF-8; empty when it had none).
pub const ORIGIN_KEY: &str = "dlq.origin.key";
/// The consumer group that could not process it.
pub const CONSUMER_GROUP: &str = "dlq.consumer.group";
/// The short, stable class of the error (`unknown_schema`, `invalid_content`, ...).
pub const ERROR_CLASS: &str = "dlq.error.class";
/// The error in words.
pub const ERROR_MESSAGE: &str = "dlq.error.message";
/// When the first attempt failed (RFC 3339).
pub const FIRST_FAILURE: &str = "dlq.first.failure";
/// How many times it was tried.
pub const ATTEMPTS: &str = "dlq.attempts";

/// The header a redriven message carries: `<dlq topic>/<partition>/<offset>` it came from.
pub const REDRIVEN_FROM: &str = "dlq.redriven.from";

/// Why a message is dead-lettered, and where it came from: the `dlq.*` headers a dead letter
/// carries beside the message's own.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub origin_topic: &'a str,
    pub origin_partition: i32,
    pub origin_offset: i64,
    /// The message's key, if it had one.
    pub key: Option<&'a [u8]>,
    /// The consumer group that could not process it.
    pub group: &'a str,
    /// Short and stable: `unknown_schema`, `invalid_content`, `delivery_budget_exhausted`, ...
    pub class: &'a str,
    pub reason: &'a str,
    pub first_failure: DateTime<Utc>,
    pub attempts: u32,
}

impl Failure<'_> {
    /// `original` (the message's own headers) followed by the `dlq.*` headers.
    pub fn headers(&self, original: OwnedHeaders) -> OwnedHeaders {
        let partition = self.origin_partition.to_string();
        let offset = self.origin_offset.to_string();
        let key = self
            .key
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let first = self.first_failure.to_rfc3339();
        let attempts = self.attempts.to_string();
        let mut headers = original;
        for (k, v) in [
            (ORIGIN_TOPIC, self.origin_topic),
            (ORIGIN_PARTITION, partition.as_str()),
            (ORIGIN_OFFSET, offset.as_str()),
            (ORIGIN_KEY, key.as_str()),
            (CONSUMER_GROUP, self.group),
            (ERROR_CLASS, self.class),
            (ERROR_MESSAGE, self.reason),
            (FIRST_FAILURE, first.as_str()),
            (ATTEMPTS, attempts.as_str()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        headers
    }
}

/// How long one metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading the selected range of a topic may take in all.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the broker may take to acknowledge one redriven message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A dead-letter topic and how many messages it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTopic {
    pub name: String,
    pub partitions: usize,
    /// Sum over partitions of high minus low watermark.
    pub messages: i64,
}

/// One message as stored in a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Every header, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// When the message was produced (or appended, depending on the topic's setting).
    pub timestamp: Option<DateTime<Utc>>,
}

impl StoredMessage {
    /// The first header called `name`, as (lossy) text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The topic a dead letter came from (`dlq.origin.topic`).
    pub fn origin_topic(&self) -> Option<String> {
        self.header(ORIGIN_TOPIC).filter(|t| !t.is_empty())
    }

    /// Where the message is: `<topic>/<partition>/<offset>`.
    pub fn location(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A message of a topic named by offset, optionally with its partition. Parses from `O` or
/// `P/O`; a bare offset is accepted only for a topic with a single partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRef {
    pub partition: Option<i32>,
    pub offset: i64,
}

impl FromStr for MessageRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |part: &str, what: &str| -> Result<i64, String> {
            part.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{what} must be a non-negative integer, got {part:?}"))
        };
        match s.split_once('/') {
            Some((partition, offset)) => Ok(MessageRef {
                partition: Some(
                    i32::try_from(number(partition, "partition")?)
                        .map_err(|_| format!("partition {partition} is out of range"))?,
                ),
                offset: number(offset, "offset")?,
            }),
            None => Ok(MessageRef {
                partition: None,
                offset: number(s, "offset")?,
            }),
        }
    }
}

impl fmt::Display for MessageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{p}/{}", self.offset),
            None => write!(f, "{}", self.offset),
        }
    }
}

/// Which dead letters to redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every message the topic holds when the redrive starts.
    All,
    /// These messages, in this order.
    Messages(Vec<MessageRef>),
}

/// One redriven message: where it was in the dead-letter topic and where it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// `<dlq topic>/<partition>/<offset>`, also sent as the `dlq.redriven.from` header.
    pub from: String,
    pub origin_topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The dead-letter topics whose names start with `prefix` (empty: all), with their message
/// counts, sorted by name.
#[tracing::instrument(skip_all, fields(prefix))]
pub async fn list_dead_letter_topics(
    kafka: &KafkaArgs,
    prefix: &str,
) -> anyhow::Result<Vec<DeadLetterTopic>> {
    let consumer = reader(kafka)?;
    let prefix = prefix.to_owned();
    // Metadata and watermark requests block: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(None, METADATA_TIMEOUT)
            .context("cannot read the broker's topic list")?;
        let mut topics = Vec::new();
        for topic in metadata.topics() {
            let name = topic.name();
            if !name.ends_with(SUFFIX) || !name.starts_with(&prefix) {
                continue;
            }
            let mut messages = 0;
            for partition in topic.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(name, partition.id(), METADATA_TIMEOUT)
                    .with_context(|| {
                        format!(
                            "cannot read the offsets of {name} partition {}",
                            partition.id()
                        )
                    })?;
                messages += (high - low).max(0);
            }
            topics.push(DeadLetterTopic {
                name: name.to_owned(),
                partitions: topic.partitions().len(),
                messages,
            });
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    })
    .await?
}

/// Up to `limit` messages of the dead-letter topic `topic`, from `from_offset` in each
/// partition, ordered by partition and offset. Only what the topic held when the call
/// started is read.
pub async fn read_dead_letters(
    kafka: &KafkaArgs,
    topic: &str,
    from_offset: i64,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    ensure_dead_letter_topic(topic)?;
    read_messages(kafka, topic, from_offset, limit).await
}

/// Up to `limit` messages of any topic, from `from_offset` in each partition, ordered by
/// partition and offset. Only what the topic held when the call started is read.
#[tracing::instrument(skip(kafka))]
pub async fn read_messages(
    kafka: &KafkaArgs,
    topic: &str,
    from_offset: i64,
    limit: usize,
) -> anyhow::Result<Vec<StoredMessage>> {
    let consumer = reader(kafka)?;
    let ranges: Vec<(i32, i64, i64)> = watermarks(&consumer, topic)
        .await?
        .into_iter()
        .map(|(partition, (low, high))| (partition, from_offset.max(low), high))
        .collect();
    let mut messages = read_ranges(&consumer, topic, &ranges).await?;
    messages.truncate(limit);
    Ok(messages)
}

/// Publishes the selected dead letters of `topic` to their origin topics, each with its key,
/// payload and original headers (the `dlq.*` headers dropped) plus `dlq.redriven.from`, one
/// after another in the order selected, each acknowledged by the broker before the next.
/// Every selected message is checked (it exists, it names its origin) before any is sent.
/// Nothing is removed from the dead-letter topic: Kafka cannot delete single messages.
#[tracing::instrument(skip(kafka))]
pub async fn redrive(
    kafka: &KafkaArgs,
    topic: &str,
    selection: &Selection,
) -> anyhow::Result<Vec<Redriven>> {
    ensure_dead_letter_topic(topic)?;
    let selected = select(kafka, topic, selection).await?;
    for message in &selected {
        anyhow::ensure!(
            message.origin_topic().is_some(),
            "{} has no {ORIGIN_TOPIC} header: not a dead letter written by orderflow, nothing was redriven",
            message.location()
        );
    }
    let producer = kafka::producer(kafka)?;
    let mut redriven = Vec::with_capacity(selected.len());
    for message in &selected {
        let origin = message.origin_topic().expect("checked above");
        let from = message.location();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            if !key.starts_with(HEADER_PREFIX) {
                headers = headers.insert(Header {
                    key: key.as_str(),
                    value: value.as_deref(),
                });
            }
        }
        headers = headers.insert(Header {
            key: REDRIVEN_FROM,
            value: Some(from.as_str()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&origin).headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &message.payload {
            record = record.payload(payload.as_slice());
        }
        let delivery = producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| {
                format!(
                    "the broker did not acknowledge {from} on {origin} ({} of {} redriven before it)",
                    redriven.len(),
                    selected.len()
                )
            })?;
        tracing::info!(%from, %origin, partition = delivery.partition, offset = delivery.offset, "redriven");
        redriven.push(Redriven {
            from,
            origin_topic: origin,
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    Ok(redriven)
}

fn ensure_dead_letter_topic(topic: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        topic.ends_with(SUFFIX),
        "{topic} is not a dead-letter topic (its name does not end with {SUFFIX})"
    );
    Ok(())
}

/// A consumer without a group that reads partitions it assigns itself and commits nothing.
fn reader(kafka: &KafkaArgs) -> anyhow::Result<Arc<StreamConsumer>> {
    let client_id = format!("orderflow-dlq-{:016x}", rand::random::<u64>());
    Ok(Arc::new(kafka::plain_consumer(kafka, &client_id)?))
}

/// `(low, high)` watermarks of every partition of `topic`.
async fn watermarks(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
            .with_context(|| format!("cannot read the metadata of {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
        partitions
            .into_iter()
            .map(|p| {
                let marks = consumer
                    .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                    .with_context(|| format!("cannot read the offsets of {topic} partition {p}"))?;
                Ok((p, marks))
            })
            .collect()
    })
    .await?
}

/// Reads `[start, end)` of each `(partition, start, end)`, ordered by partition and offset.
async fn read_ranges(
    consumer: &StreamConsumer,
    topic: &str,
    ranges: &[(i32, i64, i64)],
) -> anyhow::Result<Vec<StoredMessage>> {
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &(partition, start, end) in ranges {
        if start < end {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            pending.insert(partition, end);
        }
    }
    let mut messages = Vec::new();
    if pending.is_empty() {
        return Ok(messages);
    }
    consumer.assign(&assignment)?;
    let reading = async {
        while !pending.is_empty() {
            let message = consumer.recv().await?;
            let Some(&end) = pending.get(&message.partition()) else {
                continue;
            };
            if message.offset() < end {
                messages.push(stored(&message));
            }
            if message.offset() >= end - 1 {
                pending.remove(&message.partition());
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(READ_TIMEOUT, reading).await {
        Ok(result) => result?,
        Err(_) => anyhow::bail!(
            "timed out after {READ_TIMEOUT:?} reading {topic}: partitions {:?} not read to their end",
            pending.keys().collect::<Vec<_>>()
        ),
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    Ok(messages)
}

/// A copy of `message` as the topic stores it: place, key, payload, headers and timestamp.
pub fn stored(message: &impl Message) -> StoredMessage {
    StoredMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis),
    }
}

/// The selected messages of `topic`, each checked to exist.
async fn select(
    kafka: &KafkaArgs,
    topic: &str,
    selection: &Selection,
) -> anyhow::Result<Vec<StoredMessage>> {
    let consumer = reader(kafka)?;
    let marks = watermarks(&consumer, topic).await?;
    let refs = match selection {
        Selection::All => {
            let ranges: Vec<(i32, i64, i64)> = marks
                .iter()
                .map(|(&partition, &(low, high))| (partition, low, high))
                .collect();
            return read_ranges(&consumer, topic, &ranges).await;
        }
        Selection::Messages(refs) => refs,
    };
    anyhow::ensure!(!refs.is_empty(), "no message selected");
    let mut wanted: Vec<(i32, i64)> = Vec::with_capacity(refs.len());
    for r in refs {
        let partition = match r.partition {
            Some(p) => p,
            None if marks.len() == 1 => *marks.keys().next().expect("one partition"),
            None => anyhow::bail!(
                "{topic} has {} partitions: name the message as PARTITION/OFFSET, not {r}",
                marks.len()
            ),
        };
        let &(low, high) = marks
            .get(&partition)
            .with_context(|| format!("{topic} has no partition {partition}"))?;
        anyhow::ensure!(
            (low..high).contains(&r.offset),
            "{topic} has no message at partition {partition} offset {} (it holds offsets {low}..{high})",
            r.offset
        );
        wanted.push((partition, r.offset));
    }
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for &(partition, offset) in &wanted {
        let range = ranges.entry(partition).or_insert((offset, offset + 1));
        range.0 = range.0.min(offset);
        range.1 = range.1.max(offset + 1);
    }
    let ranges: Vec<(i32, i64, i64)> = ranges.into_iter().map(|(p, (s, e))| (p, s, e)).collect();
    let read = read_ranges(&consumer, topic, &ranges).await?;
    wanted
        .into_iter()
        .map(|(partition, offset)| {
            read.iter()
                .find(|m| m.partition == partition && m.offset == offset)
                .cloned()
                .with_context(|| {
                    format!("{topic} partition {partition} has no message at offset {offset}")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_refs_parse_with_or_without_a_partition() {
        assert_eq!(
            "17".parse::<MessageRef>(),
            Ok(MessageRef {
                partition: None,
                offset: 17
            })
        );
        assert_eq!(
            "2/5".parse::<MessageRef>(),
            Ok(MessageRef {
                partition: Some(2),
                offset: 5
            })
        );
        assert_eq!("2/5".parse::<MessageRef>().unwrap().to_string(), "2/5");
        for bad in ["", "-1", "x", "1/", "/3", "1/-2", "99999999999/1"] {
            assert!(bad.parse::<MessageRef>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn redrive_drops_every_header_orderflow_adds() {
        for header in [
            ORIGIN_TOPIC,
            ORIGIN_PARTITION,
            ORIGIN_OFFSET,
            ORIGIN_KEY,
            CONSUMER_GROUP,
            ERROR_CLASS,
            ERROR_MESSAGE,
            FIRST_FAILURE,
            ATTEMPTS,
        ] {
            assert!(
                header.starts_with(HEADER_PREFIX),
                "{header} would survive a redrive"
            );
        }
        // Redriving a message again replaces its `dlq.redriven.from` instead of adding one.
        assert!(REDRIVEN_FROM.starts_with(HEADER_PREFIX));
    }

    #[test]
    fn headers_read_as_text_and_name_the_origin() {
        let message = StoredMessage {
            topic: "orders.payment.dlq".into(),
            partition: 0,
            offset: 4,
            key: None,
            payload: None,
            headers: vec![
                ("traceparent".into(), Some(b"00-ab-cd-01".to_vec())),
                (ORIGIN_TOPIC.into(), Some(b"orders".to_vec())),
                ("empty".into(), None),
            ],
            timestamp: None,
        };
        assert_eq!(message.origin_topic().as_deref(), Some("orders"));
        assert_eq!(message.header("empty"), None);
        assert_eq!(message.location(), "orders.payment.dlq/0/4");
    }
}
