//! Retention purge, so `outbox` and `processed_events` do not grow forever.
//!
//! Published outbox rows older than the outbox retention and dedup records older than the
//! dedup retention are deleted in bounded batches, one short statement each, so the purge
//! never holds locks for long or competes with the relay (which only touches unpublished
//! rows) and the consumers (which only insert). Unpublished outbox rows are never deleted,
//! whatever their age. Why the dedup retention may not be shorter than the broker's is on
//! [`RetentionArgs`].

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionArgs;
use crate::metrics::PurgeMetrics;

/// Rows one purge pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub outbox: u64,
    pub processed_events: u64,
}

// The cutoffs use the database's clock, the one that wrote `published_at`/`processed_at`.
const PURGE_OUTBOX: &str = "DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - $1 * interval '1 millisecond'
    ORDER BY published_at LIMIT $2)";

const PURGE_PROCESSED_EVENTS: &str = "DELETE FROM processed_events WHERE (consumer, event_id) IN (
    SELECT consumer, event_id FROM processed_events
    WHERE processed_at < now() - $1 * interval '1 millisecond'
    ORDER BY processed_at LIMIT $2)";

/// Purges every `settings.purge_interval` (the first pass at once) until `shutdown`.
pub async fn run(
    pool: PgPool,
    settings: RetentionArgs,
    metrics: PurgeMetrics,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(settings.purge_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        match purge_once(&pool, &settings, &metrics, &shutdown).await {
            Ok(purged) if purged != Purged::default() => {
                tracing::info!(
                    outbox = purged.outbox,
                    processed_events = purged.processed_events,
                    "retention purge"
                );
            }
            Ok(_) => {}
            // The next pass tries again; nothing depends on the purge being prompt.
            Err(e) => tracing::warn!(error = %e, "retention purge failed"),
        }
    }
}

/// One pass: deletes everything past its retention, batch by batch, stopping early (between
/// batches) on shutdown.
pub async fn purge_once(
    pool: &PgPool,
    settings: &RetentionArgs,
    metrics: &PurgeMetrics,
    shutdown: &CancellationToken,
) -> Result<Purged, sqlx::Error> {
    let outbox = purge_table(
        pool,
        PURGE_OUTBOX,
        settings.outbox,
        settings.purge_batch,
        shutdown,
        |n| metrics.purged_outbox(n),
    )
    .await?;
    let processed_events = purge_table(
        pool,
        PURGE_PROCESSED_EVENTS,
        settings.dedup,
        settings.purge_batch,
        shutdown,
        |n| metrics.purged_processed_events(n),
    )
    .await?;
    Ok(Purged {
        outbox,
        processed_events,
    })
}

/// Runs `statement` (a `DELETE` of at most `$2` rows older than `$1` milliseconds) until a
/// batch deletes fewer than `batch` rows or shutdown, counting each batch with `count`.
/// Services purge their own tables with it (the notifications service's delivered rows).
pub async fn purge_table(
    pool: &PgPool,
    statement: &str,
    retention: Duration,
    batch: i64,
    shutdown: &CancellationToken,
    count: impl Fn(u64),
) -> Result<u64, sqlx::Error> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(statement)
            .bind(retention_ms)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        count(deleted);
        total += deleted;
        if deleted < batch as u64 || shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}
