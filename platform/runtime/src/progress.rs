//! A consumer group's progress on every partition of its input topics, as seen from any one of
//! its instances: the group's committed offset against the partition's high watermark. A
//! partition with lag whose committed offset has not moved for longer than a threshold is
//! *stalled* (its consumer is hung, dead without its partitions being reassigned, or stuck in
//! a rebalance), and every instance's `/health` says so, naming group, topic and partition.
//! This covers partitions the instance does not own, which its own consumer lag cannot show.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Health, KafkaArgs, Metrics};

/// Where one partition stands for the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next offset it will read), if it committed one.
    pub committed: Option<i64>,
    /// The oldest offset still in the partition.
    pub low: i64,
    /// The offset the next produced record will get.
    pub high: i64,
}

impl PartitionProgress {
    /// Records the group has not processed yet. Without a commit the group starts from the
    /// oldest record (`auto.offset.reset=earliest`).
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// A partition whose lag has not gone down for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
    /// How long the committed offset has not moved while there was lag.
    pub for_: Duration,
}

/// Tells stalled partitions from slow ones, from successive observations. Pure: the caller
/// supplies the time, so it is tested without a clock or a broker.
#[derive(Debug)]
pub struct StallDetector {
    threshold: Duration,
    /// Per partition: the committed offset last seen and since when it has been waiting with
    /// lag at that offset (None while it has no lag).
    seen: BTreeMap<(String, i32), (Option<i64>, Option<Instant>)>,
}

impl StallDetector {
    pub fn new(threshold: Duration) -> Self {
        StallDetector {
            threshold,
            seen: BTreeMap::new(),
        }
    }

    /// Takes one observation of every partition and returns those stalled now.
    pub fn observe(&mut self, now: Instant, partitions: &[PartitionProgress]) -> Vec<Stall> {
        let mut stalls = Vec::new();
        let mut seen = BTreeMap::new();
        for p in partitions {
            let key = (p.topic.clone(), p.partition);
            let waiting_since = match self.seen.get(&key) {
                _ if p.lag() == 0 => None,
                // Same offset as before, with lag: keep the time it started waiting.
                Some((committed, since)) if *committed == p.committed => since.or(Some(now)),
                // First seen, or it moved: the wait starts now.
                _ => Some(now),
            };
            if let Some(since) = waiting_since {
                let waited = now.saturating_duration_since(since);
                if waited >= self.threshold {
                    stalls.push(Stall {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        lag: p.lag(),
                        for_: waited,
                    });
                }
            }
            seen.insert(key, (p.committed, waiting_since));
        }
        self.seen = seen;
        stalls
    }
}

/// The reason `/health` gives for `stalls` of `group`.
pub fn describe(group: &str, stalls: &[Stall]) -> String {
    let parts: Vec<String> = stalls
        .iter()
        .map(|s| {
            format!(
                "topic {} partition {}: lag {}, committed offset unchanged for {}s",
                s.topic,
                s.partition,
                s.lag,
                s.for_.as_secs()
            )
        })
        .collect();
    format!("group {group} is stalled on {}", parts.join("; "))
}

/// Reads the group's committed offsets and the watermarks of every partition of `topics`,
/// with a client that does not join the group (an OffsetFetch, as `kafka-consumer-groups`
/// does). Blocking: call it from `spawn_blocking`.
pub fn read(
    kafka: &KafkaArgs,
    group: &str,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionProgress>, rdkafka::error::KafkaError> {
    read_with(&reader(kafka, group)?, topics, timeout)
}

/// A client that reads `group`'s committed offsets without joining it; reusable across reads.
pub fn reader(kafka: &KafkaArgs, group: &str) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
}

/// [`read`] with a client made by [`reader`]. Blocking: call it from `spawn_blocking`.
pub fn read_with(
    client: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<PartitionProgress>, rdkafka::error::KafkaError> {
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = client.committed_offsets(list.clone(), timeout)?;
    let mut progress = Vec::new();
    for element in list.elements() {
        let (low, high) = client.fetch_watermarks(element.topic(), element.partition(), timeout)?;
        let committed = committed
            .find_partition(element.topic(), element.partition())
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        progress.push(PartitionProgress {
            topic: element.topic().to_owned(),
            partition: element.partition(),
            committed,
            low,
            high,
        });
    }
    Ok(progress)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupPartitionLabels {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// The gauges of group progress: lag and stalled partitions per group.
#[derive(Clone)]
pub struct ProgressMetrics {
    lag: Family<GroupPartitionLabels, Gauge>,
    stalled: Family<GroupLabels, Gauge>,
}

impl ProgressMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = ProgressMetrics {
            lag: Family::default(),
            stalled: Family::default(),
        };
        metrics.register(
            "group_lag",
            "Records a consumer group has not processed, per partition of its input topics (all of them, not only this instance's)",
            m.lag.clone(),
        );
        metrics.register(
            "group_stalled_partitions",
            "Partitions with lag whose committed offset has not moved for longer than the stall threshold",
            m.stalled.clone(),
        );
        m
    }

    fn record(&self, group: &str, partitions: &[PartitionProgress], stalls: usize) {
        for p in partitions {
            self.lag
                .get_or_create(&GroupPartitionLabels {
                    group: group.to_owned(),
                    topic: p.topic.clone(),
                    partition: p.partition,
                })
                .set(p.lag());
        }
        self.stalled
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .set(stalls as i64);
    }
}

/// What [`watch`] watches and how often.
#[derive(Debug, Clone)]
pub struct Watch {
    pub kafka: KafkaArgs,
    pub group: String,
    pub topics: Vec<String>,
    /// How long a partition may wait with lag at one committed offset before it is stalled.
    pub threshold: Duration,
    pub interval: Duration,
}

/// The health component name under which stalls are reported.
pub const HEALTH_COMPONENT: &str = "group-progress";

/// Watches the group until `shutdown`: every `interval`, reads every partition's progress,
/// exports it, and marks `health` degraded while a partition is stalled. A failed read is
/// logged and retried at the next interval; it changes nothing (the consumer loop reports
/// a broker that is down).
pub async fn watch(
    watch: Watch,
    health: Health,
    metrics: ProgressMetrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut detector = StallDetector::new(watch.threshold);
    let mut client: Option<Arc<BaseConsumer>> = None;
    let mut ticks = tokio::time::interval(watch.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // One client for the whole watch (made at the first tick, again after a failure to
        // make it), not a new connection to the broker every interval.
        let client = match &client {
            Some(client) => Arc::clone(client),
            None => match reader(&watch.kafka, &watch.group) {
                Ok(made) => client.insert(Arc::new(made)).clone(),
                Err(error) => {
                    tracing::debug!(group = %watch.group, %error, "cannot make the progress reader");
                    continue;
                }
            },
        };
        let topics = watch.topics.clone();
        let reading = tokio::task::spawn_blocking(move || {
            read_with(&client, &topics, Duration::from_secs(5))
        });
        // A read can take a while against a slow broker (one request per partition); it
        // must never hold up a shutdown, which lets the process go within its grace period.
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = reading => result,
        };
        let partitions = match result {
            Ok(Ok(partitions)) => partitions,
            Ok(Err(error)) => {
                tracing::debug!(group = %watch.group, %error, "cannot read the group's progress");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "group progress reader panicked");
                continue;
            }
        };
        let stalls = detector.observe(Instant::now(), &partitions);
        metrics.record(&watch.group, &partitions, stalls.len());
        if stalls.is_empty() {
            health.recovered(HEALTH_COMPONENT);
        } else {
            let reason = describe(&watch.group, &stalls);
            tracing::warn!(group = %watch.group, stalled = stalls.len(), %reason, "consumer group stalled");
            health.degraded(HEALTH_COMPONENT, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(partition: i32, committed: Option<i64>, high: i64) -> PartitionProgress {
        PartitionProgress {
            topic: "orders".into(),
            partition,
            committed,
            low: 0,
            high,
        }
    }

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn lag_counts_from_the_commit_or_the_oldest_record() {
        assert_eq!(p(0, Some(7), 10).lag(), 3);
        assert_eq!(p(0, None, 10).lag(), 10);
        let trimmed = PartitionProgress {
            low: 8,
            ..p(0, Some(2), 10)
        };
        assert_eq!(trimmed.lag(), 2, "records removed by retention are not lag");
        assert_eq!(p(0, Some(10), 10).lag(), 0);
    }

    #[test]
    fn a_partition_with_lag_and_no_progress_stalls_after_the_threshold() {
        let mut d = StallDetector::new(T);
        let t0 = Instant::now();
        assert!(d.observe(t0, &[p(0, Some(5), 9)]).is_empty());
        assert!(d.observe(t0 + T / 2, &[p(0, Some(5), 12)]).is_empty());
        let stalls = d.observe(t0 + T, &[p(0, Some(5), 12)]);
        assert_eq!(stalls.len(), 1);
        assert_eq!(
            (stalls[0].partition, stalls[0].lag, stalls[0].for_),
            (0, 7, T)
        );
        assert!(
            describe("payment", &stalls)
                .contains("group payment is stalled on topic orders partition 0: lag 7")
        );
    }

    #[test]
    fn progress_restarts_the_clock_and_a_caught_up_partition_never_stalls() {
        let mut d = StallDetector::new(T);
        let t0 = Instant::now();
        d.observe(t0, &[p(0, Some(5), 9), p(1, Some(3), 3)]);
        // Partition 0 moved on (slowly); partition 1 has nothing to do.
        assert!(
            d.observe(t0 + T, &[p(0, Some(6), 9), p(1, Some(3), 3)])
                .is_empty()
        );
        assert!(
            d.observe(t0 + T + T / 2, &[p(0, Some(6), 9), p(1, Some(3), 3)])
                .is_empty()
        );
        assert_eq!(
            d.observe(t0 + 2 * T, &[p(0, Some(6), 9), p(1, Some(3), 3)])
                .len(),
            1
        );
        // Caught up: no longer stalled, and a new backlog starts a new wait.
        assert!(d.observe(t0 + 3 * T, &[p(0, Some(9), 9)]).is_empty());
        assert!(
            d.observe(t0 + 3 * T + T / 2, &[p(0, Some(9), 11)])
                .is_empty()
        );
        assert_eq!(d.observe(t0 + 4 * T + T / 2, &[p(0, Some(9), 11)]).len(), 1);
    }

    #[test]
    fn a_group_that_never_committed_stalls_too() {
        let mut d = StallDetector::new(T);
        let t0 = Instant::now();
        d.observe(t0, &[p(2, None, 4)]);
        assert_eq!(d.observe(t0 + T, &[p(2, None, 4)]).len(), 1);
    }
}
