//! Hands due notifications to the sink, apart from the consumer loop: a slow or failing
//! receiver holds up no partition.
//!
//! Each round locks up to [`BATCH`] due notifications (`FOR UPDATE SKIP LOCKED`, so several
//! instances share the work, and at most one pending status per order: see
//! [`store::claim`]), delivers them concurrently, and records every outcome in the same
//! transaction. A failed attempt is retried after an exponential backoff; once the budget is
//! spent, or at once if the receiver refuses it, the status change is published to this
//! service's dead-letter topic (`order-status.notifications.dlq`, with the consumer loop's
//! headers) and no longer tried. Redriving it (`orderflow dlq redrive`) puts it back. A dead
//! letter the broker does not take is kept `undeliverable` and published on a later round,
//! without trying the sink again.
//!
//! A round's outcomes are committed together: if the process dies during a round, or the
//! database fails while recording it, the round's notifications are delivered again, with
//! the same delivery ids. On shutdown no new round starts and the one in flight finishes.
//!
//! The deliverer wakes when the consumer commits a new notification (PostgreSQL
//! LISTEN/NOTIFY), when the next retry is due, and at least every [`POLL`]. A round that
//! claimed a full batch is followed at once. One that claimed fewer asks, in its own
//! transaction and after its outcomes, when the next claimable notification is due, and is
//! followed at once only if one is due already (the next status of an order it delivered): a
//! round that would find nothing costs a transaction, and at low rates those were half the
//! deliverer's (docs/performance.md section 28). Wake-ups that arrived before a claim are
//! answered by it, so a burst of them starts one round, not one each.
//!
//! The backlog's figures (the pending gauge, and health while notifications are retried or
//! wait to be dead-lettered) are read by a task of their own, never on the delivery path: with
//! millions pending that read is a pass of seconds, and a round that waited for it delivered
//! about 6 notifications a second (docs/performance.md section 21). It reads every
//! `LOOK_INTERVAL`, and soon after a round recorded a failed attempt or gave one up, so
//! health turns as the sink fails and back as soon as nothing is retried; but never sooner
//! than ten times as long as its last read took after it, so however large the backlog, the
//! reads take at most a tenth of one database backend.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use orderflow_events::{Event, EventCodec, OrderStatusChanged, Topics};
use orderflow_platform::consumer::dead_letter_topic;
use orderflow_platform::metrics::ConsumerMetrics;
use orderflow_platform::{Health, ServiceKit, dlq, kafka, purge};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Budget;
use crate::sink::{Delivery, DeliveryError, Sink};
use crate::{SERVICE, store};

/// Most notifications handled in one round.
pub const BATCH: i64 = 32;
/// The longest the deliverer sleeps without looking.
pub const POLL: Duration = Duration::from_secs(5);
/// How often, at most, the backlog's figures are read.
const LOOK_INTERVAL: Duration = Duration::from_secs(1);
/// A backlog read that took `t` is followed by the next one `LOOK_SHARE × t` later at the
/// soonest: at most a tenth of one database backend however large the backlog grows.
const LOOK_SHARE: u32 = 10;
/// How long the broker may take to acknowledge a dead letter.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The health components the deliverer reports.
const SINK: &str = "notification sink";
const DEAD_LETTERS: &str = "notification dead letters";
const DATABASE: &str = "notifications database";
const BACKLOG: &str = "notifications backlog";

/// Why a notification is given up on, as the dead letter's class.
const REFUSED: &str = "delivery_refused";
const BUDGET_SPENT: &str = "delivery_budget_exhausted";

/// The deliverer's own metrics.
#[derive(Clone, Default)]
struct DelivererMetrics {
    delivered: Counter,
    failed_attempts: Counter,
    pending: Gauge,
    backlog_read: Gauge<f64, AtomicU64>,
}

impl DelivererMetrics {
    fn register(metrics: &orderflow_platform::Metrics) -> Self {
        let m = DelivererMetrics::default();
        metrics.register(
            "notifications_delivered",
            "Notifications the sink took",
            m.delivered.clone(),
        );
        metrics.register(
            "notifications_failed_attempts",
            "Delivery attempts that failed for a reason worth retrying",
            m.failed_attempts.clone(),
        );
        metrics.register(
            "notifications_pending",
            "Notifications waiting to be delivered (the service's whole table, not this instance's share)",
            m.pending.clone(),
        );
        metrics.register(
            "notifications_backlog_read_seconds",
            "How long the last read of the pending gauge's figures took",
            m.backlog_read.clone(),
        );
        m
    }
}

/// Delivers what the consumer recorded.
pub struct Deliverer {
    pool: PgPool,
    sink: Arc<dyn Sink>,
    budget: Budget,
    producer: kafka::Producer,
    codec: Arc<EventCodec>,
    topics: Topics,
    health: Health,
    metrics: DelivererMetrics,
    /// A dead letter is counted where every consumer's is (`orderflow_dead_letters_total`,
    /// which the dead-letter alert watches).
    consumer_metrics: ConsumerMetrics,
    purged: Counter,
    group: String,
    retention: orderflow_platform::RetentionArgs,
    /// The last error publishing a dead letter, for health.
    dead_letter_error: Mutex<Option<String>>,
    /// Set by a round that changed what health shows (a failed attempt, a notification given
    /// up on): the backlog is read again as soon as its share allows.
    look_now: Notify,
}

impl Deliverer {
    /// A deliverer to `sink` for the service `kit` runs, whose consumer is in `group`.
    pub fn new(kit: &ServiceKit, sink: Box<dyn Sink>, budget: Budget, group: String) -> Self {
        Deliverer {
            pool: kit.pool.clone(),
            sink: Arc::from(sink),
            budget,
            producer: kit.producer.clone(),
            codec: kit.codec.clone(),
            topics: kit.topics.clone(),
            health: kit.health.clone(),
            metrics: DelivererMetrics::register(&kit.metrics),
            consumer_metrics: kit
                .pipeline
                .consumer(SERVICE, &[kit.topics.order_status.as_str()]),
            purged: kit.pipeline.purged_rows("notifications"),
            group,
            retention: kit.common.retention.clone(),
            dead_letter_error: Mutex::new(None),
            look_now: Notify::new(),
        }
    }

    /// Delivers until `shutdown`; the round in flight is finished first. The backlog's
    /// figures are read beside it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(sink = %self.sink.describe(), budget = ?self.budget, "delivering notifications");
        tokio::join!(self.deliver(&shutdown), self.watch(&shutdown));
        Ok(())
    }

    /// Rounds one after another while something is due; otherwise sleeps until the next row
    /// is due, a new notification is committed, or [`POLL`] has passed.
    async fn deliver(&self, shutdown: &CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut failures = 0u32;
        let mut last_purge: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            if last_purge.is_none_or(|at| at.elapsed() >= self.retention.purge_interval) {
                last_purge = Some(Instant::now());
                self.purge(shutdown).await;
            }
            // A wake-up received before the claim is answered by it: the row it announces
            // was committed before the claim reads.
            if let Some(l) = listener.as_mut() {
                while l.next_buffered().is_some() {}
            }
            let wait = match self.round().await {
                Ok(round) => {
                    failures = 0;
                    self.health.recovered(DATABASE);
                    match round.wait() {
                        Some(wait) => wait,
                        None => continue,
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay =
                        orderflow_retry::backoff(failures, Duration::from_millis(100), POLL);
                    tracing::warn!(error = %e, ?delay, "cannot deliver notifications, retrying");
                    self.health.degraded(DATABASE, e.to_string());
                    delay
                }
            };
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(drop),
                    None => std::future::pending().await,
                }
            };
            let lost = tokio::select! {
                result = woken => result.err(),
                _ = tokio::time::sleep(wait) => None,
                _ = shutdown.cancelled() => None,
            };
            if let Some(e) = lost {
                tracing::warn!(error = %e, "lost the database notifications; polling until they are back");
                listener = None;
            }
        }
    }

    /// Reads the backlog's figures until `shutdown`: the pending gauge, and health while
    /// notifications are retried or wait to be dead-lettered.
    async fn watch(&self, shutdown: &CancellationToken) {
        loop {
            let started = Instant::now();
            let read = tokio::select! {
                read = store::backlog(&self.pool) => read,
                _ = shutdown.cancelled() => return,
            };
            let took = started.elapsed();
            self.metrics.backlog_read.set(took.as_secs_f64());
            match read {
                Ok(backlog) => {
                    self.health.recovered(BACKLOG);
                    self.report(&backlog);
                }
                Err(e) => self
                    .health
                    .degraded(BACKLOG, format!("cannot read the backlog: {e}")),
            }
            let read_ended = Instant::now();
            let pace = Pace::after(took);
            let woken = async {
                self.look_now.notified().await;
                tokio::time::sleep_until((read_ended + pace.when_woken).into()).await;
            };
            tokio::select! {
                _ = tokio::time::sleep(pace.unwoken) => {}
                _ = woken => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(store::CHANNEL).await.ok()?;
        Some(listener)
    }

    async fn purge(&self, shutdown: &CancellationToken) {
        let purged = purge::purge_table(
            &self.pool,
            store::PURGE,
            self.retention.dedup,
            self.retention.purge_batch,
            shutdown,
            |n| {
                self.purged.inc_by(n);
            },
        )
        .await;
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged notifications past the dedup retention"),
            Err(e) => tracing::warn!(error = %e, "cannot purge notifications"),
        }
    }

    /// Sets the pending gauge and health from `backlog`.
    fn report(&self, backlog: &store::Backlog) {
        self.metrics.pending.set(backlog.pending);
        if backlog.retrying > 0 {
            self.health.degraded(
                SINK,
                format!(
                    "{} notification(s) waiting to be retried by {}; last error: {}",
                    backlog.retrying,
                    self.sink.describe(),
                    backlog.last_error.as_deref().unwrap_or("unknown")
                ),
            );
        } else {
            self.health.recovered(SINK);
        }
        if backlog.undeliverable > 0 {
            let error = self.dead_letter_error.lock().expect("lock").clone();
            self.health.degraded(
                DEAD_LETTERS,
                format!(
                    "{} notification(s) given up on wait to be dead-lettered: {}",
                    backlog.undeliverable,
                    error
                        .as_deref()
                        .unwrap_or("the dead-letter topic refused them")
                ),
            );
        } else {
            self.health.recovered(DEAD_LETTERS);
        }
    }

    /// Claims the due notifications, delivers the pending ones, dead-letters those given up
    /// on, and records every outcome in one transaction. Unless it claimed a full batch, it
    /// then asks in the same transaction when the next claimable one is due, so that a round
    /// that leaves nothing due is not followed by one that finds nothing.
    async fn round(&self) -> Result<Round, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let due = store::claim(&mut tx, BATCH).await?;
        if due.is_empty() {
            let (next_due, at) = store::next_due(&mut *tx).await?;
            tx.rollback().await?;
            return Ok(Round::Empty { next_due, at });
        }
        let full = due.len() as i64 == BATCH;
        let (undeliverable, pending): (Vec<&store::Due>, Vec<&store::Due>) =
            due.iter().partition(|d| d.undeliverable());
        let deliveries: Vec<Delivery<'_>> = pending
            .iter()
            .map(|d| Delivery {
                id: d.notification_id,
                attempt: d.attempts.max(0) as u32 + 1,
                body: &d.body.0,
            })
            .collect();
        let outcomes = self.sink.deliver_all(&deliveries).await;
        // Whether health may read differently after this round: anything not delivered.
        let health_changes = outcomes.iter().any(Result::is_err) || !undeliverable.is_empty();
        let mut delivered = Vec::with_capacity(pending.len());
        for (d, outcome) in pending.into_iter().zip(outcomes) {
            let attempts = d.attempts + 1;
            match outcome {
                Ok(()) => delivered.push(d),
                Err(DeliveryError::Retry(why)) if (attempts as u32) < self.budget.max_attempts => {
                    let delay = self.budget.delay(attempts as u32);
                    tracing::warn!(order_id = %d.order_id, status = d.status, attempts, ?delay, error = %why, "notification not delivered, will retry");
                    let later = store::Undelivered::RetryLater(delay);
                    store::not_delivered(&mut *tx, d, attempts, &why, later).await?;
                    self.metrics.failed_attempts.inc();
                }
                Err(e) => {
                    let class = match e {
                        DeliveryError::Refused(_) => REFUSED,
                        DeliveryError::Retry(_) => BUDGET_SPENT,
                    };
                    let reason =
                        format!("{} after {attempts} attempt(s): {e}", self.sink.describe());
                    self.give_up(&mut tx, d, attempts, class, &reason).await?;
                }
            }
        }
        for d in undeliverable {
            let class = match d.dead_letter_class.as_deref() {
                Some(REFUSED) => REFUSED,
                _ => BUDGET_SPENT,
            };
            let reason = d.last_error.clone().unwrap_or_default();
            self.give_up(&mut tx, d, d.attempts, class, &reason).await?;
        }
        store::delivered(&mut *tx, &delivered).await?;
        let round = if full {
            Round::Full
        } else {
            // After this round's outcomes: the next status of an order delivered here is due.
            let (next_due, at) = store::next_due(&mut *tx).await?;
            Round::Claimed { next_due, at }
        };
        tx.commit().await?;
        self.metrics.delivered.inc_by(delivered.len() as u64);
        if health_changes {
            self.look_now.notify_one();
        }
        Ok(round)
    }

    /// Dead-letters `d`, or keeps it `undeliverable` for a later round if the broker does
    /// not take the dead letter.
    async fn give_up(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        d: &store::Due,
        attempts: i32,
        class: &'static str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        match self.dead_letter(d, class, reason, attempts).await {
            Ok(()) => {
                tracing::error!(order_id = %d.order_id, status = d.status, class, %reason, "notification dead-lettered");
                let dead = store::Undelivered::Dead { class };
                store::not_delivered(&mut **tx, d, attempts, reason, dead).await?;
                self.consumer_metrics
                    .dead_letter_published(&d.origin_topic, class);
            }
            Err(publish) => {
                tracing::warn!(order_id = %d.order_id, error = %publish, "cannot dead-letter the notification, retrying");
                *self.dead_letter_error.lock().expect("lock") = Some(publish.to_string());
                let delay = self.budget.delay(attempts.max(1) as u32);
                let later = store::Undelivered::Undeliverable {
                    class,
                    retry_in: delay,
                };
                store::not_delivered(&mut **tx, d, attempts, reason, later).await?;
            }
        }
        Ok(())
    }

    /// Publishes the status change of `due` to this service's dead-letter topic, with the
    /// consumer loop's `dlq.*` headers and the trace it was recorded in.
    async fn dead_letter(
        &self,
        due: &store::Due,
        class: &str,
        reason: &str,
        attempts: i32,
    ) -> anyhow::Result<()> {
        let change: OrderStatusChanged = serde_json::from_value(due.event.0.clone())?;
        let payload = self
            .codec
            .encode(&self.topics, &Event::OrderStatusChanged(change))
            .await?;
        let topic = dead_letter_topic(&due.origin_topic, SERVICE);
        let key = due.order_id.to_string();
        let failure = dlq::Failure {
            origin_topic: &due.origin_topic,
            origin_partition: due.origin_partition,
            origin_offset: due.origin_offset,
            key: Some(key.as_bytes()),
            group: &self.group,
            class,
            reason,
            first_failure: due.first_failure.unwrap_or_else(Utc::now),
            attempts: attempts.max(0) as u32,
        };
        let original = OwnedHeaders::new().insert(Header {
            key: orderflow_platform::trace::HEADER,
            value: Some(due.traceparent.as_str()),
        });
        let record = FutureRecord::to(&topic)
            .key(key.as_str())
            .payload(payload.as_slice())
            .headers(failure.headers(original));
        if let Err((e, _)) = self.producer.get().send(record, DEAD_LETTER_TIMEOUT).await {
            self.producer.renew();
            anyhow::bail!("dead-letter topic {topic}: {e}");
        }
        Ok(())
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// It claimed a full batch: more is likely due.
    Full,
    /// It claimed fewer; after its outcomes the next claimable notification is due at
    /// `next_due`, and `at` is the database's time of the claim.
    Claimed {
        next_due: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// Nothing was claimable at `at`; the next claimable one is due at `next_due`.
    Empty {
        next_due: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
}

impl Round {
    /// How long to sleep before the next round; `None` to start it at once.
    fn wait(self) -> Option<Duration> {
        match self {
            Round::Full => None,
            // Due already: the next status of an order this round delivered (or one another
            // instance holds, which the next round finds out).
            Round::Claimed {
                next_due: Some(due),
                at,
            } if due <= at => None,
            Round::Claimed { next_due, at } | Round::Empty { next_due, at } => {
                Some(until_due(next_due, at))
            }
        }
    }
}

/// How long to sleep after a round that claimed nothing at `at`: until the next claimable
/// row is due, at most [`POLL`].
fn until_due(next_due: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Duration {
    match next_due {
        // Due at the claim but not claimed: another instance holds it. Its round ends it, or
        // a notify or the poll wakes this one.
        Some(due) if due <= at => POLL,
        Some(due) => (due - at)
            .to_std()
            .unwrap_or_default()
            .clamp(Duration::from_millis(10), POLL),
        None => POLL,
    }
}

/// When the backlog is read again after a read that took `took`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    /// After the read, if no round asks for one sooner.
    unwoken: Duration,
    /// After the read, at the soonest, when a round asks.
    when_woken: Duration,
}

impl Pace {
    fn after(took: Duration) -> Pace {
        let share = took * LOOK_SHARE;
        Pace {
            unwoken: share.max(LOOK_INTERVAL),
            when_woken: share,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_backlog_is_read_every_second_or_ten_times_its_last_read_whichever_is_longer() {
        assert_eq!(Pace::after(Duration::ZERO).unwoken, LOOK_INTERVAL);
        assert_eq!(Pace::after(ms(100)).unwoken, LOOK_INTERVAL);
        assert_eq!(Pace::after(ms(250)).unwoken, ms(2_500));
        // The 5.5 s reads of the million-order soak: one every 55 s, not one per round.
        assert_eq!(Pace::after(ms(5_500)).unwoken, Duration::from_secs(55));
    }

    #[test]
    fn an_idle_deliverer_sleeps_until_the_next_row_is_due_within_its_poll() {
        let at = DateTime::from_timestamp(1_000_000, 0).expect("a time");
        let later = |ms: i64| Some(at + chrono::Duration::milliseconds(ms));
        assert_eq!(until_due(later(300), at), ms(300));
        assert_eq!(until_due(later(1), at), ms(10));
        assert_eq!(until_due(later(60_000), at), POLL);
        // Due but not claimed: another instance holds it.
        assert_eq!(until_due(later(0), at), POLL);
        assert_eq!(until_due(None, at), POLL);
    }

    #[test]
    fn a_round_goes_on_at_once_only_while_something_is_due() {
        let at = DateTime::from_timestamp(1_000_000, 0).expect("a time");
        let later = |ms: i64| Some(at + chrono::Duration::milliseconds(ms));
        assert_eq!(Round::Full.wait(), None);
        // Its deliveries left the next status of an order due.
        let claimed = |next_due| Round::Claimed { next_due, at };
        assert_eq!(claimed(later(0)).wait(), None);
        assert_eq!(claimed(later(-5)).wait(), None);
        // Nothing due: no round that would find nothing.
        assert_eq!(claimed(None).wait(), Some(POLL));
        assert_eq!(claimed(later(300)).wait(), Some(ms(300)));
        // A round that found nothing due waits even if a held row is due.
        let empty = |next_due| Round::Empty { next_due, at };
        assert_eq!(empty(later(0)).wait(), Some(POLL));
        assert_eq!(empty(None).wait(), Some(POLL));
    }

    #[test]
    fn a_round_that_changes_health_has_it_read_soon_but_never_past_its_share() {
        // A small backlog: read again 20 ms after a round's failed attempt, not a second.
        assert_eq!(Pace::after(ms(2)).when_woken, ms(20));
        // A huge one: still ten times the read's length, however often rounds ask.
        assert_eq!(Pace::after(ms(5_500)).when_woken, Duration::from_secs(55));
    }
}
