//! Rebuilding the figures from the log (`orderflow replay analytics --from-beginning`), with
//! the platform's consumer code: every event of the input topics goes through
//! [`apply_batch`], as the live consumer loop applies it, into emptied tables.
//!
//! Only from the beginning: the figures are sums, and what a message added cannot be told
//! apart from the rest to be taken out again. The service must be stopped (its group
//! empty); the rebuild is one transaction (readers see the old figures until it commits, a
//! failed one changes nothing), then the group is moved to where it stopped.

use std::time::Instant;

use orderflow_events::EventCodec;
use orderflow_platform::consumer::apply_batch;
use orderflow_platform::replay::{self, Reader, Start};
use orderflow_platform::{KafkaArgs, MessageContext};
use sqlx::PgPool;

use crate::{AnalyticsHandler, input_topics, store};

/// The name of the service, its consumer group and its dedup scope.
pub const SERVICE: &str = "analytics";

/// Messages applied per batch transaction's statement group.
const BATCH: usize = 500;

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub messages: u64,
    /// Events applied (each event id once).
    pub events: u64,
    /// Messages that are no event (their dead letters tell their story).
    pub skipped: u64,
    pub partitions: usize,
    pub seconds: f64,
}

/// Rebuilds the figures from `start`, which must be [`Start::Beginning`], reporting
/// `(read, total)` to `progress` after each batch.
pub async fn rebuild(
    kafka: &KafkaArgs,
    codec: &EventCodec,
    pool: &PgPool,
    start: Start,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        start == Start::Beginning,
        "the analytics figures are sums: what messages after {start} added cannot be taken out \
         of them again, so they are rebuilt only from the beginning (--from-beginning)"
    );
    let began = Instant::now();
    let topics = kafka.topics();
    let group = kafka.group(SERVICE);
    replay::ensure_stopped(kafka, &group, SERVICE).await?;
    let ranges = replay::ranges(kafka, &input_topics(&topics), start).await?;
    let total: u64 = ranges.iter().map(|r| r.len() as u64).sum();
    let mut summary = Summary {
        partitions: ranges.len(),
        ..Summary::default()
    };
    progress(0, total);
    let mut tx = pool.begin().await?;
    store::clear(&mut tx, SERVICE).await?;
    let mut reader = Reader::new(kafka, &ranges)?;
    while let Some(batch) = reader.next_batch(BATCH).await? {
        let mut events = Vec::with_capacity(batch.len());
        for message in &batch {
            summary.messages += 1;
            match codec.decode(message.payload.as_deref()).await {
                Ok(event) => events.push((event, MessageContext::of_stored(message))),
                // The registry is down: nothing is committed, the rebuild can run again.
                Err(e) if e.is_transient() => {
                    anyhow::bail!("cannot decode {}: {e}", message.location())
                }
                Err(_) => summary.skipped += 1,
            }
        }
        let applied = apply_batch(&mut tx, SERVICE, &topics, &AnalyticsHandler, &events)
            .await
            .map_err(|failure| anyhow::anyhow!("{failure}"))?;
        summary.events += applied
            .iter()
            .filter(|a| matches!(a, orderflow_platform::consumer::Applied::Processed(_)))
            .count() as u64;
        progress(summary.messages, total);
    }
    tx.commit().await?;
    let ends: Vec<(String, i32, i64)> = ranges
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.end))
        .collect();
    replay::commit_offsets(kafka, &group, &ends).await?;
    summary.seconds = began.elapsed().as_secs_f64();
    Ok(summary)
}
