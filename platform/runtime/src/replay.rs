//! Rebuilding a projection from the log: where a consumer group starts again, reading what
//! the topics hold from there, and moving the group to where the rebuild stopped.
//!
//! A rebuild runs outside the group (the group's instances must be stopped: Kafka moves a
//! group's offsets only while it has no members), reads a fixed range of each partition
//! (from the start to the high watermark when it began), and then commits those ends as the
//! group's offsets, so the service continues after them when it starts again.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaArgs;
use crate::dlq::{self, StoredMessage};
use crate::kafka;

/// How long one metadata, watermark or offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a rebuild may wait for the next message of a range it has not read to its end.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a rebuild starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Everything the topics still hold.
    Beginning,
    /// The first message of each partition logged at or after this time.
    Time(DateTime<Utc>),
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Start::Beginning => f.write_str("the beginning"),
            Start::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// One partition's part of a rebuild: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl Range {
    pub fn len(&self) -> i64 {
        (self.end - self.start).max(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The members of consumer group `group` now: a rebuild may reset it only when there are none.
pub async fn group_members(kafka: &KafkaArgs, group: &str) -> anyhow::Result<usize> {
    let client: BaseConsumer = kafka::plain_config(kafka, &client_id()).create()?;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let list = client
            .fetch_group_list(Some(&group), REQUEST_TIMEOUT)
            .with_context(|| format!("cannot describe consumer group {group}"))?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum())
    })
    .await?
}

/// Refuses when group `group` has members, naming who must be stopped.
pub async fn ensure_stopped(kafka: &KafkaArgs, group: &str, service: &str) -> anyhow::Result<()> {
    let members = group_members(kafka, group).await?;
    anyhow::ensure!(
        members == 0,
        "consumer group {group} has {members} member(s): stop every {service} instance first \
         (Kafka moves a group's offsets only while it is empty; an instance stopped moments ago \
         counts until its session times out, 10 s by default)"
    );
    Ok(())
}

/// The names of the topics the broker holds.
pub async fn topic_names(kafka: &KafkaArgs) -> anyhow::Result<Vec<String>> {
    let client: BaseConsumer = kafka::plain_config(kafka, &client_id()).create()?;
    tokio::task::spawn_blocking(move || {
        let metadata = client
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .context("cannot read the broker's topic list")?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .collect())
    })
    .await?
}

/// The range of every partition of `topics` a rebuild from `start` reads: from `start` to the
/// partition's high watermark now.
pub async fn ranges(
    kafka: &KafkaArgs,
    topics: &[String],
    start: Start,
) -> anyhow::Result<Vec<Range>> {
    let client: BaseConsumer = kafka::plain_config(kafka, &client_id()).create()?;
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut ranges = Vec::new();
        for topic in &topics {
            let metadata = client
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .with_context(|| format!("cannot read the metadata of {topic}"))?;
            let partitions: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
            let mut by_time = TopicPartitionList::new();
            let mut marks = BTreeMap::new();
            for p in partitions {
                let (low, high) = client
                    .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                    .with_context(|| format!("cannot read the offsets of {topic} partition {p}"))?;
                marks.insert(p, (low, high));
                if let Start::Time(t) = start {
                    by_time.add_partition_offset(topic, p, Offset::Offset(t.timestamp_millis()))?;
                }
            }
            let from_time = match start {
                Start::Beginning => None,
                Start::Time(_) => Some(
                    client
                        .offsets_for_times(by_time, REQUEST_TIMEOUT)
                        .with_context(|| format!("cannot find {topic}'s offsets for {start}"))?,
                ),
            };
            for (p, (low, high)) in marks {
                let first = match &from_time {
                    None => low,
                    Some(found) => match found.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o.clamp(low, high),
                        // Nothing logged at or after the time: nothing to read again.
                        _ => high,
                    },
                };
                ranges.push(Range {
                    topic: topic.clone(),
                    partition: p,
                    start: first,
                    end: high,
                });
            }
        }
        Ok(ranges)
    })
    .await?
}

/// Reads ranges of partitions to their ends, a batch at a time.
pub struct Reader {
    consumer: Option<StreamConsumer>,
    /// The end of each partition not read to its end yet.
    pending: BTreeMap<(String, i32), i64>,
}

impl Reader {
    /// A reader of `ranges` (empty ones are skipped).
    pub fn new(kafka: &KafkaArgs, ranges: &[Range]) -> anyhow::Result<Reader> {
        let mut pending = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            assignment.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.start))?;
            pending.insert((r.topic.clone(), r.partition), r.end);
        }
        let consumer = if pending.is_empty() {
            None
        } else {
            let consumer: StreamConsumer = kafka::plain_config(kafka, &client_id()).create()?;
            consumer.assign(&assignment)?;
            Some(consumer)
        };
        Ok(Reader { consumer, pending })
    }

    /// Up to `max` next messages, in offset order within each partition (a batch may mix
    /// partitions); None once every range is read to its end.
    pub async fn next_batch(&mut self, max: usize) -> anyhow::Result<Option<Vec<StoredMessage>>> {
        let Some(consumer) = &self.consumer else {
            return Ok(None);
        };
        let mut batch = Vec::new();
        while !self.pending.is_empty() && batch.len() < max.max(1) {
            // Wait for the first message of a batch; take the rest only while they are there.
            let message = if batch.is_empty() {
                tokio::time::timeout(STALL_TIMEOUT, consumer.recv())
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "no message for {STALL_TIMEOUT:?} while {} partition(s) were not read to their end: {:?}",
                            self.pending.len(),
                            self.pending.keys().collect::<Vec<_>>()
                        )
                    })??
            } else {
                match futures::FutureExt::now_or_never(consumer.recv()) {
                    Some(message) => message?,
                    None => break,
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            let Some(&end) = self.pending.get(&key) else {
                continue;
            };
            let offset = message.offset();
            if offset < end {
                batch.push(dlq::stored(&message));
            }
            if offset >= end - 1 {
                self.pending.remove(&key);
            }
        }
        if batch.is_empty() && self.pending.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

/// Commits `offsets` (`(topic, partition, next offset)`) as the offsets of group `group`,
/// which must have no members ([`ensure_stopped`]).
pub async fn commit_offsets(
    kafka: &KafkaArgs,
    group: &str,
    offsets: &[(String, i32, i64)],
) -> anyhow::Result<()> {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    if list.count() == 0 {
        return Ok(());
    }
    let mut config = kafka::plain_config(kafka, &client_id());
    config.set("group.id", group);
    let client: BaseConsumer = config.create()?;
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        client
            .commit(&list, CommitMode::Sync)
            .with_context(|| format!("cannot move consumer group {group}'s offsets"))
    })
    .await?
}

/// Moves stopped group `group` (of `service`) back to `start` on `topics`, so that the
/// service, started again, reads its input again from there; returns how many messages it
/// will read again. For a service that is not a projection: what it already applied is
/// skipped by its dedup records, anything older than them takes effect again.
pub async fn rewind(
    kafka: &KafkaArgs,
    group: &str,
    service: &str,
    topics: &[String],
    start: Start,
) -> anyhow::Result<i64> {
    ensure_stopped(kafka, group, service).await?;
    let ranges = ranges(kafka, topics, start).await?;
    let starts: Vec<(String, i32, i64)> = ranges
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.start))
        .collect();
    commit_offsets(kafka, group, &starts).await?;
    Ok(ranges.iter().map(Range::len).sum())
}

fn client_id() -> String {
    format!("orderflow-replay-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_reads_as_a_user_would_write_it() {
        assert_eq!(Start::Beginning.to_string(), "the beginning");
        let t = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(Start::Time(t).to_string(), "2026-12-01T12:00:00+00:00");
    }

    #[test]
    fn a_range_counts_what_it_reads() {
        let r = Range {
            topic: "t".into(),
            partition: 0,
            start: 5,
            end: 9,
        };
        assert_eq!(r.len(), 4);
        assert!(
            Range {
                end: 5,
                ..r.clone()
            }
            .is_empty()
        );
        assert!(Range { end: 3, ..r }.is_empty());
    }
}
