//! All of the analytics service's SQL: what a batch of events adds to the figures, written in
//! at most one statement per table, and the figures read back.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use orderflow_db::column;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What some events do to the figures, summed by the key of each figure's row, so that a
/// batch of any size is at most one statement per table. Recording the sum of a batch
/// leaves the figures as recording each event alone would: an order's status change that a
/// newer one in the same batch supersedes would only have moved the order's count in and
/// out again, and sums add up in any order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// Each order's newest status change: order → (status, version, when).
    statuses: BTreeMap<Uuid, (&'static str, i64, DateTime<Utc>)>,
    /// (minute, currency) → (captured, refunded), in minor units.
    revenue: BTreeMap<(DateTime<Utc>, String), (i64, i64)>,
    /// Outcome ([`PAID`] or [`DECLINED`]) → payments.
    payments: BTreeMap<&'static str, i64>,
    /// SKU → (paid orders it left short, units short).
    stock_outs: BTreeMap<String, (i64, i64)>,
}

impl Changes {
    /// An order moved to `status` at `version`. Of two changes of one order, the newer
    /// version counts (of two with one version, the first), as in the table: a version no
    /// newer than the stored one changes nothing, so changes of one order may arrive out of
    /// order across a redelivery.
    pub fn order_status(
        &mut self,
        order_id: Uuid,
        status: &'static str,
        version: i64,
        at: DateTime<Utc>,
    ) {
        let newer = self
            .statuses
            .get(&order_id)
            .is_none_or(|&(_, known, _)| version > known);
        if newer {
            self.statuses.insert(order_id, (status, version, at));
        }
    }

    /// Money charged (`captured`) or refunded in the minute of `at`.
    pub fn revenue(&mut self, at: DateTime<Utc>, currency: &str, captured: i64, refunded: i64) {
        let sums = self
            .revenue
            .entry((minute_of(at), currency.to_owned()))
            .or_default();
        sums.0 += captured;
        sums.1 += refunded;
    }

    /// One payment with `outcome` ([`PAID`] or [`DECLINED`]).
    pub fn payment(&mut self, outcome: &'static str) {
        *self.payments.entry(outcome).or_default() += 1;
    }

    /// One paid order that `sku` left `short` units short.
    pub fn stock_out(&mut self, sku: &str, short: i64) {
        let sums = self.stock_outs.entry(sku.to_owned()).or_default();
        sums.0 += 1;
        sums.1 += short;
    }

    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
            && self.revenue.is_empty()
            && self.payments.is_empty()
            && self.stock_outs.is_empty()
    }
}

/// Writes `changes` to the figures: one statement per table that changes, each writing its
/// rows in key order and the tables always in the same order, so two instances recording
/// overlapping batches wait for each other instead of deadlocking.
pub async fn record(db: &mut PgConnection, changes: &Changes) -> Result<(), sqlx::Error> {
    if !changes.statuses.is_empty() {
        order_statuses(&mut *db, &changes.statuses).await?;
    }
    if !changes.revenue.is_empty() {
        let (keys, sums): (Vec<_>, Vec<_>) = changes.revenue.iter().unzip();
        sqlx::query(
            "INSERT INTO revenue_per_minute (minute, currency, captured_minor, refunded_minor)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[])
             ORDER BY 1, 2
             ON CONFLICT (minute, currency) DO UPDATE
             SET captured_minor = revenue_per_minute.captured_minor + EXCLUDED.captured_minor,
                 refunded_minor = revenue_per_minute.refunded_minor + EXCLUDED.refunded_minor",
        )
        .bind(column(&keys, |(minute, _)| *minute))
        .bind(column(&keys, |(_, currency)| currency.as_str()))
        .bind(column(&sums, |(captured, _)| *captured))
        .bind(column(&sums, |(_, refunded)| *refunded))
        .execute(&mut *db)
        .await?;
    }
    if !changes.payments.is_empty() {
        let (outcomes, payments): (Vec<&str>, Vec<i64>) = changes.payments.iter().unzip();
        sqlx::query(
            "INSERT INTO payment_outcomes (outcome, payments)
             SELECT * FROM UNNEST($1::text[], $2::bigint[]) ORDER BY 1
             ON CONFLICT (outcome) DO UPDATE
             SET payments = payment_outcomes.payments + EXCLUDED.payments",
        )
        .bind(outcomes)
        .bind(payments)
        .execute(&mut *db)
        .await?;
    }
    if !changes.stock_outs.is_empty() {
        let (skus, sums): (Vec<&String>, Vec<_>) = changes.stock_outs.iter().unzip();
        sqlx::query(
            "INSERT INTO stock_outs (sku, orders, units_short)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1
             ON CONFLICT (sku) DO UPDATE
             SET orders = stock_outs.orders + EXCLUDED.orders,
                 units_short = stock_outs.units_short + EXCLUDED.units_short",
        )
        .bind(skus)
        .bind(column(&sums, |(orders, _)| *orders))
        .bind(column(&sums, |(_, short)| *short))
        .execute(&mut *db)
        .await?;
    }
    Ok(())
}

/// Each order moves to its status at its version; an older version than the one stored
/// changes nothing. Each order that moves goes from the status it had (its row's, read under
/// the row's lock) to its new one in `orders_per_status`, in the same statement, which locks
/// those counts in status order.
async fn order_statuses(
    db: &mut PgConnection,
    statuses: &BTreeMap<Uuid, (&'static str, i64, DateTime<Utc>)>,
) -> Result<(), sqlx::Error> {
    let (orders, changes): (Vec<Uuid>, Vec<_>) = statuses.iter().unzip();
    sqlx::query(
        "WITH changed AS (
             INSERT INTO order_status (order_id, status, version, changed_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
             ORDER BY 1
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
    .bind(orders)
    .bind(column(&changes, |(status, _, _)| *status))
    .bind(column(&changes, |(_, version, _)| *version))
    .bind(column(&changes, |(_, _, at)| *at))
    .execute(db)
    .await?;
    Ok(())
}

/// The minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
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

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn of_an_orders_changes_the_newest_version_counts_in_whatever_order_they_come() {
        let order = Uuid::now_v7();
        let t = at("2026-12-01T12:00:00Z");
        let mut forwards = Changes::default();
        let mut backwards = Changes::default();
        for (status, version) in [("PENDING", 1), ("PAID", 2), ("COMPLETED", 3)] {
            forwards.order_status(order, status, version, t);
        }
        for (status, version) in [("COMPLETED", 3), ("PAID", 2), ("PENDING", 1)] {
            backwards.order_status(order, status, version, t);
        }
        assert_eq!(forwards, backwards);
        assert_eq!(forwards.statuses[&order].0, "COMPLETED");
        // Of two with one version, the first: the table keeps the first too.
        forwards.order_status(order, "FAILED", 3, t);
        assert_eq!(forwards.statuses[&order].0, "COMPLETED");
    }

    #[test]
    fn money_payments_and_shortfalls_add_up_by_their_rows_key() {
        let mut changes = Changes::default();
        assert!(changes.is_empty());
        changes.revenue(at("2026-12-01T12:00:10Z"), "EUR", 100, 0);
        changes.revenue(at("2026-12-01T12:00:50Z"), "EUR", 50, 0);
        changes.revenue(at("2026-12-01T12:00:20Z"), "EUR", 0, 30);
        changes.revenue(at("2026-12-01T12:01:00Z"), "EUR", 7, 0);
        changes.revenue(at("2026-12-01T12:00:00Z"), "USD", 9, 0);
        changes.payment(PAID);
        changes.payment(PAID);
        changes.payment(DECLINED);
        changes.stock_out("sku-a", 2);
        changes.stock_out("sku-a", 3);
        changes.stock_out("sku-b", 1);
        let noon = at("2026-12-01T12:00:00Z");
        let revenue: Vec<_> = changes.revenue.clone().into_iter().collect();
        assert_eq!(
            revenue,
            [
                ((noon, "EUR".to_owned()), (150, 30)),
                ((noon, "USD".to_owned()), (9, 0)),
                ((at("2026-12-01T12:01:00Z"), "EUR".to_owned()), (7, 0)),
            ]
        );
        assert_eq!((changes.payments[PAID], changes.payments[DECLINED]), (2, 1));
        assert_eq!(changes.stock_outs["sku-a"], (2, 5));
        assert_eq!(changes.stock_outs["sku-b"], (1, 1));
        assert!(!changes.is_empty());
    }

    #[test]
    fn a_time_counts_in_the_minute_it_falls_in() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T12:34:56.789Z")
            .unwrap()
            .to_utc();
        assert_eq!(minute_of(at).to_rfc3339(), "2026-12-01T12:34:00+00:00");
    }
}
