//! Rebuilding every timeline from the log (`orderflow replay history`). The history service
//! is a projection: its table can be thrown away and built again from what the topics hold,
//! with the code the live service runs (`handler::entry`, [`dead_letters::entry`]).
//!
//! The service must be stopped (both of its groups empty). The rows from the start on are
//! deleted and rebuilt in one transaction, so a reader sees the old timelines until the new
//! ones replace them, and a failed rebuild changes nothing. Then both groups are moved to
//! where the rebuild stopped, and the service, started again, continues from there.

use std::time::Instant;

use orderflow_events::EventCodec;
use orderflow_platform::replay::{self, Range, Reader, Start};
use orderflow_platform::{KafkaArgs, MessageContext};
use sqlx::PgPool;

use crate::{dead_letters, handler, input_topics, store};

/// The name of the service (and of its consumer group).
pub const SERVICE: &str = "history";

/// Messages applied per read.
const BATCH: usize = 500;

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Messages read, events and dead letters and skipped ones together.
    pub messages: u64,
    /// Events recorded.
    pub events: u64,
    /// Dead letters recorded.
    pub dead_letters: u64,
    /// Messages in no timeline: bytes that are not events (their dead letters tell their
    /// story), or dead letters whose key is not an order id.
    pub skipped: u64,
    /// Topics and partitions read.
    pub topics: usize,
    pub partitions: usize,
    /// Timeline rows after the rebuild.
    pub rows: i64,
    pub seconds: f64,
}

/// Rebuilds the timelines from `start`, reporting `(read, total)` messages to `progress`
/// after each batch.
pub async fn rebuild(
    kafka: &KafkaArgs,
    codec: &EventCodec,
    pool: &PgPool,
    start: Start,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Summary> {
    let began = Instant::now();
    let topics = kafka.topics();
    let event_group = kafka.group(SERVICE);
    let dead_letter_group = kafka.group(dead_letters::GROUP);
    replay::ensure_stopped(kafka, &event_group, SERVICE).await?;
    replay::ensure_stopped(kafka, &dead_letter_group, SERVICE).await?;

    let events = input_topics(&topics);
    let mut dead: Vec<String> = replay::topic_names(kafka)
        .await?
        .into_iter()
        .filter(|name| dead_letters::is_dead_letter_topic(&topics, name))
        .collect();
    dead.sort();
    let event_ranges = replay::ranges(kafka, &events, start).await?;
    let dead_ranges = replay::ranges(kafka, &dead, start).await?;
    let total: u64 = event_ranges
        .iter()
        .chain(&dead_ranges)
        .map(|r| r.len() as u64)
        .sum();
    let mut summary = Summary {
        topics: events.len() + dead.len(),
        partitions: event_ranges.len() + dead_ranges.len(),
        ..Summary::default()
    };
    progress(0, total);

    let mut tx = pool.begin().await?;
    match start {
        Start::Beginning => {
            sqlx::query("TRUNCATE order_timeline")
                .execute(&mut *tx)
                .await?;
        }
        // A partition is read again from its first message logged at or after the time, so
        // exactly the rows of messages logged since are rebuilt.
        Start::Time(t) => {
            sqlx::query("DELETE FROM order_timeline WHERE logged_at >= $1")
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
    }
    let mut reader = Reader::new(kafka, &event_ranges)?;
    while let Some(batch) = reader.next_batch(BATCH).await? {
        for message in &batch {
            summary.messages += 1;
            match codec.decode(message.payload.as_deref()).await {
                Ok(event) => {
                    let ctx = MessageContext::of_stored(message);
                    match handler::entry(&event, &ctx) {
                        Ok(entry) => {
                            store::record(&mut *tx, &entry).await?;
                            summary.events += 1;
                        }
                        Err(_) => summary.skipped += 1,
                    }
                }
                // The registry is down: nothing is committed, the rebuild can run again.
                Err(e) if e.is_transient() => {
                    anyhow::bail!("cannot decode {}: {e}", message.location())
                }
                Err(_) => summary.skipped += 1,
            }
        }
        progress(summary.messages, total);
    }
    let mut reader = Reader::new(kafka, &dead_ranges)?;
    while let Some(batch) = reader.next_batch(BATCH).await? {
        for message in &batch {
            summary.messages += 1;
            match dead_letters::entry(message) {
                Ok(entry) => {
                    store::record(&mut *tx, &entry).await?;
                    summary.dead_letters += 1;
                }
                Err(_) => summary.skipped += 1,
            }
        }
        progress(summary.messages, total);
    }
    summary.rows = sqlx::query_scalar("SELECT count(*) FROM order_timeline")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;

    // The groups continue after what was rebuilt. Were this to fail, the rows stay right and
    // the service re-reads from its old offsets, which records nothing twice.
    replay::commit_offsets(kafka, &event_group, &ends(&event_ranges)).await?;
    replay::commit_offsets(kafka, &dead_letter_group, &ends(&dead_ranges)).await?;
    summary.seconds = began.elapsed().as_secs_f64();
    Ok(summary)
}

/// Where a group continues after `ranges`: each partition's end.
fn ends(ranges: &[Range]) -> Vec<(String, i32, i64)> {
    ranges
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.end))
        .collect()
}
