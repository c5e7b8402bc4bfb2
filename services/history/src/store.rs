//! The timeline table: one row per place in the log, written idempotently, read per order.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One recorded message about an order: an event, or a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Entry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub order_id: Uuid,
    pub event_type: String,
    pub event_id: Option<String>,
    pub producer: String,
    pub summary: String,
    pub occurred_at: DateTime<Utc>,
    pub logged_at: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
    pub redriven_from: Option<String>,
}

/// The name of a dead-letter entry's type.
pub const DEAD_LETTERED: &str = "DeadLettered";

/// Records `entry` unless its place in the log is recorded already; true if it was new.
pub async fn record(db: impl PgExecutor<'_>, entry: &Entry) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        r#"INSERT INTO order_timeline (topic, "partition", "offset", order_id, event_type,
               event_id, producer, summary, occurred_at, logged_at, trace_id, redriven_from)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (topic, "partition", "offset") DO NOTHING"#,
    )
    .bind(&entry.topic)
    .bind(entry.partition)
    .bind(entry.offset)
    .bind(entry.order_id)
    .bind(&entry.event_type)
    .bind(&entry.event_id)
    .bind(&entry.producer)
    .bind(&entry.summary)
    .bind(entry.occurred_at)
    .bind(entry.logged_at)
    .bind(&entry.trace_id)
    .bind(&entry.redriven_from)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Every entry of `order_id`, oldest first: by the time it happened (the order's creation
/// first among entries of the same millisecond: its PENDING status is written with it), then
/// by when the broker logged it, then by its place in the log, so equal times read in one
/// stable order.
pub async fn timeline(pool: &PgPool, order_id: Uuid) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT topic, "partition", "offset", order_id, event_type, event_id, producer,
                  summary, occurred_at, logged_at, trace_id, redriven_from
           FROM order_timeline WHERE order_id = $1
           ORDER BY occurred_at, event_type <> 'OrderCreated', logged_at NULLS LAST,
                    topic, "partition", "offset""#,
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}
