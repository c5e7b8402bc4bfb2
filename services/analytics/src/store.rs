//! All of the analytics service's SQL: one small write per event, and the figures read back.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// An order moved to `status` at `version`; an older version than the one stored changes
/// nothing (changes of one order may arrive out of order across a redelivery). The order
/// moves from the status it had (its row's, read under the row's lock) to `status` in
/// `orders_per_status`, in the same statement, which locks those counts in status order (two
/// such statements cannot deadlock on them).
pub async fn order_status(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    status: &str,
    version: i64,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH changed AS (
             INSERT INTO order_status (order_id, status, version, changed_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id) DO UPDATE
             SET previous_status = order_status.status, status = EXCLUDED.status,
                 version = EXCLUDED.version, changed_at = EXCLUDED.changed_at
             WHERE order_status.version < EXCLUDED.version
             RETURNING status, previous_status),
         moves AS (
             SELECT status, 1 AS orders FROM changed
             UNION ALL
             SELECT previous_status, -1 FROM changed WHERE previous_status IS NOT NULL)
         INSERT INTO orders_per_status (status, orders)
         SELECT status, sum(orders) FROM moves GROUP BY status ORDER BY status
         ON CONFLICT (status) DO UPDATE SET orders = orders_per_status.orders + EXCLUDED.orders",
    )
    .bind(order_id)
    .bind(status)
    .bind(version)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// The minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Adds money charged (`captured`) or refunded to the minute of `at`.
pub async fn revenue(
    db: impl PgExecutor<'_>,
    at: DateTime<Utc>,
    currency: &str,
    captured: i64,
    refunded: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO revenue_per_minute (minute, currency, captured_minor, refunded_minor)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (minute, currency) DO UPDATE
         SET captured_minor = revenue_per_minute.captured_minor + EXCLUDED.captured_minor,
             refunded_minor = revenue_per_minute.refunded_minor + EXCLUDED.refunded_minor",
    )
    .bind(minute_of(at))
    .bind(currency)
    .bind(captured)
    .bind(refunded)
    .execute(db)
    .await?;
    Ok(())
}

/// Counts one payment with `outcome` (`paid` or `declined`).
pub async fn payment(db: impl PgExecutor<'_>, outcome: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_outcomes (outcome, payments) VALUES ($1, 1)
         ON CONFLICT (outcome) DO UPDATE SET payments = payment_outcomes.payments + 1",
    )
    .bind(outcome)
    .execute(db)
    .await?;
    Ok(())
}

/// Counts one paid order that `sku` left `short` units short.
pub async fn stock_out(db: impl PgExecutor<'_>, sku: &str, short: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stock_outs (sku, orders, units_short) VALUES ($1, 1, $2)
         ON CONFLICT (sku) DO UPDATE
         SET orders = stock_outs.orders + 1, units_short = stock_outs.units_short + EXCLUDED.units_short",
    )
    .bind(sku)
    .bind(short)
    .execute(db)
    .await?;
    Ok(())
}

/// Every figure the projection holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// (status, orders), by status name.
    pub orders: Vec<(String, i64)>,
    /// (minute, currency, captured, refunded), the newest `minutes` minutes that have any.
    pub revenue: Vec<(DateTime<Utc>, String, i64, i64)>,
    pub paid: i64,
    pub declined: i64,
    /// (sku, orders, units short), the most often short first.
    pub stock_outs: Vec<(String, i64, i64)>,
}

/// The figures now, with revenue for the newest `minutes` minutes that have any.
pub async fn figures(pool: &PgPool, minutes: i64) -> Result<Figures, sqlx::Error> {
    let orders = sqlx::query_as(
        "SELECT status, orders FROM orders_per_status WHERE orders > 0 ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    let revenue = sqlx::query_as(
        "SELECT minute, currency, captured_minor, refunded_minor FROM revenue_per_minute
         ORDER BY minute DESC, currency LIMIT $1",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await?;
    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, payments FROM payment_outcomes")
            .fetch_all(pool)
            .await?;
    let count = |name: &str| {
        outcomes
            .iter()
            .find(|(o, _)| o == name)
            .map_or(0, |(_, n)| *n)
    };
    let stock_outs = sqlx::query_as(
        "SELECT sku, orders, units_short FROM stock_outs ORDER BY orders DESC, sku LIMIT 100",
    )
    .fetch_all(pool)
    .await?;
    Ok(Figures {
        orders,
        revenue,
        paid: count(PAID),
        declined: count(DECLINED),
        stock_outs,
    })
}

/// (currency, charged minus refunded) over all time.
pub async fn revenue_totals(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, (sum(captured_minor) - sum(refunded_minor))::bigint
         FROM revenue_per_minute GROUP BY currency ORDER BY currency",
    )
    .fetch_all(pool)
    .await
}

/// The payment outcomes counted.
pub const PAID: &str = "paid";
pub const DECLINED: &str = "declined";

/// Empties the projection (and its dedup records) for a rebuild, inside `tx`.
pub async fn clear(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    consumer: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "TRUNCATE order_status, orders_per_status, revenue_per_minute, payment_outcomes,
                       stock_outs",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM processed_events WHERE consumer = $1")
        .bind(consumer)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_counts_in_the_minute_it_falls_in() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T12:34:56.789Z")
            .unwrap()
            .to_utc();
        assert_eq!(minute_of(at).to_rfc3339(), "2026-12-01T12:34:00+00:00");
    }
}
