//! One benchmark run at one offered rate: the open-loop load of [`crate::load`], then what
//! the system achieved, how long customers waited, whether every order was right, and the
//! CPU, memory and context switches of each component.

use std::time::{Duration, Instant};

use anyhow::Context;

use orderflow_proto::v1 as pb;
use serde::Serialize;

use crate::load::{Gateway, Mix, Percentiles, open_loop};

/// Units each bench SKU starts with: more than any run can take.
pub const INITIAL_STOCK: i32 = 1_000_000;

/// One run at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub label: String,
    pub offered_per_sec: f64,
    pub duration_secs: f64,
    pub orders: usize,
    /// Orders that reached COMPLETED, per second, from the first due time to the last completion.
    pub achieved_per_sec: f64,
    pub completed: usize,
    pub errors: usize,
    pub first_errors: Vec<String>,
    /// Orders whose watch waited for a stream of its connection to end: more orders were in
    /// flight than the load's connections may watch at once (their wait is in their latency).
    pub watches_waited: usize,
    /// PlaceOrders and WatchOrders the gateway shed (RESOURCE_EXHAUSTED) and the load made
    /// again: the gateway was at a limit (their wait is in their latency).
    pub calls_shed: usize,
    pub place_order: Percentiles,
    pub time_to_terminal: Percentiles,
    /// Every order COMPLETED, every SKU's stock exactly what the run found minus what its
    /// completed orders took, and (when checked) every status of every order notified.
    pub correct: bool,
    /// Whether the run sustained its offered rate, by [`super::targets::sustained`]; in the
    /// JSON report so that scripts read the bench's verdict instead of restating its rule.
    pub sustained: bool,
    /// The notifications of the run's orders the notifications service delivered, of those
    /// expected (one per status), and how long after the run's last completion the last was
    /// delivered; `None` when not checked.
    pub notifications: Option<NotificationsCheck>,
    pub correctness: String,
    /// Cores each component used on average while the run offered load and drained.
    pub cpu: super::cpu::Usage,
    /// The whole machine's CPU time in that window per completed order, in milliseconds.
    pub machine_cpu_ms_per_order: Option<f64>,
    /// The whole machine's context switches in that window per completed order.
    pub machine_switches_per_order: Option<f64>,
    /// Each hop of the completed orders' path, from the history service's record of their
    /// events; `None` when not measured.
    pub hops: Option<Vec<super::hops::Hop>>,
    /// The consumer batches and relay rounds of each component while the run offered load
    /// and its orders ended; `None` when not read.
    pub batching: Option<super::batching::Batching>,
}

/// The bench SKUs of one run: orders are spread round-robin so one hot stock row does not
/// serialise the inventory service.
pub fn skus(run_id: &str, count: usize) -> Vec<String> {
    (0..count).map(|k| format!("bench-{run_id}-{k}")).collect()
}

/// What the notifications service delivered of one run's orders.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationsCheck {
    pub delivered: i64,
    pub expected: i64,
    /// From the run's last completion to when all were delivered, or to when the check gave up.
    pub drained_after_secs: f64,
}

/// How long after a run's last completion its notifications may take to be delivered.
const NOTIFICATIONS_DRAIN: Duration = Duration::from_secs(120);

/// Statuses a COMPLETED order goes through, one notification each: PENDING, PAID, COMPLETED.
pub const STATUSES_TO_COMPLETED: i64 = 3;

/// The notifications service's database, read to check that every status of every order of
/// a run was delivered: a run is not over while its customers have not been told.
pub struct Notifications {
    pool: sqlx::PgPool,
}

impl Notifications {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Notifications {
            pool: reader(url, "notifications").await?,
        })
    }

    /// Waits until every notification of `orders` (each COMPLETED) was delivered, at most
    /// [`NOTIFICATIONS_DRAIN`] after `since`.
    async fn check(
        &self,
        orders: &[uuid::Uuid],
        since: Instant,
    ) -> anyhow::Result<NotificationsCheck> {
        let expected = orders.len() as i64 * STATUSES_TO_COMPLETED;
        let (delivered, counted_at) = count_until(
            &self.pool,
            "SELECT count(*) FROM notifications
             WHERE order_id = ANY($1) AND state = 'delivered'",
            orders,
            expected,
            since + NOTIFICATIONS_DRAIN,
        )
        .await?;
        Ok(NotificationsCheck {
            delivered,
            expected,
            drained_after_secs: counted_at.saturating_duration_since(since).as_secs_f64(),
        })
    }
}

/// Counts with `count` (one parameter: `orders`) once a second until the count reaches
/// `expected` or `deadline` passes; returns the last count and when it was taken. What a
/// service records of a run's orders arrives after their last completion.
pub async fn count_until(
    pool: &sqlx::PgPool,
    count: &str,
    orders: &[uuid::Uuid],
    expected: i64,
    deadline: Instant,
) -> anyhow::Result<(i64, Instant)> {
    loop {
        let counted: i64 = sqlx::query_scalar(count)
            .bind(orders)
            .fetch_one(pool)
            .await?;
        let now = Instant::now();
        if counted >= expected || now >= deadline {
            return Ok((counted, now));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One connection to a service's database (`service` names it in the error), for the bench's
/// reads of what the services recorded.
pub async fn reader(url: &str, service: &str) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .with_context(|| format!("cannot read the {service} database"))
}

/// What a run reads besides the gateway, each only when given.
#[derive(Clone, Copy, Default)]
pub struct Readers<'a> {
    /// Waits for every notification of the run's orders.
    pub notifications: Option<&'a Notifications>,
    /// Reads where the completed orders' time went, hop by hop.
    pub history: Option<&'a super::hops::History>,
    /// Reads the services' consumer batches and relay rounds over the run.
    pub batching: Option<&'a super::batching::Scraper>,
}

/// Offers `rate` orders per second for `duration`, then waits for every order to end, and
/// reads what `readers` give.
pub async fn run(
    label: &str,
    gateway: &Gateway,
    skus: &[String],
    rate: f64,
    duration: Duration,
    readers: Readers<'_>,
) -> anyhow::Result<RunResult> {
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    // Earlier runs took stock from the same SKUs; this run is checked against what it found.
    let stock_before = gateway.stock_of(skus).await?;
    let mix = Mix::Completing {
        skus: skus.to_vec(),
    };
    // Read before the first order's due time is set, so the reads do not make it late.
    let batches_before = match readers.batching {
        Some(scraper) => Some((scraper, scraper.take().await)),
        None => None,
    };
    let start = Instant::now() + Duration::from_millis(50);
    let cpu_before = super::cpu::Snapshot::take();
    let results = open_loop(gateway, &mix, rate, count, start).await?;
    let cpu = cpu_before.usage_until(&super::cpu::Snapshot::take());
    let batching = match &batches_before {
        Some((scraper, before)) => Some(before.until(&scraper.take().await)),
        None => None,
    };
    let completed = results
        .iter()
        .filter(|r| r.status == Some(pb::OrderStatus::Completed))
        .count();
    let last_finished = results.iter().filter_map(|r| r.finished).max();
    // From the first order's due time to the last terminal status seen.
    let last_end = last_finished
        .map(|end| end.saturating_duration_since(start))
        .unwrap_or_default();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.error.as_ref()).collect();

    // Stock must be exactly what the run found minus the orders that completed, SKU by SKU.
    let stock_after = gateway.stock_of(skus).await?;
    let mut mismatches = Vec::new();
    for (k, sku) in skus.iter().enumerate() {
        let taken = results
            .iter()
            .filter(|r| r.sku == k && r.status == Some(pb::OrderStatus::Completed))
            .count() as i32;
        let expected = stock_before[k] - taken;
        if stock_after[k] != expected {
            mismatches.push(format!(
                "{sku}: {} left, expected {expected}",
                stock_after[k]
            ));
        }
    }
    let stock_ok = mismatches.is_empty();
    let all_completed = completed == count;
    let completed_orders: Vec<uuid::Uuid> = results
        .iter()
        .filter(|r| r.status == Some(pb::OrderStatus::Completed))
        .filter_map(|r| r.order_id.as_deref()?.parse().ok())
        .collect();
    let since = last_finished.unwrap_or_else(Instant::now);
    let notified = match readers.notifications {
        Some(n) => Some(n.check(&completed_orders, since).await?),
        None => None,
    };
    let hops = match readers.history {
        Some(h) => Some(h.hops(&completed_orders, since).await?),
        None => None,
    };
    let notified_ok = notified.as_ref().is_none_or(|n| n.delivered >= n.expected);
    let mut correctness = match (all_completed, stock_ok) {
        (true, true) => format!(
            "all {count} orders COMPLETED; stock exact on {} SKUs",
            skus.len()
        ),
        _ => format!(
            "{completed}/{count} COMPLETED; stock: {}",
            if stock_ok {
                "exact".into()
            } else {
                mismatches.join(", ")
            }
        ),
    };
    if let Some(n) = &notified {
        correctness += &if notified_ok {
            format!(
                "; {} notifications delivered, the last {:.1} s after the last completion",
                n.delivered, n.drained_after_secs
            )
        } else {
            format!(
                "; only {} of {} notifications delivered {:.0} s after the last completion",
                n.delivered, n.expected, n.drained_after_secs
            )
        };
    }
    let achieved_per_sec = if last_end.is_zero() {
        0.0
    } else {
        completed as f64 / last_end.as_secs_f64()
    };
    let correct = all_completed && stock_ok && notified_ok;
    Ok(RunResult {
        label: label.to_owned(),
        offered_per_sec: rate,
        duration_secs: duration.as_secs_f64(),
        orders: count,
        achieved_per_sec,
        completed,
        errors: errors.len(),
        first_errors: errors.iter().take(3).map(|e| e.to_string()).collect(),
        watches_waited: results.iter().filter(|r| r.watch_waited).count(),
        calls_shed: results.iter().map(|r| r.shed).sum(),
        place_order: Percentiles::of(results.iter().filter_map(|r| r.place).collect()),
        time_to_terminal: Percentiles::of(results.iter().filter_map(|r| r.terminal).collect()),
        correct,
        sustained: super::targets::sustained(rate, achieved_per_sec, errors.len(), correct),
        notifications: notified,
        correctness,
        machine_cpu_ms_per_order: (completed > 0)
            .then(|| cpu.machine_cpu_secs * 1000.0 / completed as f64),
        machine_switches_per_order: (completed > 0)
            .then(|| (cpu.machine_switches as f64 / completed as f64).round()),
        cpu,
        hops,
        batching,
    })
}
