//! All of the notifications service's SQL: a notification recorded once per (order, status),
//! the deliverer's claim on what is due, and what became of each attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use orderflow_db::column;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::notification::Notification;

/// The PostgreSQL channel the consumer notifies (at commit) when there is something to deliver.
pub const CHANNEL: &str = "orderflow_notifications";

/// Where the status change was read, for a dead letter's headers.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub traceparent: String,
}

/// A notification to record: what it says, the status change it is of (as JSON), and
/// where that was read.
#[derive(Debug, Clone)]
pub struct ToRecord<'a> {
    pub notification: Notification,
    pub event: serde_json::Value,
    pub origin: Origin<'a>,
}

/// Records each of `notifications` to be delivered, and wakes the deliverers at commit, in
/// one statement. Returns how many were new: one whose order's status was recorded already
/// changes nothing, so a redelivered event notifies nobody twice. Each is due when the
/// order's earlier pending status is (now, unless that one waits to be tried again), so the
/// claim does not walk past it while it cannot be delivered anyway (see [`not_delivered`]).
/// Two statuses of one order in one call are due alike, as they would be one call each: the
/// earlier one is due now unless an even earlier one waits.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    notifications: &[ToRecord<'_>],
) -> Result<u64, sqlx::Error> {
    let n = notifications;
    // The wake-up is selected from the inserted rows, so a redelivery (no row) wakes nobody;
    // PostgreSQL sends one notification per transaction for all of them.
    let woken = sqlx::query(
        "WITH inserted AS (
             INSERT INTO notifications (order_id, status, notification_id, customer_id, version,
                                        event, body, origin_topic, origin_partition,
                                        origin_offset, traceparent, next_attempt_at)
             SELECT n.*,
                    greatest(now(), (SELECT max(next_attempt_at) FROM notifications e
                                     WHERE e.order_id = n.order_id AND e.state = 'pending'
                                       AND e.version < n.version))
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::int8[],
                         $6::jsonb[], $7::jsonb[], $8::text[], $9::int4[], $10::int8[],
                         $11::text[])
                  AS n(order_id, status, notification_id, customer_id, version, event, body,
                       origin_topic, origin_partition, origin_offset, traceparent)
             ON CONFLICT DO NOTHING
             RETURNING 1)
         SELECT pg_notify($12, '') FROM inserted",
    )
    .bind(column(n, |r| r.notification.order_id))
    .bind(column(n, |r| r.notification.status))
    .bind(column(n, |r| r.notification.notification_id))
    .bind(column(n, |r| r.notification.customer_id.as_str()))
    .bind(column(n, |r| r.notification.version))
    .bind(column(n, |r| Json(&r.event)))
    .bind(column(n, |r| Json(r.notification.body())))
    .bind(column(n, |r| r.origin.topic))
    .bind(column(n, |r| r.origin.partition))
    .bind(column(n, |r| r.origin.offset))
    .bind(column(n, |r| r.origin.traceparent.as_str()))
    .bind(CHANNEL)
    .fetch_all(&mut **tx)
    .await?;
    Ok(woken.len() as u64)
}

/// Puts a dead-lettered notification back to be delivered from its first attempt (its event
/// was redriven from this service's dead letters). Returns whether there was one.
pub async fn revive(
    tx: &mut Transaction<'_, Postgres>,
    order_id: Uuid,
    status: &str,
) -> Result<bool, sqlx::Error> {
    let revived = sqlx::query(
        "UPDATE notifications
         SET state = 'pending', attempts = 0, next_attempt_at = now(), first_failure = NULL,
             last_error = NULL
         WHERE order_id = $1 AND status = $2 AND state = 'dead'",
    )
    .bind(order_id)
    .bind(status)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if revived {
        wake(tx).await?;
    }
    Ok(revived)
}

async fn wake(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A notification the deliverer has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub order_id: Uuid,
    pub status: String,
    pub notification_id: Uuid,
    pub event: Json<serde_json::Value>,
    pub body: Json<serde_json::Value>,
    pub origin_topic: String,
    pub origin_partition: i32,
    pub origin_offset: i64,
    pub traceparent: String,
    /// `pending` (to deliver) or `undeliverable` (to dead-letter).
    pub state: String,
    /// Failed attempts so far.
    pub attempts: i32,
    pub first_failure: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub dead_letter_class: Option<String>,
}

impl Due {
    /// Whether it was given up on and waits only to be dead-lettered.
    pub fn undeliverable(&self) -> bool {
        self.state == "undeliverable"
    }
}

/// The rows the deliverer has work for now or later, as a `WHERE` clause on `notifications n`:
/// a pending notification that is the earliest status of its order still pending (an order's
/// statuses are delivered in order), or one given up on and waiting to be dead-lettered.
/// Whether an earlier status is pending is looked up in `notifications_pending_by_order`, so
/// each candidate costs a lookup among its own order's entries however large the backlog is.
/// Shared by [`CLAIM`] and [`NEXT_DUE`], which must agree on it.
macro_rules! claimable {
    () => {
        "state IN ('pending', 'undeliverable')
   AND (state = 'undeliverable'
        OR NOT EXISTS (SELECT 1 FROM notifications e
                       WHERE e.order_id = n.order_id AND e.state = 'pending'
                         AND e.version < n.version))"
    };
}

/// The claim: up to `$1` claimable notifications due now, oldest first, locked, skipping rows
/// another deliverer holds.
pub const CLAIM: &str = concat!(
    "SELECT order_id, status, notification_id, event, body, origin_topic,
        origin_partition, origin_offset, traceparent, state, attempts, first_failure,
        last_error, dead_letter_class
 FROM notifications n
 WHERE next_attempt_at <= now() AND ",
    claimable!(),
    "
 ORDER BY next_attempt_at
 LIMIT $1
 FOR UPDATE SKIP LOCKED"
);

/// When the next claimable notification is due, and the database's time: a walk of
/// `notifications_due` in order that stops at the first claimable row. Asked in the
/// transaction of a claim that found nothing, whose `now()` it returns, so the rows it walks
/// past are the few another deliverer holds or that wait behind an earlier status.
pub const NEXT_DUE: &str = concat!(
    "SELECT (SELECT next_attempt_at FROM notifications n
         WHERE ",
    claimable!(),
    "
         ORDER BY next_attempt_at
         LIMIT 1),
        now()"
);

/// The backlog's figures (see [`Backlog`]): a pass over what is pending or undeliverable,
/// with no per-row lookup. Read apart from the delivery rounds (see the deliverer), since with
/// millions pending the pass takes seconds. Run under [`BACKLOG_PLAN`].
pub const BACKLOG: &str = "SELECT count(*) FILTER (WHERE state = 'pending'),
        count(*) FILTER (WHERE state = 'pending' AND attempts > 0),
        count(*) FILTER (WHERE state = 'undeliverable'),
        (SELECT last_error FROM notifications
         WHERE state = 'pending' AND attempts > 0
         ORDER BY last_attempt_at DESC NULLS LAST LIMIT 1)
 FROM notifications WHERE state IN ('pending', 'undeliverable')";

/// Locks up to `limit` notifications due now, skipping rows another deliverer holds: pending
/// ones to deliver, and undeliverable ones to dead-letter. A pending notification waits while
/// an earlier status of its order is still pending, so each order's notifications go out in
/// version order, one at a time, across every instance (one given up on does not hold the
/// later ones back; a redrive of it arrives after them).
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(CLAIM).bind(limit).fetch_all(&mut **tx).await
}

/// When the next claimable notification is due (`None` if none is), and the database's time
/// (in a transaction, its start: the `now()` a claim in it compared with).
pub async fn next_due(
    db: impl PgExecutor<'_>,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), sqlx::Error> {
    sqlx::query_as(NEXT_DUE).fetch_one(db).await
}

/// The sink took every one of `delivered`: one statement for a round's deliveries.
///
/// The statement is planned at each call, for the round's keys and the table as it is then,
/// not prepared once: PostgreSQL soon keeps one plan for a prepared statement on its
/// connection, made without the keys. Made while the table was small, that plan was a pass
/// over the whole table, kept while the table grew until the next vacuum: on a freshly
/// started system at 800 orders/s, 77 to 212 passes in a 30 s run (docs/performance.md
/// section 48). Planned for its keys, it looks each one up by the primary key.
pub async fn delivered(db: impl PgExecutor<'_>, delivered: &[&Due]) -> Result<(), sqlx::Error> {
    if delivered.is_empty() {
        return Ok(());
    }
    let orders: Vec<Uuid> = delivered.iter().map(|d| d.order_id).collect();
    let statuses: Vec<&str> = delivered.iter().map(|d| d.status.as_str()).collect();
    sqlx::query(
        "UPDATE notifications
         SET state = 'delivered', attempts = attempts + 1, delivered_at = now(),
             last_attempt_at = now(), last_error = NULL
         WHERE (order_id, status) IN (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
    )
    .persistent(false)
    .bind(&orders)
    .bind(&statuses)
    .execute(db)
    .await?;
    Ok(())
}

/// What became of a notification that was not delivered.
#[derive(Debug, Clone, Copy)]
pub enum Undelivered<'a> {
    /// An attempt failed: try again after the delay.
    RetryLater(Duration),
    /// Given up on (`class`), but its dead letter could not be published: the deliverer
    /// publishes it after the delay and no longer tries the sink.
    Undeliverable { class: &'a str, retry_in: Duration },
    /// Dead-lettered (`class`): the deliverer tries it no more.
    Dead { class: &'a str },
}

/// Records `outcome` after `attempts` attempts, the last one failing with `error`. A pending
/// notification to be tried again takes the order's later pending statuses to its new time:
/// they cannot go before it, and left due they would be walked past by every claim until
/// then, one walk over every order waiting on a failing sink, per round.
pub async fn not_delivered(
    db: impl PgExecutor<'_>,
    due: &Due,
    attempts: i32,
    error: &str,
    outcome: Undelivered<'_>,
) -> Result<(), sqlx::Error> {
    let (state, class, delay) = match outcome {
        Undelivered::RetryLater(delay) => ("pending", None, Some(delay)),
        Undelivered::Undeliverable { class, retry_in } => {
            ("undeliverable", Some(class), Some(retry_in))
        }
        Undelivered::Dead { class } => ("dead", Some(class), None),
    };
    sqlx::query(
        "WITH tried AS (
             UPDATE notifications
             SET state = $3, attempts = $4, last_error = $5,
                 dead_letter_class = coalesce($6, dead_letter_class),
                 next_attempt_at = coalesce(now() + $7, next_attempt_at),
                 last_attempt_at = now(), first_failure = coalesce(first_failure, now())
             WHERE order_id = $1 AND status = $2
             RETURNING version, state, next_attempt_at)
         UPDATE notifications later SET next_attempt_at = tried.next_attempt_at
         FROM tried
         WHERE tried.state = 'pending' AND later.order_id = $1 AND later.state = 'pending'
           AND later.version > tried.version AND later.next_attempt_at < tried.next_attempt_at",
    )
    .bind(due.order_id)
    .bind(&due.status)
    .bind(state)
    .bind(attempts)
    .bind(error)
    .bind(class)
    .bind(delay)
    .execute(db)
    .await?;
    Ok(())
}

/// The deliverer's work: pending notifications, how many of them have failed at least once
/// and the latest error among those, and how many were given up on and wait to be
/// dead-lettered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub retrying: i64,
    pub last_error: Option<String>,
    pub undeliverable: i64,
}

/// How [`BACKLOG`] is planned, set for its transaction only: through `notifications_due`,
/// never by a pass over the whole table, and without parallel workers.
///
/// The planner chooses by what it knows of the table when it plans, and that is soon out of
/// date: the statement's plan is kept for the connection until the table is next vacuumed
/// (the first one was made while the table was empty), and the share of rows still pending
/// swings from none to most of the table within seconds, so statistics gathered during a
/// burst say most are pending long after they were delivered. Planned by either, the figures
/// were a pass over every notification kept for the retention period, delivered or not, in
/// parallel workers once the table is large: at the end of a 30 s run at 800 orders/s one
/// read took 130 ms, and 1 ms through the index (docs/performance.md section 48). Through the
/// index a read costs what is pending.
pub const BACKLOG_PLAN: &str = "SELECT set_config('enable_seqscan', 'off', true),
        set_config('max_parallel_workers_per_gather', '0', true)";

pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(BACKLOG_PLAN).execute(&mut *tx).await?;
    let (pending, retrying, undeliverable, last_error): (i64, i64, i64, Option<String>) =
        sqlx::query_as(BACKLOG).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(Backlog {
        pending,
        retrying,
        last_error,
        undeliverable,
    })
}

/// The retention purge's statement for [`orderflow_platform::purge::purge_table`]: up to `$2`
/// delivered or dead-lettered notifications recorded more than `$1` milliseconds ago. Past
/// the dedup retention (at least the broker's) their event cannot come back.
pub const PURGE: &str = "DELETE FROM notifications WHERE (order_id, status) IN (
    SELECT order_id, status FROM notifications
    WHERE state IN ('delivered', 'dead')
      AND created_at < now() - $1 * interval '1 millisecond'
    ORDER BY created_at LIMIT $2)";
