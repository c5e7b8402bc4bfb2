//! The transactional outbox. A service writes its state change and the events it causes in
//! one PostgreSQL transaction ([`Outbox::insert`]); the [`Relay`] publishes the rows in id
//! order with an idempotent producer and deletes them (or marks them published, with an
//! outbox retention) only once the broker has acknowledged them. A crash between the two
//! publishes a row again, never loses it; consumers deduplicate on the event id.
//!
//! A row that can never be published (its payload is not an event, or the registry refuses
//! its encoding for good) is set aside in `outbox_quarantine` with the reason, counted, and
//! reported on health, rather than fail every batch: the relay publishes around it, and only
//! the later rows of the same order (event key) wait behind it, so no order's events are
//! published out of order. Repairing the row (or marking it published) and deleting its
//! quarantine record releases them.
//!
//! The writer wakes the relay of its own process after the commit ([`OutboxSignal`]), not
//! with `NOTIFY`: a notifying commit takes a server-wide lock that stops PostgreSQL from
//! flushing concurrent commits together, which halved the commit rate here
//! (docs/performance.md). Rows written by other processes are found by a short poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use orderflow_events::{Event, EventCodec, Topics};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::health::Health;
use crate::kafka::Producer;
use crate::metrics::{RelayMetrics, RelayPhase};
use crate::trace::{self, TraceParent};

/// The component under which health reports rows set aside.
const QUARANTINE: &str = "outbox-quarantine";

/// How often the relay looks for rows nobody woke it for: rows of another instance of the
/// service, or rows left by a process that stopped before publishing them.
pub const POLL: Duration = Duration::from_millis(500);

/// Wakes this process's relay once a transaction that wrote to the outbox has committed.
/// A wake-up given while the relay is busy is kept, so none is lost.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Call after committing a transaction that called [`Outbox::insert`].
    pub fn committed(&self) {
        self.0.notify_one();
    }

    /// Waits for the next [`OutboxSignal::committed`]; returns at once for one given since
    /// the last wait. The relay's side of the signal.
    pub async fn wait(&self) {
        self.0.notified().await
    }
}

/// Events as the outbox's columns, four arrays for one `UNNEST` ([`Outbox::INSERT_ROWS`]).
pub struct OutboxRows {
    topics: Vec<String>,
    keys: Vec<String>,
    payloads: Vec<serde_json::Value>,
    traces: Vec<String>,
}

impl OutboxRows {
    /// The rows of the events several messages caused, each group with the trace context of
    /// the work that caused it, in the order given.
    pub fn of(topics: &Topics, caused: &[(&[Event], &TraceParent)]) -> OutboxRows {
        let count: usize = caused.iter().map(|(events, _)| events.len()).sum();
        let mut rows = OutboxRows {
            topics: Vec::with_capacity(count),
            keys: Vec::with_capacity(count),
            payloads: Vec::with_capacity(count),
            traces: Vec::with_capacity(count),
        };
        for (events, trace) in caused {
            for event in *events {
                rows.topics.push(topics.for_kind(event.kind()).to_owned());
                rows.keys.push(event.key().to_owned());
                rows.payloads
                    .push(serde_json::to_value(event).expect("events serialize to JSON"));
                rows.traces.push(trace.header());
            }
        }
        rows
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// `query` with the four arrays bound as its next four parameters.
    pub fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.topics)
            .bind(&self.keys)
            .bind(&self.payloads)
            .bind(&self.traces)
    }
}

/// The outbox's statements: writers add events inside their own transaction; the relay reads
/// the unpublished rows and marks them published inside its.
pub struct Outbox;

/// An unpublished outbox row, as the relay reads it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    /// The event's key ([`Event::key`]): its order id, or a catalogue entry's SKU.
    pub key: String,
    /// The event as JSON.
    pub payload: serde_json::Value,
    pub traceparent: Option<String>,
}

impl Outbox {
    /// Adds `events` to the outbox in `tx`; they are published after `tx` commits (call
    /// [`OutboxSignal::committed`] then, or they wait for the relay's poll).
    pub async fn insert(
        tx: &mut Transaction<'_, Postgres>,
        topics: &Topics,
        events: &[Event],
        trace: &TraceParent,
    ) -> Result<(), sqlx::Error> {
        Self::insert_caused(tx, topics, &[(events, trace)]).await
    }

    /// Adds the events several messages caused, each group with the trace context of the
    /// work that caused it (the relay's publish span becomes its child), in one statement, in
    /// the order given.
    pub async fn insert_caused(
        tx: &mut Transaction<'_, Postgres>,
        topics: &Topics,
        caused: &[(&[Event], &TraceParent)],
    ) -> Result<(), sqlx::Error> {
        let rows = OutboxRows::of(topics, caused);
        if rows.is_empty() {
            return Ok(());
        }
        rows.bind(sqlx::query(Outbox::INSERT_ROWS))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The statement that adds an [`OutboxRows`] bound as `$1` to `$4`. A writer whose whole
    /// change fits in one statement puts its own writes in a `WITH` ahead of it, binds its
    /// values from `$5` on, and may add a `WHERE` on the rows `r` (`r.event_key`, say, that
    /// its own insert of that key took place): its state and its events are then written in
    /// one statement, which needs no transaction (`Store::place_all` of the order service).
    pub const INSERT_ROWS: &str = "INSERT INTO outbox (topic, event_key, payload, traceparent)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::text[])
                       AS r(topic, event_key, payload, traceparent)";

    /// Reads up to `limit` unpublished rows in id order, locked until `tx` ends: a second
    /// relay (another instance) waits instead of reordering events. Rows held back by a
    /// quarantined row of their order (that row itself and every later one) are left out.
    pub async fn lock_unpublished(
        tx: &mut Transaction<'_, Postgres>,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        sqlx::query(
            "SELECT id, topic, event_key, payload, traceparent FROM outbox o
             WHERE published_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM outbox_quarantine q
                               WHERE q.event_key = o.event_key AND q.outbox_id <= o.id)
             ORDER BY id LIMIT $1 FOR UPDATE",
        )
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| {
            Ok(OutboxRow {
                id: r.try_get("id")?,
                topic: r.try_get("topic")?,
                key: r.try_get("event_key")?,
                payload: r.try_get("payload")?,
                traceparent: r.try_get("traceparent")?,
            })
        })
        .collect()
    }

    /// Records in `tx` that the broker acknowledged the rows `ids` (ascending, as
    /// [`Outbox::lock_unpublished`] returns them): deletes them, or, when `keep` is
    /// [`Published::Kept`], marks them published for the retention purge to delete later.
    ///
    /// Deleting is the default (`--outbox-retention 0s`) because it writes least: a delete
    /// sets one field of each row, while marking writes a new version of the row and an
    /// entry in each of its indexes, and the purge then deletes it anyway
    /// (docs/performance.md). The broker's topic is the record of what was published.
    pub async fn acknowledged(
        tx: &mut Transaction<'_, Postgres>,
        ids: &[i64],
        keep: Published,
    ) -> Result<(), sqlx::Error> {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok(());
        };
        // The id range keeps the plan an index range scan: with `= ANY` alone and the
        // table's statistics behind its growth, PostgreSQL chose sequential scans of the
        // whole outbox under load (docs/performance.md).
        let statement = match keep {
            Published::Deleted => "DELETE FROM outbox WHERE id BETWEEN $2 AND $3 AND id = ANY($1)",
            Published::Kept => {
                "UPDATE outbox SET published_at = now()
                 WHERE id BETWEEN $2 AND $3 AND id = ANY($1)"
            }
        };
        sqlx::query(statement)
            .bind(ids)
            .bind(first)
            .bind(last)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Sets `row` aside with `reason` in `tx`: from then on it and the later rows of its
    /// order are not read for publishing until its quarantine record is deleted. A second
    /// relay that read the row before the first committed finds it already there.
    pub async fn quarantine(
        tx: &mut Transaction<'_, Postgres>,
        row: &OutboxRow,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO outbox_quarantine (outbox_id, event_key, topic, reason)
             VALUES ($1, $2, $3, $4) ON CONFLICT (outbox_id) DO NOTHING",
        )
        .bind(row.id)
        .bind(&row.key)
        .bind(&row.topic)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The rows set aside now: how many, and the first of them.
    pub async fn quarantined(pool: &PgPool) -> Result<Quarantine, sqlx::Error> {
        let row = sqlx::query(
            "SELECT count(*) OVER () AS rows, outbox_id, event_key, topic, reason
             FROM outbox_quarantine ORDER BY outbox_id LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            return Ok(Quarantine::default());
        };
        Ok(Quarantine {
            rows: row.try_get("rows")?,
            first: Some(QuarantinedRow {
                id: row.try_get("outbox_id")?,
                key: row.try_get("event_key")?,
                topic: row.try_get("topic")?,
                reason: row.try_get("reason")?,
            }),
        })
    }

    /// How many rows wait to be published (the partial index `outbox_unpublished` keeps it
    /// cheap).
    pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await
    }
}

/// What becomes of an outbox row once the broker has acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Deleted at once (`--outbox-retention 0s`, the default).
    Deleted,
    /// Marked published and deleted by the retention purge once it is older than the
    /// outbox retention.
    Kept,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Published::Deleted => "deleted",
            Published::Kept => "marked published",
        })
    }
}

impl Published {
    /// What `--outbox-retention` asks for.
    pub fn for_retention(outbox_retention: Duration) -> Self {
        match outbox_retention.is_zero() {
            true => Published::Deleted,
            false => Published::Kept,
        }
    }
}

/// The outbox rows set aside, as [`Outbox::quarantined`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quarantine {
    pub rows: i64,
    /// The one set aside first.
    pub first: Option<QuarantinedRow>,
}

/// One row set aside, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRow {
    pub id: i64,
    pub key: String,
    pub topic: String,
    pub reason: String,
}

impl Quarantine {
    /// What health reports while rows are set aside.
    fn problem(&self) -> Option<String> {
        let first = self.first.as_ref()?;
        let rows = if self.rows == 1 { "row" } else { "rows" };
        Some(format!(
            "{} outbox {rows} set aside, each holding back the later events of its key (an \
             order, a SKU); first: row {} (key {}, topic {}): {}",
            self.rows, first.id, first.key, first.topic, first.reason
        ))
    }
}

/// Why one row could not be encoded.
enum RowError {
    /// It never will be: set it aside.
    Permanent(String),
    /// It may be later (the registry is unavailable): stop the batch here and retry.
    Transient(anyhow::Error),
}

/// What one batch did.
#[derive(Debug, Default)]
struct Batch {
    /// Rows read (a full batch means more may wait).
    read: usize,
    /// Rows set aside.
    quarantined: usize,
}

/// Publishes outbox rows to Kafka, in order, until shutdown; then publishes what is left.
pub struct Relay {
    pool: PgPool,
    producer: Producer,
    codec: Arc<EventCodec>,
    topics: Topics,
    health: Health,
    metrics: RelayMetrics,
    signal: OutboxSignal,
    published: Published,
    batch_size: i64,
}

impl Relay {
    /// Most rows the relay publishes in one transaction. A round's cost is mostly the
    /// broker's acknowledgement, which grows far less than its rows: with rounds of at most
    /// 500, the order relay fell behind at saturation and its outbox held 3–4 s of events;
    /// with 2,000 it kept up (docs/performance.md, section 44). Below saturation a round
    /// takes what is there, a few rows.
    pub const BATCH_SIZE: i64 = 2000;

    pub fn new(
        pool: PgPool,
        producer: Producer,
        codec: Arc<EventCodec>,
        topics: Topics,
        health: Health,
        metrics: RelayMetrics,
        signal: OutboxSignal,
    ) -> Self {
        Relay {
            pool,
            producer,
            codec,
            topics,
            health,
            metrics,
            signal,
            published: Published::Deleted,
            batch_size: Self::BATCH_SIZE,
        }
    }

    /// What the relay does with the rows the broker acknowledged: deletes them (the
    /// default), or keeps them marked published for the retention purge.
    pub fn acknowledged_rows(mut self, published: Published) -> Self {
        self.published = published;
        self
    }

    /// Runs until `shutdown`, then drains the outbox (bounded by the caller's grace period).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        // Rows set aside by an earlier run still hold their orders back: say so from the start.
        let mut quarantined = self.refresh_quarantine().await;
        loop {
            match self.publish_batch().await {
                Ok(batch) => {
                    if failures > 0 {
                        self.health.recovered("outbox-relay");
                        tracing::info!("outbox relay recovered");
                    }
                    failures = 0;
                    // While rows are set aside, look each round whether an operator released
                    // them (a count of a small table).
                    if batch.quarantined > 0 || quarantined > 0 {
                        quarantined = self.refresh_quarantine().await;
                    }
                    if batch.read as i64 == self.batch_size {
                        self.refresh_backlog().await;
                        continue;
                    }
                    if quarantined > 0 {
                        // Rows held back behind a quarantined one are still unpublished.
                        self.refresh_backlog().await;
                    } else {
                        // A short batch was everything unpublished when it was read, and all
                        // of it was acknowledged: the backlog is empty without counting it.
                        self.metrics.set_backlog(0);
                    }
                    if shutdown.is_cancelled() {
                        break;
                    }
                    // Sleep until a commit in this process signals, or the poll is due.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = self.signal.wait() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = orderflow_retry::backoff(
                        failures,
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    );
                    tracing::warn!(error = %e, attempt = failures, ?delay, "outbox relay cannot publish, retrying");
                    self.health.degraded("outbox-relay", e.to_string());
                    self.refresh_backlog().await;
                    // The failed batch may have set rows aside before it failed.
                    quarantined = self.refresh_quarantine().await;
                    if shutdown.is_cancelled() && failures > 3 {
                        tracing::error!(
                            "giving up on the outbox at shutdown; rows stay and publish on next start"
                        );
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                    }
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Reads the quarantine into the metrics and health; returns how many rows are set aside.
    /// If the database cannot say now, at least one is assumed, so the caller asks again.
    async fn refresh_quarantine(&self) -> i64 {
        match Outbox::quarantined(&self.pool).await {
            Ok(quarantine) => {
                self.metrics.set_quarantine_rows(quarantine.rows);
                match quarantine.problem() {
                    Some(problem) => self.health.degraded(QUARANTINE, problem),
                    None => self.health.recovered(QUARANTINE),
                }
                quarantine.rows
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the outbox quarantine");
                1
            }
        }
    }

    /// Counts the unpublished rows. Called only while rows are piling up: a full batch, a
    /// failure, or rows held back behind a quarantined one.
    async fn refresh_backlog(&self) {
        match Outbox::backlog(&self.pool).await {
            Ok(rows) => self.metrics.set_backlog(rows),
            // The database is probably what failed; the last value stands until it is back.
            Err(e) => tracing::debug!(error = %e, "cannot count the outbox backlog"),
        }
    }

    /// Encodes one row, telling a row that can never be published from a registry that may
    /// answer later.
    async fn encode(&self, row: &OutboxRow) -> Result<Vec<u8>, RowError> {
        let event: Event = serde_json::from_value(row.payload.clone())
            .map_err(|e| RowError::Permanent(format!("not an event: {e}")))?;
        self.codec
            .encode(&self.topics, &event)
            .await
            .map_err(|e| match e.is_transient() {
                true => RowError::Transient(anyhow::anyhow!("outbox row {}: {e}", row.id)),
                false => RowError::Permanent(e.to_string()),
            })
    }

    /// Publishes up to one batch. A row that can never be published is set aside and the
    /// later rows of its order skipped; the rows of other orders are published. A row the
    /// registry cannot encode now ends the batch there: the rows before it are published,
    /// then the error is returned.
    async fn publish_batch(&self) -> anyhow::Result<Batch> {
        let started = Instant::now();
        let mut tx = self.pool.begin().await?;
        let rows = Outbox::lock_unpublished(&mut tx, self.batch_size).await?;
        if rows.is_empty() {
            return Ok(Batch::default());
        }
        self.metrics.round_read(rows.len());
        let mut held: HashSet<&str> = HashSet::new();
        let mut quarantined = Vec::new();
        let mut sending: Vec<(&OutboxRow, Vec<u8>)> = Vec::with_capacity(rows.len());
        let mut unavailable = None;
        for row in &rows {
            if held.contains(row.key.as_str()) {
                continue;
            }
            match self.encode(row).await {
                Ok(payload) => sending.push((row, payload)),
                Err(RowError::Permanent(reason)) => {
                    tracing::error!(row = row.id, key = %row.key, topic = %row.topic, %reason, "outbox row set aside: it can never be published; later events of its order wait behind it");
                    Outbox::quarantine(&mut tx, row, &reason).await?;
                    held.insert(&row.key);
                    quarantined.push(row);
                }
                Err(RowError::Transient(e)) => {
                    unavailable = Some(e);
                    break;
                }
            }
        }
        let producer = self.producer.get();
        let sent = Instant::now();
        self.metrics.round_phase(RelayPhase::Read, sent - started);
        let deliveries = sending.iter().map(|(row, payload)| {
            let (span, traceparent) = publish_span(row);
            let mut headers = OwnedHeaders::new();
            if let Some(tp) = &traceparent {
                headers = headers.insert(Header {
                    key: trace::HEADER,
                    value: Some(tp.as_str()),
                });
            }
            let record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(payload)
                .headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .instrument(span)
        });
        let results = join_all(deliveries).await;
        let acknowledged_at = Instant::now();
        self.metrics
            .round_phase(RelayPhase::Acknowledgement, acknowledged_at - sent);
        // Mark only the acknowledged prefix: anything after a failure is sent again, after
        // the rows before it, so per-order order holds (duplicates are deduplicated).
        let acknowledged: Vec<i64> = sending
            .iter()
            .zip(&results)
            .take_while(|(_, r)| r.is_ok())
            .map(|((row, _), _)| row.id)
            .collect();
        Outbox::acknowledged(&mut tx, &acknowledged, self.published).await?;
        tx.commit().await?;
        self.metrics
            .round_phase(RelayPhase::Commit, acknowledged_at.elapsed());
        for (row, _) in &sending[..acknowledged.len()] {
            self.metrics.produced(&row.topic);
        }
        for row in &quarantined {
            self.metrics.quarantined(&row.topic);
        }
        if let Some(((row, _), Err((e, _)))) = sending.iter().zip(results).find(|(_, r)| r.is_err())
        {
            self.producer.renew();
            anyhow::bail!("broker did not acknowledge outbox row {}: {e}", row.id);
        }
        if let Some(e) = unavailable {
            return Err(e);
        }
        Ok(Batch {
            read: rows.len(),
            quarantined: quarantined.len(),
        })
    }
}

/// The span of one row's publication, when spans are exported: a child of the work that
/// wrote the row, until the broker acknowledges it; its context is the message's
/// `traceparent`, so the consumers' spans are its children. Otherwise no span, and the row's
/// own context goes on.
fn publish_span(row: &OutboxRow) -> (tracing::Span, Option<String>) {
    let parent = crate::telemetry::exporting()
        .then(|| row.traceparent.as_deref().and_then(TraceParent::parse))
        .flatten();
    let Some(parent) = parent else {
        return (tracing::Span::none(), row.traceparent.clone());
    };
    let span = tracing::info_span!("publish", topic = %row.topic, key = %row.key);
    trace::adopt(&span, &parent);
    let header = TraceParent::of_span(&span).map(|tp| tp.header());
    (span, header.or_else(|| row.traceparent.clone()))
}
