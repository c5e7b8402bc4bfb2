//! The timeline table: one row per place in the log, written idempotently, read per order.

use chrono::{DateTime, Utc};
use orderflow_db::column;
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
    Ok(record_all(db, std::slice::from_ref(entry)).await? == 1)
}

/// Records every one of `entries` whose place in the log is not recorded already, in one
/// statement; returns how many were new.
pub async fn record_all(db: impl PgExecutor<'_>, entries: &[Entry]) -> Result<u64, sqlx::Error> {
    let inserted = sqlx::query(
        r#"INSERT INTO order_timeline (topic, "partition", "offset", order_id, event_type,
               event_id, producer, summary, occurred_at, logged_at, trace_id, redriven_from)
           SELECT * FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::uuid[], $5::text[],
                                $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                                $10::timestamptz[], $11::text[], $12::text[])
           ON CONFLICT (topic, "partition", "offset") DO NOTHING"#,
    )
    .bind(column(entries, |e| e.topic.as_str()))
    .bind(column(entries, |e| e.partition))
    .bind(column(entries, |e| e.offset))
    .bind(column(entries, |e| e.order_id))
    .bind(column(entries, |e| e.event_type.as_str()))
    .bind(column(entries, |e| e.event_id.as_deref()))
    .bind(column(entries, |e| e.producer.as_str()))
    .bind(column(entries, |e| e.summary.as_str()))
    .bind(column(entries, |e| e.occurred_at))
    .bind(column(entries, |e| e.logged_at))
    .bind(column(entries, |e| e.trace_id.as_deref()))
    .bind(column(entries, |e| e.redriven_from.as_deref()))
    .execute(db)
    .await?;
    Ok(inserted.rows_affected())
}

/// Every entry of `order_id`, oldest first: by the time it happened (the order's creation
/// first among entries of the same millisecond: its PENDING status is written with it), then
/// by when the broker logged it, then by its place in the log, so equal times read in one
/// stable order.
pub async fn timeline(pool: &PgPool, order_id: Uuid) -> Result<Vec<Entry>, sqlx::Error> {
    timelines(pool, &[order_id]).await
}

/// Every entry of each of `orders`, in one statement: order by order, each order's entries in
/// [`timeline`]'s order.
pub async fn timelines(pool: &PgPool, orders: &[Uuid]) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT topic, "partition", "offset", order_id, event_type, event_id, producer,
                  summary, occurred_at, logged_at, trace_id, redriven_from
           FROM order_timeline WHERE order_id = ANY($1)
           ORDER BY order_id, occurred_at, event_type <> 'OrderCreated', logged_at NULLS LAST,
                    topic, "partition", "offset""#,
    )
    .bind(orders)
    .fetch_all(pool)
    .await
}
